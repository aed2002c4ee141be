# The asynchronous form of e2b_script.py, also run with only the import
# line changed.
import asyncio

from e2b import AsyncSandbox, CommandExitException


async def main() -> None:
    sbx = await AsyncSandbox.create(envs={"GREETING": "hello"})
    await sbx.files.write("/home/user/note.txt", "async note")
    print("read:", await sbx.files.read("/home/user/note.txt"))
    result = await sbx.commands.run("echo $GREETING")
    print("greeting:", result.stdout.strip())
    try:
        await sbx.commands.run("exit 4")
    except CommandExitException as error:
        print("exit:", error.exit_code)
    chunks = []
    handle = await sbx.commands.run("echo one; sleep 0.1; echo two", background=True,
                                    on_stdout=chunks.append)
    await handle.wait()
    print("chunks:", "".join(chunks).split())
    await sbx.kill()


asyncio.run(main())

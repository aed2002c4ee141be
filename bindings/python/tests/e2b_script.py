# A short program written against E2B's Python SDK. test_migration.py runs
# it with only the import line changed from e2b to soulbox.
from e2b import (
    AuthenticationException,
    CommandExitException,
    RateLimitException,
    Sandbox,
    TemplateException,
)

try:
    sbx = Sandbox.create(timeout=120, envs={"GREETING": "hello"})
except (AuthenticationException, RateLimitException, TemplateException):
    raise
print("id:", bool(sbx.sandbox_id))

sbx.files.write("/home/user/data.csv", "name,amount\na,1\nb,2\nc,39\n")
summing = "import csv; print(sum(int(r['amount']) for r in csv.DictReader(open('data.csv'))))"
result = sbx.commands.run(f'python3 -c "{summing}"')
print("sum:", result.stdout.strip())

streamed = []
sbx.commands.run("echo $GREETING; echo warn >&2", on_stdout=streamed.append, on_stderr=streamed.append)
print("streamed:", sorted(chunk.strip() for chunk in streamed))

try:
    sbx.commands.run("echo partial; exit 2")
except CommandExitException as error:
    print("exit:", error.exit_code, error.stdout.strip())

server = sbx.commands.run("sleep 60", background=True)
print("listed:", [process.pid for process in sbx.commands.list()] == [server.pid])
print("killed:", server.kill())

sbx.files.make_dir("/home/user/out")
sbx.files.write_files([{"path": "/home/user/out/1.txt", "data": "one"},
                       {"path": "/home/user/out/2.txt", "data": b"two"}])
print("files:", [entry.name for entry in sbx.files.list("/home/user/out")])
print("exists:", sbx.files.exists("/home/user/out/2.txt"), sbx.files.exists("/nope"))
sbx.files.remove("/home/user/out")
print("removed:", sbx.files.exists("/home/user/out"))
sbx.set_timeout(60)
sbx.kill()
print("running:", sbx.is_running())

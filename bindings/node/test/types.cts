// Compile-only check that CommonJS callers get the same declarations.
import soulbox = require('soulbox')

export async function commonJsTypeChecks(): Promise<string> {
  const sbx = await soulbox.Sandbox.create()
  const result = await sbx.commands.run('true')
  const pool: soulbox.SandboxPool = await soulbox.SandboxPool.create({ size: 1 })
  await (await pool.create()).kill()
  await pool.close()
  return `${sbx.sandboxId} ${result.exitCode}`
}

// Compile-only check that CommonJS callers get the same declarations.
import soulbox = require('soulbox')

export async function commonJsTypeChecks(): Promise<string> {
  const sbx = await soulbox.Sandbox.create()
  const result = await sbx.commands.run('true')
  return `${sbx.sandboxId} ${result.exitCode}`
}

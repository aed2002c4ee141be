// Runs the sales-analysis example (../analysis) in a sandbox from Node:
// copies the script and its data in, runs it with its output streamed,
// reads the report it wrote back out and kills the sandbox.
//
// Build and run (as root, after `npm run build` in bindings/node):
//   npm install && npm start

import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

import { CommandExitError, Sandbox } from 'soulbox'

const analysisDir = fileURLToPath(new URL('../../analysis/', import.meta.url))

async function main(): Promise<void> {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await sbx.files.write([
      { path: 'analysis/analyze.py', data: await readFile(`${analysisDir}analyze.py`) },
      { path: 'analysis/sales.csv', data: await readFile(`${analysisDir}sales.csv`) },
    ])

    const result = await sbx.commands.run('python3 analyze.py', {
      cwd: 'analysis',
      timeoutMs: 60_000,
      onStderr: (data) => process.stderr.write(`[sandbox] ${data}`),
    })
    console.log(`analyze.py exited with ${result.exitCode}`)

    const report = await sbx.files.read('analysis/report.md')
    const firstLines = report.split('\n').slice(0, 12).join('\n')
    console.log(`report.md, ${report.length} characters; it begins:\n\n${firstLines}`)
  } catch (error) {
    if (error instanceof CommandExitError) {
      console.error(`analyze.py failed (${error.error}):\n${error.stderr}`)
    }
    throw error
  } finally {
    await sbx.kill()
  }
}

await main()

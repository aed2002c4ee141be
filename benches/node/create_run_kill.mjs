// Times create + run + kill through the Node API, in-process: the Node
// counterpart of soulbox-bench-api.
//
// Usage: node create_run_kill.mjs --task true|py --iterations N [--no-limits]
//
// Prints one line per iteration: the wall time in nanoseconds of
// `Sandbox.create()`, `commands.run(...)` to completion (through
// /bin/bash -l -c, as every Node command runs) and `kill()`.

import { Sandbox } from '../../bindings/node/index.mjs'

const TASKS = { true: '/bin/true', py: "/usr/bin/python3 -c 'print(1)'" }

function usage(message) {
  console.error(`create_run_kill.mjs: ${message}`)
  console.error('usage: node create_run_kill.mjs --task true|py --iterations N [--no-limits]')
  process.exit(2)
}

let task
let iterations
let noLimits = false
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--no-limits') {
    noLimits = true
  } else if (args[i] === '--task' && i + 1 < args.length) {
    task = args[++i]
  } else if (args[i] === '--iterations' && i + 1 < args.length) {
    iterations = Number(args[++i])
  } else {
    usage(`unknown or incomplete option ${JSON.stringify(args[i])}`)
  }
}
if (!Number.isSafeInteger(iterations) || iterations < 1) {
  usage('--iterations must be a positive integer')
}
if (!(task in TASKS)) {
  usage(`unknown task ${JSON.stringify(task)}`)
}
const options = noLimits ? { memoryLimit: null, pidsLimit: null } : {}

for (let i = 0; i < iterations; i++) {
  const start = process.hrtime.bigint()
  const sbx = await Sandbox.create(options)
  await sbx.commands.run(TASKS[task])
  await sbx.kill()
  console.log(String(process.hrtime.bigint() - start))
}

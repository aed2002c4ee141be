// Compares create + run + kill through the Node API with the same through
// the Rust API (soulbox-bench-api), interleaved in one run, and prints a
// Markdown report of the medians.
//
// Usage (as root, after `npm run build` in bindings/node and
// `cargo build --release -p soulbox-benches`):
//   node benches/node/compare.mjs [--rounds R] [--iterations N] [--warmup W]
//
// Each round runs every row once, in an order rotated from round to round.
// A row is one process that makes W + N sandboxes and reports each one's
// time, and the first W times are discarded. Defaults: 5 rounds, 20 timed
// and 3 warm-up iterations.

import { spawnSync } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const benchApi = join(root, 'target', 'release', 'soulbox-bench-api')
const nodeBench = join(root, 'benches', 'node', 'create_run_kill.mjs')

const settings = { rounds: 5, iterations: 20, warmup: 3 }
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i += 2) {
  const name = args[i].replace(/^--/, '')
  const value = Number(args[i + 1])
  if (!(name in settings) || !Number.isSafeInteger(value) || value < (name === 'warmup' ? 0 : 1)) {
    console.error(`compare.mjs: invalid option ${args[i]} ${args[i + 1] ?? ''}`)
    process.exit(2)
  }
  settings[name] = value
}

const rows = [
  {
    name: 'Rust API, program run directly',
    command: [benchApi, '--task', 'true'],
  },
  {
    name: 'Rust API, through /bin/bash -l -c',
    command: [benchApi, '--task', 'true', '--shell'],
  },
  {
    name: 'Node API, `commands.run` (through /bin/bash -l -c)',
    command: [process.execPath, nodeBench, '--task', 'true'],
  },
]

/** Runs one row's process and returns its timed iterations in ms. */
function runRow(row) {
  const total = settings.warmup + settings.iterations
  const run = spawnSync(row.command[0], [...row.command.slice(1), '--iterations', String(total)], {
    encoding: 'utf8',
  })
  if (run.status !== 0) {
    throw new Error(`${row.name} failed (${run.status}): ${run.stderr || run.error}`)
  }
  const ns = run.stdout.trim().split('\n').map(Number)
  return ns.slice(settings.warmup).map((value) => value / 1e6)
}

function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b)
  const position = (sorted.length - 1) * q
  const low = Math.floor(position)
  const high = Math.ceil(position)
  return sorted[low] + (sorted[high] - sorted[low]) * (position - low)
}

const samples = rows.map(() => [])
const roundMedians = rows.map(() => [])
for (let round = 0; round < settings.rounds; round++) {
  for (let k = 0; k < rows.length; k++) {
    const index = (k + round) % rows.length
    const times = runRow(rows[index])
    samples[index].push(...times)
    roundMedians[index].push(quantile(times, 0.5))
  }
}

const reference = quantile(samples[1], 0.5)
console.log(`create + run \`/bin/true\` + kill, ${settings.rounds} rounds x ${settings.iterations} runs per row`)
console.log('')
console.log('| path | n | median ms | p95 ms | ratio to Rust through the shell | round medians ms |')
console.log('|---|---:|---:|---:|---:|---|')
rows.forEach((row, index) => {
  const median = quantile(samples[index], 0.5)
  const cells = [
    row.name,
    samples[index].length,
    median.toFixed(2),
    quantile(samples[index], 0.95).toFixed(2),
    (median / reference).toFixed(2),
    roundMedians[index].map((value) => value.toFixed(2)).join(', '),
  ]
  console.log(`| ${cells.join(' | ')} |`)
})

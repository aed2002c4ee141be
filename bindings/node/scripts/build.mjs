// Builds the native addon with cargo and copies it to soulbox.node, where
// index.js loads it from.
//
// Usage: node scripts/build.mjs [--release | --debug]   (default --release)

import { spawnSync } from 'node:child_process'
import { copyFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const workspaceDir = resolve(packageDir, '..', '..')

const mode = process.argv[2] ?? '--release'
if (mode !== '--release' && mode !== '--debug') {
  console.error(`build.mjs: unknown option ${mode}; use --release or --debug`)
  process.exit(2)
}
const profile = mode === '--release' ? 'release' : 'debug'

const cargoArgs = ['build', '-p', 'soulbox-node', ...(profile === 'release' ? ['--release'] : [])]
const built = spawnSync('cargo', cargoArgs, { cwd: workspaceDir, stdio: 'inherit' })
if (built.error) {
  console.error(`build.mjs: cannot run cargo: ${built.error.message}; install a Rust toolchain`)
  process.exit(1)
}
if (built.status !== 0) {
  process.exit(built.status ?? 1)
}

const targetDir = process.env.CARGO_TARGET_DIR
  ? resolve(process.env.CARGO_TARGET_DIR)
  : join(workspaceDir, 'target')
const library = join(targetDir, profile, 'libsoulbox_node.so')
copyFileSync(library, join(packageDir, 'soulbox.node'))
console.log(`build.mjs: copied ${library} to soulbox.node`)

// Templates built from a soulbox.toml through Sandbox.buildTemplate: the
// built files, the cache, output callbacks and errors.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'

import Sandbox, { InvalidArgumentError, SandboxError } from 'soulbox'
import { requireRoot, withSandbox } from './helpers.mjs'

// Every build of this file goes to a layer cache of its own, removed at
// the end, so that no built layer or registered name outlives the tests.
const scratch = mkdtempSync(join(tmpdir(), 'soulbox-node-build-'))
process.env.SOULBOX_LAYER_CACHE = join(scratch, 'cache')
after(() => rmSync(scratch, { recursive: true, force: true }))

/** Writes `toml` and the files in `extra` into a new folder; returns its path. */
function buildFolder(toml, extra = {}) {
  const folder = join(scratch, `app-${randomUUID().slice(0, 8)}`)
  mkdirSync(folder)
  writeFileSync(join(folder, 'soulbox.toml'), toml)
  for (const [name, contents] of Object.entries(extra)) {
    writeFileSync(join(folder, name), contents)
  }
  return folder
}

const STEP_TOML = `run = ["echo from-step; echo to-stderr >&2; cat /home/user/copied.txt > /home/user/built.txt"]

[[files]]
from = "input.txt"
to = "/home/user/copied.txt"
`

test('buildTemplate builds a template that create uses', async (t) => {
  if (!requireRoot(t)) return
  const folder = buildFolder(STEP_TOML, { 'input.txt': 'copied in\n' })
  const name = `node-${randomUUID().slice(0, 12)}`
  const chunks = []
  const built = await Sandbox.buildTemplate(folder, {
    name,
    onOutput: (stream, data) => chunks.push([stream, Buffer.from(data).toString()]),
  })
  assert.equal(built.name, name)
  assert.equal(built.cached, false)
  assert.equal(built.source, join(folder, 'soulbox.toml'))
  assert.match(built.key, /^[0-9a-f]{64}$/)
  assert.equal(typeof built.layer, 'string')
  const stdout = chunks.filter(([stream]) => stream === 'stdout').map(([, text]) => text)
  const stderr = chunks.filter(([stream]) => stream === 'stderr').map(([, text]) => text)
  assert.equal(stdout.join(''), 'from-step\n')
  assert.equal(stderr.join(''), 'to-stderr\n')

  await withSandbox(name, async (sbx) => {
    const result = await sbx.commands.run('cat /home/user/built.txt /home/user/copied.txt')
    assert.equal(result.stdout, 'copied in\ncopied in\n')
  })
})

test('buildTemplate reuses an unchanged build', async (t) => {
  if (!requireRoot(t)) return
  const folder = buildFolder(STEP_TOML, { 'input.txt': 'cached\n' })
  const name = `node-${randomUUID().slice(0, 12)}`
  const first = await Sandbox.buildTemplate(folder, { name })
  const chunks = []
  const again = await Sandbox.buildTemplate(folder, { name, onOutput: (...args) => chunks.push(args) })
  assert.equal(first.cached, false)
  assert.equal(again.cached, true)
  assert.equal(again.key, first.key)
  assert.equal(again.layer, first.layer)
  assert.deepEqual(chunks, [], 'a cached build runs no step')
})

test('buildTemplate resolves a relative path from cwd', async (t) => {
  if (!requireRoot(t)) return
  const folder = buildFolder('run = ["echo relative > /home/user/built.txt"]\n')
  const cwd = process.cwd()
  process.chdir(scratch)
  let built
  try {
    built = await Sandbox.buildTemplate(folder.slice(scratch.length + 1))
  } finally {
    process.chdir(cwd)
  }
  assert.equal(built.source, join(folder, 'soulbox.toml'))
  assert.equal(built.name, undefined)
  await withSandbox(folder, async (sbx) => {
    assert.equal((await sbx.commands.run('cat /home/user/built.txt')).stdout, 'relative\n')
  })
})

test('buildTemplate survives a throwing onOutput', async (t) => {
  if (!requireRoot(t)) return
  const folder = buildFolder('run = ["echo one; echo survived > /home/user/built.txt"]\n')
  const warning = once(process, 'warning')
  const built = await Sandbox.buildTemplate(folder, {
    onOutput: () => {
      throw new Error('callback broke')
    },
  })
  const [emitted] = await warning
  assert.equal(emitted.code, 'SOULBOX_ON_OUTPUT_FAILED')
  assert.match(emitted.message, /callback broke/)
  assert.equal(emitted.cause.message, 'callback broke')
  assert.equal(built.cached, false)
  await withSandbox(folder, async (sbx) => {
    assert.equal((await sbx.commands.run('cat /home/user/built.txt')).stdout, 'survived\n')
  })
})

test('buildTemplate rejects an invalid soulbox.toml', async (t) => {
  if (!requireRoot(t)) return
  const folder = buildFolder('rn = ["true"]\n')
  await assert.rejects(Sandbox.buildTemplate(folder), (error) => {
    assert.ok(error instanceof InvalidArgumentError, `${error.name}: ${error.message}`)
    assert.equal(error.code, 'INVALID_ARGUMENT')
    assert.match(error.message, /unknown field `rn`/)
    return true
  })
})

test('buildTemplate rejects a failing step', async (t) => {
  if (!requireRoot(t)) return
  const folder = buildFolder('run = ["echo failing; exit 3"]\n')
  await assert.rejects(Sandbox.buildTemplate(folder), (error) => {
    assert.ok(error instanceof SandboxError, `${error.name}: ${error.message}`)
    assert.equal(error.code, 'TEMPLATE_FAILED')
    assert.match(error.message, /exit code 3/)
    return true
  })
})

test('buildTemplate checks its arguments', async () => {
  await assert.rejects(Sandbox.buildTemplate(42), InvalidArgumentError)
  await assert.rejects(Sandbox.buildTemplate(scratch, { name: 7 }), InvalidArgumentError)
  await assert.rejects(Sandbox.buildTemplate(scratch, { onOutput: 'log' }), InvalidArgumentError)
})

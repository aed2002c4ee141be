// Sandboxes through the Node API: create, timeouts, kill, garbage
// collection, limits and the entry points that wait for the lifecycle API.

import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import * as esm from 'soulbox'
import Sandbox, { InvalidArgumentError, SandboxError, SandboxNotFoundError } from 'soulbox'
import {
  eventually,
  hostProcessesOf,
  leftoverCgroups,
  requireRoot,
  withSandbox,
} from './helpers.mjs'

test('CommonJS and ESM share classes', () => {
  const cjs = createRequire(import.meta.url)('soulbox')
  assert.equal(cjs.Sandbox, esm.Sandbox)
  assert.equal(cjs.CommandExitError, esm.CommandExitError)
  assert.equal(esm.default, esm.Sandbox)
  for (const name of [
    'SandboxError',
    'TimeoutError',
    'InvalidArgumentError',
    'NotEnoughSpaceError',
    'NotFoundError',
    'FileNotFoundError',
    'SandboxNotFoundError',
    'CommandExitError',
  ]) {
    assert.equal(typeof esm[name], 'function', `${name} is exported`)
    assert.equal(new esm[name]({ error: 'x' }).name, name)
  }
})

test('kill removes every trace', async (t) => {
  if (!requireRoot(t)) return
  const sbx = await Sandbox.create()
  assert.match(sbx.sandboxId, /^sb-/)
  assert.equal((await sbx.commands.run('hostname')).stdout, `${sbx.sandboxId}\n`)
  assert.equal(await sbx.isRunning(), true)
  assert.ok(leftoverCgroups(sbx.sandboxId).length > 0, 'a live sandbox has cgroups')
  await sbx.kill()
  await sbx.kill()
  assert.equal(await sbx.isRunning(), false)
  assert.deepEqual(leftoverCgroups(sbx.sandboxId), [])
  assert.deepEqual(hostProcessesOf(sbx.sandboxId), [])
  const error = await sbx.commands.run('true').catch((e) => e)
  assert.ok(error instanceof SandboxNotFoundError, `expected SandboxNotFoundError, got ${error}`)
  assert.equal(error.code, 'SANDBOX_NOT_RUNNING')
  await assert.rejects(sbx.files.read('x'), SandboxNotFoundError)
})

test('garbage collection kills sandbox', async (t) => {
  if (!requireRoot(t)) return
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc')
  // The sandbox is only reachable inside this function, so it is garbage
  // once the function returns.
  const id = await (async () => {
    const sbx = await Sandbox.create()
    await sbx.commands.run('sleep 300 &')
    return sbx.sandboxId
  })()
  assert.ok(hostProcessesOf(id).length > 0, 'the sandbox runs before collection')
  const gone = await eventually(async () => {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    return leftoverCgroups(id).length === 0 && hostProcessesOf(id).length === 0
  }, 10_000)
  assert.ok(gone, `sandbox ${id} outlived its collected handle`)
})

test('sandbox timeout ends it', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ timeoutMs: 60_000 }, async (sbx) => {
    await sbx.setTimeout(500)
    assert.ok(await eventually(async () => !(await sbx.isRunning()), 5000))
    await assert.rejects(sbx.commands.run('true'), SandboxNotFoundError)
  })
})

test('create options checked', async (t) => {
  if (!requireRoot(t)) return
  const cases = [
    [() => Sandbox.create({ timeoutMs: -5 }), /timeoutMs/],
    [() => Sandbox.create({ envs: { A: 2 } }), /envs\.A/],
    [() => Sandbox.create({ metadata: 'x' }), /metadata/],
    [() => Sandbox.create({ memoryLimit: -1 }), /memoryLimit/],
    [() => Sandbox.create({ memoryLimit: 1 << 20 }), /memory_limit/],
    [() => Sandbox.create('base'), /template "base"/],
    [() => Sandbox.create(7), /opts must be an object/],
  ]
  for (const [create, message] of cases) {
    const error = await create().catch((e) => e)
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`)
    assert.match(error.message, message)
  }
  await withSandbox({ timeoutMs: 0, metadata: { owner: 'tests' } }, async (sbx) => {
    assert.equal(await sbx.isRunning(), true)
  })
  const named = await Sandbox.create('host', { envs: { NAMED: 'yes' } })
  try {
    assert.equal((await named.commands.run('echo $NAMED')).stdout, 'yes\n')
  } finally {
    await named.kill()
  }
})

test('lifecycle calls not implemented yet', async () => {
  const calls = [
    () => Sandbox.connect('sb-x'),
    () => Sandbox.list(),
    () => Sandbox.kill('sb-x'),
    () => Sandbox.getInfo('sb-x'),
    () => Sandbox.setTimeout('sb-x', 1000),
  ]
  for (const call of calls) {
    const error = await call().catch((e) => e)
    assert.ok(error instanceof SandboxError)
    assert.equal(error.code, 'NOT_IMPLEMENTED')
    assert.match(error.message, /^not implemented yet: /)
  }
})

test('out of memory reported', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ memoryLimit: 256 << 20 }, async (sbx) => {
    const hog = "python3 -c 'import mmap; m = mmap.mmap(-1, 1 << 30); m[::4096] = b\"x\" * (1 << 18)'"
    const started = Date.now()
    const error = await sbx.commands.run(hog, { timeoutMs: 30_000 }).catch((e) => e)
    assert.ok(error instanceof esm.CommandExitError, `expected CommandExitError, got ${error}`)
    assert.ok(Date.now() - started < 20_000, 'the kill should come quickly')
    assert.equal(error.oomKilled, true)
    assert.equal(error.exitCode, 128 + 9)
    assert.match(error.error, /out of memory/)
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n')
  })
})

test('fork bomb contained', async (t) => {
  if (!requireRoot(t)) return
  const bombed = await Sandbox.create({ pidsLimit: 64 })
  try {
    await withSandbox({}, async (bystander) => {
      const bomb = await bombed.commands.run(':(){ :|:& };:', { background: true })
      await new Promise((resolve) => setTimeout(resolve, 2000))
      const other = await bystander.commands.run("sh -c 'echo from-child'")
      assert.equal(other.stdout, 'from-child\n', 'another sandbox must still fork')
      await bomb.kill()
    })
  } finally {
    await bombed.kill()
  }
  assert.deepEqual(leftoverCgroups(bombed.sandboxId), [])
  assert.deepEqual(hostProcessesOf(bombed.sandboxId), [])
})

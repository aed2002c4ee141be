// SandboxPool through the Node API: hand-overs that are like new
// sandboxes, the refill, and a close or collection that leaves nothing of
// the waiting sandboxes.

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { test } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import * as esm from 'soulbox'
import { InvalidArgumentError, Sandbox, SandboxError, SandboxPool } from 'soulbox'
import { eventually, hostProcessesOf, leftoverCgroups, requireRoot } from './helpers.mjs'

// Long enough for a pool to build its sandboxes on a busy 2-core machine.
const FILL_LIMIT_MS = 60_000

/** Waits until every sandbox of `pool` is built, or fails. */
async function waitFull(pool) {
  const full = await eventually(() => pool.waiting === pool.size, FILL_LIMIT_MS)
  assert.ok(full, `pool filled only ${pool.waiting} of ${pool.size} within ${FILL_LIMIT_MS} ms`)
}

/** Returns the directory of sandbox entries, as soulbox-core picks it for root. */
function sandboxesDir() {
  const configured = process.env.SOULBOX_STATE_DIR
  return join(configured && isAbsolute(configured) ? configured : '/run/soulbox', 'sandboxes')
}

/** Returns whether host process `pid` exists and is not a zombie. */
function hostProcessAlive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/**
 * Describes what is left on the host of the sandboxes in `waiting`: a live
 * PID 1 or other process, a cgroup directory, a host mount or a state
 * entry.
 */
function leftovers(waiting) {
  const mountTable = readFileSync('/proc/self/mountinfo', 'utf8')
  let entries = []
  try {
    entries = readdirSync(sandboxesDir())
  } catch {
    // No sandbox made an entry yet.
  }
  const left = []
  for (const { sandboxId, pid } of waiting) {
    if (hostProcessAlive(pid)) {
      left.push(`${sandboxId}: PID 1 ${pid} alive`)
    }
    for (const other of hostProcessesOf(sandboxId)) {
      left.push(`${sandboxId}: process ${other} alive`)
    }
    for (const dir of leftoverCgroups(sandboxId)) {
      left.push(`${sandboxId}: cgroup ${dir}`)
    }
    if (mountTable.includes(sandboxId)) {
      left.push(`${sandboxId}: host mount`)
    }
    for (const entry of entries.filter((name) => name.startsWith(sandboxId))) {
      left.push(`${sandboxId}: state entry ${entry}`)
    }
  }
  return left
}

test('SandboxPool is exported by both entry points', () => {
  const cjs = createRequire(import.meta.url)('soulbox')
  assert.equal(typeof esm.SandboxPool, 'function')
  assert.equal(cjs.SandboxPool, esm.SandboxPool)
})

test('pooled sandbox runs commands', async (t) => {
  if (!requireRoot(t)) return
  const pool = await SandboxPool.create({ size: 1, envs: { POOL_ENV: 'set' } })
  try {
    assert.equal(pool.size, 1)
    await waitFull(pool)
    const sbx = await pool.create()
    try {
      assert.ok(sbx instanceof Sandbox)
      const result = await sbx.commands.run('echo $POOL_ENV; hostname')
      assert.equal(result.stdout, `set\n${sbx.sandboxId}\n`)
      await sbx.files.write('note.txt', 'kept')
      assert.equal(await sbx.files.read('note.txt'), 'kept')
    } finally {
      await sbx.kill()
    }
  } finally {
    await pool.close()
  }
})

test('pooled timeout counts from hand-over', async (t) => {
  if (!requireRoot(t)) return
  const timeoutMs = 30_000
  const pool = await SandboxPool.create({ size: 1, timeoutMs })
  try {
    await waitFull(pool)
    // The waiting sandbox ages, so a start or deadline taken from its
    // build would be at least this much too early.
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const handedAt = Date.now()
    const sbx = await pool.create()
    const returnedAt = Date.now()
    try {
      const info = await sbx.getInfo()
      const started = info.startedAt.getTime()
      assert.ok(started >= handedAt, `startedAt ${started} is before the hand-over ${handedAt}`)
      assert.ok(started <= returnedAt, `startedAt ${started} is after create resolved ${returnedAt}`)
      assert.ok(info.endAt !== undefined, 'a pooled sandbox with a timeout has no end time')
      const ends = info.endAt.getTime()
      assert.ok(ends >= handedAt + timeoutMs - 500, `endAt ${ends} counts from before the hand-over`)
      assert.ok(ends <= returnedAt + timeoutMs + 500, `endAt ${ends} is past the timeout`)
    } finally {
      await sbx.kill()
    }
  } finally {
    await pool.close()
  }
})

test('pooled sandbox listed with metadata', async (t) => {
  if (!requireRoot(t)) return
  const label = `pool-${process.pid}-${Date.now()}`
  const query = { query: { metadata: { 'pool-test': label } } }
  const pool = await SandboxPool.create({ size: 2, metadata: { 'pool-test': label } })
  try {
    await waitFull(pool)
    assert.deepEqual(await Sandbox.list(query), [], 'waiting sandboxes are listed')
    const sbx = await pool.create()
    try {
      const listed = await Sandbox.list(query)
      assert.deepEqual(
        listed.map((info) => info.sandboxId),
        [sbx.sandboxId],
      )
      assert.deepEqual(listed[0].metadata, { 'pool-test': label })
    } finally {
      await sbx.kill()
    }
  } finally {
    await pool.close()
  }
})

test('pooled sandbox has no earlier state', async (t) => {
  if (!requireRoot(t)) return
  const pool = await SandboxPool.create({ size: 1 })
  try {
    await waitFull(pool)
    const first = await pool.create()
    try {
      assert.deepEqual(await first.commands.list(), [], 'a command ran before the hand-over')
      await first.commands.run('echo old > /home/user/mark; echo old > /tmp/mark')
      await first.commands.run('sleep 300', { background: true })
    } finally {
      await first.kill()
    }
    await waitFull(pool)
    const second = await pool.create()
    try {
      assert.notEqual(second.sandboxId, first.sandboxId)
      assert.deepEqual(await second.commands.list(), [], 'a command ran before the hand-over')
      assert.equal(await second.files.exists('/home/user/mark'), false)
      assert.equal(await second.files.exists('/tmp/mark'), false)
      const listing = await second.commands.run('ls -A /home/user /tmp')
      assert.equal(listing.stdout, '/home/user:\n\n/tmp:\n')
    } finally {
      await second.kill()
    }
  } finally {
    await pool.close()
  }
})

test('pool refills after create', async (t) => {
  if (!requireRoot(t)) return
  const pool = await SandboxPool.create({ size: 2 })
  try {
    await waitFull(pool)
    const sbx = await pool.create()
    await sbx.kill()
    await waitFull(pool)
    assert.equal(pool.waiting, 2)
  } finally {
    await pool.close()
  }
})

test('close kills waiting sandboxes', async (t) => {
  if (!requireRoot(t)) return
  const pool = await SandboxPool.create({ size: 2 })
  await waitFull(pool)
  const handed = await pool.create()
  await waitFull(pool)
  const waiting = pool._native.waitingSandboxes()
  assert.equal(waiting.length, 2)
  assert.ok(
    waiting.every(({ pid }) => hostProcessAlive(pid)),
    'waiting PID 1s are not running',
  )
  assert.ok(leftovers(waiting).length >= 4, 'the check does not see the waiting sandboxes')
  await pool.close()
  assert.deepEqual(leftovers(waiting), [])
  assert.equal(pool.waiting, 0)
  await pool.close()
  try {
    // A sandbox already handed over runs on.
    assert.equal((await handed.commands.run('echo alive')).stdout, 'alive\n')
  } finally {
    await handed.kill()
  }
})

test('collected pool kills waiting sandboxes', async (t) => {
  if (!requireRoot(t)) return
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc')
  // The pool is only reachable inside this function, so it is garbage
  // once the function returns.
  const waiting = await (async () => {
    const pool = await SandboxPool.create({ size: 2 })
    await waitFull(pool)
    return pool._native.waitingSandboxes()
  })()
  assert.equal(waiting.length, 2)
  const cleaned = await eventually(async () => {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    return leftovers(waiting).length === 0
  }, 10_000)
  assert.ok(cleaned, `left after collection: ${leftovers(waiting).join(', ')}`)
})

test('pool outlived by its process leaves nothing', (t) => {
  if (!requireRoot(t)) return
  const script = `
    const { SandboxPool } = require('soulbox')
    SandboxPool.create({ size: 2 }).then(async (pool) => {
      const deadline = Date.now() + ${FILL_LIMIT_MS}
      while (pool.waiting < 2 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      console.log(JSON.stringify(pool._native.waitingSandboxes()))
    })
  `
  const output = execFileSync(process.execPath, ['-e', script], {
    cwd: new URL('..', import.meta.url),
    encoding: 'utf8',
    timeout: 2 * FILL_LIMIT_MS,
  })
  const waiting = JSON.parse(output)
  assert.equal(waiting.length, 2, output)
  assert.deepEqual(leftovers(waiting), [])
})

test('exit during a build leaves nothing', (t) => {
  if (!requireRoot(t)) return
  // A state directory of its own, so that no other SoulBox process sweeps
  // what the exit leaves, and only this test's sandboxes are in it.
  const stateDir = mkdtempSync(join(tmpdir(), 'soulbox-pool-exit-'))
  try {
    const run = (script) =>
      execFileSync(process.execPath, ['-e', script], {
        cwd: new URL('..', import.meta.url),
        env: { ...process.env, SOULBOX_STATE_DIR: stateDir },
        encoding: 'utf8',
        timeout: 2 * FILL_LIMIT_MS,
      })
    // The first pool prepares the template, so that the next one starts
    // building sandboxes at once.
    run(`
      const { SandboxPool } = require('soulbox')
      SandboxPool.create({ size: 1 }).then(async (pool) => {
        while (pool.waiting < 1) await new Promise((resolve) => setTimeout(resolve, 10))
        await pool.close()
      })
    `)
    // The process ends while the refill builds its first sandboxes.
    run(`
      const { SandboxPool } = require('soulbox')
      SandboxPool.create({ size: 4 })
    `)
    const entries = readdirSync(join(stateDir, 'sandboxes'))
    assert.deepEqual(entries, [], 'state entries left by the exit')
  } finally {
    rmSync(stateDir, { recursive: true, force: true })
  }
})

test('bad sizes reject', async () => {
  for (const size of [undefined, 0, -1, 1025, 1.5, '2', null, true]) {
    await assert.rejects(
      SandboxPool.create({ size }),
      (error) => {
        assert.ok(error instanceof InvalidArgumentError, `size ${size}: ${error}`)
        assert.match(error.message, /^size must be a whole number from 1 to 1024, not /)
        return true
      },
      `size ${size}`,
    )
  }
  await assert.rejects(SandboxPool.create('host'), InvalidArgumentError)
})

test('bad options reject as Sandbox.create', async () => {
  const cases = [
    { timeoutMs: -1 },
    { metadata: { key: 1 } },
    { envs: 'A=1' },
    { memoryLimit: 1 },
    { cpuLimit: '2' },
    { lifecycle: { onTimeout: 'sleep' } },
    { lifecycle: { autoResume: true } },
    { network: { denyOut: ['not-an-address'] } },
    { mounts: '/tmp' },
    { mcp: { server: {} } },
  ]
  for (const opts of cases) {
    const fromCreate = await Sandbox.create(opts).then(
      (sbx) => assert.fail(`Sandbox.create made ${sbx.sandboxId} with ${JSON.stringify(opts)}`),
      (error) => error,
    )
    const fromPool = await SandboxPool.create({ size: 1, ...opts }).then(
      (pool) => pool.close().then(() => assert.fail(`SandboxPool.create took ${JSON.stringify(opts)}`)),
      (error) => error,
    )
    assert.equal(fromPool.constructor, fromCreate.constructor, JSON.stringify(opts))
    assert.equal(fromPool.message, fromCreate.message, JSON.stringify(opts))
  }
  for (const template of ['no-such-template', '/nonexistent/template']) {
    const fromCreate = await Sandbox.create(template).then(
      (sbx) => assert.fail(`Sandbox.create made ${sbx.sandboxId} from ${template}`),
      (error) => error,
    )
    const fromPool = await SandboxPool.create(template, { size: 1 }).then(
      (pool) => pool.close().then(() => assert.fail(`SandboxPool.create took ${template}`)),
      (error) => error,
    )
    assert.ok(fromPool instanceof InvalidArgumentError, `${template}: ${fromPool}`)
    assert.equal(fromPool.message, fromCreate.message, template)
  }
})

test('create after close rejects', async (t) => {
  if (!requireRoot(t)) return
  const pool = await SandboxPool.create('host', { size: 1 })
  await pool.close()
  await assert.rejects(pool.create(), (error) => {
    assert.ok(error instanceof SandboxError, `${error}`)
    assert.match(error.message, /closed/)
    return true
  })
  assert.equal(pool.waiting, 0)
})

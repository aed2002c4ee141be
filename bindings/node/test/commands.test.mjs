// Commands through the Node API: sbx.commands and CommandHandle.

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import { CommandExitError, InvalidArgumentError, Sandbox, SandboxError, TimeoutError } from 'soulbox'
import { countProcesses, eventually, requireRoot, withSandbox } from './helpers.mjs'

test('timeout kills whole tree', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const started = Date.now()
    const run = sbx.commands.run('sleep 300 & sleep 300 & wait', { timeoutMs: 2000 })
    await assert.rejects(run, TimeoutError)
    assert.ok(Date.now() - started < 10_000, 'the timeout should end the run within seconds')
    assert.equal(await countProcesses(sbx, 'sleep'), 0, 'no sleep may survive the timeout')
  })
})

test('handle kill ends children', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const handle = await sbx.commands.run('sleep 300 & sleep 300 & wait', { background: true })
    assert.ok(await eventually(async () => (await countProcesses(sbx, 'sleep')) === 2))
    assert.equal(await handle.kill(), true)
    const error = await handle.wait().catch((e) => e)
    assert.ok(error instanceof CommandExitError, `expected CommandExitError, got ${error}`)
    assert.equal(error.exitCode, 128 + 9)
    assert.equal(error.error, 'killed by signal 9')
    assert.ok(await eventually(async () => (await countProcesses(sbx, 'sleep')) === 0))
    assert.equal(await handle.kill(), false, 'a second kill finds no running command')
  })
})

test('stdin is closed by default', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const result = await sbx.commands.run('cat', { timeoutMs: 5000 })
    assert.equal(result.stdout, '')
    assert.equal(result.exitCode, 0)
  })
})

test('stdin sent then closed', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const handle = await sbx.commands.run('cat', { background: true, stdin: true })
    await handle.sendStdin('hello\n')
    await handle.closeStdin()
    const result = await handle.wait()
    assert.equal(result.stdout, 'hello\n')
  })
})

test('stdin through commands by pid', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const handle = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(handle.pid, new TextEncoder().encode('bytes\n'))
    await sbx.commands.closeStdin(handle.pid)
    assert.equal((await handle.wait()).stdout, 'bytes\n')
  })
})

test('lone trailing byte decodes to U+FFFD', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const cmd = "head -c 8191 /dev/zero | tr '\\0' a; printf '\\342'"
    const expected = 'a'.repeat(8191) + '\uFFFD'
    const collected = await sbx.commands.run(cmd)
    assert.equal(collected.stdout, expected)
    const chunks = []
    const streamed = await sbx.commands.run(cmd, { onStdout: (data) => chunks.push(data) })
    assert.equal(streamed.stdout, expected)
    assert.equal(chunks.join(''), expected)
  })
})

test('split euro sign decodes whole', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const chunks = []
    const result = await sbx.commands.run("printf '\\342'; sleep 0.2; printf '\\202\\254'", {
      onStdout: (data) => chunks.push(data),
    })
    assert.equal(result.stdout, '€')
    assert.deepEqual(chunks, ['€'], 'no chunk may carry half a character')
  })
})

test('random bytes decode without error', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const result = await sbx.commands.run('head -c 4096 /dev/urandom')
    assert.equal(typeof result.stdout, 'string')
    assert.ok(result.stdout.length > 0)
  })
})

test('large output counted inside', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const result = await sbx.commands.run('yes | head -c 200000000 | wc -c')
    assert.equal(result.stdout, '200000000\n')
  })
})

test('streaming 100 MB keeps memory flat', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const total = 100_000_000
    let received = 0
    let peakRss = 0
    const before = process.memoryUsage().rss
    const result = await sbx.commands.run(`head -c ${total} /dev/zero | tr '\\0' a`, {
      timeoutMs: 120_000,
      onStdout: (data) => {
        received += data.length
        peakRss = Math.max(peakRss, process.memoryUsage().rss)
      },
    })
    assert.equal(received, total)
    assert.equal(result.stdout.length, 1 << 20, 'the result keeps only the last 1 Mi characters')
    const growthMiB = (peakRss - before) / (1 << 20)
    assert.ok(growthMiB < 64, `memory grew by ${growthMiB.toFixed(1)} MiB for 95 MiB of output`)
  })
})

test('non-zero exit keeps output', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const error = await sbx.commands.run('echo out; echo err >&2; exit 3').catch((e) => e)
    assert.ok(error instanceof CommandExitError, `expected CommandExitError, got ${error}`)
    assert.ok(error instanceof SandboxError)
    assert.equal(error.stdout, 'out\n')
    assert.equal(error.stderr, 'err\n')
    assert.equal(error.exitCode, 3)
    assert.equal(error.code, 'COMMAND_EXIT')
    assert.equal(error.error, 'exit status 3')
  })
})

test('environment layering', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ envs: { FOO: 'bar' } }, async (sbx) => {
    assert.equal((await sbx.commands.run('echo $FOO')).stdout, 'bar\n')
    const own = await sbx.commands.run('echo $FOO', { envs: { FOO: 'baz' } })
    assert.equal(own.stdout, 'baz\n')
    assert.equal((await sbx.commands.run('echo $HOME $USER')).stdout, '/home/user user\n')
    assert.equal((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
  })
})

test('bad cwd rejected before start', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const error = await sbx.commands.run('pwd', { cwd: '/nope' }).catch((e) => e)
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`)
    assert.match(error.message, /\/nope/)
    assert.deepEqual(await sbx.commands.list(), [])
  })
})

test('event loop ticks during command', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    let ticks = 0
    const timer = setInterval(() => ticks++, 10)
    try {
      await sbx.commands.run('sleep 2')
    } finally {
      clearInterval(timer)
    }
    // 200 ticks fit in 2 s; a blocked loop would see at most a few.
    assert.ok(ticks >= 50, `the event loop ticked only ${ticks} times in 2 s`)
  })
})

test('output streams before exit', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const arrivals = []
    const started = Date.now()
    const result = await sbx.commands.run('echo first; sleep 1; echo second', {
      onStdout: (data) => arrivals.push([data, Date.now() - started]),
    })
    const ended = Date.now() - started
    assert.equal(result.stdout, 'first\nsecond\n')
    assert.equal(arrivals[0][0], 'first\n')
    assert.ok(ended - arrivals[0][1] >= 500, 'the first line should arrive a second early')
  })
})

test('abort signal cancels command', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 300)
    const started = Date.now()
    const error = await sbx.commands
      .run('sleep 300 & sleep 300', { signal: controller.signal })
      .catch((e) => e)
    assert.equal(error.name, 'AbortError')
    assert.ok(Date.now() - started < 10_000)
    assert.ok(await eventually(async () => (await countProcesses(sbx, 'sleep')) === 0))
    const aborted = AbortSignal.abort()
    await assert.rejects(sbx.commands.run('true', { signal: aborted }), { name: 'AbortError' })
  })
})

test('list connect and kill by pid', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const handle = await sbx.commands.run('read line; echo got $line', {
      background: true,
      stdin: true,
      envs: { MARK: 'x' },
    })
    const listed = await sbx.commands.list()
    assert.equal(listed.length, 1)
    assert.equal(listed[0].pid, handle.pid)
    assert.deepEqual(listed[0].envs, { MARK: 'x' })
    assert.equal(listed[0].cwd, '/home/user')
    const seen = []
    const second = await sbx.commands.connect(handle.pid, { onStdout: (d) => seen.push(d) })
    await handle.sendStdin('ping\n')
    assert.equal((await second.wait()).stdout, 'got ping\n')
    assert.deepEqual(seen, ['got ping\n'])
    assert.equal(await sbx.commands.kill(handle.pid), false, 'the command has ended')
    const sleeper = await sbx.commands.run('sleep 300', { background: true })
    assert.equal(await sbx.commands.kill(sleeper.pid), true)
    await assert.rejects(sleeper.wait(), CommandExitError)
  })
})

test('disconnect stops callbacks', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const seen = []
    const handle = await sbx.commands.run('while true; do echo tick; sleep 0.05; done', {
      background: true,
      onStdout: (data) => seen.push(data),
    })
    assert.ok(await eventually(() => seen.length > 0))
    await handle.disconnect()
    const count = seen.length
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.equal(seen.length, count, 'no callback after disconnect')
    assert.equal((await sbx.commands.list()).length, 1, 'the command keeps running')
    assert.equal(await sbx.commands.kill(handle.pid), true)
  })
})

test('background command outlives script end', async (t) => {
  if (!requireRoot(t)) return
  // The script's last statement starts the command. "late" arrives only if
  // the running command kept the Node process alive until it ended.
  const script = `
    import { Sandbox } from 'soulbox'
    const sbx = await Sandbox.create({ timeoutMs: 60_000 })
    console.log(sbx.sandboxId)
    await sbx.commands.run('sleep 0.5; echo late', {
      background: true,
      onStdout: (data) => process.stdout.write(data),
    })
  `
  const packageDir = fileURLToPath(new URL('..', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    cwd: packageDir,
    timeout: 60_000,
  })
  const [sandboxId, late] = stdout.split('\n')
  assert.equal(late, 'late')
  // The sandbox runs on after the process exits, until its timeout or a kill.
  assert.equal(await Sandbox.kill(sandboxId), true)
})

test('callback error rejects wait', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const failure = new Error('callback failed')
    const run = sbx.commands.run('echo x', {
      onStdout: () => {
        throw failure
      },
    })
    await assert.rejects(run, (error) => error === failure)
  })
})

test('signal exit reported', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const error = await sbx.commands.run('kill -TERM $$').catch((e) => e)
    assert.ok(error instanceof CommandExitError)
    assert.equal(error.exitCode, 128 + 15)
    assert.equal(error.error, 'killed by signal 15')
  })
})

test('invalid options rejected', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const cases = [
      [() => sbx.commands.run(42), /cmd must be a string/],
      [() => sbx.commands.run('true', { timeoutMs: -1 }), /timeoutMs must be .*, not -1$/],
      [() => sbx.commands.run('true', { timeoutMs: 1.5 }), /timeoutMs must be .*, not 1\.5$/],
      [() => sbx.commands.run('true', { timeoutMs: NaN }), /timeoutMs must be .*, not NaN$/],
      [() => sbx.commands.run(undefined), /cmd must be a string, not undefined$/],
      [() => sbx.commands.run('true', { envs: { A: 1 } }), /envs\.A/],
      [() => sbx.commands.run('true', { user: 'nobody' }), /nobody/],
      [() => sbx.commands.run('true', { envs: { 'A=B': 'x' } }), /A=B/],
      [() => sbx.commands.kill(-1), /pid/],
      [() => sbx.commands.run('true', { onStdout: 'print' }), /onStdout/],
    ]
    for (const [call, message] of cases) {
      const error = await call().catch((e) => e)
      assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`)
      assert.match(error.message, message)
      assert.equal(error.code, 'INVALID_ARGUMENT')
    }
  })
})

test('pty runs interactive shell', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const decoder = new TextDecoder()
    let screen = ''
    const terminal = await sbx.pty.create({
      rows: 24,
      cols: 80,
      onData: (data) => {
        assert.ok(data instanceof Uint8Array)
        screen += decoder.decode(data, { stream: true })
      },
    })
    await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('echo $((6 * 7))\n'))
    assert.ok(await eventually(() => screen.includes('42')), `no 42 in ${JSON.stringify(screen)}`)
    await sbx.pty.resize(terminal.pid, { rows: 30, cols: 100 })
    await sbx.pty.sendInput(terminal.pid, 'stty size\n')
    assert.ok(await eventually(() => screen.includes('30 100')), `no size in ${screen}`)
    assert.equal(await sbx.pty.kill(terminal.pid), true)
    await assert.rejects(terminal.wait(), CommandExitError)
  })
})

// The code interpreter through the Node API: sbx.runCode and code
// contexts, against real sandboxes with the host's python3.

import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { test } from 'node:test'

import * as esm from 'soulbox'
import {
  Execution,
  ExecutionError,
  InvalidArgumentError,
  NotFoundError,
  OutputMessage,
  Result,
  TimeoutError,
} from 'soulbox'
import { requireRoot, withSandbox } from './helpers.mjs'

test('code classes exported like E2B', () => {
  const cjs = createRequire(import.meta.url)('soulbox')
  for (const name of ['Execution', 'ExecutionError', 'OutputMessage', 'Result']) {
    assert.equal(typeof esm[name], 'function', `${name} is exported`)
    assert.equal(cjs[name], esm[name], `CommonJS and ESM share ${name}`)
  }
  const result = new Result({ text: '1', html: '<b>1</b>', 'text/x-custom': 'x' }, true)
  assert.deepEqual(result.formats(), ['html', 'text/x-custom'])
  assert.deepEqual(result.extra, { 'text/x-custom': 'x' })
  assert.deepEqual(result.toJSON().extra, { 'text/x-custom': 'x' })
  const execution = new Execution([new Result({ text: '2' }, false), result])
  assert.equal(execution.text, '1', 'text is the main result\'s')
  assert.deepEqual(execution.logs, { stdout: [], stderr: [] })
})

test('variables persist between runs', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const first = await sbx.runCode('x = 6 * 7\nimport math')
    assert.ok(first instanceof Execution, 'runCode resolves with an Execution')
    assert.equal(first.error, undefined)
    assert.deepEqual(first.results, [], 'an assignment has no value')
    assert.equal(first.text, undefined)

    const second = await sbx.runCode('x + math.floor(0.5)')
    assert.equal(second.text, '42')
    assert.equal(second.executionCount, 2)
    assert.equal(second.results.length, 1)
    assert.ok(second.results[0] instanceof Result)
    assert.equal(second.results[0].isMainResult, true)
    assert.deepEqual(second.toJSON(), {
      results: second.results,
      logs: { stdout: [], stderr: [] },
      error: undefined,
    })
  })
})

test('stdout and stderr go to logs', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const code = [
      'import os, sys',
      "print('from print')",
      "print('to stderr', file=sys.stderr)",
      "os.system('echo from a child')",
    ].join('\n')
    const execution = await sbx.runCode(code)
    assert.equal(execution.logs.stdout.join(''), 'from print\nfrom a child\n')
    assert.equal(execution.logs.stderr.join(''), 'to stderr\n')
    assert.equal(execution.error, undefined)
  })
})

test('exception goes to execution.error', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const code = "def divide(a, b):\n    return a / b\n\nprint('before')\ndivide(1, 0)"
    const execution = await sbx.runCode(code)
    assert.ok(execution.error instanceof ExecutionError)
    assert.equal(execution.error.name, 'ZeroDivisionError')
    assert.equal(execution.error.value, 'division by zero')
    assert.match(execution.error.traceback, /return a \/ b/)
    assert.equal(execution.logs.stdout.join(''), 'before\n')
    assert.deepEqual(execution.results, [])
  })
})

test('_repr_html_ gives result.html', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const code = [
      'class Table:',
      '    def _repr_html_(self):',
      "        return '<table></table>'",
      '    def _repr_json_(self):',
      "        return {'rows': 0}",
      "display('shown first')",
      'Table()',
    ].join('\n')
    const execution = await sbx.runCode(code)
    assert.equal(execution.results.length, 2)
    const [shown, main] = execution.results
    assert.equal(shown.isMainResult, false)
    assert.equal(shown.text, "'shown first'")
    assert.deepEqual(shown.formats(), [])
    assert.equal(main.isMainResult, true)
    assert.equal(main.html, '<table></table>')
    assert.deepEqual(main.json, { rows: 0 }, 'json is the parsed value')
    assert.deepEqual(main.formats(), ['html', 'json'])
    assert.match(main.text, /^<__main__\.Table object at 0x[0-9a-f]+>$/)
    assert.equal(main.png, undefined)
    assert.equal(main.chart, undefined)
    assert.deepEqual(main.extra, {})
    assert.equal(execution.text, main.text)
  })
})

test('callbacks fire in order', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const code = [
      'import sys, time',
      "print('one')",
      'time.sleep(0.3)',
      "print('two', file=sys.stderr)",
      'time.sleep(0.1)',
      "display('shown')",
      '1 / 0',
    ].join('\n')
    const seen = []
    let running = 0
    let overlapped = false
    // Each callback is async, so this also checks that one is awaited
    // before the next one starts.
    const record = (kind) => async (value) => {
      running += 1
      overlapped ||= running > 1
      seen.push({ kind, value, at: Date.now() })
      await new Promise((resolve) => setTimeout(resolve, 20))
      running -= 1
    }
    const started = Date.now()
    const execution = await sbx.runCode(code, {
      onStdout: record('stdout'),
      onStderr: record('stderr'),
      onResult: record('result'),
      onError: record('error'),
    })
    // print() writes its text and its newline separately, so a line may
    // come in more than one piece.
    const stdout = seen.filter(({ kind }) => kind === 'stdout')
    const stderr = seen.filter(({ kind }) => kind === 'stderr')
    const order = seen.map(({ kind }) => kind).filter((kind, i, kinds) => kind !== kinds[i - 1])
    assert.deepEqual(order, ['stdout', 'stderr', 'result', 'error'])
    assert.equal(overlapped, false, 'a callback started before the previous one ended')

    const firstOut = stdout[0].value
    assert.ok(firstOut instanceof OutputMessage)
    assert.equal(firstOut.error, false)
    assert.equal(`${firstOut}`, firstOut.line)
    assert.equal(stdout.map(({ value }) => value.line).join(''), 'one\n')
    const nowUs = Date.now() * 1000
    assert.ok(
      firstOut.timestamp >= started * 1000 && firstOut.timestamp <= nowUs,
      `the timestamp ${firstOut.timestamp} is in microseconds since the epoch`,
    )
    assert.equal(stderr.map(({ value }) => value.line).join(''), 'two\n')
    assert.ok(stderr.every(({ value }) => value.error === true))
    const [result, error] = seen.slice(-2).map(({ value }) => value)
    assert.ok(result instanceof Result)
    assert.equal(result.text, "'shown'")
    assert.ok(error instanceof ExecutionError)
    assert.equal(error.name, 'ZeroDivisionError')

    const gap = stderr[0].at - stdout[0].at
    assert.ok(gap >= 200, `stdout arrived while the code still ran, ${gap} ms before stderr`)
    assert.equal(execution.logs.stdout.join(''), 'one\n', 'streamed output is also in the logs')
    assert.equal(execution.error.name, 'ZeroDivisionError')
  })
})

test('slow callback gets every piece', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    // More pieces than the 32 that SoulBox queues for JavaScript, so the
    // run has to wait for the callback.
    const code = 'import time\nfor i in range(200):\n    print(i, flush=True)\n    time.sleep(0.001)'
    const pieces = []
    const execution = await sbx.runCode(code, {
      onStdout: async (output) => {
        pieces.push(output.line)
        await new Promise((resolve) => setTimeout(resolve, 5))
      },
    })
    const expected = Array.from({ length: 200 }, (_, i) => `${i}\n`).join('')
    assert.ok(pieces.length > 32, `only ${pieces.length} pieces came, too few to fill the queue`)
    assert.equal(pieces.join(''), expected)
    assert.equal(execution.logs.stdout.join(''), expected)
  })
})

test('throwing callback rejects the run and interrupts the code', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.runCode("kept = 'still here'")
    const failure = new Error('callback failed')
    const code = "import time\nprint('first')\ntime.sleep(10)\nprint('second')\nfinished = True"
    const run = sbx.runCode(code, {
      onStdout: () => {
        throw failure
      },
    })
    const started = Date.now()
    await assert.rejects(run, (error) => error === failure)
    // The next run waits for the interrupted one, which ends at once.
    const after = await sbx.runCode("('finished' in globals(), kept)")
    assert.equal(after.text, "(False, 'still here')")
    assert.ok(Date.now() - started < 8_000, 'the interrupt ended the sleep')
    assert.deepEqual(after.logs.stdout, [], "the first run's output does not leak into the next")
  })
})

test('timeout throws TimeoutError, variables survive', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.runCode("kept = 'still here'")
    const started = Date.now()
    const error = await sbx.runCode('import time\ntime.sleep(30)', { timeoutMs: 500 }).catch((e) => e)
    assert.ok(error instanceof TimeoutError, `expected TimeoutError, got ${error}`)
    assert.equal(error.code, 'TIMEOUT')
    assert.match(error.message, /keeps its variables/)
    assert.ok(Date.now() - started < 10_000, 'the timeout ends the run within seconds')
    const after = await sbx.runCode('kept')
    assert.equal(after.text, "'still here'")
  })
})

test('contexts are separate and removable', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const context = await sbx.createCodeContext({ cwd: '/tmp' })
    assert.equal(typeof context.id, 'string')
    assert.equal(context.language, 'python')
    assert.equal(context.cwd, '/tmp')

    await sbx.runCode("name = 'default'")
    const inside = await sbx.runCode("import os\n(os.getcwd(), 'name' in globals())", { context })
    assert.equal(inside.text, "('/tmp', False)")
    const ids = (await sbx.listCodeContexts()).map((listed) => listed.id)
    assert.deepEqual(ids.sort(), [context.id, 'default-python'].sort())

    await sbx.runCode('y = 1', { context })
    await sbx.restartCodeContext(context)
    const restarted = await sbx.runCode('y', { context })
    assert.equal(restarted.error?.name, 'NameError', 'a restart loses the variables')
    const untouched = await sbx.runCode('name')
    assert.equal(untouched.text, "'default'", 'the default context keeps its variables')

    await sbx.removeCodeContext(context.id)
    const left = (await sbx.listCodeContexts()).map((listed) => listed.id)
    assert.deepEqual(left, ['default-python'])
    await assert.rejects(sbx.runCode('1', { context }), NotFoundError)
    await assert.rejects(sbx.removeCodeContext(context), NotFoundError)
  })
})

test('unsupported language rejected', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const error = await sbx.runCode("cat('hi')", { language: 'r' }).catch((e) => e)
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`)
    assert.match(error.message, /"r"/)
    await assert.rejects(sbx.createCodeContext({ language: 'java' }), InvalidArgumentError)
    const python = await sbx.runCode('1 + 1', { language: 'python' })
    assert.equal(python.text, '2')

    const context = await sbx.createCodeContext()
    await assert.rejects(
      sbx.runCode('1', { language: 'python', context }),
      InvalidArgumentError,
      'a language and a context together are rejected',
    )
    await assert.rejects(sbx.runCode(42), InvalidArgumentError)
    await assert.rejects(sbx.runCode('1', { onStdout: 'not a function' }), InvalidArgumentError)
    await assert.rejects(sbx.runCode('1', { timeoutMs: -1 }), InvalidArgumentError)
  })
})

test('JavaScript runs in a Node.js context of its own', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.runCode('let total = 40', { language: 'js' })
    const lines = []
    const execution = await sbx.runCode(
      "console.log('adding'); total += await Promise.resolve(2); total",
      { language: 'javascript', onStdout: (message) => lines.push(message.line) },
    )
    assert.equal(execution.error, undefined)
    assert.equal(execution.text, '42')
    assert.deepEqual(lines, ['adding\n'])
    const failed = await sbx.runCode('null.field', { language: 'js' })
    assert.ok(failed.error instanceof ExecutionError)
    assert.equal(failed.error.name, 'TypeError')
    await assert.rejects(sbx.runCode('while (true) {}', { language: 'js', timeoutMs: 500 }), TimeoutError)
    assert.equal((await sbx.runCode('total', { language: 'js' })).text, '42')
    const context = await sbx.createCodeContext({ language: 'js' })
    assert.equal(context.language, 'js')
    assert.equal((await sbx.runCode('typeof total', { context })).text, "'undefined'")
    const python = await sbx.runCode('1 + 1')
    assert.equal(python.text, '2', 'the Python context is separate')
  })
})

test('envs apply to one run only', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const code = "import os\nos.environ.get('GREETING', 'unset')"
    const withEnv = await sbx.runCode(code, { envs: { GREETING: 'hello' } })
    assert.equal(withEnv.text, "'hello'")
    const without = await sbx.runCode(code)
    assert.equal(without.text, "'unset'")
  })
})

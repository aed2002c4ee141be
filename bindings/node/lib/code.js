'use strict'

// The code interpreter: `sbx.runCode` and code contexts, with the names and
// shapes of E2B's @e2b/code-interpreter.

const check = require('./check')
const { InvalidArgumentError, SandboxError } = require('./errors')
const { call, callSync } = require('./native')

/**
 * Default timeout of `runCode`, as in E2B's JS SDK. E2B's Python SDK, and
 * SoulBox's Rust, Python and C APIs, allow 300 s.
 */
const DEFAULT_CODE_TIMEOUT_MS = 60_000

/** Format names of a Result other than `text`, in E2B's order for `formats()`. */
const RICH_FORMATS = ['html', 'markdown', 'svg', 'png', 'jpeg', 'pdf', 'latex', 'json', 'javascript']

/** Every format name that a Result has a property for. */
const FORMATS = ['text', ...RICH_FORMATS]

/** Keys of a Result's raw data that have a property of their own. */
const KNOWN_KEYS = new Set(['plain', ...FORMATS, 'data', 'chart', 'extra'])

/** A piece of output that `onStdout` or `onStderr` receives. */
class OutputMessage {
  constructor(line, timestamp, error) {
    /** The text as the code wrote it: a piece of the stream, not always one whole line. */
    this.line = line
    /** When SoulBox received it, in microseconds since the Unix epoch. */
    this.timestamp = timestamp
    /** Whether it came from stderr. */
    this.error = error
  }

  toString() {
    return this.line
  }
}

/** The exception that ended an execution. */
class ExecutionError {
  constructor(name, value, traceback) {
    /** The exception's type, such as `ZeroDivisionError`. */
    this.name = name
    /** Its message. */
    this.value = value
    /** The formatted traceback, starting at the executed code. */
    this.traceback = traceback
  }
}

/**
 * A value that the code displayed (`display(value)`) or ended with, in
 * every representation it offered. `png`, `jpeg` and `pdf` are base64;
 * `json` is the parsed value.
 */
class Result {
  constructor(rawData, isMainResult) {
    const data = { ...rawData }
    delete data.type
    delete data.is_main_result
    for (const name of FORMATS) {
      this[name] = data[name]
    }
    this.data = data.data
    this.chart = data.chart
    this.isMainResult = isMainResult
    this.raw = data
    this.extra = {}
    for (const key of Object.keys(data)) {
      if (!KNOWN_KEYS.has(key)) {
        this.extra[key] = data[key]
      }
    }
  }

  /** Names the representations present besides `text`, as E2B's `formats()`. */
  formats() {
    const formats = RICH_FORMATS.filter((name) => this[name])
    if (this.data) {
      formats.push('data')
    }
    formats.push(...Object.keys(this.extra))
    return formats
  }

  toJSON() {
    const json = {}
    for (const name of FORMATS) {
      json[name] = this[name]
    }
    if (Object.keys(this.extra).length > 0) {
      json.extra = this.extra
    }
    return json
  }
}

/** The outcome of `runCode`. */
class Execution {
  constructor(results = [], logs = { stdout: [], stderr: [] }, error = undefined, executionCount = undefined) {
    /** The values displayed, in order, and last the final expression's value. */
    this.results = results
    /** Output of the code and its child processes, by stream. */
    this.logs = logs
    /** The exception that ended the code, if one did. */
    this.error = error
    /** How many executions the context has run, this one included. */
    this.executionCount = executionCount
  }

  /** The text of the final expression's value, if there was one. */
  get text() {
    return this.results.find((result) => result.isMainResult)?.text
  }

  toJSON() {
    return { results: this.results, logs: this.logs, error: this.error }
  }
}

/**
 * Builds a Result from the addon's formats. JSON arrives as text and is
 * parsed, as E2B's server sends it parsed. Text that is not JSON, from a
 * `_repr_json_` that returned a string, stays text.
 */
function resultFrom(native) {
  const data = { ...native.formats }
  if (data.json !== undefined) {
    try {
      data.json = JSON.parse(data.json)
    } catch {
      // Kept as the text it is.
    }
  }
  return new Result(data, native.isMainResult)
}

function executionErrorFrom(native) {
  return new ExecutionError(native.name, native.value, native.traceback)
}

function executionFrom(native) {
  return new Execution(
    native.results.map(resultFrom),
    { stdout: native.stdout, stderr: native.stderr },
    native.error === null || native.error === undefined ? undefined : executionErrorFrom(native.error),
    native.executionCount ?? undefined,
  )
}

function contextFrom(native) {
  return { id: native.id, language: native.language, cwd: native.cwd }
}

/** Returns the id of a Context, or the id itself when given as a string. */
function contextId(name, context) {
  if (typeof context === 'string') {
    return context
  }
  if (context !== null && typeof context === 'object' && typeof context.id === 'string') {
    return context.id
  }
  throw check.invalid(name, context, 'a Context or the id of one')
}

/** Hands each event of `run` to its callback, in order, and returns the Execution. */
async function deliverEvents(run, { onStdout, onStderr, onResult, onError }) {
  for (;;) {
    const event = await call(() => run.nextEvent())
    switch (event?.kind) {
      case 'stdout':
        await onStdout?.(new OutputMessage(event.text, event.timestampUs, false))
        break
      case 'stderr':
        await onStderr?.(new OutputMessage(event.text, event.timestampUs, true))
        break
      case 'result':
        await onResult?.(resultFrom(event.result))
        break
      case 'error':
        await onError?.(executionErrorFrom(event.error))
        break
      case 'done':
        return executionFrom(event.execution)
      default:
        throw new SandboxError(`the code execution ended without a result (last event ${JSON.stringify(event)})`)
    }
  }
}

/**
 * Runs `code` in the default context of `language` (Python) or in
 * `context`, as E2B's `sandbox.runCode`. An exception in the code is in
 * the Execution's `error`, and the call rejects with a TimeoutError after
 * `timeoutMs`. A callback that throws rejects the call with its error
 * and interrupts the code, which keeps its context's variables.
 */
async function runCode(nativeSandbox, code, opts) {
  check.string('code', code)
  opts = check.options('opts', opts)
  const language = check.optionalString('language', opts.language)
  const context = opts.context === undefined ? undefined : contextId('context', opts.context)
  if (language !== undefined && context !== undefined) {
    throw new InvalidArgumentError('runCode takes a language or a context, not both: a context has its own language')
  }
  const callbacks = {
    onStdout: check.optionalFunction('onStdout', opts.onStdout),
    onStderr: check.optionalFunction('onStderr', opts.onStderr),
    onResult: check.optionalFunction('onResult', opts.onResult),
    onError: check.optionalFunction('onError', opts.onError),
  }
  const options = {
    code,
    language,
    contextId: context,
    envs: check.optionalStringRecord('envs', opts.envs),
    timeoutMs: check.optionalTimeoutMs('timeoutMs', opts.timeoutMs) ?? DEFAULT_CODE_TIMEOUT_MS,
    stream: Object.values(callbacks).some((callback) => callback !== undefined),
  }
  const run = await call(() => nativeSandbox.runCode(options))
  try {
    return await deliverEvents(run, callbacks)
  } finally {
    run.close()
  }
}

/** Starts a new code context, as E2B's `sandbox.createCodeContext`. */
async function createCodeContext(nativeSandbox, opts) {
  opts = check.options('opts', opts)
  const language = check.optionalString('language', opts.language)
  const cwd = check.optionalString('cwd', opts.cwd)
  return contextFrom(await call(() => nativeSandbox.createCodeContext(language, cwd)))
}

/** Lists the contexts of this Sandbox object, default ones included once used. */
function listCodeContexts(nativeSandbox) {
  return callSync(() => nativeSandbox.listCodeContexts()).map(contextFrom)
}

async function removeCodeContext(nativeSandbox, context) {
  const id = contextId('context', context)
  await call(() => nativeSandbox.removeCodeContext(id))
}

async function restartCodeContext(nativeSandbox, context) {
  const id = contextId('context', context)
  await call(() => nativeSandbox.restartCodeContext(id))
}

module.exports = {
  Execution,
  ExecutionError,
  OutputMessage,
  Result,
  runCode,
  createCodeContext,
  listCodeContexts,
  removeCodeContext,
  restartCodeContext,
  DEFAULT_CODE_TIMEOUT_MS,
}

'use strict'

// Commands and PTYs: `sbx.commands`, `sbx.pty` and the CommandHandle both
// return.

const check = require('./check')
const { call, callSync } = require('./native')
const { CommandExitError, SandboxError, TimeoutError } = require('./errors')

/** Default timeout of a foreground `commands.run`, as in E2B. */
const DEFAULT_RUN_TIMEOUT_MS = 60_000

/**
 * Characters of a stream that a result keeps when a callback also
 * receives that stream: the last 1 Mi. Without a callback the result keeps
 * everything, as E2B does.
 */
const CALLBACK_OUTPUT_LIMIT = 1 << 20

/**
 * The text of one output stream. Bytes are decoded as UTF-8 as they come:
 * a character split across chunks is decoded whole, and bytes that are
 * not UTF-8 become U+FFFD. Keeps at most the last `limit` characters.
 */
class OutputText {
  constructor(limit) {
    this.limit = limit
    this.chunks = []
    this.length = 0
    this.decoder = new TextDecoder('utf-8', { ignoreBOM: true })
  }

  /** Decodes a chunk of bytes, keeps the text and returns it. */
  push(bytes) {
    return this.keep(this.decoder.decode(bytes, { stream: true }))
  }

  /** Decodes the bytes held back at the end of the stream, if any. */
  finish() {
    return this.keep(this.decoder.decode())
  }

  keep(text) {
    if (text.length === 0) {
      return text
    }
    this.chunks.push(text)
    this.length += text.length
    // Whole chunks go once the rest still holds `limit` characters.
    while (this.chunks.length > 1 && this.length - this.chunks[0].length >= this.limit) {
      this.length -= this.chunks.shift().length
    }
    return text
  }

  toString() {
    let text = this.chunks.join('')
    if (text.length > this.limit) {
      text = text.slice(text.length - this.limit)
      // Do not start with the second half of a surrogate pair.
      const first = text.charCodeAt(0)
      if (first >= 0xdc00 && first <= 0xdfff) {
        text = text.slice(1)
      }
    }
    this.chunks = text.length > 0 ? [text] : []
    this.length = text.length
    return text
  }
}

function describeExit(exit) {
  if (exit.oomKilled) {
    return 'out of memory: the sandbox ran out of memory and the kernel killed the command'
  }
  if (exit.signal !== null && exit.signal !== undefined) {
    return `killed by signal ${exit.signal}`
  }
  return exit.exitCode === 0 ? undefined : `exit status ${exit.exitCode}`
}

/**
 * A running command or PTY. Returned by `commands.run` with
 * `background: true`, `commands.connect`, `pty.create` and `pty.connect`.
 */
class CommandHandle {
  /** @internal */
  constructor(nativeCommand, { onStdout, onStderr, onPty, collectAtEnd, signal } = {}) {
    this._native = nativeCommand
    this.pid = nativeCommand.pid
    this._onStdout = onStdout
    this._onStderr = onStderr
    this._onPty = onPty
    this._stdout = new OutputText(onStdout ? CALLBACK_OUTPUT_LIMIT : Infinity)
    this._stderr = new OutputText(onStderr ? CALLBACK_OUTPUT_LIMIT : Infinity)
    this._exit = undefined
    this._failure = undefined
    this._signal = signal
    this._abortListener = undefined
    if (signal !== undefined) {
      this._abortListener = () => {
        this._native.kill().catch(() => {})
      }
      signal.addEventListener('abort', this._abortListener, { once: true })
    }
    this._done = (collectAtEnd ? this._collect() : this._pump()).finally(() => {
      if (this._abortListener !== undefined) {
        this._signal.removeEventListener('abort', this._abortListener)
      }
    })
  }

  /** The command's stdout so far. */
  get stdout() {
    return this._stdout.toString()
  }

  /** The command's stderr so far. */
  get stderr() {
    return this._stderr.toString()
  }

  /** The exit code once the command has ended; `undefined` before. */
  get exitCode() {
    return this._exit === undefined ? undefined : exitCodeOf(this._exit)
  }

  /** What ended the command, when it did not exit with code 0. */
  get error() {
    return this._exit === undefined ? undefined : describeExit(this._exit)
  }

  /** Collects the whole output in one native call (no callbacks to feed). */
  async _collect() {
    try {
      const output = await call(() => this._native.wait())
      this._stdout.push(output.stdout)
      this._stdout.finish()
      this._stderr.push(output.stderr)
      this._stderr.finish()
      this._exit = output.exit
    } catch (error) {
      this._failure = error
    }
  }

  /** Pulls output chunk by chunk and hands it to the callbacks. */
  async _pump() {
    try {
      for (;;) {
        const event = await call(() => this._native.nextEvent())
        if (event === null) {
          break
        }
        if (event.kind === 'exit') {
          await this._emit(this._onStdout, this._stdout.finish())
          await this._emit(this._onStderr, this._stderr.finish())
          this._exit = event.exit
          break
        }
        await this._deliver(event)
      }
    } catch (error) {
      this._failure = error
      // A failed callback ends the handle, as in E2B; the command runs on.
      this._native.disconnect()
    }
  }

  async _deliver(event) {
    if (this._onPty !== undefined) {
      const { data } = event
      await this._onPty(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    } else if (event.kind === 'stdout') {
      await this._emit(this._onStdout, this._stdout.push(event.data))
    } else {
      await this._emit(this._onStderr, this._stderr.push(event.data))
    }
  }

  async _emit(callback, text) {
    if (callback !== undefined && text.length > 0) {
      await callback(text)
    }
  }

  /**
   * Waits for the command to end and returns its result. Rejects with a
   * CommandExitError for a non-zero exit, a TimeoutError when its timeout
   * killed it, and the signal's reason when an AbortSignal cancelled it.
   */
  async wait() {
    await this._done
    if (this._failure !== undefined) {
      throw this._failure
    }
    if (this._signal !== undefined && this._signal.aborted) {
      throw this._signal.reason
    }
    if (this._exit === undefined) {
      throw new SandboxError(
        `command ${this.pid} was disconnected before it ended; connect to it again to wait for it`
      )
    }
    const exit = this._exit
    const result = {
      exitCode: exitCodeOf(exit),
      error: describeExit(exit),
      stdout: this.stdout,
      stderr: this.stderr,
      oomKilled: exit.oomKilled,
    }
    if (exit.timedOut) {
      const error = new TimeoutError(
        `command ${this.pid} timed out; it and every process it started were killed`
      )
      error.stdout = result.stdout
      error.stderr = result.stderr
      throw error
    }
    if (result.exitCode !== 0) {
      throw new CommandExitError(result)
    }
    return result
  }

  /**
   * Kills the command and every process it started (SIGKILL). Returns
   * false when the command had already ended.
   */
  async kill() {
    return call(() => this._native.kill())
  }

  /** Writes to the command's stdin; it must have started with `stdin: true`. */
  async sendStdin(data) {
    await call(() => this._native.sendStdin(toBuffer('data', data)))
  }

  /** Closes the command's stdin, so that it reads end of file. */
  async closeStdin() {
    await call(() => this._native.closeStdin())
  }

  /**
   * Stops receiving output; the command keeps running and
   * `commands.connect(pid)` attaches again. Once this resolves, no
   * callback of this handle runs again.
   */
  async disconnect() {
    this._native.disconnect()
    await this._done
  }
}

/** Exit code of an ended command: its own, or 128 + N for signal N. */
function exitCodeOf(exit) {
  if (exit.exitCode !== null && exit.exitCode !== undefined) {
    return exit.exitCode
  }
  return 128 + exit.signal
}

/** Converts data for stdin or a file: a string (as UTF-8) or bytes. */
function toBuffer(name, data) {
  if (typeof data === 'string') {
    return Buffer.from(data, 'utf8')
  }
  if (data instanceof ArrayBuffer) {
    return Buffer.from(data)
  }
  if (ArrayBuffer.isView(data)) {
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  }
  throw check.invalid(name, data, 'a string, an ArrayBuffer or a Uint8Array')
}

/** Options that commands and PTYs share, checked. */
function startOptions(opts) {
  return {
    envs: check.optionalStringRecord('envs', opts.envs),
    user: check.optionalString('user', opts.user),
    cwd: check.optionalString('cwd', opts.cwd),
  }
}

/** `sbx.commands`: starting and controlling commands. */
class Commands {
  /** @internal */
  constructor(nativeSandbox) {
    this._native = nativeSandbox
  }

  /**
   * Runs a command line through `/bin/bash -l -c`. Waits for it and
   * returns its result, or with `background: true` returns a
   * CommandHandle at once.
   */
  async run(cmd, opts) {
    check.string('cmd', cmd)
    opts = check.options('opts', opts)
    const background = check.optionalBoolean('background', opts.background) === true
    const onStdout = check.optionalFunction('onStdout', opts.onStdout)
    const onStderr = check.optionalFunction('onStderr', opts.onStderr)
    const signal = check.optionalAbortSignal('signal', opts.signal)
    let timeoutMs = check.optionalTimeoutMs('timeoutMs', opts.timeoutMs)
    if (timeoutMs === undefined && !background) {
      timeoutMs = DEFAULT_RUN_TIMEOUT_MS
    }
    const start = {
      cmd,
      ...startOptions(opts),
      stdin: check.optionalBoolean('stdin', opts.stdin),
      timeoutMs,
    }
    signal?.throwIfAborted()
    const nativeCommand = await call(() => this._native.start(start))
    const collectAtEnd = !background && onStdout === undefined && onStderr === undefined
    const handle = new CommandHandle(nativeCommand, { onStdout, onStderr, collectAtEnd, signal })
    if (signal?.aborted) {
      // Aborted while the command started: the listener came too late.
      handle.kill().catch(() => {})
    }
    return background ? handle : handle.wait()
  }

  /** Lists the running commands and PTYs. */
  async list() {
    return callSync(() => this._native.listCommands()).map((info) => {
      const entry = { pid: info.pid, cmd: info.cmd, args: info.args, envs: info.envs, cwd: info.cwd }
      if (info.tag !== undefined && info.tag !== null) {
        entry.tag = info.tag
      }
      return entry
    })
  }

  /**
   * Kills a running command and every process it started. Returns false
   * when no running command has that pid.
   */
  async kill(pid) {
    check.pid(pid)
    return call(() => this._native.killCommand(pid))
  }

  /** Writes to the stdin of a running command started with `stdin: true`. */
  async sendStdin(pid, data) {
    check.pid(pid)
    await call(() => this._native.sendStdin(pid, toBuffer('data', data)))
  }

  /** Closes the stdin of a running command. */
  async closeStdin(pid) {
    check.pid(pid)
    await call(() => this._native.closeStdin(pid))
  }

  /**
   * Attaches to a running command. The handle receives the output written
   * from now on, and the command's end.
   */
  async connect(pid, opts) {
    check.pid(pid)
    opts = check.options('opts', opts)
    const onStdout = check.optionalFunction('onStdout', opts.onStdout)
    const onStderr = check.optionalFunction('onStderr', opts.onStderr)
    const nativeCommand = callSync(() => this._native.connectCommand(pid))
    return new CommandHandle(nativeCommand, { onStdout, onStderr })
  }
}

/** `sbx.pty`: interactive terminals. */
class Pty {
  /** @internal */
  constructor(nativeSandbox) {
    this._native = nativeSandbox
  }

  /**
   * Starts `bash -i -l` on a new pseudo-terminal of `rows` x `cols`.
   * Its output goes to `onData` as bytes. It has no timeout unless
   * `timeoutMs` is given.
   */
  async create(opts) {
    opts = check.options('opts', opts)
    const onData = check.optionalFunction('onData', opts.onData)
    const start = {
      rows: check.terminalSize('rows', opts.rows),
      cols: check.terminalSize('cols', opts.cols),
      ...startOptions(opts),
      timeoutMs: check.optionalTimeoutMs('timeoutMs', opts.timeoutMs),
    }
    const nativeCommand = await call(() => this._native.startPty(start))
    return new CommandHandle(nativeCommand, { onPty: onData ?? (() => {}) })
  }

  /** Types `data` into the PTY of process `pid`. */
  async sendInput(pid, data) {
    check.pid(pid)
    await call(() => this._native.sendStdin(pid, toBuffer('data', data)))
  }

  /** Resizes the PTY of process `pid`; the shell receives SIGWINCH. */
  async resize(pid, size) {
    check.pid(pid)
    size = check.options('size', size)
    const rows = check.terminalSize('rows', size.rows)
    const cols = check.terminalSize('cols', size.cols)
    callSync(() => this._native.resizePty(pid, rows, cols))
  }

  /** Kills the PTY's shell and everything it started. */
  async kill(pid) {
    check.pid(pid)
    return call(() => this._native.killCommand(pid))
  }

  /** Attaches to a running PTY; `onData` receives its output from now on. */
  async connect(pid, opts) {
    check.pid(pid)
    opts = check.options('opts', opts)
    const onData = check.optionalFunction('onData', opts.onData)
    const nativeCommand = callSync(() => this._native.connectCommand(pid))
    return new CommandHandle(nativeCommand, { onPty: onData ?? (() => {}) })
  }
}

module.exports = { Commands, Pty, CommandHandle, toBuffer, DEFAULT_RUN_TIMEOUT_MS }

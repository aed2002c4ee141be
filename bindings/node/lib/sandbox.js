'use strict'

// The Sandbox class, with E2B's names.

const check = require('./check')
const { native, call } = require('./native')
const { notImplemented } = require('./errors')
const { Commands, Pty } = require('./commands')
const { Filesystem } = require('./filesystem')

/**
 * Converts a resource limit for the addon: undefined keeps the default,
 * null (no limit) becomes 0.
 */
function limit(name, value, isValid) {
  if (value === undefined) {
    return undefined
  }
  if (value === null) {
    return 0
  }
  if (typeof value !== 'number' || !isValid(value) || value <= 0) {
    throw check.invalid(name, value, 'a positive number, or null for no limit')
  }
  return value
}

/**
 * A sandbox: a tree of processes in its own namespaces, with an overlay
 * root over a template, a cgroup and SoulBox's own PID 1.
 *
 * Create one with `Sandbox.create()`. It ends at its timeout (300 s by
 * default), at `kill()`, or when this object is garbage-collected.
 */
class Sandbox {
  /** @internal Use `Sandbox.create()`. */
  constructor(nativeSandbox) {
    this._native = nativeSandbox
    /** The sandbox id, which is also its hostname. */
    this.sandboxId = nativeSandbox.id
    /** Commands in the sandbox. */
    this.commands = new Commands(nativeSandbox)
    /** Pseudo-terminals in the sandbox. */
    this.pty = new Pty(nativeSandbox)
    /** The sandbox's files. */
    this.files = new Filesystem(nativeSandbox)
  }

  /**
   * Creates a sandbox and resolves once it accepts commands:
   * `Sandbox.create()`, `Sandbox.create(opts)` or
   * `Sandbox.create(template, opts)`. Only the `host` template exists.
   */
  static async create(templateOrOpts, opts) {
    let template
    if (typeof templateOrOpts === 'string') {
      template = templateOrOpts
    } else {
      opts = templateOrOpts
    }
    opts = check.options('opts', opts)
    const options = {
      template,
      timeoutMs: check.optionalTimeoutMs('timeoutMs', opts.timeoutMs),
      envs: check.optionalStringRecord('envs', opts.envs),
      memoryLimit: limit('memoryLimit', opts.memoryLimit, Number.isSafeInteger),
      pidsLimit: limit('pidsLimit', opts.pidsLimit, Number.isSafeInteger),
      cpuLimit: limit('cpuLimit', opts.cpuLimit, Number.isFinite),
    }
    // TODO: store metadata in the sandbox once the core keeps it; until
    // then it is checked and dropped, and getInfo() cannot return it.
    check.optionalStringRecord('metadata', opts.metadata)
    const nativeSandbox = await call(() => native().NativeSandbox.create(options))
    return new this(nativeSandbox)
  }

  /** Reaches a running sandbox by id from another handle or process. */
  static async connect(sandboxId) {
    check.string('sandboxId', sandboxId)
    throw notImplemented('Sandbox.connect')
  }

  /** Lists the sandboxes running on this host. */
  static async list() {
    throw notImplemented('Sandbox.list')
  }

  /** Kills a sandbox by id. */
  static async kill(sandboxId) {
    check.string('sandboxId', sandboxId)
    throw notImplemented('Sandbox.kill(sandboxId)')
  }

  /** Describes a sandbox by id. */
  static async getInfo(sandboxId) {
    check.string('sandboxId', sandboxId)
    throw notImplemented('Sandbox.getInfo(sandboxId)')
  }

  /** Sets a sandbox's timeout by id. */
  static async setTimeout(sandboxId) {
    check.string('sandboxId', sandboxId)
    throw notImplemented('Sandbox.setTimeout(sandboxId, timeoutMs)')
  }

  /** Returns whether the sandbox is still running. */
  async isRunning() {
    return this._native.isRunning()
  }

  /**
   * Sets the sandbox's remaining lifetime to `timeoutMs` from now; 0
   * removes the limit.
   */
  async setTimeout(timeoutMs) {
    if (timeoutMs === undefined) {
      throw check.invalid('timeoutMs', timeoutMs, 'a whole number of milliseconds')
    }
    check.optionalTimeoutMs('timeoutMs', timeoutMs)
    await call(() => this._native.setTimeout(timeoutMs))
  }

  /**
   * Kills every process of the sandbox and removes its cgroups. Calling
   * it again does nothing.
   */
  async kill() {
    await call(() => this._native.kill())
  }

  /** Describes this sandbox. */
  async getInfo() {
    throw notImplemented('sandbox.getInfo()')
  }

  /** Pauses this sandbox. */
  async pause() {
    throw notImplemented('sandbox.pause()')
  }

  /** Returns this sandbox's resource usage. */
  async getMetrics() {
    throw notImplemented('sandbox.getMetrics()')
  }
}

module.exports = { Sandbox }

'use strict'

// The Sandbox class, with E2B's names.

const os = require('node:os')
const path = require('node:path')

const check = require('./check')
const { InvalidArgumentError } = require('./errors')
const { native, call, callSync } = require('./native')
const { Commands, Pty } = require('./commands')
const { Filesystem } = require('./filesystem')
const interpreter = require('./code')

const SANDBOX_STATES = new Set(['running', 'paused'])

/**
 * Makes a template path absolute: `host` and names without a `/` stay as
 * they are. Only the part before the first `:` is a path; what follows
 * names one image of several and may contain `/` and `:` itself.
 */
function templatePath(template) {
  if (!template.includes('/')) {
    return template
  }
  const separator = template.indexOf(':')
  if (separator === -1) {
    return path.resolve(template)
  }
  return path.resolve(template.slice(0, separator)) + template.slice(separator)
}

/**
 * Wraps `buildTemplate`'s `onOutput` for the addon, which calls it on the
 * JavaScript thread, where an exception would end the process. A failure
 * of the callback becomes a process warning instead.
 */
function outputDeliverer(onOutput) {
  const warn = (error) => {
    const message = `onOutput of Sandbox.buildTemplate failed; the build goes on: ${error}`
    const warning = new Error(message, { cause: error })
    warning.name = 'SoulBoxWarning'
    warning.code = 'SOULBOX_ON_OUTPUT_FAILED'
    process.emitWarning(warning)
  }
  return (event) => {
    if (event.kind === 'end') {
      return
    }
    const { data } = event
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    try {
      const result = onOutput(event.kind, bytes)
      if (typeof result?.then === 'function') {
        result.then(undefined, warn)
      }
    } catch (error) {
      warn(error)
    }
  }
}

/** Converts the addon's sandbox description to E2B's field names. */
function sandboxInfo(info) {
  return {
    sandboxId: info.sandboxId,
    templateId: info.template,
    name: info.template,
    metadata: info.metadata,
    envs: info.envs,
    startedAt: new Date(info.startedMs),
    endAt: info.endsMs === null || info.endsMs === undefined ? undefined : new Date(info.endsMs),
    state: info.state,
    // Without a CPU limit the sandbox may use every CPU of the host.
    cpuCount: info.cpuLimit ?? os.availableParallelism(),
    memoryMB: info.memoryLimit === null || info.memoryLimit === undefined ? undefined : info.memoryLimit / (1 << 20),
    allowInternetAccess: info.internetAccess,
    network:
      info.allowOut.length === 0 && info.denyOut.length === 0
        ? undefined
        : { allowOut: info.allowOut, denyOut: info.denyOut },
    lifecycle: { onTimeout: info.onTimeout, autoResume: info.autoResume },
  }
}

/**
 * Converts a resource limit for the addon: undefined keeps the default,
 * null (no limit) becomes 0.
 */
/** The CIDR block of every IPv4 address, as E2B's SDK names it. */
const ALL_TRAFFIC = '0.0.0.0/0'

/**
 * Checks the `network` option, `{ allowOut, denyOut }`: arrays of IPv4
 * addresses and CIDR blocks, whose syntax the addon checks. Returns the
 * two arrays, or undefined without the option.
 */
function egressRules(network) {
  if (network === undefined || network === null) {
    return undefined
  }
  check.options('network', network)
  for (const key of Object.keys(network)) {
    if (key === 'allowPublicTraffic' || key === 'maskRequestHost') {
      throw new InvalidArgumentError(
        `network.${key} is not implemented yet in SoulBox; only allowOut and denyOut exist`,
      )
    }
    if (key !== 'allowOut' && key !== 'denyOut') {
      throw new InvalidArgumentError(`network.${key} is an unknown option; use allowOut and denyOut`)
    }
  }
  const rules = {}
  for (const key of ['allowOut', 'denyOut']) {
    const entries = network[key] ?? []
    if (!Array.isArray(entries)) {
      throw check.invalid(`network.${key}`, entries, 'an array of IPv4 addresses and CIDR blocks')
    }
    entries.forEach((entry, i) => check.string(`network.${key}[${i}]`, entry))
    rules[key] = [...entries]
  }
  return rules
}

/**
 * Rejects E2B's create options that SoulBox does not support yet, so that a
 * sandbox is never created without what the caller asked for.
 */
function rejectUnsupportedOptions(opts) {
  for (const name of ['mcp', 'volumeMounts']) {
    if (opts[name] !== undefined && opts[name] !== null) {
      throw new InvalidArgumentError(`${name} is not implemented yet in SoulBox; leave it unset`)
    }
  }
}

/**
 * Checks E2B's `lifecycle` option, `{ onTimeout: 'kill' | 'pause',
 * autoResume: boolean }`, and returns its two values for the addon.
 * `autoResume` is valid only with `onTimeout: 'pause'`.
 */
function lifecycle(value) {
  const opts = check.options('lifecycle', value)
  for (const key of Object.keys(opts)) {
    if (key !== 'onTimeout' && key !== 'autoResume') {
      throw new InvalidArgumentError(`lifecycle has the unknown key ${JSON.stringify(key)}; use onTimeout and autoResume`)
    }
  }
  const onTimeout = opts.onTimeout ?? 'kill'
  if (onTimeout !== 'kill' && onTimeout !== 'pause') {
    throw check.invalid('lifecycle.onTimeout', onTimeout, "'kill' or 'pause'")
  }
  const autoResume = check.optionalBoolean('lifecycle.autoResume', opts.autoResume ?? undefined) === true
  if (autoResume && onTimeout !== 'pause') {
    throw new InvalidArgumentError(
      "lifecycle.autoResume is valid only with lifecycle.onTimeout 'pause'; set onTimeout to 'pause' or " +
        'autoResume to false',
    )
  }
  return { onTimeout, autoResume }
}

/**
 * Checks the `mounts` option: an array of `{ source, target, writable }`.
 * A relative source starts at the current directory.
 */
function mounts(value) {
  if (value === undefined || value === null) {
    return undefined
  }
  if (!Array.isArray(value)) {
    throw new InvalidArgumentError(`mounts must be an array of { source, target, writable }, not ${typeof value}`)
  }
  return value.map((mount, i) => {
    check.options(`mounts[${i}]`, mount)
    check.string(`mounts[${i}].source`, mount.source)
    check.string(`mounts[${i}].target`, mount.target)
    if (mount.writable !== undefined && typeof mount.writable !== 'boolean') {
      throw new InvalidArgumentError(`mounts[${i}].writable must be a boolean`)
    }
    return { source: path.resolve(mount.source), target: mount.target, writable: mount.writable === true }
  })
}

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
 * Splits the arguments of `Sandbox.create` and `SandboxPool.create`,
 * `(opts)` or `(template, opts)`, into the absolute template and the
 * checked `opts`.
 */
function createArguments(templateOrOpts, opts) {
  let template
  if (typeof templateOrOpts === 'string') {
    template = templatePath(templateOrOpts)
  } else {
    opts = templateOrOpts
  }
  return { template, opts: check.options('opts', opts) }
}

/** Checks the options of `Sandbox.create` and returns them for the addon. */
function nativeCreateOptions({ template, opts }) {
  rejectUnsupportedOptions(opts)
  const requested = check.optionalBoolean('allowInternetAccess', opts.allowInternetAccess ?? undefined)
  const rules = egressRules(opts.network)
  if (rules !== undefined && requested === false) {
    throw new InvalidArgumentError(
      'allowInternetAccess: false gives the sandbox no network, so network has nothing to ' +
        'filter; leave allowInternetAccess unset to get internet access with these rules, or ' +
        'pass network: { denyOut: [ALL_TRAFFIC] } to deny all outbound traffic',
    )
  }
  // SoulBox's default is no network, where E2B's is internet access.
  // Egress rules imply internet access, as in E2B.
  const allowInternetAccess = requested === true || rules !== undefined
  const { onTimeout, autoResume } = lifecycle(opts.lifecycle)
  return {
    template,
    timeoutMs: check.optionalTimeoutMs('timeoutMs', opts.timeoutMs),
    envs: check.optionalStringRecord('envs', opts.envs),
    metadata: check.optionalStringRecord('metadata', opts.metadata),
    memoryLimit: limit('memoryLimit', opts.memoryLimit, Number.isSafeInteger),
    pidsLimit: limit('pidsLimit', opts.pidsLimit, Number.isSafeInteger),
    cpuLimit: limit('cpuLimit', opts.cpuLimit, Number.isFinite),
    mounts: mounts(opts.mounts),
    allowInternetAccess,
    allowOut: rules?.allowOut,
    denyOut: rules?.denyOut,
    onTimeout,
    autoResume,
  }
}

/**
 * A sandbox: a tree of processes in its own namespaces, with an overlay
 * root over a template, a cgroup and SoulBox's own PID 1.
 *
 * Create one with `Sandbox.create()`. As on E2B, it runs until its timeout
 * (300 s by default) or `kill()`, even after this object is
 * garbage-collected or this process exits. `Sandbox.connect(id)` reaches
 * it from any process of the same user.
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
   * `Sandbox.create(template, opts)`. A template is `host` (the default),
   * a directory or an image. A directory contains a root file system and
   * becomes the sandbox's read-only root as it is. An image is the path of
   * an OCI image layout directory or image archive (`docker save`,
   * `podman save --format oci-archive`), optionally followed by `:NAME` to
   * select one of several. A relative path starts at the current directory.
   */
  static async create(templateOrOpts, opts) {
    const options = nativeCreateOptions(createArguments(templateOrOpts, opts))
    const nativeSandbox = await call(() => native().NativeSandbox.create(options))
    return new this(nativeSandbox)
  }

  /**
   * Connects to a running or paused sandbox of this user, created by this
   * or any other process, and resumes it if it was paused. Commands that
   * another handle started are not visible through this one.
   */
  static async connect(sandboxId) {
    check.string('sandboxId', sandboxId)
    return new this(await call(() => native().NativeSandbox.connect(sandboxId)))
  }

  /**
   * Lists this user's running and paused sandboxes, oldest first, with
   * E2B's filters: `{ query: { metadata, state: ['running', 'paused'] } }`.
   */
  static async list(opts) {
    const query = check.options('query', check.options('opts', opts).query)
    const metadata = check.optionalStringRecord('query.metadata', query.metadata)
    const states = query.state ?? ['running', 'paused']
    if (!Array.isArray(states) || states.some((state) => !SANDBOX_STATES.has(state))) {
      throw check.invalid('query.state', states, "an array of 'running' and 'paused'")
    }
    const state = states.length === 1 ? states[0] : undefined
    const infos = states.length === 0 ? [] : await call(() => native().NativeSandbox.list(metadata, state))
    return infos.map(sandboxInfo)
  }

  /** Kills a sandbox by id. Returns false if no such sandbox runs. */
  static async kill(sandboxId) {
    check.string('sandboxId', sandboxId)
    return call(() => native().NativeSandbox.killId(sandboxId))
  }

  /** Describes a sandbox by id, without resuming it. */
  static async getInfo(sandboxId) {
    check.string('sandboxId', sandboxId)
    const sandbox = await call(() => native().NativeSandbox.connectWithoutResume(sandboxId))
    return sandboxInfo(await call(() => sandbox.getInfo()))
  }

  /** Sets a sandbox's remaining lifetime by id; 0 removes the limit. */
  static async setTimeout(sandboxId, timeoutMs) {
    check.string('sandboxId', sandboxId)
    const sandbox = await call(() => native().NativeSandbox.connectWithoutResume(sandboxId))
    await new this(sandbox).setTimeout(timeoutMs)
  }

  /** Returns a sandbox's current resource use by id, as a one-sample array. */
  static async getMetrics(sandboxId) {
    check.string('sandboxId', sandboxId)
    const sandbox = await call(() => native().NativeSandbox.connectWithoutResume(sandboxId))
    return new this(sandbox).getMetrics()
  }

  /**
   * Builds a template from a `soulbox.toml` (SoulBox only), as
   * `soulbox template build` does: runs the file's steps in a sandbox made
   * from its `base` and keeps what they wrote. A build whose inputs have
   * not changed returns at once with `cached: true`. `path` is the file or
   * its folder, relative to `process.cwd()`. `opts.name` registers the
   * template under a name, in place of the file's `name` key.
   * `opts.onOutput(stream, data)` receives each chunk of a step's output,
   * with `stream` `'stdout'` or `'stderr'`, on the JavaScript thread and
   * before the Promise settles. An exception that `onOutput` throws, or a
   * Promise it returns that rejects, is emitted as a process warning with
   * code `SOULBOX_ON_OUTPUT_FAILED`, and the build goes on.
   */
  static async buildTemplate(templatePath, opts) {
    check.string('path', templatePath)
    opts = check.options('opts', opts)
    const name = check.optionalString('name', opts.name)
    const onOutput = check.optionalFunction('onOutput', opts.onOutput)
    const deliver = onOutput === undefined ? undefined : outputDeliverer(onOutput)
    const built = await call(() =>
      native().NativeSandbox.buildTemplate(path.resolve(templatePath), name, deliver),
    )
    return {
      key: built.key,
      name: built.name ?? undefined,
      source: built.source,
      layer: built.layer,
      cached: built.cached,
    }
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

  /**
   * Describes this sandbox: id, template, metadata, start and end times,
   * state and limits.
   */
  async getInfo() {
    return sandboxInfo(await call(() => this._native.getInfo()))
  }

  /**
   * Freezes every process of the sandbox and stops its timeout clock.
   * Returns false if it was already paused. `connect()` resumes it.
   */
  async pause() {
    return call(() => this._native.pause())
  }

  /** Pauses the sandbox as `pause()` does. E2B's beta SDKs use this name. */
  async betaPause() {
    return this.pause()
  }

  /** Resumes this sandbox if it is paused, as E2B's `sbx.connect()`. */
  async connect() {
    await call(() => this._native.resume())
    return this
  }

  /**
   * Returns `127.0.0.1:PORT`, an address on this machine's loopback
   * interface whose connections reach `port` on the sandbox's loopback,
   * as E2B's `getHost`. E2B returns a public host name, reached over
   * HTTPS; this address forwards plain TCP, so fetch
   * `http://${sbx.getHost(8000)}/`. The first call for a port starts the
   * forwarding and later calls return the same address. It runs until
   * the sandbox ends or this object is garbage-collected.
   */
  getHost(port) {
    if (typeof port !== 'number') {
      throw check.invalid('port', port, 'a whole number from 1 to 65535')
    }
    return callSync(() => this._native.getHost(port))
  }

  /**
   * Runs `code` in a code context, as E2B's `runCode`: the default
   * context of `language` (Python, the only one) unless `context` is
   * given. Variables, imports and functions persist from one run to the
   * next. Resolves with an Execution, whose `error` contains an exception
   * of the code. Rejects with a TimeoutError after `timeoutMs` (default
   * 60 000; 0 for no limit), once the code was interrupted.
   */
  async runCode(code, opts) {
    return interpreter.runCode(this._native, code, opts)
  }

  /** Starts a new code context, with variables of its own. */
  async createCodeContext(opts) {
    return interpreter.createCodeContext(this._native, opts)
  }

  /** Lists this object's code contexts, default ones included once used. */
  async listCodeContexts() {
    return interpreter.listCodeContexts(this._native)
  }

  /** Ends a code context (a Context or its id) and its interpreter. */
  async removeCodeContext(context) {
    await interpreter.removeCodeContext(this._native, context)
  }

  /** Restarts a code context's interpreter; its variables are lost. */
  async restartCodeContext(context) {
    await interpreter.restartCodeContext(this._native, context)
  }

  /**
   * Returns the sandbox's current resource use, as a one-sample array
   * (E2B returns a series over time).
   */
  async getMetrics() {
    const metrics = await call(() => this._native.metrics())
    return [
      {
        timestamp: new Date(metrics.timestampMs),
        cpuCount: metrics.cpuCount,
        cpuUsedPct: metrics.cpuUsedPct,
        memUsed: metrics.memUsed ?? undefined,
        memTotal: metrics.memTotal ?? undefined,
        diskUsed: metrics.diskUsed,
        diskTotal: metrics.diskTotal,
      },
    ]
  }
}

module.exports = { Sandbox, ALL_TRAFFIC, createArguments, nativeCreateOptions }

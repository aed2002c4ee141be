'use strict'

// The SandboxPool class: sandboxes of one configuration, built in advance.

const check = require('./check')
const { SandboxError } = require('./errors')
const { native, call, callSync } = require('./native')
const { Sandbox, createArguments, nativeCreateOptions } = require('./sandbox')

/** Returns `size` if it is a whole number from 1 to the addon's maximum. */
function poolSize(size) {
  const max = native().MAX_POOL_SIZE
  if (!Number.isInteger(size) || size < 1 || size > max) {
    throw check.invalid('size', size, `a whole number from 1 to ${max}`)
  }
  return size
}

// Pools that are neither closed nor collected. The process's exit closes
// them, because a build in progress at the exit would otherwise leave its
// cgroup directories and state entry until a later SoulBox process sweeps
// them. Waiting sandboxes end with the process either way.
const openPools = new Set()
let exitHookInstalled = false

function closeOpenPools() {
  for (const ref of openPools) {
    const nativePool = ref.deref()
    if (nativePool !== undefined) {
      nativePool.closeAtExit()
    }
  }
  openPools.clear()
}

/** Adds `nativePool` to the pools closed at exit and returns its entry. */
function trackOpenPool(nativePool) {
  for (const ref of openPools) {
    if (ref.deref() === undefined) {
      openPools.delete(ref)
    }
  }
  const ref = new WeakRef(nativePool)
  openPools.add(ref)
  if (!exitHookInstalled) {
    process.once('exit', closeOpenPools)
    exitHookInstalled = true
  }
  return ref
}

function closedError() {
  return new SandboxError(
    'the sandbox pool is closed, so it hands over no sandboxes; start a new pool with SandboxPool.create()',
  )
}

/**
 * Sandboxes of one configuration, built in advance (SoulBox only), so
 * that `create()` is a hand-over rather than a build. A thread of the
 * pool's own builds a replacement after each hand-over. `close()` or
 * garbage collection kills the waiting sandboxes, and so does the
 * process's exit, which also closes a pool still open unless a create on
 * it is in progress. `Sandbox.list` shows a sandbox only after its
 * hand-over.
 */
class SandboxPool {
  /** @internal Use `SandboxPool.create()`. */
  constructor(nativePool) {
    this._native = nativePool
    this._openEntry = trackOpenPool(nativePool)
  }

  /**
   * Starts a pool of `opts.size` sandboxes made with the other options of
   * `Sandbox.create`: `SandboxPool.create(opts)` or
   * `SandboxPool.create(template, opts)`. It resolves at once and fills
   * in the background. Rejects with InvalidArgumentError for a bad size
   * or a bad option, as `Sandbox.create` does.
   */
  static async create(templateOrOpts, opts) {
    const args = createArguments(templateOrOpts, opts)
    const size = poolSize(args.opts.size)
    const options = nativeCreateOptions(args)
    return new this(callSync(() => native().NativeSandboxPool.open(options, size)))
  }

  /** The number of sandboxes the pool keeps waiting. */
  get size() {
    return this._native.size
  }

  /** The number of sandboxes waiting for a hand-over now, which is 0 once closed. */
  get waiting() {
    return this._native.waiting
  }

  /**
   * Hands over a waiting sandbox, or creates one as `Sandbox.create` does
   * when none is waiting. The sandbox is like one from `Sandbox.create`:
   * nothing has run in it, its timeout and start time count from the
   * hand-over, and it has the pool's metadata and envs. Rejects with a
   * SandboxError after `close()`.
   */
  async create() {
    // The addon resolves to null once the pool is closed.
    const nativeSandbox = await call(() => this._native.handOver())
    if (nativeSandbox === null) {
      throw closedError()
    }
    return new Sandbox(nativeSandbox)
  }

  /**
   * Stops the refill and kills every waiting sandbox, after the creates
   * in progress end. Sandboxes already handed over run on. Calling it
   * again does nothing.
   */
  async close() {
    await call(() => this._native.close())
    openPools.delete(this._openEntry)
  }
}

module.exports = { SandboxPool }

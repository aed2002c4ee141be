'use strict'

// Loads the native addon on first use and converts its errors.

const path = require('node:path')
const { SandboxError, fromNative } = require('./errors')

let addon = null

/**
 * Returns the native addon: the file named by SOULBOX_NODE_ADDON, or
 * soulbox.node beside this package, which `npm run build` makes.
 */
function native() {
  if (addon !== null) {
    return addon
  }
  const file = process.env.SOULBOX_NODE_ADDON || path.join(__dirname, '..', 'soulbox.node')
  const module = { exports: {} }
  try {
    // dlopen, unlike require, takes any file name, such as the
    // libsoulbox_node.so that cargo writes.
    process.dlopen(module, file)
  } catch (error) {
    const failure = new SandboxError(
      `cannot load SoulBox's native addon from ${file}: ${error.message}; ` +
        'build it with "npm run build" in the package directory'
    )
    failure.code = 'ADDON_NOT_LOADED'
    failure.cause = error
    throw failure
  }
  addon = module.exports
  return addon
}

/** Awaits a native call and rethrows its error as a SoulBox error class. */
async function call(work) {
  try {
    return await work()
  } catch (error) {
    throw fromNative(error)
  }
}

/** Runs a synchronous native call, rethrowing as `call` does. */
function callSync(work) {
  try {
    return work()
  } catch (error) {
    throw fromNative(error)
  }
}

module.exports = { native, call, callSync }

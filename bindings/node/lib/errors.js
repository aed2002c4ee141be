'use strict'

// The error classes, with E2B's JS SDK names and hierarchy. Every error
// also has a `code`, and `errno` where an OS error number is known.

/** Base class of every error SoulBox throws. */
class SandboxError extends Error {
  constructor(message, stackTrace) {
    super(message)
    this.name = 'SandboxError'
    this.code = 'SANDBOX_ERROR'
    if (stackTrace) {
      this.stack = stackTrace
    }
  }
}

/** A command, a wait for one, or code run with `runCode` ran past its timeout. */
class TimeoutError extends SandboxError {
  constructor(message, stackTrace) {
    super(message, stackTrace)
    this.name = 'TimeoutError'
    this.code = 'TIMEOUT'
  }
}

/** A value passed to SoulBox was rejected; nothing was changed. */
class InvalidArgumentError extends SandboxError {
  constructor(message, stackTrace) {
    super(message, stackTrace)
    this.name = 'InvalidArgumentError'
    this.code = 'INVALID_ARGUMENT'
  }
}

/** The sandbox's writable layer is full. */
class NotEnoughSpaceError extends SandboxError {
  constructor(message, stackTrace) {
    super(message, stackTrace)
    this.name = 'NotEnoughSpaceError'
    this.code = 'NOT_ENOUGH_SPACE'
  }
}

/** A command, sandbox or file was not found. */
class NotFoundError extends SandboxError {
  constructor(message, stackTrace) {
    super(message, stackTrace)
    this.name = 'NotFoundError'
    this.code = 'NOT_FOUND'
  }
}

/** A file or directory does not exist in the sandbox. */
class FileNotFoundError extends NotFoundError {
  constructor(message, stackTrace) {
    super(message, stackTrace)
    this.name = 'FileNotFoundError'
    this.code = 'FILE_NOT_FOUND'
  }
}

/** The sandbox does not exist or is no longer running. */
class SandboxNotFoundError extends NotFoundError {
  constructor(message, stackTrace) {
    super(message, stackTrace)
    this.name = 'SandboxNotFoundError'
    this.code = 'SANDBOX_NOT_FOUND'
  }
}

/**
 * A command exited with a non-zero code or was ended by a signal. It
 * carries the command's result: `exitCode`, `error`, `stdout`, `stderr`.
 */
class CommandExitError extends SandboxError {
  constructor(result) {
    super(result.error)
    this.name = 'CommandExitError'
    this.code = 'COMMAND_EXIT'
    Object.defineProperty(this, 'result', { value: result, enumerable: false })
  }

  get exitCode() {
    return this.result.exitCode
  }

  get error() {
    return this.result.error
  }

  get stdout() {
    return this.result.stdout
  }

  get stderr() {
    return this.result.stderr
  }

  /** Whether the sandbox's out-of-memory killer ended the command. */
  get oomKilled() {
    return this.result.oomKilled
  }
}

// Codes that the native addon puts in front of its messages, and the class
// each one becomes. Codes not listed become a SandboxError.
const CLASS_OF_CODE = {
  INVALID_ARGUMENT: InvalidArgumentError,
  TIMEOUT: TimeoutError,
  NOT_ENOUGH_SPACE: NotEnoughSpaceError,
  NOT_FOUND: NotFoundError,
  FILE_NOT_FOUND: FileNotFoundError,
  SANDBOX_NOT_FOUND: SandboxNotFoundError,
  SANDBOX_NOT_RUNNING: SandboxNotFoundError,
}

// napi-rs's own codes for a JavaScript value of the wrong type.
const NAPI_TYPE_CODES = new Set([
  'InvalidArg',
  'ObjectExpected',
  'StringExpected',
  'NameExpected',
  'FunctionExpected',
  'NumberExpected',
  'BooleanExpected',
  'ArrayExpected',
  'BigintExpected',
])

const NATIVE_MESSAGE = /^\[([A-Z_]+)(?: (\d+))?\] ([\s\S]*)$/

/**
 * Turns an error thrown by the native addon into the error class for its
 * code. The addon writes messages as `[CODE] text` or `[CODE errno] text`.
 */
function fromNative(error) {
  if (error instanceof SandboxError || !(error instanceof Error)) {
    return error
  }
  const match = NATIVE_MESSAGE.exec(error.message)
  if (match === null) {
    const wrongType = NAPI_TYPE_CODES.has(error.code)
    const converted = wrongType
      ? new InvalidArgumentError(error.message)
      : new SandboxError(error.message)
    converted.cause = error
    return converted
  }
  const [, code, errno, message] = match
  const ErrorClass = CLASS_OF_CODE[code] || SandboxError
  const converted = new ErrorClass(message)
  converted.code = code
  if (errno !== undefined) {
    converted.errno = Number(errno)
  }
  return converted
}

module.exports = {
  SandboxError,
  TimeoutError,
  InvalidArgumentError,
  NotEnoughSpaceError,
  NotFoundError,
  FileNotFoundError,
  SandboxNotFoundError,
  CommandExitError,
  fromNative,
}

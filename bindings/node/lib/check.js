'use strict'

// Checks of the values callers pass, so that a wrong type fails with an
// InvalidArgumentError naming the option instead of a native type error.

const { InvalidArgumentError } = require('./errors')

/**
 * Describes a rejected value for an error message. Strings, numbers and
 * booleans appear as their value, so that -1 or NaN is named, and other
 * values by their kind.
 */
function describe(value) {
  if (value === null || value === undefined) {
    return String(value)
  }
  if (Array.isArray(value)) {
    return 'an array'
  }
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'number':
    case 'boolean':
      return String(value)
    case 'bigint':
      return `${value}n`
    case 'object':
      return 'an object'
    default:
      return `a ${typeof value}`
  }
}

function fail(name, value, expected) {
  return new InvalidArgumentError(`${name} must be ${expected}, not ${describe(value)}`)
}

/** Returns `opts`, or `{}` when it is undefined; rejects other non-objects. */
function options(name, opts) {
  if (opts === undefined || opts === null) {
    return {}
  }
  if (typeof opts !== 'object' || Array.isArray(opts)) {
    throw fail(name, opts, 'an object')
  }
  return opts
}

function string(name, value) {
  if (typeof value !== 'string') {
    throw fail(name, value, 'a string')
  }
  return value
}

function optionalString(name, value) {
  return value === undefined ? undefined : string(name, value)
}

function optionalBoolean(name, value) {
  if (value !== undefined && typeof value !== 'boolean') {
    throw fail(name, value, 'a boolean')
  }
  return value
}

function optionalFunction(name, value) {
  if (value !== undefined && typeof value !== 'function') {
    throw fail(name, value, 'a function')
  }
  return value
}

/** A whole number of milliseconds from 0 up; 0 means no timeout. */
function optionalTimeoutMs(name, value) {
  if (value === undefined) {
    return undefined
  }
  if (!Number.isSafeInteger(value) || value < 0) {
    throw fail(name, value, 'a whole number of milliseconds from 0 up (0 for no timeout)')
  }
  return value
}

function pid(value) {
  if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) {
    throw fail('pid', value, 'a process id (a whole number from 1 up)')
  }
  return value
}

/** A terminal dimension: rows or columns, 1 to 65535. */
function terminalSize(name, value) {
  if (!Number.isInteger(value) || value < 1 || value > 0xffff) {
    throw fail(name, value, 'a whole number from 1 to 65535')
  }
  return value
}

/** A record of string keys to string values, such as `envs`. */
function optionalStringRecord(name, value) {
  if (value === undefined) {
    return undefined
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw fail(name, value, 'an object of string values')
  }
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      throw fail(`${name}.${key}`, entry, 'a string')
    }
  }
  return { ...value }
}

function optionalAbortSignal(name, value) {
  if (value !== undefined && !(value instanceof AbortSignal)) {
    throw fail(name, value, 'an AbortSignal')
  }
  return value
}

module.exports = {
  invalid: fail,
  options,
  string,
  optionalString,
  optionalBoolean,
  optionalFunction,
  optionalTimeoutMs,
  pid,
  terminalSize,
  optionalStringRecord,
  optionalAbortSignal,
}

'use strict'

// SoulBox for Node.js: disposable Linux sandboxes with E2B's JS SDK names.

const errors = require('./lib/errors')
const { Sandbox, ALL_TRAFFIC } = require('./lib/sandbox')
const { SandboxPool } = require('./lib/pool')
const { CommandHandle } = require('./lib/commands')
const { WatchHandle, FileType, FilesystemEventType } = require('./lib/filesystem')
const { Execution, ExecutionError, OutputMessage, Result } = require('./lib/code')

module.exports = {
  Sandbox,
  SandboxPool,
  ALL_TRAFFIC,
  CommandHandle,
  WatchHandle,
  FileType,
  FilesystemEventType,
  Execution,
  ExecutionError,
  OutputMessage,
  Result,
  SandboxError: errors.SandboxError,
  TimeoutError: errors.TimeoutError,
  InvalidArgumentError: errors.InvalidArgumentError,
  NotEnoughSpaceError: errors.NotEnoughSpaceError,
  NotFoundError: errors.NotFoundError,
  FileNotFoundError: errors.FileNotFoundError,
  SandboxNotFoundError: errors.SandboxNotFoundError,
  CommandExitError: errors.CommandExitError,
  default: Sandbox,
}

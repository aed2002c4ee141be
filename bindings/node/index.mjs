// The ES module entry point: the CommonJS module's exports under their
// names, so that both entry points share one set of classes.
import soulbox from './index.js'

export const {
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
  SandboxError,
  TimeoutError,
  InvalidArgumentError,
  NotEnoughSpaceError,
  NotFoundError,
  FileNotFoundError,
  SandboxNotFoundError,
  CommandExitError,
} = soulbox

export default Sandbox

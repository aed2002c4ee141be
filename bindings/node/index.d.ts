// Type declarations of the `soulbox` package. The names and shapes follow
// E2B's JS SDK (`e2b`); what SoulBox adds or does differently is marked.

/// <reference types="node" />

/** Options of `Sandbox.create`. */
export interface SandboxOpts {
  /**
   * Lifetime of the sandbox in milliseconds; it is killed (or paused, see
   * `lifecycle`) when this has passed, even if this process died. 0 means
   * no limit.
   * @default 300_000
   */
  timeoutMs?: number
  /** The timeout's action, and whether activity resumes a paused sandbox. */
  lifecycle?: SandboxLifecycle
  /** Labels that `getInfo()` returns and `Sandbox.list()` filters by. */
  metadata?: Record<string, string>
  /** Environment variables for every command, below each command's own. */
  envs?: Record<string, string>
  /**
   * SoulBox: memory limit in bytes, swap closed; null for none. What the
   * sandbox writes to its writable layer and /tmp counts too.
   * @default 2 GiB
   */
  memoryLimit?: number | null
  /**
   * SoulBox: maximum number of processes and threads; null for none.
   * @default 1024
   */
  pidsLimit?: number | null
  /** SoulBox: CPU limit in cores (0.5 is half a core); null for none (the default). */
  cpuLimit?: number | null
  /**
   * Internet access through slirp4netns, which must be installed. SoulBox:
   * the default is loopback only, where E2B's sandboxes have internet
   * access by default.
   * @default false
   */
  allowInternetAccess?: boolean
  /**
   * Egress rules. Passing them gives the sandbox internet access, as E2B's
   * sandboxes have by default; with `allowInternetAccess: false` it is an
   * error.
   */
  network?: SandboxNetworkOpts
  /**
   * SoulBox: host files and directories to mount into the sandbox, in
   * order. Each is read-only unless `writable`, and nosuid and nodev.
   */
  mounts?: Mount[]
}

/** The CIDR block of every IPv4 address, `'0.0.0.0/0'`. */
export declare const ALL_TRAFFIC: '0.0.0.0/0'

/**
 * Egress rules of `Sandbox.create`. Each entry is an IPv4 address or CIDR
 * block. `denyOut` networks are unreachable, TCP and UDP alike, unless an
 * `allowOut` network contains the address: allowed entries win, even over
 * a more specific denied one. SoulBox: domain names and IPv6 are rejected,
 * and `denyOut: [ALL_TRAFFIC]` blocks the DNS forwarder 10.0.2.3 too
 * unless `allowOut` contains it.
 */
export interface SandboxNetworkOpts {
  /** Networks the sandbox may reach even inside a `denyOut` network. */
  allowOut?: string[]
  /** Networks the sandbox may not send to. */
  denyOut?: string[]
}

/** The `lifecycle` option of `Sandbox.create`. */
export interface SandboxLifecycle {
  /**
   * `'kill'` ends the sandbox at its timeout. `'pause'` freezes it instead,
   * keeping its memory and files; `connect()` resumes it, and its timeout
   * then starts again at `timeoutMs`. Pausing needs a writable cgroup v2
   * hierarchy.
   * @default 'kill'
   */
  onTimeout?: 'kill' | 'pause'
  /**
   * Whether starting a command, a file call or `runCode` through a handle
   * resumes the paused sandbox first. Valid only with `onTimeout: 'pause'`.
   * @default false
   */
  autoResume?: boolean
}

/** SoulBox: a host file or directory mounted into the sandbox. */
export interface Mount {
  /** The host path; a relative one starts at the current directory. */
  source: string
  /** The absolute path inside the sandbox. */
  target: string
  /** Whether the sandbox may write to it (files land on the host). @default false */
  writable?: boolean
}

/** Running, or paused with its processes frozen. */
export type SandboxState = 'running' | 'paused'

/** Description of a sandbox, from `getInfo()` and `Sandbox.list()`. */
export interface SandboxInfo {
  sandboxId: string
  /** The template: `host`, or an absolute path (with `:NAME` after an image's). */
  templateId: string
  /** The template's name, as `templateId`. */
  name?: string
  metadata: Record<string, string>
  /** SoulBox: the sandbox-wide environment variables given at creation. */
  envs: Record<string, string>
  startedAt: Date
  /** When the timeout ends the sandbox; SoulBox: absent without a timeout and while paused. */
  endAt?: Date
  state: SandboxState
  /** The CPU limit in cores, or the host's CPU count without one. */
  cpuCount: number
  /** The memory limit in MiB; absent without one. */
  memoryMB?: number
  /** Whether the sandbox has internet access, as `Sandbox.create` set it. */
  allowInternetAccess: boolean
  /**
   * The egress rules given to `Sandbox.create`, with both arrays; absent
   * when neither has an entry.
   */
  network?: Required<SandboxNetworkOpts>
  /** The `lifecycle` given to `Sandbox.create`, with its defaults filled in. */
  lifecycle: Required<SandboxLifecycle>
}

/** Options of `Sandbox.list`. */
export interface SandboxListOpts {
  query?: {
    /** Only sandboxes whose metadata has every one of these pairs. */
    metadata?: Record<string, string>
    /** Only sandboxes in these states; both by default. */
    state?: SandboxState[]
  }
}

/** A sample of a sandbox's resource use. */
export interface SandboxMetrics {
  timestamp: Date
  /** The CPU limit in cores, or the host's CPU count without one. */
  cpuCount: number
  /** CPU use in percent of `cpuCount` since the previous call on this handle. */
  cpuUsedPct: number
  /** Memory in use in bytes; absent without a memory cgroup. */
  memUsed?: number
  /** The memory limit in bytes; absent without one. */
  memTotal?: number
  /** Bytes used in the writable layer. */
  diskUsed: number
  /** Size limit of the writable layer in bytes. */
  diskTotal: number
}

/**
 * A sandbox: processes in their own namespaces, with an overlay root over a
 * template, a cgroup and SoulBox's own PID 1. As on E2B it runs until its
 * timeout or a kill, even after this object is garbage-collected or this
 * process exits. `Sandbox.connect(id)` reaches it from any process of the
 * same user.
 */
export declare class Sandbox {
  /** Use `Sandbox.create()`. */
  protected constructor()
  /** The sandbox id, which is also its hostname. */
  readonly sandboxId: string
  /** Commands in the sandbox. */
  readonly commands: Commands
  /** Pseudo-terminals in the sandbox. */
  readonly pty: Pty
  /** The sandbox's files. */
  readonly files: Filesystem

  /** Creates a sandbox from the `host` template. */
  static create(opts?: SandboxOpts): Promise<Sandbox>
  /**
   * Creates a sandbox from a template: `host`, a directory, an image or a
   * built template. A directory contains a root file system, used
   * read-only as the sandbox's root. An image is the path of an OCI image
   * layout directory or image archive, optionally followed by `:NAME` to
   * select one of several. A template built from a `soulbox.toml`
   * (`soulbox template build`) is its name, without `/`, or the path of
   * the file or its folder.
   */
  static create(template: string, opts?: SandboxOpts): Promise<Sandbox>
  /**
   * Connects to a running or paused sandbox of this user and resumes it.
   * Commands that another handle started are not visible through this one.
   * Rejects with SandboxNotFoundError when no such sandbox exists.
   */
  static connect(sandboxId: string): Promise<Sandbox>
  /** Lists this user's sandboxes, oldest first (E2B 1.x shape: an array). */
  static list(opts?: SandboxListOpts): Promise<SandboxInfo[]>
  /** Kills a sandbox by id; false if no such sandbox runs. */
  static kill(sandboxId: string): Promise<boolean>
  /** Describes a sandbox by id without resuming it. */
  static getInfo(sandboxId: string): Promise<SandboxInfo>
  /** Sets a sandbox's remaining lifetime by id; 0 removes the limit. */
  static setTimeout(sandboxId: string, timeoutMs: number): Promise<void>
  /** Returns a sandbox's current resource use by id, as a one-sample array. */
  static getMetrics(sandboxId: string): Promise<SandboxMetrics[]>

  /**
   * Builds a template from a `soulbox.toml` (SoulBox only), as
   * `soulbox template build` does: runs the file's steps in a sandbox made
   * from its `base` and keeps what they wrote. A build whose inputs have
   * not changed returns at once with `cached: true`. `path` is the file or
   * its folder, relative to `process.cwd()`. Rejects with
   * InvalidArgumentError for an invalid file, naming the key, and with a
   * SandboxError of code `TEMPLATE_FAILED` when a step exits non-zero (the
   * message names the step and its status) or the layer cannot be saved.
   */
  static buildTemplate(path: string, opts?: BuildTemplateOpts): Promise<BuiltTemplate>

  /** Returns whether the sandbox is still running. */
  isRunning(): Promise<boolean>
  /** Sets the remaining lifetime to `timeoutMs` from now; 0 removes the limit. */
  setTimeout(timeoutMs: number): Promise<void>
  /** Kills every process of the sandbox and removes its cgroups. */
  kill(): Promise<void>
  /** Describes this sandbox. */
  getInfo(): Promise<SandboxInfo>
  /**
   * Freezes every process and stops the timeout clock; false if already
   * paused. Rejects with code `UNSUPPORTED` without a writable cgroup v2.
   */
  pause(): Promise<boolean>
  /** Pauses the sandbox as `pause()` does. E2B's beta SDKs use this name. */
  betaPause(): Promise<boolean>
  /** Resumes this sandbox if it is paused. */
  connect(): Promise<this>
  /** Returns the current resource use, as a one-sample array (E2B: a series). */
  getMetrics(): Promise<SandboxMetrics[]>
  /**
   * Returns the address whose connections reach `port` on the sandbox's
   * loopback interface, as in `http://${sbx.getHost(8000)}/`. SoulBox: the
   * address is `127.0.0.1:PORT` on this machine's loopback and forwards
   * plain TCP (E2B returns a public host name such as `8000-ID.e2b.app`,
   * reached over HTTPS). Later calls for the same port return the same
   * address. The forwarding runs until the sandbox ends or this object is
   * garbage-collected. Throws InvalidArgumentError for a port outside 1
   * to 65535 and SandboxNotFoundError once the sandbox has ended.
   */
  getHost(port: number): string

  /**
   * Runs code in the default context of `language` (Python when absent).
   * Variables, imports and functions persist from one run to the next.
   * An exception in the code is in the Execution's `error`. Rejects with
   * a TimeoutError once `timeoutMs` has passed and the code was
   * interrupted, and with InvalidArgumentError for a language other than
   * Python and JavaScript (`js`, run by the template's `node`).
   */
  runCode(code: string, opts?: RunCodeOpts & { language?: RunCodeLanguage }): Promise<Execution>
  /**
   * Runs code in `context`, from `createCodeContext()`. Rejects with
   * NotFoundError when this object has no such context.
   */
  runCode(code: string, opts?: RunCodeOpts & { context?: Context }): Promise<Execution>
  /** Starts a new code context, with variables of its own. */
  createCodeContext(opts?: CreateCodeContextOpts): Promise<Context>
  /**
   * Lists the code contexts of this Sandbox object, default ones included
   * once used. SoulBox: another Sandbox object, such as one from
   * `Sandbox.connect`, has contexts of its own.
   */
  listCodeContexts(): Promise<Context[]>
  /** Ends a code context and its interpreter. */
  removeCodeContext(context: Context | string): Promise<void>
  /** Restarts a code context's interpreter; its variables are lost. */
  restartCodeContext(context: Context | string): Promise<void>
}

/** Options of `SandboxPool.create`: the pool's size and the options of `Sandbox.create`. */
export interface SandboxPoolOpts extends SandboxOpts {
  /** How many sandboxes the pool keeps waiting, a whole number from 1 to 1024. */
  size: number
}

/**
 * SoulBox: sandboxes of one configuration, built in advance, so that
 * `create()` is a hand-over rather than a build. A thread of the pool's
 * own builds a replacement after each hand-over. `close()` or garbage
 * collection kills the waiting sandboxes, and a waiting sandbox also ends
 * with this process. `Sandbox.list` shows a sandbox only after its
 * hand-over.
 */
export declare class SandboxPool {
  /** Use `SandboxPool.create()`. */
  protected constructor()
  /**
   * Starts a pool of `opts.size` sandboxes from the `host` template. It
   * resolves at once and fills in the background. Rejects with
   * InvalidArgumentError for a bad size or option, as `Sandbox.create` does.
   */
  static create(opts: SandboxPoolOpts): Promise<SandboxPool>
  /** Starts a pool of `opts.size` sandboxes from a template, as `Sandbox.create(template)`. */
  static create(template: string, opts: SandboxPoolOpts): Promise<SandboxPool>
  /** The number of sandboxes the pool keeps waiting. */
  readonly size: number
  /** The number of sandboxes waiting for a hand-over now, which is 0 once closed. */
  readonly waiting: number
  /**
   * Hands over a waiting sandbox, or creates one as `Sandbox.create` does
   * when none is waiting. Nothing has run in it, its timeout and start
   * time count from the hand-over, and it has the pool's metadata and
   * envs. Rejects with SandboxError after `close()`.
   */
  create(): Promise<Sandbox>
  /**
   * Stops the refill and kills every waiting sandbox, after the creates
   * in progress end. Sandboxes already handed over run on. Calling it
   * again does nothing.
   */
  close(): Promise<void>
}

export default Sandbox

/** Options of `Sandbox.buildTemplate` (SoulBox only). */
export interface BuildTemplateOpts {
  /** The name to register the template under, in place of the file's `name` key. */
  name?: string
  /**
   * Receives each chunk of a step's output, on the JavaScript thread and
   * before the build's Promise settles. An exception it throws, or a
   * Promise it returns that rejects, is emitted as a process warning with
   * code `SOULBOX_ON_OUTPUT_FAILED`, and the build goes on.
   */
  onOutput?: (stream: 'stdout' | 'stderr', data: Uint8Array) => unknown
}

/** A template built from a `soulbox.toml`, from `Sandbox.buildTemplate`. */
export interface BuiltTemplate {
  /** The build's key (hex SHA-256). */
  key: string
  /**
   * The name it is registered under, which `Sandbox.create` takes, if the
   * build had one. The `source` path works in its place.
   */
  name?: string
  /** The absolute path of the `soulbox.toml` it was built from. */
  source: string
  /** The path of the kept layer. */
  layer: string
  /** Whether an earlier build with the same inputs was reused and no step ran. */
  cached: boolean
}

/** The result of a command that ended. */
export interface CommandResult {
  /** Exit code; 128 + N when signal N ended the command. */
  exitCode: number
  /** The cause of an end other than exit code 0, such as `exit status 3`. */
  error?: string
  /**
   * Everything the command wrote to stdout, decoded as UTF-8 (invalid
   * bytes as U+FFFD). SoulBox: when `onStdout` also received the stream,
   * only its last 1,048,576 characters.
   */
  stdout: string
  /** As `stdout`, for stderr and `onStderr`. */
  stderr: string
  /** SoulBox: whether the sandbox's out-of-memory killer ended the command. */
  oomKilled?: boolean
}

// Callbacks may return a Promise, which SoulBox awaits before it delivers
// the next chunk or event; they are typed `=> unknown` so that
// `(data) => process.stdout.write(data)` type-checks too.

/** Options of `commands.run`. */
export interface CommandStartOpts {
  /** Return a CommandHandle at once instead of waiting. */
  background?: boolean
  /** Working directory; relative paths start at the user's home. */
  cwd?: string
  /** `user` (the default) or `root`. */
  user?: string
  /** Environment variables over the sandbox's. */
  envs?: Record<string, string>
  /** Receives stdout as it arrives, decoded as UTF-8, on the JS thread. */
  onStdout?: (data: string) => unknown
  /** Receives stderr as it arrives, decoded as UTF-8, on the JS thread. */
  onStderr?: (data: string) => unknown
  /** Keep stdin open for `sendStdin`; otherwise the command reads /dev/null. */
  stdin?: boolean
  /**
   * Milliseconds before the command and every process it started are
   * killed and the run rejects with a TimeoutError; 0 for no limit.
   * Default: 60 000 in the foreground; SoulBox: none for a background command.
   */
  timeoutMs?: number
  /** SoulBox: aborting it kills the command; the run rejects with the signal's reason. */
  signal?: AbortSignal
}

/** Options of `commands.connect`. */
export interface CommandConnectOpts {
  onStdout?: (data: string) => unknown
  onStderr?: (data: string) => unknown
}

/** A running command, as `commands.list()` shows it. */
export interface ProcessInfo {
  pid: number
  tag?: string
  cmd: string
  args: string[]
  envs: Record<string, string>
  cwd?: string
}

/** A running command or PTY. */
export declare class CommandHandle {
  protected constructor()
  /** Pid of the command's first process inside the sandbox. */
  readonly pid: number
  /** Stdout so far. */
  readonly stdout: string
  /** Stderr so far. */
  readonly stderr: string
  /** Exit code once the command has ended. */
  readonly exitCode: number | undefined
  /** The cause of an end other than exit code 0. */
  readonly error: string | undefined
  /**
   * Waits for the end. Rejects with CommandExitError for a non-zero exit
   * and TimeoutError when the timeout killed the command.
   */
  wait(): Promise<CommandResult>
  /** Kills the command and its whole tree; false if it had already ended. */
  kill(): Promise<boolean>
  /** Writes to stdin (the command must have started with `stdin: true`). */
  sendStdin(data: string | Uint8Array): Promise<void>
  /** Closes stdin, so the command reads end of file. */
  closeStdin(): Promise<void>
  /** Stops receiving output; the command keeps running. */
  disconnect(): Promise<void>
}

/** `sbx.commands`. */
export interface Commands {
  run(cmd: string, opts?: CommandStartOpts & { background?: false }): Promise<CommandResult>
  run(cmd: string, opts: CommandStartOpts & { background: true }): Promise<CommandHandle>
  run(
    cmd: string,
    opts?: CommandStartOpts & { background?: boolean },
  ): Promise<CommandHandle | CommandResult>
  list(): Promise<ProcessInfo[]>
  /** Kills a running command's tree; false if no running command has that pid. */
  kill(pid: number): Promise<boolean>
  sendStdin(pid: number, data: string | Uint8Array): Promise<void>
  closeStdin(pid: number): Promise<void>
  connect(pid: number, opts?: CommandConnectOpts): Promise<CommandHandle>
}

/** Options of `pty.create`. */
export interface PtyCreateOpts {
  cols: number
  rows: number
  /** Receives the terminal's output as bytes. */
  onData?: (data: Uint8Array) => unknown
  /** SoulBox: no limit unless given (E2B: 60 000). */
  timeoutMs?: number
  user?: string
  envs?: Record<string, string>
  cwd?: string
}

/** `sbx.pty`. */
export interface Pty {
  create(opts: PtyCreateOpts): Promise<CommandHandle>
  sendInput(pid: number, data: Uint8Array | string): Promise<void>
  resize(pid: number, size: { cols: number; rows: number }): Promise<void>
  kill(pid: number): Promise<boolean>
  connect(
    pid: number,
    opts?: { onData?: (data: Uint8Array) => unknown },
  ): Promise<CommandHandle>
}

/** Kinds of filesystem entries. */
export declare const FileType: {
  readonly FILE: 'file'
  readonly DIR: 'dir'
  /** SoulBox: a symlink, described itself and not followed. */
  readonly SYMLINK: 'symlink'
  /** SoulBox: a FIFO, socket or device. */
  readonly OTHER: 'other'
}
export type FileType = (typeof FileType)[keyof typeof FileType]

/** Name, kind and absolute path of a written file. */
export interface WriteInfo {
  name: string
  type?: FileType
  path: string
}

/** A file or directory in the sandbox. */
export interface EntryInfo extends WriteInfo {
  size: number
  mode: number
  permissions: string
  owner: string
  group: string
  modifiedTime?: Date
  symlinkTarget?: string
}

/** One file for `files.write(files)`. */
export interface WriteEntry {
  path: string
  data: string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream
}

/** Options of the file calls. */
export interface FilesystemRequestOpts {
  /** `user` (the default) or `root`: who the call acts as. */
  user?: string
}

export interface FilesystemListOpts extends FilesystemRequestOpts {
  /** 1 lists the directory's entries, 2 also theirs, and so on. */
  depth?: number
}

/** Kinds of change that `watchDir` reports. */
export declare const FilesystemEventType: {
  readonly CHMOD: 'chmod'
  readonly CREATE: 'create'
  readonly REMOVE: 'remove'
  readonly RENAME: 'rename'
  readonly WRITE: 'write'
}
export type FilesystemEventType = (typeof FilesystemEventType)[keyof typeof FilesystemEventType]

/** One change in a watched directory. */
export interface FilesystemEvent {
  /** Path relative to the watched directory. */
  name: string
  type: FilesystemEventType
}

export interface WatchOpts extends FilesystemRequestOpts {
  /** Watch subdirectories too, present and future. */
  recursive?: boolean
  /** Stop after this many milliseconds; SoulBox: no limit unless given. */
  timeoutMs?: number
  /** Called once when the watch ends, with the error that ended it, if any. */
  onExit?: (err?: Error) => unknown
  /**
   * SoulBox: receives lost-event and watch-limit errors, after which the
   * watch goes on. Without it such an error ends the watch.
   */
  onError?: (err: SandboxError) => unknown
}

/** A running directory watch. */
export declare class WatchHandle {
  protected constructor()
  /** Stops the watch; once this resolves, `onEvent` is not called again. */
  stop(): Promise<void>
}

/** `sbx.files`. Relative paths start at /home/user. */
export interface Filesystem {
  read(path: string, opts?: FilesystemRequestOpts & { format?: 'text' }): Promise<string>
  read(path: string, opts: FilesystemRequestOpts & { format: 'bytes' }): Promise<Uint8Array>
  read(path: string, opts: FilesystemRequestOpts & { format: 'blob' }): Promise<Blob>
  read(
    path: string,
    opts: FilesystemRequestOpts & { format: 'stream' },
  ): Promise<ReadableStream<Uint8Array>>
  write(
    path: string,
    data: string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream,
    opts?: FilesystemRequestOpts,
  ): Promise<WriteInfo>
  write(files: WriteEntry[], opts?: FilesystemRequestOpts): Promise<WriteInfo[]>
  list(path: string, opts?: FilesystemListOpts): Promise<EntryInfo[]>
  exists(path: string, opts?: FilesystemRequestOpts): Promise<boolean>
  getInfo(path: string, opts?: FilesystemRequestOpts): Promise<EntryInfo>
  remove(path: string, opts?: FilesystemRequestOpts): Promise<void>
  rename(oldPath: string, newPath: string, opts?: FilesystemRequestOpts): Promise<EntryInfo>
  /** Returns false if the directory already existed. */
  makeDir(path: string, opts?: FilesystemRequestOpts): Promise<boolean>
  watchDir(
    path: string,
    onEvent: (event: FilesystemEvent) => unknown,
    opts?: WatchOpts,
  ): Promise<WatchHandle>
}

/** A code context: an interpreter whose variables persist from one run to the next. */
export type Context = {
  id: string
  /** `python` or `js`. */
  language: string
  /** The working directory the interpreter started in. */
  cwd: string
}

/**
 * A language for `runCode`. SoulBox runs `python` (also as `python3` or
 * `py`) and `js` (also as `javascript`, `node` or `nodejs`), and rejects
 * every other language with an InvalidArgumentError.
 */
export type RunCodeLanguage = 'python' | 'js' | 'javascript' | (string & {})

/** Options of `runCode`. */
export interface RunCodeOpts {
  /** Receives stdout as it arrives, on the JS thread. */
  onStdout?: (output: OutputMessage) => unknown
  /** Receives stderr as it arrives, on the JS thread. */
  onStderr?: (output: OutputMessage) => unknown
  /** Receives each displayed value and the final expression's value. */
  onResult?: (data: Result) => unknown
  /** Receives the exception that ended the code. */
  onError?: (error: ExecutionError) => unknown
  /** Environment variables for this run only. */
  envs?: Record<string, string>
  /**
   * Milliseconds before the code is interrupted, as with Ctrl-C, and the
   * run rejects with a TimeoutError; 0 for no limit. The context keeps its
   * variables, unless the code ignored the interrupt for 2 s and its
   * context was restarted, as the error's message then reports.
   * @default 60_000
   */
  timeoutMs?: number
  /** Accepted and ignored: SoulBox has no API server to time out. */
  requestTimeoutMs?: number
}

/** Options of `createCodeContext`. */
export interface CreateCodeContextOpts {
  /**
   * The working directory, an absolute path; by default the template's
   * working directory, where commands start.
   * @default '/home/user' on the `host` template
   */
  cwd?: string
  /** @default 'python' */
  language?: RunCodeLanguage
  /** Accepted and ignored, as in `RunCodeOpts`. */
  requestTimeoutMs?: number
}

/** A piece of output that `onStdout` or `onStderr` receives. */
export declare class OutputMessage {
  constructor(line: string, timestamp: number, error: boolean)
  /** The text as the code wrote it: a piece of the stream, not always one whole line. */
  readonly line: string
  /** When SoulBox received it, in microseconds since the Unix epoch. */
  readonly timestamp: number
  /** Whether it came from stderr. */
  readonly error: boolean
  toString(): string
}

/** The exception that ended an execution. */
export declare class ExecutionError {
  constructor(name: string, value: string, traceback: string)
  /** The exception's type, such as `ZeroDivisionError`. */
  name: string
  /** Its message. */
  value: string
  /** The formatted traceback, starting at the executed code. */
  traceback: string
}

/** A format name, such as `html` or `png`. */
export type MIMEType = string

/** A Result's representations by format name. */
export type RawData = { [key: MIMEType]: any }

/**
 * A value that the code displayed (`display(value)`) or ended with, in
 * every representation it offered.
 */
export declare class Result {
  constructor(rawData: RawData, isMainResult: boolean)
  /** `repr()` of the value. */
  readonly text?: string
  readonly html?: string
  readonly markdown?: string
  readonly svg?: string
  /** Base64. */
  readonly png?: string
  /** Base64. */
  readonly jpeg?: string
  /** Base64. */
  readonly pdf?: string
  readonly latex?: string
  /**
   * The JSON representation, parsed. E2B declares it a string, but its
   * server sends the parsed value, as SoulBox does.
   */
  readonly json?: any
  readonly javascript?: string
  /** SoulBox: always undefined (E2B: a DataFrame's data). */
  readonly data?: Record<string, unknown>
  /** SoulBox: always undefined, because SoulBox does not extract charts. */
  readonly chart?: unknown
  /** Representations without a property of their own. */
  readonly extra?: any
  /** Every representation by format name. */
  readonly raw: RawData
  /** Whether this is the value of the code's final expression. */
  readonly isMainResult: boolean
  /** Names the representations present besides `text`. */
  formats(): string[]
  toJSON(): Record<string, unknown>
}

/** Output of an execution, as the pieces arrived; joined, each is the whole stream. */
export type Logs = {
  stdout: string[]
  stderr: string[]
}

/** The outcome of `runCode`. */
export declare class Execution {
  constructor(
    results?: Result[],
    logs?: Logs,
    error?: ExecutionError,
    executionCount?: number,
  )
  /** The values displayed, in order, and last the final expression's value. */
  results: Result[]
  /**
   * Output of the code and its child processes. SoulBox keeps the first
   * 16 MiB of each stream, and the callbacks receive all of it.
   */
  logs: Logs
  /** The exception that ended the code, if one did. */
  error?: ExecutionError
  /** How many runs the context has made, this one included. */
  executionCount?: number
  /** The text of the final expression's value, if there was one. */
  readonly text: string | undefined
  toJSON(): { results: Result[]; logs: Logs; error?: ExecutionError }
}

/**
 * Base class of every SoulBox error. `code` names the kind of failure,
 * such as `INVALID_ARGUMENT` or `PERMISSION_DENIED`.
 */
export declare class SandboxError extends Error {
  constructor(message?: string, stackTrace?: string)
  code: string
  /** The OS error number behind the failure, when there is one. */
  errno?: number
}
/**
 * A command, or code run with `runCode`, ran past its timeout. A
 * command's error carries its output so far.
 */
export declare class TimeoutError extends SandboxError {
  constructor(message: string, stackTrace?: string)
  stdout?: string
  stderr?: string
}
/** A value passed in was rejected; nothing was changed. */
export declare class InvalidArgumentError extends SandboxError {
  constructor(message: string, stackTrace?: string)
}
/** The sandbox's writable layer is full. */
export declare class NotEnoughSpaceError extends SandboxError {
  constructor(message: string, stackTrace?: string)
}
/** A command, sandbox or file was not found. */
export declare class NotFoundError extends SandboxError {
  constructor(message: string, stackTrace?: string)
}
/** A file or directory does not exist in the sandbox. */
export declare class FileNotFoundError extends NotFoundError {
  constructor(message: string, stackTrace?: string)
}
/**
 * No sandbox has this id (code `SANDBOX_NOT_FOUND`), or this handle's
 * sandbox has ended (code `SANDBOX_NOT_RUNNING`).
 */
export declare class SandboxNotFoundError extends NotFoundError {
  constructor(message: string, stackTrace?: string)
}
/** A command exited with a non-zero code; carries its result. */
export declare class CommandExitError extends SandboxError implements CommandResult {
  constructor(result: CommandResult)
  readonly exitCode: number
  readonly error: string | undefined
  readonly stdout: string
  readonly stderr: string
  readonly oomKilled: boolean | undefined
}

// Compile-only checks of the ES module declarations: `npm run typecheck`
// fails if a call that E2B's SDK accepts does not type-check here, or if
// a result has the wrong type.
import Sandbox, {
  ALL_TRAFFIC,
  CommandExitError,
  Execution,
  ExecutionError,
  OutputMessage,
  Result,
  FileNotFoundError,
  FileType,
  FilesystemEventType,
  NotFoundError,
  SandboxError,
  SandboxPool,
  TimeoutError,
  type BuiltTemplate,
  type CommandHandle,
  type CommandResult,
  type Context,
  type EntryInfo,
  type FilesystemEvent,
  type SandboxInfo,
  type SandboxLifecycle,
  type SandboxPoolOpts,
  type WriteInfo,
} from 'soulbox'

export async function typeChecks(): Promise<void> {
  const sbx = await Sandbox.create({ timeoutMs: 60_000, envs: { A: '1' }, metadata: { k: 'v' } })
  const same: Sandbox = await Sandbox.create('host')
  const online: Sandbox = await Sandbox.create({ allowInternetAccess: true })
  await online.kill()
  const filtered: Sandbox = await Sandbox.create({
    network: { denyOut: [ALL_TRAFFIC], allowOut: ['192.0.2.1', '198.51.100.0/24'] },
  })
  const filteredInfo: SandboxInfo = await filtered.getInfo()
  const internet: boolean = filteredInfo.allowInternetAccess
  const denied: string[] | undefined = filteredInfo.network?.denyOut
  const onTimeout: 'kill' | 'pause' = filteredInfo.lifecycle.onTimeout
  const autoResume: boolean = filteredInfo.lifecycle.autoResume
  void [internet, denied, onTimeout, autoResume]
  await filtered.kill()
  const built: BuiltTemplate = await Sandbox.buildTemplate('./app', {
    name: 'app',
    onOutput: (stream: 'stdout' | 'stderr', data: Uint8Array) => void [stream, data],
  })
  const builtName: string | undefined = built.name
  const builtCached: boolean = built.cached
  void [builtName, builtCached, built.key, built.source, built.layer]
  await Sandbox.buildTemplate('./app')
  const poolOpts: SandboxPoolOpts = { size: 2, timeoutMs: 60_000, metadata: { k: 'v' } }
  const pool: SandboxPool = await SandboxPool.create(poolOpts)
  const pooled: Sandbox = await pool.create()
  const poolCounts: number = pool.waiting + pool.size
  void poolCounts
  await pooled.kill()
  await pool.close()
  await (await SandboxPool.create('host', { size: 1, memoryLimit: null })).close()
  const lifecycle: SandboxLifecycle = { onTimeout: 'pause', autoResume: true }
  const pausing: Sandbox = await Sandbox.create({ timeoutMs: 1000, lifecycle })
  await pausing.kill()
  const result: CommandResult = await sbx.commands.run('echo hi', {
    envs: { B: '2' },
    user: 'root',
    cwd: '/tmp',
    timeoutMs: 1000,
    onStdout: (data: string) => void data,
    onStderr: async (data: string) => void data,
    signal: AbortSignal.timeout(5000),
  })
  const code: number = result.exitCode
  const handle: CommandHandle = await sbx.commands.run('sleep 1', { background: true, stdin: true })
  await handle.sendStdin('text')
  await handle.closeStdin()
  const killed: boolean = await handle.kill()
  const waited: CommandResult = await handle.wait()
  const text: string = await sbx.files.read('/etc/hostname')
  const bytes: Uint8Array = await sbx.files.read('/etc/hostname', { format: 'bytes' })
  const blob: Blob = await sbx.files.read('/etc/hostname', { format: 'blob' })
  const stream: ReadableStream<Uint8Array> = await sbx.files.read('f', { format: 'stream' })
  const written: WriteInfo = await sbx.files.write('f', new Uint8Array([1, 2]))
  const many: WriteInfo[] = await sbx.files.write([{ path: 'a', data: 'x' }])
  const entries: EntryInfo[] = await sbx.files.list('.', { depth: 2 })
  const isDir: boolean = entries[0]?.type === FileType.DIR
  const created: boolean = await sbx.files.makeDir('d')
  const renamed: EntryInfo = await sbx.files.rename('a', 'b')
  const watch = await sbx.files.watchDir(
    'd',
    (event: FilesystemEvent) => void (event.type === FilesystemEventType.CREATE),
    { recursive: true, onExit: (err?: Error) => void err },
  )
  await watch.stop()
  const terminal = await sbx.pty.create({ rows: 24, cols: 80, onData: (d: Uint8Array) => void d })
  await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('exit\n'))
  await sbx.pty.resize(terminal.pid, { rows: 30, cols: 100 })
  const execution: Execution = await sbx.runCode('1 + 1', {
    language: 'python',
    envs: { A: '1' },
    timeoutMs: 5000,
    requestTimeoutMs: 1000,
    onStdout: (output: OutputMessage) => void output.line,
    onStderr: async (output: OutputMessage) => void output.error,
    onResult: (data: Result) => void data.html,
    onError: (error: ExecutionError) => void error.traceback,
  })
  const mainText: string | undefined = execution.text
  const stdoutPieces: string[] = execution.logs.stdout
  const count: number | undefined = execution.executionCount
  const context: Context = await sbx.createCodeContext({ cwd: '/tmp', language: 'python' })
  const inContext: Execution = await sbx.runCode('x', { context })
  const formats: string[] = inContext.results[0]?.formats() ?? []
  const isMain: boolean | undefined = inContext.results[0]?.isMainResult
  const contexts: Context[] = await sbx.listCodeContexts()
  await sbx.restartCodeContext(context)
  await sbx.removeCodeContext(context.id)
  await sbx.setTimeout(30_000)
  const running: boolean = await sbx.isRunning()
  const host: string = sbx.getHost(8000)
  await sbx.kill()
  try {
    await same.commands.run('exit 1')
  } catch (error) {
    if (error instanceof CommandExitError) {
      const output: string = error.stdout + error.stderr + String(error.exitCode)
      void output
    }
    if (error instanceof FileNotFoundError && error instanceof NotFoundError) {
      const kind: string = error.code
      void kind
    }
    if (error instanceof TimeoutError || error instanceof SandboxError) {
      const errno: number | undefined = error.errno
      void errno
    }
  }
  void [code, killed, waited, text, bytes, blob, stream, written, many, isDir, created]
  void [renamed, running, host]
  void [mainText, stdoutPieces, count, formats, isMain, contexts]
}

// The JavaScript side of SoulBox's code interpreter. It runs inside the
// sandbox as an ordinary command, `node -e <this file>`, and speaks the
// protocol of kernel.py:
//   requests on stdin, one JSON object per line:
//     {"id": 7, "code": "...", "envs": {"A": "1"}}
//     {"interrupt": 7}
//   replies on stdout, one JSON object per line, each with the request's id:
//     {"id": 7, "type": "stdout" | "stderr", "text": "..."}
//     {"id": 7, "type": "result", "formats": {"text": "..."}, "main": true}
//     {"id": 7, "type": "error", "name": "...", "value": "...", "traceback": "..."}
//     {"id": 7, "type": "done", "count": 3}
//
// Node cannot point its own descriptors 1 and 2 at new pipes, so this
// process only relays: the code runs in a second node process whose
// descriptors 1 and 2 are sockets read here (Node's stdio "pipes"). Output of the code's child
// processes is captured with console.log's. Results, errors and the end of
// each execution come back on an IPC channel. After each execution the
// runner writes a mark to both pipes, and the execution is done once both
// marks and the runner's report have arrived, so no output is reported
// under the next execution.
'use strict';

const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const readline = require('readline');
const { StringDecoder } = require('string_decoder');

// Output written while no execution runs goes to the next one, up to this
// many characters, as kernel.py keeps it.
const KEPT_BETWEEN = 1 << 20;
// Characters of the runner's stderr kept for this process's own stderr,
// which the host shows when the runner ends.
const STDERR_TAIL = 2048;

const token = crypto.randomBytes(8).toString('hex');
const mark = '\u0000soulbox-sync-' + token + '\u0000';

// Writes one reply line. Descriptor 1 is the host's pipe, which is blocking.
// Should it be non-blocking, a full pipe is waited out.
function send(fields) {
  const data = Buffer.from(JSON.stringify(fields, escapeLoneSurrogates) + '\n');
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += fs.writeSync(1, data, offset);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

// Replaces each lone surrogate in a string, such as half of an emoji that
// `slice` cut, with its backslash escape as text, as kernel.py does.
// JSON.stringify would write it as a \u escape, and the host's JSON reader
// rejects the whole reply line for it.
function escapeLoneSurrogates(key, value) {
  if (typeof value !== 'string') return value;
  return value.replace(/\p{Surrogate}/gu, (unit) => '\\u' + unit.charCodeAt(0).toString(16));
}

// The code runs here. Its source is passed to a second node process.
function runner() {
  const fs = require('fs');
  const util = require('util');
  const vm = require('vm');
  let rewriteAwait = null;
  try {
    // Node's own REPL turns code with top-level `await` into an async
    // function whose declarations stay global. Without internals, such
    // code runs in an async function of its own.
    rewriteAwait = require('internal/repl/await').processTopLevelAwait;
  } catch (_) {}
  globalThis.require = require;
  // `import()` in a cell loads as the runner's own `import()` would. Node
  // calls that loader experimental and warns at its first use, a warning
  // that is not the code's.
  const importModuleDynamically = vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER;
  const emitWarning = process.emitWarning;
  process.emitWarning = function (warning, ...rest) {
    if (String(warning && warning.message !== undefined ? warning.message : warning).startsWith('vm.USE_MAIN_CONTEXT_DEFAULT_LOADER')) return;
    return emitWarning.call(this, warning, ...rest);
  };
  // Taken before the code runs, which may replace them.
  const report = process.send.bind(process);
  const writeSync = fs.writeSync;
  const outputs = [
    { stream: process.stdout, write: process.stdout.write, fd: 1 },
    { stream: process.stderr, write: process.stderr.write, fd: 2 },
  ];
  // Set by the relay's first message.
  let mark = null;

  let interrupt = null;
  process.on('SIGINT', () => {
    if (interrupt) interrupt(new Error('interrupted'));
  });
  // Code that throws from a callback after its execution ended would end
  // the process, and the context's variables with it.
  process.on('uncaughtException', (e) => {
    process.stderr.write('Uncaught ' + (e && e.stack ? e.stack : String(e)) + '\n');
  });
  process.on('unhandledRejection', (e) => {
    process.stderr.write('Unhandled rejection: ' + (e && e.stack ? e.stack : String(e)) + '\n');
  });

  // Writes the mark after everything the code wrote to `output.stream`.
  // The descriptors are sockets that the stream writes without blocking:
  // once one is full, the stream queues the rest of the code's output, and
  // a mark written to the descriptor directly would overtake it. With
  // nothing queued, or no usable stream, the mark goes to the descriptor.
  // If the code closed that, the relay reads the stream's end instead.
  function writeMark(output) {
    return new Promise((resolve) => {
      const direct = () => {
        writeDirect(output.fd);
        resolve();
      };
      const { stream } = output;
      if (stream.destroyed || stream.writableEnded || stream.writableLength === 0) {
        direct();
        return;
      }
      while (stream.writableCorked) stream.uncork();
      try {
        output.write.call(stream, mark, (error) => (error ? direct() : resolve()));
      } catch (_) {
        direct();
      }
    });
  }

  function writeDirect(fd) {
    const data = Buffer.from(mark);
    let offset = 0;
    while (offset < data.length) {
      try {
        offset += writeSync(fd, data, offset);
      } catch (e) {
        if (e.code !== 'EAGAIN') return;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      }
    }
  }

  function describe(e) {
    if (e instanceof Error || (e && typeof e === 'object' && 'stack' in e)) {
      const stack = String(e.stack || '');
      // Frames of the kernel and of node's own modules are not the code's.
      const lines = stack.split('\n');
      const frames = lines.filter((line, i) => i === 0 || !/^\s+at /.test(line) || line.includes('cell:'));
      return { name: String(e.name || 'Error'), value: String(e.message || ''), traceback: frames.join('\n') };
    }
    return { name: 'Error', value: util.inspect(e), traceback: 'Uncaught ' + util.inspect(e) };
  }

  async function run(code) {
    let script;
    let wrapped = false;
    try {
      script = new vm.Script(code, { filename: 'cell', importModuleDynamically });
    } catch (e) {
      if (!(e instanceof SyntaxError) || !code.includes('await')) throw e;
      let rewritten = '(async () => { ' + code + '\n})().then((value) => ({ value }))';
      if (rewriteAwait) {
        try {
          rewritten = rewriteAwait(code);
        } catch (_) {
          rewritten = null;
        }
        // The code has no top-level `await`, so the first error is the one
        // to report.
        if (rewritten === null) throw e;
      }
      script = new vm.Script(rewritten, { filename: 'cell', importModuleDynamically });
      wrapped = true;
    }
    let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
    if (wrapped) {
      const interrupted = new Promise((_, reject) => { interrupt = reject; });
      try {
        value = (await Promise.race([value, interrupted])).value;
      } finally {
        interrupt = null;
      }
    }
    return value;
  }

  process.on('message', async (request) => {
    if (mark === null) {
      mark = '\u0000soulbox-sync-' + request.token + '\u0000';
      report({ type: 'ready' });
      return;
    }
    const saved = {};
    for (const [key, value] of Object.entries(request.envs || {})) {
      saved[key] = process.env[key];
      process.env[key] = value;
    }
    try {
      const value = await run(request.code);
      if (value !== undefined) {
        report({ type: 'result', formats: { text: util.inspect(value) }, main: true });
      }
    } catch (e) {
      report({ type: 'error', ...describe(e) });
    } finally {
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      for (const output of outputs) {
        await writeMark(output);
      }
      report({ type: 'done' });
    }
  });
}

// Reads one of the runner's output pipes and reports what comes before each
// mark under the execution in progress.
class Stream {
  constructor(kind, onMark) {
    this.kind = kind;
    this.onMark = onMark;
    this.decoder = new StringDecoder('utf8');
    this.text = '';
    this.tail = '';
    this.ended = false;
  }

  push(chunk) {
    const piece = this.decoder.write(chunk);
    this.text += piece;
    if (this.kind === 'stderr') {
      this.tail = (this.tail + piece).slice(-STDERR_TAIL);
    }
    for (;;) {
      const at = this.text.indexOf(mark);
      if (at < 0) break;
      this.emit(this.text.slice(0, at));
      this.text = this.text.slice(at + mark.length);
      this.onMark(this);
    }
    // Keeps back an end that may be the start of a mark.
    let keep = Math.min(this.text.length, mark.length - 1);
    while (keep > 0 && !mark.startsWith(this.text.slice(-keep))) keep -= 1;
    this.emit(this.text.slice(0, this.text.length - keep));
    this.text = this.text.slice(this.text.length - keep);
  }

  // Reports the rest at the stream's end. The runner's descriptor is then
  // closed, and no mark can come any more: the stream counts as marked for
  // every later execution.
  end() {
    this.emit(this.text + this.decoder.end());
    this.text = '';
    this.ended = true;
    this.onMark(this);
  }

  emit(text) {
    if (text.length > 0) output(this.kind, text);
  }
}

let count = 0;
// The execution in progress: its id, whether the runner reported its end,
// and the streams whose mark has arrived.
let current = null;
const queue = [];
const between = [];
let betweenLength = 0;

// Sends output of the execution in progress, or keeps it for the next one:
// what follows a stream's mark was written after the execution ended.
function output(kind, text) {
  if (current && !current.marks.has(kind)) {
    send({ id: current.id, type: kind, text });
  } else if (betweenLength < KEPT_BETWEEN) {
    between.push([kind, text]);
    betweenLength += text.length;
  }
}

// NOTE: Node makes stdio "pipes" as socket pairs, and a child process of the
// code gets ENXIO when it opens /dev/stdout or /dev/stderr, which kernel.py's
// real pipes allow.
const child = childProcess.spawn(process.execPath, ['--expose-internals', '-e', '(' + runner.toString() + ')()'], {
  stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
});
child.send({ token });

function finishIfDone() {
  if (current && current.reported && current.marks.size === 2) {
    count += 1;
    send({ id: current.id, type: 'done', count });
    current = null;
    startNext();
  }
}

const onMark = (stream) => {
  if (current) {
    current.marks.add(stream.kind);
    finishIfDone();
  }
};
const streams = { stdout: new Stream('stdout', onMark), stderr: new Stream('stderr', onMark) };
child.stdout.on('data', (chunk) => streams.stdout.push(chunk));
child.stderr.on('data', (chunk) => streams.stderr.push(chunk));
child.stdout.on('end', () => streams.stdout.end());
child.stderr.on('end', () => streams.stderr.end());

function startNext() {
  if (current || queue.length === 0 || !ready) return;
  const request = queue.shift();
  const ended = Object.values(streams).filter((stream) => stream.ended);
  current = { id: request.id, reported: false, marks: new Set(ended.map((stream) => stream.kind)) };
  for (const [kind, text] of between.splice(0)) {
    send({ id: current.id, type: kind, text });
  }
  betweenLength = 0;
  if (request.interrupted) {
    // Interrupted before it started: it ends at once, as its code would.
    send({ id: current.id, type: 'error', name: 'Error', value: 'interrupted', traceback: 'Error: interrupted' });
    current.reported = true;
    current.marks = new Set(['stdout', 'stderr']);
    finishIfDone();
    return;
  }
  child.send({ code: String(request.code), envs: request.envs || {} });
}

let ready = false;
child.on('message', (message) => {
  if (message.type === 'ready') {
    ready = true;
    send({ id: 0, type: 'ready' });
    startNext();
  } else if (!current) {
    // Nothing the runner sends outside an execution is expected.
  } else if (message.type === 'done') {
    current.reported = true;
    finishIfDone();
  } else if (message.type === 'result') {
    send({ id: current.id, type: 'result', formats: message.formats, main: message.main });
  } else if (message.type === 'error') {
    send({ id: current.id, type: 'error', name: message.name, value: message.value, traceback: message.traceback });
  }
});

child.on('exit', (code, signal) => {
  // The host reports this process's end and its stderr.
  fs.writeSync(2, streams.stderr.tail.split(mark).join(''));
  if (signal) {
    process.kill(process.pid, signal);
  }
  process.exit(code === null ? 1 : code);
});

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  let request;
  try {
    request = JSON.parse(line);
  } catch (_) {
    // A request line cut short by a call that was dropped.
    return;
  }
  if (request === null || typeof request !== 'object') return;
  if ('interrupt' in request) {
    if (current && current.id === request.interrupt) {
      child.kill('SIGINT');
    } else {
      const queued = queue.find((entry) => entry.id === request.interrupt);
      if (queued) queued.interrupted = true;
    }
    return;
  }
  queue.push(request);
  startNext();
});
lines.on('close', () => child.kill('SIGKILL'));

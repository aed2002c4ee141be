'use strict'

// `sbx.files`: the sandbox's files, reached from the host side.

const check = require('./check')
const { call } = require('./native')
const { toBuffer } = require('./commands')

/** Kinds of filesystem entries. FILE and DIR are E2B's; the rest are SoulBox's. */
const FileType = Object.freeze({
  FILE: 'file',
  DIR: 'dir',
  SYMLINK: 'symlink',
  OTHER: 'other',
})

/** Kinds of change that `watchDir` reports, as E2B's FilesystemEventType. */
const FilesystemEventType = Object.freeze({
  CHMOD: 'chmod',
  CREATE: 'create',
  REMOVE: 'remove',
  RENAME: 'rename',
  WRITE: 'write',
})

const READ_FORMATS = new Set(['text', 'bytes', 'blob', 'stream'])

/** Codes of watch errors after which the watch goes on. */
const NON_FATAL_WATCH_CODES = new Set(['WATCH_EVENTS_LOST', 'WATCH_LIMIT'])

function entryInfo(entry) {
  const info = {
    name: entry.name,
    type: entry.type,
    path: entry.path,
    size: entry.size,
    mode: entry.mode,
    permissions: entry.permissions,
    owner: entry.owner,
    group: entry.group,
    modifiedTime: new Date(entry.modifiedMs),
  }
  if (entry.symlinkTarget !== undefined && entry.symlinkTarget !== null) {
    info.symlinkTarget = entry.symlinkTarget
  }
  return info
}

function writeInfo(entry) {
  return { name: entry.name, type: entry.type, path: entry.path }
}

function asUint8Array(buffer) {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
}

/** Converts what `write` accepts into a Buffer. */
async function fileData(name, data) {
  if (typeof Blob !== 'undefined' && data instanceof Blob) {
    return Buffer.from(await data.arrayBuffer())
  }
  if (typeof ReadableStream !== 'undefined' && data instanceof ReadableStream) {
    // NOTE: the stream is gathered in memory before the write starts.
    const chunks = []
    for await (const chunk of data) {
      chunks.push(toBuffer(`${name} chunk`, chunk))
    }
    return Buffer.concat(chunks)
  }
  if (typeof data !== 'string' && !(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
    throw check.invalid(
      name,
      data,
      'a string, an ArrayBuffer, an ArrayBufferView such as a Uint8Array, a Blob or a ReadableStream',
    )
  }
  return toBuffer(name, data)
}

/** A stream of a sandbox file's bytes, read 1 MiB at a time. */
function fileStream(reader) {
  return new ReadableStream({
    async pull(controller) {
      const chunk = await call(() => reader.read())
      if (chunk === null) {
        controller.close()
      } else {
        controller.enqueue(asUint8Array(chunk))
      }
    },
    cancel() {
      reader.close()
    },
  })
}

/** A running directory watch, from `files.watchDir`. */
class WatchHandle {
  /** @internal */
  constructor(nativeWatcher, onEvent, { onExit, onError, timeoutMs }) {
    this._native = nativeWatcher
    this._timer = undefined
    if (timeoutMs) {
      this._timer = setTimeout(() => this._native.stop(), timeoutMs)
      // The timeout alone does not keep the process running.
      this._timer.unref()
    }
    this._done = this._pump(onEvent, onExit, onError)
  }

  async _pump(onEvent, onExit, onError) {
    let failure
    for (;;) {
      let event
      try {
        event = await call(() => this._native.next())
      } catch (error) {
        if (NON_FATAL_WATCH_CODES.has(error.code) && onError !== undefined) {
          await callSafely(onError, error)
          continue
        }
        failure = error
        break
      }
      if (event === null) {
        break
      }
      try {
        await onEvent({ name: event.name, type: event.type })
      } catch (error) {
        failure = error
        break
      }
    }
    this._native.stop()
    clearTimeout(this._timer)
    if (onExit !== undefined) {
      await callSafely(onExit, failure)
    }
  }

  /** Stops the watch. Once this resolves, `onEvent` is not called again. */
  async stop() {
    this._native.stop()
    await this._done
  }
}

/** Runs a callback whose failure has nowhere to go but the console. */
async function callSafely(callback, argument) {
  try {
    await callback(argument)
  } catch (error) {
    // NOTE: a throwing onExit or onError has no caller to reject, so it
    // surfaces as an uncaught exception, as a throw in a timer would.
    queueMicrotask(() => {
      throw error
    })
  }
}

/** Checks a path and its options, and returns the user the call acts as. */
function userFor(path, opts) {
  check.string('path', path)
  return check.optionalString('user', check.options('opts', opts).user)
}

/** `sbx.files`. Relative paths start at /home/user. */
class Filesystem {
  /** @internal */
  constructor(nativeSandbox) {
    this._native = nativeSandbox
  }

  /**
   * Reads a file as text (UTF-8, invalid bytes as U+FFFD), or as bytes, a
   * Blob or a ReadableStream with `format`.
   */
  async read(path, opts) {
    check.string('path', path)
    opts = check.options('opts', opts)
    const format = opts.format ?? 'text'
    if (!READ_FORMATS.has(format)) {
      throw check.invalid('format', format, "'text', 'bytes', 'blob' or 'stream'")
    }
    const user = check.optionalString('user', opts.user)
    if (format === 'stream') {
      return fileStream(await call(() => this._native.openFile(path, user)))
    }
    const data = await call(() => this._native.readFile(path, user))
    if (format === 'bytes') {
      return asUint8Array(data)
    }
    if (format === 'blob') {
      return new Blob([data])
    }
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(data)
  }

  /**
   * Writes a file, creating missing parent directories, or with an array
   * of `{ path, data }` several files in order. Returns what was written.
   */
  async write(pathOrFiles, dataOrOpts, opts) {
    if (Array.isArray(pathOrFiles)) {
      opts = check.options('opts', dataOrOpts)
      const user = check.optionalString('user', opts.user)
      const entries = []
      for (const [index, file] of pathOrFiles.entries()) {
        check.options(`files[${index}]`, file)
        check.string(`files[${index}].path`, file.path)
        entries.push({ path: file.path, data: await fileData(`files[${index}].data`, file.data) })
      }
      const written = await call(() => this._native.writeFiles(entries, user))
      return written.map(writeInfo)
    }
    const path = check.string('path', pathOrFiles)
    opts = check.options('opts', opts)
    const user = check.optionalString('user', opts.user)
    const data = await fileData('data', dataOrOpts)
    return writeInfo(await call(() => this._native.writeFile(path, data, user)))
  }

  /** Lists a directory; `depth` 2 also lists its subdirectories, and so on. */
  async list(path, opts) {
    check.string('path', path)
    opts = check.options('opts', opts)
    const depth = opts.depth ?? 1
    if (!Number.isInteger(depth) || depth < 1 || depth > 0xffffffff) {
      throw check.invalid('depth', depth, 'a whole number from 1 up')
    }
    const user = check.optionalString('user', opts.user)
    const entries = await call(() => this._native.listDir(path, depth, user))
    return entries.map(entryInfo)
  }

  /** Returns whether a file or directory exists. */
  async exists(path, opts) {
    const user = userFor(path, opts)
    return call(() => this._native.exists(path, user))
  }

  /** Describes a file or directory; a symlink is described, not followed. */
  async getInfo(path, opts) {
    const user = userFor(path, opts)
    return entryInfo(await call(() => this._native.stat(path, user)))
  }

  /** Removes a file or a directory tree. A missing path is not an error. */
  async remove(path, opts) {
    const user = userFor(path, opts)
    await call(() => this._native.remove(path, user))
  }

  /** Renames a file or directory and returns the new entry. */
  async rename(oldPath, newPath, opts) {
    check.string('oldPath', oldPath)
    check.string('newPath', newPath)
    const user = check.optionalString('user', check.options('opts', opts).user)
    return entryInfo(await call(() => this._native.rename(oldPath, newPath, user)))
  }

  /** Creates a directory and its parents. Returns false if it existed. */
  async makeDir(path, opts) {
    const user = userFor(path, opts)
    return call(() => this._native.makeDir(path, user))
  }

  /**
   * Watches a directory and calls `onEvent` for each change, with names
   * relative to it. Resolves once the watch is in place.
   */
  async watchDir(path, onEvent, opts) {
    check.string('path', path)
    if (typeof onEvent !== 'function') {
      throw check.invalid('onEvent', onEvent, 'a function')
    }
    opts = check.options('opts', opts)
    const recursive = check.optionalBoolean('recursive', opts.recursive) === true
    const user = check.optionalString('user', opts.user)
    const watchOptions = {
      onExit: check.optionalFunction('onExit', opts.onExit),
      onError: check.optionalFunction('onError', opts.onError),
      timeoutMs: check.optionalTimeoutMs('timeoutMs', opts.timeoutMs),
    }
    const nativeWatcher = await call(() => this._native.watchDir(path, recursive, user))
    return new WatchHandle(nativeWatcher, onEvent, watchOptions)
  }
}

module.exports = { Filesystem, WatchHandle, FileType, FilesystemEventType }

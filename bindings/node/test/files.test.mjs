// Files through the Node API: sbx.files.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  FileNotFoundError,
  FileType,
  FilesystemEventType,
  InvalidArgumentError,
  NotFoundError,
  SandboxError,
} from 'soulbox'
import { eventually, requireRoot, withSandbox } from './helpers.mjs'

/** `bytes(range(256)) * 1000`. */
function everyByteValue() {
  const data = new Uint8Array(256 * 1000)
  for (let i = 0; i < data.length; i++) {
    data[i] = i % 256
  }
  return data
}

async function readStream(stream) {
  const chunks = []
  for await (const chunk of stream) {
    assert.ok(chunk instanceof Uint8Array)
    chunks.push(chunk)
  }
  return new Uint8Array(Buffer.concat(chunks))
}

test('binary file round-trips', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const data = everyByteValue()
    const info = await sbx.files.write('bin/data', data)
    assert.deepEqual(info, { name: 'data', type: FileType.FILE, path: '/home/user/bin/data' })
    assert.deepEqual(await sbx.files.read('bin/data', { format: 'bytes' }), data)
    assert.deepEqual(await readStream(await sbx.files.read('bin/data', { format: 'stream' })), data)
    const blob = await sbx.files.read('bin/data', { format: 'blob' })
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), data)
    assert.equal((await sbx.files.getInfo('bin/data')).size, data.length)
  })
})

test('large file streams in chunks', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.commands.run('head -c 3500000 /dev/urandom > big')
    const stream = await sbx.files.read('big', { format: 'stream' })
    const sizes = []
    for await (const chunk of stream) {
      sizes.push(chunk.length)
    }
    assert.deepEqual(sizes, [1 << 20, 1 << 20, 1 << 20, 3500000 - 3 * (1 << 20)])
    const digest = await sbx.commands.run('sha256sum < big')
    const bytes = await sbx.files.read('big', { format: 'bytes' })
    const { createHash } = await import('node:crypto')
    const expected = createHash('sha256').update(bytes).digest('hex')
    assert.equal(digest.stdout.split(' ')[0], expected)
  })
})

test('empty files read empty', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.write('empty', '')
    assert.equal(await sbx.files.read('empty'), '')
    assert.deepEqual(await sbx.files.read('empty', { format: 'bytes' }), new Uint8Array())
    assert.deepEqual(await readStream(await sbx.files.read('empty', { format: 'stream' })), new Uint8Array())
    assert.equal((await sbx.files.getInfo('empty')).size, 0)
    await sbx.commands.run('touch touched')
    assert.equal(await sbx.files.read('touched'), '')
  })
})

test('odd names round-trip', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const path = 'dir with space/ünï😀.txt'
    await sbx.files.write(path, 'odd')
    const names = (await sbx.files.list('dir with space')).map((entry) => entry.name)
    assert.deepEqual(names, ['ünï😀.txt'])
    assert.equal(await sbx.files.read(path), 'odd')
    const renamed = await sbx.files.rename(path, 'dir with space/ß 😀.txt')
    assert.equal(renamed.name, 'ß 😀.txt')
    assert.equal(renamed.path, '/home/user/dir with space/ß 😀.txt')
    assert.equal(await sbx.files.exists(path), false)
    await sbx.files.remove('dir with space/ß 😀.txt')
    assert.equal(await sbx.files.exists('dir with space/ß 😀.txt'), false)
  })
})

test('idempotent operations', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.remove('never/was/here')
    assert.equal(await sbx.files.makeDir('made'), true)
    assert.equal(await sbx.files.makeDir('made'), false)
    await sbx.files.write('file', 'x')
    await assert.rejects(sbx.files.makeDir('file'), InvalidArgumentError)
    await assert.rejects(sbx.files.list('made', { depth: 0 }), InvalidArgumentError)
  })
})

test('written files belong to user', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.makeDir('d')
    await sbx.files.write('d/a', 'x')
    const result = await sbx.commands.run('mv d/a d/b && cat d/b')
    assert.equal(result.stdout, 'x')
    const info = await sbx.files.getInfo('d/b')
    assert.equal(info.owner, 'user')
    assert.equal(info.permissions, 'rw-r--r--')
    assert.ok(info.modifiedTime instanceof Date)
  })
})

test('list depth and entry fields', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.write([
      { path: 'tree/a.txt', data: 'a' },
      { path: 'tree/sub/b.bin', data: new Uint8Array([1, 2, 3]) },
    ])
    await sbx.commands.run('ln -s a.txt tree/link')
    const shallow = await sbx.files.list('tree')
    assert.deepEqual(
      shallow.map((entry) => [entry.name, entry.type]),
      [
        ['a.txt', FileType.FILE],
        ['link', FileType.SYMLINK],
        ['sub', FileType.DIR],
      ],
    )
    assert.equal(shallow[1].symlinkTarget, 'a.txt')
    const deep = await sbx.files.list('tree', { depth: 2 })
    assert.deepEqual(
      deep.map((entry) => entry.path),
      ['/home/user/tree/a.txt', '/home/user/tree/link', '/home/user/tree/sub', '/home/user/tree/sub/b.bin'],
    )
    assert.equal(deep[3].size, 3)
  })
})

test('missing file and permission errors', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    const missing = await sbx.files.read('nope.txt').catch((e) => e)
    assert.ok(missing instanceof FileNotFoundError, `expected FileNotFoundError, got ${missing}`)
    assert.ok(missing instanceof NotFoundError)
    assert.equal(missing.code, 'FILE_NOT_FOUND')
    assert.equal(missing.errno, 2)
    assert.match(missing.message, /nope\.txt/)
    const denied = await sbx.files.write('/root/secret', 'x').catch((e) => e)
    assert.ok(denied instanceof SandboxError)
    assert.equal(denied.code, 'PERMISSION_DENIED')
    await sbx.files.write('/root/allowed', 'x', { user: 'root' })
    assert.equal(await sbx.files.read('/root/allowed', { user: 'root' }), 'x')
    await assert.rejects(sbx.files.read('x', { format: 'json' }), InvalidArgumentError)
    const numberError = await sbx.files.write('x', 42).catch((e) => e)
    assert.ok(numberError instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${numberError}`)
    // The message names the value and every type that `write` takes.
    assert.match(numberError.message, /^data must be .*a Blob or a ReadableStream, not 42$/)
    const objectError = await sbx.files.write([{ path: 'x', data: { text: 'x' } }]).catch((e) => e)
    assert.match(objectError.message, /^files\[0\]\.data must be .*a Blob or a ReadableStream, not an object$/)
  })
})

test('invalid utf8 text read', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.write('bad', new Uint8Array([0x61, 0xff, 0x62, 0xe2, 0x82]))
    assert.equal(await sbx.files.read('bad'), 'a\uFFFDb\uFFFD')
  })
})

test('watch reports relative events', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.makeDir('w')
    const events = []
    let exited = false
    const watch = await sbx.files.watchDir('w', (event) => events.push(`${event.type} ${event.name}`), {
      recursive: true,
      onExit: () => {
        exited = true
      },
    })
    // The watch misses what is made inside a new directory before it
    // covers that directory, so the files come once a/b is watched.
    await sbx.commands.run('mkdir -p w/a/b')
    const directoryCreated = `${FilesystemEventType.CREATE} a/b`
    assert.ok(
      await eventually(() => events.includes(directoryCreated)),
      `events: ${events.join(', ')}`,
    )
    await sbx.commands.run('cd w && echo x > a/b/f && mv a/b/f a/b/g && chmod 600 a/b/g && rm a/b/g')
    const last = `${FilesystemEventType.REMOVE} a/b/g`
    assert.ok(await eventually(() => events.includes(last)), `events: ${events.join(', ')}`)
    for (const expected of ['create a', 'write a/b/f', 'rename a/b/f', 'create a/b/g', 'chmod a/b/g']) {
      assert.ok(events.includes(expected), `missing ${expected} in ${events.join(', ')}`)
    }
    await watch.stop()
    assert.equal(exited, true, 'onExit runs when the watch stops')
    const count = events.length
    await sbx.commands.run('touch w/after')
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.equal(events.length, count, 'no event after stop')
  })
})

test('watch rejects missing and file', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await assert.rejects(sbx.files.watchDir('missing', () => {}), NotFoundError)
    await sbx.files.write('plain', 'x')
    await assert.rejects(sbx.files.watchDir('plain', () => {}), InvalidArgumentError)
  })
})

test('watch ends with sandbox', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.makeDir('w')
    let exitError = null
    await sbx.files.watchDir('w', () => {}, {
      onExit: (error) => {
        exitError = error
      },
    })
    await sbx.kill()
    assert.ok(await eventually(() => exitError !== null, 3000), 'onExit runs at the sandbox end')
    assert.equal(exitError.code, 'SANDBOX_NOT_RUNNING')
  })
})

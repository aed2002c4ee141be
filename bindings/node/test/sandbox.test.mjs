// Sandboxes through the Node API: create, timeouts, kill, garbage
// collection, sandboxes across handles, and limits.

import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative as relativePath } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import * as esm from 'soulbox'
import Sandbox, { InvalidArgumentError, SandboxNotFoundError } from 'soulbox'
import {
  eventually,
  hostProcessesOf,
  leftoverCgroups,
  requireRoot,
  withSandbox,
} from './helpers.mjs'

test('CommonJS and ESM share classes', () => {
  const cjs = createRequire(import.meta.url)('soulbox')
  assert.equal(cjs.Sandbox, esm.Sandbox)
  assert.equal(cjs.CommandExitError, esm.CommandExitError)
  assert.equal(esm.default, esm.Sandbox)
  for (const name of [
    'SandboxError',
    'TimeoutError',
    'InvalidArgumentError',
    'NotEnoughSpaceError',
    'NotFoundError',
    'FileNotFoundError',
    'SandboxNotFoundError',
    'CommandExitError',
  ]) {
    assert.equal(typeof esm[name], 'function', `${name} is exported`)
    assert.equal(new esm[name]({ error: 'x' }).name, name)
  }
})

test('kill removes every trace', async (t) => {
  if (!requireRoot(t)) return
  const sbx = await Sandbox.create()
  assert.match(sbx.sandboxId, /^sb-/)
  assert.equal((await sbx.commands.run('hostname')).stdout, `${sbx.sandboxId}\n`)
  assert.equal(await sbx.isRunning(), true)
  assert.ok(leftoverCgroups(sbx.sandboxId).length > 0, 'a live sandbox has cgroups')
  await sbx.kill()
  await sbx.kill()
  assert.equal(await sbx.isRunning(), false)
  assert.deepEqual(leftoverCgroups(sbx.sandboxId), [])
  assert.deepEqual(hostProcessesOf(sbx.sandboxId), [])
  const error = await sbx.commands.run('true').catch((e) => e)
  assert.ok(error instanceof SandboxNotFoundError, `expected SandboxNotFoundError, got ${error}`)
  assert.equal(error.code, 'SANDBOX_NOT_RUNNING')
  await assert.rejects(sbx.files.read('x'), SandboxNotFoundError)
})

test('collected handles release resources', async (t) => {
  if (!requireRoot(t)) return
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc')
  const openFds = () => readdirSync('/proc/self/fd').length
  // A first sandbox sets up what the process keeps for its whole life
  // (the async runtime), so that only handles count.
  await withSandbox({}, (sbx) => sbx.commands.run('true'))
  const before = openFds()
  // The handles are only reachable inside this function, so they are
  // garbage once it returns. The sandboxes themselves run on, as on E2B.
  const count = 5
  const ids = await (async () => {
    const made = []
    for (let i = 0; i < count; i++) {
      const sbx = await Sandbox.create({ timeoutMs: 60_000 })
      await sbx.commands.run('echo x')
      made.push(sbx.sandboxId)
    }
    return made
  })()
  for (const id of ids) {
    assert.ok(hostProcessesOf(id).length > 0, `sandbox ${id} runs on without its handle`)
  }
  for (const id of ids) {
    assert.equal(await Sandbox.kill(id), true)
    assert.deepEqual(leftoverCgroups(id), [])
    assert.deepEqual(hostProcessesOf(id), [])
  }
  // Each live handle keeps at least 3 descriptors open: PID 1's pidfd,
  // the control socket and the root directory. V8 may keep the newest
  // object for a while, and SoulBox's reaper thread keeps an epoll
  // descriptor, so up to 4 may stay open. 5 uncollected handles would
  // keep 15.
  let left
  const released = await eventually(async () => {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    left = openFds() - before
    return left <= 4
  }, 10_000)
  assert.ok(released, `${left} descriptors stayed open after collection`)
})

test('connect list and kill by id', async (t) => {
  if (!requireRoot(t)) return
  const label = `node-${process.pid}-${Date.now()}`
  const sbx = await Sandbox.create({ metadata: { suite: label }, envs: { E: '1' } })
  try {
    const other = await Sandbox.connect(sbx.sandboxId)
    assert.equal(other.sandboxId, sbx.sandboxId)
    assert.equal((await other.commands.run('echo $E; hostname')).stdout, `1\n${sbx.sandboxId}\n`)
    const listed = await Sandbox.list({ query: { metadata: { suite: label } } })
    assert.deepEqual(
      listed.map((info) => info.sandboxId),
      [sbx.sandboxId],
    )
    const info = await Sandbox.getInfo(sbx.sandboxId)
    assert.equal(info.templateId, 'host')
    assert.deepEqual(info.metadata, { suite: label })
    assert.deepEqual(info.envs, { E: '1' })
    assert.equal(info.state, 'running')
    assert.ok(info.startedAt instanceof Date)
    const leftMs = info.endAt.getTime() - Date.now()
    assert.ok(leftMs > 250_000, `${leftMs} ms left of the 300 s default`)
    assert.ok(leftMs <= 300_000, `${leftMs} ms left of the 300 s default`)
    assert.equal(info.memoryMB, 2048)
    await Sandbox.setTimeout(sbx.sandboxId, 60_000)
    const shorter = (await sbx.getInfo()).endAt.getTime() - Date.now()
    assert.ok(shorter <= 60_000, `${shorter} ms left after setTimeout(60 000)`)
    assert.equal(await Sandbox.kill(sbx.sandboxId), true)
    assert.equal(await Sandbox.kill(sbx.sandboxId), false)
    const missing = await Sandbox.connect(sbx.sandboxId).catch((e) => e)
    assert.ok(missing instanceof SandboxNotFoundError, `expected SandboxNotFoundError, got ${missing}`)
    assert.equal(missing.code, 'SANDBOX_NOT_FOUND')
    assert.deepEqual(await Sandbox.list({ query: { metadata: { suite: label } } }), [])
  } finally {
    await sbx.kill()
  }
})

test('info shows create options', async (t) => {
  if (!requireRoot(t)) return
  const label = `node-${process.pid}-${Date.now()}`
  const network = { allowOut: ['192.0.2.1'], denyOut: ['192.0.2.0/24'] }
  const lifecycle = { onTimeout: 'pause', autoResume: true }
  const configured = await Sandbox.create({
    metadata: { suite: label },
    allowInternetAccess: true,
    network: { allowOut: ['192.0.2.1'], denyOut: ['192.0.2.0/24'] },
    lifecycle: { onTimeout: 'pause', autoResume: true },
  })
  try {
    await withSandbox({ metadata: { suite: label } }, async (plain) => {
      const listed = await Sandbox.list({ query: { metadata: { suite: label } } })
      assert.deepEqual(
        listed.map((info) => info.sandboxId),
        [configured.sandboxId, plain.sandboxId],
      )
      for (const info of [await configured.getInfo(), await Sandbox.getInfo(configured.sandboxId), listed[0]]) {
        assert.equal(info.allowInternetAccess, true)
        assert.deepEqual(info.network, network)
        assert.deepEqual(info.lifecycle, lifecycle)
      }
      for (const info of [await plain.getInfo(), listed[1]]) {
        assert.equal(info.allowInternetAccess, false)
        assert.equal(info.network, undefined)
        assert.deepEqual(info.lifecycle, { onTimeout: 'kill', autoResume: false })
      }
    })
  } finally {
    await configured.kill()
  }
})

test('info shows deny-only network', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ network: { denyOut: ['198.51.100.0/24'] }, lifecycle: { onTimeout: 'pause' } }, async (sbx) => {
    const info = await sbx.getInfo()
    assert.equal(info.allowInternetAccess, true, 'network implies internet access')
    assert.deepEqual(info.network, { allowOut: [], denyOut: ['198.51.100.0/24'] })
    assert.deepEqual(info.lifecycle, { onTimeout: 'pause', autoResume: false })
  })
})

test('pause resume and metrics', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    assert.equal(await sbx.pause(), true)
    assert.equal(await sbx.pause(), false)
    const paused = await sbx.getInfo()
    assert.equal(paused.state, 'paused')
    assert.equal(paused.endAt, undefined)
    const listed = await Sandbox.list({ query: { state: ['paused'] } })
    assert.ok(listed.some((info) => info.sandboxId === sbx.sandboxId))
    assert.equal(await sbx.connect(), sbx)
    assert.equal((await sbx.getInfo()).state, 'running')
    assert.equal(await sbx.betaPause(), true)
    assert.equal((await sbx.getInfo()).state, 'paused')
    await sbx.connect()
    assert.equal((await sbx.getInfo()).state, 'running')
    assert.equal((await sbx.commands.run('echo thawed')).stdout, 'thawed\n')
    const [metrics] = await sbx.getMetrics()
    assert.ok(metrics.timestamp instanceof Date)
    assert.ok(metrics.cpuCount > 0)
    assert.equal(metrics.memTotal, 2 ** 31)
    assert.ok(metrics.memUsed > 0)
    assert.ok(metrics.diskTotal > 0)
    const [byId] = await Sandbox.getMetrics(sbx.sandboxId)
    assert.equal(byId.diskTotal, metrics.diskTotal)
    await assert.rejects(Sandbox.list({ query: { state: ['frozen'] } }), InvalidArgumentError)
  })
})

test('sandbox timeout ends it', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ timeoutMs: 60_000 }, async (sbx) => {
    await sbx.setTimeout(500)
    assert.ok(await eventually(async () => !(await sbx.isRunning()), 5000))
    await assert.rejects(sbx.commands.run('true'), SandboxNotFoundError)
  })
})

test('create options checked', async (t) => {
  if (!requireRoot(t)) return
  const cases = [
    [() => Sandbox.create({ timeoutMs: -5 }), /timeoutMs/],
    [() => Sandbox.create({ envs: { A: 2 } }), /envs\.A/],
    [() => Sandbox.create({ metadata: 'x' }), /metadata/],
    [() => Sandbox.create({ memoryLimit: -1 }), /memoryLimit/],
    [() => Sandbox.create({ memoryLimit: 1 << 20 }), /memory_limit/],
    [() => Sandbox.create('base'), /template "base"/],
    [() => Sandbox.create(7), /opts must be an object/],
    [() => Sandbox.create({ allowInternetAccess: 'yes' }), /allowInternetAccess/],
    [() => Sandbox.create({ network: { allowPublicTraffic: false } }), /allowPublicTraffic/],
    [() => Sandbox.create({ lifecycle: 'pause' }), /lifecycle must be an object/],
    [() => Sandbox.create({ lifecycle: { onTimeout: 'stop' } }), /lifecycle\.onTimeout must be 'kill' or 'pause', not "stop"/],
    [() => Sandbox.create({ lifecycle: { on_timeout: 'pause' } }), /unknown key "on_timeout"/],
    [() => Sandbox.create({ lifecycle: { onTimeout: 'pause', autoResume: 1 } }), /lifecycle\.autoResume must be a boolean/],
    [() => Sandbox.create({ lifecycle: { autoResume: true } }), /valid only with lifecycle\.onTimeout 'pause'/],
    [() => Sandbox.create({ mcp: {} }), /mcp/],
    [() => Sandbox.create({ volumeMounts: {} }), /volumeMounts/],
  ]
  for (const [create, message] of cases) {
    const error = await create().catch((e) => e)
    assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`)
    assert.match(error.message, message)
  }
  await withSandbox({ timeoutMs: 0, metadata: { owner: 'tests' }, allowInternetAccess: false }, async (sbx) => {
    assert.equal(await sbx.isRunning(), true)
  })
  const named = await Sandbox.create('host', { envs: { NAMED: 'yes' } })
  try {
    assert.equal((await named.commands.run('echo $NAMED')).stdout, 'yes\n')
  } finally {
    await named.kill()
  }
})

test('host directories mounted read-only and writable', async (t) => {
  if (!requireRoot(t)) return
  const dir = mkdtempSync(join(tmpdir(), 'soulbox-mounts-'))
  try {
    mkdirSync(join(dir, 'in'))
    writeFileSync(join(dir, 'in', 'data.txt'), 'from the host\n')
    mkdirSync(join(dir, 'out'))
    chmodSync(join(dir, 'out'), 0o777)
    const mounts = [
      { source: relativePath(process.cwd(), join(dir, 'in')), target: '/home/user/in' },
      { source: join(dir, 'out'), target: '/home/user/out', writable: true },
    ]
    await withSandbox({ mounts }, async (sbx) => {
      assert.equal((await sbx.commands.run('cat in/data.txt')).stdout, 'from the host\n')
      await sbx.commands.run('echo written > out/result.txt')
      const error = await sbx.commands.run('touch in/new').catch((e) => e)
      assert.ok(error instanceof esm.CommandExitError, `expected CommandExitError, got ${error}`)
      assert.match(error.stderr, /Read-only/)
    })
    assert.deepEqual(readdirSync(join(dir, 'out')), ['result.txt'])
    const cases = [
      [{ mounts: 'in:/in' }, /mounts must be an array/],
      [{ mounts: [{ source: dir }] }, /mounts\[0\]\.target/],
      [{ mounts: [{ source: dir, target: '/proc/x' }] }, /\/proc, \/sys or \/dev/],
    ]
    for (const [opts, message] of cases) {
      const error = await Sandbox.create(opts).catch((e) => e)
      assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${error}`)
      assert.match(error.message, message)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('out of memory reported', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ memoryLimit: 256 << 20 }, async (sbx) => {
    const hog = "python3 -c 'import mmap; m = mmap.mmap(-1, 1 << 30); m[::4096] = b\"x\" * (1 << 18)'"
    const started = Date.now()
    const error = await sbx.commands.run(hog, { timeoutMs: 30_000 }).catch((e) => e)
    assert.ok(error instanceof esm.CommandExitError, `expected CommandExitError, got ${error}`)
    assert.ok(Date.now() - started < 20_000, 'the kill should come quickly')
    assert.equal(error.oomKilled, true)
    assert.equal(error.exitCode, 128 + 9)
    assert.match(error.error, /out of memory/)
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n')
  })
})

test('fork bomb contained', async (t) => {
  if (!requireRoot(t)) return
  const bombed = await Sandbox.create({ pidsLimit: 64 })
  try {
    await withSandbox({}, async (bystander) => {
      const bomb = await bombed.commands.run(':(){ :|:& };:', { background: true })
      await new Promise((resolve) => setTimeout(resolve, 2000))
      const other = await bystander.commands.run("sh -c 'echo from-child'")
      assert.equal(other.stdout, 'from-child\n', 'another sandbox must still fork')
      await bomb.kill()
    })
  } finally {
    await bombed.kill()
  }
  assert.deepEqual(leftoverCgroups(bombed.sandboxId), [])
  assert.deepEqual(hostProcessesOf(bombed.sandboxId), [])
})

test('directory template', async (t) => {
  if (!requireRoot(t)) return
  const base = mkdtempSync(join(tmpdir(), 'soulbox-node-template-'))
  const root = join(base, 'rootfs')
  try {
    // /bin/sh and the libraries it loads, at the same paths.
    const listed = execFileSync('ldd', ['/bin/sh'], { encoding: 'utf8' })
    const libraries = listed.split(/\s+/).filter((word) => word.startsWith('/'))
    for (const file of ['/bin/sh', ...libraries]) {
      mkdirSync(join(root, dirname(file)), { recursive: true })
      copyFileSync(file, join(root, file))
      chmodSync(join(root, file), 0o755)
    }
    mkdirSync(join(root, 'srv'))
    writeFileSync(join(root, 'srv', 'marker'), 'from the directory\n')
    const relative = `./${relativePath(process.cwd(), root)}`
    for (const template of [root, relative]) {
      const sbx = await Sandbox.create(template, { timeoutMs: 60_000 })
      try {
        const result = await sbx.commands.run('read line < /srv/marker; echo $line; [ -e /usr/bin/node ] || echo no-node')
        assert.equal(result.stdout, 'from the directory\nno-node\n')
        assert.equal((await sbx.getInfo()).templateId, root)
      } finally {
        await sbx.kill()
      }
    }
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
})

test('built template by name and folder', async (t) => {
  if (!requireRoot(t)) return
  // The `soulbox` command builds; `cargo build -p soulbox-cli` makes it.
  const soulbox = join(dirname(new URL(import.meta.url).pathname), '..', '..', '..', 'target', 'debug', 'soulbox')
  const base = mkdtempSync(join(tmpdir(), 'soulbox-node-built-'))
  const previousCache = process.env.SOULBOX_LAYER_CACHE
  process.env.SOULBOX_LAYER_CACHE = join(base, 'cache')
  try {
    const folder = join(base, 'app')
    mkdirSync(folder)
    writeFileSync(
      join(folder, 'soulbox.toml'),
      'env = { FROM_TEMPLATE = "yes" }\nrun = ["echo built > /home/user/built.txt"]\n',
    )
    const name = `node-${process.pid}-${Date.now()}`
    execFileSync(soulbox, ['template', 'build', '--quiet', '--name', name, folder], { stdio: 'pipe' })
    for (const template of [name, folder]) {
      const sbx = await Sandbox.create(template, { timeoutMs: 60_000 })
      try {
        const result = await sbx.commands.run('cat /home/user/built.txt; echo $FROM_TEMPLATE')
        assert.equal(result.stdout, 'built\nyes\n')
      } finally {
        await sbx.kill()
      }
    }
    const missing = await Sandbox.create('no-such-built-template').catch((e) => e)
    assert.ok(missing instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${missing}`)
    assert.match(missing.message, /soulbox template build/)
  } finally {
    if (previousCache === undefined) {
      delete process.env.SOULBOX_LAYER_CACHE
    } else {
      process.env.SOULBOX_LAYER_CACHE = previousCache
    }
    rmSync(base, { recursive: true, force: true })
  }
})

/** Returns a 512-byte ustar header for `name`. */
function tarHeader(name, size, type, linkname = '') {
  const header = Buffer.alloc(512)
  const field = (text, offset, length) => header.write(text, offset, length, 'utf8')
  const octal = (value, offset, length) => field(value.toString(8).padStart(length - 1, '0'), offset, length - 1)
  field(name, 0, 100)
  octal(0o755, 100, 8)
  octal(0, 108, 8)
  octal(0, 116, 8)
  octal(size, 124, 12)
  octal(1_700_000_000, 136, 12)
  header.fill(' ', 148, 156)
  field(type, 156, 1)
  field(linkname, 157, 100)
  field('ustar\u000000', 257, 8)
  let sum = 0
  for (const byte of header) sum += byte
  field(sum.toString(8).padStart(6, '0') + '\u0000 ', 148, 8)
  return header
}

/** Returns a tar stream of `entries`: [name, data] files, [name] directories, [name, null, target] links. */
function tarOf(entries) {
  const parts = []
  for (const [name, data, target] of entries) {
    if (target !== undefined) {
      parts.push(tarHeader(name, 0, '2', target))
    } else if (data === undefined) {
      parts.push(tarHeader(name, 0, '5'))
    } else {
      parts.push(tarHeader(name, data.length, '0'), data, Buffer.alloc((512 - (data.length % 512)) % 512))
    }
  }
  parts.push(Buffer.alloc(1024))
  return Buffer.concat(parts)
}

test('image template by relative path', async (t) => {
  if (!requireRoot(t)) return
  const base = mkdtempSync(join(tmpdir(), 'soulbox-node-image-'))
  const previousCache = process.env.SOULBOX_LAYER_CACHE
  process.env.SOULBOX_LAYER_CACHE = join(base, 'layers')
  try {
    const sha256 = (data) => createHash('sha256').update(data).digest('hex')
    const layers = [
      tarOf([['bin'], ['bin/busybox', readFileSync('/bin/busybox')], ['bin/sh', null, 'busybox'], ['bin/cat', null, 'busybox']]),
      tarOf([['srv'], ['srv/marker', Buffer.from(`from the image ${process.pid} ${Date.now()}\n`)]]),
    ]
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['FROM_IMAGE=yes'], WorkingDir: '/srv' },
      rootfs: { type: 'layers', diff_ids: layers.map((layer) => `sha256:${sha256(layer)}`) },
    }))
    const members = layers.map((layer) => [`${sha256(layer)}/layer.tar`, layer])
    members.push([`${sha256(config)}.json`, config])
    const manifest = [{ Config: `${sha256(config)}.json`, RepoTags: ['node:1'], Layers: members.slice(0, 2).map(([name]) => name) }]
    members.push(['manifest.json', Buffer.from(JSON.stringify(manifest))])
    const archive = join(base, 'image.tar')
    writeFileSync(archive, tarOf(members))

    const relative = `./${relativePath(process.cwd(), archive)}`
    for (const [template, expected] of [[relative, archive], [`${relative}:node:1`, `${archive}:node:1`]]) {
      const sbx = await Sandbox.create(template, { timeoutMs: 60_000, envs: { FROM_SANDBOX: 'yes' } })
      try {
        const result = await sbx.commands.run('cat marker; echo $FROM_IMAGE $FROM_SANDBOX')
        assert.match(result.stdout, /^from the image .*\nyes yes\n$/)
        assert.equal((await sbx.getInfo()).templateId, expected)
      } finally {
        await sbx.kill()
      }
    }
  } finally {
    if (previousCache === undefined) {
      delete process.env.SOULBOX_LAYER_CACHE
    } else {
      process.env.SOULBOX_LAYER_CACHE = previousCache
    }
    rmSync(base, { recursive: true, force: true })
  }
})

test('lifecycle pauses at the timeout and auto-resumes', async (t) => {
  if (!requireRoot(t)) return
  const sbx = await Sandbox.create({ timeoutMs: 1000, lifecycle: { onTimeout: 'pause', autoResume: true } })
  try {
    const deadline = Date.now() + 6000
    while ((await sbx.getInfo()).state !== 'paused') {
      assert.ok(Date.now() < deadline, 'not paused 5 s after the timeout')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.equal(await sbx.isRunning(), true)
    assert.equal((await sbx.commands.run('echo awake')).stdout, 'awake\n')
    assert.equal((await sbx.getInfo()).state, 'running')
  } finally {
    await sbx.kill()
  }
})

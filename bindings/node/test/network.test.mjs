// Internet access: allowInternetAccess: true gives the sandbox
// slirp4netns's tap device and DNS address. These tests only look at the
// device, the route and /etc/resolv.conf; no packet leaves the sandbox.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { requireRoot, withSandbox } from './helpers.mjs'

test('allowInternetAccess brings the tap device up', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({ allowInternetAccess: true }, async (sbx) => {
    const address = await sbx.commands.run('ip -o -4 addr show dev eth0')
    assert.match(address.stdout, /inet 10\.0\.2\.100\/24/)
    const route = await sbx.commands.run('ip route show default')
    assert.match(route.stdout, /default via 10\.0\.2\.2 dev eth0/)
    const resolvConf = await sbx.files.read('/etc/resolv.conf')
    assert.match(resolvConf, /\nnameserver 10\.0\.2\.3\n/)
  })
})

test('default network is loopback only', async (t) => {
  if (!requireRoot(t)) return
  // E2B's default is internet access; SoulBox's is loopback only.
  for (const opts of [{}, { allowInternetAccess: false }]) {
    await withSandbox(opts, async (sbx) => {
      const devices = await sbx.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
      assert.equal(devices.stdout, 'lo\n', JSON.stringify(opts))
    })
  }
})

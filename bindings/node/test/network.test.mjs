// Internet access: allowInternetAccess: true gives the sandbox
// slirp4netns's tap device and DNS address. These tests only look at the
// device, the route and /etc/resolv.conf; no packet leaves the sandbox.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { ALL_TRAFFIC, InvalidArgumentError, Sandbox } from 'soulbox'

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

test('network rules imply internet access', async (t) => {
  if (!requireRoot(t)) return
  const network = { denyOut: [ALL_TRAFFIC], allowOut: ['192.0.2.0/24'] }
  await withSandbox({ network }, async (sbx) => {
    const rules = await sbx.commands.run('ip -4 rule show')
    assert.match(rules.stdout, /100:\tfrom all to 192\.0\.2\.0\/24 lookup main/)
    assert.match(rules.stdout, /200:\tfrom all prohibit/)
    // Route lookups only: no packet leaves the sandbox.
    const allowed = await sbx.commands.run('ip -4 route get 192.0.2.1')
    assert.match(allowed.stdout, /^192\.0\.2\.1 via 10\.0\.2\.2 dev eth0/)
    const denied = await sbx.commands.run('ip -4 route get 203.0.113.1 2>&1 || true')
    assert.match(denied.stdout, /Permission denied/)
  })
})

test('ALL_TRAFFIC is every IPv4 address', () => {
  assert.equal(ALL_TRAFFIC, '0.0.0.0/0')
})

test('network with allowInternetAccess false is rejected', async () => {
  await assert.rejects(
    Sandbox.create({ allowInternetAccess: false, network: { denyOut: [ALL_TRAFFIC] } }),
    (error) => error instanceof InvalidArgumentError && /allowInternetAccess: false/.test(error.message),
  )
})

test('invalid network options are rejected', async () => {
  const cases = [
    ['0.0.0.0/0', /network must be an object, not "0\.0\.0\.0\/0"/],
    [{ allowOut: '192.0.2.1' }, /network\.allowOut must be an array/],
    [{ denyOut: [3232235777] }, /network\.denyOut\[0\] must be a string/],
    [{ allow_out: [] }, /network\.allow_out is an unknown option/],
    [{ allowPublicTraffic: false }, /network\.allowPublicTraffic is not implemented yet/],
    [{ allowOut: ['example.com'] }, /allow_out entry "example\.com" is a domain name/],
    [{ denyOut: ['::/0'] }, /deny_out entry "::\/0" is an IPv6/],
    [{ denyOut: ['10.1.2.3/16'] }, /host bits set \(0\.0\.2\.3 .*use 10\.1\.0\.0\/16/],
  ]
  for (const [network, message] of cases) {
    await assert.rejects(
      Sandbox.create({ network }),
      (error) => error instanceof InvalidArgumentError && message.test(error.message),
      JSON.stringify(network),
    )
  }
})

// Port forwarding through getHost: a server on the sandbox's loopback,
// reached from Node through the returned address on the host's loopback.
// Every connection goes to 127.0.0.1 only.

import assert from 'node:assert/strict'
import http from 'node:http'
import { test } from 'node:test'

import { requireRoot, withSandbox } from './helpers.mjs'

/** Sends a GET request for `url` and resolves with the status and body. */
function fetchPage(url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: 10_000 }, (response) => {
      const chunks = []
      response.on('data', (chunk) => chunks.push(chunk))
      response.on('error', reject)
      response.on('end', () => {
        resolve({ status: response.statusCode, body: Buffer.concat(chunks).toString() })
      })
    })
    request.on('timeout', () => request.destroy(new Error(`no response from ${url} within 10 s`)))
    request.on('error', reject)
  })
}

/**
 * Fetches `url` until a response arrives, for up to 20 s: until the
 * sandbox's server listens, each connection is reset.
 */
async function fetchWhenUp(url) {
  const deadline = Date.now() + 20_000
  for (;;) {
    try {
      return await fetchPage(url)
    } catch (error) {
      if (Date.now() > deadline) {
        throw error
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

test('getHost reaches http server', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    await sbx.files.write('hello.txt', 'hello from the sandbox')
    const server = await sbx.commands.run('python3 -m http.server 8000 --bind 127.0.0.1', {
      background: true,
    })
    const host = sbx.getHost(8000)
    assert.match(host, /^127\.0\.0\.1:\d+$/)
    const page = await fetchWhenUp(`http://${host}/hello.txt`)
    assert.equal(page.status, 200)
    assert.equal(page.body, 'hello from the sandbox')
    assert.equal(sbx.getHost(8000), host, 'a second call for the port returns the same address')

    const missing = await fetchPage(`http://${host}/missing.txt`)
    assert.equal(missing.status, 404)

    // Nothing listens on 8001 in the sandbox, so the connection is reset.
    const unused = sbx.getHost(8001)
    assert.notEqual(unused, host)
    await assert.rejects(fetchPage(`http://${unused}/`), { code: 'ECONNRESET' })
    await server.kill()
  })
})

test('getHost rejects invalid ports', async (t) => {
  if (!requireRoot(t)) return
  await withSandbox({}, async (sbx) => {
    for (const port of [0, -1, 65536, 80.5, Number.NaN, Infinity, '8000', undefined]) {
      assert.throws(
        () => sbx.getHost(port),
        { name: 'InvalidArgumentError', code: 'INVALID_ARGUMENT', message: /port/ },
        `port ${String(port)}`,
      )
    }
    await sbx.kill()
    assert.throws(() => sbx.getHost(8000), { name: 'SandboxNotFoundError', code: 'SANDBOX_NOT_RUNNING' })
  })
})

// Helpers shared by the Node test suite. Every test creates real
// sandboxes, which needs root: without root a test is skipped with the
// reason, except under CI (CI=true), where CI runs as root and a skip
// fails the run.

import { readdirSync, readFileSync, existsSync } from 'node:fs'
import { Sandbox } from 'soulbox'

/** Skips the test without root, or fails it under CI. Returns whether it may run. */
export function requireRoot(t) {
  if (process.geteuid() === 0) {
    return true
  }
  const reason = `creating sandboxes needs root (euid ${process.geteuid()})`
  if (process.env.CI) {
    throw new Error(`${reason}; CI must run every test as root`)
  }
  t.skip(reason)
  return false
}

/** Creates a sandbox, runs `body` with it and kills it, whatever happens. */
export async function withSandbox(opts, body) {
  const sbx = await Sandbox.create(opts)
  try {
    return await body(sbx)
  } finally {
    await sbx.kill()
  }
}

/** Cgroup directories of sandbox `id` that still exist on the host. */
export function leftoverCgroups(id) {
  return readdirSync('/sys/fs/cgroup')
    .map((hierarchy) => `/sys/fs/cgroup/${hierarchy}/soulbox/${id}`)
    .filter((dir) => existsSync(dir))
}

/**
 * Host pids of live processes whose cgroup path names sandbox `id`: the
 * sandbox's processes, seen from the host. Zombies are left out: a killed
 * sandbox's PID 1 stays one, holding nothing but its pid, until the handle
 * that created it is collected, when SoulBox reaps it.
 */
export function hostProcessesOf(id) {
  const pids = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue
    }
    try {
      const inSandbox = readFileSync(`/proc/${entry}/cgroup`, 'utf8').includes(`/soulbox/${id}`)
      // The state is the first field after the parenthesised name.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
      if (inSandbox && state !== 'Z') {
        pids.push(Number(entry))
      }
    } catch {
      // The process exited while the scan ran.
    }
  }
  return pids
}

/** Counts processes named `name` inside the sandbox. */
export async function countProcesses(sbx, name) {
  const script = `for f in /proc/[0-9]*/comm; do cat "$f"; done 2>/dev/null | grep -cx '${name}' || true`
  const result = await sbx.commands.run(script, { user: 'root' })
  return Number(result.stdout.trim())
}

/** Polls `probe` until it returns true or `timeoutMs` passes. */
export async function eventually(probe, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await probe()) {
      return true
    }
    if (Date.now() > deadline) {
      return false
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

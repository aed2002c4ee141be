// Types of the ES module entry point: the same exports as index.d.ts, and
// Sandbox as the default export.
import { Sandbox } from './index.js'

export * from './index.js'
export default Sandbox

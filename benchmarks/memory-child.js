/**
 * One run of the memory workload in a process of its own: `node memory-child.js <impl> <n>`.
 * Prints one JSON line: `{ impl, n, count, sum, maxRssMB, ms }`. It loads stageline only when it
 * measures stageline, and the implementations load their own library, so the peak RSS is theirs.
 * @module
 */
import { pathToFileURL } from 'node:url'
import { MEMORY_IMPLS } from './memory.js'

const [name, size] = process.argv.slice(2)
const impl = MEMORY_IMPLS.find((i) => i.name === name)
const n = Number(size)
if (impl === undefined || !Number.isInteger(n) || n < 1) {
  const names = MEMORY_IMPLS.map((i) => i.name).join(', ')
  console.error(`usage: node memory-child.js <${names}> <items>; got ${name} ${size}`)
  process.exit(2)
}
// the runner passes its snapshot of dist/ (see run.js)
const dist = process.env.STAGELINE_DIST ? pathToFileURL(process.env.STAGELINE_DIST).href : '../dist/index.js'
const sl = impl.role === 'stageline' ? await import(dist) : undefined
const t0 = performance.now()
const r = await impl.run(n, sl)
const ms = performance.now() - t0
const maxRssMB = process.resourceUsage().maxRSS / 1024
console.log(JSON.stringify({ impl: name, n, count: r.count, sum: r.sum, maxRssMB, ms }))

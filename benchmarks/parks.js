/**
 * `node benchmarks/parks.js [dist ...] [--workers N] [--runs R] [--items N]`: how often a worker
 * parks per item in three `stage()` generator stages, counted, not timed.
 *
 * A park is a worker waiting on a queue (its input empty, or the next queue full): a promise and a
 * later wake, the cost that lazy hand-over removes (docs/design.md, "Channels"). The count comes
 * from a copy of each build (default `dist`, the current one) whose `park()` increments a counter,
 * so builds of other commits can be compared: `git worktree add ../stageline-base <commit>`, build
 * it, then `node benchmarks/parks.js ../stageline-base/dist dist --workers 4 --runs 5`.
 * @module
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { intFlag } from './common.js'

const args = process.argv.slice(2)
const dirs = args.filter((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')))
if (dirs.length === 0) dirs.push('dist')
const workers = intFlag(args, 'workers', 1)
const runs = intFlag(args, 'runs', 3)
const items = intFlag(args, 'items', 100_000)

/** Where each layout of the engine parks a party: a method of the waiter, or a function of the queue. */
const PARKS = [
  ['channel/waiter.js', '    park() {'],
  ['queue.js', 'export function park(w) {'],
]
const tmp = mkdtempSync(join(tmpdir(), 'stageline-parks-'))
try {
  for (const [k, dir] of dirs.entries()) {
    const copy = join(tmp, String(k))
    cpSync(resolve(dir), copy, { recursive: true })
    const found = PARKS.find(
      ([f, at]) => existsSync(join(copy, f)) && readFileSync(join(copy, f), 'utf8').includes(at),
    )
    if (found === undefined) throw new Error(`${dir} has no park() to count: not a stageline build`)
    const [f, at] = found
    const file = join(copy, f)
    writeFileSync(file, readFileSync(file, 'utf8').replace(at, `${at} globalThis.__stagelineParks++;`))
    const { pipe, stage } = await import(pathToFileURL(join(copy, 'index.js')).href)
    const inc = () =>
      stage(
        async function* (input) {
          for await (const x of input) yield x + 1
        },
        { workers },
      )
    const counts = []
    for (let r = 0; r < runs; r++) {
      globalThis.__stagelineParks = 0
      let count = 0
      let sum = 0
      for await (const x of pipe(
        Array.from({ length: items }, (_, i) => i),
        inc(),
        inc(),
        inc(),
      ).results()) {
        count++
        sum += x
      }
      if (count !== items || sum !== (items * (items - 1)) / 2 + 3 * items)
        throw new Error(`${dir}: wrong result`)
      counts.push(globalThis.__stagelineParks / items)
    }
    console.log(`${dir}: workers ${workers}, parks per item ${counts.map((c) => c.toFixed(3)).join(' ')}`)
  }
} finally {
  rmSync(tmp, { recursive: true, force: true })
}

/**
 * `node benchmarks/promises.js [--items N]`: promises created per item, counted, not timed.
 *
 * Every promise is an allocation and, when awaited, a trip through the microtask queue, so the
 * count per item is the part of an async pipeline's cost that no amount of tuning inside a loop
 * removes. It explains the overhead targets that are missed (docs/dev/engine-notes.md):
 * a `stage()` runs the very generators the bare chain is made of, plus its hand-off; a `for await`
 * consumer needs at least one promise per item whatever hands it the items.
 *
 * Counted with an async hook on promise creation. An enabled hook makes V8 allocate a promise for
 * each `await` that it otherwise elides, so the counts are higher than what an unhooked run
 * allocates; they are comparable with each other, which is how they are used here.
 * spec/hotpath.spec.ts asserts stageline's counts, so that a change adding promises to the
 * per-item path fails a test instead of only slowing a benchmark down.
 * @module
 */
import { createHook } from 'node:async_hooks'
import { pathToFileURL } from 'node:url'
import { bareChain, consume, range, tallyArray } from './common.js'

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor

/** `async function* (src) { for await (const x of src) yield x + 1 }`, compiled afresh. */
function freshInc() {
  return new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1')
}

let created = 0
let jobs = 0
const hook = createHook({
  init(_id, type) {
    if (type === 'PROMISE') created++
  },
  // called before each promise reaction job: one trip through the microtask queue
  before() {
    jobs++
  },
})

/**
 * Runs `job` (which returns `{ count }`) with the hook on; returns, per item, the promises created
 * and the promise jobs run (each `await` resumed, each `then()` callback called: the microtask
 * queue's work).
 */
export async function countsPerItem(job, n) {
  created = 0
  jobs = 0
  hook.enable()
  let result
  try {
    result = await job()
  } finally {
    hook.disable()
  }
  if (result.count !== n) throw new Error(`expected ${n} items, got ${result.count}`)
  return { promises: created / n, jobs: jobs / n }
}

/** Runs `job` (which returns `{ count }`) with the hook on; returns promises created per item. */
export async function promisesPerItem(job, n) {
  return (await countsPerItem(job, n)).promises
}

/** The cases of the overhead workloads, as `{ label, job(n) }`, over the stageline module `sl`. */
export function promiseCases(sl) {
  const inc = (x) => x + 1
  const incAsync = async (x) => x + 1
  const cases = []
  for (const [kind, fn] of [
    ['sync', inc],
    ['async', incAsync],
  ]) {
    cases.push({
      label: `bare async-generator chain, ${kind} x + 1`,
      job: (n) => consume(bareChain(range(n), [fn, fn, fn], kind === 'sync')),
    })
    for (const workers of [1, 4]) {
      const ms = sl.mapStage(fn, { workers })
      cases.push({
        label: `mapStage() x3 ${kind}, workers ${workers}, for await`,
        job: (n) => consume(sl.pipe(range(n), ms, ms, ms)),
      })
      cases.push({
        label: `mapStage() x3 ${kind}, workers ${workers}, toArray()`,
        job: async (n) => tallyArray(await sl.pipe(range(n), ms, ms, ms).toArray()),
      })
    }
  }
  const g = freshInc()
  cases.push({ label: 'bare async-generator chain, generators', job: (n) => consume(g(g(g(range(n))))) })
  for (const workers of [1, 4]) {
    const st = () => sl.stage(freshInc(), { workers })
    cases.push({
      label: `stage() x3, workers ${workers}, for await`,
      job: (n) => consume(sl.pipe(range(n), st(), st(), st())),
    })
  }
  const one = sl.stage(freshInc())
  const m2 = sl.mapStage(inc, { workers: 2 })
  cases.push({
    label: 'stage() then mapStage() x2 sync, workers 2, toArray()',
    job: async (n) => tallyArray(await sl.pipe(range(n), one, m2, m2).toArray()),
  })
  cases.push({
    label: 'stage() alone, toArray()',
    job: async (n) => tallyArray(await sl.pipe(range(n), one).toArray()),
  })
  cases.push({ label: 'for await over a sync iterable (no stages)', job: (n) => consume(sl.pipe(range(n))) })
  return cases
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--items')
  const n = i > 0 ? Number(process.argv[i + 1]) : 100_000
  if (!Number.isInteger(n) || n < 1) {
    console.error(
      `usage: node benchmarks/promises.js [--items N], N a positive integer; got ${process.argv[i + 1]}`,
    )
    process.exit(2)
  }
  const sl = await import('../dist/index.js')
  console.log(`per item, ${n.toLocaleString('en-US')} items (run \`npm run build\` first)`)
  console.log('promises     jobs  case')
  for (const c of promiseCases(sl)) {
    const { promises, jobs } = await countsPerItem(() => c.job(n), n)
    console.log(`${promises.toFixed(2).padStart(8)} ${jobs.toFixed(2).padStart(8)}  ${c.label}`)
  }
}

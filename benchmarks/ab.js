/**
 * `node benchmarks/ab.js <distA> <distB> [--kind sync|async|gen|genmap|io] [--workers N] [--items N] [--rounds N] [--stats]`
 *
 * A/B of two builds of stageline on one workload, alternating A and B round by round in one
 * process so that drift in the machine's speed hits both alike. The overhead workloads are 3 steps
 * of x + 1 read with `for await` (`sync` and `async` map stages, `gen` generator stages, `genmap` a
 * generator step then 2 sync map steps); `io` is 2 map stages that wait 5 ms (16 workers) then 1 ms
 * (4 workers) per item, 2,000 items by default. `--stats` runs with an `onProgress` callback, so
 * that the stages keep their time accounting. Prints the median of the per-round ratios (B's speed
 * over A's) and the spread between the 20th and 80th percentile; A against itself gives the A/A
 * spread of the measurement. Use it before and after an engine change:
 *
 *   git worktree add ../stageline-base HEAD && (cd ../stageline-base && npm install && npm run build)
 *   npm run build && node benchmarks/ab.js ../stageline-base/dist dist --kind gen --workers 4
 * @module
 */
import { resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import { consume, intFlag, range } from './common.js'

function usage(problem) {
  console.error(
    `${problem}\nusage: node benchmarks/ab.js <distA> <distB> [--kind sync|async|gen|genmap|io] [--workers N] [--items N] [--rounds N] [--stats]`,
  )
  process.exit(2)
}

const args = process.argv.slice(2)
const dirs = args.filter((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')))
if (dirs.length !== 2) usage(`expected two build directories, got ${dirs.length}`)
const kindAt = args.indexOf('--kind')
const kind = kindAt < 0 ? 'sync' : args[kindAt + 1]
if (!['sync', 'async', 'gen', 'genmap', 'io'].includes(kind))
  usage(`--kind must be sync, async, gen, genmap or io, got ${kind}`)
const nums = {
  workers: intFlag(args, 'workers', 1),
  items: intFlag(args, 'items', kind === 'io' ? 2_000 : 300_000),
  rounds: intFlag(args, 'rounds', kind === 'io' ? 7 : 15),
}
const stats = args.includes('--stats')

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor

/** One run of the workload on build `sl`; each build gets its own copies of the functions. */
function job(sl) {
  const { workers, items } = nums
  const gen = () =>
    sl.stage(new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1'), { workers })
  const map = (sync) =>
    sl.mapStage(sync ? new Function('x', 'return x + 1') : new Function('return async (x) => x + 1')(), {
      workers,
    })
  // genmap: one generator stage, then two sync map stages (fused into the generator's worker)
  const wait = (ms, w) =>
    sl.mapStage(
      async (x) => {
        await sleep(ms)
        return x + 1
      },
      { workers: w },
    )
  const steps =
    kind === 'gen'
      ? [gen(), gen(), gen()]
      : kind === 'genmap'
        ? [gen(), map(true), map(true)]
        : kind === 'io'
          ? [wait(5, 16), wait(1, 4)]
          : [map(kind === 'sync'), map(kind === 'sync'), map(kind === 'sync')]
  // with an onProgress callback the run keeps its time accounting (the interval never fires)
  const options = stats ? { onProgress() {}, progressInterval: 2 ** 31 - 1 } : undefined
  return async () => {
    const r = await consume(sl.pipe(range(items), ...steps).results(options))
    if (r.count !== items) throw new Error(`expected ${items} items, got ${r.count}`)
  }
}

const [a, b] = await Promise.all(dirs.map((d) => import(pathToFileURL(resolve(d, 'index.js')).href)))
const runA = job(a)
const runB = job(b)
const ratios = []
for (let r = 0; r < nums.rounds; r++) {
  let t = performance.now()
  await runA()
  const ta = performance.now() - t
  t = performance.now()
  await runB()
  ratios.push(ta / (performance.now() - t))
}
ratios.sort((x, y) => x - y)
const at = (q) => ratios[Math.min(ratios.length - 1, Math.floor(q * ratios.length))]
console.log(
  `${kind}${stats ? ' (with stats)' : ''}, workers ${nums.workers}, ${nums.items} items, ${nums.rounds} rounds: B/A speed ${at(0.5).toFixed(3)} (p20..p80 ${at(0.2).toFixed(2)}..${at(0.8).toFixed(2)})`,
)

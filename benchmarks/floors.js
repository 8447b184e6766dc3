/**
 * `node benchmarks/floors.js [--items N] [--rounds N] [--jobs]`: where the time of the overhead-sync
 * workload goes, in nanoseconds per item, measured in one process (run `npm run build` first).
 * With `--jobs`, nothing is timed: each case runs once and prints the promise jobs it runs per item
 * (promises.js `countsPerItem`), the microtask-queue work no loop tuning removes.
 *
 * - the bare async-generator chain (the workload's baseline);
 * - `for await` over already resolved promises: what handing items to a `for await` loop costs
 *   at the least, whoever hands them;
 * - reading the source (a sync generator of integers) in a plain loop;
 * - three stageline channels with two calls of `x + 1` between them, driven by a plain
 *   synchronous loop: the queues alone, without workers, parking or stats;
 * - stageline with 0, 1, 2 and 3 synchronous map stages behind a `for await` consumer;
 * - the generator workload's parts: a bare chain of 3 generator steps, the 3 steps composed in one
 *   `stage()`, and 3 `stage()`s of one step each;
 * - the least any design with a queue between generator steps can cost: the same 3 generators,
 *   each driven by a pump that puts what it yields into a 64-slot queue read by the next one, with
 *   nothing else (no stats, no errors, no stop, one worker): `minimalQueued()` in least-queued.js. Its ratio to
 *   the bare chain is the ceiling for `stage()`s joined by queues on this workload.
 *
 * docs/dev/engine-notes.md reads these to explain the overhead-sync and generator targets.
 * @module
 */
import { pathToFileURL } from 'node:url'
import { bareChain, consume, intFlag, ResolvedIterator, range } from './common.js'
import { minimalQueued } from './least-queued.js'
import { countsPerItem } from './promises.js'

const args = process.argv.slice(2)
const n = intFlag(args, 'items', 1_000_000)
const rounds = intFlag(args, 'rounds', 7)

const dist = new URL('../dist/', import.meta.url)
const sl = await import(new URL('index.js', dist).href)
const { Channel } = await import(new URL('channel/bounded.js', dist).href)
const { EMPTY } = await import(new URL('channel/inlet.js', dist).href)
const { Waiter } = await import(new URL('channel/waiter.js', dist).href)

const inc = (x) => x + 1

/** Three channels of capacity 64 and two steps between them, moved by one synchronous loop. */
function channelsOnly() {
  const chs = [new Channel(64), new Channel(64), new Channel(64)]
  const w = new Waiter()
  const src = range(n)[Symbol.iterator]()
  let count = 0
  let sum = 0
  let r = src.next()
  while (count < n) {
    while (!r.done && chs[0].offer(r.value)) r = src.next()
    for (let s = 0; s < 2; s++) {
      const from = chs[s]
      const to = chs[s + 1]
      while (to.length < 64) {
        const x = from.poll(w)
        if (x === EMPTY) break
        to.offer(inc(x))
      }
    }
    for (;;) {
      const x = chs[2].poll(w)
      if (x === EMPTY) break
      sum += x
      count++
    }
  }
  return { count, sum }
}

const ms = sl.mapStage(inc)

// generator steps compiled per use, so that no two implementations share V8's type feedback
// (see freshInc() in workloads.js)
const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor
const genStep = () => new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1')
const genBare = [genStep(), genStep(), genStep()]
const genComposed = [genStep(), genStep(), genStep()]
const composed = sl.stage((src) => genComposed[2](genComposed[1](genComposed[0](src))))
const genStages = [0, 1, 2].map(() => sl.stage(genStep()))
const genMinimal = [genStep(), genStep(), genStep()]
const cases = [
  ['bare async-generator chain, 3 sync steps', () => consume(bareChain(range(n), [inc, inc, inc], true))],
  ['for await over resolved promises (floor)', () => consume(new ResolvedIterator(n, 0))],
  [
    'reading the source in a plain loop',
    () => {
      let count = 0
      for (const _ of range(n)) count++
      return { count }
    },
  ],
  ['3 channels + 2 steps, plain synchronous loop', channelsOnly],
  ['stageline, no stage, for await', () => consume(sl.pipe(range(n)))],
  ['stageline, 1 sync stage, for await', () => consume(sl.pipe(range(n), ms))],
  ['stageline, 2 sync stages, for await', () => consume(sl.pipe(range(n), ms, ms))],
  ['stageline, 3 sync stages, for await', () => consume(sl.pipe(range(n), ms, ms, ms))],
  ['bare chain of 3 generator steps', () => consume(genBare[2](genBare[1](genBare[0](range(n)))))],
  ['stageline, one stage() composing the 3 generator steps', () => consume(sl.pipe(range(n), composed))],
  ['stageline, 3 stage()s, one generator step each', () => consume(sl.pipe(range(n), ...genStages))],
  [
    'minimal queue + pump per generator step (no stats, errors or stop)',
    () => consume(minimalQueued(genMinimal, range(n))),
  ],
]

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href && args.includes('--jobs')) {
  console.log(`promise jobs per item, ${n.toLocaleString('en-US')} items, counted with an async hook`)
  for (const [label, run] of cases) {
    const { jobs } = await countsPerItem(run, n)
    console.log(`${jobs.toFixed(2).padStart(6)}  ${label}`)
  }
} else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const times = cases.map(() => [])
  for (let r = 0; r < rounds; r++) {
    for (const [i, [label, run]] of cases.entries()) {
      const t = performance.now()
      const result = await run()
      times[i].push(performance.now() - t)
      if (result.count !== n) throw new Error(`${label}: expected ${n} items, got ${result.count}`)
    }
  }
  console.log(`ns per item, median of ${rounds} rounds of ${n.toLocaleString('en-US')} items`)
  for (const [i, [label]] of cases.entries()) {
    const sorted = times[i].sort((x, y) => x - y)
    const med = sorted[sorted.length >> 1]
    console.log(`${((med / n) * 1e6).toFixed(0).padStart(6)}  ${label}`)
  }
}

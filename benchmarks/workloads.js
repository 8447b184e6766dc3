/**
 * The throughput workloads as data: for each, its implementations (stageline, the
 * baseline it is measured against, the peers), its size, the result every implementation must
 * produce, and stageline's target. The runner (run.js) times them; the smoke spec runs them tiny.
 *
 * An implementation is `{ name, label, role, ordered?, reduced?, run(n) }`: `run` does the whole
 * job on `n` fresh items and resolves to `{ count, sum, inversions, peakAhead? }`. `role` is
 * 'stageline', 'baseline', 'peer' or 'reference' (a ceiling shown for scale, not a competitor).
 * `reduced: true` runs it on the workload's reduced size whatever its warm-up speed (for a peer
 * whose cost per item grows with the input, which a small warm-up cannot reveal).
 * @module
 */
import { Readable } from 'node:stream'
import { pipeline as streamPipeline } from 'node:stream/promises'
import { pipe as itPipe } from 'it-pipe'
import { bareChain, consume, ResolvedIterator, range, rangeSum, sleep, tallyArray } from './common.js'
import { effectRun, itParallelChain, nodeChain, optimalRun, pMapChain, rxjsRun } from './peers.js'

/** The full sizes, the `--quick` smoke sizes, and the spec's tiny ones. */
export const SIZES = {
  full: { overhead: 1_000_000, reduced: 100_000, io: 2_000, ordered: 2_000 },
  quick: { overhead: 50_000, reduced: 10_000, io: 300, ordered: 300 },
  tiny: { overhead: 300, reduced: 100, io: 40, ordered: 60 },
}

const incAsync = async (x) => x + 1
const incSync = (x) => x + 1

/** The io workload's two steps: 5 ms of waiting with 16 workers, then 1 ms with 4. */
const IO_STEPS = [
  {
    fn: async (x) => {
      await sleep(5)
      return x + 1
    },
    workers: 16,
  },
  {
    fn: async (x) => {
      await sleep(1)
      return x + 1
    },
    workers: 4,
  },
]

/** The ordered workload's per-item delay, 1-4 ms, fixed per item so every implementation gets the same. */
export function orderedDelay(x) {
  return 1 + ((Math.imul(x + 1, 0x9e3779b1) >>> 16) & 3)
}

/**
 * Counts, for the ordered workload, the items finished ahead of the oldest unfinished one: in an
 * ordered implementation those are exactly the items its reorder buffer holds (with a consumer
 * that takes each item at once), so the peak is the peak reorder buffer.
 */
function aheadTracker(n) {
  const finished = new Uint8Array(n)
  const t = { head: 0, done: 0, peak: 0 }
  t.fn = async (x) => {
    await sleep(orderedDelay(x))
    finished[x] = 1
    t.done++
    while (t.head < n && finished[t.head] === 1) t.head++
    if (t.done - t.head > t.peak) t.peak = t.done - t.head
    return x + 1
  }
  return t
}

/**
 * The reference row of the overhead workloads: `for await` over an iterator that has its results
 * ready (ResolvedIterator). Everything that hands items to a `for await` loop pays at least this.
 */
function floor() {
  return {
    name: 'for-await floor',
    label: 'for await over resolved promises (floor)',
    role: 'reference',
    run: (n) => consume(new ResolvedIterator(n, 3)),
  }
}

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor

/**
 * A fresh copy of the generator step `async function* (src) { for await (const x of src) yield x + 1 }`
 * for one implementation. Compiled from source each time, because copies made from one function
 * literal share V8's type feedback: the `for await` inside sees a different iterator type under
 * each library, and a shared copy would go polymorphic and slow every implementation down.
 */
function freshInc() {
  return new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1')
}

/** The implementations of the three overhead workloads (3 map or generator steps of `x + 1`). */
function overheadImpls(sl, kind, workers) {
  const sync = kind === 'sync'
  const fn = sync ? incSync : incAsync
  const steps = [1, 2, 3].map(() => ({ fn, workers }))
  if (kind === 'gen') {
    const inc = freshInc()
    const st = sl.stage(freshInc(), { workers })
    const [c1, c2, c3] = [freshInc(), freshInc(), freshInc()]
    const composed = sl.stage((src) => c3(c2(c1(src))), { workers })
    const itPipeInc = freshInc()
    const nodeInc = freshInc()
    return [
      {
        name: 'bare',
        label: 'bare async-generator chain',
        role: 'baseline',
        run: (n) => consume(inc(inc(inc(range(n))))),
      },
      {
        name: 'stageline',
        label: `stageline stage() x3, workers ${workers}`,
        role: 'stageline',
        run: (n) => consume(sl.pipe(range(n), st, st, st)),
      },
      {
        name: 'stageline toArray',
        label: `stageline stage() x3, workers ${workers}, toArray()`,
        role: 'stageline',
        run: async (n) => tallyArray(await sl.pipe(range(n), st, st, st).toArray()),
      },
      {
        // the three steps composed inside one stage (docs/concepts.md, "Cheap generator steps")
        name: 'stageline composed',
        label: `stageline one stage() composing the 3 steps, workers ${workers}`,
        role: 'stageline',
        run: (n) => consume(sl.pipe(range(n), composed)),
      },
      floor(),
      {
        name: 'it-pipe',
        label: 'it-pipe, 3 generator transforms',
        role: 'peer',
        run: (n) => itPipeGen(range(n), itPipeInc),
      },
      {
        name: 'node-pipeline',
        label: 'node stream.pipeline(Readable.from, 3 generators)',
        role: 'peer',
        run: (n) => nodePipelineGen(range(n), nodeInc),
      },
    ]
  }
  const ms = sl.mapStage(fn, { workers })
  const impls = [
    {
      name: 'bare',
      label: 'bare async-generator chain',
      role: 'baseline',
      run: (n) => consume(bareChain(range(n), [fn, fn, fn], sync)),
    },
    {
      name: 'stageline',
      label: `stageline mapStage() x3, workers ${workers}`,
      role: 'stageline',
      run: (n) => consume(sl.pipe(range(n), ms, ms, ms)),
    },
    {
      name: 'stageline toArray',
      label: `stageline mapStage() x3, workers ${workers}, toArray()`,
      role: 'stageline',
      run: async (n) => tallyArray(await sl.pipe(range(n), ms, ms, ms).toArray()),
    },
    floor(),
    {
      name: 'p-map',
      label: 'p-map pMapIterable',
      role: 'peer',
      run: (n) => consume(pMapChain(range(n), steps)),
    },
    {
      name: 'node',
      label: 'node Readable.from().map()',
      role: 'peer',
      run: (n) => consume(nodeChain(range(n), steps)),
    },
    {
      name: 'it-parallel',
      label: 'it-pipe + it-parallel',
      role: 'peer',
      run: (n) => itParallelChain(range(n), steps, consume),
    },
    {
      name: 'effect',
      label: sync ? 'Effect Stream.map' : 'Effect Stream.mapEffect',
      role: 'peer',
      run: (n) => effectRun(range(n), steps, sync),
    },
    {
      name: 'rxjs',
      label: sync ? 'RxJS map' : 'RxJS mergeMap',
      role: 'peer',
      // from() pushes the whole source into mergeMap's buffer at once, and mergeMap takes from it
      // with Array.shift(): quadratic, about 1,000 items/s at 1M items. Always on the reduced size.
      reduced: !sync,
      run: (n) => rxjsRun(range(n), steps, sync),
    },
  ]
  if (sync) {
    impls.push({
      name: 'loop',
      label: 'plain sync for-loop (ceiling)',
      role: 'reference',
      run: async (n) => {
        let count = 0
        let sum = 0
        for (const x of range(n)) {
          count++
          sum += fn(fn(fn(x)))
        }
        return { count, sum, inversions: 0 }
      },
    })
  }
  return impls
}

function itPipeGen(src, inc) {
  return itPipe(src, inc, inc, inc, consume)
}

async function nodePipelineGen(src, inc) {
  let result
  await streamPipeline(Readable.from(src), inc, inc, inc, async (s) => {
    result = await consume(s)
  })
  return result
}

/**
 * The io workload's floor: the first step's sleeps alone, ceil(n / 16) rounds of 5 ms, then one
 * item's 1 ms. An implementation can come in under it, a ratio above 1 to the floor's: Node's
 * timers compare against the event loop's cached clock, read when the loop turn began, so a timer
 * armed late in a turn can fire up to that turn's length early, and a scheduler that happens to
 * arm its timers late in busy turns gains that much per round of sleeps. It measures timer phases,
 * not waiting on a socket (benchmarks/http.js does that).
 */
export function ioFloorMs(n) {
  return Math.ceil(n / IO_STEPS[0].workers) * 5 + 1
}

function ioImpls(sl) {
  const [a, b] = IO_STEPS
  const s1 = sl.mapStage(a.fn, { workers: a.workers })
  const s2 = sl.mapStage(b.fn, { workers: b.workers })
  return [
    {
      name: 'optimal',
      label: 'hand-written optimal scheduler',
      role: 'baseline',
      run: (n) => optimalRun(range(n), IO_STEPS),
    },
    {
      name: 'floor',
      label: 'the sleeps alone (floor: ceil(n / 16) x 5 ms + 1 ms, one timer)',
      role: 'reference',
      run: async (n) => {
        await sleep(ioFloorMs(n))
        return { count: n, sum: rangeSum(n, 2), inversions: 0 }
      },
    },
    {
      name: 'stageline',
      label: 'stageline mapStage() 16 + 4 workers',
      role: 'stageline',
      run: (n) => consume(sl.pipe(range(n), s1, s2)),
    },
    {
      name: 'p-map',
      label: 'p-map pMapIterable',
      role: 'peer',
      run: (n) => consume(pMapChain(range(n), IO_STEPS)),
    },
    {
      name: 'node',
      label: 'node Readable.from().map()',
      role: 'peer',
      run: (n) => consume(nodeChain(range(n), IO_STEPS)),
    },
    {
      name: 'it-parallel',
      label: 'it-pipe + it-parallel',
      role: 'peer',
      run: (n) => itParallelChain(range(n), IO_STEPS, consume),
    },
    {
      name: 'effect',
      label: 'Effect Stream.mapEffect',
      role: 'peer',
      run: (n) => effectRun(range(n), IO_STEPS, false),
    },
    { name: 'rxjs', label: 'RxJS mergeMap', role: 'peer', run: (n) => rxjsRun(range(n), IO_STEPS, false) },
  ]
}

function orderedImpls(sl) {
  const workers = 8
  /** Wraps a job over one step into a run that also reports the peak of items finished ahead. */
  const tracked = (job) => async (n) => {
    const t = aheadTracker(n)
    const r = await job(range(n), [{ fn: t.fn, workers }])
    return { ...r, peakAhead: t.peak }
  }
  const slStage =
    (ordered) =>
    (src, [step]) =>
      consume(sl.pipe(src, sl.mapStage(step.fn, { workers: step.workers, ordered })))
  const ordered = (o) => (o ? 'ordered' : 'unordered')
  const impls = [
    {
      name: 'optimal',
      label: 'hand-written optimal scheduler (unordered)',
      role: 'baseline',
      run: tracked(optimalRun),
    },
  ]
  for (const o of [true, false]) {
    impls.push(
      {
        name: `stageline ${ordered(o)}`,
        label: `stageline mapStage(), ordered: ${o}`,
        role: 'stageline',
        ordered: o,
        run: tracked(slStage(o)),
      },
      {
        name: `p-map ${ordered(o)}`,
        label: `p-map pMapIterable, preserveOrder: ${o}`,
        role: 'peer',
        ordered: o,
        run: tracked((src, steps) =>
          consume(
            pMapChain(
              src,
              steps.map((s) => ({ ...s, ordered: o })),
            ),
          ),
        ),
      },
      {
        name: `it-parallel ${ordered(o)}`,
        label: `it-parallel, ordered: ${o}`,
        role: 'peer',
        ordered: o,
        run: tracked((src, steps) =>
          itParallelChain(
            src,
            steps.map((s) => ({ ...s, ordered: o })),
            consume,
          ),
        ),
      },
      {
        name: `effect ${ordered(o)}`,
        label: `Effect Stream.mapEffect, unordered: ${!o}`,
        role: 'peer',
        ordered: o,
        run: tracked((src, steps) => effectRun(src, steps, false, { ordered: o })),
      },
    )
  }
  impls.push(
    {
      name: 'node ordered',
      label: 'node Readable.from().map() (always ordered)',
      role: 'peer',
      ordered: true,
      run: tracked((src, steps) => consume(nodeChain(src, steps))),
    },
    {
      name: 'rxjs unordered',
      label: 'RxJS mergeMap (unordered)',
      role: 'peer',
      ordered: false,
      run: tracked((src, steps) => rxjsRun(src, steps, false)),
    },
  )
  return impls
}

/**
 * The throughput workloads, given the stageline module under test (dist/ for the runner, lib/ for
 * the spec) and a size set from {@link SIZES}.
 */
export function defineWorkloads(sl, sizes) {
  const list = []
  const overhead = [
    ['overhead-async', 'async', 'x => x + 1 async, 3 map steps', 1.0],
    ['overhead-sync', 'sync', 'x => x + 1 sync, 3 map steps', 5.0],
    ['generator', 'gen', '3 async-generator steps of x + 1', 0.9],
  ]
  for (const [group, kind, what, min] of overhead) {
    for (const workers of [1, 4]) {
      list.push({
        id: `${group}/w${workers}`,
        group,
        title: `${group}, workers ${workers}: ${what}`,
        n: sizes.overhead,
        reducedN: sizes.reduced,
        baseline: 'bare',
        expect: (n) => ({ count: n, sum: rangeSum(n, 3) }),
        target: { impl: 'stageline', min, text: `stageline >= ${min}x the bare chain` },
        impls: overheadImpls(sl, kind, workers),
      })
    }
  }
  list.push({
    id: 'io',
    group: 'io',
    title: `io: 5 ms wait x 16 workers, then 1 ms x 4 (the sleeps alone: ${ioFloorMs(sizes.io)} ms)`,
    n: sizes.io,
    baseline: 'optimal',
    expect: (n) => ({ count: n, sum: rangeSum(n, 2) }),
    target: { impl: 'stageline', min: 0.98, text: 'stageline >= 0.98 of the optimal scheduler' },
    impls: ioImpls(sl),
  })
  list.push({
    id: 'ordered',
    group: 'ordered',
    title: 'ordered: 8 workers, 1-4 ms random delay per item',
    n: sizes.ordered,
    baseline: 'optimal',
    expect: (n) => ({ count: n, sum: rangeSum(n, 1) }),
    target: undefined,
    impls: orderedImpls(sl),
  })
  return list
}

/**
 * Checks an implementation's result against the workload's expectation: the right count and sum,
 * and no item out of order where the implementation promises input order. Returns an error
 * message, or undefined when the result is right.
 */
export function checkResult(workload, impl, n, result) {
  const want = workload.expect(n)
  if (result == null || typeof result !== 'object') return `returned ${String(result)}, not a result`
  if (result.count !== want.count) return `count ${result.count}, expected ${want.count}`
  if (result.sum !== want.sum) return `sum ${result.sum}, expected ${want.sum}`
  if (impl.ordered === true && result.inversions !== 0) {
    return `${result.inversions} items out of input order, expected none`
  }
  return undefined
}

/**
 * The cpu workload and the thread-stage targets: CPU-bound items through the thread stage, against
 * piscina used directly.
 *
 * - cpu-5ms: 2,000 items of about 5 ms of CPU each (an integer hash loop), through threadStage with
 *   1 and with 2 threads, and through piscina with 2 threads and one task per item. Target: 2
 *   threads >= 1.8x one thread (on a 2-core machine; cloning is negligible at this size).
 * - cpu-tiny: 1,000,000 tiny items (16 hash rounds each): threadStage, which moves items in batches,
 *   against piscina with one task per item (run on 100,000 items, it is that slow). Target: the
 *   thread stage >= 3x piscina's throughput, both with one thread.
 *
 * This file is also the module the benchmark's threads load (the `spin`, `tiny` and `tinyRecord`
 * exports): its top level imports nothing but Node built-ins, and the harness is imported only when
 * it runs.
 *
 * Run alone (after `npm run build`): `node benchmarks/cpu.js [--quick] [--rounds N]`.
 * From the suite (run.js): the default export, called with `{ quick, rounds, log, sl }`.
 * @module
 */
import { availableParallelism, loadavg } from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'

/** Hash rounds that take about 5 ms on the 2-core machine this was written on (about 4 ns a round). */
export const SPIN_ROUNDS = 1_200_000
const TINY_ROUNDS = 16

function mix(n, rounds) {
  let h = (n ^ 0x811c9dc5) >>> 0
  for (let i = 0; i < rounds; i++) {
    h ^= i
    h = Math.imul(h, 0x01000193) >>> 0
    h ^= h >>> 13
  }
  return h >>> 0
}

/** About 5 ms of CPU; the result carries the item (to check every item came back once) and 8 bits of the hash. */
export function spin(n) {
  return n * 256 + (mix(n, SPIN_ROUNDS) & 0xff)
}

/** A tiny CPU step: the cost per item is then almost all overhead. */
export function tiny(n) {
  return mix(n, TINY_ROUNDS)
}

/** The tiny step on a small record (benchmarks/ab.js `--kind thread-records`): a record in, a record out. */
export function tinyRecord(r) {
  return { id: r.id, h: mix(r.id + r.at.x, TINY_ROUNDS) }
}

export const SIZES = {
  full: { spin: 2_000, tiny: 1_000_000, tinyReduced: 100_000 },
  quick: { spin: 200, tiny: 100_000, tinyReduced: 50_000 },
  tiny: { spin: 8, tiny: 2_000, tinyReduced: 500 },
}

const SELF = import.meta.url

function* range(n) {
  for (let i = 0; i < n; i++) yield i
}

/** Every 50th item's hash, computed on the main thread once, to check the threads did the work. */
const spinSamples = new Map()
function spinSample(i) {
  let h = spinSamples.get(i)
  if (h === undefined) spinSamples.set(i, (h = mix(i, SPIN_ROUNDS) & 0xff))
  return h
}

/** Consumes spin results: the sum of the items is the checked sum; a wrong sampled hash makes it NaN. */
async function consumeSpin(results) {
  let count = 0
  let sum = 0
  for await (const r of results) {
    count++
    const n = Math.floor(r / 256)
    sum += n
    if (n % 50 === 0 && (r & 0xff) !== spinSample(n)) sum = Number.NaN
  }
  return { count, sum, inversions: 0 }
}

async function consumeTiny(results) {
  let count = 0
  let sum = 0
  for await (const r of results) {
    count++
    sum += r
  }
  return { count, sum, inversions: 0 }
}

const tinySums = new Map()
function tinySum(n) {
  let s = tinySums.get(n)
  if (s === undefined) {
    s = 0
    for (let i = 0; i < n; i++) s += tiny(i)
    tinySums.set(n, s)
  }
  return s
}

/**
 * The control: `k` bare Workers, each computing its share of the items with no pool and no message
 * per item. Its 2-versus-1 ratio is what the machine gives two threads right now; on a shared
 * machine it is the ceiling for the thread stage's ratio.
 */
async function bareWorkers(n, k) {
  const parts = await Promise.all(
    Array.from(
      { length: k },
      (_, from) =>
        new Promise((resolve, reject) => {
          const w = new Worker(new URL(SELF), { workerData: { cpuControl: true, from, step: k, n } })
          w.once('message', resolve)
          w.once('error', reject)
          w.once('exit', (code) =>
            reject(new Error(`control worker exited with code ${code} before answering`)),
          )
        }),
    ),
  )
  return parts.flat()
}

/** Piscina used directly, one task per item, at most `window` tasks in flight, results in completion order. */
async function* piscinaPerItem(Piscina, name, n, threads, window) {
  const pool = new Piscina({ filename: SELF, name, minThreads: threads, maxThreads: threads })
  try {
    const done = []
    let wake
    let failed
    let inFlight = 0
    let next = 0
    const launch = () => {
      while (inFlight < window && next < n) {
        inFlight++
        pool.run(next++).then(
          (r) => {
            inFlight--
            done.push(r)
            wake?.()
          },
          (err) => {
            failed = err
            wake?.()
          },
        )
      }
    }
    launch()
    while (inFlight > 0 || done.length > 0) {
      if (done.length === 0) await new Promise((r) => (wake = r))
      wake = undefined
      if (failed !== undefined) throw failed
      while (done.length > 0) yield done.shift()
      launch()
    }
  } finally {
    await pool.destroy()
  }
}

/**
 * The cpu workloads in the suite's format (benchmarks/types.d.ts): `sl` is the stageline module,
 * `Piscina` piscina's pool class.
 */
export function defineCpuWorkloads(sl, Piscina, sizes) {
  const stage = (name, threads) => sl.threadStage(SELF, { export: name, threads })
  return [
    {
      id: 'cpu-5ms',
      group: 'cpu',
      title: `cpu: ~5 ms of CPU per item (${SPIN_ROUNDS} hash rounds), threadStage 1 vs 2 threads`,
      n: sizes.spin,
      baseline: 'stageline-1t',
      expect: (n) => ({ count: n, sum: (n * (n - 1)) / 2 }),
      target: { impl: 'stageline-2t', min: 1.8, text: 'threadStage with 2 threads >= 1.8x 1 thread' },
      impls: [
        {
          name: 'stageline-1t',
          label: 'threadStage, threads 1',
          role: 'baseline',
          run: (n) => consumeSpin(sl.pipe(range(n), stage('spin', 1))),
        },
        {
          name: 'stageline-2t',
          label: 'threadStage, threads 2',
          role: 'stageline',
          run: (n) => consumeSpin(sl.pipe(range(n), stage('spin', 2))),
        },
        {
          name: 'piscina-2t',
          label: 'piscina directly, 2 threads, one task per item (4 in flight)',
          role: 'peer',
          run: (n) => consumeSpin(piscinaPerItem(Piscina, 'spin', n, 2, 4)),
        },
        {
          name: 'bare-1t',
          label: 'control: 1 bare Worker computing all items, no pool, no message per item',
          role: 'control',
          run: async (n) => consumeSpin(await bareWorkers(n, 1)),
        },
        {
          name: 'bare-2t',
          label: 'control: 2 bare Workers computing half the items each',
          role: 'control',
          run: async (n) => consumeSpin(await bareWorkers(n, 2)),
        },
      ],
    },
    {
      id: 'cpu-tiny',
      group: 'cpu',
      title: `cpu: tiny items (${TINY_ROUNDS} hash rounds), threadStage vs one piscina task per item`,
      n: sizes.tiny,
      reducedN: sizes.tinyReduced,
      baseline: 'stageline-1t',
      expect: (n) => ({ count: n, sum: tinySum(n) }),
      target: undefined, // stageline over piscina, the inverse of piscina's ratio: evaluated below
      impls: [
        {
          name: 'stageline-1t',
          label: 'threadStage, threads 1 (batches)',
          role: 'baseline',
          run: (n) => consumeTiny(sl.pipe(range(n), stage('tiny', 1))),
        },
        {
          name: 'stageline-2t',
          label: 'threadStage, threads 2 (batches)',
          role: 'stageline',
          run: (n) => consumeTiny(sl.pipe(range(n), stage('tiny', 2))),
        },
        {
          name: 'piscina-1t',
          label: 'piscina directly, 1 thread, one task per item (64 in flight)',
          role: 'peer',
          run: (n) => consumeTiny(piscinaPerItem(Piscina, 'tiny', n, 1, 64)),
        },
      ],
    },
  ]
}

/**
 * Measures the cpu workloads with the suite's harness and checks the thread-stage targets. Options:
 * `quick` (smaller sizes), `rounds` (runs per implementation, median taken), `log`, `sl` (the
 * stageline module; default ../dist/index.js), `sizes` (overrides the size set).
 */
export default async function cpu(options = {}) {
  const { quick = false, rounds = quick ? 3 : 5, log = console.log } = options
  const sizes = options.sizes ?? (quick ? SIZES.quick : SIZES.full)
  const sl = options.sl ?? (await import('../dist/index.js'))
  const { Piscina } = await import('piscina')
  const { measureWorkload } = await import('./harness.js')
  const rows = []
  const loadStart = loadavg()
  log(
    `load average at start: ${loadStart.map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores`,
  )
  for (const w of defineCpuWorkloads(sl, Piscina, sizes)) {
    log(`\n== ${w.title} (${w.n} items)`)
    // piscina with one task per tiny item always runs on the reduced size (1M tasks take minutes)
    const reduceBelow = w.id === 'cpu-tiny' ? Number.POSITIVE_INFINITY : 0.1
    const got = await measureWorkload(w, { rounds, reduceBelow, warmupN: Math.min(w.n, 20_000), log })
    for (const r of got) log(`  ${r.impl.padEnd(14)} ${format(r)}`)
    rows.push(...got)
  }
  const targets = evaluate(rows)
  log(
    `load average at end: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  )
  log('\n== cpu targets')
  for (const t of targets) log(`  ${t.info ? 'info  ' : t.pass ? 'met   ' : 'MISSED'}  ${t.text}: ${t.value}`)
  return { machine: `${availableParallelism()} cores`, loadavg: [loadStart, loadavg()], rows, targets }
}

function format(r) {
  if (r.error !== null) return `FAILED ${r.error}`
  const rate = r.itemsPerSec >= 1000 ? `${(r.itemsPerSec / 1000).toFixed(1)}k` : r.itemsPerSec.toFixed(1)
  return `${rate} items/s on ${r.n} items, ratio to ${r.baseline} ${r.ratio.toFixed(3)} (min ${r.ratioMin.toFixed(3)}, max ${r.ratioMax.toFixed(3)}, ${r.runs} runs)`
}

/** The two thread-stage targets, from the measured rows (ratios are medians of per-round paired ratios). */
export function evaluate(rows) {
  const cell = (w, impl) => rows.find((r) => r.workload === w && r.impl === impl)
  const out = []
  const two = cell('cpu-5ms', 'stageline-2t')
  if (two?.ratio != null) {
    out.push({
      workload: 'cpu-5ms',
      text: 'threadStage 2 threads >= 1.8x 1 thread (5 ms items)',
      value: `${two.ratio.toFixed(2)}x (per-round min ${two.ratioMin.toFixed(2)}, max ${two.ratioMax.toFixed(2)})`,
      pass: two.ratio >= 1.8,
    })
  }
  const b1 = cell('cpu-5ms', 'bare-1t')
  const b2 = cell('cpu-5ms', 'bare-2t')
  if (two?.ratio != null && b1?.ratio != null && b2?.ratio != null) {
    // informational: what 2 threads could get on the machine during these rounds
    const control = b2.ratio / b1.ratio
    out.push({
      workload: 'cpu-5ms',
      text: 'control: 2 bare Workers over 1 (what the machine gave 2 threads in these rounds)',
      value: `${control.toFixed(2)}x; threadStage 2 over 1 thread: ${two.ratio.toFixed(2)}x, ${((two.ratio / control) * 100).toFixed(0)}% of the control`,
      pass: true,
      info: true,
    })
  }
  const per = cell('cpu-tiny', 'piscina-1t')
  if (per?.ratio != null) {
    out.push({
      workload: 'cpu-tiny',
      text: 'threadStage (1 thread) >= 3x one piscina task per item (1 thread), tiny items',
      value: `${(1 / per.ratio).toFixed(1)}x (per-round ${(1 / per.ratioMax).toFixed(1)}-${(1 / per.ratioMin).toFixed(1)}x)`,
      pass: 1 / per.ratio >= 3,
    })
  }
  return out
}

// a control thread (see bareWorkers): computes its share, posts the results, and ends
if (!isMainThread && workerData?.cpuControl === true) {
  const { from, step, n } = workerData
  const out = []
  for (let i = from; i < n; i += step) out.push(spin(i))
  parentPort.postMessage(out)
}

if (isMainThread && process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === SELF) {
  const { parseArgs } = await import('node:util')
  const { values } = parseArgs({
    options: { quick: { type: 'boolean', default: false }, rounds: { type: 'string' } },
  })
  const rounds = values.rounds === undefined ? undefined : Number(values.rounds)
  const t0 = performance.now()
  const result = await cpu({ quick: values.quick, ...(rounds === undefined ? {} : { rounds }) })
  console.log(`\n${fileURLToPath(SELF)}: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
  if (result.targets.some((t) => !t.pass) || result.rows.some((r) => r.error !== null)) process.exitCode = 1
}

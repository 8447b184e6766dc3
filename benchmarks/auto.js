/**
 * `node benchmarks/auto.js [--quick] [--svg FILE]`: workers that tune themselves (`workers: 'auto'`)
 * against fixed worker counts, on a simulated service with a capacity knee, in one process.
 *
 * The service: a request reads `n`, the number of requests in flight when it starts, and takes
 * `L * max(1, n / K) ** 1.5` ms, so past `K` requests at once it slows per request and its total
 * throughput falls. Workloads and targets:
 * - stationary: 20,000 items at K = 16, L = 5 ms: the best of the fixed counts 4, 8, 12, 16, 20, 24,
 *   32 and 64 against `'auto'` starting from its minimum (1): auto at least 0.9x the best fixed
 *   count's throughput, its ramp-up included;
 * - steps: K = 16 for 8,000 items, 4 for the next 8,000, then 32 for 24,000: auto's time against
 *   an oracle, the sum of separate runs of each phase at its best fixed count (K): at least 0.85x;
 *   and auto's median worker count over the second half of each phase within 25% of K (at least
 *   +-1);
 * - starved: a source that yields one item per ms, L = 10 ms, K = 1,000: auto keeps up with the
 *   source (its output rate over the second half of the run at least 0.95x the source's) and never
 *   runs more than twice the workers the source's rate needs (about 10);
 * - overhead: 3 synchronous map stages of x + 1 over 300,000 items (a stage that cannot use more
 *   than one worker): `workers: 'auto'` at least 0.95x of `workers: 1`;
 * - threads: 1,000 CPU-bound items of about 5 ms through a thread stage, each fixed thread count
 *   from 1 to the available cores against `threads: 'auto'`, medians of alternating rounds: auto
 *   at least 0.9x the best fixed count (on a machine with few cores, a floor rather than a proof).
 * Prints one line per measurement and the verdicts; `--svg FILE` writes the chart of the steps run
 * (workers and throughput over time, auto against the oracle's counts). `--quick` runs a tenth of
 * the items (a smoke test: its verdicts are not the targets').
 * @module
 */
import { writeFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { consume, median, range } from './common.js'

/** A simulated service with a capacity knee at K(item), L ms per request below it. */
export function kneeService(L, kOf) {
  let inflight = 0
  return async (i) => {
    const n = ++inflight
    try {
      await sleep(L * Math.max(1, n / kOf(i)) ** 1.5)
    } finally {
      inflight--
    }
    return i
  }
}

/**
 * One run of `n` items (0..n-1) through the service with `workers`; resolves to its time, and the
 * stage's worker count and throughput sampled every `every` ms.
 */
export async function runService(sl, { n, workers, L, kOf, every = 100, source }) {
  const trace = []
  const stage = sl.mapStage(kneeService(L, kOf), { workers, name: 'service', qsize: 256 })
  const t0 = performance.now()
  let last = 0
  await sl.pipe(source ?? range(n), stage).toArray({
    progressInterval: every,
    onProgress: (s) => {
      const st = s.stages[0]
      trace.push({ ms: s.elapsedMs, workers: st.workers, rate: ((st.out - last) * 1000) / every })
      last = st.out
    },
  })
  return { ms: performance.now() - t0, trace }
}

const FIXED = [4, 8, 12, 16, 20, 24, 32, 64]

/** The stationary workload: the best fixed count against auto. */
export async function stationary(sl, { n = 20_000, L = 5, K = 16, fixed = FIXED } = {}) {
  const kOf = () => K
  const rows = []
  for (const w of fixed) rows.push({ workers: w, ...(await runService(sl, { n, workers: w, L, kOf })) })
  const auto = await runService(sl, { n, workers: 'auto', L, kOf })
  const best = rows.reduce((a, b) => (b.ms < a.ms ? b : a))
  return { rows, best, auto, ratio: best.ms / auto.ms }
}

/** The steps workload: auto over all phases against the sum of each phase at its best fixed count. */
export async function steps(
  sl,
  {
    phases = [
      { items: 8000, K: 16 },
      { items: 8000, K: 4 },
      { items: 24000, K: 32 },
    ],
    L = 5,
  } = {},
) {
  const bounds = []
  let c = 0
  for (const p of phases) bounds.push((c += p.items))
  const kOf = (i) => phases[bounds.findIndex((b) => i < b)]?.K ?? phases.at(-1).K
  const total = bounds.at(-1)
  const auto = await runService(sl, { n: total, workers: 'auto', L, kOf })
  let oracleMs = 0
  for (const p of phases)
    oracleMs += (await runService(sl, { n: p.items, workers: p.K, L, kOf: () => p.K })).ms
  // the median worker count over the second half of each phase, from the trace (by items out)
  const medians = []
  let start = 0
  let out = 0
  const byTime = auto.trace.map((t) => ({ ...t, out: (out += (t.rate * 100) / 1000) }))
  for (const [i, p] of phases.entries()) {
    const end = bounds[i]
    const half = start + p.items / 2
    const counts = byTime.filter((t) => t.out >= half && t.out < end).map((t) => t.workers)
    medians.push({ K: p.K, median: counts.length > 0 ? median(counts) : undefined })
    start = end
  }
  return { auto, oracleMs, ratio: oracleMs / auto.ms, medians }
}

/** The starved workload: a source slower than the stage; the most workers auto ever ran. */
export async function starved(sl, { n = 3000, L = 10, K = 1000, perMs = 1 } = {}) {
  async function* slowSource() {
    for (let i = 0; i < n; i++) {
      if (i % perMs === 0) await sleep(1)
      yield i
    }
  }
  const t0 = performance.now()
  const sourceOnly = await consume(slowSource())
  const sourceMs = performance.now() - t0
  const auto = await runService(sl, { n, workers: 'auto', L, kOf: () => K, source: slowSource() })
  const most = Math.max(...auto.trace.map((t) => t.workers))
  // the workers the source's rate needs: items per ms times time per item (Little's law)
  const sourceRate = (n * 1000) / sourceMs
  const needed = Math.ceil((sourceRate / 1000) * L)
  // keeping up: the stage's output rate over the second half of the run against the source's
  const late = auto.trace.slice(Math.floor(auto.trace.length / 2), -1)
  const rate = late.length > 0 ? late.reduce((a, t) => a + t.rate, 0) / late.length : 0
  return { auto, sourceMs, keepsUp: rate / sourceRate, most, needed, count: sourceOnly.count }
}

/** The overhead workload with one stage that cannot use more than one worker, auto against 1. */
export async function overhead(sl, { n = 300_000, rounds = 7 } = {}) {
  const job = (workers) => async () => {
    const inc = (x) => x + 1
    const r = await consume(
      sl.pipe(range(n), sl.mapStage(inc, { workers }), sl.mapStage(inc), sl.mapStage(inc)),
    )
    if (r.count !== n) throw new Error(`expected ${n} items, got ${r.count}`)
  }
  const one = job(1)
  const auto = job('auto')
  const ratios = []
  for (let r = 0; r < rounds; r++) {
    const [first, second] = r % 2 === 0 ? [one, auto] : [auto, one]
    let t = performance.now()
    await first()
    const a = performance.now() - t
    t = performance.now()
    await second()
    const b = performance.now() - t
    ratios.push(r % 2 === 0 ? a / b : b / a)
  }
  return { ratio: median(ratios) }
}

/**
 * The threads workload: CPU-bound items (about 5 ms each, benchmarks/cpu.js's `spin`) through a
 * thread stage with each fixed thread count from 1 to the available cores, and with
 * `threads: 'auto'`, alternating rounds; the best fixed count's median time against auto's.
 */
export async function threads(sl, { n = 1000, rounds = 3 } = {}) {
  const { availableParallelism } = await import('node:os')
  const cores = availableParallelism()
  const module = new URL('./cpu.js', import.meta.url)
  const configs = [...Array.from({ length: cores }, (_, i) => i + 1), 'auto']
  const times = new Map(configs.map((c) => [c, []]))
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? configs : [...configs].reverse()
    for (const c of order) {
      const t0 = performance.now()
      const out = await consume(
        sl.pipe(range(n), sl.threadStage(module, { export: 'spin', threads: c, name: 'spin' })).results(),
      )
      if (out.count !== n) throw new Error(`expected ${n} items, got ${out.count}`)
      times.get(c).push(performance.now() - t0)
    }
  }
  const rows = configs.map((c) => ({ threads: c, ms: median(times.get(c)) }))
  const fixed = rows.filter((r) => r.threads !== 'auto')
  const best = fixed.reduce((a, b) => (b.ms < a.ms ? b : a))
  const auto = rows.at(-1)
  return { cores, rows, best, auto, ratio: best.ms / auto.ms }
}

/** The steps run as an SVG: workers over time (auto, and the oracle's K per phase) and throughput. */
export function stepsChart(result, phases) {
  const W = 900
  const H = 360
  const pad = 50
  const t = result.auto.trace
  const maxMs = t.at(-1)?.ms ?? 1
  const maxW = Math.max(...t.map((x) => x.workers), ...phases.map((p) => p.K)) * 1.1
  const maxRate = Math.max(...t.map((x) => x.rate), 1) * 1.1
  const sx = (ms) => pad + (ms / maxMs) * (W - 2 * pad)
  const sy = (v, max) => H - pad - (v / max) * (H - 2 * pad)
  const line = (pts, color, dash = '') =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" ${dash} points="${pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`
  // the oracle's worker count: each phase's K, over the time auto spent on that phase
  const oracle = []
  let out = 0
  let phase = 0
  let edge = phases[0].items
  for (const x of t) {
    out += (x.rate * 100) / 1000
    while (out >= edge && phase < phases.length - 1) edge += phases[++phase].items
    oracle.push([sx(x.ms), sy(phases[phase].K, maxW)])
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12" role="img" aria-labelledby="title">
<title id="title">workers: 'auto' against the oracle's worker counts, and auto's throughput, over the steps run</title>
<rect width="${W}" height="${H}" fill="white"/>
<text x="${pad}" y="20" font-size="14">workers: 'auto' on a service whose knee K moves 16 -> 4 -> 32 (time in s)</text>
${line(
  t.map((x) => [sx(x.ms), sy(x.rate, maxRate)]),
  '#adb5bd',
)}
${line(oracle, '#495057', 'stroke-dasharray="6 4"')}
${line(
  t.map((x) => [sx(x.ms), sy(x.workers, maxW)]),
  '#d9480f',
)}
<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="black"/>
${[0, 0.25, 0.5, 0.75, 1].map((f) => `<text x="${sx(f * maxMs) - 10}" y="${H - pad + 16}">${((f * maxMs) / 1000).toFixed(1)}</text>`).join('\n')}
<text x="${W - pad - 260}" y="40" fill="#d9480f">auto's workers</text>
<text x="${W - pad - 260}" y="56" fill="#495057">the oracle's workers (K of the phase)</text>
<text x="${W - pad - 260}" y="72" fill="#868e96">auto's items per second (scaled)</text>
</svg>
`
}

async function main() {
  const args = process.argv.slice(2)
  const quick = args.includes('--quick')
  const svgAt = args.indexOf('--svg')
  const sl = await import('../dist/index.js')
  const f = quick ? 0.1 : 1
  const phases = [
    { items: 8000 * f, K: 16 },
    { items: 8000 * f, K: 4 },
    { items: 24000 * f, K: 32 },
  ]
  const verdict = (ok) => (quick ? '(smoke)' : ok ? 'met' : 'missed')
  const st = await stationary(sl, { n: 20_000 * f })
  for (const r of st.rows) console.log(`stationary, ${r.workers} workers: ${r.ms.toFixed(0)} ms`)
  console.log(`stationary, auto: ${st.auto.ms.toFixed(0)} ms; best fixed ${st.best.workers} workers`)
  console.log(
    `-> auto ${st.ratio.toFixed(3)}x the best fixed count (target >= 0.9): ${verdict(st.ratio >= 0.9)}`,
  )
  const sp = await steps(sl, { phases })
  console.log(
    `steps, auto: ${sp.auto.ms.toFixed(0)} ms; oracle (each phase at K): ${sp.oracleMs.toFixed(0)} ms`,
  )
  console.log(`-> auto ${sp.ratio.toFixed(3)}x the oracle (target >= 0.85): ${verdict(sp.ratio >= 0.85)}`)
  for (const m of sp.medians) {
    const ok = m.median !== undefined && Math.abs(m.median - m.K) <= Math.max(1, 0.25 * m.K)
    console.log(
      `-> K = ${m.K}: median workers over the phase's second half ${m.median} (within 25%): ${verdict(ok)}`,
    )
  }
  const sv = await starved(sl, { n: Math.round(3000 * f) })
  console.log(
    `starved: the source alone ${sv.sourceMs.toFixed(0)} ms, through auto ${sv.auto.ms.toFixed(0)} ms; auto's rate over the second half ${sv.keepsUp.toFixed(3)}x the source's; most workers ${sv.most}, needed ${sv.needed}`,
  )
  console.log(
    `-> keeps up (>= 0.95x) and at most 2x the workers needed: ${verdict(sv.keepsUp >= 0.95 && sv.most <= 2 * sv.needed)}`,
  )
  const ov = await overhead(sl, { n: Math.round(300_000 * f) })
  console.log(
    `-> overhead, auto ${ov.ratio.toFixed(3)}x workers: 1 (target >= 0.95): ${verdict(ov.ratio >= 0.95)}`,
  )
  const th = await threads(sl, { n: Math.round(1000 * f) })
  for (const r of th.rows) console.log(`threads, ${r.threads}: ${r.ms.toFixed(0)} ms (median)`)
  console.log(
    `-> threads: 'auto' ${th.ratio.toFixed(3)}x the best fixed count (${th.best.threads}) on ${th.cores} cores (target >= 0.9; with this few cores a floor, not a proof): ${verdict(th.ratio >= 0.9)}`,
  )
  if (svgAt >= 0) {
    writeFileSync(args[svgAt + 1], stepsChart(sp, phases))
    console.log(`chart of the steps run: ${args[svgAt + 1]}`)
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main()

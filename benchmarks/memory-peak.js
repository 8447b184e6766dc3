/**
 * `node benchmarks/memory-peak.js [--items N] [--runs N] [--impls a,b] [--trace]` (after `npm run
 * build`): the memory peak of a pipeline whose items are records with a 1 KB string, where what
 * the heap holds per item and how V8 sizes its young generation decide the peak. N items (10M by
 * default) `{ i, body }`, `body` 1 KB, through a sync map stage of 4 workers
 * (`body.toUpperCase()`) and an async map stage of 2, read with `for await` that yields to the
 * event loop every 100 items. Each run is a child process of its own that loads only the library
 * it measures; the implementations alternate run by run.
 *
 * Besides the peak RSS (`process.resourceUsage().maxRSS`), each child samples every 100,000 items:
 * RSS, the heap V8 has committed and uses, and the new space (the young generation: two
 * semi-spaces, V8 grows them while the run allocates) and old space sizes, and reports the peak of
 * each. The implementations:
 * - `stageline`: stageline with its default queues (`qsize` 64);
 * - `stageline-q4`: the same with `qsize: 4` on both stages, as few items in its queues as p-map's
 *   `backpressure` holds (what the default's read-ahead costs in memory);
 * - `p-map`: `pMapIterable` twice (concurrency 4 and 2, its default backpressure);
 * - `p-map-ballast`: p-map in a process that also keeps 10,000 small objects alive (about 2 MB,
 *   what stageline's loaded code and queues add to the heap that survives a mark-compact): V8 sizes
 *   the old generation in proportion to what survives, so this row shows what that alone does to
 *   the peak.
 * `--trace` passes `--trace-gc` to the children and prints, per child, how many scavenges ran and the
 * last young-generation size V8 chose.
 * @module
 */
import { execFile } from 'node:child_process'
import { loadavg } from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8'
import { intFlag, median } from './common.js'

const SELF = fileURLToPath(import.meta.url)
const MB = 2 ** 20

export const PEAK_IMPLS = ['stageline', 'p-map', 'stageline-q4', 'p-map-ballast']

/** What `p-map-ballast` keeps alive besides p-map: small objects, about as much as stageline's code and queues add to what survives a mark-compact. */
const BALLAST_OBJECTS = 10_000

/** The output of one implementation over `n` records. */
async function output(impl, n) {
  const pad = 'x'.repeat(1000)
  function* src() {
    for (let i = 0; i < n; i++) yield { i, body: pad + i }
  }
  const upper = (x) => ({ i: x.i, body: x.body.toUpperCase() })
  const index = async (x) => x.i
  if (impl === 'stageline' || impl === 'stageline-q4') {
    const dist = process.env.STAGELINE_DIST ?? fileURLToPath(new URL('../dist/index.js', import.meta.url))
    const { pipe, mapStage } = await import(pathToFileURL(dist).href)
    const q = impl === 'stageline-q4' ? { qsize: 4 } : {}
    return pipe(src(), mapStage(upper, { workers: 4, ...q }), mapStage(index, { workers: 2, ...q })).results()
  }
  if (impl === 'p-map' || impl === 'p-map-ballast') {
    if (impl === 'p-map-ballast') {
      globalThis.ballast = Array.from({ length: BALLAST_OBJECTS }, (_, i) => ({
        i,
        name: `object ${i}`,
        list: [i],
      }))
    }
    const { pMapIterable } = await import('p-map')
    return pMapIterable(pMapIterable(src(), upper, { concurrency: 4 }), index, { concurrency: 2 })
  }
  throw new Error(`unknown implementation ${impl}`)
}

/** In a child: the run, sampled every 100,000 items; one JSON line. */
async function child(impl, n) {
  const { setImmediate: tick } = await import('node:timers/promises')
  const peak = { rss: 0, heapUsed: 0, heapCommitted: 0, newSpace: 0, oldSpace: 0, external: 0 }
  const sample = () => {
    const m = process.memoryUsage()
    const h = getHeapStatistics()
    const spaces = getHeapSpaceStatistics()
    const size = (name) => spaces.find((s) => s.space_name === name)?.physical_space_size ?? 0
    peak.rss = Math.max(peak.rss, m.rss)
    peak.heapUsed = Math.max(peak.heapUsed, h.used_heap_size)
    peak.heapCommitted = Math.max(peak.heapCommitted, h.total_physical_size)
    peak.newSpace = Math.max(peak.newSpace, size('new_space'))
    peak.oldSpace = Math.max(peak.oldSpace, size('old_space'))
    peak.external = Math.max(peak.external, m.external + m.arrayBuffers)
  }
  const out = await output(impl, n)
  const rssAtStart = process.memoryUsage().rss
  const t = performance.now()
  let count = 0
  let sum = 0
  for await (const x of out) {
    sum += x
    if (++count % 100 === 0) {
      if (count % 100_000 === 0) sample()
      await tick()
    }
  }
  const ms = performance.now() - t
  sample()
  if (count !== n || sum !== (n * (n - 1)) / 2) throw new Error(`wrong result: ${count} items, sum ${sum}`)
  const toMB = (x) => Math.round((x / MB) * 10) / 10
  return {
    impl,
    n,
    ms: Math.round(ms),
    peakRssMB: toMB(process.resourceUsage().maxRSS * 1024),
    rssAtStartMB: toMB(rssAtStart),
    ...Object.fromEntries(Object.entries(peak).map(([k, v]) => [`${k}MB`, toMB(v)])),
  }
}

/** Runs one child; resolves to its result, with the GC trace's summary when traced. */
export function runPeakChild(impl, n, { trace = false, flags = [] } = {}) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...flags, ...(trace ? ['--trace-gc'] : []), SELF, '--child', impl, String(n)],
      { timeout: 600_000, maxBuffer: 256 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          resolve({ impl, error: stderr.trim().split('\n').pop() || err.message })
          return
        }
        const lines = stdout.trim().split('\n')
        const r = JSON.parse(lines.findLast((l) => l.startsWith('{')))
        if (trace) {
          const scavenges = lines.filter((l) => l.includes('Scavenge'))
          const marks = lines.filter((l) => l.includes('Mark-Compact') || l.includes('Mark-sweep'))
          r.scavenges = scavenges.length
          r.markCompacts = marks.length
          r.lastScavenge = scavenges.at(-1)?.replace(/^\[\d+:0x[0-9a-f]+\]\s+/, '')
          r.lastMarkCompact = marks.at(-1)?.replace(/^\[\d+:0x[0-9a-f]+\]\s+/, '')
        }
        resolve(r)
      },
    )
  })
}

/**
 * The runs: `runs` children per implementation, alternating. Resolves to a row per implementation
 * (medians of its runs: peak RSS with its range, the sampled heap figures, items/s) and the target
 * "stageline's peak within 3 MB of p-map's".
 */
export async function measurePeak({
  n = 10_000_000,
  runs = 3,
  impls = PEAK_IMPLS,
  trace = false,
  log = () => {},
} = {}) {
  const all = new Map(impls.map((i) => [i, []]))
  for (let r = 0; r < runs; r++) {
    for (let k = 0; k < impls.length; k++) {
      const impl = impls[(k + r) % impls.length]
      const res = await runPeakChild(impl, n, { trace })
      all.get(impl).push(res)
      log(`  ${JSON.stringify(res)}`)
    }
  }
  const rows = impls.map((impl) => {
    const failed = all.get(impl).find((x) => x.error !== undefined)
    if (failed !== undefined) return { impl, error: failed.error }
    const rs = all.get(impl)
    const med = (k) => median(rs.map((x) => x[k]))
    const peaks = rs.map((x) => x.peakRssMB)
    return {
      impl,
      error: undefined,
      runs: rs.length,
      peakRssMB: med('peakRssMB'),
      peakRssMin: Math.min(...peaks),
      peakRssMax: Math.max(...peaks),
      rssAtStartMB: med('rssAtStartMB'),
      heapCommittedMB: med('heapCommittedMB'),
      heapUsedMB: med('heapUsedMB'),
      newSpaceMB: med('newSpaceMB'),
      oldSpaceMB: med('oldSpaceMB'),
      itemsPerSec: (n * 1000) / med('ms'),
    }
  })
  const sl = rows.find((r) => r.impl === 'stageline')
  const pm = rows.find((r) => r.impl === 'p-map')
  const targets = []
  if (sl !== undefined && pm !== undefined) {
    const ok = sl.error === undefined && pm.error === undefined
    targets.push({
      workload: 'memory-peak',
      text: `memory peak, 1 KB records through a sync and an async map stage, ${n.toLocaleString('en-US')} items: stageline within 3 MB of p-map's`,
      value: ok
        ? `${sl.peakRssMB.toFixed(1)} MB (${sl.peakRssMin.toFixed(1)}..${sl.peakRssMax.toFixed(1)}) vs ${pm.peakRssMB.toFixed(1)} MB (${pm.peakRssMin.toFixed(1)}..${pm.peakRssMax.toFixed(1)}), medians of ${runs}`
        : (sl.error ?? pm.error),
      pass: ok && sl.peakRssMB <= pm.peakRssMB + 3,
    })
  }
  return { rows, targets }
}

/** The table as printed. */
export function peakTable(rows) {
  const lines = [
    '  implementation  peak RSS MB (min..max)  RSS at start  heap committed  heap used  new space  old space  items/s',
  ]
  for (const r of rows) {
    lines.push(
      r.error !== undefined
        ? `  ${r.impl.padEnd(14)}  FAILED ${r.error}`
        : `  ${r.impl.padEnd(14)}  ${r.peakRssMB.toFixed(1).padStart(6)} (${r.peakRssMin.toFixed(1)}..${r.peakRssMax.toFixed(1)})      ${r.rssAtStartMB.toFixed(1).padStart(12)}  ${r.heapCommittedMB.toFixed(1).padStart(14)}  ${r.heapUsedMB.toFixed(1).padStart(9)}  ${r.newSpaceMB.toFixed(1).padStart(9)}  ${r.oldSpaceMB.toFixed(1).padStart(9)}  ${r.itemsPerSec.toFixed(0).padStart(7)}`,
    )
  }
  return lines.join('\n')
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2)
  if (args[0] === '--child') {
    console.log(JSON.stringify(await child(args[1], Number(args[2]))))
  } else {
    const n = intFlag(args, 'items', 10_000_000)
    const runs = intFlag(args, 'runs', 3)
    const at = args.indexOf('--impls')
    const impls = at < 0 ? PEAK_IMPLS : args[at + 1].split(',')
    const trace = args.includes('--trace')
    const load = () =>
      loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')
    console.log(
      `memory peak: ${n.toLocaleString('en-US')} records of 1 KB, sync map x4 (toUpperCase), async map x2, for await yielding every 100; ${runs} runs, a process each; load average ${load()}`,
    )
    const { rows, targets } = await measurePeak({ n, runs, impls, trace, log: console.log })
    console.log(`\n${peakTable(rows)}\n  (medians of ${runs} runs; load average at the end ${load()})`)
    for (const t of targets) console.log(`  ${t.pass ? 'met   ' : 'MISSED'}  ${t.text}: ${t.value}`)
  }
}

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
 * - `p-map`: `pMapIterable` twice (concurrency 4 and 2, its default backpressure).
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

export const PEAK_IMPLS = ['stageline', 'p-map', 'stageline-q4']

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
  if (impl === 'p-map') {
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
        const r = JSON.parse(lines.pop())
        if (trace) {
          const scavenges = lines.filter((l) => l.includes('Scavenge'))
          const marks = lines.filter((l) => l.includes('Mark-Compact') || l.includes('Mark-sweep'))
          r.scavenges = scavenges.length
          r.markCompacts = marks.length
          r.lastScavenge = scavenges.at(-1)?.replace(/^\[\d+:0x[0-9a-f]+\]\s+/, '')
        }
        resolve(r)
      },
    )
  })
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
    const all = new Map(impls.map((i) => [i, []]))
    for (let r = 0; r < runs; r++) {
      for (let k = 0; k < impls.length; k++) {
        const impl = impls[(k + r) % impls.length]
        const res = await runPeakChild(impl, n, { trace })
        all.get(impl).push(res)
        console.log(`  ${JSON.stringify(res)}`)
      }
    }
    console.log(
      '\n  implementation  peak RSS MB (min..max)  heap committed  heap used  new space  old space  items/s',
    )
    for (const impl of impls) {
      const rs = all.get(impl).filter((x) => x.error === undefined)
      if (rs.length === 0) {
        console.log(`  ${impl.padEnd(14)}  FAILED`)
        continue
      }
      const med = (k) => median(rs.map((x) => x[k]))
      const peaks = rs.map((x) => x.peakRssMB)
      console.log(
        `  ${impl.padEnd(14)}  ${med('peakRssMB').toFixed(1).padStart(6)} (${Math.min(...peaks).toFixed(0)}..${Math.max(...peaks).toFixed(0)})      ${med('heapCommittedMB').toFixed(1).padStart(6)}  ${med('heapUsedMB').toFixed(1).padStart(9)}  ${med('newSpaceMB').toFixed(1).padStart(9)}  ${med('oldSpaceMB').toFixed(1).padStart(9)}  ${((n * 1000) / med('ms')).toFixed(0).padStart(7)}`,
      )
    }
    console.log(`  (medians of ${runs} runs; load average at the end ${load()})`)
  }
}

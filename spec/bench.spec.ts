/**
 * Smoke test of the benchmark suite (benchmarks/): at tiny sizes, every implementation of every
 * workload produces the right count and sum (and keeps input order where it promises to), and the
 * harness refuses to post a number for a run whose result is wrong. No timing is asserted.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { describe, expect, test } from 'vitest'
import { renderChart } from '../benchmarks/chart.js'
import {
  CLEAN_CASES,
  cleanCheck,
  measureClean,
  measureImport,
  rowId,
  YOUNG_SETTINGS,
} from '../benchmarks/clean.js'
import { measureWorkload, median, timeOnce } from '../benchmarks/harness.js'
import { HTTP_IMPLS, httpTargets, measureHttp } from '../benchmarks/http.js'
import { MEMORY_IMPLS, measureMemory, memoryExpect, runChild } from '../benchmarks/memory.js'
import { measurePeak, PEAK_IMPLS, runPeakChild } from '../benchmarks/memory-peak.js'
import { deferToClean, evaluateTargets, fmtPeak, toJson } from '../benchmarks/report.js'
import type { BenchResult, Impl, MemoryRow, Row, Workload } from '../benchmarks/types.js'
import { checkResult, defineWorkloads, SIZES } from '../benchmarks/workloads.js'
import { runYoungCase, YOUNG_CASES } from '../benchmarks/young.js'
import * as sl from '../lib/index.js'

const workloads = defineWorkloads(sl, SIZES.tiny)

describe.each(workloads.map((w) => [w.id, w] as const))('workload %s', (_id, w) => {
  test.each(w.impls.map((impl) => [impl.label, impl] as const))(
    '%s produces every item once',
    async (_label, impl) => {
      const result = await impl.run(w.n)
      expect(result).toMatchObject(w.expect(w.n))
      if (impl.ordered === true) expect(result.inversions).toBe(0)
      expect(checkResult(w, impl, w.n, result)).toBeUndefined()
    },
  )
})

test('every workload has its baseline and stageline among its implementations', () => {
  for (const w of workloads) {
    const names = w.impls.map((i) => i.name)
    expect(names).toContain(w.baseline)
    expect(w.impls.some((i) => i.role === 'stageline')).toBe(true)
    expect(new Set(names).size).toBe(names.length)
  }
})

test('the ordered workload reports the peak reorder buffer within stageline bound', async () => {
  const w = workloads.find((x) => x.id === 'ordered')!
  const impl = w.impls.find((i) => i.name === 'stageline ordered')!
  const result = await impl.run(w.n)
  expect(result.inversions).toBe(0)
  // 8 workers, qsize 64: the window never holds more than qsize + workers items
  expect(result.peakAhead).toBeGreaterThanOrEqual(0)
  expect(result.peakAhead).toBeLessThanOrEqual(64 + 8)
})

describe('overhead targets in a clean process (benchmarks/clean.js)', () => {
  test.each(CLEAN_CASES.map((c) => [rowId(c), c] as const))(
    '%s: every side gives the right count and sum, and a ratio comes out',
    async (id, c) => {
      const r = await measureClean(sl, { ...c, n: 300, rounds: 2 })
      expect(r.row).toBe(id)
      expect(r.ratio).toBeGreaterThan(0)
      expect(r.ratioMin).toBeLessThanOrEqual(r.ratio)
      expect(r.bareNs).toBeGreaterThan(0)
      // the generator rows are judged against the least queued design, timed in the same rounds
      if (c.against === 'least-queued') expect(r.againstNs).toBeGreaterThan(0)
      else expect(r.againstNs).toBeUndefined()
    },
  )

  test('the import is measured on its own row, in fresh processes', async () => {
    const imp = await measureImport(1)
    expect(imp.median).toBeGreaterThan(0)
  })

  test('each case runs in a child process of its own and is judged against its target', async () => {
    // the children load the built package (dist/), which `npm test` builds before the specs
    const { results, targets } = await cleanCheck({ n: 200, rounds: 1 })
    // every case with V8's default young generation, then with one fixed at 16 MB
    expect(results.map((r) => r.error)).toEqual([...CLEAN_CASES, ...CLEAN_CASES].map(() => undefined))
    expect(results.map((r) => r.youngMB)).toEqual(YOUNG_SETTINGS.flatMap((y) => CLEAN_CASES.map(() => y)))
    expect(targets.map((t) => t.workload)).toEqual(results.map((r) => r.workload))
    targets.forEach((t, i) => {
      const young = i < CLEAN_CASES.length ? '' : ', young generation 16 MB'
      expect(t.text).toMatch(
        new RegExp(
          `alone in its process${young}: stageline >= [\\d.]+x the (bare chain|least queued design)$`,
        ),
      )
    })
  })
})

describe('latency on real sockets (benchmarks/http.js)', () => {
  test('every implementation fetches every item once from the server child, and the targets are judged', async () => {
    // a server child and a client child per implementation, on a few items: no timing is asserted
    const lines: string[] = []
    const { rows, targets } = await measureHttp({ n: 60, rounds: 1, log: (l) => lines.push(l) })
    expect(rows.map((r) => r.name)).toEqual(HTTP_IMPLS.map((i) => i.name))
    for (const r of rows) {
      expect(r.error).toBeUndefined()
      if (r.error === undefined) {
        expect(r.runs).toBe(1)
        expect(r.p50.median).toBeGreaterThan(0)
        expect(r.p99.median).toBeGreaterThanOrEqual(r.p50.median)
      }
    }
    expect(lines).toHaveLength(HTTP_IMPLS.length)
    expect(targets.map((t) => t.text)).toEqual([
      expect.stringMatching(/^http: stageline throughput >= the best peer's/),
      expect.stringMatching(/^http: stageline p50 latency within 5% of the best peer's/),
      expect.stringMatching(/^http: stageline p99 latency within 5% of the best peer's/),
    ])
  })

  test('the targets compare stageline with the best peer on each measure', () => {
    const spread = (median: number) => ({ median, min: median, max: median })
    const row = (name: string, role: 'stageline' | 'peer', rate: number, p50: number, p99: number) => ({
      name,
      label: name,
      role,
      error: undefined,
      runs: 1,
      itemsPerSec: spread(rate),
      p50: spread(p50),
      p99: spread(p99),
      peakWaiting: 0,
    })
    const targets = httpTargets([
      row('stageline', 'stageline', 100, 10.4, 30),
      row('a', 'peer', 100, 10, 40),
      row('b', 'peer', 90, 12, 25),
    ])
    expect(targets.map((t) => t.pass)).toEqual([true, true, false])
    expect(targets[2]!.text).toMatch(/\(b\)$/)
  })
})

describe('memory peak (benchmarks/memory-peak.js)', () => {
  test('every implementation runs in a child of its own, gives the right sum and reports its heap', async () => {
    const { rows, targets } = await measurePeak({ n: 2_000, runs: 1 })
    expect(rows.map((r) => r.impl)).toEqual(PEAK_IMPLS)
    for (const r of rows) {
      expect(r.error).toBeUndefined()
      if (r.error === undefined) {
        expect(r.peakRssMB).toBeGreaterThan(0)
        expect(r.heapCommittedMB).toBeGreaterThan(0)
        expect(r.newSpaceMB).toBeGreaterThan(0)
      }
    }
    expect(targets).toHaveLength(1)
    expect(targets[0]!.text).toMatch(/stageline within 3 MB of p-map's$/)
  })

  test('with --trace-gc a child counts its scavenges', async () => {
    const r = await runPeakChild('stageline', 2_000, { trace: true })
    expect(r.error).toBeUndefined()
    if (r.error === undefined) expect(r.scavenges).toBeGreaterThanOrEqual(0)
  })
})

describe('memory workload', () => {
  test.each(MEMORY_IMPLS.map((impl) => [impl.label, impl] as const))(
    '%s produces every item once',
    async (_label, impl) => {
      const n = 500
      const result = await impl.run(n, sl)
      expect(result).toMatchObject(memoryExpect(n))
    },
  )

  test('a child process runs one implementation and reports its peak RSS', async () => {
    const r = await runChild('bare', 300)
    expect(r.error).toBeUndefined()
    if (r.error === undefined) {
      expect(r).toMatchObject({ impl: 'bare', n: 300, ...memoryExpect(300) })
      expect(r.maxRssMB).toBeGreaterThan(0)
    }
  })

  test('a child process given an unknown implementation reports an error', async () => {
    const r = await runChild('no-such-library', 10)
    expect(r.error).toMatch(/usage: node memory-child\.js/)
  })
  test('the implementations the targets compare run `repeats` times a size; their peak is the median', async () => {
    const names = ['stageline', 'p-map', 'bare']
    const lines: string[] = []
    const rows = await measureMemory({
      sizes: [300, 600],
      parallel: 2,
      only: (name) => names.includes(name),
      repeats: 3,
      log: (line) => lines.push(line),
    })
    expect(rows.map((r) => r.impl)).toEqual(['stageline', 'bare', 'p-map']) // in MEMORY_IMPLS' order
    // stageline and p-map are `required` (the targets need them): 3 children a size; bare: 1
    expect(lines).toHaveLength(2 * (3 + 3 + 1))
    for (const r of rows) {
      expect(r.error).toBeNull()
      expect(r.points.map((p) => p.n)).toEqual([300, 600])
      for (const p of r.points) {
        if (r.impl === 'bare') expect(p.rssRuns).toBeUndefined()
        else {
          expect(p.rssRuns).toHaveLength(3)
          expect(p.maxRssMB).toBe(median(p.rssRuns!))
        }
      }
    }
    await expect(measureMemory({ sizes: [300], repeats: 0 })).rejects.toThrow(
      /repeats must be a positive integer, got 0/,
    )
  })

  test('one failed run of a repeated point fails the point instead of being left out of the median', async () => {
    const calls: string[] = []
    // children faked: stageline's second run at 600 items fails, every other run reports 50 + n / 100 MB
    const run = async (name: string, n: number) => {
      calls.push(`${name} ${n}`)
      const seen = calls.filter((c) => c === `${name} ${n}`).length
      if (name === 'stageline' && n === 600 && seen === 2) return { error: 'child failed: out of memory' }
      return { impl: name, n, ...memoryExpect(n), maxRssMB: 50 + n / 100, ms: 10 }
    }
    const rows = await measureMemory({
      sizes: [300, 600],
      only: (name) => name === 'stageline',
      repeats: 3,
      run,
    })
    expect(calls.filter((c) => c === 'stageline 600')).toHaveLength(3)
    const [row] = rows
    expect(row!.error).toBe('child failed: out of memory')
    expect(row!.points).toEqual([
      { n: 300, maxRssMB: 53, itemsPerSec: 30_000, rssRuns: [53, 53, 53] },
      { n: 600, maxRssMB: null, itemsPerSec: null },
    ])
    expect(row!.growthMB).toBeNull()
  })

  test('a run whose count or sum is wrong is an error, not a point', async () => {
    const run = async (name: string, n: number) => ({
      impl: name,
      n,
      count: n - 1,
      sum: 0,
      maxRssMB: 50,
      ms: 10,
    })
    const [row] = await measureMemory({ sizes: [300], only: (name) => name === 'bare', run })
    expect(row!.error).toBe(`count 299 sum 0, expected count 300 sum ${memoryExpect(300).sum}`)
    expect(row!.points).toEqual([{ n: 300, maxRssMB: null, itemsPerSec: null }])
  })
})

// a workload made up for the harness: counts 0..n-1 (sum n(n-1)/2), with implementations that are right or wrong
function fakeWorkload(impls: Impl[], reducedN?: number): Workload {
  return {
    id: 'fake',
    group: 'fake',
    title: 'fake',
    n: 200,
    reducedN,
    baseline: 'base',
    expect: (n) => ({ count: n, sum: (n * (n - 1)) / 2 }),
    target: { impl: 'good', min: 1, text: 'good >= 1x' },
    impls,
  }
}
const counting = (name: string, role: Impl['role'] = 'peer'): Impl => ({
  name,
  label: name,
  role,
  run: async (n) => ({ count: n, sum: (n * (n - 1)) / 2, inversions: 0 }),
})

describe('harness', () => {
  test('a run with a wrong sum posts no number, and the right ones do', async () => {
    const wrong: Impl = { ...counting('wrong'), run: async (n) => ({ count: n, sum: 1, inversions: 0 }) }
    const rows = await measureWorkload(
      fakeWorkload([counting('base', 'baseline'), counting('good', 'stageline'), wrong]),
      { rounds: 3, warmupN: 50 },
    )
    const by = Object.fromEntries(rows.map((r) => [r.impl, r]))
    expect(by.wrong).toMatchObject({ itemsPerSec: null, ratio: null })
    expect(by.wrong!.error).toMatch(/sum 1, expected 1225/)
    expect(by.good).toMatchObject({ error: null, runs: 3 })
    expect(by.good!.ratio).toBeGreaterThan(0)
    expect(by.base).toMatchObject({ error: null, runs: 3, ratio: 1 })
  })

  test('a run that throws, or promises order and breaks it, posts no number', async () => {
    const throws: Impl = {
      ...counting('throws'),
      run: async () => {
        throw new TypeError('boom')
      },
    }
    const shuffled: Impl = {
      ...counting('shuffled'),
      ordered: true,
      run: async (n) => ({ count: n, sum: (n * (n - 1)) / 2, inversions: 3 }),
    }
    const rows = await measureWorkload(fakeWorkload([counting('base', 'baseline'), throws, shuffled]), {
      rounds: 1,
      warmupN: 50,
    })
    expect(rows.find((r) => r.impl === 'throws')!.error).toMatch(/threw TypeError: boom/)
    expect(rows.find((r) => r.impl === 'shuffled')!.error).toMatch(/3 items out of input order/)
  })

  test('a run that never settles fails with a timeout instead of hanging the suite', async () => {
    const hangs: Impl = { ...counting('hangs'), run: () => new Promise(() => {}) }
    const r = await timeOnce(fakeWorkload([hangs]), hangs, 10, 30)
    expect(r.error).toMatch(/no result after 30 ms/)
  })

  test('a failing baseline leaves no ratio standing', async () => {
    const base: Impl = {
      ...counting('base', 'baseline'),
      run: async (n) => ({ count: n - 1, sum: 0, inversions: 0 }),
    }
    const rows = await measureWorkload(fakeWorkload([base, counting('good', 'stageline')]), {
      rounds: 1,
      warmupN: 50,
    })
    for (const r of rows) expect(r.ratio).toBeNull()
  })

  test('slow peers run on the reduced size, and the baseline is also run at that size', async () => {
    const sizes: number[] = []
    const base: Impl = {
      ...counting('base', 'baseline'),
      run: async (n) => {
        sizes.push(n)
        return { count: n, sum: (n * (n - 1)) / 2, inversions: 0 }
      },
    }
    const w = fakeWorkload([base, counting('good', 'stageline'), counting('peer')], 40)
    // reduceBelow Infinity: every peer counts as slow, whatever the clock says
    const rows = await measureWorkload(w, { rounds: 2, warmupN: 20, reduceBelow: Number.POSITIVE_INFINITY })
    expect(rows.find((r) => r.impl === 'peer')).toMatchObject({ n: 40, reduced: true, runs: 2 })
    expect(rows.find((r) => r.impl === 'good')).toMatchObject({ n: 200, reduced: false })
    expect(rows.find((r) => r.impl === 'base')).toMatchObject({ n: 200, runs: 2 })
    expect(sizes.filter((n) => n === 40)).toHaveLength(2)
    // reduceBelow 0: nobody is
    const none = await measureWorkload(w, { rounds: 1, warmupN: 20, reduceBelow: 0 })
    expect(none.every((r) => !r.reduced && r.n === 200)).toBe(true)
  })

  test('median', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(median([])).toBeNaN()
  })
})

describe('report and chart', () => {
  const row = (
    impl: string,
    role: Row['role'],
    ratio: number | null,
    workload = 'overhead-async/w1',
  ): Row => ({
    workload,
    group: workload.split('/')[0]!,
    title: `${workload} <title & "quotes">`,
    impl,
    label: `${impl} <label>`,
    role,
    ordered: undefined,
    baseline: 'bare',
    n: 1000,
    reduced: false,
    runs: 1,
    itemsPerSec: ratio === null ? null : ratio * 1000,
    ratio,
    ratioMin: ratio,
    ratioMax: ratio,
    target: { impl: 'stageline', min: 1, text: 'stageline >= 1x the bare chain' },
    peakReorder: null,
    error: ratio === null ? 'count 1, expected 2' : null,
  })
  const memory = (impl: string, rss: [number, number]): MemoryRow => ({
    workload: 'memory',
    impl,
    label: impl,
    role: impl === 'stageline' ? 'stageline' : 'peer',
    points: [
      { n: 1_000_000, maxRssMB: rss[0], itemsPerSec: 1 },
      { n: 10_000_000, maxRssMB: rss[1], itemsPerSec: 1 },
    ],
    growthMB: rss[1] - rss[0],
    error: null,
    skipped: null,
  })

  test('targets are met or missed by the stageline cell and the memory rows', () => {
    const verdicts = evaluateTargets(
      [
        row('bare', 'baseline', 1),
        row('stageline', 'stageline', 1.2),
        row('stageline', 'stageline', 0.8, 'x/w4'),
      ],
      [memory('stageline', [80, 85]), memory('p-map', [84, 85])],
    )
    expect(verdicts.map((v) => v.pass)).toEqual([true, false, true, true])
    const worse = evaluateTargets([], [memory('stageline', [80, 95]), memory('p-map', [84, 85])])
    expect(worse.map((v) => v.pass)).toEqual([false, false])
  })

  test('an in-process verdict on a workload measured alone is for information; the row alone decides', () => {
    const inProcess = evaluateTargets(
      [
        row('bare', 'baseline', 1),
        row('stageline', 'stageline', 1.2, 'x/w1'),
        row('stageline', 'stageline', 0.8, 'x/w4'),
      ],
      [],
    )
    const deferred = deferToClean(inProcess, [
      { workload: 'x/w1' },
      { workload: 'x/w4', error: 'exit code 1' },
    ])
    // x/w1 was measured alone: its in-process row says so and decides nothing
    expect(deferred[0]).toMatchObject({ workload: 'x/w1', pass: true, info: true })
    expect(deferred[0]!.text).toMatch(/decided by the rows alone in their process/)
    // x/w4's clean child failed: the in-process verdict stands, missed
    expect(deferred[1]).toEqual(inProcess[1])
    expect(deferred[1]!.info).toBeUndefined()
  })

  test('a peak measured several times shows its median, range and number of runs', () => {
    expect(fmtPeak({ n: 1, maxRssMB: 93.2, itemsPerSec: 1, rssRuns: [95.1, 92.4, 93.2] })).toBe(
      '93 MB (92..95, median of 3)',
    )
    expect(fmtPeak({ n: 1, maxRssMB: 93.2, itemsPerSec: 1 })).toBe('93 MB')
    expect(fmtPeak({ n: 1, maxRssMB: null, itemsPerSec: null })).toBe('-')
  })

  test('the chart is an SVG with a bar per measured cell and escaped labels', () => {
    const result: BenchResult = {
      meta: { date: '2026-01-01', machine: 'test', command: 'npm run bench' },
      throughput: [row('bare', 'baseline', 1), row('stageline', 'stageline', 2.5), row('rxjs', 'peer', null)],
      memory: [memory('stageline', [80, 85])],
      extra: [],
      targets: [],
    }
    const svg = renderChart(result)
    expect(svg.startsWith('<svg ')).toBe(true)
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true)
    expect(svg).toContain('stageline &lt;label&gt;')
    expect(svg).toContain('&lt;title &amp; &quot;quotes&quot;&gt;')
    expect(svg).not.toContain('<label>')
    expect(svg).toContain('failed: count 1, expected 2')
    // two ratio bars and two memory bars, besides the background
    expect(svg.match(/<rect /g)).toHaveLength(5)
  })

  test('result JSON round-trips', () => {
    const value = { a: [1, 2.5, 3], b: { c: null, d: 'x', e: [] as number[] }, f: [{ g: true }] }
    expect(JSON.parse(toJson(value))).toEqual(value)
    const long = Array.from({ length: 60 }, (_, i) => i * 1001)
    expect(JSON.parse(toJson({ long }))).toEqual({ long })
  })
})

describe('cpu workload (benchmarks/cpu.js)', async () => {
  const { defineCpuWorkloads, SIZES: CPU_SIZES } = await import('../benchmarks/cpu.js')
  const { Piscina } = await import('piscina')
  const cpuWorkloads = defineCpuWorkloads(sl, Piscina, CPU_SIZES.tiny)
  describe.each(cpuWorkloads.map((w) => [w.id, w] as const))('workload %s', (_id, w) => {
    const sizes = [...new Set([w.n, w.reducedN ?? w.n])]
    test.each(w.impls.map((impl) => [impl.label, impl] as const))(
      '%s produces every item once',
      async (_label, impl) => {
        for (const n of sizes) expect(checkResult(w, impl, n, await impl.run(n))).toBeUndefined()
      },
    )
  })
})

describe('park counter (benchmarks/parks.js)', () => {
  test('counts parks of the built library: with lazy hand-over, three 1-worker generator stages park on few items', () => {
    // the script patches a copy of dist/ (npm test builds it before the specs run)
    expect(existsSync('dist/channel/waiter.js'), 'dist/ is missing: run `npm run build`').toBe(true)
    const run = spawnSync(
      process.execPath,
      ['benchmarks/parks.js', 'dist', '--items', '3000', '--runs', '1'],
      {
        encoding: 'utf8',
      },
    )
    expect(run.stderr).toBe('')
    expect(run.status).toBe(0)
    const m = /^dist: workers 1, parks per item (\d+\.\d+)\n$/.exec(run.stdout)
    expect(m, run.stdout).not.toBeNull()
    // woken at once, each stage parked once per item (1.0, the build before lazy hand-over); now a
    // taker is woken when its sender parks, and finds a run of items: 0.033 at this size
    expect(Number(m![1])).toBeLessThan(0.2)
  })
})

describe('promise jobs per item (benchmarks/floors.js --jobs)', () => {
  test('three stage()s run no more promise jobs than the least design with a queue between generator steps', () => {
    expect(existsSync('dist/channel/waiter.js'), 'dist/ is missing: run `npm run build`').toBe(true)
    const run = spawnSync(process.execPath, ['benchmarks/floors.js', '--jobs', '--items', '5000'], {
      encoding: 'utf8',
    })
    expect(run.stderr).toBe('')
    expect(run.status).toBe(0)
    const jobs = new Map<string, number>()
    for (const line of run.stdout.split('\n').slice(1)) {
      const m = /^\s*(\d+\.\d+)\s+(.+)$/.exec(line)
      if (m) jobs.set(m[2]!, Number(m[1]))
    }
    const of = (label: string) => {
      const v = jobs.get(label)
      expect(v, `no line "${label}" in:\n${run.stdout}`).toBeDefined()
      return v!
    }
    // the bare chain: each generator's `for await` and its `yield`, the source's async-from-sync
    // wrapper and the consumer; a queue between two steps adds the pump's then() on each step
    expect(of('bare chain of 3 generator steps')).toBe(8)
    const minimal = of('minimal queue + pump per generator step (no stats, errors or stop)')
    expect(minimal).toBeCloseTo(10, 1)
    expect(of('stageline, 3 stage()s, one generator step each')).toBeLessThan(minimal + 0.1)
    // synchronous stages run the consumer's one job per item, and a few parks
    expect(of('stageline, 3 sync stages, for await')).toBeLessThan(
      of('for await over resolved promises (floor)') + 0.1,
    )
  })
})

describe('young generation (benchmarks/young.js)', () => {
  test('a child runs the chain and stageline; the 16 MB setting starts the new space at 16 MB, above the default', async () => {
    const fixed = YOUNG_CASES.find((c) => c.label === 'semi-space fixed at 16 MB')!
    const r = await runYoungCase(fixed, 2000, 1)
    expect(r.error).toBeUndefined()
    // V8 reports the committed new space: 16 MB from the start with the flag, 4 MB here without
    expect(r.newSpaceMB).toBeGreaterThanOrEqual(16)
    const plain = await runYoungCase(YOUNG_CASES[0]!, 2000, 1)
    expect(plain.newSpaceMB).toBeLessThan(r.newSpaceMB)
    expect(r.bareNs).toBeGreaterThan(0)
    expect(r.stagelineNs).toBeGreaterThan(0)
    const held = await runYoungCase(YOUNG_CASES.find((c) => c.setup === 'hold:60000')!, 2000, 1)
    expect(held.error).toBeUndefined()
    expect(held.held).toBe(60_000)
  })
})

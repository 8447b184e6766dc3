/**
 * Run reports: the `report` option on every way of running a pipeline, the path checked before any
 * item is read, the report written when the run settles (done, failed, stopped) and before its
 * promise settles, bounded sampling, items rendered safely, and the bottleneck rule on pipelines
 * whose slow part is known, run in virtual time (spec/helpers/virtual-time.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { drain } from '../lib/engine/consumer.js'
import { Execution } from '../lib/engine/execution.js'
import { snapshot } from '../lib/engine/stats.js'
import {
  feed,
  mapStage,
  type Pipeline,
  pipe,
  rateLimit,
  stage,
  TaskException,
  threadStage,
} from '../lib/index.js'
import { advise, findBottleneck, type StageTime } from '../lib/report/bottleneck.js'
import type { RunReport } from '../lib/report/format.js'
import { renderReport } from '../lib/report/index.js'
import { preview, reportError } from '../lib/report/preview.js'
import { MAX_SAMPLES, meanFill, recordRun, reportJson, SAMPLE_MS } from '../lib/report/recorder.js'
import {
  defer,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  spiedSyncSource,
} from './helpers/instruments.js'
import { VirtualTime } from './helpers/virtual-time.js'

recordUnhandledRejections()

const dir = mkdtempSync(join(tmpdir(), 'stageline-report-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
/** A fresh file name in the spec's folder. */
function file(ext: 'json' | 'html'): string {
  return join(dir, `run-${++files}.${ext}`)
}
function readReport(path: string): RunReport {
  return JSON.parse(readFileSync(path, 'utf8')) as RunReport
}

/** Collects process warnings while `fn` runs. */
async function warnings(fn: () => Promise<unknown>): Promise<string[]> {
  const seen: string[] = []
  const on = (w: Error): void => {
    seen.push(w.message)
  }
  process.on('warning', on)
  try {
    await fn()
    // a warning is emitted on the next tick
    await new Promise((r) => setImmediate(r))
  } finally {
    process.off('warning', on)
  }
  return seen
}

const double = mapStage((n: number) => n * 2, { name: 'double' })

describe('the report option', () => {
  test('bad values are refused, naming the option and what is allowed', async () => {
    const p = pipe([1], double)
    await expect(p.toArray({ report: 'run.txt' } as never)).rejects.toThrow(
      'toArray(): expected `report` to be the path of a file ending in .html (a page) or .json (the data), got "run.txt" (string)',
    )
    await expect(p.execute({ report: 5 } as never)).rejects.toThrow(
      /expected `report` to be the path of a file/,
    )
    await expect(p.toArray({ reportItems: 'no' } as never)).rejects.toThrow(
      'toArray(): expected `reportItems` to be true or false, got "no" (string)',
    )
    await expect(p.toArray({ dashboard: {} } as never)).rejects.toThrow(
      'toArray(): expected `dashboard` to be a dashboard made by `dashboard()` of stageline/dashboard, got [object Object] (object)',
    )
    expect(() => p.start({ telemetry: 'otel' } as never)).toThrow(
      'start(): expected `telemetry` to be telemetry made by `otelMetrics()` of stageline/otel, got "otel" (string)',
    )
  })

  test('a directory that does not exist refuses the run before any item is read, naming the path', async () => {
    const { source, spy } = spiedSyncSource(10)
    const path = join(dir, 'missing', 'run.html')
    const err = await rejectionOf(pipe(source, double).toArray({ report: path }))
    expect((err as Error).message).toBe(
      `toArray(): cannot write the run report to ${path}: the directory ${join(dir, 'missing')} does not exist`,
    )
    expect(spy.opened).toBe(0)
    // results(): on the first next(), which rejects; the source is never opened
    const it = pipe(source, double).results({ report: path })
    await expect(it.next()).rejects.toThrow(/cannot write the run report/)
    expect(spy.opened).toBe(0)
    // start(): at the call, as any bad option
    expect(() => pipe(source, double).start({ report: path })).toThrow(/cannot write the run report/)
    expect(spy.reads).toBe(0)
  })

  test('a path that is a directory, or whose parent is a file, is refused', async () => {
    const sub = join(dir, 'a-dir.json')
    mkdirSync(sub)
    await expect(pipe([1], double).execute({ report: sub })).rejects.toThrow(
      `execute(): cannot write the run report to ${sub}: it is a directory`,
    )
    const plain = file('json')
    writeFileSync(plain, '')
    await expect(pipe([1], double).execute({ report: join(plain, 'x.json') })).rejects.toThrow(
      `is not a directory`,
    )
  })

  test('toArray() settles after the JSON report is written, with its version, counts and samples', async () => {
    const path = file('json')
    const out = await pipe(numbers(50), double).toArray({ report: path })
    expect(out).toHaveLength(50)
    const r = readReport(path)
    expect(r).toMatchObject({
      format: 'stageline-report',
      version: 1,
      state: 'done',
      itemsOut: 50,
      error: null,
    })
    expect(r.events).toEqual([])
    expect(r.stages[0]).toMatchObject({
      name: 'double',
      index: 0,
      kind: 'mapStage',
      in: 50,
      out: 50,
      workers: 1,
    })
    expect(r.samples.t[0]).toBe(0)
    const s = r.samples.stages[0]!
    expect(s.out.at(-1)).toBe(50) // the last sample is the end of the run
    for (const series of Object.values(s)) expect(series).toHaveLength(r.samples.t.length)
    // the JSON is indented, with each series on one line
    expect(readFileSync(path, 'utf8')).toMatch(/\n {8}"out": \[0,(\d+,)*50\],?\n/)
  })

  test('execute(), results() and start() write reports too, and the HTML report is a page', async () => {
    const a = file('html')
    expect(await pipe([1, 2], double).execute({ report: a })).toBe(4)
    expect(readFileSync(a, 'utf8')).toMatch(/^<!doctype html>/)
    const b = file('json')
    const seen: number[] = []
    for await (const n of pipe([1, 2, 3], double).results({ report: b })) seen.push(n)
    expect(seen).toHaveLength(3)
    expect(readReport(b).state).toBe('done')
    const c = file('json')
    const run = pipe([1, 2, 3], double).start({ report: c })
    await run.done
    expect(readReport(c)).toMatchObject({ state: 'done', itemsOut: 3, runId: run.stats().runId })
  })

  test('a failed run writes its report, with the error and the item; the run still rejects with its TaskException', async () => {
    const path = file('json')
    const bad = mapStage(
      (n: number) => {
        if (n === 3) throw new Error('three is bad')
        return n
      },
      { name: 'check' },
    )
    const err = await rejectionOf(pipe([1, 2, 3, 4], bad).toArray({ report: path }))
    expect(err).toBeInstanceOf(TaskException)
    const r = readReport(path)
    expect(r.state).toBe('failed')
    expect(r.error).toMatchObject({
      name: 'TaskException',
      message: 'The task "check-0" raised Error: three is bad',
      stage: 'check',
      worker: 0,
      item: '3',
      cause: 'Error: three is bad',
    })
    expect(r.error?.stack).toContain('three is bad')
  })

  test('a run stopped by a break writes its report once the iterator has returned', async () => {
    const path = file('json')
    for await (const n of pipe(numbers(1000), double).results({ report: path })) if (n === 10) break
    const r = readReport(path)
    expect(r.state).toBe('stopped')
    expect(r.error?.name).toBe('RunStopped')
  })

  test('reportItems: false leaves the failed item out', async () => {
    const path = file('json')
    const bad = mapStage((_: { secret: string }) => {
      throw new Error('no')
    })
    await rejectionOf(pipe([{ secret: 'hunter2' }], bad).toArray({ report: path, reportItems: false }))
    const text = readFileSync(path, 'utf8')
    expect(text).not.toContain('hunter2')
    const r = JSON.parse(text) as RunReport
    expect(r.itemsIncluded).toBe(false)
    expect(r.error).not.toHaveProperty('item')
    expect(renderReport(r)).toContain('the item is left out of this report')
  })

  test('an item with a BigInt, a cycle and a throwing getter is rendered, bounded, without breaking the report', async () => {
    const item: Record<string, unknown> = { big: 10n ** 30n, deep: { a: { b: { c: { d: { e: 1 } } } } } }
    item.self = item
    Object.defineProperty(item, 'trap', {
      enumerable: true,
      get() {
        throw new Error('read me not')
      },
    })
    const path = file('html')
    const bad = mapStage((_: unknown) => {
      throw new Error('x')
    })
    await rejectionOf(pipe([item], bad).toArray({ report: path }))
    const html = readFileSync(path, 'utf8')
    expect(html).toContain('1000000000000000000000000000000n')
    expect(html).toContain('[Circular *1]')
    expect(preview('x'.repeat(10_000)).length).toBeLessThanOrEqual(2000)
    expect(preview(item)).toContain('[Object]') // the depth is bounded
    const revoked = Proxy.revocable({}, {})
    revoked.revoke()
    expect(typeof preview(revoked.proxy)).toBe('string')
    // an error that is not an Error, and one whose message throws when read
    expect(reportError(42, true)).toMatchObject({ name: 'number', message: '42', stage: null, cause: null })
    const hostile = new Error('m')
    Object.defineProperty(hostile, 'message', {
      get() {
        throw new Error('no')
      },
    })
    expect(reportError(hostile, true).name).toBe('Error')
  })

  test('a report that cannot be written at the end is a process warning naming the path; the results stand', async () => {
    const sub = join(dir, 'goes-away')
    mkdirSync(sub)
    const path = join(sub, 'run.json')
    const gate = defer()
    const held = mapStage(async (n: number) => {
      await gate.promise
      return n
    })
    let out: number[] = []
    const seen = await warnings(async () => {
      const running = pipe([1, 2, 3], held).toArray({ report: path })
      await new Promise((r) => setImmediate(r))
      rmSync(sub, { recursive: true })
      gate.resolve()
      out = await running
    })
    expect(out.sort()).toEqual([1, 2, 3])
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatch(
      new RegExp(`^stageline: could not write the run report to ${path}: Error: ENOENT`),
    )
    expect(existsSync(sub)).toBe(false)
  })
})

describe('sampling', () => {
  test('samples at most 100 ms apart, merged two by two past 600, so an hour of 10 stages stays under 1 MB', async () => {
    const c = new VirtualTime()
    const stages = Array.from({ length: 10 }, (_, i) =>
      mapStage(async (n: number) => n, { name: `stage-number-${i}` }),
    )
    const gate = defer()
    const p = pipe(
      (async function* () {
        yield 0
        await gate.promise
      })(),
      ...stages,
    )
    const exec = new Execution(p.plan, { clock: c.read, accounting: true })
    const rec = recordRun(exec, p.plan, {
      path: file('json'),
      items: true,
      clock: c.read,
      t0: c.now,
      manual: true,
    })
    const done = drain(exec, () => {})
    const counts: number[] = []
    for (let i = 1; i <= 36_000; i++) {
      c.now += 100
      rec.sample()
      // a look rebuilds the whole report: not on every sample
      if (i % 250 === 0 || (i > 595 && i < 605)) counts.push(rec.report().samples.t.length)
    }
    expect(Math.max(...counts)).toBeLessThanOrEqual(MAX_SAMPLES)
    const r = rec.report()
    expect(r.samples.t.length).toBeGreaterThan(MAX_SAMPLES / 2)
    expect(r.samples.intervalMs).toBe(SAMPLE_MS * 2 ** 6) // 60 s, 120 s, ... 3,840 s: six merges
    const t = r.samples.t
    for (let i = 2; i < t.length; i++) expect(t[i]! - t[i - 1]!).toBeLessThanOrEqual(r.samples.intervalMs)
    expect(Buffer.byteLength(reportJson(r))).toBeLessThan(1_000_000)
    expect(Buffer.byteLength(renderReport(r))).toBeLessThan(1_000_000)
    gate.resolve()
    await done
    await rec.written
  })

  test('merged samples keep the counters of the later one and the time-weighted mean of the gauges', async () => {
    const c = new VirtualTime()
    const gate = defer()
    const queued = 0
    const p = pipe(
      (async function* () {
        for (;;) {
          await gate.promise
          yield queued
        }
      })(),
      mapStage((n: number) => n),
    )
    const exec = new Execution(p.plan, { clock: c.read, accounting: true })
    const rec = recordRun(exec, p.plan, {
      path: file('json'),
      items: true,
      clock: c.read,
      t0: c.now,
      manual: true,
    })
    const done = drain(exec, () => {})
    // 600 samples 100 ms apart; the workers gauge reads 1 throughout
    for (let i = 0; i < MAX_SAMPLES - 1; i++) {
      c.now += 100
      rec.sample()
    }
    expect(rec.report().samples.t).toHaveLength(MAX_SAMPLES)
    c.now += 100
    rec.sample() // the 601st: merged down to 301
    const r = rec.report()
    expect(r.samples.t).toHaveLength(301)
    expect(r.samples.t.slice(0, 3)).toEqual([0, 200, 400])
    expect(r.samples.stages[0]!.workers.every((w) => w === 1)).toBe(true)
    // a sample that is not due yet (less than the doubled interval since the last) is not taken
    c.now += 100
    rec.sample()
    expect(rec.report().samples.t).toHaveLength(301)
    exec.stop(new Error('enough'), false)
    await done.catch(() => {})
    await rec.written
    expect(meanFill([0, 100, 300], [0, 4, 1], 4)).toBeCloseTo((1 * 100 + 0.25 * 200) / 300)
    expect(meanFill([0, 100], [0, 9], null)).toBeNull()
    expect(meanFill([0, 100], [0, 1], 0)).toBe(1)
  })

  test('a background run rewrites its report while it lives', async () => {
    const path = file('json')
    const gate = defer()
    const p = pipe(
      numbers(3),
      mapStage(async (n: number) => {
        await gate.promise
        return n
      }),
    )
    const exec = new Execution(p.plan, { accounting: true })
    const rec = recordRun(exec, p.plan, { path, items: true, rewriteMs: 5 })
    const done = drain(exec, () => {})
    const deadline = Date.now() + 10_000
    while (!existsSync(path) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    expect(readReport(path).state).toBe('running')
    gate.resolve()
    await done
    await rec.written
    expect(readReport(path)).toMatchObject({ state: 'done', itemsOut: 3 })
  })

  test('a run without report, dashboard or telemetry keeps no time book and holds nothing', async () => {
    let reads = 0
    const p = pipe(
      numbers(100),
      mapStage((n: number) => n, { qsize: 1 }),
    )
    const exec = new Execution(p.plan, { clock: () => ++reads })
    await drain(exec, () => {})
    expect(exec.accounting).toBe(false)
    expect(exec.stages[0]!.book.read()).toMatchObject({ starvedMs: 0, blockedMs: 0 })
    expect(exec.released()).toBeUndefined()
  })
})

/** Runs `p` in virtual time with a manual recording; `each` is the consumer's work per item. */
async function judge(
  p: Pipeline<unknown>,
  c: VirtualTime,
  each: () => unknown = () => {},
): Promise<RunReport> {
  const exec = new Execution(p.plan, { clock: c.read, accounting: true })
  const rec = recordRun(exec, p.plan, {
    path: file('json'),
    items: true,
    clock: c.read,
    t0: c.now,
    manual: true,
  })
  await drain(exec, () => {
    rec.sample()
    return each()
  })
  await rec.written
  return rec.report()
}

/** A map stage that takes `ms` of virtual time per item. */
function step(c: VirtualTime, name: string, ms: number): ReturnType<typeof mapStage<number, number>> {
  return mapStage(
    async (n: number) => {
      await c.sleep(ms)
      return n
    },
    { name, qsize: 4 },
  )
}

describe('the bottleneck', () => {
  const N = 200
  test.each([
    [0, 'fetch', [10, 1, 1]],
    [1, 'parse', [1, 10, 1]],
    [2, 'store', [1, 1, 10]],
  ] as const)(
    'stage %i, %s, the slow one, is named, with the waits on both sides',
    async (index, name, ms) => {
      const c = new VirtualTime()
      const names = ['fetch', 'parse', 'store']
      const r = await judge(pipe(numbers(N), ...names.map((n, i) => step(c, n, ms[i]!))), c)
      expect(r.bottleneck).toMatchObject({ stage: name, index })
      expect(r.verdict).toBe(r.bottleneck!.reason)
      expect(r.bottleneck!.reason).toMatch(
        new RegExp(`^${name} is the bottleneck: its workers were busy (9\\d|100)% of the time, while `),
      )
      if (index > 0)
        expect(r.bottleneck!.reason).toMatch(new RegExp(`${names[index - 1]} waited for room (8|9)\\d%`))
      else expect(r.bottleneck!.reason).toContain('the source kept it fed')
      if (index < 2)
        expect(r.bottleneck!.reason).toMatch(new RegExp(`${names[index + 1]} waited for input (8|9)\\d%`))
      else expect(r.bottleneck!.reason).toContain('the consumer kept up')
      expect(r.advice).toContain(name)
      expect(renderReport(r)).toContain(`data-stage="${name}">${name} is the bottleneck`)
    },
  )

  test('a slow source: no bottleneck, the source is the limit', async () => {
    const c = new VirtualTime()
    async function* slow() {
      for (let i = 0; i < N; i++) {
        await c.sleep(10)
        yield i
      }
    }
    const r = await judge(pipe(slow(), step(c, 'fetch', 1), step(c, 'parse', 1), step(c, 'store', 1)), c)
    expect(r.bottleneck).toBeNull()
    expect(r.verdict).toMatch(/^The source is the limit: fetch waited for input (8|9)\d% of the time/)
    expect(r.advice).toMatch(/^Make the source faster/)
  })

  test('a slow consumer: no bottleneck, the consumer is the limit, its queue full', async () => {
    const c = new VirtualTime()
    const r = await judge(
      pipe(numbers(N), step(c, 'fetch', 1), step(c, 'parse', 1), step(c, 'store', 1)),
      c,
      () => c.sleep(10),
    )
    expect(r.bottleneck).toBeNull()
    expect(r.verdict).toMatch(
      /^The consumer is the limit: store waited for room (8|9)\d% of the time and its output queue stayed full \(\d+% on average\)/,
    )
  })

  test('balanced stages: no bottleneck', async () => {
    const c = new VirtualTime()
    const r = await judge(
      pipe(numbers(N), step(c, 'fetch', 10), step(c, 'parse', 10), step(c, 'store', 10)),
      c,
    )
    expect(r.bottleneck).toBeNull()
    expect(r.verdict).toMatch(/^No stage holds the run back: the stages are balanced/)
    expect(r.advice).toBeNull()
  })

  test('a generator stage and a thread stage are judged the same way', async () => {
    const c = new VirtualTime()
    const slowGen = stage(
      async function* slowGen(xs: AsyncIterable<number>) {
        for await (const x of xs) {
          await c.sleep(10)
          yield x
        }
      },
      { qsize: 4 },
    )
    const r = await judge(pipe(numbers(100), step(c, 'fetch', 1), slowGen, step(c, 'store', 1)), c)
    expect(r.bottleneck).toMatchObject({ stage: 'slowGen', index: 1 })
    expect(r.stages[1]!.kind).toBe('stage')
    const work = new URL('./fixtures/threads/work.js', import.meta.url)
    const t = threadStage(work, { export: 'failAt57', threads: 1 })
    const tr = await pipe(numbers(10), t).toArray({ report: file('json') })
    expect(tr).toHaveLength(10)
  })

  test('no stages, or no time: nothing to judge', async () => {
    const c = new VirtualTime()
    const r = await judge(pipe([1, 2, 3]), c)
    expect(r).toMatchObject({ bottleneck: null, stages: [] })
    expect(r.verdict).toMatch(/no stages/)
    const none = findBottleneck([time('a', {})], { eventLoopBusy: null, cores: 2 })
    expect(none.verdict).toMatch(/too soon to judge/)
  })
})

/** A stage's time for the rule, working by default. */
function time(name: string, o: Partial<StageTime>): StageTime {
  return {
    name,
    kind: 'mapStage',
    workers: 4,
    rateLimited: false,
    limited: false,
    workingMs: 0,
    starvedMs: 0,
    blockedMs: 0,
    queueFill: 0,
    ...o,
  }
}

describe('the advice fits the stage', () => {
  const busy = { workingMs: 97 }
  const ctx = { eventLoopBusy: 0.1, cores: 8 }
  test('waiting on I/O: more workers', () => {
    expect(advise(time('fetch', busy), ctx)).toBe(
      'The workers of fetch spend their time waiting on I/O (the event loop was busy only 10% of the time): give it more workers than its 4.',
    )
  })
  test('CPU on the main thread: a thread stage', () => {
    expect(advise(time('parse', busy), { eventLoopBusy: 0.95, cores: 8 })).toMatch(
      /^The event loop was busy 95% of the time, so the work of parse is CPU on the main thread: move it to a thread stage/,
    )
  })
  test('rate-limited or held by a shared limit: nothing to add', () => {
    expect(advise(time('api', { ...busy, rateLimited: true }), ctx)).toMatch(
      /^Nothing to add to api: its rate limit sets the pace/,
    )
    expect(advise(time('db', { ...busy, limited: true }), ctx)).toMatch(
      /^Nothing to add to db: its shared `limit`/,
    )
  })
  test('a thread stage: more threads, up to the cores', () => {
    expect(advise(time('hash', { ...busy, kind: 'threadStage', workers: 2 }), ctx)).toBe(
      'hash runs on 2 threads and this machine has 8 cores: give it more threads.',
    )
    expect(advise(time('hash', { ...busy, kind: 'threadStage', workers: 8 }), ctx)).toMatch(
      /^hash already has a thread per core \(8\)/,
    )
  })
  test('a Redis stage: more serving processes', () => {
    expect(advise(time('remote', { ...busy, kind: 'redisStage', workers: 16 }), ctx)).toMatch(
      /^remote is served by other processes: start more of them, or raise its `capacity` \(now 16\)/,
    )
  })
  test('a rate-limited stage in a real run is advised so', async () => {
    const c = new VirtualTime()
    const api = mapStage(
      async (n: number) => {
        await c.sleep(10)
        return n
      },
      { name: 'api', rate: rateLimit(1e6), qsize: 4 },
    )
    const r = await judge(pipe(numbers(50), step(c, 'read', 1), api), c)
    expect(r.bottleneck?.stage).toBe('api')
    expect(r.stages[1]!.rateLimited).toBe(true)
    expect(r.advice).toMatch(/^Nothing to add to api/)
  })
})

describe('renderReport()', () => {
  test('refuses what is not a report of this version, saying what is wrong', () => {
    expect(() => renderReport('{nope')).toThrow(/^renderReport\(\): the text is not JSON/)
    expect(() => renderReport({} as never)).toThrow(
      'renderReport(): expected a stageline run report (an object whose `format` is "stageline-report")',
    )
    expect(() => renderReport({ format: 'stageline-report', version: 2 } as never)).toThrow(
      'renderReport(): the report is of format version 2, written by a newer stageline; this one reads version 1',
    )
    expect(() => renderReport({ format: 'stageline-report', version: 0 } as never)).toThrow(
      'renderReport(): expected a report of format version 1, got 0',
    )
    expect(() => renderReport({ format: 'stageline-report', version: 1, stages: [] } as never)).toThrow(
      /the report is incomplete/,
    )
  })

  test('escapes names and data, and shows events', async () => {
    const path = file('json')
    await pipe(
      [1],
      mapStage((n: number) => n, { name: '<script>alert(1)</script>' }),
    ).toArray({ report: path })
    const r = readReport(path)
    const html = renderReport(
      JSON.stringify({
        ...r,
        events: [{ at: 5, stage: r.stages[0]!.name, kind: 'workers', detail: '1 -> 2' }],
      }),
    )
    expect(html).not.toContain('<script>alert')
    expect(html).toContain('&#60;script&#62;alert(1)&#60;/script&#62;')
    expect(html).toContain('<section id="events">')
    // the embedded data cannot close its script element
    expect(html.match(/<\/script>/g)).toHaveLength(1)
  })
})

test('the time figures a report shows are those of the run stats', async () => {
  const c = new VirtualTime()
  const p = pipe(numbers(20), step(c, 'a', 5))
  const exec = new Execution(p.plan, { clock: c.read, accounting: true })
  const rec = recordRun(exec, p.plan, {
    path: file('json'),
    items: true,
    clock: c.read,
    t0: c.now,
    manual: true,
  })
  await drain(exec, () => {})
  await rec.written
  const s = snapshot(exec).stages[0]!
  expect(rec.report().stages[0]).toMatchObject({
    workingMs: Math.round(s.workingMs * 10) / 10,
    in: 20,
    out: 20,
  })
})

describe('worker changes in a report', () => {
  test('each change of a stage’s workers is an event of the report, with from, to and why', async () => {
    const at = mkdtempSync(join(tmpdir(), 'stageline-report-events-'))
    try {
      const path = join(at, 'run.json')
      const input = feed<number>()
      const run = pipe(
        input,
        mapStage(async (n: number) => n, { name: 'fetch', workers: 2 }),
      ).start({ report: path })
      run.setWorkers('fetch', 5)
      run.setWorkers('fetch', 3)
      await input.pushAll([1, 2, 3])
      input.end()
      await run.done
      const report = JSON.parse(readFileSync(path, 'utf8')) as RunReport
      expect(report.events.map((e) => [e.stage, e.kind, e.detail])).toEqual([
        ['fetch', 'workers', '2 -> 5: set by run.setWorkers()'],
        ['fetch', 'workers', '5 -> 3: set by run.setWorkers()'],
      ])
    } finally {
      rmSync(at, { recursive: true, force: true })
    }
  })
})

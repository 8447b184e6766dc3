import { describe, expect, test } from 'vitest'
import { mapStage, pipe, type RunStats, type StageStats, stage } from '../lib/index.js'
import { bar, formatDuration, formatMs, formatRate } from '../lib/progress/format.js'
import { formatStats, type ProgressStream, progressReporter } from '../lib/progress/index.js'
import { numbers, recordUnhandledRejections } from './helpers/instruments.js'

recordUnhandledRejections()

/** A stream that records what is written to it. */
class FakeStream implements ProgressStream {
  chunks: string[] = []
  constructor(
    readonly isTTY: boolean,
    readonly columns?: number,
    readonly rows?: number,
  ) {}
  write(chunk: string): boolean {
    this.chunks.push(chunk)
    return true
  }
  get text(): string {
    return this.chunks.join('')
  }
}

function stageStats(over: Partial<StageStats> & { name: string }): StageStats {
  return {
    workers: 1,
    busy: 0,
    in: 0,
    out: 0,
    failed: 0,
    skipped: 0,
    retried: 0,
    queued: 0,
    capacity: 64,
    meanMs: undefined,
    p95Ms: undefined,
    perSecond: 0,
    bound: 1,
    workingMs: 0,
    starvedMs: 0,
    blockedMs: 0,
    busyShare: 0,
    tuning: 'fixed',
    ...over,
  }
}

/** A two-stage run's stats at `elapsedMs`, with `out` items out of the first stage. */
function snapshot(elapsedMs: number, out: number, state: RunStats['state'] = 'running'): RunStats {
  return {
    runId: 'r1',
    state,
    elapsedMs,
    itemsOut: Math.floor(out / 2),
    stages: [
      stageStats({
        name: 'fetch',
        workers: 16,
        busy: state === 'running' ? 16 : 0,
        in: out + 16,
        out,
        queued: 48,
        capacity: 64,
        meanMs: 20.4,
        p95Ms: 38.2,
        perSecond: (out * 1000) / elapsedMs,
      }),
      stageStats({
        name: 'titles',
        workers: 2,
        in: out,
        out: Math.floor(out / 2),
        skipped: 0,
        perSecond: (Math.floor(out / 2) * 1000) / elapsedMs,
      }),
    ],
  }
}

describe('formatStats', () => {
  test('renders a summary line and an aligned row per stage', () => {
    const text = formatStats({
      runId: 'r1',
      state: 'done',
      elapsedMs: 2614,
      itemsOut: 1,
      stages: [
        stageStats({
          name: 'fetchPage',
          workers: 16,
          in: 2000,
          out: 1990,
          failed: 4,
          skipped: 6,
          retried: 12,
          meanMs: 20.44,
          p95Ms: 38.1,
          perSecond: 761.3,
        }),
        stageStats({ name: 'titles', workers: 2, in: 1990, out: 1843, perSecond: 705 }),
        stageStats({
          name: 'mostCommon',
          in: 1843,
          out: 1,
          capacity: Number.POSITIVE_INFINITY,
          perSecond: 0.38,
        }),
      ],
    })
    expect(text).toBe(
      [
        'done after 2.61 s · 1 item out',
        'stage       workers     in    out  failed  skipped  retried  queue   mean    p95  out/s',
        'fetchPage        16  2,000  1,990       4        6       12   0/64  20 ms  38 ms  761/s',
        'titles            2  1,990  1,843       0        0        0   0/64      -      -  705/s',
        'mostCommon        1  1,843      1       0        0        0    0/∞      -      -  0.4/s',
      ].join('\n'),
    )
  })

  test('renders the stats of a real run', async () => {
    const run = pipe(
      numbers(100),
      mapStage((n: number) => n * 2, { name: 'double', workers: 2 }),
    ).start()
    await run.done
    const lines = formatStats(run.stats()).split('\n')
    expect(lines[0]).toMatch(/^done after \d+ ms · 100 items out$/)
    expect(lines[2]).toMatch(/^double\s+2\s+100\s+100\s+0\s+0\s+0\s+0\/64\s/)
  })

  test('formats numbers for people', () => {
    expect(formatDuration(850)).toBe('850 ms')
    expect(formatDuration(12_345)).toBe('12.3 s')
    expect(formatDuration(245_000)).toBe('4m 05s')
    expect(formatMs(undefined)).toBe('-')
    expect(formatMs(0.0042)).toBe('0.004 ms')
    expect(formatMs(1.254)).toBe('1.25 ms')
    expect(formatRate(2_500_000)).toBe('2.5M/s')
    expect(formatRate(45_000)).toBe('45k/s')
    expect(formatRate(812.4)).toBe('812/s')
    expect(formatRate(0)).toBe('0/s')
    expect(bar(0, 4)).toBe('░░░░')
    expect(bar(1, 4)).toBe('████')
    expect(bar(0.5, 4)).toBe('██░░')
    expect(bar(0.3, 4)).toHaveLength(4)
    expect(bar(Number.NaN, 3)).toBe('░░░')
  })
})

describe('progressReporter, plain lines (not a TTY)', () => {
  test('prints one line per call with every stage, when plainInterval is 0', () => {
    const stream = new FakeStream(false)
    const r = progressReporter({ stream, plainInterval: 0 })
    expect(r.live).toBe(false)
    r.onProgress(snapshot(1000, 300))
    r.onProgress(snapshot(2000, 700))
    expect(stream.chunks).toEqual([
      '[stageline 1.00 s] running, 150 out | fetch in 316 out 300 busy 16/16 queue 48/64 300/s | titles in 300 out 150 busy 0/2 queue 0/64 150/s\n',
      // the rate is over the last interval: 400 more items in one second
      '[stageline 2.00 s] running, 350 out | fetch in 716 out 700 busy 16/16 queue 48/64 400/s | titles in 700 out 350 busy 0/2 queue 0/64 200/s\n',
    ])
  })

  test('prints at most one line per plainInterval of run time, and always the last one', () => {
    const stream = new FakeStream(false)
    const r = progressReporter({ stream, plainInterval: 5000, label: 'crawl' })
    for (let t = 1000; t <= 12_000; t += 1000) r.onProgress(snapshot(t, t / 10))
    r.onProgress(snapshot(12_400, 1240, 'done'))
    const lines = stream.text.trimEnd().split('\n')
    expect(lines.map((l) => l.slice(0, l.indexOf(']') + 1))).toEqual([
      '[crawl 5.00 s]',
      '[crawl 10.0 s]',
      '[crawl 12.4 s]',
    ])
    expect(lines[2]).toContain('] done, 620 out')
    // the line of an ended run gives whole-run rates
    expect(lines[2]).toContain('fetch in 1,256 out 1,240 busy 0/16 queue 48/64 100/s')
  })

  test('done() prints the line it held back, once', () => {
    const stream = new FakeStream(false)
    const r = progressReporter({ stream })
    r.onProgress(snapshot(1000, 10))
    expect(stream.chunks).toHaveLength(0)
    r.done()
    r.done()
    expect(stream.chunks).toHaveLength(1)
    expect(stream.chunks[0]).toMatch(/^\[stageline 1.00 s\] running, 5 out/)
  })

  test('follows a second run after the first ended', () => {
    const stream = new FakeStream(false)
    const r = progressReporter({ stream, plainInterval: 1000 })
    r.onProgress(snapshot(1000, 100))
    r.onProgress(snapshot(1500, 150, 'done'))
    r.onProgress(snapshot(1000, 50))
    expect(stream.chunks).toHaveLength(3)
    // the second run's first line is not a rate against the first run's last snapshot
    expect(stream.chunks[2]).toContain('fetch in 66 out 50 busy 16/16 queue 48/64 50/s')
  })

  test('reports a real run to its end', async () => {
    const stream = new FakeStream(false)
    const r = progressReporter({ stream, plainInterval: 0 })
    const words = stage(async function* words(xs: AsyncIterable<number>) {
      for await (const x of xs) if (x % 2 === 0) yield String(x)
    })
    const out = await pipe(
      numbers(300),
      mapStage(async (n: number) => n, { name: 'id', workers: 4 }),
      words,
    ).toArray({
      onProgress: r.onProgress,
      progressInterval: 1,
    })
    expect(out).toHaveLength(150)
    const last = stream.chunks.at(-1)!
    expect(last).toMatch(
      /\] done, 150 out \| id in 300 out 300 busy 0\/4 queue 0\/64 \S+ \| words in 300 out 150 busy 0\/1/,
    )
  })

  test('live: false prints lines on a TTY too', () => {
    const stream = new FakeStream(true, 80)
    const r = progressReporter({ stream, live: false, plainInterval: 0 })
    expect(r.live).toBe(false)
    r.onProgress(snapshot(1000, 10))
    expect(stream.text).toMatch(/^\[stageline 1.00 s\] running/)
    expect(stream.text).not.toContain('\u001b[')
  })
})

describe('progressReporter, live table (a TTY)', () => {
  test('draws a table, then redraws it in place', () => {
    const stream = new FakeStream(true, 120, 40)
    const r = progressReporter({ stream, total: 2000 })
    expect(r.live).toBe(true)
    expect(stream.chunks).toHaveLength(0) // nothing is drawn before the first call
    r.onProgress(snapshot(1000, 500))
    const first = stream.chunks.join('')
    expect(first).toContain('stageline · running for 1.00 s · 250 items out')
    expect(first).toContain('25% of 2,000')
    expect(first).toMatch(/stage\s+busy\s+queue\s+in\s+out\s+failed\s+skipped\s+rate\s+p95/)
    expect(first).toMatch(/fetch\s+16\/16\s+███████▌░░ 48\/64\s+516\s+500\s+0\s+0\s+500\/s\s+38 ms/)
    expect(first).toMatch(/titles\s+0\/2\s+░{10} 0\/64\s+500\s+250\s+0\s+0\s+250\/s\s+-/)
    stream.chunks = []
    r.onProgress(snapshot(2000, 1000))
    const second = stream.chunks.join('')
    // the previous frame is erased (cursor up, erase line) and the new one written
    expect(second).toContain('\u001b[1A')
    expect(second).toContain('\u001b[2K')
    expect(second).toContain('50% of 2,000')
    expect(second).toMatch(/fetch\s+16\/16 .* 1,016\s+1,000 .* 500\/s/)
  })

  test('leaves the final frame on screen when the run ends, and starts a new one for the next run', () => {
    const stream = new FakeStream(true, 120, 40)
    const r = progressReporter({ stream })
    r.onProgress(snapshot(1000, 500))
    r.onProgress(snapshot(1500, 800, 'done'))
    expect(stream.text).toContain('stageline · done after 1.50 s · 400 items out')
    stream.chunks = []
    r.onProgress(snapshot(500, 10))
    // a fresh frame: nothing of the finished one is erased
    expect(stream.text).not.toContain('\u001b[1A')
    expect(stream.text).toContain('running for 500 ms')
  })

  test('cuts lines to the terminal width', () => {
    const stream = new FakeStream(true, 30, 40)
    const r = progressReporter({ stream })
    r.onProgress(snapshot(1000, 500))
    // log-update wraps the frame in synchronized-output codes; the lines inside fit in 29 columns
    const frame = stream.text.replaceAll('\u001b[?2026h', '').replaceAll('\u001b[?2026l', '')
    for (const line of frame.split('\n')) expect(line.length).toBeLessThan(30)
  })

  test('done() on an interrupted run keeps the frame and is idempotent', () => {
    const stream = new FakeStream(true, 120, 40)
    const r = progressReporter({ stream })
    r.done() // nothing drawn yet: nothing to do
    r.onProgress(snapshot(1000, 500))
    r.done()
    r.done()
    stream.chunks = []
    r.onProgress(snapshot(2000, 900))
    expect(stream.text).not.toContain('\u001b[1A')
  })

  test('live: true draws frames on a stream that is not a TTY', () => {
    const stream = new FakeStream(false)
    const r = progressReporter({ stream, live: true })
    r.onProgress(snapshot(1000, 10))
    r.onProgress(snapshot(2000, 20))
    expect(stream.text).toContain('stageline · running for 2.00 s')
    expect(stream.text).toContain('\u001b[2K')
  })
})

test('progressReporter refuses bad options, naming them', () => {
  expect(() => progressReporter({ stream: {} as any })).toThrow(
    /`stream` to be a writable stream \(an object with a write\(\) method\), got \[object Object\] \(object\)/,
  )
  expect(() => progressReporter({ live: 'yes' as any })).toThrow(
    /`live` to be true or false, got "yes" \(string\)/,
  )
  expect(() => progressReporter({ plainInterval: -1 })).toThrow(RangeError)
  expect(() => progressReporter({ total: 1.5 })).toThrow(/`total` to be an integer from 0 and up, got 1.5/)
  expect(() => progressReporter({ label: 3 as any })).toThrow(/`label` to be a string/)
  expect(() => progressReporter({ colour: true } as any)).toThrow(/unknown option `colour`/)
  expect(() => progressReporter(null as any)).toThrow(TypeError)
})

test('the core entry point does not load the progress reporter', async () => {
  const { readFile } = await import('node:fs/promises')
  const index = await readFile(new URL('../lib/index.ts', import.meta.url), 'utf8')
  expect(index).not.toMatch(/progress\//)
  expect(index).not.toMatch(/log-update/)
})

import fc from 'fast-check'
import { afterEach, describe, expect, test, vi } from 'vitest'
import { Channel } from '../lib/channel/bounded.js'
import { drain } from '../lib/engine/consumer.js'
import { Execution } from '../lib/engine/execution.js'
import { SAMPLE_MASK, StageRun } from '../lib/engine/stage-run.js'
import { snapshot } from '../lib/engine/stats.js'
import {
  batch,
  feed,
  filter,
  flatMap,
  mapStage,
  type RunStats,
  type StageStats,
  skip,
  stage,
  TaskException,
} from '../lib/index.js'
import { pipe } from '../lib/pipeline.js'
import {
  abortListeners,
  defer,
  flush,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  ticks,
  untilAborted,
  whenAborted,
} from './helpers/instruments.js'

recordUnhandledRejections()

afterEach(() => {
  vi.useRealTimers()
})

/** Runs a pipeline in the background to the end and returns its final stats. */
async function finalStats(p: { start(): { done: Promise<unknown>; stats(): RunStats } }): Promise<RunStats> {
  const run = p.start()
  await run.done
  return run.stats()
}

function byName(stats: RunStats, name: string): StageStats {
  const s = stats.stages.find((x) => x.name === name)
  if (s === undefined) throw new Error(`no stage named ${name} in ${stats.stages.map((x) => x.name)}`)
  return s
}

describe('counters add up', () => {
  test('a map stage at the end of a run: in = out + failed + skipped, in each loop kind', async () => {
    const onError = vi.fn()
    const plain = mapStage((n: number) => (n % 5 === 0 ? skip : n), { name: 'plain', workers: 2 })
    const ordered = mapStage(async (n: number) => (n % 7 === 0 ? skip : n), {
      name: 'ordered',
      workers: 3,
      ordered: true,
    })
    const policed = mapStage(
      (n: number) => {
        if (n % 13 === 0) throw new Error(`bad ${n}`)
        return n
      },
      { name: 'policed', workers: 2, errors: 'skip', onError },
    )
    const stats = await finalStats(pipe(numbers(1000), plain, ordered, policed))
    const kept1 = numbers(1000).filter((n) => n % 5 !== 0)
    const kept2 = kept1.filter((n) => n % 7 !== 0)
    const kept3 = kept2.filter((n) => n % 13 !== 0)
    expect(byName(stats, 'plain')).toMatchObject({ in: 1000, out: kept1.length, skipped: 200, failed: 0 })
    expect(byName(stats, 'ordered')).toMatchObject({
      in: kept1.length,
      out: kept2.length,
      skipped: kept1.length - kept2.length,
      failed: 0,
    })
    expect(byName(stats, 'policed')).toMatchObject({
      in: kept2.length,
      out: kept3.length,
      skipped: 0,
      failed: kept2.length - kept3.length,
    })
    expect(onError).toHaveBeenCalledTimes(kept2.length - kept3.length)
    for (const s of stats.stages) expect(s.in).toBe(s.out + s.failed + s.skipped)
    expect(stats.itemsOut).toBe(kept3.length)
    expect(stats.state).toBe('done')
  })

  test('retries are counted once per extra try, and a retried success is not a failure', async () => {
    const tries = new Map<number, number>()
    const flaky = mapStage(
      (n: number) => {
        const t = (tries.get(n) ?? 0) + 1
        tries.set(n, t)
        // items divisible by 10 fail twice, then succeed on the third try
        if (n % 10 === 0 && t < 3) throw new Error(`flaky ${n}`)
        return n
      },
      { name: 'flaky', workers: 3, retries: 2 },
    )
    const stats = await finalStats(pipe(numbers(100), flaky))
    expect(byName(stats, 'flaky')).toMatchObject({ in: 100, out: 100, failed: 0, skipped: 0, retried: 20 })
  })

  test('a failed run counts the failing item as failed and what came before as out', async () => {
    const run = pipe(
      numbers(50),
      mapStage(
        function check(n: number) {
          if (n === 20) throw new Error('twenty')
          return n
        },
        { qsize: Number.POSITIVE_INFINITY },
      ),
    ).start()
    const err = await rejectionOf(run.done)
    expect(err).toBeInstanceOf(TaskException)
    const stats = run.stats()
    expect(stats.state).toBe('failed')
    // one worker, synchronous: nothing was in flight when item 20 failed
    expect(byName(stats, 'check')).toMatchObject({ in: 21, out: 20, failed: 1, skipped: 0 })
  })

  test('a generator stage counts what it takes and what it yields separately', async () => {
    const twiceEvens = stage(
      async function* twiceEvens(xs: AsyncIterable<number>) {
        for await (const x of xs) {
          if (x % 2 === 0) {
            yield x
            yield x
          }
        }
      },
      { workers: 3 },
    )
    const stats = await finalStats(pipe(numbers(101), twiceEvens))
    expect(byName(stats, 'twiceEvens')).toMatchObject({ in: 101, out: 102, failed: 0, skipped: 0, busy: 0 })
    // generator stages are not timed (one call runs over many items)
    expect(byName(stats, 'twiceEvens').meanMs).toBeUndefined()
  })

  test('batch counts items in and batches out', async () => {
    const stats = await finalStats(pipe(numbers(103), batch<number>(10)))
    expect(byName(stats, 'batch')).toMatchObject({ in: 103, out: 11, failed: 0, skipped: 0 })
  })

  test('filter counts what it drops as skipped', async () => {
    const isOdd = (n: number): boolean => n % 2 === 1
    const stats = await finalStats(pipe(numbers(99), filter(isOdd, { workers: 2 })))
    expect(byName(stats, 'isOdd')).toMatchObject({ in: 99, out: 49, skipped: 50, failed: 0 })
  })

  test('flatMap counts items in and elements out', async () => {
    const repeat = flatMap((n: number) => Array.from({ length: n % 4 }, () => n), { name: 'repeat' })
    const expected = numbers(40).reduce((sum, n) => sum + (n % 4), 0)
    const stats = await finalStats(pipe(numbers(40), repeat))
    expect(byName(stats, 'repeat')).toMatchObject({ in: 40, out: expected, failed: 0 })
  })

  test('a failing flatMap counts its item as failed, and only the elements it passed on as out', async () => {
    const explode = flatMap(
      function* explode(n: number) {
        yield n
        if (n === 3) throw new Error('three')
        yield n
      },
      { qsize: Number.POSITIVE_INFINITY },
    )
    const run = pipe(numbers(10), explode).start()
    expect(await rejectionOf(run.done)).toBeInstanceOf(TaskException)
    expect(byName(run.stats(), 'explode')).toMatchObject({ in: 4, out: 7, failed: 1 })
  })

  test('in = out + failed + skipped for random map pipelines (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            workers: fc.integer({ min: 1, max: 4 }),
            ordered: fc.boolean(),
            qsize: fc.integer({ min: 0, max: 8 }),
            skipEvery: fc.integer({ min: 2, max: 9 }),
            async: fc.boolean(),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        fc.integer({ min: 0, max: 200 }),
        async (specs, n) => {
          const stages = specs.map((s, i) =>
            mapStage(
              (x: number) => {
                const y = x % s.skipEvery === 0 ? skip : x
                return s.async ? ticks(x % 3).then(() => y) : y
              },
              { name: `s${i}`, workers: s.workers, ordered: s.ordered, qsize: s.qsize },
            ),
          )
          const run = (pipe(numbers(n)) as any).pipe(...stages).start()
          await run.done
          const stats: RunStats = run.stats()
          let expectedIn = n
          for (const [i, s] of stats.stages.entries()) {
            expect(s.in).toBe(expectedIn)
            expect(s.in).toBe(s.out + s.failed + s.skipped)
            expect(s.busy).toBe(0)
            expect(s.queued).toBe(0)
            expectedIn = s.out
            expect(s.name).toBe(`s${i}`)
          }
          expect(stats.itemsOut).toBe(expectedIn)
        },
      ),
      { numRuns: 40 },
    )
  })
})

describe('queues, busy workers and timings', () => {
  test('queue length and capacity show a full queue in front of a stage that does not read', async () => {
    const gate = defer()
    const late = stage(async function* late(xs: AsyncIterable<number>) {
      await gate.promise
      for await (const x of xs) yield x
    })
    const run = pipe(
      numbers(100),
      mapStage((n: number) => n, { name: 'fast', qsize: 8 }),
      mapStage((n: number) => n, { name: 'window', workers: 2, qsize: 4, ordered: true }),
      late,
    ).start()
    await flush(3)
    const stats = run.stats()
    expect(stats.state).toBe('running')
    expect(byName(stats, 'window')).toMatchObject({ queued: 6, capacity: 6 }) // qsize + workers
    expect(byName(stats, 'fast')).toMatchObject({ queued: 8, capacity: 8 })
    gate.resolve()
    await run.done
    expect(run.stats().stages.map((s) => s.queued)).toEqual([0, 0, 0])
  })

  test('an unbounded queue reports an infinite capacity', async () => {
    const stats = await finalStats(
      pipe(
        [1, 2],
        mapStage((n: number) => n, { qsize: Number.POSITIVE_INFINITY }),
      ),
    )
    expect(stats.stages[0]!.capacity).toBe(Number.POSITIVE_INFINITY)
  })

  test('busy counts the map workers inside their function right now', async () => {
    const gate = defer()
    const run = pipe(
      numbers(10),
      mapStage(
        async function wait(n: number) {
          await gate.promise
          return n
        },
        { workers: 3 },
      ),
      mapStage(
        async function waitWithPolicy(n: number) {
          await gate.promise
          return n
        },
        { workers: 2, retries: 1 },
      ),
    ).start()
    await flush(3)
    expect(byName(run.stats(), 'wait').busy).toBe(3)
    gate.resolve()
    await run.done
    expect(run.stats().stages.map((s) => s.busy)).toEqual([0, 0])
  })

  test('busy counts generator workers except while they wait for input or for room downstream', async () => {
    const gate = defer()
    const input = feed<number>()
    const run = pipe(
      input,
      stage(
        async function* work(xs: AsyncIterable<number>) {
          for await (const x of xs) {
            if (x === 1) await gate.promise
            yield x
          }
        },
        { workers: 2 },
      ),
    ).start()
    await flush(3)
    expect(byName(run.stats(), 'work').busy).toBe(0) // both wait for input
    await input.push(1)
    await flush(3)
    expect(byName(run.stats(), 'work').busy).toBe(1) // one holds item 1 behind the gate
    gate.resolve()
    input.end()
    await run.done
    expect(byName(run.stats(), 'work').busy).toBe(0)
  })

  test('an aborted run leaves no worker counted as busy', async () => {
    // each stage passes its first items on and hangs (until aborted) on the later ones
    const hangFrom =
      (k: number) =>
      (n: number, { signal }: { signal: AbortSignal }): number | Promise<number> =>
        n < k ? n : whenAborted(signal)
    const run = pipe(
      numbers(20),
      mapStage(hangFrom(15), { name: 'plain', workers: 3 }),
      mapStage(hangFrom(5), { name: 'ordered', workers: 2, ordered: true }),
      flatMap((_: number, { signal }) => whenAborted(signal), { name: 'flat', workers: 2 }),
    ).start()
    await flush(3)
    expect(run.stats().stages.map((s) => s.busy)).toEqual([3, 2, 2])
    await run.abort()
    expect(run.stats().state).toBe('stopped')
    expect(run.stats().stages.map((s) => s.busy)).toEqual([0, 0, 0])
  })

  test('mean and p95 are undefined before the first item and present from the first item on', async () => {
    const none = await finalStats(
      pipe(
        [] as number[],
        mapStage((n: number) => n, { name: 'none' }),
      ),
    )
    expect(byName(none, 'none')).toMatchObject({ meanMs: undefined, p95Ms: undefined })
    // a stage starts by timing every item, and times fewer as its pace shows it is cheap
    const few = await finalStats(
      pipe(
        [1, 2],
        mapStage((n: number) => n, { name: 'few' }),
      ),
    )
    expect(byName(few, 'few').meanMs).toBeGreaterThanOrEqual(0)
    expect(byName(few, 'few').p95Ms).toBeGreaterThanOrEqual(0)

    const many = await finalStats(
      pipe(
        numbers(2000),
        mapStage((n: number) => n, { name: 'sync' }),
        mapStage(async (n: number) => n, { name: 'async', workers: 2 }),
        mapStage((n: number) => n, { name: 'orderedSync', ordered: true, workers: 2 }),
        mapStage((n: number) => n, { name: 'policy', retries: 1 }),
      ),
    )
    for (const name of ['sync', 'async', 'orderedSync']) {
      const s = byName(many, name)
      expect(s.meanMs, name).toBeGreaterThanOrEqual(0)
      expect(s.p95Ms, name).toBeGreaterThanOrEqual(0)
      expect(Number.isFinite(s.meanMs) && Number.isFinite(s.p95Ms), name).toBe(true)
    }
  })

  test('the run reports its elapsed time, items out and per-stage rate', async () => {
    const stats = await finalStats(
      pipe(
        numbers(500),
        mapStage(async (n: number) => n),
      ),
    )
    expect(stats.elapsedMs).toBeGreaterThan(0)
    expect(stats.itemsOut).toBe(500)
    const s = stats.stages[0]!
    expect(s.perSecond).toBeCloseTo((s.out * 1000) / stats.elapsedMs, 6)
  })

  test('a stopped run reports its state as stopped and keeps its counts', async () => {
    const seen: RunStats[] = []
    let taken = 0
    for await (const n of pipe(
      numbers(100),
      mapStage((n: number) => n),
    ).results({
      onProgress: (s) => seen.push(s),
    })) {
      taken++
      if (n === 9) break
    }
    expect(taken).toBe(10)
    const last = seen.at(-1)!
    expect(last.state).toBe('stopped')
    expect(last.itemsOut).toBe(10)
  })
})

describe('the progress hook', () => {
  test('fires on its interval while the run lives, once more at the end, then never again', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const gate = defer()
    const calls: RunStats[] = []
    const controller = new AbortController()
    const p = pipe(
      numbers(10),
      mapStage(async (n: number) => {
        if (n === 5) await gate.promise
        return n
      }),
    ).execute({ onProgress: (s) => calls.push(s), progressInterval: 100, signal: controller.signal })
    await flush(2)
    expect(calls).toHaveLength(0)
    vi.advanceTimersByTime(99)
    expect(calls).toHaveLength(0)
    vi.advanceTimersByTime(1)
    expect(calls).toHaveLength(1)
    vi.advanceTimersByTime(250)
    expect(calls).toHaveLength(3)
    expect(calls.every((s) => s.state === 'running')).toBe(true)
    expect(calls[2]!.stages[0]!.busy).toBe(1)
    gate.resolve()
    await expect(p).resolves.toBe(9)
    expect(calls).toHaveLength(4)
    expect(calls[3]!.state).toBe('done')
    expect(calls[3]!.itemsOut).toBe(10)
    // no timer and no listener outlive the run
    expect(vi.getTimerCount()).toBe(0)
    expect(abortListeners(controller.signal)).toBe(0)
    vi.advanceTimersByTime(1000)
    expect(calls).toHaveLength(4)
  })

  test('is called on its interval, never per item', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const onProgress = vi.fn()
    const out = await pipe(
      numbers(5000),
      mapStage((n: number) => n + 1),
      mapStage(async (n: number) => n),
    ).toArray({
      onProgress,
      progressInterval: 1000,
    })
    expect(out).toHaveLength(5000)
    // the interval never came round: only the call at the end
    expect(onProgress).toHaveBeenCalledTimes(1)
    expect(vi.getTimerCount()).toBe(0)
  })

  test('each call gets a snapshot of its own, not a live view', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const gate = defer()
    const calls: RunStats[] = []
    const p = pipe(
      numbers(10),
      mapStage(async (n: number) => {
        if (n === 3) await gate.promise
        return n
      }),
    ).toArray({ onProgress: (s) => calls.push(s), progressInterval: 50 })
    await flush(2)
    vi.advanceTimersByTime(50)
    gate.resolve()
    await p
    expect(calls[0]!.stages[0]!.out).toBe(3)
    expect(calls[0]!.state).toBe('running')
    expect(calls[1]!.stages[0]!.out).toBe(10)
  })

  test('on a background run it stops with the run, and stats() keeps answering afterwards', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const gate = defer()
    const onProgress = vi.fn()
    const run = pipe(
      numbers(4),
      mapStage(async (n: number) => {
        if (n === 2) await gate.promise
        return n
      }),
    ).start({ onProgress, progressInterval: 10 })
    await flush(2)
    vi.advanceTimersByTime(30)
    expect(onProgress).toHaveBeenCalledTimes(3)
    expect(run.stats().state).toBe('running')
    gate.resolve()
    await run.done
    expect(onProgress).toHaveBeenCalledTimes(4)
    expect(onProgress.mock.lastCall![0].state).toBe('done')
    // the keep-alive handle of the background run is gone too
    expect(vi.getTimerCount()).toBe(0)
    expect(run.stats()).toMatchObject({ state: 'done', itemsOut: 4 })
  })

  test('a throwing onProgress fails the run with a TaskException from stage "onProgress"', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const boom = new Error('display broke')
    const warn = vi.spyOn(process, 'emitWarning')
    const onProgress = vi.fn(() => {
      throw boom
    })
    const signals: AbortSignal[] = []
    const p = pipe(
      numbers(10),
      mapStage(async (n: number, { signal }) => {
        signals.push(signal)
        if (n === 2)
          await new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
        return n
      }),
    ).toArray({ onProgress, progressInterval: 100 })
    await flush(2)
    vi.advanceTimersByTime(100)
    const err = await rejectionOf(p)
    // a callback that threw is not called again for the run's final snapshot, nor warned about
    expect(onProgress).toHaveBeenCalledTimes(1)
    expect(warn).not.toHaveBeenCalled()
    warn.mockRestore()
    expect(err).toBeInstanceOf(TaskException)
    expect(err).toMatchObject({ stage: 'onProgress', worker: 0, cause: boom })
    expect((err as Error).message).toBe('The task "onProgress-0" raised Error: display broke')
    // the workers were told to stop
    expect(signals[0]!.aborted).toBe(true)
    expect(vi.getTimerCount()).toBe(0)
  })

  test('an onProgress that throws on the call after the end warns instead (the run already ended)', async () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {})
    try {
      const out = await pipe(
        [1, 2, 3],
        mapStage((n: number) => n),
      ).toArray({
        onProgress: () => {
          throw new Error('late')
        },
      })
      expect(out).toEqual([1, 2, 3])
      expect(warn).toHaveBeenCalledTimes(1)
      expect(String(warn.mock.calls[0]![0])).toContain('onProgress threw after the run ended: Error: late')
    } finally {
      warn.mockRestore()
    }
  })

  test('an async onProgress that rejects fails the run as stage "onProgress", once', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    const boom = new Error('display broke later')
    const onProgress = vi.fn(async () => {
      await Promise.resolve()
      throw boom
    })
    const gate = defer()
    const p = pipe(
      numbers(10),
      mapStage(async (n: number, { signal }) => {
        if (n === 2) await untilAborted(gate.promise, signal)
        return n
      }),
    ).toArray({ onProgress, progressInterval: 100 })
    await flush(2)
    vi.advanceTimersByTime(100)
    const err = await rejectionOf(p)
    expect(err).toBeInstanceOf(TaskException)
    expect(err).toMatchObject({ stage: 'onProgress', cause: boom })
    vi.advanceTimersByTime(500)
    expect(onProgress).toHaveBeenCalledTimes(1)
    expect(vi.getTimerCount()).toBe(0)
  })

  test('an async onProgress that rejects after the run ended warns instead', async () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {})
    try {
      const out = await pipe([1, 2, 3]).toArray({ onProgress: async () => Promise.reject(new Error('late')) })
      expect(out).toEqual([1, 2, 3])
      await flush(2)
      expect(warn).toHaveBeenCalledTimes(1)
      expect(String(warn.mock.calls[0]![0])).toContain('onProgress threw after the run ended: Error: late')
    } finally {
      warn.mockRestore()
    }
  })

  test('a bad progressInterval or onProgress is refused when the run starts', async () => {
    const p = pipe(
      [1],
      mapStage((n: number) => n),
    )
    await expect(p.execute({ progressInterval: 0, onProgress: () => {} })).rejects.toThrow(
      /`progressInterval` to be an integer from 1 to 2147483647, got 0/,
    )
    await expect(p.execute({ onProgress: 'yes' as any })).rejects.toThrow(/`onProgress` to be a function/)
    expect(() => p.start({ progressInterval: 1.5, onProgress: () => {} })).toThrow(RangeError)
  })
})

describe('adaptive timing', () => {
  const exec = { clock: () => 0 } as unknown as Execution
  const plan = { workers: 1, bound: 1, qsize: 1, ordered: false, start() {} }
  const group = () => new StageRun(exec, 0, 'g', plan, new Channel(1), new Channel(1))

  test('a stage doing items quickly is timed less and less often, down to one item in SAMPLE_MASK + 1', () => {
    const g = group()
    expect(g.sampleMask).toBe(0)
    let t = 1000
    for (let i = 0; i < 20; i++) g.sampling((t += 0.001)) // timed items 1 µs apart
    expect(g.sampleMask).toBe(SAMPLE_MASK)
  })

  test('a stage whose timed items are far apart is timed more often again, up to every item', () => {
    const g = group()
    let t = 1000
    for (let i = 0; i < 20; i++) g.sampling((t += 0.001))
    for (let i = 0; i < 20; i++) g.sampling((t += 5)) // 5 ms apart
    expect(g.sampleMask).toBe(0)
  })
})

describe('watchers of a run', () => {
  test('a run has one id in every snapshot, and another run another', async () => {
    const ids = new Set<string>()
    const p = pipe(
      numbers(3),
      mapStage((n: number) => n),
    )
    await p.toArray({ onProgress: (s) => ids.add(s.runId) })
    expect(ids.size).toBe(1)
    await p.toArray({ onProgress: (s) => ids.add(s.runId) })
    expect(ids.size).toBe(2)
    const run = p.start()
    await run.done
    expect(run.stats().runId).toMatch(/^[0-9a-f]{8}$/)
  })

  test('several watchers each get their calls, once more at the end, until they stop watching', async () => {
    const gate = defer()
    const exec = new Execution(
      pipe(
        numbers(2),
        mapStage(async (n: number) => {
          if (n === 1) await gate.promise
          return n
        }),
      ).plan,
      { accounting: true },
    )
    const a: string[] = []
    const b: string[] = []
    exec.watch((r) => a.push(snapshot(r).state), 1_000_000)
    const stopB = exec.watch((r) => b.push(snapshot(r).state), 1_000_000)
    stopB()
    const done = drain(exec, () => {})
    gate.resolve()
    await done
    expect(a).toEqual(['done'])
    expect(b).toEqual([])
  })
})

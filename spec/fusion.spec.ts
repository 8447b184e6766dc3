/**
 * Stage fusion (lib/workers.ts, mapLoop): a worker of a map stage calls the next plain map stage's
 * function itself when a worker of that stage is idle. It must change nothing a user can see:
 * per-stage concurrency, order, stats, error attribution, ctx, skip and stopping all behave as if
 * the idle worker had taken the item from its queue. Asserted through counters, not the clock.
 */
import { describe, expect, test } from 'vitest'
import { batch, flatMap, mapStage, pipe, type RunStats, skip, stage, TaskException } from '../lib/index.js'
import {
  abortListeners,
  numbers,
  Peak,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
  ticks,
  whenAborted,
} from './helpers/instruments.js'

recordUnhandledRejections()

/** A then B, where B counts the calls made right after A's call on the same item (fused calls). */
function fusionProbe(bOptions: Parameters<typeof mapStage>[1]) {
  let lastA: number | undefined
  const seen = { fused: 0, calls: 0 }
  const a = mapStage(
    (x: number) => {
      lastA = x
      return x
    },
    { name: 'A', qsize: 4 },
  )
  const b = mapStage(
    (x: number) => {
      seen.calls++
      if (lastA === x) seen.fused++
      lastA = undefined
      return x
    },
    { name: 'B', ...bOptions },
  )
  return { a, b, seen }
}

describe('stage fusion', () => {
  test('a plain map stage is called right after the map stage before it, once its worker is idle', async () => {
    const { a, b, seen } = fusionProbe({})
    const out = await pipe(numbers(1000), a, b).toArray()
    expect(out).toEqual(numbers(1000))
    expect(seen.calls).toBe(1000)
    // only the items queued before B's worker started went through B's queue
    expect(seen.fused).toBeGreaterThanOrEqual(990)
  })

  test('fusion holds for a whole run behind a slow consumer, with several workers per stage', async () => {
    // the consumer is the bottleneck, so every queue is full at times: fusion must not give way
    // to a backlog (stages launch last first, so none queues up before its workers exist)
    let last: number | undefined
    const fused = [0, 0]
    const step = (i: number) =>
      mapStage(
        (x: number) => {
          if (i > 0 && last === x) fused[i - 1]!++
          last = x
          return x
        },
        { workers: 4, qsize: 8 },
      )
    let seen = 0
    for await (const x of pipe(numbers(5000), step(0), step(1), step(2))) {
      seen += x >= 0 ? 1 : 0
      if (seen % 7 === 0) await ticks(1)
    }
    expect(seen).toBe(5000)
    expect(fused[0]).toBe(5000)
    expect(fused[1]).toBe(5000)
  })

  test('a generator stage fuses the plain map stage after it: errors still name that stage and item', async () => {
    // that the call is fused is measured in spec/hotpath.spec.ts (no park per item: no promise)
    const gen = stage(async function* (xs: AsyncIterable<number>) {
      for await (const x of xs) yield x
    })
    const double = mapStage((x: number) => x * 2, { name: 'double', workers: 2 })
    expect(await pipe(numbers(1000), gen, double).toArray()).toEqual(numbers(1000).map((x) => x * 2))
    const failing = mapStage(
      (x: number) => {
        if (x === 500) throw new Error('bad 500')
        return x
      },
      { name: 'after' },
    )
    const err = (await rejectionOf(pipe(numbers(1000), gen, failing).toArray())) as TaskException
    expect([err.stage, err.item]).toEqual(['after', 500])
  })

  test('flatMap, batch and policy stages send into a fused plain map stage with the same guarantees', async () => {
    const failAt = <T>(bad: T | 'none') =>
      mapStage(
        (x: T) => {
          if (JSON.stringify(x) === JSON.stringify(bad)) throw new Error('bad')
          return x
        },
        { name: 'after', workers: 2 },
      )
    const words = flatMap((line: string) => line.split(' '))
    const lines = ['a b', 'c d e', 'f']
    expect((await pipe(lines, words, failAt<string>('none')).toArray()).sort()).toEqual([...'abcdef'])
    let err = (await rejectionOf(pipe(lines, words, failAt<string>('d')).toArray())) as TaskException
    expect([err.stage, err.item]).toEqual(['after', 'd'])

    const pairs = batch<number>(2)
    expect(sorted((await pipe(numbers(5), pairs, failAt<number[]>('none')).toArray()).flat())).toEqual(
      numbers(5),
    )
    err = (await rejectionOf(pipe(numbers(5), pairs, failAt<number[]>([2, 3])).toArray())) as TaskException
    expect([err.stage, err.item]).toEqual(['after', [2, 3]])

    const retried = mapStage(async (x: number) => x, { retries: 1, name: 'retried' })
    expect(sorted(await pipe(numbers(300), retried, failAt<number>('none')).toArray())).toEqual(numbers(300))
    err = (await rejectionOf(pipe(numbers(300), retried, failAt<number>(150)).toArray())) as TaskException
    expect([err.stage, err.item]).toEqual(['after', 150])
  })

  test('stages that are not plain map stages are never fused', async () => {
    for (const options of [{ ordered: true }, { retries: 1 }, { workers: 2, ordered: true }]) {
      const { a, b, seen } = fusionProbe(options)
      expect(sorted(await pipe(numbers(500), a, b).toArray())).toEqual(numbers(500))
      expect(seen.calls).toBe(500)
      expect(seen.fused, JSON.stringify(options)).toBe(0)
    }
  })

  test('a fused stage never has more calls in flight than workers, sync and async results mixed', async () => {
    for (const workers of [1, 2, 3]) {
      const peak = new Peak()
      let asyncCalls = 0
      const b = mapStage(
        (x: number) => {
          if (x % 3 !== 0) {
            peak.enter() // a synchronous call: in flight only while it runs
            peak.leave()
            return x
          }
          asyncCalls++
          return peak.run(async () => {
            await ticks(1 + (x % 5))
            return x
          })
        },
        { workers, name: 'B' },
      )
      // A slower than B, so that B's workers are often idle and A's workers call B for them
      const a = mapStage(
        async (x: number) => {
          await ticks(x % 4)
          return x
        },
        { workers: 4 },
      )
      const out = await pipe(numbers(600), a, b).toArray()
      expect(sorted(out)).toEqual(numbers(600))
      expect(asyncCalls).toBe(200)
      expect(peak.max, `workers: ${workers}`).toBeLessThanOrEqual(workers)
      // calls did overlap: the bound above was put to the test (how many overlap at the most
      // depends on how the microtask-only steps interleave, and varies between runs)
      expect(peak.max, `workers: ${workers}`).toBeGreaterThanOrEqual(Math.min(workers, 2))
      expect(peak.current).toBe(0)
    }
  })

  test('one worker per stage keeps input order across fused stages with async results', async () => {
    const slowOdd = mapStage((x: number) => (x % 2 === 1 ? ticks(3).then(() => x * 10) : x * 10))
    const out = await pipe(
      numbers(300),
      mapStage((x: number) => x + 1),
      slowOdd,
      mapStage((x: number) => x - 1),
    ).toArray()
    expect(out).toEqual(numbers(300).map((x) => (x + 1) * 10 - 1))
  })

  test('a fused call gets the context of an idle worker of its own stage', async () => {
    const contexts = new Set<string>()
    const b = mapStage(
      (x: number, ctx) => {
        contexts.add(`${ctx.stage}:${ctx.worker}:${ctx.signal.aborted}`)
        return x
      },
      { name: 'B', workers: 3 },
    )
    await pipe(
      numbers(500),
      mapStage((x: number) => x),
      b,
    ).toArray()
    expect(contexts.size).toBeGreaterThan(0)
    for (const c of contexts) expect(c).toMatch(/^B:[0-2]:false$/)
  })

  test('a fused call that throws fails the run as its own stage, with its item', async () => {
    const b = mapStage(
      (x: number) => {
        if (x === 700) throw new Error('bad 700')
        return x
      },
      { name: 'B', workers: 2 },
    )
    const err = await rejectionOf(
      pipe(
        numbers(1000),
        mapStage((x: number) => x, { name: 'A' }),
        b,
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    const te = err as TaskException
    expect(te.stage).toBe('B')
    expect(te.item).toBe(700)
    expect([0, 1]).toContain(te.worker)
    expect((te.cause as Error).message).toBe('bad 700')
  })

  test('a fused call whose promise rejects fails the run as its own stage, with its item', async () => {
    // synchronous until item 300, whose call (fused: B's worker is idle) returns a rejecting promise,
    // handed over to that worker
    const b = mapStage((x: number) => (x === 300 ? Promise.reject(new Error('bad 300')) : x), { name: 'B' })
    const err = await rejectionOf(
      pipe(
        numbers(1000),
        mapStage((x: number) => x, { name: 'A' }),
        b,
      ).toArray(),
    )
    expect((err as TaskException).stage).toBe('B')
    expect((err as TaskException).item).toBe(300)
  })

  test('skips and counts in a fused stage land in that stage’s stats', async () => {
    let last: RunStats | undefined
    const odd = mapStage((x: number) => (x % 2 === 0 ? skip : x), { name: 'odd' })
    const out = await pipe(
      numbers(1000),
      mapStage((x: number) => x, { name: 'A' }),
      odd,
      mapStage((x: number) => x, { name: 'C' }),
    ).toArray({
      onProgress: (s) => (last = s),
    })
    expect(out.length).toBe(500)
    const [a, o, c] = last!.stages
    expect([a!.in, a!.out]).toEqual([1000, 1000])
    expect([o!.in, o!.out, o!.skipped]).toEqual([1000, 500, 500])
    expect([c!.in, c!.out]).toEqual([500, 500])
    for (const s of last!.stages) expect(s.busy).toBe(0)
  })

  test('a fused call that stops the run and returns a rejecting promise: the run stops, nothing is left unhandled', async () => {
    const ctl = new AbortController()
    let calls = 0
    const b = mapStage(
      (x: number) => {
        calls++
        if (x < 100) return x
        ctl.abort(new Error('stopped from inside'))
        // the run halted during this very call: the promise goes to nobody and must not go unhandled
        return Promise.reject(new Error('late'))
      },
      { name: 'B' },
    )
    const err = await rejectionOf(
      pipe(
        numbers(1000),
        mapStage((x: number) => x),
        b,
      ).toArray({ signal: ctl.signal }),
    )
    expect((err as Error).message).toBe('stopped from inside')
    expect(calls).toBe(101)
  })

  test('a promise handed over to an idle worker after which the run stops goes unread, not unhandled', async () => {
    const ctl = new AbortController()
    // item 100's call (fused, B's worker idle) returns a rejecting promise, handed to B's worker;
    // before that worker runs, A's next call stops the run
    const a = mapStage((x: number) => {
      if (x === 101) ctl.abort(new Error('stopped by A'))
      return x
    })
    const b = mapStage((x: number) => (x === 100 ? Promise.reject(new Error('late')) : x), { name: 'B' })
    const err = await rejectionOf(pipe(numbers(1000), a, b).toArray({ signal: ctl.signal }))
    expect((err as Error).message).toBe('stopped by A')
  })

  test('a consumer that stops while fused calls are pending leaves no rejection and no listener behind', async () => {
    let signal: AbortSignal | undefined
    let started = 0
    const pending = mapStage(
      (x: number, ctx) => {
        signal = ctx.signal
        started++
        return x === 0 ? x : whenAborted(ctx.signal)
      },
      { name: 'pending', workers: 4 },
    )
    const results = pipe(
      numbers(100),
      mapStage((x: number) => x, { workers: 2 }),
      pending,
    ).results()
    expect((await results.next()).value).toBe(0)
    await ticks(5)
    expect(started).toBe(5) // item 0, then one call per worker, all pending
    await results.return!()
    expect(signal!.aborted).toBe(true)
    expect(abortListeners(signal!)).toBe(0)
  })
})

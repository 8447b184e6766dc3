import { describe, expect, test } from 'vitest'
import { type Feed, FeedClosedError, feed, mapStage, pipe, stage, TaskException } from '../lib/index.js'
import {
  defer,
  flush,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
} from './helpers/instruments.js'

recordUnhandledRejections()

describe('feed()', () => {
  test('delivers every pushed item to a pipeline, then ends when end() is called', async () => {
    const input = feed<number>({ capacity: 4 })
    const out = pipe(
      input,
      mapStage(async (n: number) => n * 2, { workers: 3 }),
    ).toArray()
    await input.push(1)
    await input.pushAll([2, 3, 4, 5, 6])
    await input.pushAll(
      (async function* () {
        yield 7
        yield 8
      })(),
    )
    input.end()
    expect(input.closed).toBe(true)
    expect(sorted(await out)).toEqual([2, 4, 6, 8, 10, 12, 14, 16])
  })

  test('push() stays pending while the feed is full, and resolves once a worker takes an item', async () => {
    const input = feed<number>({ capacity: 2 })
    await input.push(1)
    await input.push(2)
    let accepted = false
    const third = input.push(3).then(() => {
      accepted = true
    })
    await flush(3)
    expect(accepted).toBe(false)
    expect(input.length).toBe(2)
    const gate = defer()
    const run = pipe(
      input,
      mapStage(async (n: number) => {
        await gate.promise
        return n
      }),
    ).toArray()
    await third
    expect(accepted).toBe(true)
    gate.resolve()
    input.end()
    expect(await run).toEqual([1, 2, 3])
  })

  test('capacity 0 accepts a push only when a worker takes it', async () => {
    const input = feed<number>({ capacity: 0 })
    let accepted = false
    const p = input.push(1).then(() => {
      accepted = true
    })
    await flush(2)
    expect(accepted).toBe(false)
    const out = pipe(
      input,
      mapStage((n: number) => n),
    ).toArray()
    await p
    input.end()
    expect(await out).toEqual([1])
  })

  test('several producers pushing at once each get every item through exactly once', async () => {
    const input = feed<number>({ capacity: 3 })
    const out = pipe(
      input,
      mapStage(async (n: number) => n, { workers: 2 }),
    ).toArray()
    await Promise.all([0, 1, 2, 3].map((p) => input.pushAll(numbers(50).map((i) => p * 50 + i))))
    input.end()
    expect(sorted(await out)).toEqual(numbers(200))
  })

  test('push() after end() rejects with a FeedClosedError, and nothing is dropped silently', async () => {
    const input = feed<number>()
    input.end()
    const err = await rejectionOf(input.push(1))
    expect(err).toBeInstanceOf(FeedClosedError)
    expect((err as Error).message).toMatch(/after end\(\)/)
  })

  test('pushes waiting when the feed is ended are still delivered', async () => {
    const input = feed<number>({ capacity: 1 })
    await input.push(1)
    const waiting = input.push(2)
    input.end()
    const out = await pipe(
      input,
      mapStage((n: number) => n),
    ).toArray()
    await waiting
    expect(out).toEqual([1, 2])
  })

  test('push() into a run that failed rejects, and so do pushes that were waiting for room', async () => {
    const input = feed<number>({ capacity: 1 })
    const gate = defer()
    const run = pipe(
      input,
      mapStage(async (n: number) => {
        await gate.promise
        if (n === 1) throw new Error('boom')
        return n
      }),
    ).toArray()
    await input.push(1) // taken by the worker
    await input.push(2) // fills the feed
    const waiting = input.push(3)
    gate.resolve()
    await expect(run).rejects.toBeInstanceOf(TaskException)
    expect(await rejectionOf(waiting)).toBeInstanceOf(FeedClosedError)
    const later = await rejectionOf(input.push(4))
    expect(later).toBeInstanceOf(FeedClosedError)
    expect((later as Error).message).toMatch(/stopped/)
    expect(input.closed).toBe(true)
  })

  test('a break out of the results closes the feed for further pushes', async () => {
    const input = feed<number>()
    await input.pushAll([1, 2, 3])
    for await (const n of pipe(
      input,
      mapStage((x: number) => x),
    )) {
      if (n === 1) break
    }
    expect(await rejectionOf(input.push(4))).toBeInstanceOf(FeedClosedError)
  })

  test('a feed that stops being fed ends by itself after idleTimeout', async () => {
    const input = feed<number>({ idleTimeout: 20 })
    const out = pipe(
      input,
      mapStage((n: number) => n + 1),
    ).toArray()
    await input.push(1)
    await input.push(2)
    // no end(): the run must finish because the feed dried up
    expect(await out).toEqual([2, 3])
    expect(input.closed).toBe(true)
  })

  test('a feed can be read directly as an async iterable', async () => {
    const input = feed<string>()
    await input.pushAll(['a', 'b'])
    input.end()
    const got: string[] = []
    for await (const s of input) got.push(s)
    expect(got).toEqual(['a', 'b'])
  })

  test('a feed feeds one run only: a second run fails with a clear error', async () => {
    const input = feed<number>()
    const p = pipe(
      input,
      mapStage((n: number) => n),
    )
    const first = p.toArray()
    const err = await rejectionOf(p.toArray())
    expect(err).toBeInstanceOf(TaskException)
    expect(((err as TaskException).cause as Error).message).toMatch(/one run only/)
    input.end()
    expect(await first).toEqual([])
  })

  test('bad options are refused when the feed is made', async () => {
    expect(() => feed({ capacity: -1 })).toThrow(RangeError)
    expect(() => feed({ capacity: 1.5 })).toThrow(/`capacity`.*1\.5/)
    expect(() => feed({ idleTimeout: -5 })).toThrow(/`idleTimeout`/)
    expect(() => feed({ capasity: 3 } as never)).toThrow(/unknown option `capasity`/)
    await expect(feed<number>().pushAll(42 as never)).rejects.toThrow(
      /expected an Iterable or AsyncIterable, got 42/,
    )
  })
})

describe('a function source with a bucket', () => {
  test('the items pushed into the bucket are the input, which ends when the function resolves', async () => {
    const out = await pipe(
      async (bucket) => {
        for (const n of [1, 2, 3]) await bucket.push(n)
      },
      mapStage((n: number) => n * 10),
    ).toArray()
    expect(sorted(out)).toEqual([10, 20, 30])
  })

  test('pushes into the bucket wait for room (backpressure reaches the function)', async () => {
    let pushed = 0
    let maxAhead = 0
    let processed = 0
    const out = await pipe(
      async (bucket: { push(n: number): Promise<void> }) => {
        for (const n of numbers(500)) {
          await bucket.push(n)
          pushed++
          maxAhead = Math.max(maxAhead, pushed - processed)
        }
      },
      mapStage(
        async (n: number) => {
          await flush(1)
          processed++
          return n
        },
        { qsize: 2 },
      ),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(500))
    // the bucket holds 64 (the default feed capacity), the stage 1 in flight + 2 queued
    expect(maxAhead).toBeLessThanOrEqual(64 + 1 + 2 + 1)
  })

  test('a function that returns an iterable is read as before', async () => {
    expect(
      await pipe(
        () => [1, 2],
        mapStage((n: number) => n + 1),
      ).toArray(),
    ).toEqual([2, 3])
  })

  test('a rejecting function fails the run with a TaskException from the source', async () => {
    const err = await rejectionOf(
      pipe(
        async (bucket: { push(n: number): Promise<void> }) => {
          await bucket.push(1)
          throw new Error('feed broke')
        },
        mapStage((n: number) => n),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).stage).toBe('source')
    expect((err as TaskException).message).toBe('The task "source-0" raised Error: feed broke')
  })

  test('a function returning something else fails the run with a TypeError as cause', async () => {
    const err = await rejectionOf(
      pipe(
        (() => 42) as never,
        mapStage((n: number) => n),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).cause).toBeInstanceOf(TypeError)
  })
})

describe('a bucket source when the run ends on purpose', () => {
  /** A source function that pushes 0..n-1 into its bucket, recording how its push() calls ended. */
  function pusher(n: number, log: { pushed: number; rejected: unknown[]; returned: boolean }) {
    return async (bucket: Feed<number>) => {
      try {
        for (let i = 0; i < n; i++) {
          await bucket.push(i)
          log.pushed++
        }
        log.returned = true
      } catch (err) {
        log.rejected.push(err)
        throw err
      }
    }
  }
  const newLog = () => ({ pushed: 0, rejected: [] as unknown[], returned: false })
  const firstThree = stage(async function* firstThree(xs: AsyncIterable<number>) {
    let k = 0
    for await (const x of xs) {
      yield x
      if (++k === 3) return
    }
  })

  test('an early end downstream resolves the run as an async generator source does', async () => {
    const log = newLog()
    const out = await pipe(
      pusher(1000, log),
      mapStage((n: number) => n * 10),
      firstThree,
    ).toArray()
    expect(out).toEqual([0, 10, 20])
    async function* gen() {
      for (let i = 0; i < 1000; i++) yield i
    }
    expect(
      await pipe(
        gen(),
        mapStage((n: number) => n * 10),
        firstThree,
      ).toArray(),
    ).toEqual(out)
    // its push() rejected, so a loop that pushes forever ends too
    expect(log.rejected).toHaveLength(1)
    expect(log.rejected[0]).toBeInstanceOf(FeedClosedError)
    expect(log.returned).toBe(false)
  })

  test('stop() on a started run resolves: the bucket ends, its next push() rejects, the run ignores it', async () => {
    const log = newLog()
    const gate = defer()
    const seen: number[] = []
    const run = pipe(
      pusher(1_000_000, log),
      mapStage(async (n: number) => {
        if (n === 5) await gate.promise
        return n
      }),
    ).start({ onResult: (n) => seen.push(n) })
    while (log.pushed < 10) await flush(1)
    const stopped = run.stop()
    gate.resolve()
    await stopped
    await expect(run.done).resolves.toBeTypeOf('number')
    expect(log.rejected).toHaveLength(1)
    expect(log.rejected[0]).toBeInstanceOf(FeedClosedError)
    // what the bucket accepted before the stop is still delivered
    expect(sorted(seen)).toEqual(numbers(log.pushed))
  })

  test('a break out of results() ends the function with FeedClosedError and leaves no rejection', async () => {
    const log = newLog()
    for await (const n of pipe(
      pusher(1000, log),
      mapStage((n: number) => n),
    ).results()) {
      if (n === 2) break
    }
    await flush(3)
    expect(log.rejected[0]).toBeInstanceOf(FeedClosedError)
  })

  test('bucket.signal aborts when the run stops reading, so the function can stop before it pushes', async () => {
    let signal: AbortSignal | undefined
    let made = 0
    const out = await pipe(async (bucket: Feed<number>) => {
      signal = bucket.signal
      for (let i = 0; !bucket.signal.aborted; i++) {
        made++
        await bucket.push(i).catch(() => {})
      }
    }, firstThree).toArray()
    expect(out).toEqual([0, 1, 2])
    expect(signal?.aborted).toBe(true)
    expect(signal?.reason).toBeInstanceOf(FeedClosedError)
    // at most what the bucket held when the run stopped reading, plus the push that found it closed
    expect(made).toBeLessThanOrEqual(3 + 64 + 2)
  })

  test('a source function that fails with its own error during a stop() still fails the run', async () => {
    const gate = defer()
    const run = pipe(
      async (bucket: Feed<number>) => {
        await bucket.push(1)
        await new Promise<void>((resolve) => bucket.signal.addEventListener('abort', () => resolve()))
        throw new Error('cursor lost')
      },
      mapStage(async (n: number) => {
        await gate.promise
        return n
      }),
    ).start()
    await flush(2)
    const stopped = rejectionOf(run.stop())
    await flush(2)
    gate.resolve()
    const err = await stopped
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).stage).toBe('source')
    expect(((err as TaskException).cause as Error).message).toBe('cursor lost')
  })

  test('a source function that fails after its run has finished is reported as a process warning', async () => {
    const warnings: string[] = []
    const onWarning = (w: Error) => warnings.push(w.message)
    process.on('warning', onWarning)
    try {
      const failed = defer()
      const run = pipe(async (bucket: Feed<number>) => {
        await bucket.push(1)
        await new Promise<void>((resolve) => bucket.signal.addEventListener('abort', () => resolve()))
        await failed.promise
        throw new Error('cleanup broke')
      }).start()
      await flush(2)
      await run.stop()
      failed.resolve()
      while (warnings.length === 0) await flush(1)
      expect(warnings).toEqual([
        'stageline: the source function failed after its run had ended: Error: cleanup broke',
      ])
    } finally {
      process.off('warning', onWarning)
    }
  })

  test('a feed says through its signal when it takes no more items: end(), idle timeout, or the run stopping', async () => {
    const a = feed<number>()
    expect(a.signal.aborted).toBe(false)
    a.end()
    expect(a.signal.aborted).toBe(true)
    expect(a.signal.reason).toBeInstanceOf(FeedClosedError)
    const b = feed<number>()
    const controller = new AbortController()
    const p = pipe(b).toArray({ signal: controller.signal })
    controller.abort(new Error('gone'))
    await expect(p).rejects.toThrow('gone')
    expect(b.signal.aborted).toBe(true)
    await expect(b.push(1)).rejects.toBeInstanceOf(FeedClosedError)
  })
})

describe('collect-first mode', () => {
  test('takes in the whole input before the first stage starts, more items than any buffer', async () => {
    const order: string[] = []
    let pushedAll = false
    const out = await pipe(
      async (bucket: { push(n: number): Promise<void> }) => {
        for (const n of numbers(5000)) await bucket.push(n)
        pushedAll = true
        order.push('fed')
      },
      mapStage(
        (n: number) => {
          if (order.length === 1)
            order.push(pushedAll ? 'first stage after feeding' : 'first stage too early')
          return n
        },
        { qsize: 1 },
      ),
    ).toArray({ collectInput: true })
    expect(order).toEqual(['fed', 'first stage after feeding'])
    expect(out.length).toBe(5000)
  })

  test('a source that fails while being collected fails the run before any stage runs', async () => {
    let calls = 0
    const err = await rejectionOf(
      pipe(
        (function* () {
          yield 1
          throw new Error('bad source')
        })(),
        mapStage((n: number) => {
          calls++
          return n
        }),
      ).toArray({ collectInput: true }),
    )
    expect((err as TaskException).stage).toBe('source')
    expect(calls).toBe(0)
  })

  test('works with generator stages too', async () => {
    const sum = stage(async function* sum(xs: AsyncIterable<number>) {
      let t = 0
      for await (const x of xs) t += x
      yield t
    })
    expect(await pipe(numbers(100), sum).execute({ collectInput: true })).toBe(4950)
  })
})

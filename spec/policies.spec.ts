import pLimit from 'p-limit'
import { describe, expect, test, vi } from 'vitest'
import {
  batch,
  feed,
  mapStage,
  pipe,
  rateLimit,
  type StageContext,
  skip,
  TaskException,
  TimeoutError,
} from '../lib/index.js'
import {
  defer,
  flush,
  numbers,
  Peak,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
  ticks,
  whenAborted,
} from './helpers/instruments.js'

recordUnhandledRejections()

describe('retries', () => {
  test('an item that fails once then succeeds is delivered exactly once', async () => {
    const tries = new Map<number, number>()
    const attempts: number[] = []
    let statsRetried = -1
    const out = await pipe(
      numbers(10),
      mapStage(
        (n: number, ctx) => {
          tries.set(n, (tries.get(n) ?? 0) + 1)
          if (n === 3) attempts.push(ctx.attempt)
          if (n === 3 && tries.get(n) === 1) throw new Error('flaky')
          return n
        },
        { retries: 2, workers: 2 },
      ),
    ).toArray({
      onProgress: (s) => {
        statsRetried = s.stages[0]!.retried
      },
    })
    expect(sorted(out)).toEqual(numbers(10))
    expect(tries.get(3)).toBe(2)
    expect(attempts).toEqual([0, 1])
    expect(statsRetried).toBe(1)
  })

  test('after the last retry the failure counts: TaskException naming the item, tried retries + 1 times', async () => {
    let calls = 0
    const err = await rejectionOf(
      pipe(
        [7],
        mapStage(
          function flaky(_n: number): number {
            calls++
            throw new Error(`try ${calls}`)
          },
          { retries: 3 },
        ),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect(calls).toBe(4)
    expect((err as TaskException).item).toBe(7)
    expect((err as TaskException).message).toBe('The task "flaky-0" raised Error: try 4')
  })

  test('retryDelay as a function gets the retry number and the error (backoff)', async () => {
    const seen: [number, string][] = []
    let calls = 0
    const out = await pipe(
      [1],
      mapStage(
        async (n: number) => {
          if (++calls < 3) throw new Error(`e${calls}`)
          return n
        },
        {
          retries: 5,
          retryDelay: (retry, err) => {
            seen.push([retry, (err as Error).message])
            return retry
          },
        },
      ),
    ).toArray()
    expect(out).toEqual([1])
    expect(seen).toEqual([
      [1, 'e1'],
      [2, 'e2'],
    ])
  })

  test('ordered output is kept when items are retried', async () => {
    const failedOnce = new Set<number>()
    const out = await pipe(
      numbers(50),
      mapStage(
        async (n: number) => {
          if (n % 7 === 0 && !failedOnce.has(n)) {
            failedOnce.add(n)
            throw new Error('again')
          }
          return n
        },
        { retries: 1, workers: 4, ordered: true },
      ),
    ).toArray()
    expect(out).toEqual(numbers(50))
  })
})

describe('timeout', () => {
  test('an item slower than timeout fails with a TimeoutError and its signal aborts', async () => {
    let reason: unknown
    const err = await rejectionOf(
      pipe(
        [1],
        mapStage(
          async function slow(_n: number, { signal }) {
            try {
              return await whenAborted(signal)
            } catch (e) {
              reason = e
              throw e
            }
          },
          { timeout: 15 },
        ),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).cause).toBeInstanceOf(TimeoutError)
    expect(reason).toBeInstanceOf(TimeoutError)
    expect((err as TaskException).message).toMatch(
      /slow-0.*TimeoutError: stage "slow" took longer than 15 ms/,
    )
  })

  test('a function that ignores its signal still times out; its late result is dropped', async () => {
    let resolveLate!: (v: number) => void
    const err = await rejectionOf(
      pipe(
        [1],
        mapStage(() => new Promise<number>((r) => (resolveLate = r)), { timeout: 10 }),
      ).toArray(),
    )
    expect((err as TaskException).cause).toBeInstanceOf(TimeoutError)
    resolveLate(5)
  })

  test('a timeout is retried like any failure, and fast items are untouched', async () => {
    let calls = 0
    const out = await pipe(
      [1, 2],
      mapStage(
        async (n: number, { signal }) => {
          if (n === 2 && ++calls === 1) await whenAborted(signal)
          return n
        },
        { timeout: 20, retries: 1 },
      ),
    ).toArray()
    expect(sorted(out)).toEqual([1, 2])
  })
})

describe('error policy', () => {
  test("errors: 'skip' drops failing items and reports each to onError", async () => {
    const reported: [string, number, number][] = []
    let failedCount = -1
    const out = await pipe(
      numbers(20),
      mapStage(
        (n: number) => {
          if (n % 5 === 0) throw new Error(`bad ${n}`)
          return n
        },
        {
          workers: 3,
          errors: 'skip',
          onError: (err, item, ctx) => reported.push([(err as Error).message, item, ctx.worker]),
        },
      ),
    ).toArray({
      onProgress: (s) => {
        failedCount = s.stages[0]!.failed
      },
    })
    expect(sorted(out)).toEqual(numbers(20).filter((n) => n % 5 !== 0))
    expect(reported.map((r) => r[1]).sort((a, b) => a - b)).toEqual([0, 5, 10, 15])
    expect(reported[0]![0]).toMatch(/^bad /)
    expect(failedCount).toBe(4)
  })

  test("errors: 'skip' keeps input order for the rest when ordered", async () => {
    const out = await pipe(
      numbers(30),
      mapStage(
        async (n: number) => {
          if (n % 4 === 1) throw new Error('x')
          return n
        },
        { workers: 5, ordered: true, errors: 'skip', onError: () => {} },
      ),
    ).toArray()
    expect(out).toEqual(numbers(30).filter((n) => n % 4 !== 1))
  })

  test('an onError that throws fails the run with its error', async () => {
    const err = await rejectionOf(
      pipe(
        [1],
        mapStage(
          (): number => {
            throw new Error('inner')
          },
          {
            errors: 'skip',
            onError: () => {
              throw new Error('callback broke')
            },
          },
        ),
      ).toArray(),
    )
    expect(((err as TaskException).cause as Error).message).toBe('callback broke')
  })

  test('an async onError that rejects fails the run with its error, as a throwing one does', async () => {
    for (const ordered of [false, true]) {
      const err = await rejectionOf(
        pipe(
          numbers(5),
          mapStage(
            (n: number): number => {
              if (n === 2) throw new Error('inner')
              return n
            },
            {
              ordered,
              workers: 2,
              errors: 'skip',
              onError: async () => {
                await ticks(2)
                throw new Error('callback broke')
              },
            },
          ),
        ).toArray(),
      )
      expect(err).toBeInstanceOf(TaskException)
      expect(((err as TaskException).cause as Error).message).toBe('callback broke')
      expect((err as TaskException).item).toBe(2)
    }
  })

  test('an async onError is awaited before the item counts as skipped and the worker goes on', async () => {
    const gate = defer()
    const calls: number[] = []
    const p = pipe(
      numbers(3),
      mapStage(
        (n: number): number => {
          if (n === 0) throw new Error('zero')
          return n
        },
        {
          errors: 'skip',
          onError: async (_e, n) => {
            await gate.promise
            calls.push(n)
          },
        },
      ),
    ).toArray()
    await flush(2)
    expect(calls).toEqual([])
    gate.resolve()
    expect(await p).toEqual([1, 2])
    expect(calls).toEqual([0])
  })

  test('returning skip drops the item, in order and out of order', async () => {
    const evens = (n: number) => (n % 2 === 0 ? n : skip)
    expect(await pipe(numbers(10), mapStage(evens, { workers: 3, ordered: true })).toArray()).toEqual([
      0, 2, 4, 6, 8,
    ])
    expect(sorted(await pipe(numbers(10), mapStage(evens, { workers: 3 })).toArray())).toEqual([
      0, 2, 4, 6, 8,
    ])
    expect(
      await pipe(
        numbers(10),
        mapStage(async (n: number) => evens(n), { retries: 1 }),
      ).toArray(),
    ).toEqual([0, 2, 4, 6, 8])
  })
})

describe('per-worker init and dispose', () => {
  test('init runs once per worker before its items, its result is ctx.state, dispose runs at the end', async () => {
    const events: string[] = []
    const out = await pipe(
      numbers(20),
      mapStage(
        async (n: number, ctx) => {
          expect(ctx.state.worker).toBe(ctx.worker)
          ctx.state.count++
          return n
        },
        {
          workers: 3,
          // annotated: an unannotated parameter would keep TypeScript from inferring ctx.state's type
          init: (ctx: StageContext) => {
            events.push(`init ${ctx.worker}`)
            return { worker: ctx.worker, count: 0 }
          },
          dispose: (state, ctx) => {
            events.push(`dispose ${ctx.worker} after ${state.count} items`)
          },
        },
      ),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(20))
    expect(events.filter((e) => e.startsWith('init')).sort()).toEqual(['init 0', 'init 1', 'init 2'])
    expect(events.filter((e) => e.startsWith('dispose')).length).toBe(3)
  })

  test('dispose runs even when the run fails, and when the consumer breaks', async () => {
    let disposed = 0
    const opts = {
      workers: 2,
      init: () => ({}),
      dispose: () => {
        disposed++
      },
    }
    await rejectionOf(
      pipe(
        numbers(10),
        mapStage((n: number) => {
          if (n === 4) throw new Error('x')
          return n
        }, opts),
      ).toArray(),
    )
    expect(disposed).toBe(2)
    disposed = 0
    for await (const n of pipe(
      numbers(100),
      mapStage(async (n: number) => n, opts),
    ))
      if (n >= 0) break
    expect(disposed).toBe(2)
  })

  test('a failing init fails the run before any item is processed', async () => {
    let calls = 0
    const err = await rejectionOf(
      pipe(
        [1, 2],
        mapStage(
          function db(n: number) {
            calls++
            return n
          },
          {
            init: () => {
              throw new Error('cannot connect')
            },
          },
        ),
      ).toArray(),
    )
    expect((err as TaskException).message).toBe('The task "db-0" raised Error: cannot connect')
    expect(calls).toBe(0)
  })

  test('a step object and a class instance work, with init and dispose as methods', async () => {
    class Doubler {
      opened = 0
      closed = 0
      init() {
        this.opened++
        return 2
      }
      process(n: number, ctx: { state: number }) {
        return n * ctx.state
      }
      dispose() {
        this.closed++
      }
    }
    const d = new Doubler()
    const out = await pipe([1, 2, 3], mapStage(d, { workers: 2, ordered: true })).toArray()
    expect(out).toEqual([2, 4, 6])
    expect([d.opened, d.closed]).toEqual([2, 2])
    const s = mapStage(d)
    expect(s.name).toBe('Doubler')
    const plain = mapStage({ process: (s: string) => s.toUpperCase() })
    expect(await pipe(['a'], plain).toArray()).toEqual(['A'])
  })
})

describe('shared limits', () => {
  test('two stages sharing a p-limit never run more calls at once than the limit', async () => {
    const limit = pLimit(3)
    const peak = new Peak()
    const work = async (n: number) =>
      peak.run(async () => {
        await new Promise((r) => setImmediate(r))
        return n
      })
    const out = await pipe(
      numbers(60),
      mapStage(work, { workers: 5, limit }),
      mapStage(work, { workers: 5, limit }),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(60))
    expect(peak.max).toBe(3)
  })

  test('a rate limit lets the first calls of a burst through at once and spaces the rest', async () => {
    const r = rateLimit(10, { burst: 3 })
    expect(r.take()).toBeUndefined()
    expect(r.take()).toBeUndefined()
    expect(r.take()).toBeUndefined()
    expect(r.take()).toBeInstanceOf(Promise)
    // one call per 1000 s: the second waits, unless its signal aborts (then it ends at once)
    const slow = rateLimit(0.001)
    expect(slow.take()).toBeUndefined()
    const c = new AbortController()
    const waiting = slow.take(c.signal)
    expect(waiting).toBeInstanceOf(Promise)
    c.abort()
    await waiting
  })

  test('a rate-limited stage delivers every item', async () => {
    const out = await pipe(
      numbers(20),
      mapStage(async (n: number) => n, { workers: 4, rate: rateLimit(2000, { burst: 5 }) }),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(20))
  })
})

describe('policy options are checked when the stage is built', () => {
  const f = (n: number) => n
  test.each([
    [{ retries: -1 }, RangeError, /`retries`.*-1/],
    [{ retries: 1.5 }, RangeError, /`retries`/],
    [{ retryDelay: -3 }, RangeError, /`retryDelay`/],
    [{ timeout: 0 }, RangeError, /`timeout` to be a number of milliseconds above 0 and at most 2147483647/],
    [{ timeout: 'soon' }, TypeError, /`timeout`/],
    [{ errors: 'ignore' }, TypeError, /`errors` to be 'fail' or 'skip', got "ignore"/],
    [{ errors: 'skip' }, TypeError, /needs an `onError/],
    [{ onError: () => {} }, TypeError, /set `errors: 'skip'`/],
    [{ init: 5 }, TypeError, /`init` to be a function/],
    [{ rate: 10 }, TypeError, /`rate` to be made by rateLimit/],
    [{ limit: {} }, TypeError, /`limit` to be a function/],
  ])('%o is refused', (options, kind, message) => {
    expect(() => mapStage(f, options as never)).toThrow(kind)
    expect(() => mapStage(f, options as never)).toThrow(message)
  })

  test('setup() checks policies too', () => {
    expect(() => mapStage(f).setup({ retries: -2 })).toThrow(/`retries`/)
    expect(mapStage(f).setup({ retries: 2 }).options).toMatchObject({ retries: 2 })
  })

  test('rateLimit() refuses a bad rate', () => {
    expect(() => rateLimit(0)).toThrow(/`perSecond`/)
    expect(() => rateLimit(5, { burst: 0 })).toThrow(/`burst`/)
  })

  test('a step without process() is refused', () => {
    expect(() => mapStage({ run: () => 1 } as never)).toThrow(/process\(item, ctx\)/)
  })
})

describe('a stage with policies never starves the event loop', () => {
  test.each([
    ['retries', { retries: 1 }],
    ['skip errors', { errors: 'skip' as const, onError: () => {} }],
    ['ordered init', { ordered: true, workers: 2, init: () => 0 }],
  ])('an endless source through a stage with %s can be aborted from a macrotask', async (_name, options) => {
    const endless = {
      *[Symbol.iterator]() {
        for (let i = 0; ; i++) yield i
      },
    }
    const c = new AbortController()
    setImmediate(() => c.abort(new Error('stop now')))
    const err = await rejectionOf(
      pipe(
        endless,
        mapStage((n: number) => n, options),
      ).execute({ signal: c.signal }),
    )
    expect((err as Error).message).toBe('stop now')
  })
})

describe('millisecond options stay within what a timer can wait', () => {
  // Node fires a timer longer than 2^31 - 1 ms after 1 ms: 30 days of timeout would fail a 20 ms item
  const tooLong = 2 ** 31
  test.each([
    ['mapStage() timeout', () => mapStage(async (n: number) => n, { timeout: tooLong }), 'timeout'],
    ['mapStage() retryDelay', () => mapStage(async (n: number) => n, { retryDelay: tooLong }), 'retryDelay'],
    ['setup() timeout', () => mapStage(async (n: number) => n).setup({ timeout: tooLong }), 'timeout'],
    ['feed() idleTimeout', () => feed({ idleTimeout: tooLong }), 'idleTimeout'],
    ['batch() maxWait', () => batch(2, { maxWait: tooLong }), 'maxWait'],
  ])('%s of 2^31 ms is refused, naming the option and the limit', (_, make, option) => {
    expect(make).toThrow(RangeError)
    expect(make).toThrow(
      new RegExp(
        `\`${option}\` to be a number of milliseconds (from 0 to|above 0 and at most) 2147483647 \\(about 24\\.8 days`,
      ),
    )
  })

  test('run options and the rate limit have the same bound', async () => {
    const p = pipe([1])
    await expect(p.toArray({ progressInterval: tooLong, onProgress: () => {} })).rejects.toThrow(
      /`progressInterval` to be an integer from 1 to 2147483647, got 2147483648/,
    )
    expect(() => p.start({ progressInterval: tooLong, onProgress: () => {} })).toThrow(RangeError)
    expect(() => rateLimit(1 / tooLong)).toThrow(/one call per 2147483647 ms/)
    expect(() => rateLimit(1000 / (2 ** 31 - 1))).not.toThrow()
  })

  test('Infinity means never where never makes sense: timeout, idleTimeout, maxWait', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    try {
      const never = Number.POSITIVE_INFINITY
      const slow = mapStage(async (n: number) => n, { timeout: never })
      expect(slow.options).toMatchObject({ timeout: never })
      const input = feed<number>({ idleTimeout: never })
      const out = pipe(input, slow, batch(10, { maxWait: never })).toArray()
      await input.pushAll([1, 2, 3])
      await flush(2)
      // no timer was set for any of them: a timer of Infinity ms would fire after 1 ms
      expect(vi.getTimerCount()).toBe(0)
      expect(input.closed).toBe(false)
      input.end()
      expect(await out).toEqual([[1, 2, 3]])
    } finally {
      vi.useRealTimers()
    }
  })
})

describe('a retryDelay function that fails', () => {
  const itemError = new Error('item 2 failed')
  const flaky = (n: number): number => {
    if (n === 2) throw itemError
    return n
  }

  test.each([false, true])(
    'one that throws fails the run on the item, keeping both errors (ordered: %s)',
    async (ordered) => {
      const delayError = new Error('no delay today')
      const err = (await rejectionOf(
        pipe(
          numbers(4),
          mapStage(flaky, {
            ordered,
            retries: 3,
            retryDelay: () => {
              throw delayError
            },
          }),
        ).toArray(),
      )) as TaskException
      expect(err).toBeInstanceOf(TaskException)
      expect(err.item).toBe(2)
      const cause = err.cause as AggregateError
      expect(cause).toBeInstanceOf(AggregateError)
      expect(cause.message).toBe(
        'mapStage "flaky": `retryDelay` threw deciding the wait before retry 1: Error: no delay today',
      )
      expect(cause.errors).toEqual([itemError, delayError])
    },
  )

  test.each([
    [Number.NaN, RangeError, 'NaN (number)'],
    [-1, RangeError, '-1 (number)'],
    ['5', TypeError, '"5" (string)'],
    [Number.POSITIVE_INFINITY, RangeError, 'Infinity (number)'],
    [2 ** 31, RangeError, '2147483648 (number)'],
    [undefined, TypeError, 'undefined (undefined)'],
  ])(
    'one that returns %s fails the run with a %o naming it, the item error as its cause',
    async (returned, Kind, shown) => {
      let calls = 0
      const err = (await rejectionOf(
        pipe(
          numbers(4),
          mapStage(
            function flaky(n: number): number {
              if (n === 2) {
                calls++
                throw itemError
              }
              return n
            },
            { retries: 1, retryDelay: () => returned as number },
          ),
        ).toArray(),
      )) as TaskException
      expect(err).toBeInstanceOf(TaskException)
      expect(err.item).toBe(2)
      expect(err.cause).toBeInstanceOf(Kind)
      expect((err.cause as Error).message).toBe(
        `mapStage "flaky": expected \`retryDelay\` to return a number of milliseconds from 0 to 2147483647 (about 24.8 days, the longest a timer can wait) before retry 1, got ${shown}`,
      )
      expect((err.cause as Error).cause).toBe(itemError)
      // no retry was made
      expect(calls).toBe(1)
    },
  )
})

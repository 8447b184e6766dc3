import { describe, expect, test, vi } from 'vitest'
import {
  describeCause,
  flatMap,
  mapStage,
  pipe,
  SETTLE_GRACE_MS,
  type StageContext,
  stage,
  TaskException,
} from '../lib/index.js'
import {
  defer,
  flush,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  settlesWithin,
  spiedAsyncSource,
  spiedSyncSource,
  ticks,
  whenAborted,
} from './helpers/instruments.js'

recordUnhandledRejections()

const jitter = (n: number): number => (n * 7919) % 5

async function taskException(p: Promise<unknown>): Promise<TaskException> {
  const err = await rejectionOf(p)
  expect(err).toBeInstanceOf(TaskException)
  return err as TaskException
}

describe('a failing stage function', () => {
  test('a mapper failing at item 200 of 1000 with 4 workers rejects with a TaskException naming it', async () => {
    const boom = new Error('bad item 200')
    let failedIn = -1
    const check = mapStage(
      async function check(n: number, { worker }: StageContext) {
        await ticks(jitter(n))
        if (n === 200) {
          failedIn = worker
          throw boom
        }
        return n
      },
      { workers: 4 },
    )
    const err = await taskException(pipe(numbers(1000), check).toArray())
    expect(err.stage).toBe('check')
    expect(failedIn).toBeGreaterThanOrEqual(0)
    expect(err.worker).toBe(failedIn)
    expect(err.item).toBe(200)
    expect(err.cause).toBe(boom)
    expect(err.name).toBe('TaskException')
    expect(err.message).toBe(`The task "check-${failedIn}" raised Error: bad item 200`)
  })

  test('a mapper that throws synchronously is reported the same way', async () => {
    const err = await taskException(
      pipe(
        numbers(50),
        mapStage(
          (n: number) => {
            if (n === 7) throw new RangeError('seven')
            return n
          },
          { name: 'sync', workers: 2 },
        ),
      ).execute(),
    )
    expect(err.stage).toBe('sync')
    expect(err.item).toBe(7)
    expect(err.message).toMatch(/^The task "sync-[01]" raised RangeError: seven$/)
  })

  test('an ordered map stage reports the failing item', async () => {
    const err = await taskException(
      pipe(
        numbers(100),
        mapStage(
          async (n: number) => {
            await ticks(jitter(n))
            if (n === 42) throw new Error('no')
            return n
          },
          { workers: 3, ordered: true },
        ),
      ).toArray(),
    )
    expect(err.stage).toBe('stage1')
    expect(err.item).toBe(42)
  })

  test('non-Error throws are kept as cause and rendered with String()', async () => {
    const weird = {
      toString() {
        throw new Error('no toString for you')
      },
    }
    const sym = Symbol('s')
    const cases: [unknown, string][] = [
      ['boom', 'boom'],
      [42, '42'],
      [undefined, 'undefined'],
      [null, 'null'],
      [{ code: 7 }, '[object Object]'],
      [sym, 'Symbol(s)'],
      [weird, '[object Object]'],
    ]
    for (const [thrown, shown] of cases) {
      const err = await taskException(
        pipe(
          [1],
          mapStage(function thrower(): number {
            throw thrown
          }),
        ).execute(),
      )
      expect(err.cause).toBe(thrown)
      expect(err.message).toBe(`The task "thrower-0" raised ${shown}`)
    }
    expect(describeCause(new TypeError('t'))).toBe('TypeError: t')
  })

  test('a generator stage failing is named with its worker and no item', async () => {
    let failedIn = -1
    const explode = stage(
      async function* explode(xs: AsyncIterable<number>, { worker }: StageContext) {
        for await (const x of xs) {
          await ticks(jitter(x))
          if (x === 50) {
            failedIn = worker
            throw new Error('gen failed')
          }
          yield x
        }
      },
      { workers: 3 },
    )
    const err = await taskException(pipe(numbers(200), explode).toArray())
    expect(err.stage).toBe('explode')
    expect(err.worker).toBe(failedIn)
    expect(err.item).toBeUndefined()
    expect(err.message).toBe(`The task "explode-${failedIn}" raised Error: gen failed`)
  })

  test('a generator stage whose function returns no iterable fails with a TypeError cause', async () => {
    const notGen = stage((() => 42) as unknown as (xs: AsyncIterable<number>) => Iterable<number>, {
      name: 'notGen',
    })
    const err = await taskException(pipe([1, 2], notGen).toArray())
    expect(err.stage).toBe('notGen')
    expect(err.cause).toBeInstanceOf(TypeError)
    expect(String((err.cause as Error).message)).toMatch(/AsyncIterable or Iterable/)
  })

  test('a stage() function written as a plain async function fails with a TypeError, and its rejection is handled', async () => {
    const notGen = stage(async function notGen(): Promise<never> {
      throw new Error('inside')
    } as never)
    const err = await taskException(pipe([1], notGen).toArray())
    expect(err.cause).toBeInstanceOf(TypeError)
    expect((err.cause as Error).message).toContain('got a promise')
  })

  test('items delivered before the failure stay delivered, none come after', async () => {
    const it = pipe(
      numbers(1000),
      mapStage(
        (n: number) => {
          if (n === 200) throw new Error('stop')
          return n
        },
        { qsize: 0 },
      ),
    ).results()
    const got: number[] = []
    const err = await rejectionOf(
      (async () => {
        for (;;) {
          const r = await it.next()
          if (r.done) return
          got.push(r.value)
        }
      })(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect(got).toEqual(numbers(got.length))
    expect(got.length).toBeGreaterThanOrEqual(199)
    expect(got.length).toBeLessThanOrEqual(200)
    expect(await it.next()).toEqual({ value: undefined, done: true })
  })
})

describe('a failing source', () => {
  test('a sync source failing at item 10 rejects with stage "source", worker 0', async () => {
    const boom = new Error('source broke')
    const { source, spy } = spiedSyncSource(100, { failAt: 10, error: boom })
    const err = await taskException(
      pipe(
        source,
        mapStage((n: number) => n, { workers: 4 }),
      ).toArray(),
    )
    expect(err.stage).toBe('source')
    expect(err.worker).toBe(0)
    expect(err.item).toBeUndefined()
    expect(err.cause).toBe(boom)
    expect(err.message).toBe('The task "source-0" raised Error: source broke')
    expect(spy.reads).toBe(10)
    expect(spy.finalized).toBe(1)
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('an async source failing at item 10 rejects with stage "source", worker 0', async () => {
    const { source, spy } = spiedAsyncSource(100, { failAt: 10, error: 'plain string', ticks: 1 })
    const err = await taskException(
      pipe(
        source,
        mapStage(async (n: number) => n, { workers: 3 }),
      ).toArray(),
    )
    expect(err.stage).toBe('source')
    expect(err.worker).toBe(0)
    expect(err.cause).toBe('plain string')
    expect(err.message).toBe('The task "source-0" raised plain string')
    expect(spy.reads).toBe(10)
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('a source failing with no stages rejects the same way', async () => {
    const { source } = spiedAsyncSource(20, { failAt: 3 })
    const err = await taskException(pipe(source).toArray())
    expect(err.stage).toBe('source')
    const sync = spiedSyncSource(20, { failAt: 3 })
    expect((await taskException(pipe(sync.source).toArray())).stage).toBe('source')
  })

  test('a source function that throws, or returns no iterable, fails the run as the source', async () => {
    const boom = new Error('cannot open')
    const err = await taskException(
      pipe(
        () => {
          throw boom
        },
        mapStage((n: number) => n),
      ).toArray(),
    )
    expect(err.stage).toBe('source')
    expect(err.cause).toBe(boom)
    const bad = await taskException(pipe((() => 42) as unknown as () => number[]).toArray())
    expect(bad.stage).toBe('source')
    expect(bad.cause).toBeInstanceOf(TypeError)
    expect((bad.cause as Error).message).toMatch(/must return .*got number/)
  })
})

describe('fail fast', () => {
  test('the first error wins', async () => {
    const first = defer()
    const second = defer()
    const a = mapStage(async function a(n: number) {
      if (n === 3) await first.promise
      return n
    })
    const b = mapStage(async function b(n: number) {
      if (n === 1) await second.promise
      return n
    })
    const run = pipe(numbers(10), a, b).toArray()
    await flush()
    first.reject(new Error('first'))
    second.reject(new Error('second'))
    const err = await taskException(run)
    expect(err.stage).toBe('a')
    expect((err.cause as Error).message).toBe('first')
  })

  test('a failure in a later stage closes the source', async () => {
    const sync = spiedSyncSource(1000)
    await taskException(
      pipe(
        sync.source,
        mapStage((n: number) => n, { workers: 2 }),
        mapStage((n: number) => {
          if (n === 20) throw new Error('x')
          return n
        }),
      ).toArray(),
    )
    expect(sync.spy.returns).toBe(1)
    expect(sync.spy.finalized).toBe(1)
    expect(sync.spy.nextAfterEnd).toBe(0)

    const async = spiedAsyncSource(1000, { ticks: 1 })
    await taskException(
      pipe(
        async.source,
        mapStage(
          async (n: number) => {
            if (n === 20) throw new Error('x')
            return n
          },
          { workers: 3 },
        ),
      ).toArray(),
    )
    expect(async.spy.returns).toBe(1)
    await flush()
    expect(async.spy.finalized).toBe(1)
    expect(async.spy.nextAfterEnd).toBe(0)
  })

  test('a failure aborts ctx.signal in every worker of every stage, with the TaskException as reason', async () => {
    const contexts = new Map<string, StageContext>()
    const remember = (ctx: StageContext) => contexts.set(`${ctx.stage}-${ctx.worker}`, ctx)
    const first = mapStage(
      async function first(n: number, ctx: StageContext) {
        remember(ctx)
        await ticks(2)
        return n
      },
      { workers: 3 },
    )
    const second = stage(
      async function* second(xs: AsyncIterable<number>, ctx: StageContext) {
        remember(ctx)
        for await (const x of xs) yield x
      },
      { workers: 2 },
    )
    const third = mapStage(function third(n: number, ctx: StageContext) {
      remember(ctx)
      if (n === 30) throw new Error('thirty')
      return n
    })
    const err = await taskException(pipe(numbers(100), first, second, third).toArray())
    expect([...contexts.keys()].sort()).toEqual([
      'first-0',
      'first-1',
      'first-2',
      'second-0',
      'second-1',
      'third-0',
    ])
    for (const ctx of contexts.values()) {
      expect(ctx.signal.aborted).toBe(true)
      expect(ctx.signal.reason).toBe(err)
    }
  })

  test('no stage function is called after the failure (exact call counts)', async () => {
    const gates = numbers(100).map(() => defer())
    const { source, spy } = spiedSyncSource(100)
    let aCalls = 0
    let bCalls = 0
    const a = mapStage(
      async function a(n: number) {
        aCalls++
        await gates[n]!.promise
        return n
      },
      { workers: 4, qsize: 0 },
    )
    const b = mapStage(function b(n: number) {
      bCalls++
      return n
    })
    const run = pipe(source, a, b).toArray()
    await flush()
    expect(aCalls).toBe(4) // items 0..3, one per worker
    gates[2]!.reject(new Error('item 2'))
    const err = await taskException(run)
    expect(err.item).toBe(2)
    for (const g of gates) g.resolve()
    await flush()
    expect(aCalls).toBe(4)
    expect(bCalls).toBe(0)
    expect(spy.reads).toBe(4)
    expect(spy.returns).toBe(1)
  })

  test('no stage function is called after a failure in a busy chain', async () => {
    const calls = [0, 0, 0]
    const step = (i: number, failAt: number) =>
      mapStage(
        async (n: number) => {
          calls[i]!++
          await ticks(jitter(n + i))
          if (n === failAt) throw new Error(`step ${i}`)
          return n
        },
        { workers: 1 + i, qsize: i },
      )
    const run = pipe(numbers(1000), step(0, -1), step(1, 300), step(2, -1)).toArray()
    await taskException(run)
    const atRejection = [...calls]
    await flush(5)
    expect(calls).toEqual(atRejection)
  })

  test('the rejection waits for workers that honour the signal', async () => {
    let cleanedUp = 0
    const honours = mapStage(
      async (n: number, { signal }: StageContext) => {
        if (n === 0) {
          await ticks(3)
          throw new Error('zero')
        }
        try {
          await whenAborted(signal)
        } finally {
          await ticks(5) // some asynchronous cleanup
          cleanedUp++
        }
        return n
      },
      { workers: 4 },
    )
    await taskException(pipe(numbers(10), honours).toArray())
    expect(cleanedUp).toBe(3)
  })

  test('a worker that ignores its signal does not hold up the rejection, and its late error is swallowed', async () => {
    expect(SETTLE_GRACE_MS).toBeGreaterThan(0)
    const stuck = defer<number>()
    let calls = 0
    const run = pipe(
      numbers(10),
      mapStage(
        async (n: number) => {
          calls++
          if (n === 0) return stuck.promise // ignores ctx.signal entirely
          await ticks(3)
          if (n === 1) throw new Error('one')
          return n
        },
        { workers: 2, name: 'stubborn' },
      ),
    ).toArray()
    const err = await taskException(run)
    // the run rejected while the stubborn worker was still pending
    expect(stuck.settled).toBe(false)
    expect(err.item).toBe(1)
    const callsAtRejection = calls
    stuck.reject(new Error('late failure'))
    await flush(3)
    expect(calls).toBe(callsAtRejection)
    // recordUnhandledRejections() checks that 'late failure' surfaced nowhere
  })

  test('a worker that ignores its signal and later succeeds has its result dropped', async () => {
    const stuck = defer<number>()
    let seconds = 0
    const run = pipe(
      numbers(10),
      mapStage(
        async (n: number) => {
          if (n === 0) return stuck.promise
          if (n === 1) throw new Error('one')
          return n
        },
        { workers: 2 },
      ),
      mapStage((n: number) => {
        seconds++
        return n
      }),
    ).toArray()
    await taskException(run)
    expect(stuck.settled).toBe(false)
    const before = seconds
    stuck.resolve(0)
    await flush(3)
    expect(seconds).toBe(before)
  })

  test('the error rejects a for-await loop over results()', async () => {
    const got: number[] = []
    const err = await rejectionOf(
      (async () => {
        for await (const n of pipe(
          numbers(10),
          mapStage(
            (n: number) => {
              if (n === 5) throw new Error('five')
              return n
            },
            { qsize: 0 },
          ),
        )) {
          got.push(n)
        }
      })(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect(got.every((n) => n < 5)).toBe(true)
  })
})

/** Thrown values that throw when a message is made of them. */
function hostileThrows(): [string, () => unknown, RegExp][] {
  const getterThrows = (key: 'message' | 'name' | 'stack'): Error => {
    const e = new Error('hidden')
    Object.defineProperty(e, key, {
      get() {
        throw new Error(`no ${key} for you`)
      },
    })
    return e
  }
  class Shy extends Error {
    override get name(): string {
      throw new Error('no name')
    }
  }
  return [
    [
      'an Error whose message getter throws',
      () => getterThrows('message'),
      /raised Error \(describing it threw\)$/,
    ],
    [
      'an Error whose name getter throws',
      () => getterThrows('name'),
      /raised Error \(describing it threw\)$/,
    ],
    ['an Error whose stack getter throws', () => getterThrows('stack'), /raised Error: hidden$/],
    ['an Error subclass whose name getter throws', () => new Shy('m'), /raised Shy \(describing it threw\)$/],
    [
      'a Proxy whose prototype lookup throws',
      () =>
        new Proxy(
          {},
          {
            getPrototypeOf() {
              throw new Error('no prototype')
            },
          },
        ),
      /raised a value that could not be described$/,
    ],
    [
      'a revoked Proxy',
      () => {
        const { proxy, revoke } = Proxy.revocable(new Error('gone'), {})
        revoke()
        return proxy
      },
      /raised a value that could not be described$/,
    ],
    ['an object without a prototype', () => Object.create(null), /raised \[object Object\]$/],
  ]
}

describe('a thrown value that cannot be described', () => {
  const cases = hostileThrows()

  test.each(cases)(
    '%s, thrown by a sync source after its first item, rejects toArray()',
    async (_, make, shown) => {
      const thrown = make()
      const src = function* (): Generator<number> {
        yield 1
        throw thrown
      }
      const err = await taskException(
        settlesWithin(
          pipe(
            src(),
            mapStage((x: number) => x),
          ).toArray(),
          'toArray()',
          _,
          5_000,
        ),
      )
      expect(err.stage).toBe('source')
      expect(err.cause).toBe(thrown)
      expect(err.message).toMatch(shown)
    },
  )

  test.each(cases)('%s, thrown by an async source, rejects execute()', async (_, make, shown) => {
    const thrown = make()
    async function* src(): AsyncGenerator<number> {
      yield 1
      throw thrown
    }
    const err = await taskException(settlesWithin(pipe(src()).execute(), 'execute()', _, 5_000))
    expect(err.stage).toBe('source')
    expect(err.message).toMatch(shown)
  })

  test.each(cases)(
    '%s, thrown by each kind of stage, rejects the run with it as cause',
    async (_, make, shown) => {
      const kinds = [
        mapStage(function syncMap(n: number): number {
          if (n === 3) throw make()
          return n
        }),
        mapStage(
          async function asyncMap(n: number): Promise<number> {
            if (n === 3) throw make()
            return n
          },
          { workers: 3, ordered: true },
        ),
        mapStage(
          function withPolicies(n: number): number {
            if (n === 3) throw make()
            return n
          },
          { retries: 1 },
        ),
        stage(async function* generator(xs: AsyncIterable<number>) {
          for await (const n of xs) {
            if (n === 3) throw make()
            yield n
          }
        }),
        flatMap(function many(n: number): number[] {
          if (n === 3) throw make()
          return [n]
        }),
      ]
      for (const kind of kinds) {
        const err = await taskException(
          settlesWithin(pipe(numbers(10), kind).toArray(), 'toArray()', kind.name, 5_000),
        )
        expect(err.stage).toBe(kind.name)
        expect(err.message).toMatch(shown)
      }
    },
  )

  test.each(cases)(
    '%s, thrown by a stage of a started run, rejects done and clears the keep-alive',
    async (_, make, shown) => {
      vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
      try {
        const run = pipe(
          numbers(5),
          mapStage(async (n: number) => {
            if (n === 2) throw make()
            return n
          }),
        ).start()
        const err = await taskException(settlesWithin(run.done, 'run.done', _, 5_000))
        expect(err.message).toMatch(shown)
        expect(vi.getTimerCount()).toBe(0)
        expect(run.alive).toBe(false)
      } finally {
        vi.useRealTimers()
      }
    },
  )

  test.each(cases)(
    '%s, thrown by onResult or onProgress, fails the run as that callback',
    async (_, make, shown) => {
      const byResult = await taskException(
        settlesWithin(
          pipe(numbers(3)).start({
            onResult: () => {
              throw make()
            },
          }).done,
          'done',
          _,
          5_000,
        ),
      )
      expect(byResult.stage).toBe('onResult')
      expect(byResult.message).toMatch(shown)
      const gate = defer()
      const byProgress = await taskException(
        settlesWithin(
          pipe(
            numbers(3),
            mapStage(async (n: number) => {
              await gate.promise
              return n
            }),
          ).toArray({
            progressInterval: 1,
            onProgress: () => {
              throw make()
            },
          }),
          'toArray()',
          _,
          5_000,
        ),
      )
      expect(byProgress.stage).toBe('onProgress')
      expect(byProgress.message).toMatch(shown)
    },
  )
})

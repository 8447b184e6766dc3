import { beforeAll, describe, expect, test } from 'vitest'
import {
  type MapContext,
  mapStage,
  pipe,
  type RunStats,
  rateLimit,
  skip,
  TaskException,
  TimeoutError,
  threadStage,
} from '../lib/index.js'
import {
  defer,
  flush,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
  spiedSyncSource,
} from './helpers/instruments.js'
import { hasProc, osThreads, threadsBackTo } from './helpers/threads.js'

recordUnhandledRejections()

const FIXTURES = new URL('./fixtures/threads/', import.meta.url)
const POLICIES = new URL('policies.js', FIXTURES)
const STATEFUL = new URL('stateful.js', FIXTURES)
const STUCK = new URL('stuck.js', FIXTURES)
const WORK = new URL('work.js', FIXTURES)
const DISPOSE_HANGS = new URL('dispose-hangs.js', FIXTURES)

function shared(n: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * n))
}

/** The stats of the run's last snapshot (onProgress is called once more when the run ends). */
function lastStats(): {
  onProgress: (s: RunStats) => void
  stage: (i?: number) => RunStats['stages'][number]
} {
  let last: RunStats | undefined
  return {
    onProgress: (s) => {
      last = s
    },
    stage: (i = 0) => last!.stages[i]!,
  }
}

interface Flaky {
  n: number
  fails: number
  calls: Int32Array
  attempts?: Int32Array
}

/** Items 0..n-1 for `flaky`, with `fails(n)` failing calls each, counting into one shared array. */
function flakyItems(
  n: number,
  fails: (i: number) => number,
): { items: Flaky[]; calls: Int32Array; attempts: Int32Array } {
  const calls = shared(n)
  const attempts = shared(n)
  return { items: numbers(n).map((i) => ({ n: i, fails: fails(i), calls, attempts })), calls, attempts }
}

beforeAll(async () => {
  // the first run loads piscina and starts libuv's pool: only after it do thread counts stay level
  await pipe([1, 2, 3], threadStage(WORK, { threads: 2 })).toArray()
})

describe('retries', () => {
  test('an item that fails twice then succeeds with retries: 2 is delivered once; its batch is not run again', async () => {
    const { items, calls, attempts } = flakyItems(40, (i) => (i === 5 ? 2 : 0))
    const stats = lastStats()
    const out = await pipe(
      items,
      threadStage<Flaky, number>(POLICIES, { export: 'flaky', threads: 2, retries: 2 }),
    ).toArray({ onProgress: stats.onProgress })
    expect(sorted(out)).toEqual(numbers(40))
    expect(calls[5]).toBe(3)
    expect(attempts[5]).toBe(2)
    // every other item ran once, although item 5 shared a batch with some of them
    expect([...calls].filter((c, i) => i !== 5 && c !== 1)).toEqual([])
    expect(stats.stage()).toMatchObject({ in: 40, out: 40, retried: 2, failed: 0, skipped: 0 })
  })

  test('with retries: 1 the run rejects with a TaskException whose cause came from the thread', async () => {
    const { items, calls } = flakyItems(10, (i) => (i === 5 ? 2 : 0))
    const stats = lastStats()
    const err = (await rejectionOf(
      pipe(items, threadStage(POLICIES, { export: 'flaky', retries: 1, ordered: true })).toArray({
        onProgress: stats.onProgress,
      }),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.stage).toBe('flaky')
    expect(err.item).toBe(items[5])
    expect(err.message).toBe(`The task "flaky-${err.worker}" raised ItemError: item 5 failed on call 2`)
    const cause = err.cause as Error & { code: string }
    expect(cause.name).toBe('ItemError')
    expect(cause.code).toBe('E_ITEM')
    expect(cause.stack).toMatch(/at flaky \(.*fixtures\/threads\/policies\.js:\d+:\d+\)/)
    expect(calls[5]).toBe(2)
    expect(stats.stage()).toMatchObject({ retried: 1, failed: 1 })
  })

  test('retryDelay as a function is called on the main thread with the retry number and the rebuilt error', async () => {
    const { items, calls } = flakyItems(3, (i) => (i === 1 ? 2 : 0))
    const seen: [number, string, string][] = []
    const out = await pipe(
      items,
      threadStage<Flaky, number>(POLICIES, {
        export: 'flaky',
        retries: 5,
        retryDelay: (retry, err) => {
          seen.push([retry, (err as Error).name, (err as Error).message])
          return retry
        },
      }),
    ).toArray()
    expect(sorted(out)).toEqual([0, 1, 2])
    expect(seen).toEqual([
      [1, 'ItemError', 'item 1 failed on call 1'],
      [2, 'ItemError', 'item 1 failed on call 2'],
    ])
    expect(calls[1]).toBe(3)
  })

  test('ordered output stays in input order when items of many batches are retried', async () => {
    const { items, calls } = flakyItems(300, (i) => (i % 7 === 0 ? 1 : 0))
    const stats = lastStats()
    const out = await pipe(
      items,
      threadStage<Flaky, number>(POLICIES, {
        export: 'flaky',
        threads: 2,
        batch: 8,
        ordered: true,
        retries: 1,
      }),
    ).toArray({ onProgress: stats.onProgress })
    expect(out).toEqual(numbers(300))
    const failing = numbers(300).filter((i) => i % 7 === 0).length
    expect([...calls].reduce((a, b) => a + b, 0)).toBe(300 + failing)
    expect(stats.stage().retried).toBe(failing)
  })
})

describe('errors: skip', () => {
  test.each([false, true])(
    'drops failing items, calling onError once per item with the error, the item and ctx (ordered: %s)',
    async (ordered) => {
      const reported: [string, string, number][] = []
      const workers = new Set<number>()
      const stats = lastStats()
      const out = await pipe(
        numbers(100),
        threadStage<number, number>(POLICIES, {
          export: 'failFives',
          threads: 2,
          batch: 16,
          ordered,
          errors: 'skip',
          onError: (err, item, ctx) => {
            reported.push([(err as Error).name, (err as Error).message, item])
            workers.add(ctx.worker)
            expect(ctx).toMatchObject({ stage: 'failFives', attempt: 0, state: undefined })
            expect(ctx.signal.aborted).toBe(false)
          },
        }),
      ).toArray({ onProgress: stats.onProgress })
      const kept = numbers(100).filter((n) => n % 5 !== 0)
      expect(ordered ? out : sorted(out)).toEqual(kept)
      expect(reported.map((r) => r[2]).sort((a, b) => a - b)).toEqual(numbers(100).filter((n) => n % 5 === 0))
      for (const [name, message, item] of reported) {
        expect(name).toBe('ItemError')
        expect(message).toBe(`bad ${item}`)
      }
      for (const w of workers) expect([0, 1]).toContain(w)
      expect(stats.stage()).toMatchObject({ in: 100, out: 80, failed: 20, skipped: 0, retried: 0 })
    },
  )

  test('retries first, then skips: onError gets the last error and the attempt', async () => {
    const { items, calls } = flakyItems(6, (i) => (i === 2 ? 10 : 0))
    const reported: [unknown, number][] = []
    const out = await pipe(
      items,
      threadStage<Flaky, number>(POLICIES, {
        export: 'flaky',
        ordered: true,
        retries: 2,
        errors: 'skip',
        onError: (err, item, ctx) => {
          reported.push([(err as Error).message, ctx.attempt])
          expect(item).toBe(items[2])
        },
      }),
    ).toArray()
    expect(out).toEqual([0, 1, 3, 4, 5])
    expect(calls[2]).toBe(3)
    expect(reported).toEqual([['item 2 failed on call 3', 2]])
  })

  test('an onError that throws fails the run with its error', async () => {
    const err = (await rejectionOf(
      pipe(
        numbers(10),
        threadStage(POLICIES, {
          export: 'failFives',
          errors: 'skip',
          onError: () => {
            throw new Error('callback broke')
          },
        }),
      ).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect((err.cause as Error).message).toBe('callback broke')
    expect([0, 5]).toContain(err.item)
  })
})

describe('callbacks that fail', () => {
  test('an async onError that rejects fails the run with its error, on the item', async () => {
    const broke = new Error('async callback broke')
    const err = (await rejectionOf(
      pipe(
        numbers(10),
        threadStage(POLICIES, {
          export: 'failFives',
          threads: 1,
          ordered: true,
          errors: 'skip',
          onError: async () => {
            await null
            throw broke
          },
        }),
      ).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.cause).toBe(broke)
    expect([0, 5]).toContain(err.item)
  })

  test('an async onError is awaited: ordered results after its item wait for its promise', async () => {
    // item 0 fails on every call and is skipped; item 1 succeeds, but comes after it in order
    const { items, calls } = flakyItems(2, (i) => (i === 0 ? 10 : 0))
    const called = defer()
    const gate = defer()
    const it = pipe(
      items,
      threadStage<Flaky, number>(POLICIES, {
        export: 'flaky',
        threads: 1,
        ordered: true,
        errors: 'skip',
        onError: async () => {
          called.resolve()
          await gate.promise
        },
      }),
    )[Symbol.asyncIterator]()
    let next: IteratorResult<number> | undefined
    const pending = it.next().then((r) => (next = r))
    await called.promise
    // item 1 has run in its thread, and its answer had time to come back
    while (Atomics.load(calls, 1) === 0) await flush(1)
    await flush(20)
    expect(next).toBeUndefined()
    gate.resolve()
    await pending
    expect(next).toEqual({ done: false, value: 1 })
    expect((await it.next()).done).toBe(true)
  })

  test('a retryDelay that throws fails the run on the item, keeping both errors', async () => {
    const { items } = flakyItems(4, (i) => (i === 2 ? 1 : 0))
    const delayError = new Error('no delay today')
    const err = (await rejectionOf(
      pipe(
        items,
        threadStage(POLICIES, {
          export: 'flaky',
          threads: 1,
          retries: 3,
          retryDelay: () => {
            throw delayError
          },
        }),
      ).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.item).toBe(items[2])
    const cause = err.cause as AggregateError
    expect(cause).toBeInstanceOf(AggregateError)
    expect(cause.message).toBe(
      'threadStage "flaky": `retryDelay` threw deciding the wait before retry 1: Error: no delay today',
    )
    expect(cause.errors).toHaveLength(2)
    expect((cause.errors[0] as Error).message).toBe('item 2 failed on call 1')
    expect(cause.errors[1]).toBe(delayError)
  })

  test.each([
    [Number.NaN, RangeError, 'NaN (number)'],
    [-1, RangeError, '-1 (number)'],
    ['5', TypeError, '"5" (string)'],
    [Number.POSITIVE_INFINITY, RangeError, 'Infinity (number)'],
    [2 ** 31, RangeError, '2147483648 (number)'],
    [undefined, TypeError, 'undefined (undefined)'],
  ])(
    'a retryDelay that returns %s fails the run with a %o naming it, the item error as its cause',
    async (returned, Kind, shown) => {
      const { items, calls } = flakyItems(4, (i) => (i === 2 ? 1 : 0))
      const err = (await rejectionOf(
        pipe(
          items,
          threadStage(POLICIES, {
            export: 'flaky',
            threads: 1,
            retries: 1,
            retryDelay: () => returned as number,
          }),
        ).toArray(),
      )) as TaskException
      expect(err).toBeInstanceOf(TaskException)
      expect(err.item).toBe(items[2])
      expect(err.cause).toBeInstanceOf(Kind)
      expect((err.cause as Error).message).toBe(
        `threadStage "flaky": expected \`retryDelay\` to return a number of milliseconds from 0 to 2147483647 (about 24.8 days, the longest a timer can wait) before retry 1, got ${shown}`,
      )
      expect(((err.cause as Error).cause as Error).message).toBe('item 2 failed on call 1')
      // no retry was made
      expect(calls[2]).toBe(1)
    },
  )
})

describe('skip', () => {
  test('returning stageline skip from the thread drops the item, in order and out of order, and counts it', async () => {
    // what the fixture returns is the registered symbol, as every copy of stageline has it
    expect(skip).toBe(Symbol.for('stageline.skip'))
    const stats = lastStats()
    const ordered = await pipe(
      numbers(50),
      threadStage<number, number>(POLICIES, { export: 'evensOnly', threads: 2, batch: 4, ordered: true }),
    ).toArray({ onProgress: stats.onProgress })
    expect(ordered).toEqual(numbers(50).filter((n) => n % 2 === 0))
    expect(stats.stage()).toMatchObject({ in: 50, out: 25, skipped: 25, failed: 0 })
    const unordered = await pipe(
      numbers(50),
      threadStage<number, number>(POLICIES, { export: 'evensOnly', threads: 2 }),
    ).toArray()
    expect(sorted(unordered)).toEqual(numbers(50).filter((n) => n % 2 === 0))
  })

  test('skip is recognised by identity: a symbol that only shares its description is refused', async () => {
    const err = (await rejectionOf(
      pipe(
        numbers(6),
        threadStage(POLICIES, { export: 'skipLookalike', threads: 1, ordered: true }),
      ).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.item).toBe(3)
    expect((err.cause as Error).message).toMatch(
      /^threadStage "skipLookalike": a result cannot be sent back from its thread: result is a symbol \(Symbol\(stageline\.skip\)\); only primitives/,
    )
  })

  test('skip from an async function, next to skipped failures, with policies on', async () => {
    const failed: number[] = []
    const stats = lastStats()
    const out = await pipe(
      numbers(30),
      threadStage<number, number>(POLICIES, {
        export: 'skipThreesFailFours',
        ordered: true,
        timeout: 60_000,
        errors: 'skip',
        onError: (_err, n) => {
          failed.push(n)
        },
      }),
    ).toArray({ onProgress: stats.onProgress })
    const threes = numbers(30).filter((n) => n % 3 === 0)
    const fours = numbers(30).filter((n) => n % 3 !== 0 && n % 4 === 0)
    expect(out).toEqual(numbers(30).filter((n) => !threes.includes(n) && !fours.includes(n)))
    expect(sorted(failed)).toEqual(fours)
    expect(stats.stage()).toMatchObject({ skipped: threes.length, failed: fours.length })
  })
})

describe('timeout', () => {
  test('stops a synchronous loop that reads signal.aborted: the reason is a TimeoutError, the run fails with one', async () => {
    const state = shared(3)
    const err = (await rejectionOf(
      pipe([{ n: 1, state }], threadStage(POLICIES, { export: 'spinUntilAborted', timeout: 50 })).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.cause).toBeInstanceOf(TimeoutError)
    expect(err.message).toBe(
      'The task "spinUntilAborted-0" raised TimeoutError: stage "spinUntilAborted" took longer than 50 ms on an item',
    )
    expect([...state]).toEqual([1, 1, 1])
  })

  test('stops a loop that calls signal.throwIfAborted(), and the item is retried, then skipped', async () => {
    const state = shared(3)
    const reported: unknown[] = []
    const stats = lastStats()
    const out = await pipe(
      [{ n: 1, state }],
      threadStage(POLICIES, {
        export: 'spinUntilThrown',
        timeout: 30,
        retries: 1,
        errors: 'skip',
        onError: (err) => {
          reported.push(err)
        },
      }),
    ).toArray({ onProgress: stats.onProgress })
    expect(out).toEqual([])
    expect(state[0]).toBe(2)
    expect(reported).toHaveLength(1)
    expect(reported[0]).toBeInstanceOf(TimeoutError)
    expect(stats.stage()).toMatchObject({ retried: 1, failed: 1 })
  })

  test('a result that arrives after the deadline counts as a timeout', async () => {
    const reported: unknown[] = []
    // `busy` ignores its signal and takes at least 60 ms of wall time against a 20 ms timeout:
    // late, but within the grace period after which its thread would be ended
    const items = [
      { n: 0, ms: 60 },
      { n: 1, ms: 60 },
    ]
    const out = await pipe(
      items,
      threadStage(POLICIES, {
        export: 'busy',
        timeout: 20,
        errors: 'skip',
        onError: (err, item) => {
          reported.push([err instanceof TimeoutError, item])
        },
      }),
    ).toArray()
    expect(out).toEqual([])
    expect(reported).toEqual([
      [true, items[0]],
      [true, items[1]],
    ])
  })

  test('a late result that fails the run is a TimeoutError (errors: fail, no retries)', async () => {
    const err = (await rejectionOf(
      pipe([{ n: 1, ms: 300 }], threadStage(POLICIES, { export: 'busy', timeout: 20 })).toArray(),
    )) as TaskException
    expect(err.cause).toBeInstanceOf(TimeoutError)
    expect(err.item).toEqual({ n: 1, ms: 300 })
  })

  test("an async function's promise is given up at the deadline and its 'abort' listener sees a TimeoutError", async () => {
    const state = shared(3)
    const err = (await rejectionOf(
      pipe(
        [{ n: 1, wait: true, state }],
        threadStage(POLICIES, { export: 'awaitAbort', timeout: 30 }),
      ).toArray(),
    )) as TaskException
    expect(err.cause).toBeInstanceOf(TimeoutError)
    expect([...state]).toEqual([1, 1, 1])
  })

  test('a timed-out item is retried like any failure and then delivered once; the others are untouched', async () => {
    const calls = shared(3)
    // the first call of item 1 runs until its time is up; every other call returns at once, well
    // within the timeout (1 s, so that a loaded machine cannot make a quick call late)
    const items = numbers(3).map((n) => ({ n, fails: n === 1 ? 1 : 0, calls }))
    const stats = lastStats()
    const out = await pipe(
      items,
      threadStage(POLICIES, { export: 'abortedFirst', ordered: true, timeout: 1000, retries: 1 }),
    ).toArray({ onProgress: stats.onProgress })
    expect(out).toEqual([0, 1, 2])
    expect([...calls]).toEqual([1, 2, 1])
    expect(stats.stage().retried).toBe(1)
  })
})

interface Stuck {
  n: number
  spins: number
  calls: Int32Array
  attempts: Int32Array
  state: Int32Array
}

interface StuckResult {
  n: number
  thread: number
  initHere: boolean
  bytes: number | undefined
}

/** Items 0..n-1 for `spinFirst`: item `stuck` spins on its first `spins` calls, the others return at once. */
function stuckItems(n: number, stuck: number, spins = 1): Stuck[] {
  const calls = shared(n)
  const attempts = shared(n)
  const state = shared(3)
  return numbers(n).map((i) => ({ n: i, spins: i === stuck ? spins : 0, calls, attempts, state }))
}

/** Lets every spin of `items` that is still going end (a broken build's), so that no thread is left spinning. */
function release(items: Stuck[]): void {
  Atomics.store(items[0]!.state, 2, 1)
}

describe('timeout on a function that never looks at its signal', () => {
  test.runIf(hasProc)(
    'ends the thread once the time and a grace period are up: the run fails with a TimeoutError on the item',
    async () => {
      const before = osThreads()
      const items = stuckItems(3, 1)
      try {
        const err = (await rejectionOf(
          pipe(
            items,
            threadStage(STUCK, { export: 'spinFirst', threads: 1, ordered: true, timeout: 100 }),
          ).toArray(),
        )) as TaskException
        expect(err).toBeInstanceOf(TaskException)
        expect(err.cause).toBeInstanceOf(TimeoutError)
        expect(err.item).toBe(items[1])
        expect(err.message).toBe(
          'The task "spinFirst-0" raised TimeoutError: stage "spinFirst" took longer than 100 ms on an item',
        )
        // the spin was cut short by the end of its thread: it never returned by itself
        expect(await threadsBackTo(before)).toBe(before)
        expect([...items[0]!.state]).toEqual([1, 0, 0])
      } finally {
        release(items)
      }
    },
  )

  test.runIf(hasProc)(
    'with errors: skip, the item is skipped and every other item is delivered once, by a new thread that ran init',
    async () => {
      const before = osThreads()
      const items = stuckItems(60, 30)
      const { calls, attempts, state } = items[0]!
      const reported: [unknown, unknown, number][] = []
      const stats = lastStats()
      try {
        const out = await pipe(
          items,
          threadStage<Stuck, StuckResult>(STUCK, {
            export: 'spinFirst',
            threads: 1,
            batch: 8,
            ordered: true,
            timeout: 100,
            errors: 'skip',
            onError: (err, item, ctx) => {
              reported.push([err, item, ctx.attempt])
            },
          }),
        ).toArray({ onProgress: stats.onProgress })
        expect(out.map((r) => r.n)).toEqual(numbers(60).filter((n) => n !== 30))
        expect(reported).toHaveLength(1)
        expect(reported[0]![0]).toBeInstanceOf(TimeoutError)
        expect(reported[0]![1]).toBe(items[30])
        expect(reported[0]![2]).toBe(0)
        // the stuck thread was ended and replaced: the items after it came from a new thread,
        // whose init ran (every result says init ran in the thread that computed it)
        expect(out.every((r) => r.initHere)).toBe(true)
        const threads = [...new Set(out.map((r) => r.thread))]
        expect(threads).toHaveLength(2)
        expect(out.filter((r) => r.n > 30).every((r) => r.thread === threads[1])).toBe(true)
        // the stuck item ran once; the items of its batch that ran before it ran again (their
        // results were in the ended thread), and no other item ran twice; none of this is a retry
        expect(calls[30]).toBe(1)
        const twice = numbers(60).filter((n) => calls[n] === 2)
        expect(numbers(60).every((n) => calls[n] === 1 || twice.includes(n))).toBe(true)
        expect(twice).toEqual(
          twice.length === 0 ? [] : numbers(twice.length).map((k) => 30 - twice.length + k),
        )
        expect(twice.length).toBeLessThan(8)
        expect([...attempts].every((a) => a === 0)).toBe(true)
        expect(stats.stage()).toMatchObject({ in: 60, out: 59, failed: 1, retried: 0 })
        expect(await threadsBackTo(before)).toBe(before)
        expect([...state]).toEqual([1, 0, 0])
      } finally {
        release(items)
      }
    },
  )

  test.runIf(hasProc)(
    'with retries, the timed-out item is retried like any failure, on a new thread',
    async () => {
      const before = osThreads()
      const items = stuckItems(20, 10)
      const { calls, attempts } = items[0]!
      const stats = lastStats()
      try {
        const out = await pipe(
          items,
          threadStage<Stuck, StuckResult>(STUCK, {
            export: 'spinFirst',
            threads: 2,
            ordered: true,
            timeout: 100,
            retries: 1,
          }),
        ).toArray({ onProgress: stats.onProgress })
        expect(out.map((r) => r.n)).toEqual(numbers(20))
        expect(out.every((r) => r.initHere)).toBe(true)
        expect(calls[10]).toBe(2)
        // its second call was its retry (attempt 1); every other call was a first try
        expect(attempts[10]).toBe(1)
        expect(numbers(20).every((n) => n === 10 || attempts[n] === 0)).toBe(true)
        expect(stats.stage()).toMatchObject({ in: 20, out: 20, failed: 0, retried: 1 })
        expect(await threadsBackTo(before)).toBe(before)
        // the first call was cut short by the end of its thread
        expect([...items[0]!.state]).toEqual([1, 0, 0])
      } finally {
        release(items)
      }
    },
  )

  test('the other items of an ended batch that fail or return skip are reported once, as in any batch', async () => {
    const items = stuckItems(40, 20).map((x) => ({ ...x, throws: x.n % 5 === 1, drop: x.n % 5 === 2 }))
    const reported: [string, number][] = []
    const stats = lastStats()
    try {
      const out = await pipe(
        items,
        threadStage<Stuck, StuckResult>(STUCK, {
          export: 'spinFirst',
          threads: 1,
          batch: 8,
          ordered: true,
          timeout: 100,
          errors: 'skip',
          onError: (err, item) => {
            reported.push([(err as Error).name, item.n])
          },
        }),
      ).toArray({ onProgress: stats.onProgress })
      const throws = numbers(40).filter((n) => n % 5 === 1)
      const drops = numbers(40).filter((n) => n % 5 === 2)
      expect(out.map((r) => r.n)).toEqual(
        numbers(40).filter((n) => n !== 20 && !throws.includes(n) && !drops.includes(n)),
      )
      // once each (batches settle in any order)
      expect(reported.sort((a, b) => a[1] - b[1])).toEqual(
        [
          ...throws.map((n) => ['Error', n] as [string, number]),
          ['TimeoutError', 20] as [string, number],
        ].sort((a, b) => a[1] - b[1]),
      )
      expect(stats.stage()).toMatchObject({
        in: 40,
        failed: throws.length + 1,
        skipped: drops.length,
        retried: 0,
      })
    } finally {
      release(items)
    }
  })

  test.runIf(hasProc)(
    'with transfer, items go one per batch: none is sent again after its buffer moved to an ended thread',
    async () => {
      const before = osThreads()
      const items = stuckItems(12, 5).map((x) => ({ ...x, buf: new ArrayBuffer(8) }))
      const skipped: unknown[] = []
      try {
        const out = await pipe(
          items,
          threadStage<Stuck & { buf: ArrayBuffer }, StuckResult & { bytes: number }>(STUCK, {
            export: 'spinFirst',
            threads: 1,
            batch: 8,
            ordered: true,
            timeout: 100,
            errors: 'skip',
            onError: (_err, item) => {
              skipped.push(item)
            },
            transfer: (item) => [item.buf],
          }),
        ).toArray()
        expect(out.map((r) => r.n)).toEqual(numbers(12).filter((n) => n !== 5))
        // every item ran once, with its 8 bytes: none was sent again with a buffer already moved
        expect(out.map((r) => r.bytes)).toEqual(out.map(() => 8))
        expect([...items[0]!.calls]).toEqual(numbers(12).map(() => 1))
        expect(skipped).toEqual([items[5]])
        expect(await threadsBackTo(before)).toBe(before)
      } finally {
        release(items)
      }
    },
  )

  test('an async function that never settles is given up at its deadline, and its thread goes on', async () => {
    const reported: unknown[] = []
    const out = await pipe(
      numbers(10).map((n) => ({ n, hang: n % 4 === 1 })),
      threadStage<{ n: number }, StuckResult>(STUCK, {
        export: 'hangAsync',
        threads: 1,
        ordered: true,
        timeout: 30,
        errors: 'skip',
        onError: (err) => {
          reported.push(err)
        },
      }),
    ).toArray()
    expect(out.map((r) => r.n)).toEqual([0, 2, 3, 4, 6, 7, 8])
    expect(reported).toHaveLength(3)
    expect(reported.every((e) => e instanceof TimeoutError)).toBe(true)
    // one thread did it all: none was ended
    expect(new Set(out.map((r) => r.thread)).size).toBe(1)
  })
})

describe('init and dispose exports', () => {
  test('init runs once per thread, before its items; what it returns is ctx.state there', async () => {
    const counters = shared(3)
    const out = await pipe(
      numbers(400).map((n) => ({ n, shared: counters })),
      threadStage<{ n: number }, any>(STATEFUL, { threads: 2, batch: 8 }),
    ).toArray()
    expect(out).toHaveLength(400)
    const tokens = new Map<number, number>()
    for (const r of out) {
      // init ran once in the thread that computed this result, and its state is that thread's
      expect(r.inits).toBe(1)
      expect(r.stateWorker).toBe(r.worker)
      if (!tokens.has(r.worker)) tokens.set(r.worker, r.token)
      expect(r.token).toBe(tokens.get(r.worker))
    }
    expect([...tokens.keys()].every((w) => w === 0 || w === 1)).toBe(true)
    // dispose ran once in each thread that saw items, before the run settled, with its state
    expect(counters[0]).toBe(tokens.size)
    expect(counters[1]).toBe(400)
    expect(counters[2]).toBe(0)
  })

  test('a failing init fails the run before any item is taken', async () => {
    const { source, spy } = spiedSyncSource(numbers(10))
    const err = (await rejectionOf(
      pipe(source, threadStage(new URL('init-fails.js', FIXTURES), { threads: 2 })).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.item).toBeUndefined()
    expect(err.cause).toBeInstanceOf(RangeError)
    expect((err.cause as Error).message).toBe('no connection today')
    expect(spy.reads).toBe(0)
  })

  test('an init export that is not a function fails the run clearly', async () => {
    const href = new URL('bad-init.js', FIXTURES).href
    const err = (await rejectionOf(
      pipe([1], threadStage(new URL('bad-init.js', FIXTURES))).toArray(),
    )) as TaskException
    expect((err.cause as Error).message).toBe(
      `threadStage "bad-init": the module ${href} exports \`init\` as object; a thread stage calls it, so it must be a function (or not be exported)`,
    )
  })

  test('a dispose that throws fails a run that was otherwise done', async () => {
    const counters = shared(3)
    const err = (await rejectionOf(
      pipe(
        [{ n: 1, shared: counters, throwOnDispose: true }],
        threadStage(STATEFUL, { threads: 1, name: 'db' }),
      ).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.message).toBe('The task "db-0" raised Error: dispose failed in thread 0')
    expect(counters[0]).toBe(1)
  })

  test.runIf(hasProc)(
    'no thread outlives a run with init and dispose: completed, failed, or stopped early',
    async () => {
      const before = osThreads()
      const counters = shared(3)
      const items = numbers(20_000).map((n) => ({ n, shared: counters }))
      await pipe(items.slice(0, 100), threadStage(STATEFUL, { threads: 2 })).toArray()
      expect(await threadsBackTo(before)).toBe(before)
      let got = 0
      for await (const _ of pipe(items, threadStage(STATEFUL, { threads: 2 }))) if (++got === 10) break
      expect(await threadsBackTo(before)).toBe(before)
      await rejectionOf(
        pipe([{ n: 1, shared: counters, throwOnDispose: true }], threadStage(STATEFUL)).toArray(),
      )
      expect(await threadsBackTo(before)).toBe(before)
    },
  )
})

describe('disposeTimeout', () => {
  test.runIf(hasProc).each(['sync', 'async'])(
    'a dispose that does not return (%s) has its thread ended after disposeTimeout, with a warning; the run resolves',
    async (mode) => {
      const before = osThreads()
      const state = shared(3)
      const warnings: Error[] = []
      const onWarning = (w: Error): void => {
        warnings.push(w)
      }
      process.on('warning', onWarning)
      try {
        const out = await pipe(
          numbers(5).map((n) => ({ n, state, mode })),
          threadStage<{ n: number }, number>(DISPOSE_HANGS, {
            threads: 1,
            ordered: true,
            disposeTimeout: 100,
          }),
        ).toArray()
        expect(out).toEqual(numbers(5))
        // dispose started and never returned: its thread was ended under it
        expect(Atomics.load(state, 0)).toBe(1)
        expect(await threadsBackTo(before)).toBe(before)
        expect(Atomics.load(state, 1)).toBe(0)
        await flush(3)
        expect(warnings.map((w) => w.message)).toEqual([
          'stageline: threadStage "dispose-hangs": dispose did not return within 100 ms (disposeTimeout) in 1 of its 1 threads; they were ended (the run\'s outcome is unchanged)',
        ])
      } finally {
        process.off('warning', onWarning)
        Atomics.store(state, 2, 1)
      }
    },
  )

  test('with a disposeTimeout, a dispose that throws still fails the run', async () => {
    const counters = shared(3)
    const err = (await rejectionOf(
      pipe(
        [{ n: 1, shared: counters, throwOnDispose: true }],
        threadStage(STATEFUL, { threads: 1, name: 'db', disposeTimeout: 60_000 }),
      ).toArray(),
    )) as TaskException
    expect(err.message).toBe('The task "db-0" raised Error: dispose failed in thread 0')
  })

  test.each([
    [-1, RangeError, '-1 (number)'],
    [0, RangeError, '0 (number)'],
    ['soon', TypeError, '"soon" (string)'],
    [2 ** 31, RangeError, '2147483648 (number)'],
  ])('disposeTimeout: %o is refused, naming the range', (value, Kind, shown) => {
    const message = `expected \`disposeTimeout\` to be a number of milliseconds above 0 and at most 2147483647 (about 24.8 days, the longest a timer can wait) or \`Infinity\`, got ${shown}`
    expect(() => threadStage(WORK, { disposeTimeout: value as number })).toThrow(
      new Kind(`threadStage(): ${message}`),
    )
    // setup() names itself, as every stage's does
    expect(() => threadStage(WORK).setup({ disposeTimeout: value } as never)).toThrow(
      new Kind(`threadStage().setup(): ${message}`),
    )
  })

  test('disposeTimeout defaults to 5 s and takes Infinity, which waits for dispose as long as it takes', async () => {
    expect(threadStage(WORK).options).toMatchObject({ disposeTimeout: 5000 })
    const forever = threadStage<{ n: number }, unknown>(STATEFUL, {
      threads: 2,
      disposeTimeout: Number.POSITIVE_INFINITY,
    })
    expect(forever.options).toMatchObject({ disposeTimeout: Number.POSITIVE_INFINITY })
    const counters = shared(3)
    const out = await pipe(
      numbers(50).map((n) => ({ n, shared: counters })),
      forever,
    ).toArray()
    expect(out).toHaveLength(50)
    expect(counters[1]).toBe(50)
  })
})

describe('rate', () => {
  test('each item takes one turn of the rate limit (and each retry another), and every item arrives', async () => {
    const rate = rateLimit(1_000_000, { burst: 1_000 })
    const take = rate.take.bind(rate)
    let turns = 0
    rate.take = (signal) => {
      turns++
      return take(signal)
    }
    const { items, calls } = flakyItems(40, (i) => (i % 10 === 3 ? 1 : 0))
    const out = await pipe(
      items,
      threadStage<Flaky, number>(POLICIES, { export: 'flaky', threads: 2, ordered: true, retries: 1, rate }),
    ).toArray()
    expect(out).toEqual(numbers(40))
    expect([...calls].reduce((a, b) => a + b, 0)).toBe(44)
    expect(turns).toBe(44)
  })
})

describe('no thread outlives a run with policies', () => {
  test.runIf(hasProc)('after retries, skips, timeouts and failures', async () => {
    const before = osThreads()
    const { items } = flakyItems(50, (i) => (i % 9 === 0 ? 1 : 0))
    await pipe(items, threadStage(POLICIES, { export: 'flaky', threads: 2, retries: 1 })).toArray()
    expect(await threadsBackTo(before)).toBe(before)
    await pipe(
      numbers(50),
      threadStage(POLICIES, { export: 'failFives', threads: 2, errors: 'skip', onError: () => {} }),
    ).toArray()
    expect(await threadsBackTo(before)).toBe(before)
    await rejectionOf(
      pipe(
        [{ n: 1, state: shared(3) }],
        threadStage(POLICIES, { export: 'spinUntilAborted', threads: 2, timeout: 30 }),
      ).toArray(),
    )
    expect(await threadsBackTo(before)).toBe(before)
  })
})

describe('options', () => {
  test('refuses the policies a thread stage does not support, saying why and what to do instead', () => {
    expect(() => threadStage(WORK, { init: function open() {} as never })).toThrow(
      new TypeError(
        'threadStage(): `init` is not supported by a thread stage, got function open (function): a function cannot be sent to a thread; export `init(ctx)` from the worker module instead: it runs once in each thread, and what it returns is `ctx.state` there',
      ),
    )
    expect(() => threadStage(WORK, { dispose: function close() {} as never })).toThrow(
      /^threadStage\(\): `dispose` is not supported by a thread stage, got function close \(function\): a function cannot be sent to a thread; export `dispose\(state, ctx\)` from the worker module instead/,
    )
    expect(() => threadStage(WORK, { limit: (<T>(fn: () => T) => Promise.resolve(fn())) as never })).toThrow(
      /^threadStage\(\): `limit` is not supported by a thread stage, got .*: the threads bound its concurrency \(`threads`\).*use `rate` to space items out$/,
    )
    // setup() says the same
    expect(() => threadStage(WORK).setup({ init: (() => 1) as never })).toThrow(
      /`init` is not supported by a thread stage/,
    )
    expect(() => threadStage(WORK, { retries: 1, transfer: () => undefined })).toThrow(
      /^threadStage\(\): `retries` cannot be combined with `transfer`, got retries: 1: /,
    )
    expect(() => threadStage(WORK, { retries: 0, transfer: () => undefined })).not.toThrow()
  })

  const f = (n: number) => n
  test.each([
    [{ retries: -1 }],
    [{ retries: 1.5 }],
    [{ retryDelay: -3 }],
    [{ retryDelay: 'soon' }],
    [{ timeout: 0 }],
    [{ timeout: 'soon' }],
    [{ timeout: 2 ** 31 }],
    [{ retryDelay: 2 ** 31 }],
    [{ errors: 'ignore' }],
    [{ errors: 'skip' }],
    [{ onError: () => {} }],
    [{ errors: 'skip', onError: 5 }],
    [{ rate: 10 }],
  ])('%o is refused with the message mapStage gives', (options) => {
    let mapMessage = ''
    let mapKind: unknown
    try {
      mapStage(f, options as never)
    } catch (err) {
      mapMessage = (err as Error).message
      mapKind = (err as Error).constructor
    }
    expect(mapMessage).toMatch(/^mapStage\(\): /)
    const expected = new (mapKind as ErrorConstructor)(mapMessage.replace(/^mapStage\(\)/, 'threadStage()'))
    expect(() => threadStage(WORK, options as never)).toThrow(expected)
    expect(() => threadStage(WORK).setup(options as never)).toThrow(
      expected.message.replace(/^threadStage\(\): /, ''),
    )
  })

  test('stage.options shows the policies; setup() changes them', () => {
    const onError = (_e: unknown, _n: number, _ctx: MapContext<undefined>) => {}
    const s = threadStage<number, number>(WORK, {
      retries: 2,
      retryDelay: 5,
      timeout: 100,
      errors: 'skip',
      onError,
    })
    expect(s.options).toMatchObject({ retries: 2, retryDelay: 5, timeout: 100, errors: 'skip', onError })
    expect(s.setup({ retries: 4 } as never).options).toMatchObject({ retries: 4, timeout: 100 })
    expect(() => s.setup({ timeout: -1 } as never)).toThrow(RangeError)
  })
})

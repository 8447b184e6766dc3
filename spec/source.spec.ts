import { describe, expect, test } from 'vitest'
import { DONE, EMPTY } from '../lib/channel/inlet.js'
import { Waiter } from '../lib/channel/waiter.js'
import { AsyncSource, SyncSource } from '../lib/engine/source.js'
import { flatMap, mapStage, merge, pipe, stage, TaskException } from '../lib/index.js'
import {
  defer,
  flush,
  numbers,
  Peak,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
  spiedAsyncSource,
  spiedSyncSource,
  ticks,
} from './helpers/instruments.js'

recordUnhandledRejections()

function syncOf(items: Iterable<number>, errors: unknown[] = []) {
  return new SyncSource<number>(items[Symbol.iterator](), (err) => errors.push(err))
}

function asyncOf(items: AsyncIterable<number>, errors: unknown[] = []) {
  return new AsyncSource<number>(items[Symbol.asyncIterator](), (err) => errors.push(err))
}

describe('SyncSource', () => {
  test('reads exactly one item per poll, numbering them, then says DONE', () => {
    const { source, spy } = spiedSyncSource(3)
    const s = syncOf(source)
    const w = new Waiter()
    expect(spy.reads).toBe(0)
    expect(s.poll(w)).toBe(0)
    expect(spy.reads).toBe(1)
    expect(s.poll(w)).toBe(1)
    expect(w.seq).toBe(1)
    expect(s.poll(w)).toBe(2)
    expect(s.poll(w)).toBe(DONE)
    expect(s.poll(w)).toBe(DONE)
    expect(spy.nexts).toBe(4)
    expect(spy.exhausted).toBe(true)
  })

  test('a throwing iterator is reported once and then says DONE', () => {
    const errors: unknown[] = []
    const { source, spy } = spiedSyncSource(10, { failAt: 2, error: 'bad' })
    const s = syncOf(source, errors)
    const w = new Waiter()
    expect([s.poll(w), s.poll(w), s.poll(w), s.poll(w)]).toEqual([0, 1, DONE, DONE])
    expect(errors).toEqual(['bad'])
    s.abort()
    expect(spy.returns).toBe(0) // a generator that threw is closed already
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('abort() returns the iterator once and reads nothing more', () => {
    const { source, spy } = spiedSyncSource(10)
    const s = syncOf(source)
    const w = new Waiter()
    s.poll(w)
    s.abort()
    s.abort()
    expect(spy.returns).toBe(1)
    expect(spy.finalized).toBe(1)
    expect(s.poll(w)).toBe(DONE)
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('a return() that throws does not escape abort()', () => {
    const it: Iterator<number> = {
      next: () => ({ value: 1, done: false }),
      return: () => {
        throw new Error('return failed')
      },
    }
    const s = new SyncSource<number>(it, () => {})
    expect(() => s.abort()).not.toThrow()
  })
})

describe('AsyncSource', () => {
  test('reads nothing until a worker waits, then one item per waiting worker', async () => {
    const { source, spy } = spiedAsyncSource(10)
    const s = asyncOf(source)
    await flush()
    expect(spy.nexts).toBe(0)
    const a = new Waiter()
    const b = new Waiter()
    expect(s.poll(a)).toBe(EMPTY)
    const pa = s.wait(a)
    const pb = s.wait(b)
    await Promise.all([pa, pb])
    expect([a.item, b.item]).toEqual([0, 1])
    expect([a.seq, b.seq]).toEqual([0, 1])
    await flush()
    expect(spy.reads).toBe(2)
  })

  test('never calls next() concurrently, however many workers wait', async () => {
    const peak = new Peak()
    let i = 0
    const it: AsyncIterator<number> = {
      next: () =>
        peak.run(async () => {
          await ticks(3)
          return i < 20 ? { value: i++, done: false } : { value: undefined, done: true }
        }),
    }
    const s = new AsyncSource<number>(it, () => {})
    const got: number[] = []
    await Promise.all(
      numbers(5).map(async () => {
        const w = new Waiter()
        for (;;) {
          await s.wait(w)
          if (w.item === DONE) return
          got.push(w.item as number)
        }
      }),
    )
    expect(peak.max).toBe(1)
    expect(sorted(got)).toEqual(numbers(20))
  })

  test('abort() wakes waiting workers with DONE, returns the iterator once and drops a late item', async () => {
    const gate = defer()
    const { source, spy } = spiedAsyncSource(10, { gate: (i) => (i === 0 ? gate.promise : undefined) })
    const s = asyncOf(source)
    const w = new Waiter()
    const waited = s.wait(w)
    await flush()
    s.abort()
    s.abort()
    await waited
    expect(w.item).toBe(DONE)
    expect(spy.returns).toBe(1)
    gate.resolve()
    await flush()
    expect(spy.nexts).toBe(1) // the pending read finished, nothing more was asked
    expect(spy.nextAfterEnd).toBe(0)
    expect(s.poll(w)).toBe(DONE)
    const again = new Waiter()
    await s.wait(again)
    expect(again.item).toBe(DONE)
  })

  test('an item read for a worker that stopped waiting (cancel) goes to the next worker', async () => {
    const gate = defer()
    const errors: unknown[] = []
    const { source, spy } = spiedAsyncSource(3, { gate: (i) => (i === 0 ? gate.promise : undefined) })
    const s = asyncOf(source, errors)
    const gaveUp = new Waiter()
    let woke = false
    void s.wait(gaveUp).then(() => {
      woke = true
    })
    await flush()
    expect(s.cancel(gaveUp)).toBe(true) // e.g. a batch deadline passed while item 0 was being read
    gate.resolve()
    await flush()
    expect(woke).toBe(false)
    expect(errors).toEqual([])
    const w = new Waiter()
    const got: unknown[] = []
    for (;;) {
      let x: unknown = s.poll(w)
      if (x === EMPTY) {
        await s.wait(w)
        x = w.item
      }
      if (x === DONE) break
      got.push(x)
      expect(w.seq).toBe(got.length - 1)
    }
    expect(got).toEqual([0, 1, 2])
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('a rejecting next() is reported once; waiting workers get DONE', async () => {
    const errors: unknown[] = []
    const { source } = spiedAsyncSource(10, { failAt: 1, error: 'nope' })
    const s = asyncOf(source, errors)
    const a = new Waiter()
    const b = new Waiter()
    await Promise.all([s.wait(a), s.wait(b)])
    expect(a.item).toBe(0)
    expect(b.item).toBe(DONE)
    expect(errors).toEqual(['nope'])
  })

  test('a next() that rejects after abort() is swallowed', async () => {
    const gate = defer()
    const errors: unknown[] = []
    const { source } = spiedAsyncSource(10, { failAt: 0, gate: () => gate.promise })
    const s = asyncOf(source, errors)
    const w = new Waiter()
    const waited = s.wait(w)
    await flush()
    s.abort()
    await waited
    gate.resolve()
    await flush()
    expect(errors).toEqual([])
  })
})

describe('sources in pipelines', () => {
  test('arrays, Sets, strings, sync and async generators and functions are all sources', async () => {
    const double = mapStage((x: number) => x * 2)
    expect(await pipe([1, 2], double).toArray()).toEqual([2, 4])
    expect(await pipe(new Set([1, 2]), double).toArray()).toEqual([2, 4])
    expect(
      await pipe(
        'ab',
        mapStage((c: string) => c.toUpperCase()),
      ).toArray(),
    ).toEqual(['A', 'B'])
    function* gen() {
      yield 1
      yield 2
    }
    expect(await pipe(gen(), double).toArray()).toEqual([2, 4])
    expect(await pipe(gen, double).toArray()).toEqual([2, 4])
    async function* agen() {
      yield 1
      yield 2
    }
    expect(await pipe(agen(), double).toArray()).toEqual([2, 4])
    expect(await pipe(() => agen(), double).toArray()).toEqual([2, 4])
  })

  test('a sync generator source is closed on break (its finally runs once)', async () => {
    let finalized = 0
    function* gen() {
      try {
        for (let i = 0; ; i++) yield i
      } finally {
        finalized++
      }
    }
    for await (const n of pipe(
      gen,
      mapStage(async (n: number) => n, { workers: 3 }),
    ))
      if (n >= 5) break
    expect(finalized).toBe(1)
  })

  test('an async generator source is closed on break, even while a read is pending', async () => {
    let finalized = 0
    const gate = defer()
    async function* agen() {
      try {
        yield 0
        await gate.promise // parked mid-await when the consumer breaks
        yield 1
      } finally {
        finalized++
      }
    }
    const p = pipe(
      agen,
      mapStage((n: number) => n, { workers: 2 }),
    )
    for await (const _ of p) break // returns promptly although the source is parked
    expect(finalized).toBe(0)
    gate.resolve()
    await flush()
    expect(finalized).toBe(1)
  })

  test('an async source with several first-stage workers delivers every item once', async () => {
    const { source, spy } = spiedAsyncSource(300, { ticks: (i) => i % 3 })
    const out = await pipe(
      source,
      stage(
        async function* copy(xs: AsyncIterable<number>) {
          for await (const x of xs) yield x
        },
        { workers: 4 },
      ),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(300))
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('a source that throws on its first read fails the run as the source', async () => {
    const { source } = spiedSyncSource(5, { failAt: 0 })
    const err = await rejectionOf(
      pipe(
        source,
        mapStage((n: number) => n),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).stage).toBe('source')
  })
})

describe('sources that break the iterator protocol', () => {
  /** A sync iterable whose next() returns `result` after `good` proper items. */
  function syncReturning(result: unknown, good = 1): Iterable<number> {
    return {
      [Symbol.iterator]() {
        let i = 0
        return { next: () => (i < good ? { value: i++, done: false } : result) } as Iterator<number>
      },
    }
  }
  function asyncReturning(result: unknown, good = 1): AsyncIterable<number> {
    return {
      [Symbol.asyncIterator]() {
        let i = 0
        return {
          next: async () => (i < good ? { value: i++, done: false } : result),
        } as AsyncIterator<number>
      },
    }
  }

  test.each([5, 'x', null, undefined, true, 7n])(
    'a sync next() returning %s fails the run as the source with the TypeError for...of throws',
    async (result) => {
      const delivered: number[] = []
      const err = await rejectionOf(
        pipe(
          syncReturning(result),
          mapStage((n: number) => n),
        ).start({ onResult: (n) => delivered.push(n) }).done,
      )
      expect(err).toBeInstanceOf(TaskException)
      expect((err as TaskException).stage).toBe('source')
      expect((err as TaskException).cause).toBeInstanceOf(TypeError)
      expect(((err as TaskException).cause as Error).message).toMatch(/^Iterator result .* is not an object$/)
      // for...of throws the same, and a pipeline reads a source the way for...of does
      expect(() => {
        for (const _ of syncReturning(result));
      }).toThrow(/is not an object/)
      expect(delivered.length).toBeLessThanOrEqual(1)
    },
  )

  test.each([7, 'x', null, undefined])(
    'an async next() resolving to %s fails the run as the source instead of streaming undefined',
    async (result) => {
      const err = await rejectionOf(pipe(asyncReturning(result)).toArray())
      expect(err).toBeInstanceOf(TaskException)
      expect((err as TaskException).stage).toBe('source')
      expect(((err as TaskException).cause as Error).message).toMatch(/^Iterator result .* is not an object$/)
    },
  )

  test('a next() returning a number synchronously from an async iterator fails the same way', async () => {
    const src = { [Symbol.asyncIterator]: () => ({ next: () => 7 }) } as unknown as AsyncIterable<number>
    const err = await rejectionOf(pipe(src).toArray())
    expect(((err as TaskException).cause as Error).message).toBe('Iterator result 7 is not an object')
  })

  test.each([
    ['[Symbol.asyncIterator]()', 5, { [Symbol.asyncIterator]: (): unknown => 5 }],
    ['[Symbol.asyncIterator]()', '{}', { [Symbol.asyncIterator]: () => ({}) }],
    ['[Symbol.iterator]()', 'null', { [Symbol.iterator]: () => null }],
    ['[Symbol.iterator]()', '{ next: 1 }', { [Symbol.iterator]: () => ({ next: 1 }) }],
  ])(
    'a source whose %s returns %s fails when the run starts, saying what is wrong',
    async (method, _, src) => {
      const p = pipe(src as unknown as Iterable<number>)
      const err = await rejectionOf(p.toArray())
      expect(err).toBeInstanceOf(TaskException)
      expect((err as TaskException).stage).toBe('source')
      const cause = (err as TaskException).cause as Error
      expect(cause).toBeInstanceOf(TypeError)
      expect(cause.message).toContain(`the source's ${method} returned`)
      expect(cause.message).toContain('not an iterator (an object with a next() method)')
    },
  )

  test('a stage() function whose iterator returns a non-object result fails that stage', async () => {
    const bad = stage<number, number>(function bad() {
      return syncReturning(5, 2)
    })
    const err = await rejectionOf(pipe([1, 2, 3], bad).toArray())
    expect((err as TaskException).stage).toBe('bad')
    expect(((err as TaskException).cause as Error).message).toBe('Iterator result 5 is not an object')
    const badAsync = stage<number, number>(function badAsync() {
      return asyncReturning(null)
    })
    const err2 = await rejectionOf(pipe([1, 2, 3], badAsync).toArray())
    expect(((err2 as TaskException).cause as Error).message).toBe('Iterator result null is not an object')
    const noNext = stage<number, number>(function noNext() {
      return { [Symbol.asyncIterator]: () => ({}) } as AsyncIterable<number>
    })
    const err3 = await rejectionOf(pipe([1], noNext).toArray())
    expect(((err3 as TaskException).cause as Error).message).toContain(
      "the stage function's result: its [Symbol.asyncIterator]() returned [object Object] (object), not an iterator",
    )
  })

  test('a flatMap() whose iterable returns a non-object result fails that stage', async () => {
    const err = await rejectionOf(
      pipe(
        [1],
        flatMap(function many() {
          return syncReturning(5)
        }),
      ).toArray(),
    )
    expect((err as TaskException).stage).toBe('many')
    expect(((err as TaskException).cause as Error).message).toBe('Iterator result 5 is not an object')
    const err2 = await rejectionOf(
      pipe(
        [1],
        flatMap(function manyAsync() {
          return asyncReturning(8)
        }),
      ).toArray(),
    )
    expect(((err2 as TaskException).cause as Error).message).toBe('Iterator result 8 is not an object')
  })

  test('merge() of a source that returns a non-object result rejects like for await', async () => {
    const err = await rejectionOf(pipe(merge([1, 2], syncReturning(5))).toArray())
    expect((err as TaskException).stage).toBe('source')
    expect(((err as TaskException).cause as Error).message).toBe('Iterator result 5 is not an object')
  })
})

/** A thenable that is not a promise. */
function thenable<T>(value: T): PromiseLike<T> {
  // biome-ignore lint/suspicious/noThenProperty: a thenable that is not a promise, on purpose
  return { then: (ok: (v: T) => void) => ok(value) } as unknown as PromiseLike<T>
}

describe('a sync source of promises is read as for await reads it', () => {
  test('promise items are awaited before the first stage sees them, in order', async () => {
    const src: (Promise<[number, string]> | [number, string])[] = [
      Promise.resolve([1, 'a']),
      [2, 'b'],
      Promise.resolve([3, 'c']),
    ]
    const seen: string[] = []
    for await (const x of src) seen.push(String(x))
    const out = await pipe(
      src,
      mapStage(([n, s]: [number, string]) => `${s}${n}`, { workers: 3, ordered: true }),
    ).toArray()
    expect(out).toEqual(['a1', 'b2', 'c3'])
    expect(seen).toEqual(['1,a', '2,b', '3,c'])
  })

  test('a sync generator yielding promises and thenables, read by several workers: every value once, in order', async () => {
    const gates = numbers(20).map(() => defer<number>())
    function* src(): Generator<number | Promise<number> | PromiseLike<number>> {
      for (let i = 0; i < 20; i++) {
        if (i % 3 === 0) yield gates[i]!.promise
        else if (i % 3 === 1) yield thenable(i)
        else yield i
      }
    }
    const p = pipe(
      src(),
      mapStage(async (n: number) => n * 10, { workers: 4, ordered: true }),
    ).toArray()
    for (let i = 0; i < 20; i += 3) {
      await flush(1)
      gates[i]!.resolve(i)
    }
    expect(await p).toEqual(numbers(20).map((n) => n * 10))
  })

  test('an array of promises waits for each in turn and reads no further ahead', async () => {
    const first = defer<number>()
    let reads = 0
    const items = [first.promise, 1, 2]
    const src = new SyncSource<number>(
      (function* () {
        for (const x of items) {
          reads++
          yield x as number
        }
      })(),
      () => {},
    )
    const a = new Waiter()
    const b = new Waiter()
    expect(src.poll(a)).toBe(EMPTY)
    expect(src.poll(b)).toBe(EMPTY)
    expect(reads).toBe(1)
    const pa = src.wait(a)
    const pb = src.wait(b)
    first.resolve(0)
    await pa
    await pb
    expect([a.item, a.seq]).toEqual([0, 0])
    expect([b.item, b.seq]).toEqual([1, 1])
    expect(reads).toBe(2)
    expect(src.poll(a)).toBe(2)
    expect(src.poll(a)).toBe(DONE)
  })

  test('a value that arrives after its worker stopped waiting (cancel) goes to the next poll', async () => {
    const d = defer<number>()
    const src = new SyncSource<number>([d.promise as unknown as number, 5][Symbol.iterator](), () => {})
    const w = new Waiter()
    expect(src.poll(w)).toBe(EMPTY)
    void src.wait(w)
    expect(src.cancel(w)).toBe(true)
    d.resolve(4)
    await flush(1)
    expect(src.poll(w)).toBe(4)
    expect(w.seq).toBe(0)
    expect(src.poll(w)).toBe(5)
  })

  test('a rejected promise item fails the run as the source, with its error, and closes the source', async () => {
    const boom = new Error('no such row')
    const { source, spy } = spiedSyncSource([1, 2, 3, 4])
    const items = (function* () {
      for (const x of source) yield x === 3 ? Promise.reject(boom) : x
    })()
    let finalized = false
    const wrapped = (function* () {
      try {
        yield* items
      } finally {
        finalized = true
      }
    })()
    const err = await rejectionOf(
      pipe(
        wrapped,
        mapStage((n: number) => n),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).stage).toBe('source')
    expect((err as TaskException).cause).toBe(boom)
    expect(finalized).toBe(true)
    expect(spy.reads).toBe(3)
  })

  test('a run stopped while a promise item is pending reads nothing more and drops the late value', async () => {
    const d = defer<number>()
    let reads = 0
    const src = (function* () {
      reads++
      yield d.promise
      reads++
      yield 2
    })()
    const seen: number[] = []
    const controller = new AbortController()
    const p = pipe(
      src,
      mapStage((n: number) => seen.push(n)),
    ).toArray({ signal: controller.signal })
    await flush(1)
    controller.abort(new Error('enough'))
    await expect(p).rejects.toThrow('enough')
    d.resolve(1)
    await flush(2)
    expect(seen).toEqual([])
    expect(reads).toBe(1)
  })

  test('an async source yields its items as they are: for await does not await them either', async () => {
    const inner = Promise.resolve(1)
    const src = {
      [Symbol.asyncIterator]() {
        let done = false
        return {
          next: async () => {
            if (done) return { value: undefined, done: true }
            done = true
            return { value: inner, done: false }
          },
        }
      },
    } as AsyncIterable<Promise<number>>
    const out = await pipe(src).toArray()
    expect(out[0]).toBe(inner)
  })
})

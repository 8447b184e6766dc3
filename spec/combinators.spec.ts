import { describe, expect, test } from 'vitest'
import { batch, feed, filter, flatMap, mapStage, merge, pipe, type TaskException } from '../lib/index.js'
import {
  defer,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
  spiedAsyncSource,
  spiedSyncSource,
} from './helpers/instruments.js'

recordUnhandledRejections()

describe('batch()', () => {
  test('groups items into arrays of size, the last one shorter, in input order', async () => {
    expect(await pipe(numbers(7), batch<number>(3)).toArray()).toEqual([[0, 1, 2], [3, 4, 5], [6]])
  })

  test('passes a partial batch on after maxWait while the input is still open', async () => {
    const input = feed<number>()
    const got = defer<number[]>()
    const run = pipe(input, batch<number>(5, { maxWait: 10 })).start({ onResult: (b) => got.resolve(b) })
    await input.pushAll([1, 2])
    // the feed stays open: only the deadline can let this batch go
    expect(await got.promise).toEqual([1, 2])
    expect(input.closed).toBe(false)
    await run.stop()
  })

  test('maxWait 0 passes on whatever is ready without waiting', async () => {
    const input = feed<number>()
    const batches: number[][] = []
    const first = defer()
    const run = pipe(input, batch<number>(100, { maxWait: 0 })).start({
      onResult: (b) => {
        batches.push(b)
        first.resolve()
      },
    })
    await input.pushAll([1, 2, 3])
    await first.promise
    await run.stop()
    expect(batches.flat()).toEqual([1, 2, 3])
    expect(batches.length).toBeLessThan(3 + 1)
  })

  test('counts items in and batches out separately', async () => {
    let stats: { in: number; out: number } | undefined
    await pipe(numbers(10), batch<number>(4)).toArray({
      onProgress: (s) => {
        stats = s.stages[0]
      },
    })
    expect(stats).toMatchObject({ in: 10, out: 3 })
  })

  test('bad arguments are refused at once', () => {
    expect(() => batch(0)).toThrow(/`size`/)
    expect(() => batch(2, { maxWait: -1 })).toThrow(/`maxWait`/)
    expect(() => batch(2, { nope: 1 } as never)).toThrow(/unknown option `nope`/)
  })
})

describe('filter()', () => {
  test('keeps the items the predicate accepts, sync or async, and counts the rest as skipped', async () => {
    let skipped = -1
    const out = await pipe(
      numbers(10),
      filter((n: number) => n % 3 === 0),
      filter(async (n: number) => n > 0, { workers: 2 }),
    ).toArray({
      onProgress: (s) => {
        skipped = s.stages[0]!.skipped
      },
    })
    expect(sorted(out)).toEqual([3, 6, 9])
    expect(skipped).toBe(6)
  })

  test('a type guard narrows the output type', async () => {
    const isString = (x: string | number): x is string => typeof x === 'string'
    const out: string[] = await pipe(['a', 1, 'b'], filter(isString)).toArray()
    expect(out).toEqual(['a', 'b'])
  })
})

describe('flatMap()', () => {
  test('passes on every element of arrays, iterables and async iterables', async () => {
    const out = await pipe(
      [1, 2, 3],
      flatMap((n: number) => {
        if (n === 1) return ['a']
        if (n === 2)
          return (function* () {
            yield 'b'
            yield 'c'
          })()
        return (async function* () {
          yield 'd'
        })()
      }),
    ).toArray()
    expect(out).toEqual(['a', 'b', 'c', 'd'])
  })

  test('async functions and several workers keep each item’s outputs together', async () => {
    const out = await pipe(
      numbers(20),
      flatMap(async (n: number) => [n, n], { workers: 4 }),
    ).toArray()
    expect(sorted(out)).toEqual(sorted(numbers(20).flatMap((n) => [n, n])))
  })

  test('a failure names the item; a non-iterable result is a TypeError', async () => {
    const err = await rejectionOf(
      pipe(
        [1, 2],
        flatMap(function split(n: number) {
          if (n === 2) throw new Error('no')
          return [n]
        }),
      ).toArray(),
    )
    expect((err as TaskException).item).toBe(2)
    const bad = await rejectionOf(pipe([1], flatMap((() => 5) as never)).toArray())
    expect((bad as TaskException).cause).toBeInstanceOf(TypeError)
  })

  test('ordered with several workers is refused', () => {
    expect(() => flatMap((n: number) => [n], { workers: 2, ordered: true })).toThrow(
      /`ordered: true` needs `workers: 1`/,
    )
  })
})

describe('merge()', () => {
  test('reads several sources concurrently into one pipeline, every item once', async () => {
    const a = spiedSyncSource(numbers(50))
    const b = spiedAsyncSource(
      numbers(50).map((n) => n + 100),
      { ticks: 2 },
    )
    const out = await pipe(
      merge(a.source, b.source),
      mapStage((n: number) => n, { workers: 2 }),
    ).toArray()
    expect(sorted(out)).toEqual([...numbers(50), ...numbers(50).map((n) => n + 100)])
    expect(a.spy.exhausted && b.spy.exhausted).toBe(true)
  })

  test('a failing source fails the run from "source" and closes the others', async () => {
    const ok = spiedAsyncSource(numbers(1000), { ticks: 1 })
    const bad = spiedSyncSource(numbers(10), { failAt: 3, error: new Error('disk') })
    const err = await rejectionOf(
      pipe(
        merge(ok.source, bad.source),
        mapStage((n: number) => n),
      ).toArray(),
    )
    expect((err as TaskException).stage).toBe('source')
    expect(((err as TaskException).cause as Error).message).toBe('disk')
    expect(ok.spy.returns).toBe(1)
  })

  test('an early break closes every source', async () => {
    const a = spiedSyncSource(numbers(1000))
    const b = spiedAsyncSource(numbers(1000))
    for await (const n of pipe(
      merge(a.source, b.source),
      mapStage((n: number) => n),
    ))
      if (n >= 0) break
    expect(a.spy.returns).toBe(1)
    expect(b.spy.returns).toBe(1)
  })

  test('no sources is an empty input; a bad source is refused', async () => {
    expect(await pipe(merge<number>()).toArray()).toEqual([])
    expect(() => merge([1], 2 as never)).toThrow(/source 2 to be an Iterable/)
  })
})

/**
 * Type-level checks. They are verified by `tsc --noEmit` (part of `npm test`): an `expectTypeOf`
 * that does not hold, or a `@ts-expect-error` line that compiles, fails the type check. The runtime
 * assertions check that the typed pipelines also compute what their types say.
 */
import { describe, expect, expectTypeOf, test } from 'vitest'
import {
  batch,
  type MapStageOptions,
  mapStage,
  type Pipeline,
  pipe,
  type ResolvedMapStageOptions,
  type ResolvedThreadStageOptions,
  type RunOptions,
  type Source,
  type SourceItem,
  type Stage,
  type StageContext,
  stage,
  TaskException,
  type ThreadStageOptions,
  threadStage,
} from '../lib/index.js'
import { type RedisStageOptions, type ResolvedRedisStageOptions, redisStage } from '../lib/redis/index.js'

const toStr = mapStage((n: number) => `${n}`)
const toLen = mapStage(async (s: string) => s.length)
const wrap = mapStage((n: number) => ({ n }))
const unwrap = mapStage(async ({ n }: { n: number }) => n)
async function* passNumbers(xs: AsyncIterable<number>) {
  yield* xs
}
const words = stage(async function* words(xs: AsyncIterable<string>) {
  for await (const x of xs) yield* x.split(' ')
})

describe('stage types', () => {
  test('mapStage() infers input from the parameter and output from the awaited result', () => {
    type Map<I, O> = Stage<I, O, MapStageOptions<I, undefined>, ResolvedMapStageOptions>
    expectTypeOf(toStr).toEqualTypeOf<Map<number, string>>()
    expectTypeOf(toLen).toEqualTypeOf<Map<string, number>>()
    expectTypeOf(unwrap).toEqualTypeOf<Map<{ n: number }, number>>()
    expectTypeOf(mapStage(async (n: number) => Promise.resolve([n]))).toEqualTypeOf<Map<number, number[]>>()
    // whatever its kind, a stage is a Stage<I, O> where one is asked for
    expectTypeOf(toStr).toMatchTypeOf<Stage<number, string>>()
  })

  test('stage() infers input from the async iterable and output from what is yielded', () => {
    expectTypeOf(words).toEqualTypeOf<Stage<string, string>>()
    const sum = stage(async function* (xs: AsyncIterable<number>) {
      let t = 0
      for await (const x of xs) t += x
      yield { total: t }
    })
    expectTypeOf(sum).toEqualTypeOf<Stage<number, { total: number }>>()
    const syncGen = stage(function* (_: AsyncIterable<boolean>) {
      yield 1n
    })
    expectTypeOf(syncGen).toEqualTypeOf<Stage<boolean, bigint>>()
  })

  test('the stage context is typed', () => {
    mapStage((n: number, ctx: StageContext) => {
      expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>()
      expectTypeOf(ctx.worker).toEqualTypeOf<number>()
      expectTypeOf(ctx.stage).toEqualTypeOf<string>()
      return n
    })
  })

  test('a Redis stage is typed by its kind: its options and its resolved options', () => {
    const s = redisStage<number, string>('s', { capacity: 8 })
    expectTypeOf(s).toEqualTypeOf<Stage<number, string, RedisStageOptions, ResolvedRedisStageOptions>>()
    expectTypeOf(s.setup({ batch: 4 })).toEqualTypeOf<typeof s>()
    expectTypeOf(s.options.capacity).toEqualTypeOf<number>()
    expect(s.options.workers).toBe(8)
  })

  test('setup() keeps the stage type, transform() maps async iterables', () => {
    expectTypeOf(toStr.setup({ workers: 4 })).toEqualTypeOf<typeof toStr>()
    expectTypeOf(toStr.transform).parameter(0).toEqualTypeOf<Iterable<number> | AsyncIterable<number>>()
    expectTypeOf(toStr.transform).returns.toEqualTypeOf<AsyncIterableIterator<string>>()
    // a thread stage's setup() takes what threadStage() takes
    const hash = threadStage<string, string>(new URL('./hash.worker.js', import.meta.url))
    expectTypeOf(hash).toEqualTypeOf<
      Stage<string, string, ThreadStageOptions<string>, ResolvedThreadStageOptions>
    >()
    expectTypeOf(hash.setup({ threads: 2 })).toEqualTypeOf<typeof hash>()
    expectTypeOf(hash.options.threads).toEqualTypeOf<number>()
  })

  test('bad options and bad functions do not compile', () => {
    const bad = () => {
      // @ts-expect-error workers must be a number
      mapStage((n: number) => n, { workers: '4' })
      // @ts-expect-error unknown option
      stage(passNumbers, { worker: 4 })
      // @ts-expect-error ordered is a boolean
      mapStage((n: number) => n, { ordered: 'yes' })
      // @ts-expect-error a map function is not a stage() function: it must return an iterable
      stage((n: number) => n)
      // @ts-expect-error fn is required
      mapStage()
      // setup() takes what its stage's factory takes, so a misspelt option does not compile
      // @ts-expect-error unknown option
      toStr.setup({ worker: 4 })
      // @ts-expect-error a generator stage has no policies
      words.setup({ retries: 2 })
      // @ts-expect-error batch() has no workers
      batch<number>(2).setup({ workers: 4 })
      // @ts-expect-error unknown option of a Redis stage
      redisStage<number, number>('s').setup({ worker: 2 })
      // @ts-expect-error a Redis stage's workers are the serveStage() processes: it has capacity
      redisStage<number, number>('s').setup({ workers: 2 })
      redisStage<number, number>('s').setup({ capacity: 2, ordered: true })
      const hash = threadStage<string, string>(new URL('./hash.worker.js', import.meta.url))
      // @ts-expect-error unknown option of a thread stage
      hash.setup({ worker: 2 })
      // @ts-expect-error a thread stage's concurrency is `threads`, not `workers`
      hash.setup({ workers: 2 })
      // @ts-expect-error init is an export of the worker module, not an option
      hash.setup({ init: () => 1 })
      toStr.setup({ retries: 2, timeout: 100 })
      batch<number>(2).setup({ maxWait: 5 })
      hash.setup({ threads: 2, batch: 64, retries: 1 })
    }
    expect(typeof bad).toBe('function')
  })
})

describe('pipeline types', () => {
  test('a sync source of promises gives its awaited items to the first stage, as for await does', async () => {
    const src = [Promise.resolve(1), 2]
    expectTypeOf<SourceItem<typeof src>>().toEqualTypeOf<number>()
    expectTypeOf(pipe(src)).toEqualTypeOf<Pipeline<number>>()
    const p = pipe(src, toStr)
    expectTypeOf(p).toEqualTypeOf<Pipeline<string>>()
    expect(await p.toArray()).toEqual(['1', '2'])
    function* rows() {
      yield Promise.resolve({ id: 1 })
    }
    expectTypeOf(pipe(rows())).toEqualTypeOf<Pipeline<{ id: number }>>()
    // an async source's items are not awaited (nor by for await): a promise stays a promise
    async function* promises() {
      yield [Promise.resolve(1)]
    }
    expectTypeOf(pipe(promises())).toEqualTypeOf<Pipeline<Promise<number>[]>>()
  })

  test('a source annotated as Source<T>, whatever form it takes, pipes alone or with stages', () => {
    const sources: Source<string>[] = [['a'], new Set(['b'])]
    for (const src of sources) {
      expectTypeOf(pipe(src)).toEqualTypeOf<Pipeline<string>>()
      expectTypeOf(
        pipe(
          src,
          mapStage((s: string) => s.length),
        ),
      ).toEqualTypeOf<Pipeline<number>>()
    }
  })

  test('12 stages in one pipe() call infer every step', async () => {
    const p = pipe(
      [1, 22, 333],
      toStr,
      toLen,
      wrap,
      unwrap,
      toStr,
      toLen,
      wrap,
      unwrap,
      toStr,
      toLen,
      toStr,
      mapStage((s: string) => [s] as const),
    )
    expectTypeOf(p).toEqualTypeOf<Pipeline<readonly [string]>>()
    expect(await p.toArray()).toEqual([['1'], ['1'], ['1']])
  })

  test('stages written inline in pipe() get their parameter types from the step before', async () => {
    const p = pipe(
      [1, 2],
      mapStage((n) => {
        expectTypeOf(n).toEqualTypeOf<number>()
        return `${n}`
      }),
      mapStage(async (s) => {
        expectTypeOf(s).toEqualTypeOf<string>()
        return s.length
      }),
    )
    expectTypeOf(p).toEqualTypeOf<Pipeline<number>>()
    expect(await p.toArray()).toEqual([1, 1])
  })

  test('16 stages in one pipe() call still infer the output', async () => {
    const p = pipe(
      [5],
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      wrap,
      unwrap,
    )
    expectTypeOf(p).toEqualTypeOf<Pipeline<number>>()
    expect(await p.execute()).toBe(1)
  })

  test('a mismatch anywhere in a long chain does not compile', () => {
    const bad = () => {
      // @ts-expect-error the source yields strings, the first stage wants numbers
      pipe(['a'], toStr)
      // @ts-expect-error stage 7 gets a number where it wants a string
      pipe([1], toStr, toLen, toStr, toLen, toStr, toLen, toLen, toStr, toLen, toStr, toLen, toStr)
      // @ts-expect-error a function is not a Stage
      pipe([1], (n: number) => n)
      // @ts-expect-error a number is not a source
      pipe(42, toStr)
      // @ts-expect-error pipeline.pipe() checks its first stage against the pipeline's output
      pipe([1], toStr).pipe(toStr)
    }
    expect(typeof bad).toBe('function')
  })

  test('a spread array of stages, whose types cannot be followed, gives Pipeline<unknown>', async () => {
    const steps: Stage<number, number>[] = [mapStage((n: number) => n + 1), mapStage((n: number) => n * 2)]
    const p = pipe([1, 2], ...steps)
    expectTypeOf(p).toEqualTypeOf<Pipeline<unknown>>()
    expect(await p.toArray()).toEqual([4, 6])
    expectTypeOf(pipe([1], toStr).pipe(...steps)).toEqualTypeOf<Pipeline<unknown>>()
  })

  test('pipeline.pipe() chains keep their types at any length', async () => {
    let p: Pipeline<number> = pipe([1, 2, 3], toStr, toLen)
    for (let i = 0; i < 10; i++) p = p.pipe(toStr, toLen)
    const q = p.pipe(toStr).pipe(words).pipe(toLen, wrap, unwrap, toStr)
    expectTypeOf(q).toEqualTypeOf<Pipeline<string>>()
    expect(await q.toArray()).toEqual(['1', '1', '1'])
    const long = pipe([1], toStr).pipe(
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
      toLen,
      toStr,
    )
    expectTypeOf(long).toEqualTypeOf<Pipeline<string>>()
  })

  test('sources of every kind give their item type', () => {
    expectTypeOf(pipe([1, 2])).toEqualTypeOf<Pipeline<number>>()
    expectTypeOf(pipe(new Set(['a']))).toEqualTypeOf<Pipeline<string>>()
    expectTypeOf(pipe(() => [true])).toEqualTypeOf<Pipeline<boolean>>()
    async function* agen() {
      yield 1n
    }
    expectTypeOf(pipe(agen)).toEqualTypeOf<Pipeline<bigint>>()
    expectTypeOf(pipe(agen())).toEqualTypeOf<Pipeline<bigint>>()
    expectTypeOf(
      pipe(
        agen(),
        mapStage((n: bigint) => Number(n)),
      ),
    ).toEqualTypeOf<Pipeline<number>>()
  })

  test('results(), execute(), toArray() and iteration are typed by the output', () => {
    const p = pipe([1], toStr)
    expectTypeOf(p.results()).toEqualTypeOf<AsyncIterableIterator<string>>()
    expectTypeOf(p.execute()).toEqualTypeOf<Promise<string | undefined>>()
    expectTypeOf(p.toArray()).toEqualTypeOf<Promise<string[]>>()
    expectTypeOf(p[Symbol.asyncIterator]()).toEqualTypeOf<AsyncIterableIterator<string>>()
    expectTypeOf(p).toMatchTypeOf<AsyncIterable<string>>()
    expectTypeOf(p.results).parameter(0).toEqualTypeOf<RunOptions | undefined>()
    const _iterate = async () => {
      for await (const s of p) expectTypeOf(s).toEqualTypeOf<string>()
    }
    expect(typeof _iterate).toBe('function')
  })

  test('TaskException exposes its fields', () => {
    const e = new TaskException(new Error('x'), 'stage', 0, 1)
    expectTypeOf(e.stage).toEqualTypeOf<string>()
    expectTypeOf(e.worker).toEqualTypeOf<number>()
    expectTypeOf(e.item).toEqualTypeOf<unknown>()
    expectTypeOf(e).toMatchTypeOf<Error>()
    expect(e.message).toBe('The task "stage-0" raised Error: x')
  })
})

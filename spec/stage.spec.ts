import { describe, expect, test } from 'vitest'
import { DEFAULT_QSIZE, MAX_CAPACITY, MAX_WORKERS, mapStage, pipe, Stage, stage } from '../lib/index.js'
import { numbers, recordUnhandledRejections, sorted } from './helpers/instruments.js'

recordUnhandledRejections()

const id = (n: number) => n
async function* pass(xs: AsyncIterable<number>) {
  yield* xs
}

function thrown(fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a throw, but nothing was thrown')
}

describe('building stages', () => {
  test('stage() and mapStage() return Stage instances with the documented defaults', () => {
    const m = mapStage(id)
    const g = stage(pass)
    expect(m).toBeInstanceOf(Stage)
    expect(g).toBeInstanceOf(Stage)
    for (const s of [m, g]) {
      expect(s.options.workers).toBe(1)
      expect(s.options.qsize).toBe(DEFAULT_QSIZE)
      expect(s.options.ordered).toBe(false)
    }
    expect(Number.isInteger(DEFAULT_QSIZE) && DEFAULT_QSIZE > 0).toBe(true)
  })

  test('a stage is named after its function unless given a name', () => {
    expect(
      mapStage(function fetchPage(n: number) {
        return n
      }).name,
    ).toBe('fetchPage')
    expect(mapStage(id).name).toBe('id')
    expect(stage(pass).name).toBe('pass')
    expect(mapStage((n: number) => n).name).toBeUndefined()
    expect(mapStage(id, { name: 'renamed' }).name).toBe('renamed')
  })

  test('setup() returns a new stage with the options merged in and leaves the original unchanged', async () => {
    const base = mapStage(async (n: number) => n * 2, { qsize: 5, name: 'double' })
    const wide = base.setup({ workers: 4, ordered: true })
    expect(wide).toBeInstanceOf(Stage)
    expect(wide).not.toBe(base)
    expect(base.options).toMatchObject({ workers: 1, qsize: 5, ordered: false, name: 'double' })
    expect(wide.options).toMatchObject({ workers: 4, qsize: 5, ordered: true, name: 'double' })
    expect(Object.isFrozen(base.options)).toBe(true)
    // both definitions work, in the same pipeline even
    expect(await pipe(numbers(20), base, wide).toArray()).toEqual(numbers(20).map((n) => n * 4))
    expect(base.setup({ name: 'other' }).name).toBe('other')
    expect(base.name).toBe('double')
  })

  test('setup() on a generator stage keeps it a generator stage', async () => {
    const sum = stage(async function* sum(xs: AsyncIterable<number>) {
      let t = 0
      for await (const x of xs) t += x
      yield t
    })
    const partial = sum.setup({ workers: 3 })
    const sums = await pipe(numbers(100), partial).toArray()
    expect(sums).toHaveLength(3)
    expect(sums.reduce((a, b) => a + b, 0)).toBe(4950)
    expect(await pipe(numbers(100), sum).toArray()).toEqual([4950])
  })

  test('a parametrised stage is a factory (parallelpipe add_n(7))', async () => {
    const addN = (n: number) => mapStage((x: number) => x + n, { name: `add${n}` })
    const p = pipe(numbers(5), addN(7), addN(100))
    expect(p.stageNames).toEqual(['add7', 'add100'])
    expect(await p.toArray()).toEqual([107, 108, 109, 110, 111])
  })

  test('one stage definition is reusable in several pipelines and runs at once', async () => {
    const square = mapStage(async (n: number) => n * n, { workers: 3 })
    const [a, b] = await Promise.all([
      pipe(numbers(100), square).toArray(),
      pipe(numbers(50), square, square).toArray(),
    ])
    expect(sorted(a)).toEqual(numbers(100).map((n) => n * n))
    expect(sorted(b)).toEqual(numbers(50).map((n) => n ** 4))
  })

  test('ordered: true is accepted on a one-worker generator stage', async () => {
    const g = stage(pass, { ordered: true })
    expect(await pipe(numbers(10), g).toArray()).toEqual(numbers(10))
  })

  test('a generator stage may be a sync generator function', async () => {
    const fixed = stage(function* fixed() {
      yield 1
      yield 2
    })
    expect(await pipe(numbers(10), fixed).toArray()).toEqual([1, 2])
  })

  test('the transform property runs the stage over any async iterable', async () => {
    const double = mapStage((n: number) => n * 2, { workers: 2, ordered: true })
    const out: number[] = []
    for await (const n of double.transform(numbers(5))) out.push(n)
    expect(out).toEqual([0, 2, 4, 6, 8])
  })
})

describe('bad stage options', () => {
  const cases: [string, unknown, typeof TypeError | typeof RangeError, RegExp][] = [
    ['workers', 0, RangeError, /`workers` to be an integer from 1 to 10000, got 0 \(number\)/],
    ['workers', 1.5, RangeError, /`workers` to be an integer from 1 to 10000, got 1\.5 \(number\)/],
    // a map stage's workers may also be 'auto' or { min, max }, and its message says so
    [
      'workers',
      '4',
      TypeError,
      /`workers` to be an integer from 1 to 10000(, 'auto' or \{ min, max \})?, got "4" \(string\)/,
    ],
    ['workers', Number.NaN, TypeError, /`workers` to be an integer from 1 to 10000, got NaN \(number\)/],
    ['workers', -2, RangeError, /`workers`.*got -2 \(number\)/],
    ['workers', Number.POSITIVE_INFINITY, RangeError, /`workers`.*got Infinity \(number\)/],
    ['workers', null, TypeError, /`workers`.*got null \(null\)/],
    // a count past the limit would block the event loop starting workers, one item later
    [
      'workers',
      2 ** 40,
      RangeError,
      /`workers` to be an integer from 1 to 10000, got 1099511627776 \(number\)/,
    ],
    ['workers', 10_001, RangeError, /`workers` to be an integer from 1 to 10000, got 10001/],
    [
      'qsize',
      2 ** 31,
      RangeError,
      /`qsize` to be an integer from 0 to 2147483647 or `Infinity`, got 2147483648/,
    ],
    [
      'qsize',
      -1,
      RangeError,
      /`qsize` to be an integer from 0 to 2147483647 or `Infinity`, got -1 \(number\)/,
    ],
    ['qsize', 2.5, RangeError, /`qsize`.*got 2\.5 \(number\)/],
    ['qsize', '8', TypeError, /`qsize`.*got "8" \(string\)/],
    ['qsize', Number.NaN, TypeError, /`qsize`.*got NaN \(number\)/],
    ['qsize', Number.NEGATIVE_INFINITY, RangeError, /`qsize`.*got -Infinity \(number\)/],
    ['ordered', 'yes', TypeError, /`ordered` to be true or false, got "yes" \(string\)/],
    ['ordered', 1, TypeError, /`ordered`.*got 1 \(number\)/],
    ['name', '', TypeError, /`name` to be a non-empty string, got "" \(string\)/],
    ['name', 5, TypeError, /`name`.*got 5 \(number\)/],
  ]

  for (const [option, value, ErrorClass, message] of cases) {
    test(`${option}: ${typeof value === 'string' ? JSON.stringify(value) : String(value)} is refused by mapStage(), stage() and setup()`, () => {
      const options = { [option]: value } as never
      const fromMap = thrown(() => mapStage(id, options))
      expect(fromMap).toBeInstanceOf(ErrorClass)
      expect(fromMap.message).toMatch(/^mapStage\(\)/)
      expect(fromMap.message).toMatch(message)
      const fromGen = thrown(() => stage(pass, options))
      expect(fromGen).toBeInstanceOf(ErrorClass)
      expect(fromGen.message).toMatch(/^stage\(\)/)
      expect(fromGen.message).toMatch(message)
      const fromSetup = thrown(() => mapStage(id).setup(options))
      expect(fromSetup).toBeInstanceOf(ErrorClass)
      expect(fromSetup.message).toMatch(/setup\(\)/)
      expect(fromSetup.message).toMatch(message)
    })
  }

  test('the limits themselves are allowed: MAX_WORKERS workers, a qsize of MAX_CAPACITY', async () => {
    expect(mapStage(id, { workers: MAX_WORKERS }).options.workers).toBe(10_000)
    expect(mapStage(id, { qsize: MAX_CAPACITY }).options.qsize).toBe(2 ** 31 - 1)
    expect(await pipe(numbers(3), mapStage(id, { workers: MAX_WORKERS })).toArray()).toHaveLength(3)
  })

  test('Infinity is allowed for qsize and 0 means hand-off', () => {
    expect(mapStage(id, { qsize: Number.POSITIVE_INFINITY }).options.qsize).toBe(Number.POSITIVE_INFINITY)
    expect(mapStage(id, { qsize: 0 }).options.qsize).toBe(0)
  })

  test('a non-function fn is refused, naming the value', () => {
    for (const bad of [42, 'fn', null, undefined, {}]) {
      const m = thrown(() => mapStage(bad as never))
      expect(m).toBeInstanceOf(TypeError)
      expect(m.message).toMatch(/^mapStage\(\): expected `fn` to be a function/)
      const g = thrown(() => stage(bad as never))
      expect(g).toBeInstanceOf(TypeError)
      expect(g.message).toMatch(/^stage\(\): expected `fn` to be a function/)
    }
    expect(thrown(() => mapStage(42 as never)).message).toMatch(/got 42 \(number\)/)
  })

  test('unknown option keys are refused, naming the key and the known options', () => {
    const m = thrown(() => mapStage(id, { worker: 4 } as never))
    expect(m).toBeInstanceOf(TypeError)
    expect(m.message).toMatch(/unknown option `worker`/)
    expect(m.message).toMatch(/`workers`/)
    const g = thrown(() => stage(pass, { size: 1 } as never))
    expect(g).toBeInstanceOf(TypeError)
    expect(g.message).toMatch(/unknown option `size`/)
    expect(thrown(() => mapStage(id).setup({ wrokers: 2 } as never)).message).toMatch(
      /unknown option `wrokers`/,
    )
  })

  test('options that are not an object are refused', () => {
    for (const bad of [null, 5, 'x', []]) {
      const err = thrown(() => mapStage(id, bad as never))
      expect(err).toBeInstanceOf(TypeError)
      expect(err.message).toMatch(/expected an options object, got/)
    }
  })

  test('ordered: true on a generator stage with several workers is refused with a clear error', () => {
    const err = thrown(() => stage(pass, { ordered: true, workers: 2 }))
    expect(err).toBeInstanceOf(TypeError)
    expect(err.message).toMatch(/`ordered: true`/)
    expect(err.message).toMatch(/workers: 2/)
    expect(err.message).toMatch(/`workers: 1`/)
    expect(err.message).toMatch(/mapStage\(\)/)
    const viaSetup = thrown(() => stage(pass, { ordered: true }).setup({ workers: 3 }))
    expect(viaSetup).toBeInstanceOf(TypeError)
    expect(viaSetup.message).toMatch(/workers: 3/)
    expect(thrown(() => stage(pass, { workers: 4 }).setup({ ordered: true })).message).toMatch(
      /`ordered: true`/,
    )
  })
})

describe('bad pipelines', () => {
  test('a non-iterable source is refused when the pipeline is built', () => {
    for (const bad of [42, null, undefined, {}, true]) {
      const err = thrown(() => pipe(bad as never, mapStage(id)))
      expect(err).toBeInstanceOf(TypeError)
      expect(err.message).toMatch(/^pipe\(\): expected the source to be an Iterable, an AsyncIterable/)
    }
    expect(thrown(() => pipe(42 as never)).message).toMatch(/got 42 \(number\)/)
    expect(thrown(() => pipe({} as never)).message).toMatch(/\(object\)/)
  })

  test('a non-Stage in pipe() is refused, naming its position', () => {
    const err = thrown(() => pipe([1], mapStage(id), ((n: number) => n) as never))
    expect(err).toBeInstanceOf(TypeError)
    expect(err.message).toMatch(/^pipe\(\): expected stage 2 to be a Stage/)
    expect(err.message).toMatch(/got function/)
    expect(thrown(() => pipe([1], { workers: 1 } as never)).message).toMatch(/stage 1 .*\(object\)/)
  })

  test('a non-Stage in pipeline.pipe() is refused, naming its position in the whole chain', () => {
    const p = pipe([1], mapStage(id), mapStage(id))
    const err = thrown(() => p.pipe(mapStage(id), null as never))
    expect(err).toBeInstanceOf(TypeError)
    expect(err.message).toMatch(/^pipeline\.pipe\(\): expected stage 4 to be a Stage .*got null \(null\)/)
  })
})

/**
 * The rule for data crossing threads and processes (lib/wire/sendable.ts), and why it is what it is:
 * every value it accepts survives the Redis codec unchanged, and what it refuses would not have; with
 * the thread rule (TO_THREADS), the same holds for structured clone.
 */
import { Packr } from 'msgpackr'
import { describe, expect, test } from 'vitest'
import { codec } from '../lib/redis/codec.js'
import { TO_THREADS, unsendable } from '../lib/wire/sendable.js'

const roundTrip = (v: unknown): unknown => codec.unpack(codec.pack(v))

describe('unsendable(): what goes', () => {
  const cyclic: Record<string, unknown> = { name: 'c' }
  cyclic.self = cyclic
  const selfMap = new Map<string, unknown>()
  selfMap.set('me', selfMap)
  const shared = { n: 1 }
  const bytes = new ArrayBuffer(16)
  new Uint8Array(bytes).set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
  const accepted: [string, unknown][] = [
    ['a number', 42],
    ['a string', 'x'],
    ['a BigInt past 64 bits', -(2n ** 200n)],
    ['true', true],
    ['undefined', undefined],
    ['null', null],
    ['NaN', Number.NaN],
    ['a plain object', { a: 1, b: 'two', c: [3], d: { e: null } }],
    ['an object without prototype', Object.assign(Object.create(null), { a: 1 })],
    ['an array', [1, 'a', [2, [3]], { x: undefined }]],
    ['a Date', new Date(1234)],
    ['an invalid Date', new Date(Number.NaN)],
    ['a RegExp', /a+b/giu],
    [
      'a Map',
      new Map<unknown, unknown>([
        ['k', new Set([1, 2])],
        [{ o: 1 }, 'object key'],
      ]),
    ],
    ['a Set', new Set([1, 'a', new Map([[1, 2]])])],
    ['an ArrayBuffer', bytes],
    ['a DataView into part of a buffer', new DataView(bytes, 3, 5)],
    ['a Uint8Array', new Uint8Array([1, 2, 3])],
    ['an Int16Array into part of a buffer', new Int16Array(bytes, 2, 3)],
    ['a Float64Array', new Float64Array([1.5, -2])],
    ['a BigInt64Array', new BigInt64Array([1n, -2n])],
    ['a Uint8ClampedArray', new Uint8ClampedArray([1, 255])],
    ['a Buffer', Buffer.from('hello')],
    ['a shared reference', [shared, shared]],
    ['a cycle through an object', cyclic],
    ['a cycle through a Map', selfMap],
  ]

  test.each(accepted)('%s goes, and arrives as it left', (_, value) => {
    expect(unsendable(value)).toBeUndefined()
    const back = roundTrip(value)
    expect(back).toEqual(value)
    if (value !== null && typeof value === 'object') {
      // the same type, not a look-alike: a Buffer stays a Buffer, a Uint8Array a Uint8Array
      const proto = Object.getPrototypeOf(value)
      expect(Object.getPrototypeOf(back)).toBe(proto === null ? Object.prototype : proto)
    }
  })

  test('cycles and shared references keep their shape through the codec', () => {
    const back = roundTrip(cyclic) as Record<string, unknown>
    expect(back.self).toBe(back)
    const m = roundTrip(selfMap) as Map<string, unknown>
    expect(m.get('me')).toBe(m)
    const [a, b] = roundTrip([shared, shared]) as unknown[]
    expect(a).toBe(b)
  })

  test('a wide structure with many shared references is walked once per object', () => {
    // 2^40 paths through 40 levels of pairs: walking each path would never end
    let v: unknown = { leaf: true }
    for (let i = 0; i < 40; i++) v = [v, v]
    expect(unsendable(v)).toBeUndefined()
    let bad: unknown = { f: () => 1 }
    for (let i = 0; i < 40; i++) bad = [1, bad]
    expect(unsendable(bad)).toBe(`item${'[1]'.repeat(40)}.f is a function f`)
  })
})

describe('unsendable(): what is refused, and where', () => {
  class Point {
    x = 1
  }
  class MyMap extends Map {}
  const anon = [() => 1][0]
  const refused: [string, unknown, string][] = [
    ['a function', anon, 'item is a function (anonymous)'],
    ['a named function', function lookup() {}, 'item is a function lookup'],
    ['a method', { id: 1, f() {} }, 'item.f is a function f'],
    ['a function in an array', { tags: ['a', anon] }, 'item.tags[1] is a function (anonymous)'],
    ['a symbol', Symbol('s'), 'item is a symbol (Symbol(s))'],
    ['a nested symbol', { a: [{ b: Symbol() }] }, 'item.a[0].b is a symbol (Symbol())'],
    ['a symbol key', { a: 1, [Symbol('k')]: 2 }, 'item[Symbol(k)] is a symbol-keyed property'],
    ['a class instance', { at: new Point() }, 'item.at is an instance of Point'],
    ['an Error', [new TypeError('x')], 'item[0] is an instance of TypeError'],
    ['a URL', new URL('http://h/'), 'item is an instance of URL'],
    ['a Map subclass', new MyMap(), 'item is an instance of MyMap'],
    ['a boxed primitive', { n: Object(5) }, 'item.n is an instance of Number'],
    ['a Promise', Promise.resolve(1), 'item is an instance of Promise'],
    [
      'an object whose prototype is a plain object',
      Object.create({ inherited: 1 }),
      'item is an object whose prototype is neither Object.prototype nor null',
    ],
    ['a Proxy', { p: new Proxy({}, {}) }, 'item.p is a Proxy'],
    ['an odd key', { 'a b': { 'c-d': anon } }, 'item["a b"]["c-d"] is a function (anonymous)'],
    ['a Map key', new Map([[anon, 1]]), 'item.keys()[0] is a function (anonymous)'],
    [
      'a Map value under a string key',
      { byId: new Map([['a', { f: anon }]]) },
      'item.byId.get("a").f is a function (anonymous)',
    ],
    ['a Map value under a number key', new Map([[7, anon]]), 'item.get(7) is a function (anonymous)'],
    ['a Map value under a BigInt key', new Map([[7n, anon]]), 'item.get(7n) is a function (anonymous)'],
    [
      'a Map value under an object key',
      new Map<unknown, unknown>([
        [1, 1],
        [{}, anon],
      ]),
      'item.values()[1] is a function (anonymous)',
    ],
    ['a Set member', new Set([1, { f: anon }]), 'item.values()[1].f is a function (anonymous)'],
    [
      'a Map with a property of its own',
      Object.assign(new Map(), { meta: 1 }),
      'item is a Map with properties of its own (meta), which would not be sent',
    ],
    [
      'a Set with its own iterator',
      Object.defineProperty(new Set([1]), Symbol.iterator, { value: () => [anon].values() }),
      'item is a Set with properties of its own (Symbol(Symbol.iterator)), which would not be sent',
    ],
    [
      'a RegExp with a property of its own',
      Object.assign(/x/, { source2: 1 }),
      'item is a RegExp with properties of its own (source2), which would not be sent',
    ],
    [
      'a Date with a method of its own',
      Object.assign(new Date(0), { getTime: () => 5 }),
      'item is a Date with properties of its own (getTime), which would not be sent',
    ],
    ['a fake Date', Object.create(Date.prototype), 'item is an instance of Date'],
  ]

  test.each(refused)('%s is refused, naming where', (_, value, reason) => {
    expect(unsendable(value)).toBe(reason)
  })

  test('the path starts at the root given', () => {
    expect(unsendable({ user: { f() {} } }, 'result')).toBe('result.user.f is a function f')
  })

  test('what msgpackr left to itself does with them: changes them without a word (hence the rule)', () => {
    const plain = new Packr({ structuredClone: true })
    const trip = (v: unknown): unknown => plain.unpack(plain.pack(v))
    expect(trip({ id: 1, f() {} })).toEqual({ id: 1, f: undefined })
    expect(trip(() => 1)).toBeUndefined()
    expect(Object.getPrototypeOf(trip(new Point()))).toBe(Object.prototype)
    expect(trip(new MyMap().set(1, 2))).toEqual({})
    expect(trip({ a: 1, [Symbol('k')]: 2 })).toEqual({ a: 1 })
    expect(trip(new URL('http://h/'))).toBe('http://h/')
    // an Error comes back with the stack of the place that decoded it, and without its own properties
    const e = Object.assign(new TypeError('bad'), { code: 'E1' })
    const back = trip(e) as TypeError & { code?: string }
    expect(back.code).toBeUndefined()
    expect(back.stack).not.toBe(e.stack)
    expect(() => plain.pack(Symbol('s'))).toThrow('Unknown type: symbol')
  })

  test('the codec itself never writes a function as undefined, nor calls a toJSON()', () => {
    expect(() => codec.pack({ a: [() => 1] })).toThrow('a function cannot be sent to another process')
    const hooked = Object.create(null, {
      toJSON: { value: () => 'replaced', enumerable: false },
      a: { value: 1, enumerable: true },
    })
    expect(roundTrip(hooked)).toEqual({ a: 1 })
  })

  test('values that cannot be read are refused, never thrown', () => {
    const getter = {
      ok: 1,
      get bad(): never {
        throw new RangeError('no access')
      },
    }
    expect(unsendable({ x: getter })).toBe(
      'item.x.bad cannot be read (its getter threw RangeError: no access)',
    )
    const arr: unknown[] = [1]
    Object.defineProperty(arr, 1, {
      get() {
        throw 'nope'
      },
      enumerable: true,
    })
    expect(unsendable(arr)).toBe('item[1] cannot be read (its getter threw nope)')
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    expect(unsendable([proxy])).toBe('item[0] is a Proxy')
    const hostile = new Proxy(() => 1, {
      get() {
        throw new Error('trap')
      },
      getOwnPropertyDescriptor() {
        throw new Error('trap')
      },
    })
    expect(unsendable({ h: hostile })).toBe('item.h is a function (anonymous)')
  })

  test('a structure nested past the stack is refused, not thrown', () => {
    let deep: unknown = 1
    for (let i = 0; i < 1_000_000; i++) deep = [deep]
    expect(unsendable(deep)).toMatch(
      /^item cannot be walked \(RangeError: Maximum call stack size exceeded\)$/,
    )
  })

  test('only the first thing refused is named, and the walk stops there', () => {
    let reads = 0
    const counted = {
      get a() {
        reads++
        return () => 1
      },
      get b() {
        reads++
        return 2
      },
    }
    expect(unsendable(counted)).toBe('item.a is a function (anonymous)')
    expect(reads).toBe(1)
  })
})

describe('unsendable(..., TO_THREADS): what structured clone carries besides', () => {
  const bytes = new SharedArrayBuffer(8)
  const accepted: [string, unknown][] = [
    ['an Error', new Error('plain')],
    ['a TypeError with a cause', new TypeError('outer', { cause: new RangeError('inner') })],
    ['an Error whose cause is plain data', new Error('x', { cause: { code: 7, at: [1, 2] } })],
    ['errors nested in plain data', { errors: [new SyntaxError('a'), new URIError('b')] }],
    ['a SharedArrayBuffer', bytes],
  ]

  test.each(accepted)('%s goes to a thread, and arrives as it left (not to a process)', (_, value) => {
    expect(unsendable(value, 'item', TO_THREADS)).toBeUndefined()
    expect(unsendable(value)).toBeDefined()
    const back = structuredClone(value)
    expect(back).toEqual(value)
    const first = (v: unknown): unknown =>
      v instanceof Error ? v : ((v as { errors?: unknown[] }).errors?.[0] ?? v)
    if (first(value) instanceof Error) {
      const [e, b] = [first(value) as Error, first(back) as Error]
      expect(Object.getPrototypeOf(b)).toBe(Object.getPrototypeOf(e))
      expect([b.message, b.stack]).toEqual([e.message, e.stack])
    }
  })

  test('a SharedArrayBuffer is shared, not copied; a MessagePort goes (moved with `transfer`)', () => {
    const view = new Int32Array(bytes)
    expect(unsendable({ bytes, view }, 'item', TO_THREADS)).toBeUndefined()
    const back = structuredClone({ bytes, view }) as { bytes: SharedArrayBuffer; view: Int32Array }
    new Int32Array(back.bytes)[0] = 42
    back.view[1] = 43
    expect([view[0], view[1]]).toEqual([42, 43])
    const { port1, port2 } = new MessageChannel()
    try {
      expect(unsendable({ port: port1 }, 'item', TO_THREADS)).toBeUndefined()
      expect(unsendable({ port: port1 })).toBe('item.port is an instance of MessagePort')
    } finally {
      port1.close()
      port2.close()
    }
  })

  class ItemError extends Error {
    override name = 'ItemError'
  }
  const refused: [string, unknown, string][] = [
    [
      'an Error with a property of its own',
      Object.assign(new Error('x'), { code: 'E1' }),
      'item is an Error with properties of its own (code), which would not be sent',
    ],
    [
      'an Error with a name of its own',
      Object.assign(new TypeError('x'), { name: 'Custom' }),
      'item is a TypeError with properties of its own (name), which would not be sent',
    ],
    ['a subclass of Error', new ItemError('x'), 'item is an instance of ItemError'],
    ['an AggregateError', new AggregateError([], 'x'), 'item is an instance of AggregateError'],
    ['a DOMException', new DOMException('x', 'AbortError'), 'item is an instance of DOMException'],
    [
      'an Error whose cause is a function',
      { e: new Error('x', { cause: { f() {} } }) },
      'item.e.cause.f is a function f',
    ],
    [
      'a SharedArrayBuffer with a property of its own',
      Object.assign(new SharedArrayBuffer(4), { meta: 1 }),
      'item is a SharedArrayBuffer with properties of its own (meta), which would not be sent',
    ],
    [
      'a class instance, deep down',
      { a: [{ at: new URL('http://h/') }] },
      'item.a[0].at is an instance of URL',
    ],
  ]

  test.each(refused)('%s is refused, naming where', (_, value, reason) => {
    expect(unsendable(value, 'item', TO_THREADS)).toBe(reason)
  })

  test('what structured clone left to itself does with them: changes them without a word (hence the rule)', () => {
    const coded = structuredClone(Object.assign(new Error('x'), { code: 'E1' })) as Error & { code?: string }
    expect(coded.code).toBeUndefined()
    expect(Object.getPrototypeOf(structuredClone(new ItemError('x')))).toBe(Error.prototype)
    expect(structuredClone(new AggregateError([new Error('e')], 'x'))).not.toHaveProperty('errors')
    expect(Object.getPrototypeOf(structuredClone(new DOMException('x')))).toBe(Object.prototype)
    const point = structuredClone({ at: [new URL('http://h/')] }) as { at: unknown[] }
    expect(Object.getPrototypeOf(point.at[0])).toBe(Object.prototype)
  })

  test('an error whose cause cannot be read is refused, not thrown', () => {
    const e = new Error('x')
    Object.defineProperty(e, 'cause', {
      get() {
        throw new Error('no cause')
      },
    })
    expect(unsendable(e, 'item', TO_THREADS)).toBe(
      'item.cause cannot be read (its getter threw Error: no cause)',
    )
  })
})

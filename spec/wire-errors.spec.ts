/**
 * The error form shared by threads and Redis (lib/wire/errors.ts): `toWire()` turns anything thrown
 * into plain data without ever throwing, `fromWire()` rebuilds it. The thread specs exercise both
 * across real threads; these check them where the coverage can see them, value by value.
 */
import { describe, expect, test } from 'vitest'
import { fromWire, toWire, type WireError } from '../lib/wire/errors.js'

/** What crossing a thread does to the wire form: a structured clone. */
const across = (thrown: unknown): unknown => fromWire(structuredClone(toWire(thrown)))

class HostileError extends Error {
  override get name(): string {
    throw new Error('no name for you')
  }
}

describe('toWire() and fromWire(): an error keeps what can be sent', () => {
  test('class, message, stack, sendable properties and the cause chain', () => {
    const root = new Error('the root')
    const e = Object.assign(new RangeError('out of range', { cause: root }), { code: 'E_RANGE', status: 416 })
    const back = across(e) as RangeError & { code: string; status: number }
    expect(back).toBeInstanceOf(RangeError)
    expect([back.message, back.stack, back.code, back.status]).toEqual([e.message, e.stack, 'E_RANGE', 416])
    expect(back.cause).toBeInstanceOf(Error)
    expect((back.cause as Error).message).toBe('the root')
  })

  test('a class that is not built in comes back as an Error with its name', () => {
    class ItemError extends Error {
      override name = 'ItemError'
    }
    const back = across(new ItemError('cursed')) as Error
    expect(Object.getPrototypeOf(back)).toBe(Error.prototype)
    expect([back.name, back.message]).toEqual(['ItemError', 'cursed'])
    // the name is an own property, as an Error's `name` is usually inherited: writable as it was
    back.name = 'Renamed'
    expect(back.name).toBe('Renamed')
  })

  test('a property that cannot be sent is left out; a thrown non-Error is kept when it can be sent', () => {
    const e = Object.assign(new Error('x'), { handler: () => 1, at: new Date(5), nested: { n: 1 } })
    const back = across(e) as Error & Record<string, unknown>
    expect(Object.keys(back).sort()).toEqual(['at', 'nested'])
    expect(back.at).toEqual(new Date(5))
    expect(across('a plain string')).toBe('a plain string')
    expect(across({ code: 7, tags: ['a'] })).toEqual({ code: 7, tags: ['a'] })
    expect(across(undefined)).toBeUndefined()
    // what cannot be sent is described as describeCause() describes it
    expect(across({ f() {} })).toBe('[object Object]')
    expect(across(Symbol('s'))).toBe('Symbol(s)')
  })

  test('a cause chain is followed to a depth of 8', () => {
    let e: Error = new Error('level 0')
    for (let i = 1; i <= 12; i++) e = new Error(`level ${i}`, { cause: e })
    let w: WireError | undefined = toWire(e)
    let depth = 0
    while (w?.cause !== undefined) {
      w = w.cause
      depth++
    }
    expect(depth).toBe(8)
  })

  test('fromWire() builds a kind of stage its own error class, with the parts that were sent', () => {
    class RemoteError extends Error {
      override name = 'RemoteError'
    }
    const sent = toWire(Object.assign(new TypeError('bad', { cause: 'why' }), { code: 'E1' }))
    const back = fromWire(sent, (w) => new RemoteError(`${w.name}: ${w.message}`)) as RemoteError & {
      code: string
    }
    expect(back).toBeInstanceOf(RemoteError)
    expect([back.message, back.cause, back.code, back.stack]).toEqual([
      'TypeError: bad',
      'why',
      'E1',
      sent.stack,
    ])
  })

  test('fromWire() takes no prototype from the wire, and gives back what is not an error form', () => {
    const w = { name: 'Error', message: 'm', props: JSON.parse('{"__proto__": {"polluted": 1}, "ok": 2}') }
    const back = fromWire(w) as Error & Record<string, unknown>
    expect(back.ok).toBe(2)
    expect(back.polluted).toBeUndefined()
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(fromWire(null as never)).toBeNull()
    expect(fromWire({ value: 5 })).toBe(5)
    const odd = fromWire({ name: 5, message: undefined } as never) as Error
    expect([odd.name, odd.message]).toEqual(['Error', ''])
  })
})

describe('toWire() never throws, whatever was thrown', () => {
  const revoked = () => {
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    return proxy
  }
  const hostile: [string, () => unknown, string][] = [
    [
      'an Error whose message getter throws',
      () =>
        Object.defineProperty(new Error('unreadable'), 'message', {
          get() {
            throw new Error('no message for you')
          },
        }),
      'Error (describing it threw)',
    ],
    [
      "an Error whose class's name getter throws",
      () => new HostileError('unnamed'),
      'HostileError (describing it threw)',
    ],
    [
      'a Proxy of an Error whose every trap throws',
      () =>
        new Proxy(new Error('hidden'), {
          get() {
            throw new Error('no get')
          },
          getPrototypeOf() {
            throw new Error('no prototype')
          },
          has() {
            throw new Error('no has')
          },
          ownKeys() {
            throw new Error('no keys')
          },
          getOwnPropertyDescriptor() {
            throw new Error('no descriptor')
          },
        }),
      'a value that could not be described',
    ],
    [
      'an object whose toString throws',
      () => ({
        toString() {
          throw new Error('no string')
        },
      }),
      '[object Object]',
    ],
    [
      'a null-prototype object with a method',
      () => Object.assign(Object.create(null), { f() {} }),
      '[object Object]',
    ],
    ['a revoked Proxy', revoked, 'a value that could not be described'],
  ]

  test.each(hostile)('%s is described, as describeCause() would', (_, make, text) => {
    expect(toWire(make())).toEqual({ value: text })
    expect(across(make())).toBe(text)
  })

  test('an Error whose stack, cause and properties throw when read keeps what can be read', () => {
    const e = new RangeError('readable message')
    for (const key of ['stack', 'cause', 'code']) {
      Object.defineProperty(e, key, {
        enumerable: true,
        get() {
          throw new Error(`no ${key}`)
        },
      })
    }
    const back = across(e) as RangeError
    expect(back).toBeInstanceOf(RangeError)
    expect(back.message).toBe('readable message')
    expect(back.cause).toBeUndefined()
    expect(Object.keys(back)).not.toContain('code')
  })

  test('an Error whose keys cannot be listed keeps its name and message', () => {
    const e = new Proxy(new TypeError('listed'), {
      ownKeys() {
        throw new Error('no keys')
      },
    })
    const back = across(e) as TypeError
    expect(back).toBeInstanceOf(TypeError)
    expect(back.message).toBe('listed')
  })
})

/**
 * The one rule for data that crosses to another thread or process (a thread stage's or a Redis
 * stage's items, and the results sent back): what may go, checked deeply before it goes, so that
 * nothing is silently changed on the way. Left to themselves, the serializers would: msgpackr
 * (Redis, with `structuredClone: true`) turns a function into `undefined` and an instance of a class
 * into a plain object; structured clone (threads) turns a class instance, nested anywhere, into a
 * plain object without its methods; both fail on a symbol with a message that names neither the
 * item nor where in it the symbol was.
 *
 * What goes:
 * - primitives but symbols: strings, numbers, BigInts, booleans, `undefined`, `null`;
 * - plain objects (prototype `Object.prototype` or `null`): their own enumerable string-keyed
 *   properties, walked (non-enumerable ones are not data, as for JSON and structured clone, and are
 *   not sent); arrays: their elements, walked;
 * - `Map` (keys and values walked) and `Set` (members walked);
 * - `Date`, `RegExp` (source and flags), `ArrayBuffer`, `DataView`, typed arrays and `Buffer`.
 *
 * What is refused, at any depth: a function, a symbol (as a value or as a property key), a Proxy,
 * an instance of any other class (an `Error`, a `URL`, a subclass of `Map` or `Date`, a boxed
 * primitive, an object whose prototype is another object), and a `Map`, `Set`, `Date`, `RegExp`,
 * `ArrayBuffer` or `DataView` with properties of its own (they would not be sent, and would change
 * what is). A property whose getter throws is refused as unreadable. Shared and cyclic references
 * are fine: each object is walked once.
 *
 * One rule, with what differs by transport as a parameter (`SendRule`): structured clone, which
 * carries a thread stage's data, also carries errors of the built-in classes (their message, stack
 * and cause), shares a `SharedArrayBuffer` and hands a `MessagePort` over; Redis's codec does none
 * of these faithfully. `TO_THREADS` is the rule of a thread stage; the default is the rule of a
 * process.
 *
 * The check is a pure function of the value: a primitive costs a `typeof` (no allocation); objects
 * are walked the way the serializer walks them.
 * @module
 */
import { types } from 'node:util'
import { describeCause } from '../errors.js'

/** Said after a refusal: what may be sent instead. */
export const SENDABLE =
  'only primitives (not symbols), plain objects, arrays, Map, Set, Date, RegExp, ArrayBuffer, DataView, typed arrays and Buffer can be sent to another process'

/** Said after a refusal by the `TO_THREADS` rule: what may cross to a thread instead. */
export const SENDABLE_TO_THREADS =
  'only primitives (not symbols), plain objects, arrays, Map, Set, Date, RegExp, ArrayBuffer, SharedArrayBuffer, DataView, typed arrays, Buffer, errors of the built-in classes and MessagePorts can cross between threads'

/** What a transport carries faithfully besides the data every transport carries. */
export interface SendRule {
  /**
   * Errors of the built-in classes (`Error`, `TypeError`, `RangeError`, `SyntaxError`,
   * `ReferenceError`, `EvalError`, `URIError`) go, with no properties of their own but `message`,
   * `stack` and `cause` (walked): structured clone carries those and drops the rest.
   */
  readonly errors?: boolean
  /** A `SharedArrayBuffer` (shared, not copied) and a `MessagePort` (handed over) go. */
  readonly shared?: boolean
}

/** The rule of a worker process (Redis): the data every transport carries, nothing more. */
export const TO_PROCESSES: SendRule = Object.freeze({})

/** The rule of a worker thread (structured clone): errors of the built-in classes, shared memory and ports too. */
export const TO_THREADS: SendRule = Object.freeze({ errors: true, shared: true })

const ERROR_PROTOTYPES: ReadonlySet<unknown> = new Set(
  [Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError].map((C) => C.prototype),
)
/** What structured clone keeps of an error of a built-in class. */
const ERROR_OWN: ReadonlySet<PropertyKey> = new Set(['message', 'stack', 'cause'])

const TYPED_ARRAYS: ReadonlySet<unknown> = new Set(
  [
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
    Buffer,
  ].map((C) => C.prototype),
)

// the iterators of the built-ins, taken once: a Map or Set with its own `Symbol.iterator` is
// refused anyway, and the walk must not run code of the value's own
const mapEntries = Map.prototype.entries
const setValues = Set.prototype.values

/** A refusal: what is wrong, and the path to it, innermost step first (built only on failure). */
class Refusal {
  readonly steps: string[] = []
  constructor(readonly what: string) {}
}

/**
 * Why `value` cannot be sent to another process, or `undefined` when it can: the path to the first
 * value refused, from `root`, and what it is. `item.tags[1] is a function (anonymous)`,
 * `result.user.f is a function f`, `item.when is an instance of Temporal`,
 * `item.byId.get("a").x is a symbol (Symbol(x))`. Map keys read `m.keys()[2]`, Map values
 * `m.get(<key>)` (or `m.values()[2]` when the key is an object), Set members `s.values()[1]`.
 * Never throws: a getter that throws, a revoked Proxy, a structure too deep to walk, are reasons too.
 *
 * For example, `unsendable({ id: 1, tags: ['a', new Date()] })` is undefined,
 * `unsendable({ id: 1, tags: ['a', () => 1] })` is `'item.tags[1] is a function (anonymous)'`, and
 * `unsendable(new Map([['u', { f() {} }]]), 'result')` is `'result.get("u").f is a function f'`.
 * `rule` says what the transport carries besides (`TO_THREADS`); a process's rule by default.
 */
export function unsendable(value: unknown, root = 'item', rule: SendRule = TO_PROCESSES): string | undefined {
  // the common case, a primitive: no allocation, no call
  const t = typeof value
  if (t !== 'object' && t !== 'function' && t !== 'symbol') return undefined
  if (value === null) return undefined
  let r: Refusal | undefined
  try {
    r = t === 'object' ? checkObject(value as object, undefined, rule) : leaf(value)
  } catch (err) {
    // a structure nested past the stack: the serializer could not walk it either
    r = new Refusal(`cannot be walked (${describeCause(err)})`)
  }
  if (r === undefined) return undefined
  let path = root
  for (let i = r.steps.length - 1; i >= 0; i--) path += r.steps[i]
  return `${path} ${r.what}`
}

/** The refusal of a function or symbol (`v` is a value of another type: undefined). */
function leaf(v: unknown): Refusal | undefined {
  if (typeof v === 'function') return new Refusal(`is a function ${functionName(v)}`)
  if (typeof v === 'symbol') return new Refusal(`is a symbol (${symbolText(v)})`)
  return undefined
}

/**
 * Checks a value found inside another: primitives at once, objects by walking them. `seen` holds
 * the objects being or already walked (shared references and cycles are walked once).
 */
function check(v: unknown, seen: Set<object>, rule: SendRule): Refusal | undefined {
  const t = typeof v
  if (t === 'object') return v === null ? undefined : checkObject(v as object, seen, rule)
  if (t === 'function' || t === 'symbol') return leaf(v)
  return undefined
}

function checkObject(o: object, seen: Set<object> | undefined, rule: SendRule): Refusal | undefined {
  if (seen === undefined) seen = new Set()
  else if (seen.has(o)) return undefined
  seen.add(o)
  if (types.isProxy(o)) return new Refusal('is a Proxy')
  const proto: unknown = Object.getPrototypeOf(o) // not a Proxy: this runs no code of the value's
  if (proto === Object.prototype || proto === null) {
    if (Object.getOwnPropertySymbols(o).length > 0) return symbolKey(o)
    const keys = Object.keys(o)
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!
      let v: unknown
      try {
        v = (o as Record<string, unknown>)[key]
      } catch (err) {
        return step(new Refusal(`cannot be read (its getter threw ${describeCause(err)})`), propertyStep(key))
      }
      const r = check(v, seen, rule)
      if (r !== undefined) return step(r, propertyStep(key))
    }
    return undefined
  }
  if (proto === Array.prototype && Array.isArray(o)) {
    if (Object.getOwnPropertySymbols(o).length > 0) return symbolKey(o)
    const a = o as unknown[]
    for (let i = 0; i < a.length; i++) {
      let v: unknown
      try {
        v = a[i]
      } catch (err) {
        return step(new Refusal(`cannot be read (its getter threw ${describeCause(err)})`), `[${i}]`)
      }
      const r = check(v, seen, rule)
      if (r !== undefined) return step(r, `[${i}]`)
    }
    return undefined
  }
  if (proto === Map.prototype && types.isMap(o)) {
    const own = ownProperties(o, 'Map', false)
    if (own !== undefined) return own
    let i = 0
    for (const [k, v] of mapEntries.call(o as Map<unknown, unknown>)) {
      let r = check(k, seen, rule)
      if (r !== undefined) return step(r, `.keys()[${i}]`)
      r = check(v, seen, rule)
      if (r !== undefined) return step(r, mapValueStep(k, i))
      i++
    }
    return undefined
  }
  if (proto === Set.prototype && types.isSet(o)) {
    const own = ownProperties(o, 'Set', false)
    if (own !== undefined) return own
    let i = 0
    for (const v of setValues.call(o as Set<unknown>)) {
      const r = check(v, seen, rule)
      if (r !== undefined) return step(r, `.values()[${i}]`)
      i++
    }
    return undefined
  }
  if (TYPED_ARRAYS.has(proto) && types.isTypedArray(o)) return undefined
  if (proto === Date.prototype && types.isDate(o)) return ownProperties(o, 'Date', false)
  if (proto === RegExp.prototype && types.isRegExp(o)) return ownProperties(o, 'RegExp', true)
  if (proto === ArrayBuffer.prototype && types.isArrayBuffer(o)) return ownProperties(o, 'ArrayBuffer', false)
  if (proto === DataView.prototype && types.isDataView(o)) return ownProperties(o, 'DataView', false)
  if (rule.errors === true && ERROR_PROTOTYPES.has(proto) && types.isNativeError(o))
    return checkError(o, seen, rule)
  if (rule.shared === true) {
    if (proto === SharedArrayBuffer.prototype && types.isSharedArrayBuffer(o))
      return ownProperties(o, 'SharedArrayBuffer', false)
    // a port's own properties are its event target's internals (symbol-keyed), not data
    if (proto === globalThis.MessagePort?.prototype) return undefined
  }
  return new Refusal(`is ${instanceOf(proto)}`)
}

/**
 * An error of a built-in class: structured clone keeps its class, `message`, `stack` and `cause`
 * (walked), and drops any other property (a `code`, a `name` of its own), which is refused.
 */
function checkError(e: object, seen: Set<object>, rule: SendRule): Refusal | undefined {
  const keys = Reflect.ownKeys(e)
  const other = keys.filter((k) => !ERROR_OWN.has(k))
  if (other.length > 0) {
    const type = instanceOf(Object.getPrototypeOf(e)).replace(/^an instance of /, '')
    const names = other.map((k) => (typeof k === 'symbol' ? symbolText(k) : k))
    const a = /^[AEIOU]/.test(type) ? 'an' : 'a'
    return new Refusal(
      `is ${a} ${type} with properties of its own (${names.join(', ')}), which would not be sent`,
    )
  }
  if (!keys.includes('cause')) return undefined
  let cause: unknown
  try {
    cause = (e as { cause?: unknown }).cause
  } catch (err) {
    return step(new Refusal(`cannot be read (its getter threw ${describeCause(err)})`), '.cause')
  }
  const r = check(cause, seen, rule)
  return r === undefined ? undefined : step(r, '.cause')
}

/** Adds one step to a refusal's path, on the way out of the walk. */
function step(r: Refusal, s: string): Refusal {
  r.steps.push(s)
  return r
}

/** The refusal of a built-in object that has properties of its own (a RegExp's `lastIndex` is its own). */
function ownProperties(o: object, type: string, regexp: boolean): Refusal | undefined {
  const keys = Reflect.ownKeys(o)
  if (keys.length === 0 || (regexp && keys.length === 1 && keys[0] === 'lastIndex')) return undefined
  const names = keys
    .filter((k) => k !== 'lastIndex' || !regexp)
    .map((k) => (typeof k === 'symbol' ? symbolText(k) : k))
  return new Refusal(`is a ${type} with properties of its own (${names.join(', ')}), which would not be sent`)
}

function symbolKey(o: object): Refusal {
  const s = Object.getOwnPropertySymbols(o)[0]!
  return step(new Refusal('is a symbol-keyed property'), `[${symbolText(s)}]`)
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

function propertyStep(key: string): string {
  return IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
}

/** `.get("a")`, `.get(1)`, `.get(2n)` for a primitive key; `.values()[i]` for an object key. */
function mapValueStep(k: unknown, i: number): string {
  switch (typeof k) {
    case 'string':
      return `.get(${JSON.stringify(k)})`
    case 'number':
    case 'boolean':
    case 'undefined':
      return `.get(${String(k)})`
    case 'bigint':
      return `.get(${String(k)}n)`
    default:
      return k === null ? '.get(null)' : `.values()[${i}]`
  }
}

/** `an instance of Point`, or what can be said of a prototype without a named constructor. */
function instanceOf(proto: unknown): string {
  let name: unknown
  try {
    const C =
      proto !== null && (typeof proto === 'object' || typeof proto === 'function')
        ? Object.getOwnPropertyDescriptor(proto, 'constructor')?.value
        : undefined
    name = typeof C === 'function' ? Object.getOwnPropertyDescriptor(C, 'name')?.value : undefined
  } catch {
    // a prototype that is a Proxy: nothing more can be said
  }
  if (typeof name === 'string' && name !== '') return `an instance of ${name}`
  return 'an object whose prototype is neither Object.prototype nor null'
}

function functionName(f: unknown): string {
  let name: unknown
  try {
    name = Object.getOwnPropertyDescriptor(f, 'name')?.value
  } catch {
    // a Proxy of a function
  }
  return typeof name === 'string' && name !== '' ? name : '(anonymous)'
}

function symbolText(s: symbol): string {
  const d = s.description
  return d === undefined ? 'Symbol()' : `Symbol(${d})`
}

/**
 * A thrown value as plain data, and back: how an error crosses from a worker thread or a worker
 * process to the run. One form for threads and Redis, so that both keep the same parts of an error:
 * its name, message, stack, its own properties that can be sent (`code`, `status`, ...) and its
 * cause, to a depth of 8. Turning a value into this form never throws, whatever it is: a value
 * whose name or message cannot be read is described the way `describeCause` describes it.
 * @module
 */
import { describeCause } from '../errors.js'
import { unsendable } from './sendable.js'

/** A thrown value as plain data. */
export interface WireError {
  /** Set for a thrown value that is not an Error: the value itself where it can be sent, else its description. */
  value?: unknown
  /** The error's class name (`TypeError`, `AbortError`, a custom one). */
  name?: string
  message?: string
  stack?: string
  /** The error's own enumerable properties that can be sent, by name. */
  props?: Record<string, unknown>
  cause?: WireError
}

/** How deep a chain of causes is followed. */
const MAX_DEPTH = 8

function isError(x: unknown): boolean {
  return x instanceof Error || Object.prototype.toString.call(x) === '[object Error]'
}

/** `thrown` as plain data that can be sent (never throws). */
export function toWire(thrown: unknown, depth = 0): WireError {
  let error: boolean
  try {
    error = isError(thrown)
  } catch {
    return { value: describeCause(thrown) }
  }
  if (!error) return { value: unsendable(thrown, 'value') === undefined ? thrown : describeCause(thrown) }
  const e = thrown as Error
  let w: WireError
  try {
    w = { name: String(e.name), message: String(e.message) }
  } catch {
    return { value: describeCause(thrown) }
  }
  try {
    if (typeof e.stack === 'string') w.stack = e.stack
  } catch {
    // a stack that cannot be read is left out
  }
  let keys: string[] = []
  try {
    keys = Object.keys(e)
  } catch {
    // keys that cannot be listed: no properties
  }
  for (const key of keys) {
    if (key === 'cause' || key === 'name' || key === 'message' || key === 'stack') continue
    try {
      const v = (e as unknown as Record<string, unknown>)[key]
      if (unsendable(v, key) === undefined) (w.props ??= {})[key] = v
    } catch {
      // a property that cannot be read is left out
    }
  }
  try {
    if (depth < MAX_DEPTH && 'cause' in e) w.cause = toWire(e.cause, depth + 1)
  } catch {
    // a cause that cannot be read is left out
  }
  return w
}

const BUILTIN_ERRORS: Record<string, ErrorConstructor> = {
  __proto__: null as never,
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
}

/**
 * The error (or value) `w` describes, rebuilt: a built-in error class where the name is one, else
 * an Error with that name; its message, stack, properties and cause as they were sent. `make`
 * builds it for a kind that has its own error class (a Redis worker's RemoteError).
 */
export function fromWire(w: WireError, make?: (w: WireError) => Error): unknown {
  if (w === null || typeof w !== 'object') return w
  if (!('name' in w)) return w.value
  const name = typeof w.name === 'string' ? w.name : 'Error'
  const message = typeof w.message === 'string' ? w.message : ''
  let e: Error
  if (make !== undefined) e = make(w)
  else {
    const C = BUILTIN_ERRORS[name] ?? Error
    e = w.cause !== undefined ? new C(message, { cause: fromWire(w.cause) }) : new C(message)
    if (e.name !== name) Object.defineProperty(e, 'name', { value: name, writable: true, configurable: true })
  }
  if (make !== undefined && w.cause !== undefined) {
    Object.defineProperty(e, 'cause', { value: fromWire(w.cause), writable: true, configurable: true })
  }
  if (typeof w.stack === 'string') e.stack = w.stack
  if (w.props !== null && typeof w.props === 'object') {
    for (const key of Object.keys(w.props)) {
      if (key === '__proto__' || key === 'constructor') continue
      ;(e as unknown as Record<string, unknown>)[key] = w.props[key]
    }
  }
  return e
}

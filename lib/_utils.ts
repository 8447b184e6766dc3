/** Small private helpers shared by several modules. Not exported from the package. */
import { got } from './options/check.js'

export function noop(): void {}

export function isIterable(x: unknown): x is Iterable<unknown> {
  return x != null && typeof (x as any)[Symbol.iterator] === 'function'
}

export function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return x != null && typeof (x as any)[Symbol.asyncIterator] === 'function'
}

export function isThenable(x: unknown): x is PromiseLike<unknown> {
  return (
    x !== null && (typeof x === 'object' || typeof x === 'function') && typeof (x as any).then === 'function'
  )
}

/**
 * Checks an iterator result the way `for...of` and `for await` do: a result that is not an object
 * (a `next()` that returns 5) is a TypeError, not an endless stream of `undefined`. Returns `r`.
 */
export function iteratorResult<T>(r: IteratorResult<T>): IteratorResult<T> {
  if (r === null || (typeof r !== 'object' && typeof r !== 'function')) {
    throw new TypeError(`Iterator result ${resultText(r)} is not an object`)
  }
  return r
}

function resultText(r: unknown): string {
  if (typeof r === 'string') return JSON.stringify(r)
  if (typeof r === 'bigint') return `${r}n`
  return String(r)
}

/**
 * Opens `iterable`'s iterator (its async one if it has one, else its sync one) and checks that it
 * is an iterator, so that a `[Symbol.asyncIterator]()` returning 5 or `{}` says so instead of
 * failing later with "next is not a function". `what` names the iterable in the message, before
 * the method: "the source's" gives "the source's [Symbol.iterator]() returned 5 (number), ...".
 */
export function openIterator(
  iterable: Iterable<unknown> | AsyncIterable<unknown>,
  what: string,
): { it: Iterator<unknown> | AsyncIterator<unknown>; async: boolean } {
  const async = isAsyncIterable(iterable)
  const it: unknown = async
    ? (iterable as AsyncIterable<unknown>)[Symbol.asyncIterator]()
    : (iterable as Iterable<unknown>)[Symbol.iterator]()
  if (
    it === null ||
    (typeof it !== 'object' && typeof it !== 'function') ||
    typeof (it as Iterator<unknown>).next !== 'function'
  ) {
    const method = async ? '[Symbol.asyncIterator]()' : '[Symbol.iterator]()'
    throw new TypeError(
      `${what} ${method} returned ${got(it)}, not an iterator (an object with a next() method)`,
    )
  }
  return { it: it as Iterator<unknown> | AsyncIterator<unknown>, async }
}

/** Calls `return()` on an iterator without waiting for it, swallowing whatever it throws. */
export function closeQuietly(it: Iterator<unknown> | AsyncIterator<unknown> | undefined): void {
  if (it === undefined || typeof it.return !== 'function') return
  try {
    const r = it.return() as unknown
    // not awaited: the iterator may be parked mid-await, and waiting on it could hang a `break`
    if (isThenable(r)) (r as Promise<unknown>).then(undefined, noop)
  } catch {
    // a failing return() must not mask the run's own outcome
  }
}

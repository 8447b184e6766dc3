/** Small private helpers shared by several modules. Not exported from the package. */

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

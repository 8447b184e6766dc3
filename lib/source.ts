/**
 * Turning a pipeline's source into the first stage's inlet, read on demand: an item is pulled
 * from the source only when a worker of the first stage asks for one.
 * @module
 */
import { DONE, type Done, EMPTY, type Empty, Fifo, type Inlet, park, type Waiter } from './queue.js'

/** Something a pipeline can read from. */
export type Source<T> = Iterable<T> | AsyncIterable<T> | (() => Iterable<T> | AsyncIterable<T>)

/** The item type of a source. */
export type SourceItem<S> = S extends () => infer R
  ? SourceItem<R>
  : S extends AsyncIterable<infer T>
    ? T
    : S extends Iterable<infer T>
      ? T
      : never

export function isIterable(x: unknown): x is Iterable<unknown> {
  return x != null && typeof (x as any)[Symbol.iterator] === 'function'
}
export function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return x != null && typeof (x as any)[Symbol.asyncIterator] === 'function'
}

/** Calls `return()` on an iterator without waiting for it, swallowing whatever it throws. */
export function closeQuietly(it: Iterator<unknown> | AsyncIterator<unknown> | undefined): void {
  if (it === undefined || typeof it.return !== 'function') return
  try {
    const r = it.return() as unknown
    // not awaited: the iterator may be parked mid-await, and waiting on it could hang a `break`
    if (r != null && typeof (r as PromiseLike<unknown>).then === 'function') {
      ;(r as Promise<unknown>).then(undefined, noop)
    }
  } catch {
    // a failing return() must not mask the run's own outcome
  }
}
function noop(): void {}

/** A sync iterator read synchronously, one `next()` per item a worker asks for. */
export class SyncSource<T> implements Inlet<T> {
  private n = 0
  private ended = false

  constructor(
    private readonly it: Iterator<T>,
    private readonly onError: (err: unknown) => void,
  ) {}

  poll(w: Waiter): T | Empty | Done {
    if (this.ended) return DONE
    let value: T
    try {
      const r = this.it.next()
      if (r.done) {
        this.ended = true
        return DONE
      }
      value = r.value
    } catch (err) {
      this.ended = true
      this.onError(err)
      return DONE
    }
    w.seq = this.n++
    return value
  }

  wait(w: Waiter): Promise<void> {
    w.item = DONE // poll never says EMPTY, so only a finished source is waited on
    return Promise.resolve()
  }

  abort(): void {
    if (this.ended) return
    this.ended = true
    closeQuietly(this.it)
  }
}

/**
 * An async iterator read by one pump at a time (an arbitrary async iterator need not support
 * concurrent `next()` calls), on demand: the pump runs only while a worker is waiting, so at
 * most one item per waiting worker is read ahead.
 */
export class AsyncSource<T> implements Inlet<T> {
  private n = 0
  private ended = false
  private reading = false
  private readonly takers = new Fifo<Waiter>(4)

  constructor(
    private readonly it: AsyncIterator<T>,
    private readonly onError: (err: unknown) => void,
  ) {}

  poll(_w: Waiter): T | Empty | Done {
    return this.ended ? DONE : EMPTY
  }

  wait(w: Waiter): Promise<void> {
    if (this.ended) {
      w.item = DONE
      return Promise.resolve()
    }
    this.takers.push(w)
    const p = park(w)
    if (!this.reading) void this.pump()
    return p
  }

  private async pump(): Promise<void> {
    this.reading = true
    try {
      while (this.takers.length > 0 && !this.ended) {
        const r = await this.it.next()
        if (this.ended) return
        if (r.done) {
          this.ended = true
          this.wakeAll()
          return
        }
        const w = this.takers.shift()
        w.seq = this.n++
        w.item = r.value
        w.wake()
      }
    } catch (err) {
      if (this.ended) return
      this.ended = true
      this.wakeAll()
      this.onError(err)
    } finally {
      this.reading = false
    }
  }

  private wakeAll(): void {
    while (this.takers.length > 0) {
      const w = this.takers.shift()
      w.item = DONE
      w.wake()
    }
  }

  abort(): void {
    if (this.ended) return
    this.ended = true
    this.wakeAll()
    closeQuietly(this.it)
  }
}

/** An inlet with nothing in it (a source that could not be opened). */
export const emptyInlet: Inlet<never> = {
  poll: () => DONE,
  wait(w) {
    w.item = DONE
    return Promise.resolve()
  },
  abort: noop,
}

/** Opens a source for one run. Throws what the source function throws; the caller reports it. */
export function openSource<T>(source: Source<T>, onError: (err: unknown) => void): Inlet<T> {
  const s: unknown = typeof source === 'function' ? source() : source
  if (isAsyncIterable(s)) return new AsyncSource(s[Symbol.asyncIterator]() as AsyncIterator<T>, onError)
  if (isIterable(s)) return new SyncSource(s[Symbol.iterator]() as Iterator<T>, onError)
  throw new TypeError(
    `pipe(): the source function must return an Iterable or AsyncIterable, got ${s === null ? 'null' : typeof s}`,
  )
}

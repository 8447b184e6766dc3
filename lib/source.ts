/**
 * Turning a pipeline's source into the first stage's inlet, read on demand: an item is pulled
 * from the source only when a worker of the first stage asks for one.
 * @module
 */
import {
  closeQuietly,
  isAsyncIterable,
  isIterable,
  isThenable,
  iteratorResult,
  noop,
  openIterator,
} from './_utils.js'
import { Feed, isFeed } from './feed.js'
import { DONE, type Done, EMPTY, type Empty, Fifo, type Inlet, park, type Waiter } from './queue.js'

/**
 * Something a pipeline can read from.
 *
 * @example
 * ```ts
 * import { pipe, type Source } from 'stageline'
 * async function* lines() {
 *   yield 'a'
 *   yield 'b'
 * }
 * const sources: Source<string>[] = [['a', 'b'], lines(), new Set(['a', 'b'])]
 * for (const src of sources) console.log(await pipe(src).toArray()) // [ 'a', 'b' ], three times
 * ```
 */
export type Source<T> =
  | Iterable<T>
  | AsyncIterable<T>
  | Feed<T>
  | ((bucket: Feed<T>) => Iterable<T> | AsyncIterable<T> | PromiseLike<unknown> | undefined | void)

/**
 * The item type of a source.
 *
 * @example
 * ```ts
 * import type { SourceItem } from 'stageline'
 * async function* ids() {
 *   yield 1
 * }
 * type Id = SourceItem<ReturnType<typeof ids>> // number
 * const first: Id = 1
 * ```
 */
export type SourceItem<S> =
  S extends Feed<infer T>
    ? T
    : S extends (bucket: Feed<infer B>) => infer R
      ? R extends Iterable<unknown> | AsyncIterable<unknown>
        ? SourceItem<R>
        : B
      : S extends AsyncIterable<infer T>
        ? T
        : S extends Iterable<infer T>
          ? T
          : never

export { closeQuietly, isAsyncIterable, isIterable } from './_utils.js'

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
      const r = iteratorResult(this.it.next())
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

  cancel(_w: Waiter): boolean {
    return false
  }

  abort(): void {
    if (this.ended) return
    this.ended = true
    closeQuietly(this.it)
  }
}

/** A plain array, read by index on demand (like its iterator, it sees the array's current length). */
export class ArraySource<T> implements Inlet<T> {
  private i = 0
  private ended = false

  constructor(private readonly items: readonly T[]) {}

  poll(w: Waiter): T | Empty | Done {
    if (this.ended) return DONE
    const i = this.i
    if (i >= this.items.length) {
      this.ended = true
      return DONE
    }
    this.i = i + 1
    w.seq = i
    return this.items[i] as T
  }

  wait(w: Waiter): Promise<void> {
    w.item = DONE
    return Promise.resolve()
  }

  cancel(_w: Waiter): boolean {
    return false
  }

  abort(): void {
    this.ended = true
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
  /** An item read for a worker that took back its wait (`cancel`) meanwhile: the next taker gets it. */
  private held: { value: T } | undefined = undefined

  constructor(
    private readonly it: AsyncIterator<T>,
    private readonly onError: (err: unknown) => void,
  ) {}

  poll(w: Waiter): T | Empty | Done {
    const h = this.held
    if (h !== undefined) {
      this.held = undefined
      w.seq = this.n++
      return h.value
    }
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

  cancel(w: Waiter): boolean {
    return this.takers.remove(w)
  }

  private async pump(): Promise<void> {
    this.reading = true
    try {
      while (this.takers.length > 0 && !this.ended) {
        const r = iteratorResult(await this.it.next())
        if (this.ended) return
        if (r.done) {
          this.ended = true
          this.wakeAll()
          return
        }
        if (this.takers.length === 0) {
          // every waiting worker cancelled while this item was being read: keep it for poll()
          this.held = { value: r.value }
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
    this.held = undefined
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
  cancel: () => false,
}

/**
 * Opens a source for one run. A function source is called with a bucket (a feed): if it returns an
 * Iterable or AsyncIterable, that is the source; otherwise the bucket is, and the input ends when
 * the function's result settles (a rejection fails the run). Throws what the function throws.
 */
export function openSource<T>(source: Source<T>, onError: (err: unknown) => void): Inlet<T> {
  if (isFeed(source)) return (source as Feed<T>).open(onError)
  if (typeof source !== 'function') return openIterable(source, onError)
  const bucket = new Feed<T>()
  const s: unknown = (source as (bucket: Feed<T>) => unknown)(bucket)
  if (isAsyncIterable(s) || isIterable(s)) return openIterable(s as Iterable<T> | AsyncIterable<T>, onError)
  if (isThenable(s)) {
    ;(s as PromiseLike<unknown>).then(
      () => bucket.end(),
      (err: unknown) => onError(err),
    )
  } else if (s === undefined) {
    bucket.end()
  } else {
    throw new TypeError(
      `pipe(): a source function must return an Iterable, an AsyncIterable, a promise (after pushing into its bucket) or nothing, got ${s === null ? 'null' : typeof s}`,
    )
  }
  return bucket.open(onError)
}

const arrayIterator = Array.prototype[Symbol.iterator]

function openIterable<T>(s: Iterable<T> | AsyncIterable<T>, onError: (err: unknown) => void): Inlet<T> {
  // a plain array is read by index: the same items as its iterator, without an
  // iterator-result object per item
  if (Array.isArray(s) && s[Symbol.iterator] === arrayIterator) return new ArraySource(s as T[])
  const { it, async } = openIterator(s, "the source's")
  if (async) return new AsyncSource(it as AsyncIterator<T>, onError)
  return new SyncSource(it as Iterator<T>, onError)
}

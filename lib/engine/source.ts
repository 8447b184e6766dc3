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
} from '../_utils.js'
import { Fifo } from '../channel/fifo.js'
import { DONE, type Done, EMPTY, type Empty, type Inlet } from '../channel/inlet.js'
import type { Waiter } from '../channel/waiter.js'
import { Feed, isFeed } from '../feed.js'

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
  | Iterable<T | PromiseLike<T>>
  | AsyncIterable<T>
  | Feed<T>
  | ((
      bucket: Feed<T>,
    ) => Iterable<T | PromiseLike<T>> | AsyncIterable<T> | PromiseLike<unknown> | undefined | void)

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
          ? Awaited<T>
          : never

export { closeQuietly, isAsyncIterable, isIterable } from '../_utils.js'

/** SyncInlet's states. Plain items are read only in READING, the one state the fast path checks for. */
const READING = 0
/** A thenable item is being awaited: nothing more is read until it settles. */
const AWAITING = 1
/** An awaited item settled, and no waiting worker has taken its value yet. */
const HELD = 2
const ENDED = 3

/**
 * A sync source read synchronously, one item per `poll()`, as `for await` reads it: an item that is
 * a promise (or any thenable) is awaited before it is handed over, and the next item is read only
 * once it has settled; a rejection fails the run as the source. Plain items never wait.
 *
 * The reading is the subclass's: an iterator (SyncSource) or an array by index (ArraySource). Each
 * writes its own `poll()` fast path (one state check, one read, one thenable check), and this class
 * does the rest, off that path.
 */
abstract class SyncInlet<T> implements Inlet<T> {
  /** Items handed out so far (see Inlet.taken). */
  taken = 0
  protected state = READING
  /** The settled value of an awaited item, in HELD. */
  private held: T | undefined = undefined
  /** Workers waiting for an awaited item (made on the first one: plain sources never need it). */
  private takers: Fifo<Waiter> | undefined
  /** Made once, so that awaiting an item allocates no closure. */
  private readonly onValue = (value: unknown): void => this.settled(value as T)
  private readonly onReject = (err: unknown): void => {
    if (this.state === ENDED) return
    this.end()
    this.close()
    this.onError(err)
  }

  constructor(private readonly onError: (err: unknown) => void) {}

  abstract poll(w: Waiter): T | Empty | Done
  /** Reads the next item, or says DONE; throws what the source throws. */
  protected abstract read(): T | Done
  /** Closes the underlying source, without waiting (a source that has nothing to close does nothing). */
  protected abstract close(): void

  /** poll() off the fast path: the source ended, or an item is awaited. */
  protected pollSlow(w: Waiter): T | Empty | Done {
    if (this.state === ENDED) return DONE
    if (this.state === AWAITING) return EMPTY
    const x = this.held as T
    this.held = undefined
    this.state = READING
    w.seq = this.taken++
    return x
  }

  /** The read threw: the source has failed. */
  protected failRead(err: unknown): Done {
    this.state = ENDED
    this.onError(err)
    return DONE
  }

  /** Starts awaiting the thenable item `x`; the worker that read it parks (EMPTY). */
  protected awaitItem(x: PromiseLike<unknown>): Empty {
    this.state = AWAITING
    // Promise.resolve() calls a thenable's then() once, in a job of its own, as `for await` does
    Promise.resolve(x).then(this.onValue, this.onReject)
    return EMPTY
  }

  wait(w: Waiter): Promise<void> {
    // only an awaited item is ever waited for: otherwise poll() said an item or DONE
    if (this.state !== AWAITING) {
      w.item = this.state === HELD ? this.pollSlow(w) : DONE
      return Promise.resolve()
    }
    const takers = (this.takers ??= new Fifo<Waiter>(4))
    takers.push(w)
    return w.park()
  }

  cancel(w: Waiter): boolean {
    return this.takers?.remove(w) ?? false
  }

  abort(): void {
    this.held = undefined
    if (this.state === ENDED) return
    this.end()
    this.close()
  }

  /** An awaited item settled with `value`: hand it, and then the items after it, to the workers waiting. */
  private settled(value: T): void {
    if (this.state !== AWAITING) return // the run stopped meanwhile: the value is dropped
    const takers = this.takers
    let v = value
    for (;;) {
      const t = takers !== undefined && takers.length > 0 ? takers.shift() : undefined
      if (t === undefined) {
        this.held = v
        this.state = HELD
        return
      }
      t.seq = this.taken++
      t.item = v
      t.wake()
      this.state = READING
      if (takers!.length === 0) return
      let x: T | Done
      try {
        x = this.read()
      } catch (err) {
        this.end()
        this.onError(err)
        return
      }
      if (x === DONE) {
        this.end()
        return
      }
      if (isThenable(x)) {
        this.awaitItem(x)
        return
      }
      v = x
    }
  }

  private end(): void {
    this.state = ENDED
    const takers = this.takers
    if (takers === undefined) return
    while (takers.length > 0) {
      const w = takers.shift()
      w.item = DONE
      w.wake()
    }
  }
}

/** A sync iterator read synchronously, one `next()` per item a worker asks for. */
export class SyncSource<T> extends SyncInlet<T> {
  constructor(
    private readonly it: Iterator<T>,
    onError: (err: unknown) => void,
  ) {
    super(onError)
  }

  poll(w: Waiter): T | Empty | Done {
    if (this.state !== READING) return this.pollSlow(w)
    let r: IteratorResult<T>
    try {
      r = iteratorResult(this.it.next())
      if (r.done) {
        this.state = ENDED
        return DONE
      }
    } catch (err) {
      return this.failRead(err)
    }
    const x = r.value
    if (isThenable(x)) return this.awaitItem(x as PromiseLike<unknown>)
    w.seq = this.taken++
    return x
  }

  protected read(): T | Done {
    const r = iteratorResult(this.it.next())
    return r.done ? DONE : r.value
  }

  protected close(): void {
    closeQuietly(this.it)
  }
}

/** A plain array, read by index on demand (like its iterator, it sees the array's current length). */
export class ArraySource<T> extends SyncInlet<T> {
  private i = 0

  constructor(
    private readonly items: readonly T[],
    onError: (err: unknown) => void,
  ) {
    super(onError)
  }

  poll(w: Waiter): T | Empty | Done {
    if (this.state !== READING) return this.pollSlow(w)
    const i = this.i
    if (i >= this.items.length) {
      this.state = ENDED
      return DONE
    }
    this.i = i + 1
    const x = this.items[i] as T
    if (isThenable(x)) return this.awaitItem(x as PromiseLike<unknown>)
    w.seq = this.taken++
    return x
  }

  protected read(): T | Done {
    const i = this.i
    if (i >= this.items.length) return DONE
    this.i = i + 1
    return this.items[i] as T
  }

  protected close(): void {}
}

/**
 * An async iterator read by one pump at a time (an arbitrary async iterator need not support
 * concurrent `next()` calls), on demand: the pump runs only while a worker is waiting, so at
 * most one item per waiting worker is read ahead.
 */
export class AsyncSource<T> implements Inlet<T> {
  /** Items handed out so far (see Inlet.taken). */
  taken = 0
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
      w.seq = this.taken++
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
    const p = w.park()
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
        w.seq = this.taken++
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
  taken: 0,
  poll: () => DONE,
  wait(w: Waiter) {
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
  if (typeof source !== 'function') return openIterable(source as Iterable<T> | AsyncIterable<T>, onError)
  const bucket = new Feed<T>()
  const s: unknown = (source as (bucket: Feed<T>) => unknown)(bucket)
  if (isAsyncIterable(s) || isIterable(s)) return openIterable(s as Iterable<T> | AsyncIterable<T>, onError)
  if (isThenable(s)) {
    ;(s as PromiseLike<unknown>).then(
      () => bucket.end(),
      (err: unknown) => {
        // a push() rejected because the run ended or stopped reading on purpose (an early end
        // downstream, a break, stop()): the function's failure is that ending, not an error
        if (!bucket.closedOnPurpose(err)) onError(err)
      },
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
  if (Array.isArray(s) && s[Symbol.iterator] === arrayIterator) return new ArraySource(s as T[], onError)
  const { it, async } = openIterator(s, "the source's")
  if (async) return new AsyncSource(it as AsyncIterator<T>, onError)
  return new SyncSource(it as Iterator<T>, onError)
}

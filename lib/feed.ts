/**
 * feed(): a bounded, multi-producer push source. Producers `push()` while a run reads; a push
 * waits while the feed is full (backpressure) and rejects, never drops, once nothing will read it.
 * @module
 */

import { isAsyncIterable, isIterable } from './_utils.js'
import { Channel } from './channel/bounded.js'
import { DONE, type Done, EMPTY, type Empty, type Inlet } from './channel/inlet.js'
import { Waiter } from './channel/waiter.js'
import { got, integer, ms, validateOptions } from './options/check.js'
import { MAX_CAPACITY } from './options/limits.js'

/**
 * The default number of items a feed holds before `push()` waits.
 *
 * @example
 * ```ts
 * import { DEFAULT_FEED_CAPACITY, feed } from 'stageline'
 * const roomy = feed<string>({ capacity: DEFAULT_FEED_CAPACITY * 4 }) // 256 items wait before push() does
 * roomy.end()
 * ```
 */
export const DEFAULT_FEED_CAPACITY = 64

/**
 * Options of {@link feed}.
 *
 * @example
 * ```ts
 * import { type FeedOptions, feed, mapStage, pipe } from 'stageline'
 * const options: FeedOptions = { capacity: 16, idleTimeout: 200 }
 * const inbox = feed<number>(options)
 * void inbox.push(1)
 * // no end() needed: the feed ends by itself 200 ms after the last push
 * console.log(await pipe(inbox, mapStage((n: number) => n + 1)).toArray()) // [ 2 ]
 * ```
 */
export interface FeedOptions {
  /**
   * How many pushed items may wait to be read before `push()` waits for room. `0` means every
   * push waits until a worker takes the item; `Infinity` never waits (memory grows with input).
   * @default 64
   */
  capacity?: number
  /**
   * End the feed by itself when nothing has been pushed for this many milliseconds (pipeframe's
   * stream timeout). The clock starts when a run starts reading the feed. Up to
   * {@link MAX_TIMER_MS}, or `Infinity` for none.
   * @default no idle timeout
   */
  idleTimeout?: number
}

const FEED_SCHEMA = {
  capacity: integer(0, MAX_CAPACITY, true),
  idleTimeout: ms({ infinity: true }),
}

/**
 * Rejections of `push()`: why an item was not accepted.
 *
 * @example
 * ```ts
 * import { FeedClosedError, feed } from 'stageline'
 * const inbox = feed<number>()
 * inbox.end()
 * await inbox.push(1).catch((err: unknown) => console.log(err instanceof FeedClosedError)) // true
 * ```
 */
export class FeedClosedError extends Error {
  override name = 'FeedClosedError'
}

/**
 * A bounded push source for a pipeline that is fed while it runs. It is an AsyncIterable, so it
 * can be read directly, but it is meant as a `pipe()` source. One feed feeds one run.
 *
 * @example
 * ```ts
 * import { feed, mapStage, pipe } from 'stageline'
 * const input = feed<number>({ capacity: 10 })
 * const run = pipe(input, mapStage((n: number) => n * 2)).start({ onResult: (n) => console.log(n) })
 * await input.push(1)              // resolves once accepted (waits while the feed is full)
 * await input.pushAll([2, 3])      // any iterable or async iterable, pulled lazily
 * input.end()                      // no more items: the run drains and finishes
 * await run.stop()
 * ```
 */
export class Feed<T> implements AsyncIterable<T> {
  private readonly ch: Channel<T>
  private ended = false
  private stopped: string | undefined
  private opened = false
  private readonly idleTimeout: number | undefined
  private idleTimer: ReturnType<typeof setTimeout> | undefined
  private lastPush = 0
  private readonly ctl = new AbortController()
  /** How the run reading this feed closed it: 'ended' (its input was ended gracefully) or 'stopped'. */
  private closedByRun: 'ended' | 'stopped' | undefined

  constructor(options?: FeedOptions) {
    const o = validateOptions('feed()', options, FEED_SCHEMA)
    const capacity = (o.capacity as number | undefined) ?? DEFAULT_FEED_CAPACITY
    const idle =
      o.idleTimeout === Number.POSITIVE_INFINITY ? undefined : (o.idleTimeout as number | undefined)
    this.ch = new Channel<T>(capacity)
    this.idleTimeout = idle
  }

  /** True once `end()` was called, the idle timeout fired, or the run reading it stopped. */
  get closed(): boolean {
    return this.ended || this.stopped !== undefined
  }

  /**
   * Aborts once the feed takes no more items: after `end()`, after the idle timeout, or when the
   * run reading it stops (a `break`, a later stage that stopped reading, `stop()`, a failure). Its
   * reason is the FeedClosedError a `push()` would now reject with. A producer can pass it on to
   * what it waits on, or check it before it makes the next item.
   *
   * @example
   * ```ts
   * import { mapStage, pipe, stage } from 'stageline'
   * const firstTwo = stage(async function* (xs: AsyncIterable<number>) {
   *   let k = 0
   *   for await (const x of xs) {
   *     yield x
   *     if (++k === 2) return
   *   }
   * })
   * const out = await pipe(async (bucket) => {
   *   // stops making items once the run stops reading, instead of pushing into a closed feed
   *   for (let i = 0; !bucket.signal.aborted; i++) await bucket.push(i).catch(() => {})
   * }, mapStage((n: number) => n * 10), firstTwo).toArray()
   * console.log(out) // [ 0, 10 ]
   * ```
   */
  get signal(): AbortSignal {
    return this.ctl.signal
  }

  /** Items accepted and waiting to be read. */
  get length(): number {
    return this.ch.length
  }

  /**
   * Pushes one item; resolves once the feed has accepted it. Rejects with a FeedClosedError
   * after `end()`, or once the run reading the feed has failed or stopped.
   */
  push(item: T): Promise<void> {
    if (this.stopped !== undefined) return Promise.reject(new FeedClosedError(this.stopped))
    if (this.ended)
      return Promise.reject(new FeedClosedError('push() after end(): the feed takes no more items'))
    this.lastPush = performance.now()
    if (this.ch.offer(item)) return Promise.resolve()
    return this.parkedPush(item)
  }

  private async parkedPush(item: T): Promise<void> {
    const w = new Waiter()
    await this.ch.put(w, item)
    if (w.item === DONE) {
      throw new FeedClosedError(
        this.stopped ?? 'the run reading this feed stopped before the item was accepted',
      )
    }
  }

  /** Pushes every item of an iterable or async iterable, pulling the next only once the last was accepted. */
  async pushAll(items: Iterable<T> | AsyncIterable<T>): Promise<void> {
    if (isAsyncIterable(items)) {
      for await (const x of items) await this.push(x)
    } else if (isIterable(items)) {
      for (const x of items) {
        // an item the feed accepts at once costs no tick; only a full feed is waited on
        if (this.stopped === undefined && !this.ended && this.ch.offer(x)) {
          this.lastPush = performance.now()
          continue
        }
        await this.push(x)
      }
    } else {
      throw new TypeError(`feed.pushAll(): expected an Iterable or AsyncIterable, got ${got(items)}`)
    }
  }

  /** No more items: once what was accepted (and pushes still waiting) has been read, the input ends. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.clearIdle()
    this.ch.close()
    if (this.stopped === undefined) {
      this.ctl.abort(new FeedClosedError('the feed was ended: it takes no more items'))
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    const inlet = this.open(() => {})
    const w = new Waiter()
    return {
      next: async () => {
        let x = inlet.poll(w)
        if (x === EMPTY) {
          await inlet.wait(w)
          x = w.item as T | Done
        }
        return x === DONE ? { value: undefined, done: true } : { value: x as T, done: false }
      },
      return: async () => {
        inlet.abort()
        return { value: undefined, done: true }
      },
    }
  }

  /** @internal the inlet a run reads; a feed can be opened once */
  open(_onError: (err: unknown) => void): Inlet<T> {
    if (this.opened) {
      throw new TypeError(
        'a feed can feed one run only, and this one is already being read; make a new feed() per run',
      )
    }
    this.opened = true
    this.armIdle()
    const ch = this.ch
    return {
      get taken() {
        return ch.taken
      },
      poll: (w: Waiter): T | Empty | Done => this.ch.poll(w),
      wait: (w: Waiter) => this.ch.wait(w),
      cancel: (w: Waiter) => this.ch.cancel(w),
      abort: () => {
        this.closedByRun = 'stopped'
        this.stop('the run reading this feed has stopped (it failed, was aborted or broke off)')
      },
      endInput: () => {
        this.closedByRun ??= 'ended'
        this.end()
      },
    }
  }

  /**
   * @internal Whether the failure `err` of the function that fills this feed (a source function's
   * bucket) comes from the run closing the feed on purpose, so that the run ignores it: anything,
   * once the run stopped reading (nobody reads its items); its push() rejecting, once the run ended
   * its input (stop()).
   */
  closedOnPurpose(err: unknown): boolean {
    if (this.closedByRun === 'stopped') return true
    if (this.closedByRun !== 'ended') return false
    try {
      return err instanceof FeedClosedError
    } catch {
      return false
    }
  }

  private stop(why: string): void {
    if (this.stopped !== undefined) return
    this.stopped = why
    this.clearIdle()
    this.ch.abort()
    if (!this.ctl.signal.aborted) this.ctl.abort(new FeedClosedError(why))
  }

  private armIdle(): void {
    if (this.idleTimeout === undefined || this.ended) return
    this.lastPush = performance.now()
    const check = (): void => {
      this.idleTimer = undefined
      if (this.closed) return
      const quiet = performance.now() - this.lastPush
      if (quiet >= this.idleTimeout!) this.end()
      else this.idleTimer = setTimeout(check, this.idleTimeout! - quiet)
    }
    this.idleTimer = setTimeout(check, this.idleTimeout)
  }

  private clearIdle(): void {
    if (this.idleTimer !== undefined) {
      clearTimeout(this.idleTimer)
      this.idleTimer = undefined
    }
  }
}

/**
 * Makes a {@link Feed}: a bounded push source for a pipeline fed while it runs.
 *
 * @example
 * ```ts
 * import { feed, pipe, mapStage } from 'stageline'
 * const urls = feed<string>({ capacity: 100, idleTimeout: 5_000 })
 * const run = pipe(urls, mapStage(async (u: string) => u.length, { workers: 8 })).start()
 * await urls.push('https://example.org/')
 * urls.end()
 * await run.stop()
 * ```
 */
export function feed<T>(options?: FeedOptions): Feed<T> {
  return new Feed<T>(options)
}

/** Whether `x` is a Feed (a source that is opened rather than iterated). */
export function isFeed(x: unknown): x is Feed<unknown> {
  return x instanceof Feed
}

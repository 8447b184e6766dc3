/**
 * Instruments the specs assert through instead of the clock: a peak-concurrency counter, sources
 * that count what is read from them and whether they were closed, a recorder of unhandled
 * rejections, a counter of abort listeners, deferreds and microtask ticks.
 */
import { getEventListeners } from 'node:events'
import { afterEach, beforeEach, expect } from 'vitest'

/** Counts how many callers are inside a section at once, and the most there ever were. */
export class Peak {
  current = 0
  max = 0

  enter(): void {
    this.current++
    if (this.current > this.max) this.max = this.current
  }

  leave(): void {
    this.current--
  }

  /** Runs `fn` inside the section. */
  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    this.enter()
    try {
      return await fn()
    } finally {
      this.leave()
    }
  }
}

/** A promise with its resolve and reject functions, settled by the spec, never by a timer. */
export interface Deferred<T> {
  promise: Promise<T>
  resolve(value: T): void
  reject(reason: unknown): void
  settled: boolean
}

export function defer<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (reason: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  const d: Deferred<T> = {
    promise,
    settled: false,
    resolve(value) {
      d.settled = true
      resolve(value)
    },
    reject(reason) {
      d.settled = true
      reject(reason)
    },
  }
  return d
}

/** Lets `n` microtask turns pass (jitter without timers). */
export async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await Promise.resolve()
}

/** Lets the event loop turn `n` times (setImmediate), so every pending microtask and callback runs. */
export async function flush(n = 2): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/**
 * `p`, or a rejection naming `what` and the property plan if it has not settled within `ms`: a
 * property test fails on a hang instead of timing out, and fast-check shrinks the plan.
 */
export function settlesWithin<T>(p: Promise<T>, what: string, plan: unknown, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle: ${JSON.stringify(plan)}`)), ms)
  })
  return Promise.race([p, hang]).finally(() => clearTimeout(timer))
}

/** What a spied source saw. */
export interface SourceSpy {
  /** Iterators made (`[Symbol.iterator]()` / `[Symbol.asyncIterator]()` calls). */
  opened: number
  /** Items handed out (successful `next()` calls with `done: false`). */
  reads: number
  /** `next()` calls, including the one that said done or threw. */
  nexts: number
  /** `return()` calls. */
  returns: number
  /** Times the generator's `finally` ran (1 once it is closed, exhausted or has thrown). */
  finalized: number
  /** The source said `done: true`. */
  exhausted: boolean
  /** `next()` was called after `return()` or after the end. */
  nextAfterEnd: number
  /** The source threw its planted error (see `failAt`). */
  threw: boolean
}

export interface SpiedSourceOptions {
  /** Throw `error` instead of yielding item `failAt` (0-based). */
  failAt?: number
  error?: unknown
  /** Called before each item is handed out, with its index (e.g. to check read-ahead). */
  onRead?: (index: number) => void
  /** Microtask ticks to wait before each item (async sources only). */
  ticks?: number | ((index: number) => number)
  /** Wait for this before handing out item `index` (async sources only). */
  gate?: (index: number) => Promise<void> | undefined
}

function newSpy(): SourceSpy {
  return {
    opened: 0,
    reads: 0,
    nexts: 0,
    returns: 0,
    finalized: 0,
    exhausted: false,
    nextAfterEnd: 0,
    threw: false,
  }
}

function range(items: readonly unknown[] | number): readonly unknown[] {
  return typeof items === 'number' ? Array.from({ length: items }, (_, i) => i) : items
}

/**
 * A sync source over `items` (or 0..n-1) that counts reads, `return()` calls and its `finally`.
 * Iterable once per `[Symbol.iterator]()` call; every iteration shares the one spy.
 */
export function spiedSyncSource<T = number>(
  items: readonly T[] | number,
  options: SpiedSourceOptions = {},
): { source: Iterable<T>; spy: SourceSpy } {
  const spy = newSpy()
  const list = range(items) as readonly T[]
  function* gen(): Generator<T> {
    try {
      for (let i = 0; i < list.length; i++) {
        if (i === options.failAt) {
          spy.threw = true
          throw options.error ?? new Error(`source failed at ${i}`)
        }
        options.onRead?.(i)
        spy.reads++
        yield list[i]!
      }
      spy.exhausted = true
    } finally {
      spy.finalized++
    }
  }
  const source: Iterable<T> = {
    [Symbol.iterator](): Iterator<T> {
      spy.opened++
      const it = gen()
      let ended = false
      return {
        next(): IteratorResult<T> {
          spy.nexts++
          if (ended) spy.nextAfterEnd++
          try {
            const r = it.next()
            if (r.done) ended = true
            return r
          } catch (err) {
            ended = true
            throw err
          }
        },
        return(value?: unknown): IteratorResult<T> {
          spy.returns++
          ended = true
          return it.return(value as T)
        },
      }
    },
  }
  return { source, spy }
}

/** The async counterpart of {@link spiedSyncSource}, with optional jitter (microtask ticks) and gates. */
export function spiedAsyncSource<T = number>(
  items: readonly T[] | number,
  options: SpiedSourceOptions = {},
): { source: AsyncIterable<T>; spy: SourceSpy } {
  const spy = newSpy()
  const list = range(items) as readonly T[]
  async function* gen(): AsyncGenerator<T> {
    try {
      for (let i = 0; i < list.length; i++) {
        const t = typeof options.ticks === 'function' ? options.ticks(i) : (options.ticks ?? 0)
        if (t > 0) await ticks(t)
        const gate = options.gate?.(i)
        if (gate !== undefined) await gate
        if (i === options.failAt) {
          spy.threw = true
          throw options.error ?? new Error(`source failed at ${i}`)
        }
        options.onRead?.(i)
        spy.reads++
        yield list[i]!
      }
      spy.exhausted = true
    } finally {
      spy.finalized++
    }
  }
  const source: AsyncIterable<T> = {
    [Symbol.asyncIterator](): AsyncIterator<T> {
      spy.opened++
      const it = gen()
      let ended = false
      return {
        async next(): Promise<IteratorResult<T>> {
          spy.nexts++
          if (ended) spy.nextAfterEnd++
          try {
            const r = await it.next()
            if (r.done) ended = true
            return r
          } catch (err) {
            ended = true
            throw err
          }
        },
        return(value?: unknown): Promise<IteratorResult<T>> {
          spy.returns++
          ended = true
          return it.return(value as T)
        },
      }
    },
  }
  return { source, spy }
}

/** How many `abort` listeners are registered on `signal` right now. */
export function abortListeners(signal: AbortSignal): number {
  return getEventListeners(signal, 'abort').length
}

/**
 * Records every process `unhandledRejection` during each test of the calling file, and fails the
 * test if there was one. Call once at the top level of a spec file. After each test it lets the
 * event loop turn a few times, so a rejection left behind by the test is seen before the check.
 */
export function recordUnhandledRejections(): { readonly events: unknown[] } {
  const state = { events: [] as unknown[] }
  const onUnhandled = (reason: unknown): void => {
    state.events.push(reason)
  }
  beforeEach(() => {
    state.events = []
    process.on('unhandledRejection', onUnhandled)
  })
  afterEach(async () => {
    await flush(3)
    process.off('unhandledRejection', onUnhandled)
    expect(state.events, 'unhandled rejections during the test').toEqual([])
  })
  return {
    get events() {
      return state.events
    },
  }
}

/** 0, 1, ..., n-1. */
export function numbers(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}

/** Sorts numbers ascending, for comparing outputs as multisets. */
export function sorted(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b)
}

/**
 * Resolves to what `p` rejects with, and fails (rejects) if `p` resolves: an error test built on it
 * cannot pass when nothing throws.
 */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  let value: unknown
  try {
    value = await p
  } catch (err) {
    return err
  }
  throw new Error(`expected a rejection, but the promise resolved to ${String(value)}`)
}

/**
 * `p`, or a rejection with the signal's reason if it aborts first (a worker that honours its
 * signal while it waits). Unlike a race with `whenAborted()`, it removes its listener once `p`
 * settles, as an API given the signal should.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

/** A promise that rejects with the signal's reason once it aborts (a worker that honours its signal). */
export function whenAborted(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason)
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
}

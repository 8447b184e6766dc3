/**
 * Ready-made stages and sources: batch(), filter(), flatMap(), merge().
 * @module
 */
import {
  closeQuietly,
  isAsyncIterable,
  isIterable,
  isThenable,
  iteratorResult,
  openIterator,
} from './_utils.js'
import { send } from './fusion.js'
import type { Group, StageContext } from './group.js'
import {
  checkFunction,
  checkInteger,
  checkMs,
  checkObject,
  DEFAULT_QSIZE,
  got,
  MAX_CAPACITY,
  resolveStageOptions,
  type StageOptions,
} from './options.js'
import { Channel, DONE, EMPTY, senderWaiter, Waiter } from './queue.js'
import { skip } from './skip.js'
import { type MapStageOptions, mapStage, Stage } from './stage.js'
import { dueForTurn, nextTurn } from './workers.js'

/**
 * Options of {@link batch}.
 *
 * @example
 * ```ts
 * import { type BatchOptions, batch, pipe } from 'stageline'
 * const options: BatchOptions = { maxWait: 50 } // a partial batch waits at most 50 ms for more
 * console.log(await pipe([1, 2, 3, 4, 5], batch<number>(2, options)).toArray()) // [ [ 1, 2 ], [ 3, 4 ], [ 5 ] ]
 * ```
 */
export interface BatchOptions {
  /**
   * Milliseconds a partial batch may wait, from its first item, before it is passed on anyway.
   * `0` passes on whatever is ready without waiting. Up to {@link MAX_TIMER_MS}, or `Infinity`.
   * @default Infinity (a batch goes on only when full, or at the end of the input)
   */
  maxWait?: number
  /** Capacity of the stage's output queue, in batches. @default 64 */
  qsize?: number
  /** The stage's name. @default `batch` */
  name?: string
}

/**
 * Groups items into arrays of `size` (the last one may be shorter), passing a partial batch on
 * after `maxWait` ms (paipa's TimedChunk). One worker, so batches keep input order.
 *
 * @example
 * ```ts
 * import { batch, mapStage, pipe } from 'stageline'
 * const insertMany = mapStage(async (rows: number[]) => rows.length)
 * await pipe([1, 2, 3, 4, 5], batch<number>(2, { maxWait: 100 }), insertMany).toArray() // [2, 2, 1]
 * ```
 */
export function batch<T>(size: number, options?: BatchOptions): Stage<T, T[]> {
  checkInteger('batch()', 'size', size, 1, false, MAX_CAPACITY)
  let maxWait = Number.POSITIVE_INFINITY
  if (options !== undefined) {
    checkObject('batch()', 'options', options)
    if (options.maxWait !== undefined)
      maxWait = checkMs('batch()', 'maxWait', options.maxWait, { infinity: true })
  }
  const { maxWait: _ignored, ...common } = options ?? {}
  const resolved = resolveStageOptions(
    'batch()',
    { workers: 1, qsize: DEFAULT_QSIZE, ordered: false, name: 'batch' },
    common,
  )
  return new Stage<T, T[]>(
    'batch',
    () => ({ ordered: false, launch: (g) => g.spawn((g, i) => batchLoop(g, i, size, maxWait)) }),
    {
      ...resolved,
      workers: 1,
    },
  )
}

async function batchLoop(g: Group, worker: number, size: number, maxWait: number): Promise<void> {
  const input = g.input
  const w = senderWaiter()
  let buf: unknown[] = []
  let firstAt = 0
  const flush = async (): Promise<boolean> => {
    const b = buf
    buf = []
    g.emitted++
    const room = send(g, w, b)
    if (room !== undefined) await room
    return !g.halted
  }
  try {
    for (;;) {
      let x = input.poll(w)
      if (x === EMPTY) {
        if (buf.length > 0 && maxWait === 0) {
          if (!(await flush())) break
          continue
        }
        if (buf.length > 0 && maxWait !== Number.POSITIVE_INFINITY) {
          // wait for an item or the batch's deadline, whichever comes first
          const parked = input.wait(w)
          const timer = setTimeout(
            () => {
              if (input.cancel(w)) {
                w.item = EMPTY
                w.wake()
              }
            },
            Math.max(0, firstAt + maxWait - performance.now()),
          )
          await parked
          clearTimeout(timer)
        } else {
          await input.wait(w)
        }
        x = w.item
        w.item = undefined
        if (g.halted) break
        if (x === EMPTY) {
          if (!(await flush())) break
          continue
        }
      }
      if (x === DONE) {
        if (buf.length > 0) await flush()
        break
      }
      g.taken++
      if (buf.length === 0) firstAt = performance.now()
      buf.push(x)
      if (buf.length === size && !(await flush())) break
    }
  } catch (err) {
    g.fail(err, worker, undefined)
    return
  }
  g.exit()
}

/**
 * Keeps the items for which `predicate` returns true (or a promise of true); the others are
 * counted as skipped. Takes the options of mapStage (workers, ordered, policies).
 *
 * @example
 * ```ts
 * import { filter, pipe } from 'stageline'
 * const isEven = (n: number) => n % 2 === 0
 * await pipe([1, 2, 3, 4], filter(isEven)).toArray() // [2, 4]
 * ```
 */
export function filter<T, U extends T>(
  predicate: (item: T, ctx: StageContext) => item is U,
  options?: MapStageOptions<T>,
): Stage<T, U>
export function filter<T>(
  predicate: (item: T, ctx: StageContext) => boolean | PromiseLike<boolean>,
  options?: MapStageOptions<T>,
): Stage<T, T>
export function filter<T>(
  predicate: (item: T, ctx: StageContext) => boolean | PromiseLike<boolean>,
  options?: MapStageOptions<T>,
): Stage<T, T> {
  checkFunction('filter()', 'predicate', predicate)
  const name = options?.name ?? (predicate.name || 'filter')
  const keep = (item: T, ctx: StageContext): T | typeof skip | PromiseLike<T | typeof skip> => {
    const ok = predicate(item, ctx)
    if (isThenable(ok)) return ok.then((yes) => (yes ? item : skip))
    return ok ? item : skip
  }
  return mapStage(keep, { ...options, name }) as Stage<T, T>
}

/**
 * Maps each item to any number of outputs: `fn` returns an array, an Iterable or an
 * AsyncIterable (or a promise of one), and every element goes on. Outputs of one item stay
 * together and in order; `ordered: true` with several workers is refused.
 *
 * @example
 * ```ts
 * import { flatMap, pipe } from 'stageline'
 * const words = flatMap((line: string) => line.split(' '))
 * await pipe(['a b', 'c'], words).toArray() // ['a', 'b', 'c']
 * ```
 */
export function flatMap<I, O>(
  fn: (
    item: I,
    ctx: StageContext,
  ) => Iterable<O> | AsyncIterable<O> | PromiseLike<Iterable<O> | AsyncIterable<O>>,
  options?: StageOptions,
): Stage<I, O> {
  checkFunction('flatMap()', 'fn', fn)
  const resolved = resolveStageOptions(
    'flatMap()',
    { workers: 1, qsize: DEFAULT_QSIZE, ordered: false, name: undefined },
    options,
  )
  if (resolved.ordered && resolved.workers > 1) {
    throw new TypeError(
      `flatMap(): \`ordered: true\` needs \`workers: 1\` (got workers: ${resolved.workers}); with one worker outputs keep input order anyway`,
    )
  }
  const f = fn as (item: unknown, ctx: StageContext) => unknown
  return new Stage<I, O>(
    'flatMap',
    () => ({ ordered: false, launch: (g) => g.spawn((g, i) => flatMapLoop(g, i, f)) }),
    {
      ...resolved,
      ordered: false,
      name: resolved.name ?? (fn.name || undefined),
    },
  )
}

async function flatMapLoop(
  g: Group,
  worker: number,
  fn: (item: unknown, ctx: StageContext) => unknown,
): Promise<void> {
  const input = g.input
  const ctx = g.context(worker)
  const w = senderWaiter()
  let x: unknown
  let holding = false
  let it: Iterator<unknown> | AsyncIterator<unknown> | undefined
  let n = 0
  try {
    outer: for (;;) {
      x = input.poll(w)
      if (x === EMPTY) {
        await input.wait(w)
        x = w.item
        w.item = undefined
        if (g.halted) break
      }
      if (x === DONE) break
      g.taken++
      g.busy++
      holding = true
      let many = fn(x, ctx)
      if (isThenable(many)) {
        many = await many
        if (g.halted) break
      }
      if (Array.isArray(many)) {
        for (const y of many) {
          g.emitted++
          const room = send(g, w, y)
          if (room !== undefined) {
            await room
            if (g.halted) break outer
          }
        }
      } else if (isAsyncIterable(many) || isIterable(many)) {
        it = openIterator(many as Iterable<unknown>, "flatMap()'s function's result: its").it
        for (;;) {
          let r = it.next()
          if (isThenable(r)) {
            r = await r
            if (g.halted) break outer
          }
          if (iteratorResult(r).done) break
          g.emitted++
          const room = send(g, w, r.value)
          if (room !== undefined) {
            await room
            if (g.halted) break outer
          }
        }
        it = undefined
      } else {
        throw new TypeError(
          `flatMap(): the function must return an array, an Iterable or an AsyncIterable, got ${got(many)}`,
        )
      }
      holding = false
      g.busy--
      if (++n === 1024) {
        n = 0
        if (dueForTurn()) {
          await nextTurn()
          if (g.halted) break
        }
      }
    }
  } catch (err) {
    if (holding) g.busy-- // the item's call threw, or the run stopped while it was awaited
    closeQuietly(it)
    g.fail(err, worker, holding ? x : undefined)
    return
  }
  if (holding) g.busy--
  closeQuietly(it)
  g.exit()
}

/**
 * One source made of several, read concurrently and on demand (pypeln's concat): items come out
 * as each source yields them. Ends when all have ended; fails as soon as one fails, closing the
 * others; closing the merged iterator closes them all.
 *
 * @example
 * ```ts
 * import { merge, mapStage, pipe } from 'stageline'
 * async function* remote() { yield 'r1'; yield 'r2' }
 * await pipe(merge(['l1', 'l2'], remote()), mapStage((s: string) => s.toUpperCase())).toArray()
 * // the four items, interleaved
 * ```
 */
export function merge<T>(...sources: (Iterable<T> | AsyncIterable<T>)[]): AsyncIterable<T> {
  for (let i = 0; i < sources.length; i++) {
    if (!isIterable(sources[i]) && !isAsyncIterable(sources[i])) {
      throw new TypeError(
        `merge(): expected source ${i + 1} to be an Iterable or AsyncIterable, got ${got(sources[i])}`,
      )
    }
  }
  return { [Symbol.asyncIterator]: () => new MergeIterator<T>(sources) }
}

class MergeIterator<T> implements AsyncIterator<T> {
  private readonly ch = new Channel<T>(0)
  private readonly w = new Waiter()
  private readonly its: (Iterator<T> | AsyncIterator<T>)[] = []
  private started = false
  private stopped = false
  private live = 0
  private error: { err: unknown } | undefined

  constructor(private readonly sources: (Iterable<T> | AsyncIterable<T>)[]) {}

  async next(): Promise<IteratorResult<T>> {
    if (!this.started) this.start()
    let x = this.ch.poll(this.w)
    if (x === EMPTY) {
      await this.ch.wait(this.w)
      x = this.w.item as T | typeof DONE
      this.w.item = undefined
    }
    if (x === DONE) {
      if (this.error !== undefined) {
        const { err } = this.error
        this.error = undefined
        throw err
      }
      return { value: undefined, done: true }
    }
    return { value: x as T, done: false }
  }

  async return(): Promise<IteratorResult<T>> {
    this.stop()
    return { value: undefined, done: true }
  }

  private start(): void {
    this.started = true
    this.live = this.sources.length
    if (this.live === 0) this.ch.close()
    for (let i = 0; i < this.sources.length; i++) {
      const { it } = openIterator(this.sources[i]!, `merge()'s source ${i + 1}: its`)
      this.its.push(it as Iterator<T> | AsyncIterator<T>)
      void this.pump(it as Iterator<T> | AsyncIterator<T>)
    }
  }

  private stop(): void {
    if (this.stopped) return
    this.stopped = true
    this.ch.abort()
    for (const it of this.its) closeQuietly(it)
  }

  private async pump(it: Iterator<T> | AsyncIterator<T>): Promise<void> {
    const w = new Waiter()
    try {
      for (;;) {
        let r = it.next()
        if (isThenable(r)) r = await r
        if (this.stopped) return
        if (iteratorResult(r).done) break
        if (!this.ch.offer(r.value)) {
          await this.ch.put(w, r.value)
          if (this.stopped) return
        }
      }
    } catch (err) {
      if (this.stopped) return
      this.error = { err }
      this.stopped = true
      for (const other of this.its) if (other !== it) closeQuietly(other)
      this.ch.abort()
      return
    }
    if (--this.live === 0) this.ch.close()
  }
}

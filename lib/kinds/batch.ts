/**
 * `batch()`: a kind of stage that groups items into arrays of a size, passing a partial batch on
 * after a wait. Written against the kind contract alone (lib/kinds/kind.ts).
 * @module
 */

import { checkInteger, integer, ms, nonEmptyString, validateOptions } from '../options/check.js'
import { DEFAULT_QSIZE, MAX_CAPACITY } from '../options/limits.js'
import type { ResolvedStageOptions } from '../options/stage.js'
import { Stage } from '../stage.js'
import { DONE, EMPTY, type Lane, type StageKind } from './kind.js'

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
 * The resolved options of a batch stage, as `stage.options` shows them.
 *
 * @example
 * ```ts
 * import { batch, type ResolvedBatchOptions } from 'stageline'
 * const o: Readonly<ResolvedBatchOptions> = batch<number>(100, { maxWait: 50 }).options
 * console.log(o.size, o.maxWait, o.name) // 100 50 batch
 * ```
 */
export interface ResolvedBatchOptions extends ResolvedStageOptions {
  /** Items per batch. */
  size: number
  maxWait: number
}

const SCHEMA = {
  maxWait: ms({ infinity: true }),
  qsize: integer(0, MAX_CAPACITY, true),
  name: nonEmptyString,
}

const BATCH: StageKind<ResolvedBatchOptions> = {
  factory: 'batch',
  resolve: (where, base, options) => ({ ...base, ...validateOptions(where, options, SCHEMA) }),
  plan: (o) => ({
    workers: 1,
    bound: o.size,
    qsize: o.qsize,
    ordered: false,
    start: (port) => port.spawn(1, (lane) => batchLoop(lane, o.size, o.maxWait)),
  }),
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
export function batch<T>(
  size: number,
  options?: BatchOptions,
): Stage<T, T[], BatchOptions, ResolvedBatchOptions> {
  checkInteger('batch()', 'size', size, 1, false, MAX_CAPACITY)
  const base: ResolvedBatchOptions = {
    workers: 1,
    qsize: DEFAULT_QSIZE,
    ordered: false,
    name: 'batch',
    size,
    maxWait: Number.POSITIVE_INFINITY,
  }
  return new Stage(BATCH, BATCH.resolve('batch()', base, options))
}

async function batchLoop(lane: Lane, size: number, maxWait: number): Promise<void> {
  let buf: unknown[] = []
  let firstAt = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  // the deadline of a partial batch takes back the lane's wait: it then receives EMPTY
  const onDeadline = (): void => {
    timer = undefined
    lane.cancel()
  }
  const flush = (): Promise<void> | undefined => {
    const b = buf
    buf = []
    return lane.emit(b)
  }
  try {
    for (;;) {
      let x = lane.take()
      if (x === EMPTY) {
        if (buf.length > 0 && maxWait === 0) {
          const room = flush()
          if (room !== undefined) await room
          continue
        }
        if (buf.length > 0 && maxWait !== Number.POSITIVE_INFINITY) {
          // wait for an item or the batch's deadline, whichever comes first
          timer = setTimeout(onDeadline, Math.max(0, firstAt + maxWait - performance.now()))
        }
        await lane.wait()
        if (timer !== undefined) {
          clearTimeout(timer)
          timer = undefined
        }
        x = lane.received()
        if (x === EMPTY) {
          const room = flush()
          if (room !== undefined) await room
          continue
        }
      }
      if (x === DONE) {
        if (buf.length > 0 && !lane.port.halted) {
          const room = flush()
          if (room !== undefined) await room
        }
        break
      }
      if (buf.length === 0) firstAt = performance.now()
      buf.push(x)
      if (buf.length === size) {
        const room = flush()
        if (room !== undefined) await room
      }
    }
  } catch (err) {
    lane.fail(err, undefined)
    return
  } finally {
    if (timer !== undefined) clearTimeout(timer)
  }
  lane.exit()
}

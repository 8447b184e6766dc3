/**
 * The error classes of stageline. Each has a stable `name`; the original error is always kept
 * as `cause`, never flattened into a string.
 * @module
 */

/**
 * Renders a thrown value for a message: an Error as `Name: message`, anything else as `String(value)`.
 *
 * @example
 * ```ts
 * import { describeCause } from 'stageline'
 * console.log(describeCause(new RangeError('too big'))) // RangeError: too big
 * console.log(describeCause(404)) // 404
 * ```
 */
export function describeCause(cause: unknown): string {
  if (cause instanceof Error) return `${cause.name}: ${cause.message}`
  try {
    return String(cause)
  } catch {
    return Object.prototype.toString.call(cause)
  }
}

/**
 * The error a run rejects with when a stage function or the source fails.
 *
 * `cause` is the value that was thrown (kept as it is, Error or not), `stage` the stage's name
 * (`"source"` for the source), `worker` the 0-based worker index, and `item` the input item a map
 * function failed on (`undefined` where it is not known, as in a generator stage).
 *
 * @example
 * ```ts
 * import { pipe, mapStage, TaskException } from 'stageline'
 * try {
 *   await pipe([1, 2, 3], mapStage(function check(n: number) {
 *     if (n === 2) throw new Error('two')
 *     return n
 *   })).execute()
 * } catch (err) {
 *   if (err instanceof TaskException) console.log(err.stage, err.item, err.message)
 *   // check 2 The task "check-0" raised Error: two
 * }
 * ```
 */
export class TaskException extends Error {
  override name = 'TaskException'
  /** The name of the stage that failed, or `"source"`. */
  readonly stage: string
  /** The 0-based index of the worker that failed (0 for the source). */
  readonly worker: number
  /** The input item a map function failed on; `undefined` where unknown. */
  readonly item: unknown

  constructor(cause: unknown, stage: string, worker: number, item?: unknown) {
    super(`The task "${stage}-${worker}" raised ${describeCause(cause)}`, { cause })
    this.stage = stage
    this.worker = worker
    this.item = item
  }
}

/**
 * The abort reason a stage's `ctx.signal` carries when the consumer stopped the run early
 * (a `break` out of `for await`, or `return()` on the results iterator), or when a later stage
 * stopped reading its input.
 *
 * @example
 * ```ts
 * import { pipe, mapStage, RunStopped } from 'stageline'
 * const seen: unknown[] = []
 * const slow = mapStage(async (n: number, { signal }) => {
 *   signal.addEventListener('abort', () => seen.push(signal.reason))
 *   return n
 * })
 * for await (const n of pipe([1, 2, 3], slow)) break
 * // seen[0] instanceof RunStopped
 * ```
 */
export class RunStopped extends Error {
  override name = 'RunStopped'
  constructor(message = 'the run was stopped before its input was exhausted') {
    super(message)
  }
}

/**
 * Thrown into a map function's `ctx.signal` and raised as the item's error when a per-item
 * `timeout` expires.
 *
 * @example
 * ```ts
 * import { TimeoutError } from 'stageline'
 * const err = new TimeoutError('fetch', 500)
 * // err.message === 'stage "fetch" took longer than 500 ms on an item'
 * ```
 */
export class TimeoutError extends Error {
  override name = 'TimeoutError'
  constructor(
    readonly stage: string,
    readonly ms: number,
  ) {
    super(`stage "${stage}" took longer than ${ms} ms on an item`)
  }
}

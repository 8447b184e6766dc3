/**
 * The error classes of stageline. Each has a stable `name`; the original error is always kept
 * as `cause`, never flattened into a string.
 * @module
 */

/**
 * Renders a thrown value for a message: an Error as `Name: message`, anything else as `String(value)`.
 * It never throws: a value whose `name`, `message` or string conversion throws when read (a hostile
 * getter, a revoked Proxy) is described by its constructor's name, or as a value that could not
 * be described.
 *
 * @example
 * ```ts
 * import { describeCause } from 'stageline'
 * console.log(describeCause(new RangeError('too big'))) // RangeError: too big
 * console.log(describeCause(404)) // 404
 * const hostile = new Error('x')
 * Object.defineProperty(hostile, 'message', { get() { throw new Error('no') } })
 * console.log(describeCause(hostile)) // Error (describing it threw)
 * ```
 */
export function describeCause(cause: unknown): string {
  let isError: boolean
  try {
    isError = cause instanceof Error
  } catch {
    return undescribable(cause) // a Proxy whose prototype lookup throws
  }
  if (isError) {
    try {
      const e = cause as Error
      return `${String(e.name)}: ${String(e.message)}`
    } catch {
      return undescribable(cause)
    }
  }
  try {
    return String(cause)
  } catch {
    // an object whose toString() throws: its tag, `[object Object]`
  }
  try {
    return Object.prototype.toString.call(cause)
  } catch {
    return undescribable(cause)
  }
}

/** What describeCause says of a value it could not read: its constructor's name where that can be read. */
function undescribable(cause: unknown): string {
  try {
    const proto: unknown = Object.getPrototypeOf(cause)
    const C =
      proto === null || proto === undefined
        ? undefined
        : Object.getOwnPropertyDescriptor(proto, 'constructor')?.value
    const name = typeof C === 'function' ? Object.getOwnPropertyDescriptor(C, 'name')?.value : undefined
    if (typeof name === 'string' && name !== '') return `${name} (describing it threw)`
  } catch {
    // a Proxy whose traps throw: nothing about it can be read
  }
  return 'a value that could not be described'
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

/**
 * What an item's failure leads to under a stage's policies: another try after `retryDelay`,
 * skipping it through `onError`, or the run's failure. One implementation for map and thread
 * stages, so that both judge a failure, a delay and a callback the same way.
 * @module
 */
import { isThenable } from '../_utils.js'
import { describeCause } from '../errors.js'
import { got } from '../options/check.js'
import { MAX_TIMER_MS } from '../options/limits.js'

/** The failure policies of a stage. */
export interface FailurePolicy {
  /** Tries after the first. */
  readonly retries: number
  readonly retryDelay: number | ((retry: number, error: unknown) => number)
  /** Set with `errors: 'skip'`: called with every item skipped. */
  readonly onError: ((error: unknown, item: any, ctx: any) => unknown) | undefined
}

/**
 * The milliseconds to wait before retry `retry` (1 for the first) of an item that failed with
 * `itemError`: `retryDelay` itself when it is a number (checked when the stage was built), or what
 * the function returns for `(retry, itemError)`. Where the function fails, this throws the error
 * the run is to fail with (on the item), and the item's own error is kept in it:
 * - the function throws: an AggregateError of `[itemError, delayError]`, whose message says that
 *   `retryDelay` threw deciding the wait before retry `retry`;
 * - it returns anything but a number of milliseconds from 0 to MAX_TIMER_MS (NaN, a negative
 *   number, Infinity, more than a timer can wait, a string): a RangeError, or a TypeError for a
 *   value that is not a number, naming what it returned and the range, with `itemError` as its
 *   `cause`.
 *
 * `where` starts the messages: `mapStage "fetch"`, `threadStage "render"`.
 */
export function retryDelayOf(
  retryDelay: FailurePolicy['retryDelay'],
  retry: number,
  itemError: unknown,
  where: string,
): number {
  if (typeof retryDelay !== 'function') return retryDelay
  let d: unknown
  try {
    d = retryDelay(retry, itemError)
  } catch (delayError) {
    throw new AggregateError(
      [itemError, delayError],
      `${where}: \`retryDelay\` threw deciding the wait before retry ${retry}: ${describeCause(delayError)}`,
    )
  }
  if (typeof d === 'number' && d >= 0 && d <= MAX_TIMER_MS) return d
  const Kind = typeof d === 'number' ? RangeError : TypeError
  throw new Kind(
    `${where}: expected \`retryDelay\` to return a number of milliseconds from 0 to ${MAX_TIMER_MS} (about 24.8 days, the longest a timer can wait) before retry ${retry}, got ${got(d)}`,
    { cause: itemError },
  )
}

/**
 * After try `attempt` (0 for the first) of an item failed with `err`: the milliseconds to wait
 * before its next try, or -1 when it has no try left. Throws as `retryDelayOf` does.
 */
export function nextTry(p: FailurePolicy, attempt: number, err: unknown, where: string): number {
  if (attempt >= p.retries) return -1
  return retryDelayOf(p.retryDelay, attempt + 1, err, where)
}

/**
 * Skips a failed item through `onError` (the policy has one): returns a promise when `onError`
 * does, so that the item counts as skipped once `onError` has seen it. Throws, or rejects, with
 * what `onError` throws or rejects with: the run then fails with that.
 */
export function skipFailed(
  p: FailurePolicy,
  err: unknown,
  item: unknown,
  ctx: unknown,
): Promise<void> | undefined {
  const r = p.onError!(err, item, ctx) as unknown
  if (isThenable(r)) return Promise.resolve(r).then(() => {})
  return undefined
}

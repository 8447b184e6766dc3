/**
 * `rateLimit()`: a rate limit that several stages can share (the `rate` option of map and thread
 * stages).
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { checkInteger, got } from '../options/check.js'
import { MAX_TIMER_MS } from '../options/limits.js'

/**
 * Waits `ms` (resolving early, without an error, when `signal` aborts). A turn far in the future
 * (many calls queued on a slow rate) may be more than one timer can wait: it is waited in parts.
 */
async function longSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    while (ms > MAX_TIMER_MS) {
      await sleep(MAX_TIMER_MS, undefined, { signal })
      ms -= MAX_TIMER_MS
    }
    await sleep(ms, undefined, { signal })
  } catch {
    // aborted: the caller looks at its signal
  }
}

/** The slowest rate a RateLimit can space calls at: one per MAX_TIMER_MS. */
const MIN_PER_SECOND = 1000 / MAX_TIMER_MS

/**
 * A rate limit that several stages can share: at most `perSecond` calls start per second, spaced
 * evenly, with up to `burst` calls at once after a quiet spell.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, rateLimit } from 'stageline'
 * const api = rateLimit(50)                        // 50 calls per second across both stages
 * const lookUp = mapStage(async (id: number) => id, { workers: 8, rate: api })
 * const enrich = mapStage(async (id: number) => id, { workers: 8, rate: api })
 * await pipe([1, 2, 3], lookUp, enrich).toArray()
 * ```
 */
export class RateLimit {
  private readonly interval: number
  private readonly burst: number
  private next = 0

  constructor(perSecond: number, options?: { burst?: number }) {
    if (typeof perSecond !== 'number' || !(perSecond >= MIN_PER_SECOND) || !Number.isFinite(perSecond)) {
      throw new RangeError(
        `rateLimit(): expected \`perSecond\` to be a finite number from ${MIN_PER_SECOND} (one call per ${MAX_TIMER_MS} ms, the longest a timer can wait) and up, got ${got(perSecond)}`,
      )
    }
    this.interval = 1000 / perSecond
    this.burst =
      options?.burst === undefined ? 1 : checkInteger('rateLimit()', 'burst', options.burst, 1, false)
  }

  /** Waits for this call's turn; resolves early (without a turn) when `signal` aborts. */
  take(signal?: AbortSignal): Promise<void> | undefined {
    const now = performance.now()
    const earliest = now - (this.burst - 1) * this.interval
    if (this.next < earliest) this.next = earliest
    const at = this.next
    this.next += this.interval
    if (at <= now) return undefined
    return longSleep(at - now, signal)
  }
}

/**
 * Makes a {@link RateLimit} to share between stages (`rate` option of mapStage).
 *
 * @example
 * ```ts
 * import { rateLimit } from 'stageline'
 * const tenPerSecond = rateLimit(10, { burst: 5 })
 * ```
 */
export function rateLimit(perSecond: number, options?: { burst?: number }): RateLimit {
  return new RateLimit(perSecond, options)
}

/**
 * The defaults and limits of stageline's options: numbers a user may want to read or build on.
 * @module
 */

/**
 * The default capacity of a stage's output queue.
 *
 * @example
 * ```ts
 * import { DEFAULT_QSIZE, mapStage } from 'stageline'
 * // a stage whose consumer is bursty gets a deeper queue than the default
 * const parse = mapStage((line: string) => line.split(','), { qsize: DEFAULT_QSIZE * 4 })
 * console.log(parse.options.qsize) // 256
 * ```
 */
export const DEFAULT_QSIZE = 64

/**
 * How long a stopped or failed run waits for workers that have not yet returned before it settles
 * anyway. A worker that honours `ctx.signal` returns well within it; one that ignores the signal is
 * left to finish in the background: its result is dropped and its error swallowed.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, SETTLE_GRACE_MS } from 'stageline'
 * // honours its signal, so a stopped run settles at once rather than after SETTLE_GRACE_MS
 * const wait = mapStage(
 *   (ms: number, ctx) =>
 *     new Promise<number>((resolve, reject) => {
 *       const timer = setTimeout(() => resolve(ms), ms)
 *       ctx.signal.addEventListener('abort', () => {
 *         clearTimeout(timer)
 *         reject(ctx.signal.reason)
 *       })
 *     }),
 * )
 * const stopped = await pipe([60_000], wait)
 *   .toArray({ signal: AbortSignal.timeout(10) })
 *   .catch((err: unknown) => (err as Error).name)
 * console.log(stopped, SETTLE_GRACE_MS) // TimeoutError 100
 * ```
 */
export const SETTLE_GRACE_MS = 100

/**
 * The longest wait a Node.js timer can hold: 2^31 - 1 ms, about 24.8 days. Node fires a longer
 * timer after 1 ms instead (with a TimeoutOverflowWarning), so every millisecond option refuses
 * more than this; options where "never" makes sense take `Infinity`.
 *
 * @example
 * ```ts
 * import { MAX_TIMER_MS, mapStage } from 'stageline'
 * mapStage(async (n: number) => n, { timeout: MAX_TIMER_MS }) // the longest finite timeout
 * mapStage(async (n: number) => n, { timeout: Number.POSITIVE_INFINITY }) // none at all
 * ```
 */
export const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The most workers a stage may have (and the most `concurrency` of a Redis worker). Each worker is
 * started up front, so a count past this is almost certainly a mistake, refused before anything runs.
 *
 * @example
 * ```ts
 * import { MAX_WORKERS, mapStage } from 'stageline'
 * const wide = mapStage(async (url: string) => url.length, { workers: 1_000 })
 * console.log(wide.options.workers <= MAX_WORKERS) // true
 * ```
 */
export const MAX_WORKERS = 10_000

/**
 * The largest finite capacity of a queue, a feed or a batch (`qsize`, `capacity`, `batch()`'s
 * size): past it, use `Infinity` where unbounded is allowed.
 *
 * @example
 * ```ts
 * import { feed, MAX_CAPACITY } from 'stageline'
 * const big = feed<number>({ capacity: MAX_CAPACITY }) // the most a finite feed holds
 * const unbounded = feed<number>({ capacity: Number.POSITIVE_INFINITY })
 * big.end()
 * unbounded.end()
 * ```
 */
export const MAX_CAPACITY = 2 ** 31 - 1

/**
 * Stage options, their defaults, and eager validation with messages that name the option,
 * the value, its type and what is allowed.
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
 * Options every stage accepts.
 *
 * @example
 * ```ts
 * import { mapStage, type StageOptions } from 'stageline'
 * const io: StageOptions = { workers: 8, qsize: 32, ordered: true, name: 'lookup' }
 * const lookup = mapStage(async (id: number) => ({ id }), io)
 * console.log(lookup.name) // lookup
 * ```
 */
export interface StageOptions {
  /**
   * How many workers run the stage function concurrently, from 1 to {@link MAX_WORKERS} (10,000).
   * @default 1
   */
  workers?: number
  /**
   * Capacity of the stage's output queue: how many finished items may wait for the next stage.
   * `0` means hand-off (a worker waits until the next stage takes its item); `Infinity` means
   * unbounded (memory then grows with a slow consumer). At most {@link MAX_CAPACITY} when finite.
   * @default 64
   */
  qsize?: number
  /**
   * Emit outputs in input order rather than completion order. Finished items wait in a reorder
   * window that counts against the bound: the stage holds at most `qsize + workers` items.
   * Applies to map stages; a generator stage keeps order only with one worker.
   * @default false
   */
  ordered?: boolean
  /**
   * The stage's name in errors and stats.
   * @default the function's name, or `stage<N>` by 1-based position
   */
  name?: string
}

function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  return typeof value
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`
  try {
    return String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

/** Names a bad value the way every message here does: `<value> (<type>)`. */
export function got(value: unknown): string {
  return `${show(value)} (${typeName(value)})`
}

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

function range(min: number, max: number | undefined, allowInfinity: boolean): string {
  const top = max === undefined ? `from ${min} and up` : `from ${min} to ${max}`
  return `an integer ${top}${allowInfinity ? ' or `Infinity`' : ''}`
}

/** Validates an integer option from `min` to `max` (no upper bound when undefined), optionally allowing `Infinity`. */
export function checkInteger(
  where: string,
  option: string,
  value: unknown,
  min: number,
  allowInfinity: boolean,
  max?: number,
): number {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(
      `${where}: expected \`${option}\` to be ${range(min, max, allowInfinity)}, got ${got(value)}`,
    )
  }
  if (value === Number.POSITIVE_INFINITY && allowInfinity) return value
  if (!Number.isInteger(value) || value < min || (max !== undefined && value > max)) {
    throw new RangeError(
      `${where}: expected \`${option}\` to be ${range(min, max, allowInfinity)}, got ${got(value)}`,
    )
  }
  return value
}

/** What `checkMs` allows besides a finite number of milliseconds from 0 to MAX_TIMER_MS. */
export interface MsRule {
  /** `Infinity` is accepted (the option can mean "never"). */
  infinity?: boolean
  /** The least value allowed (0 when unset). */
  min?: number
  /** 0 is refused (the least value is above 0). */
  above0?: boolean
}

/**
 * Validates a number of milliseconds: from 0 (or `rule.min`) to MAX_TIMER_MS, and `Infinity`
 * where the rule allows it. The message names the option, the range and what was given.
 */
export function checkMs(where: string, option: string, value: unknown, rule: MsRule = {}): number {
  const min = rule.min ?? 0
  const low = rule.above0 === true ? `above ${min} and at most` : `from ${min} to`
  const allowed = `a number of milliseconds ${low} ${MAX_TIMER_MS} (about 24.8 days, the longest a timer can wait)${rule.infinity === true ? ' or `Infinity`' : ''}`
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`${where}: expected \`${option}\` to be ${allowed}, got ${got(value)}`)
  }
  if (value === Number.POSITIVE_INFINITY && rule.infinity === true) return value
  if (
    !Number.isFinite(value) ||
    value < min ||
    (rule.above0 === true && value <= min) ||
    value > MAX_TIMER_MS
  ) {
    throw new RangeError(`${where}: expected \`${option}\` to be ${allowed}, got ${got(value)}`)
  }
  return value
}

export function checkBoolean(where: string, option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') {
    throw new TypeError(`${where}: expected \`${option}\` to be true or false, got ${got(value)}`)
  }
  return value
}

export function checkFunction(where: string, option: string, value: unknown): void {
  if (typeof value !== 'function') {
    throw new TypeError(`${where}: expected \`${option}\` to be a function, got ${got(value)}`)
  }
}

export function checkObject(where: string, option: string, value: unknown): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`${where}: expected \`${option}\` to be an options object, got ${got(value)}`)
  }
}

/**
 * The validated, complete options of a stage.
 *
 * @example
 * ```ts
 * import { mapStage } from 'stageline'
 * const s = mapStage((n: number) => n, { workers: 4 })
 * console.log(s.options) // { workers: 4, qsize: 64, ordered: false, name: undefined }
 * ```
 */
export interface ResolvedStageOptions {
  workers: number
  qsize: number
  ordered: boolean
  name: string | undefined
}

const KNOWN = new Set(['workers', 'qsize', 'ordered', 'name'])

/**
 * Merges and validates stage options. `extra` names further options the caller validates itself;
 * any other key is refused, so a misspelt option (`worker: 4`) never passes unnoticed.
 */
export function resolveStageOptions(
  where: string,
  base: ResolvedStageOptions,
  options: unknown,
  extra: ReadonlySet<string> = new Set(),
): ResolvedStageOptions {
  if (options === undefined) return base
  checkObject(where, 'options', options)
  const o = options as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!KNOWN.has(key) && !extra.has(key)) {
      const allowed = [...KNOWN, ...extra].map((k) => `\`${k}\``).join(', ')
      throw new TypeError(`${where}: unknown option \`${key}\`; the options are ${allowed}`)
    }
  }
  const out = { ...base }
  if (o.workers !== undefined) out.workers = checkInteger(where, 'workers', o.workers, 1, false, MAX_WORKERS)
  if (o.qsize !== undefined) out.qsize = checkInteger(where, 'qsize', o.qsize, 0, true, MAX_CAPACITY)
  if (o.ordered !== undefined) out.ordered = checkBoolean(where, 'ordered', o.ordered)
  if (o.name !== undefined) {
    if (typeof o.name !== 'string' || o.name === '') {
      throw new TypeError(`${where}: expected \`name\` to be a non-empty string, got ${got(o.name)}`)
    }
    out.name = o.name
  }
  return out
}

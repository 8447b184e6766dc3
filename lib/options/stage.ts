/**
 * The options every stage accepts (workers, qsize, ordered, name), their schema and defaults.
 * @module
 */
import { boolean, type Checker, checkInteger, got, integer, nonEmptyString, type Schema } from './check.js'
import { MAX_CAPACITY, MAX_WORKERS } from './limits.js'

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
  /**
   * The workers the stage starts with: the number given, or for `workers: 'auto'` (or `{ min,
   * max }`) the minimum, which the stage's tuner then moves within `tuning`.
   */
  workers: number
  qsize: number
  ordered: boolean
  name: string | undefined
  /** Set for `workers: 'auto'` or `{ min, max }`: the bounds the tuner keeps the workers within. */
  tuning?: Tuning | undefined
}

/**
 * The bounds of a stage whose workers tune themselves.
 *
 * @example
 * ```ts
 * import { mapStage, type Tuning } from 'stageline'
 * const bounds: Tuning = { min: 2, max: 64 }
 * const fetchOne = mapStage(async (url: string) => url.length, { workers: bounds })
 * console.log(fetchOne.options.workers, fetchOne.options.tuning) // 2 { min: 2, max: 64 }
 * ```
 */
export interface Tuning {
  readonly min: number
  readonly max: number
}

/**
 * How many workers a map stage runs: a number, or `'auto'` (tuned between 1 and 256 while it
 * runs), or `{ min, max }` (tuned between those; `min` defaults to 1, `max` to 256).
 *
 * @example
 * ```ts
 * import { mapStage, type WorkersOption } from 'stageline'
 * const choices: WorkersOption[] = [8, 'auto', { min: 4 }, { max: 32 }, { min: 2, max: 16 }]
 * const stages = choices.map((workers) => mapStage(async (n: number) => n, { workers }))
 * console.log(stages.map((s) => s.options.workers)) // [ 8, 1, 4, 1, 2 ]
 * ```
 */
export type WorkersOption = number | 'auto' | { min?: number; max?: number }

/** The bounds `'auto'` means. */
export const AUTO: Tuning = Object.freeze({ min: 1, max: 256 })

/**
 * The checker of `workers` for a kind whose workers can tune themselves: a number, `'auto'`, or
 * `{ min, max }`; returns the number, or the bounds.
 */
export const workersOrTuning: Checker = countOrTuning(MAX_WORKERS, AUTO)

/**
 * The checker of a count of concurrency units that may tune itself: a number from 1 to `most`,
 * `'auto'` (the bounds `auto`), or `{ min, max }` (`min` defaults to `auto.min`, `max` to the
 * larger of `min` and `auto.max`); returns the number, or the bounds.
 */
export function countOrTuning(most: number, auto: Tuning): Checker {
  return (where, option, value) => {
    if (value === 'auto') return auto
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const o = value as Record<string, unknown>
      for (const key of Object.keys(o)) {
        if (key !== 'min' && key !== 'max') {
          throw new TypeError(
            `${where}: unknown key \`${key}\` in \`${option}\`; the keys are \`min\`, \`max\``,
          )
        }
      }
      const min = o.min === undefined ? auto.min : checkInteger(where, `${option}.min`, o.min, 1, false, most)
      const max =
        o.max === undefined
          ? Math.max(min, auto.max)
          : checkInteger(where, `${option}.max`, o.max, 1, false, most)
      if (min > max) {
        throw new RangeError(
          `${where}: expected \`${option}.min\` to be at most \`${option}.max\`, got min ${min} and max ${max}`,
        )
      }
      return Object.freeze({ min, max })
    }
    if (typeof value !== 'number') {
      throw new TypeError(
        `${where}: expected \`${option}\` to be an integer from 1 to ${most}, 'auto' or { min, max }, got ${got(value)}`,
      )
    }
    return checkInteger(where, option, value, 1, false, most)
  }
}

/** The checker of `workers` for a kind that keeps its workers: a number; `'auto'` refused saying why. */
export function fixedWorkers(why: string): Checker {
  return (where, option, value) => {
    if (value === 'auto' || (value !== null && typeof value === 'object' && !Array.isArray(value))) {
      throw new TypeError(
        `${where}: \`${option}: ${value === 'auto' ? "'auto'" : '{ min, max }'}\` is not for ${why}; give it a number of workers`,
      )
    }
    return checkInteger(where, option, value, 1, false, MAX_WORKERS)
  }
}

/** Takes `workers` as checked by `workersOrTuning` into the stage's options: a count, or tuning bounds. */
export function applyWorkers(o: ResolvedStageOptions, checked: unknown): void {
  if (checked === undefined) return
  if (typeof checked === 'number') {
    o.workers = checked
    o.tuning = undefined
  } else {
    o.tuning = checked as Tuning
    o.workers = (checked as Tuning).min
  }
}

/** The schema of the options every stage accepts. */
export const STAGE_SCHEMA: Schema = {
  workers: integer(1, MAX_WORKERS),
  qsize: integer(0, MAX_CAPACITY, true),
  ordered: boolean,
  name: nonEmptyString,
}

/**
 * The options every stage accepts (workers, qsize, ordered, name), their schema and defaults.
 * @module
 */
import { boolean, integer, nonEmptyString, type Schema } from './check.js'
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
  workers: number
  qsize: number
  ordered: boolean
  name: string | undefined
}

/** The schema of the options every stage accepts. */
export const STAGE_SCHEMA: Schema = {
  workers: integer(1, MAX_WORKERS),
  qsize: integer(0, MAX_CAPACITY, true),
  ordered: boolean,
  name: nonEmptyString,
}

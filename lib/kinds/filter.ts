/**
 * `filter()`: a map stage that keeps the items a predicate accepts (written on mapStage, as Node's
 * stream operators write `filter` on `map`).
 * @module
 */
import { isThenable } from '../_utils.js'
import { checkFunction } from '../options/check.js'
import { skip } from '../skip.js'
import type { Stage } from '../stage.js'
import type { StageContext } from './kind.js'
import { type MapStageOptions, mapStage } from './map.js'

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

/** The `skip` value, in a module of its own so that every loop can import it without a cycle. */

/**
 * Return this from a map function to drop the item: nothing is passed on for it, and the stage's
 * stats count it as skipped (paipa's SkipEntry, pipeframe's `keep_going = False`).
 *
 * @example
 * ```ts
 * import { mapStage, pipe, skip } from 'stageline'
 * const evens = mapStage((n: number) => (n % 2 === 0 ? n : skip))
 * await pipe([1, 2, 3, 4], evens).toArray() // [2, 4]
 * ```
 */
// a registered symbol: a worker thread's copy of stageline (a module of its own there) has the same one
export const skip: unique symbol = Symbol.for('stageline.skip')

/**
 * The two ends of a channel as the parties on either side see them, and the values that travel in
 * a channel's place without being items. Sources, channels and the reorder window all offer the
 * inlet below; a stage's workers read from one, and write to an outlet.
 * @module
 */
import type { Waiter } from './waiter.js'

/** `poll()` found nothing right now. A private symbol: `undefined` is a value users may send. */
export const EMPTY: unique symbol = Symbol('stageline.empty')
/** The channel is closed and drained, or aborted: no item will come. */
export const DONE: unique symbol = Symbol('stageline.done')
/** In a reorder window, a slot whose item was dropped (skipped or filtered out). */
export const SKIP: unique symbol = Symbol('stageline.skip')

export type Empty = typeof EMPTY
export type Done = typeof DONE

/** The side of a channel (or a source) that a stage's workers read from. */
export interface Inlet<T> {
  /**
   * Items handed out so far (each item's `seq` is the count before it): what the stage reading this
   * inlet has taken, counted here rather than per item in the stage's loops.
   */
  readonly taken: number
  /** Takes an item now, or says EMPTY (park with `wait`) or DONE (no more). Sets `w.seq`. */
  poll(w: Waiter): T | Empty | Done
  /** Parks until an item or DONE is handed over in `w.item` (call only after `poll` said EMPTY). */
  wait(w: Waiter): Promise<void>
  /** Stops the inlet for good: parked parties wake, buffered items are dropped, `poll` says DONE. */
  abort(): void
  /**
   * Takes back a `wait(w)` that has not been answered yet, without waking `w`; false if `w` was
   * already answered (then `w.item` holds what it got, and its promise resolves as usual).
   */
  cancel(w: Waiter): boolean
  /** Ends the input gracefully, if this inlet is a source: what was accepted is still delivered. */
  endInput?(): void
}

/** The side of a channel that a stage's workers write to. */
export interface Outlet<T> {
  /** Accepts `x` now if there is room (or the channel is aborted, which drops it); else false. */
  offer(x: T): boolean
  /** Parks until `x` is accepted (call only after `offer` said false). */
  put(w: Waiter, x: T): Promise<void>
  /** No more items: once drained, takers see DONE. */
  close(): void
  abort(): void
}

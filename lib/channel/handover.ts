/**
 * Lazy hand-over: when a worker hands its result to a parked taker of the next stage, the taker is
 * woken later, not at once.
 *
 * Waking a parked taker the moment it is handed an item makes two stages take turns item by item:
 * the woken taker runs as soon as the producer awaits anything, finds its input empty again and
 * parks again, a park and a wake per item and stage. Woken when the worker that handed it the item
 * parks, or at the next turn of the event loop, the taker finds a run of items waiting and takes
 * them without parking. Per worker, not per channel or global: with several workers a stage, one
 * of them parking says nothing about the others, which are still adding to the batch.
 * @module
 */
// the turn that bounds a lazy hand-over must come even where a test has faked the global timers
// (vi.useFakeTimers(), sinon): they replace globalThis.setImmediate, not node:timers' export
import { setImmediate as realSetImmediate } from 'node:timers'
import type { Waiter } from './waiter.js'

/** The takers one worker handed items to with `offerLazy()` and has not woken yet. */
export class Handed {
  readonly takers: Waiter[] = []
  /** Booked on `turn`, to be woken at the next turn of the event loop. */
  booked = false

  constructor(readonly turn: HandoverTurn) {}

  /** Wakes every taker. A woken party runs only once this returns (wake() resolves a promise). */
  wakeAll(): void {
    const t = this.takers
    for (let i = 0; i < t.length; i++) t[i]!.wake()
    t.length = 0
  }
}

/**
 * The bound on a lazy hand-over's delay, one per run: whatever a worker does after handing an item
 * over (its own function may wait on I/O for a long time), its takers are woken once the current
 * run of microtasks ends, at the next turn of the event loop (one setImmediate a turn, booked by the
 * first hand-over of the turn).
 */
export class HandoverTurn {
  private readonly booked: Handed[] = []
  private pending = false
  private readonly onTurn = (): void => {
    this.pending = false
    const booked = this.booked
    for (let i = 0; i < booked.length; i++) {
      const h = booked[i]!
      h.booked = false
      h.wakeAll()
    }
    booked.length = 0
  }

  /** Books `h`'s takers to be woken at the next turn (once: booking twice does nothing). */
  book(h: Handed): void {
    if (h.booked) return
    h.booked = true
    this.booked.push(h)
    if (!this.pending) {
      this.pending = true
      realSetImmediate(this.onTurn)
    }
  }
}

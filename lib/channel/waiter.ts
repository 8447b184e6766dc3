/**
 * A party parked on a channel: a worker waiting for an item or for room, or a consumer waiting for
 * an output. One per party, reused for every item, so that taking and pushing allocate nothing on
 * the fast path; parking allocates one promise and nothing else. The item travels in the waiter's
 * fields, never as the promise's value (resolving a promise with a thenable item would adopt it).
 * @module
 */
import { noop } from '../_utils.js'
import type { Handed } from './handover.js'

export class Waiter {
  /** The 0-based position, in its channel, of the item this party took last. */
  seq = 0
  /** The item handed over while parked in `wait()`, or DONE. */
  item: unknown = undefined
  /** The item waiting to be accepted while parked in `put()`. */
  pending: unknown = undefined
  /**
   * The takers this party handed items to lazily and has not woken yet (a worker that sends with
   * `offerLazy()`); undefined for parties that only take.
   */
  handed: Handed | undefined = undefined
  /**
   * A producer whose items are slow to make: it does not overtake producers parked on a full
   * channel, it parks behind them (see Channel.offerLazy).
   */
  defers = false
  /** Resolves the promise this party is parked on. */
  protected resolve: () => void = noop
  /** `new Promise(this.grab)` hands the resolver over without allocating a closure per park. */
  private readonly grab = (resolve: () => void): void => {
    this.resolve = resolve
  }

  /**
   * Parks this party: returns a promise that `wake()` resolves. A worker that parks first wakes the
   * takers it handed items to lazily (see Handed): it is about to stop producing, so nothing more
   * is coming to their batch from it.
   */
  park(): Promise<void> {
    const h = this.handed
    if (h !== undefined && h.takers.length > 0) h.wakeAll()
    return new Promise<void>(this.grab)
  }

  /** Ends the park: the party runs once the waker's turn of microtasks lets it. */
  wake(): void {
    this.resolve()
  }
}

/**
 * The bounded channel that joins two stages, and where backpressure is applied: a producer that
 * finds it full parks in `put()` until the consumer has taken items.
 *
 * A channel has one producing stage (any number of workers pushing) and one consuming stage (any
 * number of workers taking). Every operation first tries to complete synchronously (`offer`,
 * `poll`); only when it cannot does the caller park (`put`, `wait`).
 * @module
 */
import { Fifo } from './fifo.js'
import { DONE, type Done, EMPTY, type Empty, type Inlet, type Outlet } from './inlet.js'
import type { Waiter } from './waiter.js'

export class Channel<T> implements Inlet<T>, Outlet<T> {
  private readonly buf: Fifo<T>
  private readonly takers = new Fifo<Waiter>(4)
  private readonly pushers = new Fifo<Waiter>(4)
  /** Items handed out so far (see Inlet.taken). */
  taken = 0
  private closed = false
  aborted = false

  /**
   * Parked producers are let in only once the buffer has drained to this level, not after every
   * item taken: a full queue between two fast stages then moves items in runs of capacity/2
   * instead of ping-ponging one park and one wake per item.
   */
  private readonly lowWater: number

  constructor(readonly capacity: number) {
    this.buf = new Fifo<T>(Math.min(capacity, 1024))
    this.lowWater = Math.floor(capacity / 2)
  }

  /**
   * Lets in one parked producer. One per item taken once the buffer is down to `lowWater`, not all
   * at once: the producer woken usually refills the buffer by itself, and producers woken only to
   * find it full again would each pay a park and a wake for nothing (with 4 workers on a fast
   * stage, about a fifth of the per-item cost). There is room: the buffer is at or below `lowWater`.
   */
  private admit(): void {
    const p = this.pushers.shift()
    this.buf.push(p.pending as T)
    p.pending = undefined
    p.wake()
  }

  /** Items buffered now. */
  get length(): number {
    return this.buf.length
  }

  /**
   * The party parked longest in `wait()`, the one the next `offer()` goes to; undefined when none
   * is (then items may be buffered). Parties park only while the buffer is empty.
   */
  idleTaker(): Waiter | undefined {
    return this.takers.peek()
  }

  offer(x: T): boolean {
    if (this.takers.length > 0) {
      const w = this.takers.shift()
      w.seq = this.taken++
      w.item = x
      w.wake()
      return true
    }
    if (this.buf.length < this.capacity || this.aborted) {
      if (!this.aborted) this.buf.push(x)
      return true
    }
    return false
  }

  /**
   * As `offer()`, but a parked taker handed `x` is woken later (see Handed in handover.ts): when
   * `by`, the sending worker, next parks, or at the next turn of the event loop, whichever comes
   * first. For a worker sending its result on: it usually has more to send, and the taker then
   * takes a run of items instead of parking after each. A sender without `handed` wakes the taker
   * at once.
   */
  offerLazy(x: T, by: Waiter): boolean {
    if (this.takers.length > 0) {
      const w = this.takers.shift()
      w.seq = this.taken++
      w.item = x
      const h = by.handed
      if (h === undefined) {
        w.wake()
        return true
      }
      h.takers.push(w)
      if (!h.booked) h.turn.book(h)
      return true
    }
    if (this.aborted) return true
    if (this.buf.length < this.capacity) {
      // a slow producer queues behind parked ones: overtaking them, fresh results would keep the
      // buffer above the low water mark and a parked item could wait without bound
      if (by.defers && this.pushers.length > 0) return false
      this.buf.push(x)
      return true
    }
    return false
  }

  put(w: Waiter, x: T): Promise<void> {
    w.pending = x
    this.pushers.push(w)
    return w.park()
  }

  poll(w: Waiter): T | Empty | Done {
    if (this.buf.length > 0) {
      const x = this.buf.shift()
      if (this.pushers.length > 0 && this.buf.length <= this.lowWater) this.admit()
      w.seq = this.taken++
      return x
    }
    if (this.pushers.length > 0) {
      // capacity 0: take straight from a parked producer
      const p = this.pushers.shift()
      const x = p.pending as T
      p.pending = undefined
      p.wake()
      w.seq = this.taken++
      return x
    }
    return this.closed || this.aborted ? DONE : EMPTY
  }

  wait(w: Waiter): Promise<void> {
    if (this.closed || this.aborted) {
      w.item = DONE
      return Promise.resolve()
    }
    this.takers.push(w)
    return w.park()
  }

  cancel(w: Waiter): boolean {
    return this.takers.remove(w)
  }

  /** Producers parked in `put()` when the channel closes are still let in (a feed ended while pushes wait). */
  close(): void {
    if (this.closed) return
    this.closed = true
    // takers park only while the buffer is empty and no producer is parked, so they all get DONE
    while (this.takers.length > 0) {
      const w = this.takers.shift()
      w.item = DONE
      w.wake()
    }
  }

  abort(): void {
    if (this.aborted) return
    this.aborted = true
    this.buf.clear()
    while (this.takers.length > 0) {
      const w = this.takers.shift()
      w.item = DONE
      w.wake()
    }
    while (this.pushers.length > 0) {
      const p = this.pushers.shift()
      p.pending = undefined
      p.item = DONE // tells a feed's push() that its item was not accepted
      p.wake()
    }
  }
}

/**
 * The reorder window: the output of a stage whose outputs keep input order. Its slots are reserved
 * before an item is taken, filled when the item is done, and released to the consumer strictly in
 * input order. Reserved and filled slots together never exceed `capacity` (qsize plus what the
 * stage holds in flight), so the reorder buffer counts against the stage's bound. Every kind of
 * stage that keeps order (map stages, thread stages, Redis stages) reorders here.
 * @module
 */
import { Fifo } from './fifo.js'
import { DONE, type Done, EMPTY, type Empty, type Inlet, SKIP } from './inlet.js'
import type { Waiter } from './waiter.js'

/** A slot reserved and not yet filled. */
const HOLE: unique symbol = Symbol('stageline.hole')

export class OrderedChannel<T> implements Inlet<T> {
  private ring: unknown[]
  private mask: number
  private head = 0
  private held = 0
  /** Items handed out so far (see Inlet.taken). */
  taken = 0
  private closed = false
  private readonly takers = new Fifo<Waiter>(4)
  private readonly reservers = new Fifo<Waiter>(4)
  aborted = false

  constructor(readonly capacity: number) {
    let size = 16
    while (size < capacity && size < 1024) size *= 2
    this.ring = new Array(size).fill(HOLE)
    this.mask = size - 1
  }

  /** Slots reserved or filled now (the reorder window plus finished items not yet taken). */
  get length(): number {
    return this.held
  }

  /** Reserves a slot now if the window has room (always true once aborted). */
  tryAcquire(): boolean {
    if (this.held < this.capacity) {
      this.held++
      return true
    }
    return this.aborted
  }

  /** Parks until a slot is reserved for `w` (call only after `tryAcquire` said false). */
  acquire(w: Waiter): Promise<void> {
    if (this.aborted) return Promise.resolve()
    this.reservers.push(w)
    return w.park()
  }

  /** Gives back a reserved slot that will not be filled (the input ended). */
  release(): void {
    if (this.aborted) return
    this.held--
    this.afterFree()
  }

  /** Fills the slot of input position `seq` with `x` (or SKIP). */
  fill(seq: number, x: T | typeof SKIP): void {
    if (this.aborted) return
    while (seq - this.head >= this.ring.length) this.grow()
    this.ring[seq & this.mask] = x
    if (seq === this.head) this.deliver()
  }

  poll(w: Waiter): T | Empty | Done {
    const x = this.next()
    if (x !== EMPTY) {
      w.seq = this.taken++
      return x
    }
    return this.aborted || (this.closed && this.held === 0) ? DONE : EMPTY
  }

  wait(w: Waiter): Promise<void> {
    if (this.aborted || (this.closed && this.held === 0)) {
      w.item = DONE
      return Promise.resolve()
    }
    this.takers.push(w)
    return w.park()
  }

  cancel(w: Waiter): boolean {
    return this.takers.remove(w)
  }

  close(): void {
    this.closed = true
    this.afterFree()
  }

  abort(): void {
    if (this.aborted) return
    this.aborted = true
    this.ring.fill(HOLE)
    while (this.takers.length > 0) {
      const w = this.takers.shift()
      w.item = DONE
      w.wake()
    }
    while (this.reservers.length > 0) this.reservers.shift().wake()
  }

  /** Removes the head item if it is filled, skipping SKIP slots; EMPTY if the head is pending. */
  private next(): T | Empty {
    for (;;) {
      const i = this.head & this.mask
      const x = this.ring[i]
      if (x === HOLE) return EMPTY
      this.ring[i] = HOLE
      this.head++
      this.held--
      if (this.reservers.length > 0) {
        this.held++
        this.reservers.shift().wake()
      }
      if (x !== SKIP) return x as T
    }
  }

  private deliver(): void {
    while (this.takers.length > 0) {
      const x = this.next()
      if (x === EMPTY) break
      const w = this.takers.shift()
      w.seq = this.taken++
      w.item = x
      w.wake()
    }
    this.afterFree()
  }

  private afterFree(): void {
    if (this.held < this.capacity && this.reservers.length > 0) {
      this.held++
      this.reservers.shift().wake()
    }
    if (this.closed && this.held === 0) {
      while (this.takers.length > 0) {
        const w = this.takers.shift()
        w.item = DONE
        w.wake()
      }
    }
  }

  private grow(): void {
    const old = this.ring
    const next = new Array(old.length * 2).fill(HOLE)
    const mask = next.length - 1
    for (let s = this.head; s < this.head + old.length; s++) next[s & mask] = old[s & this.mask]
    this.ring = next
    this.mask = mask
  }
}

/**
 * The bounded channels that join stages.
 *
 * A channel has one producing stage (any number of workers pushing) and one consuming stage (any
 * number of workers taking). Every operation first tries to complete synchronously (`offer`,
 * `poll`); only when it cannot does the caller park (`put`, `wait`). Parking allocates one promise
 * and nothing else: the parked party is a reusable {@link Waiter} and the item travels in its
 * fields, never as the promise's value (resolving a promise with a thenable item would adopt it).
 * @module
 */
// the turn that bounds a lazy hand-over must come even where a test has faked the global timers
// (vi.useFakeTimers(), sinon): they replace globalThis.setImmediate, not node:timers' export
import { setImmediate as realSetImmediate } from 'node:timers'

/** `poll()` found nothing right now. A private symbol: `undefined` is a value users may send. */
export const EMPTY: unique symbol = Symbol('stageline.empty')
/** The channel is closed and drained, or aborted: no item will come. */
export const DONE: unique symbol = Symbol('stageline.done')
/** In an ordered channel, a slot whose item was dropped (skipped or filtered out). */
export const SKIP: unique symbol = Symbol('stageline.skip')
const HOLE: unique symbol = Symbol('stageline.hole')

export type Empty = typeof EMPTY
export type Done = typeof DONE

/**
 * A worker, or the consumer, as seen by a channel. One per party, reused for every item, so that
 * taking and pushing allocate nothing on the fast path.
 */
export class Waiter {
  /** The 0-based position, in its channel, of the item this party took last. */
  seq = 0
  /** The item handed over while parked in `wait()`, or DONE. */
  item: unknown = undefined
  /** The item waiting to be accepted while parked in `put()`. */
  pending: unknown = undefined
  /** Resolves the promise this party is parked on. */
  wake: () => void = noop
  /**
   * A map worker's context, read by an upstream worker that calls this worker's function for it
   * while it is parked (stage fusion, see fusion.ts); undefined for every other party.
   */
  ctx: unknown = undefined
  /**
   * The takers this party handed items to lazily and has not woken yet (a worker that sends with
   * `offerLazy()`); undefined for parties that only take. A generator stage's worker shares one
   * between its sending side and its input's reads, which is where it parks.
   */
  handed: Handed | undefined = undefined
  /**
   * Handed over with `item` while parked in `wait()`: the pending result of a call an upstream
   * worker made on this worker's behalf, which this worker now awaits as its own.
   */
  adopted: unknown = undefined
}

function noop(): void {}

// `new Promise(grab)` hands the resolver over without allocating a closure per park.
let grabbed: () => void = noop
function grab(resolve: () => void): void {
  grabbed = resolve
}
/**
 * Parks `w`: returns a promise that `w.wake()` resolves. A worker that parks first wakes the takers
 * it handed items to lazily (see {@link Channel.offerLazy}): it is about to stop producing, so
 * nothing more is coming to their batch from it.
 */
export function park(w: Waiter): Promise<void> {
  const h = w.handed
  if (h !== undefined && h.takers.length > 0) wakeHanded(h)
  const p = new Promise<void>(grab)
  w.wake = grabbed
  return p
}

/**
 * The takers one worker handed items to with `offerLazy()` and has not woken yet.
 *
 * Waking a parked taker the moment it is handed an item makes two stages take turns item by item:
 * the woken taker runs as soon as the producer awaits anything, finds its input empty again and
 * parks again, a park and a wake per item and stage. Woken when the worker that handed it the item
 * parks, or at the next turn of the event loop, the taker finds a run of items waiting and takes
 * them without parking. Per worker, not per channel or global: with several workers a stage, one
 * of them parking says nothing about the others, which are still adding to the batch.
 */
export class Handed {
  readonly takers: Waiter[] = []
  /** In `booked`, to be woken at the next turn of the event loop. */
  booked = false
}

/** A waiter for a worker that sends its results on with `offerLazy()`. */
export function senderWaiter(): Waiter {
  const w = new Waiter()
  w.handed = new Handed()
  return w
}

/** Hand-overs with takers left to wake at the next turn (each at most once). */
const booked: Handed[] = []
let turnBooked = false

/** Wakes the takers of `h`. A woken party runs only once this returns (wake() resolves a promise). */
function wakeHanded(h: Handed): void {
  const t = h.takers
  for (let i = 0; i < t.length; i++) t[i]!.wake()
  t.length = 0
}

/**
 * The bound on the delay: whatever the worker does after handing an item over (its own function
 * may wait on I/O for a long time), its takers are woken once the current run of microtasks ends.
 */
function onTurn(): void {
  turnBooked = false
  for (let i = 0; i < booked.length; i++) {
    const h = booked[i]!
    h.booked = false
    wakeHanded(h)
  }
  booked.length = 0
}

/** A FIFO ring buffer that grows by doubling. */
export class Fifo<T> {
  private buf: (T | undefined)[]
  private head = 0
  private mask: number
  length = 0

  constructor(initial = 16) {
    let size = 16
    while (size < initial) size *= 2
    this.buf = new Array(size)
    this.mask = size - 1
  }

  push(x: T): void {
    if (this.length === this.buf.length) this.grow()
    this.buf[(this.head + this.length) & this.mask] = x
    this.length++
  }

  shift(): T {
    const x = this.buf[this.head] as T
    this.buf[this.head] = undefined
    this.head = (this.head + 1) & this.mask
    this.length--
    return x
  }

  /** The first item, without removing it (undefined when empty). */
  peek(): T | undefined {
    return this.length > 0 ? this.buf[this.head] : undefined
  }

  /** Removes `x` if present (a linear scan: for the rare cancel of a parked waiter). */
  remove(x: T): boolean {
    for (let i = 0; i < this.length; i++) {
      if (this.buf[(this.head + i) & this.mask] === x) {
        for (let j = i; j < this.length - 1; j++) {
          this.buf[(this.head + j) & this.mask] = this.buf[(this.head + j + 1) & this.mask]
        }
        this.buf[(this.head + this.length - 1) & this.mask] = undefined
        this.length--
        return true
      }
    }
    return false
  }

  clear(): void {
    this.buf.fill(undefined)
    this.head = 0
    this.length = 0
  }

  private grow(): void {
    const old = this.buf
    const next = new Array<T | undefined>(old.length * 2)
    for (let i = 0; i < this.length; i++) next[i] = old[(this.head + i) & this.mask]
    this.buf = next
    this.head = 0
    this.mask = next.length - 1
  }
}

/** The side of a queue (or source) that a stage's workers read from. */
export interface Inlet<T> {
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

/** The side of a queue that a stage's workers write to. */
export interface Outlet<T> {
  /** Accepts `x` now if there is room (or the channel is aborted, which drops it); else false. */
  offer(x: T): boolean
  /** Parks until `x` is accepted (call only after `offer` said false). */
  put(w: Waiter, x: T): Promise<void>
  /** No more items: once drained, takers see DONE. */
  close(): void
  abort(): void
}

/** A bounded FIFO channel with multi-producer, multi-consumer hand-off. */
export class Channel<T> implements Inlet<T>, Outlet<T> {
  private readonly buf: Fifo<T>
  private readonly takers = new Fifo<Waiter>(4)
  private readonly pushers = new Fifo<Waiter>(4)
  private taken = 0
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
   * As `offer()`, but a parked taker handed `x` is woken later (see {@link Handed}): when `by`, the
   * sending worker, next parks, or at the next turn of the event loop, whichever comes first. For
   * a worker sending its result on: it usually has more to send, and the taker then takes a run of
   * items instead of parking after each. A sender without `handed` wakes the taker at once.
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
      if (!h.booked) {
        h.booked = true
        booked.push(h)
        if (!turnBooked) {
          turnBooked = true
          realSetImmediate(onTurn)
        }
      }
      return true
    }
    if (this.buf.length < this.capacity || this.aborted) {
      if (!this.aborted) this.buf.push(x)
      return true
    }
    return false
  }

  put(w: Waiter, x: T): Promise<void> {
    w.pending = x
    this.pushers.push(w)
    return park(w)
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
    return park(w)
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

/**
 * The output channel of an ordered stage: a reorder window whose slots are reserved before a
 * worker takes an item, filled when the item is done, and released to the consumer strictly in
 * input order. Reserved and filled slots together never exceed `capacity` (qsize + workers), so
 * the reorder buffer counts against the stage's bound.
 */
export class OrderedChannel<T> implements Inlet<T> {
  private ring: unknown[]
  private mask: number
  private head = 0
  private held = 0
  private taken = 0
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
    return park(w)
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
    return park(w)
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

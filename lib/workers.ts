/**
 * The worker loops. Each loop takes items from its group's inlet and hands results to its outlet,
 * completing synchronously whenever it can: a map function that returns a plain value is never
 * awaited, and a worker parks only when its inlet is empty or its outlet is full.
 *
 * The per-item path allocates nothing of its own: no closure, no promise unless the user's function
 * returns one, and the try/catch sits around the loop, not inside it.
 * @module
 */
import { CHECK_EVERY, closeQuietly, dueForTurn, isThenable, nextTurn, noop } from './_utils.js'
import type { Group, StageContext } from './group.js'
import { skip } from './policies.js'
import { type Channel, DONE, EMPTY, type Inlet, type OrderedChannel, SKIP, Waiter } from './queue.js'

export type MapFn = (item: unknown, ctx: StageContext) => unknown
export type GenFn = (input: AsyncIterable<unknown>, ctx: StageContext) => unknown

export { dueForTurn, isThenable, nextTurn }

/**
 * Calls `fn` on a sampled item and records how long it took (for an async result, until it
 * settles). Kept out of the loops: with the clock reads inline, the loops ran about 10% slower
 * on cheap synchronous functions.
 */
function timed(g: Group, fn: MapFn, x: unknown, ctx: StageContext): unknown {
  const t0 = performance.now()
  g.sampling(t0)
  const y = fn(x, ctx)
  if (!isThenable(y)) {
    g.record(performance.now() - t0)
    return y
  }
  return Promise.resolve(y).then((v) => {
    g.record(performance.now() - t0)
    return v
  })
}

/** Attaches a no-op rejection handler: for a result nobody will read (the run has stopped). */
function dropQuietly(p: unknown): void {
  ;(p as PromiseLike<unknown>).then(undefined, noop)
}

/**
 * A map stage's worker, outputs in completion order.
 *
 * Stage fusion: when the next stage is a plain map stage (`g.next`) and one of its workers is idle
 * (parked on an empty input), this worker calls that stage's function itself, for that idle worker
 * and with its context, instead of queueing the item for it, and goes on down the chain while the
 * stages after are fusable and idle too. Nothing a user can observe changes: the call is counted
 * in the next stage's stats and, if it throws, fails the run as that stage's worker with that item;
 * a synchronous call cannot overlap another call of that stage (one thread); a call that returns a
 * promise is handed, with its item, to the idle worker, which awaits it as its own item, so a stage
 * never has more calls in flight than workers; and items are never fused past queued ones (a
 * worker is idle only while its input is empty), so a one-worker stage keeps its input's order.
 * What it saves is a queue hand-off per stage: about a third of the per-item cost of cheap
 * synchronous steps (docs/benchmarks.md). The first call that returns a promise ends the fusion of
 * that stage for the run (`next` is cleared): async functions gain nothing from it.
 */
export async function mapLoop(g: Group, worker: number, fn: MapFn): Promise<void> {
  const input = g.input
  const gOut = g.output as Channel<unknown>
  const ctx = g.context(worker)
  const w = new Waiter()
  w.ctx = ctx
  let x: unknown
  let holding = false
  let n = 0
  try {
    for (;;) {
      // checked first, so that every path through the loop (skip included) counts
      if (++n === CHECK_EVERY) {
        n = 0
        if (dueForTurn()) {
          await nextTurn()
          if (g.halted) break
        }
      }
      let y: unknown
      x = input.poll(w)
      if (x === EMPTY) {
        await input.wait(w)
        x = w.item
        w.item = undefined
        if (w.adopted !== undefined) {
          // an upstream worker called our function for us (stage fusion): its result is our item's
          y = w.adopted
          w.adopted = undefined
          if (g.halted) {
            dropQuietly(y)
            break
          }
          g.busy++
          holding = true
        } else if (g.halted) break
      }
      if (!holding) {
        if (x === DONE) break
        g.busy++
        holding = true
        y = (++g.taken & g.sampleMask) !== 0 ? fn(x, ctx) : timed(g, fn, x, ctx)
      }
      if (isThenable(y)) {
        y = await y
        if (g.halted) break
      }
      holding = false
      g.busy--
      if (y === skip) {
        g.skipped++
        continue
      }
      g.emitted++
      let out = gOut
      if (g.next !== undefined) {
        const at = fuseDown(g, y)
        if (at === undefined) continue // handed over, skipped, or failed
        y = fused
        fused = undefined
        out = at.output as Channel<unknown>
      }
      if (!out.offer(y)) {
        await out.put(w, y)
        if (g.halted) break
      }
    }
  } catch (err) {
    if (holding) g.busy-- // the item's call threw, or the run stopped while it was awaited
    g.fail(err, worker, holding ? x : undefined)
    return
  }
  if (holding) g.busy--
  g.exit()
}

/** What `fuseDown` leaves to put into the output of the group it returns. */
let fused: unknown

/**
 * Stage fusion, from a worker of `g` holding `y`, its result: while the next stage is fusable and
 * has an idle worker, calls its function for that worker. Returns the group whose output the last
 * result (left in `fused`) goes to: `g` itself when nothing could be fused. Returns undefined when
 * the item is done with: handed over with a pending result, skipped, or its call threw (the run
 * then fails as that stage, so the caller's next read ends its loop).
 */
function fuseDown(g: Group, y: unknown): Group | undefined {
  let at = g
  let nx = g.next
  while (nx !== undefined) {
    const ch = at.output as Channel<unknown>
    const t = ch.idleTaker()
    if (t === undefined || nx.halted) break
    const f = nx.fuseFn!
    const tctx = t.ctx as StageContext
    let z: unknown
    try {
      z = (++nx.taken & nx.sampleMask) !== 0 ? f(y, tctx) : timed(nx, f, y, tctx)
    } catch (err) {
      nx.failFused(err, tctx.worker, y)
      return undefined
    }
    if (isThenable(z)) {
      // an async function: stop fusing it (handing each promise over gains nothing, and in A/B
      // the changed timing cost async stages 10%); this call's result still goes to `t`
      at.next = undefined
      handOver(ch, nx, t, y, z, tctx)
      return undefined
    }
    if (z === skip) {
      nx.skipped++
      return undefined
    }
    nx.emitted++
    y = z
    at = nx
    nx = nx.next
  }
  fused = y
  return at
}

/**
 * Gives the pending result `p` of a fused call on `item` to `t`, the idle worker of `nx` it was
 * made for, which awaits it as its own item. If the run stopped during the call, nobody will read it.
 */
function handOver(
  ch: Channel<unknown>,
  nx: Group,
  t: Waiter,
  item: unknown,
  p: unknown,
  tctx: StageContext,
): void {
  if (nx.halted) {
    dropQuietly(p)
    return
  }
  if (ch.idleTaker() !== t) {
    // cannot happen: nothing but a halt takes a parked worker off its queue during a synchronous
    // call. Were it to, failing loudly beats running more calls than workers or losing the item.
    dropQuietly(p)
    nx.failFused(new Error('stageline internal error: a fused call lost its idle worker'), tctx.worker, item)
    return
  }
  t.adopted = p
  ch.offer(item)
}

/** A map stage's worker, outputs in input order through the group's reorder window. */
export async function orderedMapLoop(g: Group, worker: number, fn: MapFn): Promise<void> {
  const input = g.input
  const out = g.output as OrderedChannel<unknown>
  const ctx = g.context(worker)
  const w = new Waiter()
  let x: unknown
  let holding = false
  let n = 0
  try {
    for (;;) {
      if (++n === CHECK_EVERY) {
        n = 0
        if (dueForTurn()) {
          await nextTurn()
          if (g.halted) break
        }
      }
      if (!out.tryAcquire()) {
        await out.acquire(w)
        if (g.halted) break
      }
      x = input.poll(w)
      if (x === EMPTY) {
        await input.wait(w)
        x = w.item
        w.item = undefined
        if (g.halted) break
      }
      if (x === DONE) {
        out.release()
        break
      }
      const seq = w.seq
      g.busy++
      holding = true
      let y = (++g.taken & g.sampleMask) !== 0 ? fn(x, ctx) : timed(g, fn, x, ctx)
      if (isThenable(y)) {
        y = await y
        if (g.halted) break
      }
      holding = false
      g.busy--
      if (y === skip) {
        g.skipped++
        out.fill(seq, SKIP)
        continue
      }
      g.emitted++
      out.fill(seq, y)
    }
  } catch (err) {
    if (holding) g.busy-- // the item's call threw, or the run stopped while it was awaited
    g.fail(err, worker, holding ? x : undefined)
    return
  }
  if (holding) g.busy--
  g.exit()
}

const END: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true })

/**
 * The input a generator stage's function iterates: a view over the group's inlet, shared by the
 * group's workers (each item goes to exactly one of them). An async iterator written by hand, not
 * an async generator, so that an item already waiting costs one resolved promise.
 */
export class InputView implements AsyncIterableIterator<unknown> {
  private readonly w = new Waiter()
  /** `w` is parked in the inlet's `wait()`. */
  private parked = false
  private finished = false
  /** Waiters of further next() calls made while `w` is parked (rare: a function that reads ahead). */
  private extra: Waiter[] | undefined
  /** Runs when `w` is woken; made once, so that parking allocates no closure. */
  private readonly woken: () => IteratorResult<unknown>

  constructor(
    private readonly g: Group,
    private readonly input: Inlet<unknown>,
  ) {
    this.woken = () => {
      this.parked = false
      this.g.busy++
      return this.take(this.w)
    }
  }

  /**
   * The function is done with its input: reads it left parked (it returned while a next() was
   * pending) are taken back, so the input hands their items to the stage's other workers.
   */
  close(): void {
    this.finished = true
    if (this.parked) this.takeBack(this.w)
    if (this.extra !== undefined) for (const w of this.extra) this.takeBack(w)
  }

  private takeBack(w: Waiter): void {
    if (this.input.cancel(w)) {
      w.item = DONE
      w.wake()
    }
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.finished || this.g.halted) return Promise.resolve(END)
    const x = this.input.poll(this.w)
    if (x === EMPTY) return this.slow()
    if (x === DONE) {
      this.finished = true
      return Promise.resolve(END)
    }
    this.g.taken++
    return Promise.resolve({ value: x, done: false })
  }

  private slow(): Promise<IteratorResult<unknown>> {
    if (!this.parked) {
      this.parked = true
      // a worker waiting for input is not busy (stats); counted once, even with several reads parked
      this.g.busy--
      return this.input.wait(this.w).then(this.woken)
    }
    // the function called next() again before the parked one settled: this read gets its own waiter
    const w = new Waiter()
    const extra = (this.extra ??= [])
    extra.push(w)
    return this.input.wait(w).then(() => {
      extra.splice(extra.indexOf(w), 1)
      return this.take(w)
    })
  }

  private take(w: Waiter): IteratorResult<unknown> {
    const x = w.item
    w.item = undefined
    if (x === DONE || this.g.halted) {
      this.finished = true
      return END
    }
    this.g.taken++
    return { value: x, done: false }
  }

  return(): Promise<IteratorResult<unknown>> {
    this.finished = true
    return Promise.resolve(END)
  }
}

/** A generator stage's worker: runs the function once over the shared input, pushing what it yields. */
export async function genLoop(g: Group, worker: number, fn: GenFn): Promise<void> {
  const out = g.output as Channel<unknown>
  const w = new Waiter()
  let it: Iterator<unknown> | AsyncIterator<unknown> | undefined
  let n = 0
  const view = new InputView(g, g.input)
  g.busy++ // until the worker ends, except while it waits for input or for room downstream
  try {
    const produced = fn(view, g.context(worker)) as any
    if (produced != null && typeof produced[Symbol.asyncIterator] === 'function') {
      it = produced[Symbol.asyncIterator]()
    } else if (produced != null && typeof produced[Symbol.iterator] === 'function') {
      it = produced[Symbol.iterator]()
    } else {
      throw new TypeError(
        `a stage() function must return an AsyncIterable or Iterable (write it as an async function*), got ${produced === null ? 'null' : typeof produced}`,
      )
    }
    for (;;) {
      let r = it!.next() as IteratorResult<unknown> | Promise<IteratorResult<unknown>>
      if (isThenable(r)) {
        r = await r
        if (g.halted) break
      }
      if (r.done) {
        it = undefined
        break
      }
      g.emitted++
      if (!out.offer(r.value)) {
        g.busy--
        await out.put(w, r.value)
        g.busy++
        if (g.halted) break
      }
      if (++n === CHECK_EVERY) {
        n = 0
        if (dueForTurn()) {
          await nextTurn()
          if (g.halted) break
        }
      }
    }
  } catch (err) {
    g.busy--
    closeQuietly(it)
    view.close()
    g.fail(err, worker, undefined)
    return
  }
  g.busy--
  closeQuietly(it)
  view.close()
  g.exit()
}

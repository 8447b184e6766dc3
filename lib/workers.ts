/**
 * The worker loops. Each loop takes items from its group's inlet and hands results to its outlet,
 * completing synchronously whenever it can: a map function that returns a plain value is never
 * awaited, and a worker parks only when its inlet is empty or its outlet is full.
 *
 * The per-item path allocates nothing of its own: no closure, no promise unless the user's function
 * returns one, and the try/catch sits around the loop, not inside it.
 * @module
 */
import {
  CHECK_EVERY,
  closeQuietly,
  dueForTurn,
  isThenable,
  iteratorResult,
  nextTurn,
  noop,
  openIterator,
} from './_utils.js'
import { dropQuietly, type MapFn, send, timed } from './fusion.js'
import type { Group, StageContext } from './group.js'
import { DONE, EMPTY, Handed, type Inlet, type OrderedChannel, SKIP, senderWaiter, Waiter } from './queue.js'
import { skip } from './skip.js'

export type { MapFn }
export type GenFn = (input: AsyncIterable<unknown>, ctx: StageContext) => unknown

export { dueForTurn, isThenable, nextTurn }

/**
 * A map stage's worker, outputs in completion order. Its results go on through `send()`, which may
 * fuse them into the next stage (fusion.ts); a result of its own function may likewise come from a
 * worker of the stage before, handed over in `w.adopted` while this worker was idle.
 */
export async function mapLoop(g: Group, worker: number, fn: MapFn): Promise<void> {
  const input = g.input
  const ctx = g.context(worker)
  const w = senderWaiter()
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
      const room = send(g, w, y)
      if (room !== undefined) {
        await room
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
  /** Parks in the input; shares its worker's `handed`, so that parking wakes what the worker sent. */
  readonly w = new Waiter()
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

/**
 * A generator stage's worker: runs the function once over the shared input, pushing what it yields.
 *
 * Written as callbacks on the generator's promises, not as an async function awaiting them: an
 * `await` resumes a suspended frame for every item, a `then()` callback is a plain call: three
 * generator stages ran about 1.15x faster this way, in A/B (docs/benchmarks.md, engine notes). The
 * callbacks never throw (a throw would reject the promise `then()` returns, which nobody reads).
 */
class GenWorker {
  private readonly w = new Waiter()
  private it: Iterator<unknown> | AsyncIterator<unknown> | undefined
  private readonly view: InputView
  private n = 0
  private readonly onResult = (r: IteratorResult<unknown>): void => {
    if (this.g.halted) {
      this.end(undefined, false)
      return
    }
    try {
      if (this.handle(r)) this.pump()
    } catch (err) {
      this.end(err, true)
    }
  }
  private readonly onError = (err: unknown): void => this.end(err, true)
  private readonly onRoom = (): void => {
    this.g.busy++
    if (this.g.halted) this.end(undefined, false)
    else this.pump()
  }
  private readonly onTurn = (): void => {
    if (this.g.halted) this.end(undefined, false)
    else this.pump()
  }

  constructor(
    private readonly g: Group,
    private readonly worker: number,
  ) {
    this.view = new InputView(g, g.input)
    this.w.handed = this.view.w.handed = new Handed()
  }

  start(fn: GenFn): void {
    const g = this.g
    g.busy++ // until the worker ends, except while it waits for input or for room downstream
    try {
      const produced = fn(this.view, g.context(this.worker)) as any
      if (
        produced != null &&
        (typeof produced[Symbol.asyncIterator] === 'function' ||
          typeof produced[Symbol.iterator] === 'function')
      ) {
        this.it = openIterator(produced, "the stage function's result: its").it
      } else {
        // a plain async function returns a promise: nobody else reads it, so its rejection is handled here
        if (isThenable(produced)) (produced as PromiseLike<unknown>).then(undefined, noop)
        throw new TypeError(
          `a stage() function must return an AsyncIterable or Iterable (write it as an async function*), got ${isThenable(produced) ? 'a promise' : produced === null ? 'null' : typeof produced}`,
        )
      }
    } catch (err) {
      this.end(err, true)
      return
    }
    this.pump()
  }

  /** Pulls from the generator until it must wait: for its next result, for room, or for a turn. */
  private pump(): void {
    const it = this.it!
    try {
      for (;;) {
        const r = it.next() as IteratorResult<unknown> | Promise<IteratorResult<unknown>>
        if (isThenable(r)) {
          ;(r as Promise<IteratorResult<unknown>>).then(this.onResult, this.onError)
          return
        }
        if (!this.handle(r)) return
      }
    } catch (err) {
      this.end(err, true)
    }
  }

  /** Sends one result on; false when the worker must stop pumping (it waits, or it ended). */
  private handle(r: IteratorResult<unknown>): boolean {
    const g = this.g
    iteratorResult(r)
    if (r.done) {
      this.it = undefined
      this.end(undefined, false)
      return false
    }
    g.emitted++
    const room = send(g, this.w, r.value)
    if (room !== undefined) {
      g.busy--
      room.then(this.onRoom)
      return false
    }
    if (++this.n === CHECK_EVERY) {
      this.n = 0
      if (dueForTurn()) {
        nextTurn().then(this.onTurn)
        return false
      }
    }
    return true
  }

  /** Ends the worker once: normally, or failing with `err` (`failed`). */
  private end(err: unknown, failed: boolean): void {
    const g = this.g
    g.busy--
    closeQuietly(this.it)
    this.it = undefined
    this.view.close()
    if (failed) g.fail(err, this.worker, undefined)
    else g.exit()
  }
}

/** Starts a generator stage's worker (see GenWorker). */
export function genLoop(g: Group, worker: number, fn: GenFn): void {
  new GenWorker(g, worker).start(fn)
}

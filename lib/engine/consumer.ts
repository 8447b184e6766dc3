/**
 * Reading a run's output: the one consumer every way of reading a run is built on. `drain()` is the
 * loop behind `toArray()`, `execute()` and `start()`; `Results` is the same reading driven by its
 * caller's `next()` calls (`results()`, `for await`).
 * @module
 */
import { isThenable } from '../_utils.js'
import { DONE, EMPTY } from '../channel/inlet.js'
import { Waiter } from '../channel/waiter.js'
import { RunStopped } from '../errors.js'
import { Execution, type ExecutionOptions, type RunPlan } from './execution.js'

/**
 * Reads every output of `exec`, calling `each` with it (awaited when it returns a promise: the next
 * output waits, which is backpressure); resolves once the run has ended, or rejects with its error.
 * If `each` throws or rejects, the run fails as a stage named `callback` (`"onResult"`), on that item.
 */
export async function drain(
  exec: Execution,
  each: (x: unknown) => unknown,
  callback = 'onResult',
): Promise<void> {
  const out = exec.output
  const w = new Waiter()
  for (;;) {
    let x = out.poll(w)
    if (x === EMPTY) {
      await out.wait(w)
      x = w.item
      w.item = undefined
    }
    if (x === DONE) break
    exec.delivered++
    try {
      const r = each(x)
      if (isThenable(r)) await r
    } catch (err) {
      exec.fail(err, callback, 0, x)
    }
  }
  await settle(exec)
}

/**
 * Settles a run whose output said DONE: resolves, or rejects with its error, once the run has ended
 * and what it holds (a report being written) is done.
 */
async function settle(exec: Execution): Promise<void> {
  try {
    await exec.end()
  } finally {
    const held = exec.released()
    if (held !== undefined) await held
  }
}

const END: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true })

/**
 * Stops the run of a `results()` iterator that was garbage-collected unfinished: dropped after a
 * few `next()` calls, never read to the end and never closed with `return()`. Without this, its
 * source would stay open (a file, a cursor) for the life of the process. `for await` never needs
 * it: leaving the loop any way calls `return()`.
 */
const dropped = new FinalizationRegistry<Execution>((exec) => {
  exec.stop(new RunStopped('its results() iterator was dropped unfinished, without return()'), false)
})

/**
 * The iterator `results()` returns. It starts its run on the first `next()` (`open` makes it, and
 * may throw for bad options), so an iterator that is never read never starts anything.
 */
export class Results<O> implements AsyncIterableIterator<O> {
  private exec: Execution | undefined
  private readonly w = new Waiter()
  /** `w` is parked in the output's `wait()`. */
  private parked = false
  private ended = false
  /** Runs when `w` is woken; made once, so that parking allocates no closure. */
  private readonly woken = (): IteratorResult<O> | Promise<IteratorResult<O>> => {
    this.parked = false
    return this.take(this.exec as Execution, this.w)
  }

  constructor(private readonly open: () => Execution) {}

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<O>> {
    if (this.ended) return Promise.resolve(END)
    let exec = this.exec
    if (exec === undefined) {
      try {
        exec = this.exec = this.open()
        dropped.register(this, exec, this)
      } catch (err) {
        this.ended = true
        return Promise.reject(err)
      }
    }
    const x = exec.output.poll(this.w)
    if (x === EMPTY) return this.slow(exec)
    if (x === DONE) return this.end(exec)
    exec.delivered++
    return Promise.resolve({ value: x as O, done: false })
  }

  private slow(exec: Execution): Promise<IteratorResult<O>> {
    if (!this.parked) {
      this.parked = true
      return exec.output.wait(this.w).then(this.woken)
    }
    // next() called again before the parked one settled: this call gets its own waiter
    const w = new Waiter()
    return exec.output.wait(w).then(() => this.take(exec, w))
  }

  private take(exec: Execution, w: Waiter): IteratorResult<O> | Promise<IteratorResult<O>> {
    const x = w.item
    w.item = undefined
    if (x === DONE) return this.end(exec)
    exec.delivered++
    return { value: x as O, done: false }
  }

  private async end(exec: Execution): Promise<IteratorResult<O>> {
    if (this.ended) return END
    this.ended = true
    dropped.unregister(this)
    await settle(exec)
    return END
  }

  /** Stops the run (a `break` calls this): every worker is signalled, the source is closed. */
  async return(): Promise<IteratorResult<O>> {
    if (this.ended) return END
    this.ended = true
    const exec = this.exec
    if (exec !== undefined) {
      dropped.unregister(this)
      exec.stop(new RunStopped('the consumer stopped reading the results'), false)
      await exec.settled()
      const held = exec.released()
      if (held !== undefined) await held
    }
    return END
  }
}

/** A `results()` iterator over a new run of `plan`, started on its first `next()`. */
export function results<O>(plan: RunPlan, options?: ExecutionOptions): Results<O> {
  return new Results<O>(() => new Execution(plan, options))
}

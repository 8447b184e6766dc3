/**
 * Generator stages, `stage()`: each worker runs the stage's function once over its share of the
 * stage's input, and everything the function yields goes on.
 * @module
 */
import { closeQuietly, isThenable, iteratorResult, noop, openIterator } from '../_utils.js'
import { checkFunction, validateOptions } from '../options/check.js'
import { DEFAULT_QSIZE } from '../options/limits.js'
import { fixedWorkers, type ResolvedStageOptions, STAGE_SCHEMA, type StageOptions } from '../options/stage.js'
import { Stage } from '../stage.js'
import { DONE, EMPTY, type Lane, type StageContext, type StageKind, type StagePlan } from './kind.js'

export type GenFn = (input: AsyncIterable<unknown>, ctx: StageContext) => unknown

const END: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true })

/**
 * The input a generator stage's function iterates: its worker's lane's view of the stage's input
 * (each item goes to exactly one worker). An async iterator written by hand, not an async
 * generator, so that an item already waiting costs one resolved promise.
 */
class InputView implements AsyncIterableIterator<unknown> {
  /** The lane is parked in `wait()`. */
  private parked = false
  private finished = false
  /** A read still pending when the function called next() again (rare: a function that reads ahead). */
  private pending: Promise<IteratorResult<unknown>> | undefined
  /** Runs when the lane is woken; made once, so that parking allocates no closure. */
  private readonly woken = (): IteratorResult<unknown> => {
    this.parked = false
    this.pending = undefined
    const x = this.lane.received()
    if (x === DONE || x === EMPTY) {
      this.finished = true
      return END
    }
    return { value: x, done: false }
  }

  constructor(private readonly lane: Lane) {}

  /**
   * The function is done with its input: a read it left parked (it returned while a next() was
   * pending) is taken back, so the input hands its item to the stage's other workers.
   */
  close(): void {
    this.finished = true
    if (this.parked) this.lane.cancel()
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.pending !== undefined) {
      // reads of one input are served in turn, as an async iterator's are
      return this.pending.then(() => this.next())
    }
    if (this.finished) return Promise.resolve(END)
    const x = this.lane.take()
    if (x === EMPTY) {
      this.parked = true
      this.pending = this.lane.wait().then(this.woken)
      return this.pending
    }
    if (x === DONE) {
      this.finished = true
      return Promise.resolve(END)
    }
    return Promise.resolve({ value: x, done: false })
  }

  return(): Promise<IteratorResult<unknown>> {
    this.finished = true
    return Promise.resolve(END)
  }
}

/**
 * A generator stage's worker: runs the function once over its lane's input, emitting what it yields.
 *
 * Written as callbacks on the generator's promises, not as an async function awaiting them: an
 * `await` resumes a suspended frame for every item, a `then()` callback is a plain call: three
 * generator stages ran about 1.15x faster this way, in A/B. The callbacks never throw (a throw
 * would reject the promise `then()` returns, which nobody reads).
 */
class GenWorker {
  private it: Iterator<unknown> | AsyncIterator<unknown> | undefined
  private readonly view: InputView
  private readonly onResult = (r: IteratorResult<unknown>): void => {
    if (this.lane.port.halted) {
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
  private readonly onGo = (): void => {
    this.lane.resume()
    if (this.lane.port.halted) this.end(undefined, false)
    else this.pump()
  }

  constructor(private readonly lane: Lane) {
    this.view = new InputView(lane)
  }

  start(fn: GenFn): void {
    try {
      const produced = fn(this.view, this.lane.ctx) as any
      if (
        produced != null &&
        (typeof produced[Symbol.asyncIterator] === 'function' ||
          typeof produced[Symbol.iterator] === 'function')
      ) {
        this.it = openIterator(produced, "the stage function's result: its").it
      } else {
        // a plain async function returns a promise: nobody else reads it, so its rejection is handled here
        const promise = isThenable(produced)
        if (promise) (produced as PromiseLike<unknown>).then(undefined, noop)
        throw new TypeError(
          `a stage() function must return an AsyncIterable or Iterable (write it as an async function*), got ${promise ? 'a promise' : produced === null ? 'null' : typeof produced}`,
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
    iteratorResult(r)
    if (r.done) {
      this.it = undefined
      this.end(undefined, false)
      return false
    }
    const room = this.lane.emit(r.value)
    if (room !== undefined) {
      room.then(this.onGo)
      return false
    }
    const turn = this.lane.pace()
    if (turn !== undefined) {
      turn.then(this.onGo)
      return false
    }
    return true
  }

  /** Ends the worker once: normally, or failing with `err` (`failed`). */
  private end(err: unknown, failed: boolean): void {
    closeQuietly(this.it)
    this.it = undefined
    this.view.close()
    if (failed) this.lane.fail(err, undefined)
    else this.lane.exit()
  }
}

const GEN_DEFAULTS: ResolvedStageOptions = {
  workers: 1,
  qsize: DEFAULT_QSIZE,
  ordered: false,
  name: undefined,
}

const GEN_SCHEMA = {
  ...STAGE_SCHEMA,
  workers: fixedWorkers(
    'a generator stage: retiring one of its workers would end its input, so an aggregating generator would emit partial results',
  ),
}

function generatorKind(fn: GenFn): StageKind<ResolvedStageOptions> {
  return {
    factory: 'stage',
    resolve(where, base, options) {
      const o = { ...base, ...validateOptions(where, options, GEN_SCHEMA) } as ResolvedStageOptions
      if (o.ordered && o.workers > 1) {
        throw new TypeError(
          `${where}: \`ordered: true\` needs \`workers: 1\` on a generator stage (got workers: ${o.workers}); ` +
            'with several workers, which worker sees which item is not fixed. Use mapStage() for an ordered parallel map, ' +
            'or drop `ordered`',
        )
      }
      return o
    },
    plan(o): StagePlan {
      return {
        workers: o.workers,
        bound: o.workers,
        qsize: o.qsize,
        // one worker keeps order by itself: its output is not reordered
        ordered: false,
        start: (port) => port.spawn(o.workers, (lane) => new GenWorker(lane).start(fn)),
      }
    },
  }
}

/**
 * Makes a generator stage: each of `workers` workers runs `fn` over its share of the stage's
 * input (every input item goes to exactly one worker) and everything `fn` yields goes on.
 * Use it for stages that filter, split, aggregate or keep state across items.
 *
 * Order: with one worker, outputs keep the order `fn` yields them in; `ordered: true` with
 * several workers is refused (which worker sees which item is not fixed).
 *
 * @example
 * ```ts
 * import { pipe, stage } from 'stageline'
 * const titles = stage(async function* titles(pages: AsyncIterable<string>) {
 *   for await (const html of pages) {
 *     const m = /<title>(.*?)<\/title>/.exec(html)
 *     if (m) yield m[1]
 *   }
 * }, { workers: 2 })
 * const sum = stage(async function* sum(xs: AsyncIterable<number>) {
 *   let total = 0
 *   for await (const x of xs) total += x
 *   yield total
 * })
 * await pipe(['<title>a</title>', 'none'], titles).toArray() // ['a']
 * await pipe([1, 2, 3], sum).execute() // 6
 * ```
 */
export function stage<I, O>(
  fn: (input: AsyncIterable<I>, ctx: StageContext) => AsyncIterable<O> | Iterable<O>,
  options?: StageOptions,
): Stage<I, O, StageOptions> {
  checkFunction('stage()', 'fn', fn)
  const kind = generatorKind(fn as GenFn)
  const o = kind.resolve('stage()', GEN_DEFAULTS, options)
  o.name ??= fn.name || undefined
  return new Stage<I, O, StageOptions>(kind, o)
}

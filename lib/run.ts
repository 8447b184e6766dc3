/**
 * Background runs: `pipeline.start()` returns a Run that consumes its own outputs, keeps the
 * process alive until it finishes (unless started as a daemon), and never loses its error.
 * @module
 */
import { noop } from './_utils.js'
import { drain } from './engine/consumer.js'
import { type Execution, RUNNING } from './engine/execution.js'
import { type RunStats, snapshot } from './engine/stats.js'
import type { TimeTotals } from './engine/time.js'
import { RunStopped } from './errors.js'
import { MAX_TIMER_MS } from './options/limits.js'
import { type Tuning, type WorkersOption, workersOrTuning } from './options/stage.js'

/**
 * Options of `pipeline.start()`.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type StartOptions } from 'stageline'
 * const seen: number[] = []
 * const options: StartOptions<number> = {
 *   onResult: (n) => {
 *     seen.push(n) // awaited when it returns a promise: the run waits for it
 *   },
 * }
 * const run = pipe([1, 2, 3], mapStage((n: number) => n * 2)).start(options)
 * await run.done
 * console.log(seen) // [ 2, 4, 6 ]
 * ```
 */
export interface StartOptions<O> {
  /** Aborting it aborts the run (as `run.abort(signal.reason)`). */
  signal?: AbortSignal
  /**
   * Called with every output, in the order they come out. If it returns a promise, the next output
   * waits for it (backpressure). If it throws or rejects, the run fails with a TaskException whose
   * stage is `"onResult"`.
   * @default outputs are dropped (only the last one is kept, for `done`)
   */
  onResult?: (item: O) => unknown
  /**
   * Let the process exit while the run is alive, dropping what is in flight (paipa's daemon flag).
   * Without it, a started run keeps the process alive until it ends, so no item is lost on exit.
   * @default false
   */
  daemon?: boolean
  /**
   * Read the whole source before the first stage starts (pipeframe's batch source mode). Memory
   * then holds every input item at once; the source never waits on the stages, so an input larger
   * than any buffer cannot deadlock.
   * @default false
   */
  collectInput?: boolean
}

/**
 * A pipeline running in the background. It reads its own outputs (pass `onResult` to see them),
 * so it finishes without anyone iterating it.
 *
 * @example
 * ```ts
 * import { feed, mapStage, pipe } from 'stageline'
 * const input = feed<string>()
 * const seen: number[] = []
 * const run = pipe(input, mapStage((s: string) => s.length)).start({ onResult: (n) => seen.push(n) })
 * await input.pushAll(['a', 'bb'])
 * console.log(run.alive)  // true
 * await run.stop()        // ends the feed, finishes what was taken in
 * console.log(run.alive)  // false; seen: [1, 2]
 * ```
 */
export class Run<O> implements AsyncDisposable {
  /**
   * Resolves to the last output (undefined if none) when the run finishes; rejects with its
   * TaskException, or the abort reason. Awaiting only `stop()` never leaves it unhandled.
   */
  readonly done: Promise<O | undefined>
  private readonly exec: Execution
  private settled = false
  private keepAlive: ReturnType<typeof setInterval> | undefined
  /** The time totals of the previous `stats()` (for `busyShare`). */
  private readonly since: TimeTotals[] = []

  /** @internal use pipeline.start() */
  constructor(exec: Execution, options: StartOptions<O>) {
    this.exec = exec
    // a ref'd handle: the event loop does not end, so the process does not exit, while the run lives
    if (options.daemon !== true) this.keepAlive = setInterval(noop, MAX_TIMER_MS)
    this.done = this.consume(options.onResult)
    this.done.catch(noop)
  }

  /** True while the run is accepting and processing items. */
  get alive(): boolean {
    return !this.settled && this.exec.state === RUNNING
  }

  private async consume(onResult: ((item: O) => unknown) | undefined): Promise<O | undefined> {
    let last: unknown
    try {
      // the first output may be ready before start() returns (a source function pushes at once):
      // onResult is never called before the caller holds the run it may want to stop
      await Promise.resolve()
      await drain(this.exec, (x) => {
        last = x
        return onResult?.(x as O)
      })
      return last as O | undefined
    } finally {
      this.settled = true
      if (this.keepAlive !== undefined) clearInterval(this.keepAlive)
    }
  }

  /**
   * Graceful stop: ends the input (a feed is ended; any other source stops being pulled and is
   * closed), finishes every item already taken in, and resolves. Rejects with the run's
   * TaskException if it failed.
   */
  async stop(): Promise<void> {
    this.exec.endInput()
    await this.done
  }

  /**
   * Immediate stop: in-flight work is signalled and dropped. Resolves once the run has settled;
   * `done` rejects with `reason`.
   */
  async abort(reason: unknown = new RunStopped('the run was aborted')): Promise<void> {
    this.exec.stop(reason, true)
    await this.done.then(noop, noop)
  }

  /**
   * Sets how many workers a stage runs from now on, effective at once: a number (the stage stops
   * tuning itself), or `'auto'` / `{ min, max }` (it tunes itself within those bounds). Growing
   * starts workers; shrinking retires some, each after the item it holds. Throws for a stage name
   * the pipeline does not have (or has twice), a stage whose kind keeps its workers (a generator
   * stage, `batch()`, a Redis stage, a thread stage given a number of threads), for more workers
   * than a thread stage's `max`, or a run that has ended. A tuned thread stage's `'auto'` is 1 to
   * its `max`.
   *
   * @example
   * ```ts
   * import { feed, mapStage, pipe } from 'stageline'
   * const input = feed<number>()
   * const run = pipe(input, mapStage(async (n: number) => n, { name: 'fetch', workers: 2 })).start()
   * run.setWorkers('fetch', 8) // busier now
   * run.setWorkers('fetch', 'auto') // let it find its own number
   * input.end()
   * await run.done
   * ```
   */
  setWorkers(stage: string, workers: WorkersOption): void {
    const where = 'run.setWorkers()'
    const found = this.exec.stages.filter((s) => s.name === stage)
    if (found.length !== 1) {
      const names = this.exec.stages.map((s) => JSON.stringify(s.name)).join(', ')
      throw new TypeError(
        `${where}: ${found.length === 0 ? 'no stage is named' : 'more than one stage is named'} ${JSON.stringify(stage)}; the stages are ${names}`,
      )
    }
    const s = found[0]!
    let checked = workersOrTuning(where, 'workers', workers)
    if (!s.canResize) {
      throw new TypeError(
        `${where}: stage ${JSON.stringify(stage)} keeps its workers while it runs (a generator, batch or Redis stage, or a thread stage given a number of threads)`,
      )
    }
    const most = s.mostWorkers
    // a thread stage tunes within its own bounds: 'auto' is 1 to its most threads
    if (workers === 'auto' && most < (checked as Tuning).max) checked = { min: 1, max: most }
    const asked = typeof checked === 'number' ? checked : (checked as Tuning).max
    if (asked > most) {
      throw new RangeError(
        `${where}: stage ${JSON.stringify(stage)} runs at most ${most} workers (the upper bound of its threads), got ${typeof checked === 'number' ? checked : `max ${asked}`}`,
      )
    }
    if (this.exec.state !== RUNNING || s.live === 0) {
      throw new TypeError(`${where}: stage ${JSON.stringify(stage)} has ended`)
    }
    if (typeof checked === 'number') {
      s.untune(true)
      s.resize(checked, 'set by run.setWorkers()')
    } else {
      const t = checked as Tuning
      s.tune(t.min, t.max)
    }
  }

  /** A snapshot of the run's per-stage counters (see {@link RunStats}). */
  stats(): RunStats {
    return snapshot(this.exec, this.since)
  }

  /** `await using run = pipeline.start()` stops the run gracefully at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop()
  }
}

/**
 * One execution of a pipeline: opens the source, wires a channel and a stage run per stage, starts
 * each stage's kind on its port, and owns the run's lifecycle. This is where a failure stops the
 * workers: the first failure wins and halts every stage (its channels abort, its `ctx.signal`
 * aborts); a stop (consumer break, caller's signal) does the same without an error. State moves
 * forward only: running -> done | failed | stopped, and every transition is idempotent.
 * @module
 */

import { noop } from '../_utils.js'
import { Channel } from '../channel/bounded.js'
import { HandoverTurn } from '../channel/handover.js'
import { DONE, EMPTY, type Inlet } from '../channel/inlet.js'
import { OrderedChannel } from '../channel/reorder.js'
import { Waiter } from '../channel/waiter.js'
import { describeCause, RunStopped, TaskException } from '../errors.js'
import type { StagePlan } from '../kinds/kind.js'
import { SETTLE_GRACE_MS } from '../options/limits.js'
import type { Stage } from '../stage.js'
import { Pace } from './pace.js'
import { emptyInlet, openSource, type Source } from './source.js'
import { StageRun } from './stage-run.js'
import type { Clock } from './time.js'

/**
 * A change of a stage's number of workers: by its tuner (`workers: 'auto'`), or by
 * `run.setWorkers()`.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type WorkersEvent } from 'stageline'
 * const changes: WorkersEvent[] = []
 * const fetchOne = mapStage(async (n: number) => n, { workers: 'auto', name: 'fetch' })
 * await pipe([1, 2, 3], fetchOne).toArray({ onWorkers: (e) => changes.push(e) })
 * for (const e of changes) console.log(`${e.stage}: ${e.from} -> ${e.to} (${e.reason})`)
 * ```
 */
export interface WorkersEvent {
  /** The stage's name, and its 0-based position. */
  readonly stage: string
  readonly index: number
  /** Workers before and after. */
  readonly from: number
  readonly to: number
  /** Why, in one sentence. */
  readonly reason: string
  /** Milliseconds since the run started. */
  readonly atMs: number
}

/** One watcher of a run (see Execution.watch). */
interface Watcher {
  readonly report: (run: Execution) => void
  readonly timer: ReturnType<typeof setInterval>
}

/** The most changes of workers a run keeps for its report (a tuner makes at most 20 a second). */
const MAX_WORKER_EVENTS = 2000

export const RUNNING = 0
export const FINISHED = 1
export const FAILED = 2
export const STOPPED = 3
export type RunState = typeof RUNNING | typeof FINISHED | typeof FAILED | typeof STOPPED

/** What a run is built from: a pipeline's source, stages and the names it resolved for them. */
export interface RunPlan {
  readonly source: Source<unknown>
  readonly stages: readonly Stage<any, any, any, any>[]
  readonly names: readonly string[]
}

/** How a run is started. */
export interface ExecutionOptions {
  /** The caller's signal: aborting it stops the run, which then rejects with its reason. */
  signal?: AbortSignal | undefined
  /** Read the whole source before the first stage starts (collect-first mode). */
  collectInput?: boolean | undefined
  /** The clock the time accounting reads (specs inject one). */
  clock?: Clock | undefined
  /**
   * Keep each stage's time book (working, starved, blocked): only a run whose stats can be read
   * (it reports progress, or runs in the background) pays for the clock reads it takes.
   */
  accounting?: boolean | undefined
}

export class Execution {
  state: RunState = RUNNING
  /** The TaskException of a failed run, or the reason of a stopped one. */
  error: unknown = undefined
  /** Whether a stopped run rejects (the caller's signal aborted) or ends quietly (the consumer stopped). */
  rejectOnStop = false
  readonly stages: StageRun[] = []
  readonly output: Inlet<unknown>
  readonly clock: Clock
  /** The stages keep time books (see ExecutionOptions.accounting); always with a tuned stage. */
  accounting: boolean
  /** Told every change of a stage's workers (the run option `onWorkers`). */
  private readonly workerWatchers: ((e: WorkersEvent) => void)[] = []
  /** Every change of a stage's workers so far (the first MAX_WORKER_EVENTS), for a run's report. */
  readonly workerEvents: WorkersEvent[] = []
  /** The turn of the event loop that bounds this run's lazy hand-overs. */
  readonly turn = new HandoverTurn()
  /** When this run last gave the event loop a turn. */
  readonly pace = new Pace()
  private source: Inlet<unknown> = emptyInlet
  private signal: AbortSignal | undefined
  private settleWaiters: (() => void)[] = []
  /** What watches the run (onProgress, a report, a dashboard...): each called on its interval and once at the end. */
  private readonly watchers = new Set<Watcher>()
  private readonly onAbort = (): void => {
    this.stop(this.signal!.reason, true)
  }

  /** The run's id: stats, reports and dashboards name the run by it. */
  readonly id: string = globalThis.crypto.randomUUID().slice(0, 8)
  /** When the run started (performance.now()). */
  readonly startedAt = performance.now()
  /** When the run ended, if it has. */
  endedAt: number | undefined = undefined
  /** Items the consumer has taken from the last stage. */
  delivered = 0
  /** Work the run's promise waits for once the run has ended (see hold()); none on most runs. */
  private holds: Promise<void>[] | undefined = undefined

  constructor(plan: RunPlan, options: ExecutionOptions = {}) {
    const { signal } = options
    this.clock = options.clock ?? performance.now.bind(performance)
    this.accounting = options.accounting === true
    if (signal?.aborted) {
      this.state = STOPPED
      this.error = signal.reason
      this.rejectOnStop = true
      this.output = emptyInlet
      return
    }
    let sourceError: { err: unknown } | undefined
    try {
      this.source = openSource(plan.source, (err) => {
        // a source function can outlive its run (its bucket was ended, the output drained): its
        // failure then fails nothing, but it is not dropped unseen either
        if (this.state === FINISHED) {
          process.emitWarning(
            `stageline: the source function failed after its run had ended: ${describeCause(err)}`,
          )
        } else this.fail(err, 'source', 0, undefined)
      })
    } catch (err) {
      sourceError = { err }
    }
    const plans: StagePlan[] = []
    let inlet = this.source
    let collected: Channel<unknown> | undefined
    if (options.collectInput === true && sourceError === undefined && plan.stages.length > 0) {
      // an unbounded channel in front of the first stage: the source can never wait on a stage
      // that has not started yet (pipeframe's batch mode deadlocks on its bounded buffer there)
      collected = inlet = new Channel<unknown>(Number.POSITIVE_INFINITY)
    }
    for (let i = 0; i < plan.stages.length; i++) {
      const s = plan.stages[i]!
      const p = s.plan(plan.names[i]!)
      const out = p.ordered ? new OrderedChannel<unknown>(p.qsize + p.bound) : new Channel<unknown>(p.qsize)
      this.stages.push(new StageRun(this, i, plan.names[i]!, p, inlet, out))
      plans.push(p)
      inlet = out
    }
    this.output = inlet
    // a tuned stage's controller reads its time: such a run keeps time books whoever reads stats
    if (plans.some((p) => p.tuning !== undefined)) this.accounting = true
    // stage fusion: a worker of an unordered stage may call the next stage's function itself when
    // that stage is a plain map stage with an idle worker (fusion.ts)
    for (let i = 1; i < plans.length; i++) {
      const fn = plans[i]!.fusable
      const prev = this.stages[i - 1]!
      if (fn !== undefined && prev.output instanceof Channel) {
        this.stages[i]!.fuseFn = fn
        prev.next = this.stages[i]
      }
    }
    if (signal !== undefined) {
      this.signal = signal
      signal.addEventListener('abort', this.onAbort, { once: true })
      // the source function may have aborted it (the listener was not there yet)
      if (signal.aborted) {
        this.onAbort()
        return
      }
    }
    if (sourceError !== undefined) {
      this.fail(sourceError.err, 'source', 0, undefined)
      return
    }
    if (collected !== undefined) {
      void this.collect(collected).then((ok) => {
        if (ok) this.launch()
      })
      return
    }
    this.launch()
  }

  private launch(): void {
    // every stage exists before any starts, so a failure during launch reaches them all. Last
    // stage first: each stage's workers are parked on their empty input before the stage before
    // starts, so stage fusion (fusion.ts) applies from the first item, instead of a backlog
    // queueing up in front of stages that did not exist yet and keeping their workers busy
    for (let i = this.stages.length - 1; i >= 0 && this.state === RUNNING; i--) {
      const s = this.stages[i]!
      s.plan.start(s)
      const t = s.plan.tuning
      if (t !== undefined && this.state === RUNNING) s.tune(t.min, t.max)
    }
  }

  /** Calls `watch` with every change of a stage's workers from now on. */
  onWorkers(watch: (e: WorkersEvent) => void): void {
    this.workerWatchers.push(watch)
  }

  /** A stage now runs `to` workers instead of `from`, for `reason`. */
  workersChanged(stage: StageRun, from: number, to: number, reason: string): void {
    const e: WorkersEvent = {
      stage: stage.name,
      index: stage.index,
      from,
      to,
      reason,
      atMs: performance.now() - this.startedAt,
    }
    if (this.workerEvents.length < MAX_WORKER_EVENTS) this.workerEvents.push(e)
    for (const w of this.workerWatchers) w(e)
  }

  /** Collect-first mode: reads the whole source into `into`, then closes it. */
  private async collect(into: Channel<unknown>): Promise<boolean> {
    const src = this.source
    const w = new Waiter()
    for (;;) {
      let x = src.poll(w)
      if (x === EMPTY) {
        await src.wait(w)
        x = w.item
        w.item = undefined
      }
      if (x === DONE || this.state !== RUNNING) break
      into.offer(x)
    }
    if (this.state !== RUNNING) return false
    into.close()
    return true
  }

  /**
   * Ends the input gracefully: a feed is ended (what it accepted is still processed), any other
   * source stops being pulled and is closed. Items already taken in are finished.
   */
  endInput(): void {
    if (this.state !== RUNNING) return
    if (this.source.endInput !== undefined) this.source.endInput()
    else this.source.abort()
  }

  fail(err: unknown, stage: string, worker: number, item: unknown): void {
    if (this.state !== RUNNING) return
    this.state = FAILED
    this.error = new TaskException(err, stage, worker, item)
    this.shutdown(this.error)
  }

  /** Stops the run without an error: `reject` says whether its consumer then rejects with `reason`. */
  stop(reason: unknown, reject: boolean): void {
    if (this.state !== RUNNING) return
    this.state = STOPPED
    this.error = reason
    this.rejectOnStop = reject
    this.shutdown(reason)
  }

  /** The consumer saw the end of the output. */
  finish(): void {
    if (this.state !== RUNNING) return
    this.state = FINISHED
    this.endedAt = performance.now()
    this.unlink()
    this.stopProgress()
  }

  /**
   * Calls `report` every `intervalMs` while the run lives, and once more when it ends; a run can
   * have several watchers. The timer is unref'd (it never keeps a process alive) and cleared when
   * the run ends. `report` must not throw (a watcher catches its own errors). Returns a function
   * that stops watching, without the final call.
   */
  watch(report: (run: Execution) => void, intervalMs: number): () => void {
    if (this.state !== RUNNING) {
      report(this)
      return noop
    }
    const timer = setInterval(() => report(this), intervalMs)
    timer.unref()
    const w: Watcher = { report, timer }
    this.watchers.add(w)
    return () => {
      clearInterval(timer)
      this.watchers.delete(w)
    }
  }

  /**
   * Makes the run's promise (and the last `next()` of its results) wait for `work` once the run
   * has ended: a report being written. `work` must never reject (it warns about its own failures).
   */
  hold(work: Promise<void>): void {
    ;(this.holds ??= []).push(work)
  }

  /** Resolves once the work held by hold() is done; undefined when there is none (most runs). */
  released(): Promise<unknown> | undefined {
    return this.holds === undefined ? undefined : Promise.all(this.holds)
  }

  private stopProgress(): void {
    const watchers = [...this.watchers]
    this.watchers.clear()
    for (const w of watchers) clearInterval(w.timer)
    for (const w of watchers) w.report(this)
  }

  stageFinished(index: number): void {
    // stage `index` needs no more input: stop everything that feeds it (a no-op when it all ended)
    for (let j = index - 1; j >= 0; j--) {
      const s = this.stages[j]!
      if (s.live > 0) s.halt(new RunStopped('a later stage stopped reading its input'))
    }
    this.source.abort()
  }

  workerExited(): void {
    if (this.settleWaiters.length > 0 && this.allExited()) {
      const waiters = this.settleWaiters
      this.settleWaiters = []
      for (const wake of waiters) wake()
    }
  }

  private allExited(): boolean {
    for (const s of this.stages) if (s.live > 0) return false
    return true
  }

  /**
   * Resolves once every worker has returned, or after SETTLE_GRACE_MS for workers that ignore
   * their signal (they are left to finish in the background; their results are dropped and
   * their errors swallowed by their loops).
   */
  settled(): Promise<void> {
    if (this.allExited()) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(done, SETTLE_GRACE_MS)
      this.settleWaiters.push(done)
    })
  }

  /** Settles the run after its output said DONE: resolves, or rejects with the run's error. */
  async end(): Promise<void> {
    if (this.state === RUNNING) {
      this.finish()
      return
    }
    await this.settled()
    if (this.state === FAILED || (this.state === STOPPED && this.rejectOnStop)) throw this.error
  }

  private shutdown(reason: unknown): void {
    this.endedAt = performance.now()
    this.unlink()
    this.stopProgress()
    this.source.abort()
    for (const s of this.stages) s.halt(reason)
  }

  private unlink(): void {
    if (this.signal !== undefined) {
      this.signal.removeEventListener('abort', this.onAbort)
      this.signal = undefined
    }
  }
}

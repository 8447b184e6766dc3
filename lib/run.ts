/**
 * One execution of a pipeline: opens the source, wires a channel and a worker group per stage,
 * and owns the run's lifecycle. The first failure wins and stops everything; a stop (consumer
 * break, caller's signal) does the same without an error. State moves forward only:
 * running -> done | failed | stopped, and every transition is idempotent.
 * @module
 */
import { describeCause, RunStopped, TaskException } from './errors.js'
import { Group, type RunHooks } from './group.js'
import { SETTLE_GRACE_MS } from './options.js'
import { Channel, DONE, EMPTY, type Inlet, OrderedChannel, Waiter } from './queue.js'
import { emptyInlet, openSource, type Source } from './source.js'
import { RUNNER, type Stage, type StageRunner } from './stage.js'

export const RUNNING = 0
export const FINISHED = 1
export const FAILED = 2
export const STOPPED = 3
export type RunState = typeof RUNNING | typeof FINISHED | typeof FAILED | typeof STOPPED

/** What a run is built from: a pipeline's source, stages and the names it resolved for them. */
export interface RunPlan {
  readonly source: Source<unknown>
  readonly stages: readonly Stage<any, any>[]
  readonly names: readonly string[]
}

export class Run implements RunHooks {
  state: RunState = RUNNING
  /** The TaskException of a failed run, or the reason of a stopped one. */
  error: unknown = undefined
  /** Whether a stopped run rejects (the caller's signal aborted) or ends quietly (the consumer stopped). */
  rejectOnStop = false
  readonly groups: Group[] = []
  readonly output: Inlet<unknown>
  private source: Inlet<unknown> = emptyInlet
  private signal: AbortSignal | undefined
  private settleWaiters: (() => void)[] = []
  private progressTimer: ReturnType<typeof setInterval> | undefined
  private onProgress: ((run: Run) => void) | undefined
  private readonly onAbort = (): void => {
    this.stop(this.signal!.reason, true)
  }

  /** When the run started (performance.now()). */
  readonly startedAt = performance.now()
  /** When the run ended, if it has. */
  endedAt: number | undefined = undefined
  /** Items the consumer has taken from the last stage. */
  delivered = 0

  /**
   * @param collectInput read the whole source before the first stage starts (collect-first mode);
   *   memory then holds every input item at once
   */
  constructor(plan: RunPlan, signal?: AbortSignal, collectInput = false) {
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
    const runners: StageRunner[] = []
    let inlet = this.source
    let collected: Channel<unknown> | undefined
    if (collectInput && sourceError === undefined && plan.stages.length > 0) {
      // an unbounded channel in front of the first stage: the source can never wait on a stage
      // that has not started yet (pipeframe's batch mode deadlocks on its bounded buffer there)
      collected = inlet = new Channel<unknown>(Number.POSITIVE_INFINITY)
    }
    for (let i = 0; i < plan.stages.length; i++) {
      const s = plan.stages[i]!
      const runner = s[RUNNER](s.options, plan.names[i]!)
      const { qsize, workers } = s.options
      const out = runner.ordered ? new OrderedChannel<unknown>(qsize + workers) : new Channel<unknown>(qsize)
      this.groups.push(new Group(this, i, plan.names[i]!, inlet, out, workers))
      runners.push(runner)
      inlet = out
    }
    this.output = inlet
    // stage fusion: a worker of an unordered stage may call the next stage's function itself
    // when that stage is a plain map stage with an idle worker (fusion.ts)
    for (let i = 1; i < runners.length; i++) {
      const fn = runners[i]!.fusable
      const prev = this.groups[i - 1]!
      if (fn !== undefined && prev.output instanceof Channel) {
        this.groups[i]!.fuseFn = fn
        prev.next = this.groups[i]
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
        if (ok) this.launch(runners)
      })
      return
    }
    this.launch(runners)
  }

  private launch(runners: StageRunner[]): void {
    // every group exists before any starts, so a failure during launch reaches them all. Last
    // stage first: each stage's workers are parked on their empty input before the stage before
    // starts, so stage fusion (fusion.ts) applies from the first item, instead of a backlog
    // queueing up in front of stages that did not exist yet and keeping their workers busy
    for (let i = runners.length - 1; i >= 0 && this.state === RUNNING; i--)
      runners[i]!.launch(this.groups[i]!)
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
   * Calls `report` every `intervalMs` while the run lives, and once more when it ends. The timer
   * is unref'd (it never keeps a process alive) and cleared when the run ends.
   */
  watch(report: (run: Run) => void, intervalMs: number): void {
    if (this.state !== RUNNING) {
      report(this)
      return
    }
    this.onProgress = report
    this.progressTimer = setInterval(() => report(this), intervalMs)
    this.progressTimer.unref()
  }

  private stopProgress(): void {
    if (this.progressTimer === undefined) return
    clearInterval(this.progressTimer)
    this.progressTimer = undefined
    const report = this.onProgress!
    this.onProgress = undefined
    report(this)
  }

  stageFinished(index: number): void {
    // stage `index` needs no more input: stop everything that feeds it (a no-op when it all ended)
    for (let j = index - 1; j >= 0; j--) {
      const g = this.groups[j]!
      if (g.live > 0) g.halt(new RunStopped('a later stage stopped reading its input'))
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
    for (const g of this.groups) if (g.live > 0) return false
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
    for (const g of this.groups) g.halt(reason)
  }

  private unlink(): void {
    if (this.signal !== undefined) {
      this.signal.removeEventListener('abort', this.onAbort)
      this.signal = undefined
    }
  }

  /** Reads the whole output, calling `each` per item; resolves once the run has ended. */
  async drain(each: (x: unknown) => void): Promise<void> {
    const out = this.output
    const w = new Waiter()
    for (;;) {
      let x = out.poll(w)
      if (x === EMPTY) {
        await out.wait(w)
        x = w.item
        w.item = undefined
      }
      if (x === DONE) break
      this.delivered++
      each(x)
    }
    await this.end()
  }
}

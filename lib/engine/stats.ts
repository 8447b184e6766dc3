/**
 * Run statistics: a snapshot of every stage's counters, queue fill and sampled timings, cheap
 * enough to take on an interval while the run goes on.
 * @module
 */
import { isThenable } from '../_utils.js'
import { describeCause } from '../errors.js'
import { type Execution, FAILED, FINISHED, RUNNING, STOPPED, type WorkersEvent } from './execution.js'
import type { StageRun } from './stage-run.js'
import type { TimeTotals } from './time.js'

/**
 * One stage's figures at the moment of a snapshot.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type StageStats } from 'stageline'
 * const run = pipe([1, 2, 3], mapStage((n: number) => n * 2, { name: 'double' })).start()
 * await run.done
 * const s: StageStats = run.stats().stages[0]!
 * console.log(s.name, s.in, s.out, s.failed) // double 3 3 0
 * ```
 */
export interface StageStats {
  /** The stage's name. */
  readonly name: string
  /**
   * The stage's concurrency units now: its workers (map and generator stages), its threads (thread
   * stages), or its in-flight slots (`capacity` of a Redis stage). A tuned stage's moves.
   */
  readonly workers: number
  /** `'auto'` while the stage's workers tune themselves, `'fixed'` otherwise. */
  readonly tuning: 'auto' | 'fixed'
  /**
   * Units working right now: a worker holding an item (running its function, waiting for a retry,
   * a rate limit or a `limit` slot), running `init`/`dispose`, or a generator stage's function
   * running between its reads; a thread holding a batch; a Redis slot holding an item in Redis.
   * Workers waiting for input or for room downstream are not busy.
   */
  readonly busy: number
  /**
   * The most items the stage holds in flight, taken and not yet out: its workers for map and
   * generator stages, 2 x threads x batch for a thread stage, `capacity` for a Redis stage.
   */
  readonly bound: number
  /** Items taken from the stage's input. */
  readonly in: number
  /** Items handed to the stage's output. */
  readonly out: number
  /** Items that failed: skipped by `errors: 'skip'`, or the one that failed the run. */
  readonly failed: number
  /** Items dropped on purpose (`skip`, a filter). */
  readonly skipped: number
  /** Retries made. */
  readonly retried: number
  /** Items waiting in the stage's output queue (with `ordered`, the reorder window included). */
  readonly queued: number
  /** Capacity of the output queue (`qsize`, or `qsize + workers` with `ordered`). */
  readonly capacity: number
  /** Mean time per item in ms over the sampled items, or undefined before any sample. */
  readonly meanMs: number | undefined
  /** 95th percentile of the latest sampled per-item times in ms, or undefined. */
  readonly p95Ms: number | undefined
  /** Items out per second since the run started. */
  readonly perSecond: number
  /** Worker-milliseconds spent working since the run started, summed over the stage's units (see `busy`). */
  readonly workingMs: number
  /** Worker-milliseconds spent starved: waiting for input (upstream is the limit). */
  readonly starvedMs: number
  /** Worker-milliseconds spent blocked: holding a result with no room downstream (downstream is the limit). */
  readonly blockedMs: number
  /**
   * The share of the stage's unit time spent working since the previous snapshot taken by the same
   * watcher (`onProgress`, or `run.stats()`), from 0 to 1; since the run started, for the first.
   */
  readonly busyShare: number
}

/**
 * A run's figures at the moment of a snapshot.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type RunStats } from 'stageline'
 * let last: RunStats | undefined
 * await pipe([1, 2, 3], mapStage((n: number) => n)).toArray({ onProgress: (stats) => (last = stats) })
 * console.log(last?.state, last?.itemsOut) // done 3
 * ```
 */
export interface RunStats {
  /** The run's id, the same in every snapshot of one run (reports and dashboards name runs by it). */
  readonly runId: string
  /** `running`, `done`, `failed` or `stopped`. */
  readonly state: 'running' | 'done' | 'failed' | 'stopped'
  /** Milliseconds since the run started (until it ended, once it has). */
  readonly elapsedMs: number
  /** Items the consumer has received from the last stage. */
  readonly itemsOut: number
  /** One entry per stage, in pipeline order. */
  readonly stages: readonly StageStats[]
}

const STATE_NAMES = {
  [RUNNING]: 'running',
  [FINISHED]: 'done',
  [FAILED]: 'failed',
  [STOPPED]: 'stopped',
} as const

function p95(s: StageRun): number | undefined {
  const n = Math.min(s.timed, s.samples.length)
  if (n === 0) return undefined
  const sorted = Array.from(s.samples.subarray(0, n)).sort((a, b) => a - b)
  return sorted[Math.min(n - 1, Math.floor(n * 0.95))]
}

/**
 * Every stage's time totals, with the calls upstream workers made for a stage's idle workers (stage
 * fusion) moved from the stage that made them to the stage whose function ran: their sampled time,
 * by caller, scaled up by the share of the calls that were sampled.
 */
function timeOf(stages: readonly StageRun[]): TimeTotals[] {
  const t = stages.map((s) => s.book.read())
  for (const c of stages) {
    const by = c.fusedMsBy
    if (by === undefined || c.fusedTimed === 0) continue
    // the timed calls are a sample of all fused calls: each caller's share scaled up to the whole
    const scale = c.fusedCalls / c.fusedTimed
    let total = 0
    for (let b = 0; b < by.length; b++) {
      const est = by[b]! * scale
      if (est === 0) continue
      const caller = t[b]!
      const moved = Math.min(est, caller.workingMs)
      caller.workingMs -= moved
      caller.starvedMs += moved
      total += moved
    }
    const callee = t[c.index]!
    const moved = Math.min(total, callee.starvedMs)
    callee.starvedMs -= moved
    callee.workingMs += moved
  }
  return t
}

const ZERO: TimeTotals = { workingMs: 0, starvedMs: 0, blockedMs: 0 }

function stageStats(s: StageRun, time: TimeTotals, prev: TimeTotals, elapsedMs: number): StageStats {
  const out = s.output as unknown as { length?: number; capacity?: number }
  const dw = time.workingMs - prev.workingMs
  const dall = dw + (time.starvedMs - prev.starvedMs) + (time.blockedMs - prev.blockedMs)
  return {
    name: s.name,
    workers: s.workers,
    tuning: s.tuned ? 'auto' : 'fixed',
    busy: s.book.working,
    bound: s.plan.bound,
    in: s.taken,
    out: s.emitted,
    failed: s.failed,
    skipped: s.skipped,
    retried: s.retried,
    queued: out.length ?? 0,
    capacity: out.capacity ?? 0,
    meanMs: s.timed > 0 ? s.timeSum / s.timed : undefined,
    p95Ms: p95(s),
    perSecond: elapsedMs > 0 ? (s.emitted * 1000) / elapsedMs : 0,
    workingMs: time.workingMs,
    starvedMs: time.starvedMs,
    blockedMs: time.blockedMs,
    busyShare: clamp01(dall > 0 ? dw / dall : 0),
  }
}

function clamp01(x: number): number {
  return Math.min(1, Math.max(0, x))
}

/**
 * Takes a snapshot of a run. `since` holds the time totals of the previous snapshot of whoever takes
 * this one (each watcher of a run has its own, so that `busyShare` is the share since its own last
 * look); it is updated in place. @internal
 */
export function snapshot(run: Execution, since: TimeTotals[] = []): RunStats {
  const elapsedMs = (run.endedAt ?? performance.now()) - run.startedAt
  const time = timeOf(run.stages)
  const stages = run.stages.map((s, i) => stageStats(s, time[i]!, since[i] ?? ZERO, elapsedMs))
  for (let i = 0; i < time.length; i++) since[i] = time[i]!
  return { runId: run.id, state: STATE_NAMES[run.state], elapsedMs, itemsOut: run.delivered, stages }
}

/** Reports snapshots of `run` to `onProgress`; a throwing callback fails the run. @internal */
export function watchProgress(
  run: Execution,
  onProgress: (stats: RunStats) => unknown,
  intervalMs: number,
): void {
  let threw = false
  const failed = (err: unknown): void => {
    // a callback that threw is not called again: failing the run would otherwise call it at once
    // for the final snapshot, from inside its own failure, and warn about the same error twice
    if (threw) return
    threw = true
    if (run.state === RUNNING) run.fail(err, 'onProgress', 0, undefined)
    else process.emitWarning(`stageline: onProgress threw after the run ended: ${describeCause(err)}`)
  }
  const since: TimeTotals[] = []
  run.watch((r) => {
    if (threw) return
    try {
      const p = onProgress(snapshot(r, since))
      // not awaited (a slow callback does not hold the run up), but its rejection is not left unhandled
      if (isThenable(p)) p.then(undefined, failed)
    } catch (err) {
      failed(err)
    }
  }, intervalMs)
}

/** Reports every change of a stage's workers to `onWorkers`; a throwing or rejecting one fails the run. @internal */
export function watchWorkers(run: Execution, onWorkers: (e: WorkersEvent) => unknown): void {
  let threw = false
  const failed = (err: unknown): void => {
    if (threw) return
    threw = true
    if (run.state === RUNNING) run.fail(err, 'onWorkers', 0, undefined)
    else process.emitWarning(`stageline: onWorkers threw after the run ended: ${describeCause(err)}`)
  }
  run.onWorkers((e) => {
    if (threw) return
    try {
      const p = onWorkers(e)
      if (isThenable(p)) p.then(undefined, failed)
    } catch (err) {
      failed(err)
    }
  })
}

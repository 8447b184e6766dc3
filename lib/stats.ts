/**
 * Run statistics: a snapshot of every stage's counters, queue fill and sampled timings, cheap
 * enough to take on an interval while the run goes on.
 * @module
 */
import { isThenable } from './_utils.js'
import { describeCause } from './errors.js'
import type { Group } from './group.js'
import { FAILED, FINISHED, RUNNING, type Run, STOPPED } from './run.js'

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
  /** Workers in the stage. */
  readonly workers: number
  /** Workers working on an item right now (map stages; generator stages report 0). */
  readonly busy: number
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

function p95(g: Group): number | undefined {
  const n = Math.min(g.timed, g.samples.length)
  if (n === 0) return undefined
  const sorted = Array.from(g.samples.subarray(0, n)).sort((a, b) => a - b)
  return sorted[Math.min(n - 1, Math.floor(n * 0.95))]
}

function stageStats(g: Group, elapsedMs: number): StageStats {
  const out = g.output as unknown as { length?: number; capacity?: number }
  return {
    name: g.name,
    workers: g.workers,
    busy: g.busy,
    in: g.taken,
    out: g.emitted,
    failed: g.failed,
    skipped: g.skipped,
    retried: g.retried,
    queued: out.length ?? 0,
    capacity: out.capacity ?? 0,
    meanMs: g.timed > 0 ? g.timeSum / g.timed : undefined,
    p95Ms: p95(g),
    perSecond: elapsedMs > 0 ? (g.emitted * 1000) / elapsedMs : 0,
  }
}

/** Takes a snapshot of a run. @internal */
export function snapshot(run: Run): RunStats {
  const elapsedMs = (run.endedAt ?? performance.now()) - run.startedAt
  return {
    state: STATE_NAMES[run.state],
    elapsedMs,
    itemsOut: run.delivered,
    stages: run.groups.map((g) => stageStats(g, elapsedMs)),
  }
}

/** Reports snapshots of `run` to `onProgress`; a throwing callback fails the run. @internal */
export function watchProgress(run: Run, onProgress: (stats: RunStats) => unknown, intervalMs: number): void {
  let threw = false
  const failed = (err: unknown): void => {
    // a callback that threw is not called again: failing the run would otherwise call it at once
    // for the final snapshot, from inside its own failure, and warn about the same error twice
    if (threw) return
    threw = true
    if (run.state === RUNNING) run.fail(err, 'onProgress', 0, undefined)
    else process.emitWarning(`stageline: onProgress threw after the run ended: ${describeCause(err)}`)
  }
  run.watch((r) => {
    if (threw) return
    try {
      const p = onProgress(snapshot(r))
      // not awaited (a slow callback does not hold the run up), but its rejection is not left unhandled
      if (isThenable(p)) p.then(undefined, failed)
    } catch (err) {
      failed(err)
    }
  }, intervalMs)
}

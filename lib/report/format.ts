/**
 * The run report's data, as written to a `.json` report and embedded in an `.html` one. Version 1;
 * a change that a reader of version 1 could misread raises the version.
 * @module
 */

/**
 * The version of the report format this build writes and reads.
 *
 * @example
 * ```ts
 * import { REPORT_VERSION, type RunReport } from 'stageline/report'
 * const readable = (r: RunReport) => r.format === 'stageline-report' && r.version === REPORT_VERSION
 * console.log(REPORT_VERSION) // 1
 * ```
 */
export const REPORT_VERSION = 1

/**
 * A run report: what a run with the `report` option writes (the `.json` form, or embedded in the
 * `.html` page), and what {@link renderReport} turns into a page.
 *
 * Counters in `samples` are cumulative since the run started (items, worker-milliseconds), so a
 * rate or a share over any stretch of the run is the difference of two samples; `queued` and
 * `workers` are the mean over the stretch that ends at each sample.
 *
 * @example
 * ```ts
 * import { readFile } from 'node:fs/promises'
 * import { join } from 'node:path'
 * import { tmpdir } from 'node:os'
 * import { mapStage, pipe } from 'stageline'
 * import type { RunReport } from 'stageline/report'
 * const path = join(tmpdir(), `run-${process.pid}.json`)
 * await pipe([1, 2, 3], mapStage((n: number) => n * 2, { name: 'double' })).toArray({ report: path })
 * const report = JSON.parse(await readFile(path, 'utf8')) as RunReport
 * console.log(report.version, report.state, report.stages[0]?.name, report.stages[0]?.out) // 1 done double 3
 * ```
 */
export interface RunReport {
  /** Always `'stageline-report'`. */
  readonly format: 'stageline-report'
  /** The format's version: {@link REPORT_VERSION}. */
  readonly version: typeof REPORT_VERSION
  /** The run's id (`RunStats.runId`). */
  readonly runId: string
  /** When the run started, as an ISO 8601 date and time. */
  readonly startedAt: string
  /** When this report was written. */
  readonly writtenAt: string
  /** `running` (a background run's report rewritten while it lives), `done`, `failed` or `stopped`. */
  readonly state: 'running' | 'done' | 'failed' | 'stopped'
  /** Milliseconds from the start of the run to its end (or to this report, while it runs). */
  readonly elapsedMs: number
  /** Items the consumer received from the last stage. */
  readonly itemsOut: number
  /** Why the run failed or was stopped, or null. */
  readonly error: ReportError | null
  /** The stage that held the run back, or null when none did (see `verdict`). */
  readonly bottleneck: Bottleneck | null
  /** One sentence on where the run spent its time: the bottleneck's `reason`, or why there is none. */
  readonly verdict: string
  /** What to change, fitted to the stage (or to the source or the consumer), or null. */
  readonly advice: string | null
  /** The share of the run the event loop was busy (0..1): high when the main thread's CPU is the limit. */
  readonly eventLoopBusy: number | null
  /** The CPU cores of the machine the run ran on. */
  readonly cores: number
  /** False when the run was asked to leave items out (`reportItems: false`). */
  readonly itemsIncluded: boolean
  /** Every stage, in pipeline order, with its totals at the end. */
  readonly stages: readonly ReportStage[]
  /** The stages over time. */
  readonly samples: ReportSamples
  /**
   * Things that happened to a stage during the run, at a time (a stage's workers changed, and why).
   * Empty in this version of stageline; readers should show what they find.
   */
  readonly events: readonly ReportEvent[]
}

/**
 * The stage that held a run back (see the bottleneck rule in docs/stats-and-progress.md).
 *
 * @example
 * ```ts
 * import type { Bottleneck } from 'stageline/report'
 * const b: Bottleneck = {
 *   stage: 'parse',
 *   index: 1,
 *   reason: 'parse is the bottleneck: its workers were busy 97% of the time, while fetch waited for room 80% and store waited for input 85%',
 * }
 * ```
 */
export interface Bottleneck {
  /** The stage's name. */
  readonly stage: string
  /** Its 0-based position in the pipeline. */
  readonly index: number
  /** One plain sentence: why it is the bottleneck. */
  readonly reason: string
}

/**
 * Why a run failed or stopped, rendered for a report.
 *
 * @example
 * ```ts
 * import type { ReportError } from 'stageline/report'
 * const e: ReportError = {
 *   name: 'TaskException', message: 'The task "parse-0" raised Error: bad line', stage: 'parse',
 *   worker: 0, item: "'x,y'", cause: 'Error: bad line', stack: null,
 * }
 * ```
 */
export interface ReportError {
  /** The error's name (`TaskException`, `RunStopped`, ...), or the type of a value that is not an Error. */
  readonly name: string
  /** Its message. */
  readonly message: string
  /** The stage that failed (`"source"`, `"onResult"`...), for a TaskException; else null. */
  readonly stage: string | null
  /** The worker that failed, for a TaskException; else null. */
  readonly worker: number | null
  /**
   * The item the stage failed on, rendered with bounded depth and length; absent when items are
   * left out of the report or the item is not known.
   */
  readonly item?: string
  /** The cause (what the stage threw), described; null when there is none. */
  readonly cause: string | null
  /** The cause's stack, cut to a bounded length, or null. */
  readonly stack: string | null
}

/**
 * A stage in a report: what it is and its totals at the end of the run.
 *
 * @example
 * ```ts
 * import type { ReportStage } from 'stageline/report'
 * const busiest = (stages: readonly ReportStage[]) =>
 *   [...stages].sort((a, b) => b.workingMs - a.workingMs)[0]?.name
 * ```
 */
export interface ReportStage {
  /** The stage's name. */
  readonly name: string
  /** Its 0-based position. */
  readonly index: number
  /** The factory that made it: `mapStage`, `stage`, `batch`, `flatMap`, `threadStage`, `redisStage`. */
  readonly kind: string
  /** Its concurrency units at the end (workers, threads or in-flight slots). */
  readonly workers: number
  /** The most items it holds in flight. */
  readonly bound: number
  /** Its output queue's capacity; null when unbounded. */
  readonly capacity: number | null
  /** Its output keeps input order. */
  readonly ordered: boolean
  /** It has a rate limit (`rate`). */
  readonly rateLimited: boolean
  /** It shares a concurrency limit (`limit`). */
  readonly limited: boolean
  /** Items taken in, handed out, failed, skipped, and retries made (as in `StageStats`). */
  readonly in: number
  readonly out: number
  readonly failed: number
  readonly skipped: number
  readonly retried: number
  /** Sampled mean and 95th percentile time per item in ms, or null where not timed. */
  readonly meanMs: number | null
  readonly p95Ms: number | null
  /** Worker-milliseconds working, starved (waiting for input) and blocked (waiting for room). */
  readonly workingMs: number
  readonly starvedMs: number
  readonly blockedMs: number
}

/**
 * The stages over time: one entry per sample in `t`, and the same number in every series.
 *
 * @example
 * ```ts
 * import type { ReportSamples } from 'stageline/report'
 * // items out per second of stage 0 between the last two samples
 * const lastRate = (s: ReportSamples) => {
 *   const n = s.t.length - 1
 *   const out = s.stages[0]!.out
 *   return n > 0 ? ((out[n]! - out[n - 1]!) * 1000) / (s.t[n]! - s.t[n - 1]!) : 0
 * }
 * ```
 */
export interface ReportSamples {
  /** Milliseconds between samples at the end of the run (100, doubled each time the samples were merged). */
  readonly intervalMs: number
  /** Each sample's time, in milliseconds since the run started; the first is 0. */
  readonly t: readonly number[]
  /** One entry per stage, in pipeline order. */
  readonly stages: readonly StageSeries[]
}

/**
 * One stage's series in a report.
 *
 * @example
 * ```ts
 * import type { StageSeries } from 'stageline/report'
 * const peakQueue = (s: StageSeries) => Math.max(...s.queued)
 * ```
 */
export interface StageSeries {
  /** Cumulative counters at each sample. */
  readonly in: readonly number[]
  readonly out: readonly number[]
  readonly failed: readonly number[]
  readonly skipped: readonly number[]
  readonly retried: readonly number[]
  /** Cumulative worker-milliseconds in each state at each sample. */
  readonly workingMs: readonly number[]
  readonly starvedMs: readonly number[]
  readonly blockedMs: readonly number[]
  /** Items in the output queue, the mean over the stretch ending at each sample. */
  readonly queued: readonly number[]
  /** Concurrency units, the mean over the stretch ending at each sample (they move when workers change). */
  readonly workers: readonly number[]
}

/**
 * Something that happened to a stage at a time during the run.
 *
 * @example
 * ```ts
 * import type { ReportEvent } from 'stageline/report'
 * const e: ReportEvent = { at: 1200, stage: 'fetch', kind: 'workers', detail: '8 -> 12: its queue stayed full' }
 * ```
 */
export interface ReportEvent {
  /** Milliseconds since the run started. */
  readonly at: number
  /** The stage's name. */
  readonly stage: string
  /** What kind of event. */
  readonly kind: string
  /** What happened, in words. */
  readonly detail: string
}

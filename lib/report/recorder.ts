/**
 * Recording a run for its report: every stage sampled at most 100 ms apart, at most 600 samples a
 * stage (when there would be more, neighbouring samples are merged two by two and the interval
 * doubles, so a report's size is bounded whatever the run's length), and the report written when
 * the run settles. Loaded by the run only when a report is asked for.
 * @module
 */
import { rename, unlink, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { type Execution, RUNNING, type RunPlan } from '../engine/execution.js'
import { snapshot } from '../engine/stats.js'
import type { Clock } from '../engine/time.js'
import { describeCause } from '../errors.js'
import { MAX_TIMER_MS } from '../options/limits.js'
import { reportFormat } from '../options/report-path.js'
import { KIND } from '../stage.js'
import { findBottleneck, type StageTime } from './bottleneck.js'
import {
  REPORT_VERSION,
  type ReportEvent,
  type ReportStage,
  type RunReport,
  type StageSeries,
} from './format.js'
import { reportError } from './preview.js'
import { renderReport } from './render.js'

/** The longest time between two samples at the start of a run, in ms. */
export const SAMPLE_MS = 100
/** The most samples a stage keeps. */
export const MAX_SAMPLES = 600

/** How a run is recorded. */
export interface RecordOptions {
  /** Where the report is written (its extension picks the format). */
  readonly path: string
  /** Put items in the report. */
  readonly items: boolean
  /** Rewrite the report this often while the run lives (background runs), or never. */
  readonly rewriteMs?: number | undefined
  /** The clock samples are timed by, and when the run started on it (specs inject them). */
  readonly clock?: Clock
  readonly t0?: number
  /** Take samples only when sample() is called (specs drive it, on their clock), not on a timer. */
  readonly manual?: boolean
}

/** A run being recorded. */
export interface Recording {
  /** Resolves once the report of the ended run is written, or its failure warned about; never rejects. */
  readonly written: Promise<void>
  /** Takes a sample now, if one is due. */
  sample(): void
  /** The report as of now. */
  report(): RunReport
}

type Series = { -readonly [K in keyof StageSeries]: number[] }

const COUNTERS = ['in', 'out', 'failed', 'skipped', 'retried', 'workingMs', 'starvedMs', 'blockedMs'] as const
const GAUGES = ['queued', 'workers'] as const

/** A stage's series with its zero sample: nothing counted yet, its planned units. */
function emptySeries(workers: number): Series {
  return {
    in: [0],
    out: [0],
    failed: [0],
    skipped: [0],
    retried: [0],
    workingMs: [0],
    starvedMs: [0],
    blockedMs: [0],
    queued: [0],
    workers: [workers],
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10
const round2 = (x: number): number => Math.round(x * 100) / 100

class Recorder implements Recording {
  readonly written: Promise<void>
  private readonly clock: Clock
  private readonly t0: number
  private readonly t: number[] = [0]
  private readonly series: Series[]
  private step = SAMPLE_MS
  private unwatch: (() => void) | undefined
  private ended = false
  private writing: Promise<void> | undefined
  private readonly elu0 = performance.eventLoopUtilization()
  private resolveWritten!: () => void

  constructor(
    private readonly exec: Execution,
    private readonly plan: RunPlan,
    private readonly options: RecordOptions,
  ) {
    this.clock = options.clock ?? performance.now.bind(performance)
    this.t0 = options.t0 ?? exec.startedAt
    this.series = exec.stages.map((s) => emptySeries(s.plan.workers))
    this.written = new Promise((resolve) => {
      this.resolveWritten = resolve
    })
    this.watch()
    const every = options.rewriteMs
    if (every !== undefined && !this.ended) {
      exec.watch((run) => {
        if (run.state === RUNNING && this.writing === undefined) void this.write()
      }, every)
    }
  }

  private watch(): void {
    this.unwatch?.()
    // a manual recording is still told when the run ends: by a watcher whose timer never fires
    const every = this.options.manual === true ? MAX_TIMER_MS : this.step
    this.unwatch = this.exec.watch((run) => {
      if (run.state === RUNNING) this.sample()
      else this.end()
    }, every)
  }

  sample(): void {
    this.take(false)
  }

  private take(final: boolean): void {
    const now = this.clock() - this.t0
    const t = this.t
    let at = t.length
    // a timer may fire a little before its time is up on this clock: a sample is due a little early
    if (!final && now - t[at - 1]! < this.step - Math.min(this.step * 0.1, SAMPLE_MS / 2)) return
    // a final sample at the time of the last one replaces it (never the zero sample)
    if (at > 1 && now <= t[at - 1]!) at--
    t[at] = Math.max(now, t[at - 1] ?? 0)
    const stats = snapshot(this.exec).stages
    for (let i = 0; i < this.series.length; i++) {
      const s = this.series[i]!
      const st = stats[i]!
      for (const k of COUNTERS) s[k][at] = st[k]
      s.queued[at] = st.queued
      s.workers[at] = st.workers
    }
    if (t.length > MAX_SAMPLES) this.merge()
  }

  /**
   * Merges neighbouring samples two by two (the zero sample stays): counters are cumulative, so the
   * later sample of a pair holds the pair's totals; gauges become their mean over the pair's time.
   */
  private merge(): void {
    const t = this.t
    const n = t.length
    let w = 1
    for (let r = 1; r < n; r += 2, w++) {
      const pair = r + 1 < n
      const j = pair ? r + 1 : r
      const before = t[w - 1]!
      const d1 = t[r]! - before
      const d2 = t[j]! - t[r]!
      for (const s of this.series) {
        for (const k of COUNTERS) s[k][w] = s[k][j]!
        for (const k of GAUGES) {
          const a = s[k][r]!
          const b = s[k][j]!
          s[k][w] = !pair ? a : d1 + d2 > 0 ? (a * d1 + b * d2) / (d1 + d2) : (a + b) / 2
        }
      }
      t[w] = t[j]!
    }
    t.length = w
    for (const s of this.series) for (const k of [...COUNTERS, ...GAUGES]) s[k].length = w
    this.step *= 2
    if (this.options.manual !== true && !this.ended) this.watch()
  }

  private end(): void {
    if (this.ended) return
    this.ended = true
    this.unwatch?.()
    void this.finish()
  }

  private async finish(): Promise<void> {
    try {
      // the run has ended; its workers may still be returning (a failure halts them): the report
      // shows them once they have
      await this.exec.settled()
      if (this.writing !== undefined) await this.writing
      this.take(true)
      await this.write()
    } finally {
      this.resolveWritten()
    }
  }

  private write(): Promise<void> {
    const path = this.options.path
    const work = (async () => {
      const tmp = `${path}.${process.pid}-${this.exec.id}.tmp`
      try {
        const report = this.report()
        const text = reportFormat(path) === 'json' ? reportJson(report) : renderReport(report)
        // written whole, then moved into place: a reader never sees half a report
        await writeFile(tmp, text)
        await rename(tmp, path)
      } catch (err) {
        await unlink(tmp).catch(() => {})
        process.emitWarning(`stageline: could not write the run report to ${path}: ${describeCause(err)}`)
      }
    })()
    const tracked: Promise<void> = work.finally(() => {
      if (this.writing === tracked) this.writing = undefined
    })
    this.writing = tracked
    return tracked
  }

  report(): RunReport {
    const exec = this.exec
    const snap = snapshot(exec)
    const n = this.t.length
    const stages: ReportStage[] = snap.stages.map((st, i) => {
      const stage = this.plan.stages[i]!
      const options = stage.options as { rate?: unknown; limit?: unknown }
      return {
        name: st.name,
        index: i,
        kind: stage[KIND].factory,
        workers: st.workers,
        bound: st.bound,
        capacity: Number.isFinite(st.capacity) ? st.capacity : null,
        ordered: exec.stages[i]!.plan.ordered,
        rateLimited: options.rate !== undefined,
        limited: options.limit !== undefined,
        in: st.in,
        out: st.out,
        failed: st.failed,
        skipped: st.skipped,
        retried: st.retried,
        meanMs: st.meanMs === undefined ? null : st.meanMs,
        p95Ms: st.p95Ms === undefined ? null : st.p95Ms,
        workingMs: round1(st.workingMs),
        starvedMs: round1(st.starvedMs),
        blockedMs: round1(st.blockedMs),
      }
    })
    const eventLoopBusy = round2(performance.eventLoopUtilization(this.elu0).utilization)
    const cores = availableParallelism()
    const times: StageTime[] = stages.map((s, i) => ({
      ...s,
      queueFill: meanFill(this.t, this.series[i]!.queued, s.capacity),
    }))
    const finding = findBottleneck(times, { eventLoopBusy, cores })
    const elapsedMs = this.options.clock === undefined ? snap.elapsedMs : this.t[n - 1]!
    return {
      format: 'stageline-report',
      version: REPORT_VERSION,
      runId: exec.id,
      startedAt: new Date(Date.now() - (performance.now() - exec.startedAt)).toISOString(),
      writtenAt: new Date().toISOString(),
      state: snap.state,
      elapsedMs: round1(elapsedMs),
      itemsOut: snap.itemsOut,
      error: exec.error === undefined ? null : reportError(exec.error, this.options.items),
      bottleneck: finding.bottleneck,
      verdict: finding.verdict,
      advice: finding.advice,
      eventLoopBusy,
      cores,
      itemsIncluded: this.options.items,
      stages,
      samples: {
        intervalMs: this.step,
        t: this.t.map(round1),
        stages: this.series.map((s) => ({
          in: [...s.in],
          out: [...s.out],
          failed: [...s.failed],
          skipped: [...s.skipped],
          retried: [...s.retried],
          workingMs: s.workingMs.map(round1),
          starvedMs: s.starvedMs.map(round1),
          blockedMs: s.blockedMs.map(round1),
          queued: s.queued.map(round2),
          workers: s.workers.map(round2),
        })),
      },
      // changes of a stage's workers (by its tuner, or run.setWorkers()): the report's timeline
      events: exec.workerEvents.map(
        (e): ReportEvent => ({
          at: round1(e.atMs),
          stage: e.stage,
          kind: 'workers',
          detail: `${e.from} -> ${e.to}: ${e.reason}`,
        }),
      ),
    }
  }
}

/** The time-weighted mean of `queued / capacity` over the samples; null without a bound. */
export function meanFill(
  t: readonly number[],
  queued: readonly number[],
  capacity: number | null,
): number | null {
  if (capacity === null) return null
  let sum = 0
  let span = 0
  for (let i = 1; i < t.length; i++) {
    const dt = t[i]! - t[i - 1]!
    if (!(dt > 0)) continue
    const fill = capacity === 0 ? (queued[i]! > 0 ? 1 : 0) : Math.min(1, queued[i]! / capacity)
    sum += fill * dt
    span += dt
  }
  return span > 0 ? sum / span : 0
}

/**
 * The report as JSON text: indented, with each array of numbers on one line (a series of 600
 * samples one number a line would be hard to read and several times larger).
 */
export function reportJson(report: RunReport): string {
  // a string in JSON holds no raw line break, so a match that spans lines is never inside one
  return `${JSON.stringify(report, null, 2).replace(/\[[\d\s,.eE+-]*\]/g, (m) =>
    m.includes('\n') ? m.replace(/\s+/g, '') : m,
  )}\n`
}

/** Starts recording `exec` for a report (see RecordOptions). */
export function recordRun(exec: Execution, plan: RunPlan, options: RecordOptions): Recording {
  return new Recorder(exec, plan, options)
}

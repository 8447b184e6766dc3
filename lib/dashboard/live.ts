/**
 * What the live page shows of one run: built from the run's snapshots on an interval, with rates
 * and shares over the last few updates (over the whole run once it has ended), and the bottleneck
 * rule of the reports applied to the same stretch.
 * @module
 */
import { availableParallelism } from 'node:os'
import { type Execution, RUNNING, type RunPlan } from '../engine/execution.js'
import { snapshot } from '../engine/stats.js'
import { describeCause } from '../errors.js'
import { findBottleneck, type StageTime } from '../report/bottleneck.js'
import type { Bottleneck } from '../report/format.js'
import { KIND } from '../stage.js'

/** One stage as the live page shows it. */
export interface LiveStage {
  readonly name: string
  readonly kind: string
  readonly workers: number
  readonly busy: number
  readonly queued: number
  /** null when the queue has no bound. */
  readonly capacity: number | null
  readonly in: number
  readonly out: number
  readonly failed: number
  readonly skipped: number
  readonly retried: number
  /** Items out per second over the stretch. */
  readonly perSecond: number
  /** Shares of the stage's worker time over the stretch (0..1). */
  readonly working: number
  readonly starved: number
  readonly blocked: number
}

/** One run as the live page shows it. */
export interface LiveRun {
  readonly runId: string
  readonly state: 'running' | 'done' | 'failed' | 'stopped'
  readonly startedAt: string
  readonly elapsedMs: number
  readonly itemsOut: number
  readonly bottleneck: Bottleneck | null
  readonly verdict: string
  /** The error of a failed run, described. */
  readonly error: string | null
  readonly stages: readonly LiveStage[]
}

/** How many updates the live rates and shares are taken over. */
export const WINDOW = 10

interface Point {
  readonly at: number
  readonly out: readonly number[]
  readonly working: readonly number[]
  readonly starved: readonly number[]
  readonly blocked: readonly number[]
  readonly elu: ReturnType<typeof performance.eventLoopUtilization>
}

/** Follows one run: call `update()` on each watcher call; it returns what the page shows now. */
export class LiveView {
  private readonly history: Point[] = []
  private readonly kinds: string[]
  private readonly flags: { rateLimited: boolean; limited: boolean }[]
  private readonly startedAt: string

  constructor(
    private readonly run: Execution,
    plan: RunPlan,
  ) {
    this.kinds = plan.stages.map((s) => s[KIND].factory)
    this.flags = plan.stages.map((s) => {
      const o = s.options as { rate?: unknown; limit?: unknown }
      return { rateLimited: o.rate !== undefined, limited: o.limit !== undefined }
    })
    this.startedAt = new Date(Date.now() - (performance.now() - run.startedAt)).toISOString()
    const zeros = run.stages.map(() => 0)
    this.history.push({
      at: 0,
      out: zeros,
      working: zeros,
      starved: zeros,
      blocked: zeros,
      elu: performance.eventLoopUtilization(),
    })
  }

  update(): LiveRun {
    const snap = snapshot(this.run)
    const ended = this.run.state !== RUNNING
    const now: Point = {
      at: snap.elapsedMs,
      out: snap.stages.map((s) => s.out),
      working: snap.stages.map((s) => s.workingMs),
      starved: snap.stages.map((s) => s.starvedMs),
      blocked: snap.stages.map((s) => s.blockedMs),
      elu: performance.eventLoopUtilization(),
    }
    // an ended run is judged over the whole run, as its report is; a running one over the last updates
    const from = ended ? this.history[0]! : this.history[Math.max(0, this.history.length - WINDOW)]!
    this.history.push(now)
    if (this.history.length > WINDOW + 1) this.history.splice(1, this.history.length - WINDOW - 1)
    const dt = now.at - from.at
    const stages: LiveStage[] = snap.stages.map((s, i) => {
      const w = now.working[i]! - (from.working[i] ?? 0)
      const st = now.starved[i]! - (from.starved[i] ?? 0)
      const b = now.blocked[i]! - (from.blocked[i] ?? 0)
      const all = w + st + b
      return {
        name: s.name,
        kind: this.kinds[i] ?? 'stage',
        workers: s.workers,
        busy: s.busy,
        queued: s.queued,
        capacity: Number.isFinite(s.capacity) ? s.capacity : null,
        in: s.in,
        out: s.out,
        failed: s.failed,
        skipped: s.skipped,
        retried: s.retried,
        perSecond: dt > 0 ? ((s.out - (from.out[i] ?? 0)) * 1000) / dt : 0,
        working: all > 0 ? w / all : 0,
        starved: all > 0 ? st / all : 0,
        blocked: all > 0 ? b / all : 0,
      }
    })
    const times: StageTime[] = stages.map((s, i) => ({
      name: s.name,
      kind: s.kind,
      workers: s.workers,
      rateLimited: this.flags[i]?.rateLimited ?? false,
      limited: this.flags[i]?.limited ?? false,
      workingMs: s.working,
      starvedMs: s.starved,
      blockedMs: s.blocked,
      queueFill: s.capacity === null || s.capacity === 0 ? null : s.queued / s.capacity,
    }))
    const elu = performance.eventLoopUtilization(now.elu, from.elu).utilization
    const finding = findBottleneck(times, { eventLoopBusy: elu, cores: availableParallelism() })
    return {
      runId: snap.runId,
      state: snap.state,
      startedAt: this.startedAt,
      elapsedMs: snap.elapsedMs,
      itemsOut: snap.itemsOut,
      bottleneck: finding.bottleneck,
      verdict: finding.verdict,
      error:
        this.run.state === RUNNING || this.run.error === undefined ? null : describeCause(this.run.error),
      stages,
    }
  }
}

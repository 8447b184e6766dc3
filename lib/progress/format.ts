/**
 * Text rendering of run stats: numbers, durations, queue bars, aligned tables and the final
 * per-stage table of {@link formatStats}. Plain strings, no terminal codes: the reporter decides
 * where they go.
 * @module
 */
import type { RunStats, StageStats } from '../engine/stats.js'

const grouped = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 })

/**
 * A count for a human, grouped by thousands: `12,345`.
 *
 * @example
 * ```ts
 * import { formatCount } from 'stageline/progress'
 * console.log(formatCount(1234567)) // 1,234,567
 * ```
 */
export function formatCount(n: number): string {
  return grouped.format(n)
}

/**
 * Milliseconds for a human: `850 ms`, `12.3 s`, `4m 05s`.
 *
 * @example
 * ```ts
 * import { formatDuration } from 'stageline/progress'
 * console.log(formatDuration(850), formatDuration(12_345), formatDuration(245_000)) // 850 ms 12.3 s 4m 05s
 * ```
 */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
  const s = Math.round(ms / 1000)
  const m = Math.floor(s / 60)
  return `${m}m ${String(s % 60).padStart(2, '0')}s`
}

/** A per-item time: `0.004 ms`, `1.25 ms`, `38 ms`; `-` when unknown. */
export function formatMs(ms: number | undefined): string {
  if (ms === undefined) return '-'
  if (ms < 0.1) return `${ms.toFixed(3)} ms`
  if (ms < 10) return `${ms.toFixed(2)} ms`
  if (ms < 10_000) return `${Math.round(ms)} ms`
  return formatDuration(ms)
}

/** Items per second: `812/s`, `1.2M/s`. */
export function formatRate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(1)}M/s`
  if (perSecond >= 1e4) return `${(perSecond / 1e3).toFixed(0)}k/s`
  if (perSecond >= 10 || perSecond === 0) return `${Math.round(perSecond)}/s`
  return `${perSecond.toFixed(1)}/s`
}

/** A bar of `width` cells filled to `fraction` (0..1) with eighth-cell resolution. */
export function bar(fraction: number, width: number): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0
  const eighths = Math.round(f * width * 8)
  const full = Math.floor(eighths / 8)
  const part = eighths % 8
  const partial = part === 0 ? '' : ' ▏▎▍▌▋▊▉'[part]!
  return '█'.repeat(full) + partial + '░'.repeat(width - full - (part === 0 ? 0 : 1))
}

/** A queue's fill as `queued/capacity` (`∞` for an unbounded queue). */
export function formatQueue(s: StageStats): string {
  return `${formatCount(s.queued)}/${s.capacity === Number.POSITIVE_INFINITY ? '∞' : formatCount(s.capacity)}`
}

/** How full a stage's output queue is, 0..1 (0 for an unbounded or hand-off queue that is empty). */
export function queueFill(s: StageStats): number {
  if (s.capacity === Number.POSITIVE_INFINITY) return 0
  if (s.capacity === 0) return s.queued > 0 ? 1 : 0
  return s.queued / s.capacity
}

/** A column of a text table: its heading and whether its cells are right-aligned (numbers). */
export interface Column {
  readonly heading: string
  readonly right?: boolean
}

/** Lays out `rows` under `columns`, two spaces apart, with trailing blanks trimmed. */
export function table(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((c, i) => Math.max(c.heading.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string =>
    columns
      .map((c, i) => {
        const cell = cells[i] ?? ''
        return c.right ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)
      })
      .join('  ')
      .trimEnd()
  return [line(columns.map((c) => c.heading)), ...rows.map((r) => line(r))].join('\n')
}

/** The one-line summary of a run: `done in 2.61 s · 1 item out`. */
export function summary(stats: RunStats): string {
  const items = `${formatCount(stats.itemsOut)} item${stats.itemsOut === 1 ? '' : 's'} out`
  const when =
    stats.state === 'running'
      ? `running for ${formatDuration(stats.elapsedMs)}`
      : `${stats.state} after ${formatDuration(stats.elapsedMs)}`
  return `${when} · ${items}`
}

const FINAL_COLUMNS: readonly Column[] = [
  { heading: 'stage' },
  { heading: 'workers', right: true },
  { heading: 'in', right: true },
  { heading: 'out', right: true },
  { heading: 'failed', right: true },
  { heading: 'skipped', right: true },
  { heading: 'retried', right: true },
  { heading: 'queue', right: true },
  { heading: 'mean', right: true },
  { heading: 'p95', right: true },
  { heading: 'out/s', right: true },
]

/**
 * Renders a run's stats as a text table: a summary line, then one row per stage with its workers,
 * items in and out, failed, skipped and retried counts, queue fill, sampled mean and p95 time per
 * item (`-` where the stage is not timed, as generator stages are not) and output rate over the
 * whole run. Plain text, no colours or terminal codes, so it suits logs as well as terminals.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * import { formatStats } from 'stageline/progress'
 * const run = pipe([1, 2, 3], mapStage((n: number) => n * 2, { name: 'double' })).start()
 * await run.done
 * console.log(formatStats(run.stats()))
 * // done after 2 ms · 3 items out
 * // stage   workers  in  out  failed  skipped  retried  queue  mean  p95  out/s
 * // double        1   3    3       0        0        0   0/64     -    -   1500/s
 * ```
 */
export function formatStats(stats: RunStats): string {
  const rows = stats.stages.map((s) => [
    s.name,
    formatCount(s.workers),
    formatCount(s.in),
    formatCount(s.out),
    formatCount(s.failed),
    formatCount(s.skipped),
    formatCount(s.retried),
    formatQueue(s),
    formatMs(s.meanMs),
    formatMs(s.p95Ms),
    formatRate(s.perSecond),
  ])
  return `${summary(stats)}\n${table(FINAL_COLUMNS, rows)}`
}

/**
 * The terminal progress reporter: a live per-stage table redrawn in place on a TTY (through
 * log-update, which diffs frames and handles wrapping and cursor moves), plain periodic lines
 * anywhere else (CI logs, a file, a pipe).
 * @module
 */

import type { RunStats, StageStats } from '../engine/stats.js'
import { boolean, got, integer, type Schema, validateOptions } from '../options/check.js'
import { MAX_TIMER_MS } from '../options/limits.js'
import {
  bar,
  type Column,
  formatCount,
  formatDuration,
  formatMs,
  formatQueue,
  formatRate,
  queueFill,
  summary,
  table,
} from './format.js'
import { createLogUpdate } from './log-update.js'

/**
 * Where a reporter writes: `process.stderr` (the default), `process.stdout`, or anything with a
 * `write(text)` method.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * import { type ProgressStream, progressReporter } from 'stageline/progress'
 * const lines: string[] = []
 * const toArray: ProgressStream = { write: (text: string) => lines.push(text) }
 * await pipe([1, 2, 3], mapStage((n: number) => n)).execute({
 *   onProgress: progressReporter({ stream: toArray }).onProgress,
 * })
 * // lines[0] starts with '[stageline ' and says 'done, 3 out'
 * ```
 */
export interface ProgressStream {
  write(chunk: string): unknown
  /** True on a terminal: the reporter then draws a live table unless `live` says otherwise. */
  readonly isTTY?: boolean
  /** The terminal's width; lines of the live table are cut to it. */
  readonly columns?: number
  /** The terminal's height. */
  readonly rows?: number
}

/**
 * Options of {@link progressReporter}.
 *
 * @example
 * ```ts
 * import { progressReporter } from 'stageline/progress'
 * // plain lines on stdout at most every 10 s of run time, whatever stdout is
 * const forCi = progressReporter({ stream: process.stdout, live: false, plainInterval: 10_000, label: 'import' })
 * ```
 */
export interface ProgressReporterOptions {
  /**
   * Where to write.
   * @default process.stderr
   */
  stream?: ProgressStream
  /**
   * Draw a live table redrawn in place (true), or print plain lines (false).
   * @default true when `stream.isTTY` is true
   */
  live?: boolean
  /**
   * In plain mode, the least run time in ms between two lines (measured on the run's own clock,
   * `stats.elapsedMs`), so a fast `progressInterval` does not flood a CI log. `0` prints a line on
   * every call. The line for the end of a run is always printed.
   * @default 5000
   */
  plainInterval?: number
  /**
   * How many input items to expect, if known: the header then shows how many the first stage has
   * finished, as a bar and a percentage.
   * @default unknown (no bar)
   */
  total?: number
  /**
   * The label the header and plain lines start with.
   * @default 'stageline'
   */
  label?: string
}

/**
 * A reporter: pass `onProgress` to a run; it finishes by itself when the run ends.
 *
 * @example
 * ```ts
 * import { feed, mapStage, pipe } from 'stageline'
 * import { progressReporter } from 'stageline/progress'
 * const input = feed<number>()
 * const progress = progressReporter()
 * const run = pipe(input, mapStage((n: number) => n * 2)).start({ onProgress: progress.onProgress })
 * const onCtrlC = (): void => {
 *   progress.done() // keep the last frame and restore the cursor before leaving
 *   void run.abort()
 * }
 * process.once('SIGINT', onCtrlC)
 * await input.pushAll([1, 2, 3])
 * await run.stop()
 * process.off('SIGINT', onCtrlC)
 * ```
 */
export interface ProgressReporter {
  /**
   * The callback for a run's `onProgress` option (a bound function: pass it as it is). It never
   * throws. When it receives the stats of an ended run it draws them once more and leaves them on
   * screen, so one reporter can follow several runs one after another.
   */
  readonly onProgress: (stats: RunStats) => void
  /** Whether this reporter draws a live table (true) or prints plain lines (false). */
  readonly live: boolean
  /**
   * Finishes the display now: leaves the last frame on screen (restoring the cursor) or prints the
   * last plain line if it was held back. Needed only when a run is left before it ends (Ctrl-C);
   * idempotent.
   */
  done(): void
}

const LIVE_COLUMNS: readonly Column[] = [
  { heading: 'stage' },
  { heading: 'busy', right: true },
  { heading: 'queue' },
  { heading: 'in', right: true },
  { heading: 'out', right: true },
  { heading: 'failed', right: true },
  { heading: 'skipped', right: true },
  { heading: 'rate', right: true },
  { heading: 'p95', right: true },
]

const QUEUE_BAR = 10
const TOTAL_BAR = 20

/** Items a stage has finished with, whatever became of them. */
function finished(s: StageStats): number {
  return s.out + s.failed + s.skipped
}

/**
 * Output rates over the last interval: the change in each stage's `out` since the previous
 * snapshot of the same run, per second of run time.
 */
class Rates {
  private lastOut: number[] = []
  private lastElapsed = -1

  /** Returns one rate per stage; the first snapshot of a run (or one of an ended run) gives whole-run rates. */
  next(stats: RunStats): number[] {
    const sameRun =
      stats.state === 'running' &&
      this.lastElapsed >= 0 &&
      stats.elapsedMs > this.lastElapsed &&
      this.lastOut.length === stats.stages.length
    const rates = stats.stages.map((s, i) =>
      sameRun ? ((s.out - this.lastOut[i]!) * 1000) / (stats.elapsedMs - this.lastElapsed) : s.perSecond,
    )
    if (stats.state === 'running') {
      this.lastOut = stats.stages.map((s) => s.out)
      this.lastElapsed = stats.elapsedMs
    } else {
      this.lastOut = []
      this.lastElapsed = -1
    }
    return rates
  }
}

function header(label: string, stats: RunStats, total: number | undefined): string {
  let text = `${label} · ${summary(stats)}`
  if (total !== undefined && stats.stages.length > 0) {
    const doneCount = finished(stats.stages[0]!)
    const f = total > 0 ? Math.min(1, doneCount / total) : 1
    text += `  ${bar(f, TOTAL_BAR)} ${Math.floor(f * 100)}% of ${formatCount(total)}`
  }
  return text
}

/** The live frame: a header line and one table row per stage. */
export function renderFrame(
  label: string,
  stats: RunStats,
  rates: readonly number[],
  total: number | undefined,
): string {
  const rows = stats.stages.map((s, i) => [
    s.name,
    `${formatCount(s.busy)}/${formatCount(s.workers)}`,
    `${bar(queueFill(s), QUEUE_BAR)} ${formatQueue(s)}`,
    formatCount(s.in),
    formatCount(s.out),
    formatCount(s.failed),
    formatCount(s.skipped),
    formatRate(rates[i]!),
    formatMs(s.p95Ms),
  ])
  return `${header(label, stats, total)}\n${table(LIVE_COLUMNS, rows)}`
}

/** One plain line: the run's state, then per stage its counts, busy workers, queue and rate. */
export function renderLine(label: string, stats: RunStats, rates: readonly number[]): string {
  const stages = stats.stages.map((s, i) => {
    let text = `${s.name} in ${formatCount(s.in)} out ${formatCount(s.out)}`
    if (s.failed > 0) text += ` failed ${formatCount(s.failed)}`
    if (s.skipped > 0) text += ` skipped ${formatCount(s.skipped)}`
    return `${text} busy ${s.busy}/${s.workers} queue ${formatQueue(s)} ${formatRate(rates[i]!)}`
  })
  const head = `[${label} ${formatDuration(stats.elapsedMs)}] ${stats.state}, ${formatCount(stats.itemsOut)} out`
  return stages.length === 0 ? head : `${head} | ${stages.join(' | ')}`
}

const DEFAULT_COLUMNS = 80
const DEFAULT_ROWS = 24

/**
 * The stream as log-update sees it. A terminal that does not know its size (a pty without a
 * window, as under `script` or some CI runners) reports 0 columns and 0 rows, on which log-update
 * draws nothing at all: report the usual 80x24 instead.
 */
function sized(stream: ProgressStream): NodeJS.WriteStream {
  return {
    write: (chunk: string) => stream.write(chunk),
    isTTY: stream.isTTY,
    get columns() {
      return stream.columns || DEFAULT_COLUMNS
    },
    get rows() {
      return stream.rows || DEFAULT_ROWS
    },
  } as unknown as NodeJS.WriteStream
}

function cut(text: string, columns: number | undefined): string {
  if (columns === undefined || !(columns > 1)) return text
  return text
    .split('\n')
    .map((line) => (line.length < columns ? line : line.slice(0, columns - 1)))
    .join('\n')
}

const REPORTER_SCHEMA: Schema = {
  stream: (where, option, value) => {
    const stream = value as ProgressStream | null
    if (stream === null || typeof stream !== 'object' || typeof stream.write !== 'function') {
      throw new TypeError(
        `${where}: expected \`${option}\` to be a writable stream (an object with a write() method), got ${got(value)}`,
      )
    }
    return value
  },
  live: boolean,
  plainInterval: integer(0, MAX_TIMER_MS),
  total: integer(0),
  label: (where, option, value) => {
    if (typeof value !== 'string')
      throw new TypeError(`${where}: expected \`${option}\` to be a string, got ${got(value)}`)
    return value
  },
}

function checkOptions(options: unknown): void {
  validateOptions('progressReporter()', options, REPORTER_SCHEMA)
}

/**
 * Makes a terminal progress reporter for a run's `onProgress` option. On a TTY it draws a live
 * table, redrawn in place: per stage its busy and total workers, output queue fill (a bar and
 * `queued/capacity`), items in, out, failed and skipped, output rate over the last interval, and
 * the sampled p95 time per item. Anywhere else (CI logs, files) it prints one plain line per
 * `plainInterval` of run time. Either way it draws the final state when the run ends and leaves
 * it on screen.
 *
 * How often it is called is the run's `progressInterval` (200 to 500 ms suits a terminal).
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * import { formatStats, progressReporter } from 'stageline/progress'
 * const slowDouble = mapStage(async (n: number) => {
 *   await new Promise((r) => setTimeout(r, 5))
 *   return n * 2
 * }, { workers: 4 })
 * const progress = progressReporter({ total: 100 })
 * const last = await pipe(Array.from({ length: 100 }, (_, i) => i), slowDouble).execute({
 *   onProgress: progress.onProgress,
 *   progressInterval: 200,
 * })
 * ```
 */
export function progressReporter(options?: ProgressReporterOptions): ProgressReporter {
  checkOptions(options)
  const stream: ProgressStream = options?.stream ?? process.stderr
  const live = options?.live ?? stream.isTTY === true
  const plainInterval = options?.plainInterval ?? 5000
  const total = options?.total
  const label = options?.label ?? 'stageline'
  const rates = new Rates()
  // created on the first frame, so making a reporter does not touch the terminal
  let draw: ReturnType<typeof createLogUpdate> | undefined
  let drawing = false
  let lastPrinted = Number.NEGATIVE_INFINITY
  let held: { stats: RunStats; rates: number[] } | undefined

  const finishFrame = (): void => {
    if (!drawing) return
    drawing = false
    draw!.done()
  }

  const onProgress = (stats: RunStats): void => {
    const r = rates.next(stats)
    const ended = stats.state !== 'running'
    if (live) {
      // log-update hides the cursor through process.stderr whatever stream it writes to: let it
      // do so only when drawing on the process's own terminal
      draw ??= createLogUpdate(sized(stream), {
        showCursor: stream !== process.stderr && stream !== process.stdout,
      })
      draw(cut(renderFrame(label, stats, r, total), stream.columns || DEFAULT_COLUMNS))
      drawing = true
      if (ended) finishFrame()
      return
    }
    if (lastPrinted > stats.elapsedMs) lastPrinted = Number.NEGATIVE_INFINITY // a new run
    if (ended || plainInterval === 0 || stats.elapsedMs - Math.max(0, lastPrinted) >= plainInterval) {
      stream.write(`${renderLine(label, stats, r)}\n`)
      lastPrinted = ended ? Number.NEGATIVE_INFINITY : stats.elapsedMs
      held = undefined
    } else {
      held = { stats, rates: r }
    }
  }

  return {
    onProgress,
    live,
    done(): void {
      if (live) {
        finishFrame()
        return
      }
      if (held !== undefined) {
        stream.write(`${renderLine(label, held.stats, held.rates)}\n`)
        held = undefined
      }
    },
  }
}

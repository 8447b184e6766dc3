/**
 * `npm run demo`: starts a local web site, crawls it with a stageline pipeline under the live
 * progress reporter, and prints the most common page title, the per-stage stats and the speed-up
 * over one worker. It writes the run's report to demo-report.html, and with `--dashboard` shows the
 * run on the live page. Run with `--help` for the flags.
 * @module
 */
import { realpathSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { RunStats } from 'stageline'
import { type Dashboard, dashboard } from 'stageline/dashboard'
import {
  formatCount,
  formatDuration,
  formatStats,
  type ProgressStream,
  progressReporter,
} from 'stageline/progress'
import { crawl, type MostCommon } from './crawl.js'
import { startPageServer } from './server.js'

/** What the demo runs. */
export interface DemoConfig {
  /** Pages on the local site. */
  pages: number
  /** Workers of the fetch stage: a number, or 'auto' to let them tune themselves. */
  workers: number | 'auto'
  /** Requests the site answers at once before it slows down (its capacity knee). */
  capacity: number
  /** With 'auto': pages per fixed worker count measured to compare auto with (0 skips it). */
  compare: number
  /** Mean latency of a page in ms. */
  latency: number
  /** Pages fetched with one worker to estimate the speed-up (0 skips the estimate). */
  baseline: number
  /** Where the run's report is written. */
  report: string
  /** Show the run on the live page, and keep serving it until Ctrl-C. */
  dashboard: boolean
}

/** Where the report goes unless `--report` says: demo-report.html in the working directory. */
export const REPORT_FILE = 'demo-report.html'

/** The defaults: a few thousand pages at a typical web latency, fetched by 16 workers. */
export const DEFAULTS: Readonly<DemoConfig> = Object.freeze({
  pages: 2000,
  workers: 'auto',
  capacity: 24,
  latency: 40,
  baseline: 50,
  compare: 150,
  report: REPORT_FILE,
  dashboard: false,
})

/** Where the demo writes, and how it hears Ctrl-C. */
export interface DemoIO {
  /** Results: the most common title, the stats table, the speed-up. */
  stdout: ProgressStream
  /** The live progress display and messages. */
  stderr: ProgressStream
  /** Registers a Ctrl-C handler; returns its removal. */
  onInterrupt?: (handler: () => void) => () => void
  /** Milliseconds between progress updates. @default 200 */
  progressInterval?: number
}

/** The speed-up of the run over one worker, estimated from a smaller run with one worker. */
export interface SpeedUp {
  /** The estimated one-worker time over the measured time. */
  readonly factor: number
  /** Pages the one-worker run fetched. */
  readonly baselinePages: number
  /** How long the one-worker run took, in ms. */
  readonly baselineMs: number
  /** That time scaled to every page, in ms. */
  readonly estimatedMs: number
}

/** What a demo run found. */
export interface DemoResult {
  /** The most common title, or undefined if the run was aborted or found no title. */
  readonly mostCommon: MostCommon | undefined
  /** The main run's final stats. */
  readonly stats: RunStats
  /** How long the main run took, in ms. */
  readonly elapsedMs: number
  /** True if Ctrl-C stopped the run early. */
  readonly interrupted: boolean
  /** Undefined when skipped (`--baseline 0`) or interrupted. */
  readonly speedUp: SpeedUp | undefined
  /** With `workers: 'auto'`: the workers it settled at, and how it did against fixed counts. */
  readonly auto: AutoComparison | undefined
}

/** How `workers: 'auto'` did against fixed worker counts, measured on samples of the pages. */
export interface AutoComparison {
  /** The fetch stage's workers at the end of the run. */
  readonly settled: number
  /** Pages per second of the whole run. */
  readonly rate: number
  /** Pages per second of each fixed count on a sample; undefined when not measured. */
  readonly fixed: readonly { workers: number; rate: number }[] | undefined
}

export const USAGE = `Usage: npm run demo -- [options]
   or: node build/examples/demo/main.js [options]

Starts a web site on 127.0.0.1 and crawls it with a stageline pipeline,
the example of Python's parallelpipe:

  pipe(urls, fetchPage (workers: 'auto'), titles (2 workers), mostCommon)

then prints the most common page title, the stats of every stage and the
speed-up over fetching with 1 worker, and writes the run's report (charts of
every stage over time, and which stage held the run back) to a page.

Options:
  --pages N       pages on the site (default ${DEFAULTS.pages})
  --workers N     workers fetching pages, or 'auto' (default ${DEFAULTS.workers}: they tune
                  themselves, and settle near the site's capacity)
  --capacity N    requests the site answers at once before it slows down
                  (default ${DEFAULTS.capacity})
  --compare N     with auto: pages fetched with each of a few fixed worker
                  counts, to compare auto with the best; 0 skips (default ${DEFAULTS.compare})
  --latency MS    mean response time of a page in ms (default ${DEFAULTS.latency})
  --baseline N    pages fetched with 1 worker to estimate the speed-up;
                  0 skips the estimate (default ${DEFAULTS.baseline})
  --report FILE   where to write the run's report, .html or .json
                  (default ${REPORT_FILE} in the working directory)
  --dashboard     show the run on a live page in the browser (its address is
                  printed), and keep serving it after the run until Ctrl-C
  -h, --help      show this help

Ctrl-C stops gracefully: pages in flight are finished and counted, and the
results so far are printed. Press it again to abort at once.
`

/** A bad command line: the message says which flag and what is allowed. */
export class UsageError extends Error {
  override name = 'UsageError'
}

function integerFlag(name: string, text: string, min: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`--${name} expects an integer from ${min} and up, got ${JSON.stringify(text)}`)
  }
  return Number(text)
}

/** Parses the command line: `{ help: true }`, or the configuration. Throws a UsageError. */
export function parseFlags(argv: readonly string[]): { help: true } | { help: false; config: DemoConfig } {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof FLAG_OPTIONS; strict: true }>>
  try {
    parsed = parseArgs({ args: [...argv], options: FLAG_OPTIONS, strict: true, allowPositionals: false })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const v = parsed.values
  if (v.help === true) return { help: true }
  const config: DemoConfig = { ...DEFAULTS }
  if (v.pages !== undefined) config.pages = integerFlag('pages', v.pages, 1)
  if (v.workers !== undefined)
    config.workers = v.workers === 'auto' ? 'auto' : integerFlag('workers', v.workers, 1)
  if (v.capacity !== undefined) config.capacity = integerFlag('capacity', v.capacity, 1)
  if (v.compare !== undefined) config.compare = integerFlag('compare', v.compare, 0)
  if (v.baseline !== undefined) config.baseline = integerFlag('baseline', v.baseline, 0)
  if (v.report !== undefined) {
    if (!/\.(html|json)$/i.test(v.report)) {
      throw new UsageError(
        `--report expects a file name ending in .html or .json, got ${JSON.stringify(v.report)}`,
      )
    }
    config.report = v.report
  }
  if (v.dashboard === true) config.dashboard = true
  if (v.latency !== undefined) {
    const ms = Number(v.latency)
    if (v.latency.trim() === '' || !Number.isFinite(ms) || ms < 0) {
      throw new UsageError(
        `--latency expects a number of milliseconds from 0 and up, got ${JSON.stringify(v.latency)}`,
      )
    }
    config.latency = ms
  }
  return { help: false, config }
}

const FLAG_OPTIONS = {
  pages: { type: 'string' },
  workers: { type: 'string' },
  capacity: { type: 'string' },
  compare: { type: 'string' },
  latency: { type: 'string' },
  baseline: { type: 'string' },
  report: { type: 'string' },
  dashboard: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

/** `count` pages spread evenly over `pages`, so a sample sees the same latency mix as the whole site. */
function sample(urls: readonly string[], count: number): string[] {
  const n = Math.min(count, urls.length)
  return Array.from({ length: n }, (_, k) => urls[Math.floor((k * urls.length) / n)]!)
}

/** Runs the demo with `config`, writing to `io`; resolves to what it found. */
export async function runDemo(config: DemoConfig, io: DemoIO): Promise<DemoResult> {
  const { pages, workers, latency, baseline, capacity } = config
  const report = resolve(config.report)
  const server = await startPageServer({ pages, latency, capacity })
  let live: Dashboard | undefined
  let interrupts = 0
  let onInterrupt = (): void => {}
  const removeHandler = io.onInterrupt?.(() => {
    interrupts++
    onInterrupt()
  })
  try {
    io.stdout.write(
      `stageline demo: ${formatCount(pages)} pages on ${server.url}, about ${latency} ms each, slower past ${capacity} at once\n` +
        `pipe(urls, fetchPage (${workers === 'auto' ? "workers: 'auto'" : `${workers} workers`}), titles (2 workers), mostCommon)\n\n`,
    )
    if (config.dashboard) {
      live = await dashboard()
      io.stdout.write(`live page: ${live.url} (open it in a browser)\n\n`)
    }
    const progress = progressReporter({ stream: io.stderr, total: pages })
    const started = performance.now()
    const run = crawl(server.urls, workers).start({
      onProgress: progress.onProgress,
      progressInterval: io.progressInterval ?? 200,
      report,
      ...(live === undefined ? {} : { dashboard: live }),
    })
    onInterrupt = () => {
      if (interrupts === 1) {
        io.stderr.write('\nCtrl-C: stopping (pages in flight are finished); press Ctrl-C again to abort\n')
        void run.stop().catch(() => {})
      } else {
        void run.abort()
      }
    }
    if (interrupts > 0) onInterrupt()
    let mostCommon: MostCommon | undefined
    try {
      mostCommon = await run.done
    } catch (err) {
      if (interrupts < 2) throw err
    }
    const elapsedMs = performance.now() - started
    progress.done()
    const stats = run.stats()
    const interrupted = interrupts > 0

    io.stdout.write('\n')
    if (mostCommon === undefined) {
      io.stdout.write(interrupted ? 'aborted: no result\n' : 'no page had a title\n')
    } else {
      io.stdout.write(
        `most common title: "${mostCommon.title}" (${formatCount(mostCommon.count)} of ${formatCount(mostCommon.titles)} titles)\n`,
      )
    }
    if (interrupted)
      io.stdout.write(
        `interrupted: ${formatCount(stats.stages[0]?.out ?? 0)} of ${formatCount(pages)} pages fetched\n`,
      )
    io.stdout.write(`\n${formatStats(stats)}\n\n`)
    io.stdout.write(`report: ${report}\n\n`)

    let speedUp: SpeedUp | undefined
    if (!interrupted && baseline > 0) {
      const urls = sample(server.urls, baseline)
      io.stderr.write(`measuring 1 worker on ${formatCount(urls.length)} of the pages...\n`)
      const t0 = performance.now()
      const one = crawl(urls, 1).start()
      onInterrupt = () => void one.abort()
      let measured = true
      await one.done.catch(() => {
        measured = false
      })
      const baselineMs = performance.now() - t0
      if (measured && interrupts === 0) {
        const estimatedMs = (baselineMs * pages) / urls.length
        speedUp = { factor: estimatedMs / elapsedMs, baselinePages: urls.length, baselineMs, estimatedMs }
        const how =
          urls.length === pages
            ? `1 worker took ${formatDuration(baselineMs)}`
            : `1 worker took ${formatDuration(baselineMs)} for ${formatCount(urls.length)} pages, so about ${formatDuration(estimatedMs)} for all`
        io.stdout.write(
          `speed-up over workers: 1: ${speedUp.factor.toFixed(1)}x (${workers === 'auto' ? "workers: 'auto'" : `${workers} workers`}: ${formatDuration(elapsedMs)}; ${how})\n`,
        )
      }
    }
    let auto: AutoComparison | undefined
    if (!interrupted && workers === 'auto' && interrupts === 0) {
      const settled = stats.stages[0]?.workers ?? 0
      const rate = ((stats.stages[0]?.out ?? 0) * 1000) / elapsedMs
      let fixed: { workers: number; rate: number }[] | undefined
      if (config.compare > 0) {
        const urls = sample(server.urls, config.compare)
        const counts = [
          ...new Set([Math.max(1, Math.round(capacity / 2)), capacity, capacity * 2, capacity * 4]),
        ]
        io.stderr.write(
          `measuring ${counts.join(', ')} fixed workers on ${formatCount(urls.length)} pages each...\n`,
        )
        fixed = []
        for (const w of counts) {
          const t0 = performance.now()
          const one = crawl(urls, w).start()
          onInterrupt = () => void one.abort()
          const ok = await one.done.then(
            () => true,
            () => false,
          )
          if (!ok || interrupts > 0) break
          fixed.push({ workers: w, rate: (urls.length * 1000) / (performance.now() - t0) })
        }
      }
      auto = { settled, rate, fixed }
      const best = fixed?.reduce((a, b) => (b.rate > a.rate ? b : a))
      io.stdout.write(
        `workers: 'auto' settled at ${settled} workers and fetched ${rate.toFixed(0)} pages/s` +
          (best === undefined
            ? '\n'
            : `; the best fixed count measured, ${best.workers} workers, fetched ${best.rate.toFixed(0)} pages/s on a sample: auto reached ${Math.round((rate / best.rate) * 100)}% of it\n`),
      )
    }
    const result: DemoResult = { mostCommon, stats, elapsedMs, interrupted: interrupts > 0, speedUp, auto }
    if (live !== undefined && io.onInterrupt !== undefined && interrupts === 0) {
      io.stdout.write(`the live page stays up at ${live.url}: press Ctrl-C to end\n`)
      // a handle that keeps the process alive while the page is served
      const alive = setInterval(() => {}, 1 << 30)
      await new Promise<void>((resolve) => {
        onInterrupt = resolve
      })
      clearInterval(alive)
    }
    return result
  } finally {
    removeHandler?.()
    await live?.close()
    await server.close()
  }
}

/** The demo's command line: parses `argv`, runs, and resolves to the process's exit code. */
export async function main(argv: readonly string[], io: DemoIO): Promise<number> {
  let parsed: ReturnType<typeof parseFlags>
  try {
    parsed = parseFlags(argv)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    io.stderr.write(`demo: ${err.message}\nRun with --help to see the options.\n`)
    return 2
  }
  if (parsed.help) {
    io.stdout.write(USAGE)
    return 0
  }
  try {
    const result = await runDemo(parsed.config, io)
    return result.interrupted ? 130 : 0
  } catch (err) {
    io.stderr.write(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    return 1
  }
}

/** The process's own streams and SIGINT. */
function processIO(): DemoIO {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    onInterrupt(handler) {
      process.on('SIGINT', handler)
      return () => process.off('SIGINT', handler)
    },
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1]
  if (script === undefined) return false
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  process.exitCode = await main(process.argv.slice(2), processIO())
}

/**
 * Pipeline: a source and a chain of stages. Lazy and reusable: every `results()`, `execute()`,
 * `toArray()` or `for await` starts a fresh run.
 * @module
 */
import { drain, Results } from './engine/consumer.js'
import { Execution, type RunPlan, type WorkersEvent } from './engine/execution.js'
import { attach, observer, type RunObserver } from './engine/observe.js'
import { isAsyncIterable, isIterable, type Source, type SourceItem } from './engine/source.js'
import { type RunStats, watchProgress, watchWorkers } from './engine/stats.js'
import { describeCause } from './errors.js'
import { abortSignal, boolean, fn, got, integer, type Schema, validateOptions } from './options/check.js'
import { MAX_TIMER_MS } from './options/limits.js'
import { checkReportTarget, reportPath } from './options/report-path.js'
import { Run, type StartOptions } from './run.js'
import { Stage } from './stage.js'

/**
 * Options of one run.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type RunOptions } from 'stageline'
 * const options: RunOptions = {
 *   signal: AbortSignal.timeout(60_000), // the whole run, at most a minute
 *   progressInterval: 1_000,
 *   onProgress: (stats) => console.error(`${stats.itemsOut} out`),
 * }
 * console.log(await pipe([1, 2, 3], mapStage((n: number) => n * n)).toArray(options)) // [ 1, 4, 9 ]
 * ```
 */
export interface RunOptions {
  /** Aborting it stops the run: workers' `ctx.signal` aborts and the run rejects with its reason. */
  signal?: AbortSignal
  /**
   * Called with a stats snapshot every `progressInterval` ms while the run lives, and once when
   * it ends; never per item. If it throws, or returns a promise that rejects, the run fails with a
   * TaskException (stage `"onProgress"`); a promise it returns is not awaited.
   */
  onProgress?: (stats: RunStats) => unknown
  /**
   * Called with every change of a stage's number of workers: by the tuner of a `workers: 'auto'`
   * stage (with its reason), or by `run.setWorkers()`. If it throws or rejects, the run fails with a
   * TaskException (stage `"onWorkers"`).
   */
  onWorkers?: (event: WorkersEvent) => unknown
  /**
   * Milliseconds between `onProgress` calls.
   * @default 1000
   */
  progressInterval?: number
  /**
   * Read the whole source before the first stage starts (pipeframe's batch source mode); memory
   * then holds every input item. See StartOptions.collectInput.
   * @default false
   */
  collectInput?: boolean
  /**
   * Write a report of the run to this file: `.html` for a page with charts (one self-contained
   * file that opens offline), `.json` for the data (see docs/stats-and-progress.md). The run
   * samples every stage at most 100 ms apart (at most 600 samples a stage, merged as the run grows)
   * and writes the report when it settles, done, failed or stopped; its promise settles after the
   * file is written. A `start()` run also rewrites it every 10 s while it lives. The directory must
   * exist and be writable when the run starts, or the run is refused before it reads any item; a
   * write that fails at the end is a process warning, and the run's outcome stands.
   * @default no report
   */
  report?: string
  /**
   * Put items in the report (the item a failed run failed on, rendered with bounded depth and
   * length); false leaves them out, for runs whose data is private.
   * @default true
   */
  reportItems?: boolean
  /** Show the run on a live page: a dashboard made by `dashboard()` of `stageline/dashboard`. */
  dashboard?: RunObserver
  /** Record the run's metrics: telemetry made by `otelMetrics()` of `stageline/otel`. */
  telemetry?: RunObserver
}

const RUN_SCHEMA: Schema = {
  signal: abortSignal,
  onProgress: fn,
  onWorkers: fn,
  progressInterval: integer(1, MAX_TIMER_MS),
  collectInput: boolean,
  report: reportPath,
  reportItems: boolean,
  dashboard: observer('dashboard'),
  telemetry: observer('telemetry'),
}

const START_SCHEMA: Schema = { ...RUN_SCHEMA, onResult: fn, daemon: boolean }

/**
 * The untyped fallback of pipe() takes only a spread array of stages (`pipe(src, ...list)`), whose
 * length is not known statically: stages written out one by one must match the typed overloads, so
 * a mismatch is a compile error instead of a silent `Pipeline<unknown>`.
 */
type SpreadStages<S extends readonly unknown[]> = number extends S['length'] ? S : never

/** Checks run options and opens a run with them. Throws a TypeError naming a bad option. */
function openRun(plan: RunPlan, where: string, options: unknown, schema = RUN_SCHEMA): Execution {
  const o = validateOptions(where, options, schema) as RunOptions
  // before the source is opened: a report that cannot be written refuses the run before any item is read
  const report = o.report === undefined ? undefined : checkReportTarget(where, o.report)
  // stats can be read from a run that reports progress, runs in the background or is watched: only
  // those keep time books (the clock reads cost a few percent on the cheapest pipelines)
  const accounting =
    o.onProgress !== undefined ||
    schema === START_SCHEMA ||
    report !== undefined ||
    o.dashboard !== undefined ||
    o.telemetry !== undefined
  const exec = new Execution(plan, { signal: o.signal, collectInput: o.collectInput, accounting })
  if (o.onProgress !== undefined) watchProgress(exec, o.onProgress, o.progressInterval ?? 1000)
  if (o.onWorkers !== undefined) watchWorkers(exec, o.onWorkers)
  if (report !== undefined) {
    const rewriteMs = schema === START_SCHEMA ? REWRITE_MS : undefined
    exec.hold(recordReport(exec, plan, { path: report, items: o.reportItems !== false, rewriteMs }))
  }
  if (o.dashboard !== undefined) attach(o.dashboard, exec, plan)
  if (o.telemetry !== undefined) attach(o.telemetry, exec, plan)
  return exec
}

/** How often a background run rewrites its report while it lives. */
const REWRITE_MS = 10_000

/**
 * Records `exec` for a report written at `path` when it settles. The recorder and the renderer are
 * loaded here, when a report is asked for, so that the core import does not carry them. Resolves
 * once the report is written (or its failure warned about); never rejects.
 */
function recordReport(
  exec: Execution,
  plan: RunPlan,
  options: { path: string; items: boolean; rewriteMs: number | undefined },
): Promise<void> {
  return import('./report/recorder.js').then(
    (m) => m.recordRun(exec, plan, options).written,
    (err: unknown) => {
      process.emitWarning(
        `stageline: the run report ${options.path} was not written: its module could not be loaded: ${describeCause(err)}`,
      )
    },
  )
}

/**
 * A source and a chain of stages. Build one with {@link pipe}; run it with `results()` (stream),
 * `execute()` (last output), `toArray()` or `for await`. Each of those starts a fresh run.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * const p = pipe([1, 2, 3], mapStage((n: number) => n + 1))
 * for await (const n of p) console.log(n)
 * await p.toArray() // [2, 3, 4], a second, independent run
 * ```
 */
export class Pipeline<O> implements AsyncIterable<O> {
  /** @internal */
  readonly plan: RunPlan

  /** @internal use pipe() */
  constructor(source: Source<unknown>, stages: readonly Stage<any, any, any, any>[]) {
    const names = stages.map((s, i) => s.name ?? `stage${i + 1}`)
    this.plan = Object.freeze({ source, stages: Object.freeze([...stages]), names: Object.freeze(names) })
  }

  /** The stages' names, in order. */
  get stageNames(): readonly string[] {
    return this.plan.names
  }

  /**
   * Returns a new pipeline with `stages` appended (this one is unchanged): chains of any length
   * keep their types when built in steps.
   *
   * @example
   * ```ts
   * import { mapStage, pipe } from 'stageline'
   * const inc = mapStage((n: number) => n + 1)
   * const p = pipe([1], inc, inc).pipe(inc, inc).pipe(mapStage((n: number) => String(n)))
   * await p.execute() // '5'
   * ```
   */
  pipe<O1>(s1: Stage<O, O1>): Pipeline<O1>
  pipe<O1, O2>(s1: Stage<O, O1>, s2: Stage<O1, O2>): Pipeline<O2>
  pipe<O1, O2, O3>(s1: Stage<O, O1>, s2: Stage<O1, O2>, s3: Stage<O2, O3>): Pipeline<O3>
  pipe<O1, O2, O3, O4>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
  ): Pipeline<O4>
  pipe<O1, O2, O3, O4, O5>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
  ): Pipeline<O5>
  pipe<O1, O2, O3, O4, O5, O6>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
  ): Pipeline<O6>
  pipe<O1, O2, O3, O4, O5, O6, O7>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
  ): Pipeline<O7>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
  ): Pipeline<O8>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
  ): Pipeline<O9>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
  ): Pipeline<O10>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
    s11: Stage<O10, O11>,
  ): Pipeline<O11>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
    s11: Stage<O10, O11>,
    s12: Stage<O11, O12>,
  ): Pipeline<O12>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
    s11: Stage<O10, O11>,
    s12: Stage<O11, O12>,
    s13: Stage<O12, O13>,
  ): Pipeline<O13>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13, O14>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
    s11: Stage<O10, O11>,
    s12: Stage<O11, O12>,
    s13: Stage<O12, O13>,
    s14: Stage<O13, O14>,
  ): Pipeline<O14>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13, O14, O15>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
    s11: Stage<O10, O11>,
    s12: Stage<O11, O12>,
    s13: Stage<O12, O13>,
    s14: Stage<O13, O14>,
    s15: Stage<O14, O15>,
  ): Pipeline<O15>
  pipe<O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13, O14, O15, O16>(
    s1: Stage<O, O1>,
    s2: Stage<O1, O2>,
    s3: Stage<O2, O3>,
    s4: Stage<O3, O4>,
    s5: Stage<O4, O5>,
    s6: Stage<O5, O6>,
    s7: Stage<O6, O7>,
    s8: Stage<O7, O8>,
    s9: Stage<O8, O9>,
    s10: Stage<O9, O10>,
    s11: Stage<O10, O11>,
    s12: Stage<O11, O12>,
    s13: Stage<O12, O13>,
    s14: Stage<O13, O14>,
    s15: Stage<O14, O15>,
    s16: Stage<O15, O16>,
  ): Pipeline<O16>
  pipe<S extends Stage<any, any, any, any>[]>(...stages: SpreadStages<S>): Pipeline<unknown>
  pipe(...stages: Stage<any, any, any, any>[]): Pipeline<unknown> {
    checkStages('pipeline.pipe()', stages, this.plan.stages.length)
    // names by position are resolved again over the whole chain
    return new Pipeline(this.plan.source, [...this.plan.stages, ...stages])
  }

  /**
   * Runs the pipeline and streams its outputs as soon as each is ready. Breaking out of the loop
   * (or calling `return()`) stops every worker and closes the source. A failure rejects the
   * pending `next()` with a {@link TaskException}.
   *
   * @example
   * ```ts
   * import { mapStage, pipe } from 'stageline'
   * const controller = new AbortController()
   * for await (const n of pipe([1, 2, 3], mapStage((n: number) => n * 2)).results({ signal: controller.signal })) {
   *   if (n === 4) break // stops the run
   * }
   * ```
   */
  results(options?: RunOptions): AsyncIterableIterator<O> {
    return new Results<O>(() => openRun(this.plan, 'results()', options))
  }

  /**
   * Runs the pipeline to completion and resolves to its last output (`undefined` if there was none).
   *
   * @example
   * ```ts
   * import { pipe, stage } from 'stageline'
   * const count = stage(async function* count(xs: AsyncIterable<unknown>) {
   *   let n = 0
   *   for await (const _ of xs) n++
   *   yield n
   * })
   * await pipe(['a', 'b'], count).execute() // 2
   * ```
   */
  async execute(options?: RunOptions): Promise<O | undefined> {
    let last: unknown
    await drain(openRun(this.plan, 'execute()', options), (x) => {
      last = x
    })
    return last as O | undefined
  }

  /**
   * Runs the pipeline to completion and resolves to all its outputs, in the order they came out.
   *
   * @example
   * ```ts
   * import { mapStage, pipe } from 'stageline'
   * await pipe([3, 1, 2], mapStage((n: number) => n * 10, { workers: 2, ordered: true })).toArray() // [30, 10, 20]
   * ```
   */
  async toArray(options?: RunOptions): Promise<O[]> {
    const out: O[] = []
    await drain(openRun(this.plan, 'toArray()', options), (x) => {
      out.push(x as O)
    })
    return out
  }

  /**
   * Starts the pipeline in the background and returns its {@link Run}: the run reads its own
   * outputs (see `onResult`), keeps the process alive until it ends (unless `daemon`), and its
   * error is never lost: it rejects `run.done` and `run.stop()`.
   *
   * @example
   * ```ts
   * import { feed, mapStage, pipe } from 'stageline'
   * const input = feed<number>({ capacity: 100 })
   * const run = pipe(input, mapStage(async (n: number) => n * 2, { workers: 4 })).start({
   *   onResult: (n) => console.log(n),
   *   onProgress: (s) => console.log(s.stages[0]?.out),
   *   progressInterval: 500,
   * })
   * await input.pushAll([1, 2, 3])
   * await run.stop() // ends the feed, waits for every item in flight
   * ```
   */
  start(options?: StartOptions<O> & RunOptions): Run<O> {
    return new Run<O>(openRun(this.plan, 'start()', options, START_SCHEMA), options ?? {})
  }

  /** Same as `results()`: a pipeline is an AsyncIterable (for `for await`, `Readable.from()`, it-pipe). */
  [Symbol.asyncIterator](): AsyncIterableIterator<O> {
    return this.results()
  }
}

function checkStages(where: string, stages: unknown[], offset: number): void {
  for (let i = 0; i < stages.length; i++) {
    if (!(stages[i] instanceof Stage)) {
      throw new TypeError(
        `${where}: expected stage ${offset + i + 1} to be a Stage (made by stage(), mapStage() or another stage factory), got ${got(stages[i])}`,
      )
    }
  }
}

/**
 * Chains a source and stages into a {@link Pipeline}. The source is an Iterable, an
 * AsyncIterable, or a function returning one (called once per run). Nothing runs until the
 * pipeline is read.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, stage } from 'stageline'
 * const fetchPage = mapStage(async (url: string) => `<title>${url}</title>`, { workers: 8, qsize: 30 })
 * const titles = stage(async function* titles(pages: AsyncIterable<string>) {
 *   for await (const html of pages) {
 *     const m = /<title>(.*?)<\/title>/.exec(html)
 *     if (m) yield m[1]!
 *   }
 * }, { workers: 2 })
 * const all = await pipe(['a', 'b'], fetchPage, titles).toArray() // ['a', 'b'] in some order
 * ```
 */
export function pipe<S extends Source<any>>(source: S): Pipeline<SourceItem<S>>
export function pipe<T, O1>(source: Source<T>, s1: Stage<T, O1>): Pipeline<O1>
export function pipe<T, O1, O2>(source: Source<T>, s1: Stage<T, O1>, s2: Stage<O1, O2>): Pipeline<O2>
export function pipe<T, O1, O2, O3>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
): Pipeline<O3>
export function pipe<T, O1, O2, O3, O4>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
): Pipeline<O4>
export function pipe<T, O1, O2, O3, O4, O5>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
): Pipeline<O5>
export function pipe<T, O1, O2, O3, O4, O5, O6>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
): Pipeline<O6>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
): Pipeline<O7>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
): Pipeline<O8>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
): Pipeline<O9>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
): Pipeline<O10>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
  s11: Stage<O10, O11>,
): Pipeline<O11>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
  s11: Stage<O10, O11>,
  s12: Stage<O11, O12>,
): Pipeline<O12>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
  s11: Stage<O10, O11>,
  s12: Stage<O11, O12>,
  s13: Stage<O12, O13>,
): Pipeline<O13>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13, O14>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
  s11: Stage<O10, O11>,
  s12: Stage<O11, O12>,
  s13: Stage<O12, O13>,
  s14: Stage<O13, O14>,
): Pipeline<O14>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13, O14, O15>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
  s11: Stage<O10, O11>,
  s12: Stage<O11, O12>,
  s13: Stage<O12, O13>,
  s14: Stage<O13, O14>,
  s15: Stage<O14, O15>,
): Pipeline<O15>
export function pipe<T, O1, O2, O3, O4, O5, O6, O7, O8, O9, O10, O11, O12, O13, O14, O15, O16>(
  source: Source<T>,
  s1: Stage<T, O1>,
  s2: Stage<O1, O2>,
  s3: Stage<O2, O3>,
  s4: Stage<O3, O4>,
  s5: Stage<O4, O5>,
  s6: Stage<O5, O6>,
  s7: Stage<O6, O7>,
  s8: Stage<O7, O8>,
  s9: Stage<O8, O9>,
  s10: Stage<O9, O10>,
  s11: Stage<O10, O11>,
  s12: Stage<O11, O12>,
  s13: Stage<O12, O13>,
  s14: Stage<O13, O14>,
  s15: Stage<O14, O15>,
  s16: Stage<O15, O16>,
): Pipeline<O16>
export function pipe<S extends Stage<any, any, any, any>[]>(
  source: Source<unknown>,
  ...stages: SpreadStages<S>
): Pipeline<unknown>
export function pipe(source: Source<unknown>, ...stages: Stage<any, any, any, any>[]): Pipeline<unknown> {
  if (typeof source !== 'function' && !isIterable(source) && !isAsyncIterable(source)) {
    throw new TypeError(
      `pipe(): expected the source to be an Iterable, an AsyncIterable or a function returning one, got ${got(source)}`,
    )
  }
  checkStages('pipe()', stages, 0)
  return new Pipeline(source, stages)
}

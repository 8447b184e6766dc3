/**
 * Stage: a description of a worker group (a function, how many workers run it, how much may
 * queue behind it). Nothing runs until a pipeline built from it is iterated.
 * @module
 */
import type { Group, StageContext } from './group.js'
import {
  checkFunction,
  DEFAULT_QSIZE,
  got,
  type ResolvedStageOptions,
  resolveStageOptions,
  type StageOptions,
} from './options.js'
import type { Pipeline } from './pipeline.js'
import {
  checkPolicies,
  hasPolicies,
  type MapContext,
  POLICY_KEYS,
  type PolicyOptions,
  policyLoop,
  resolvePolicies,
  type Step,
  type skip,
} from './policies.js'
import { type GenFn, genLoop, type MapFn, mapLoop, orderedMapLoop } from './workers.js'

/**
 * How a stage runs inside a run: given its group (inlet, outlet, workers), start the workers.
 * Map and generator stages use the loops in workers.ts; thread and Redis stages bring their own.
 * @internal
 */
export interface StageRunner {
  /** True when the stage's output must go through a reorder window (an OrderedChannel). */
  readonly ordered: boolean
  launch(g: Group): void
  /**
   * Set on plain map stages (no policies, completion order, run by `mapLoop`): their function,
   * which a worker of the stage before may call itself for one of this stage's idle workers
   * (stage fusion, see fusion.ts).
   */
  readonly fusable?: MapFn
}

/** Builds the runner for a stage's validated options. @internal */
export type RunnerFactory = (options: ResolvedStageOptions, stageName: string) => StageRunner

/** @internal */
export const RUNNER: unique symbol = Symbol('stageline.runner')
/** @internal */
export const KIND: unique symbol = Symbol('stageline.kind')

// set by pipeline.ts, which imports this file (a function, not an import, to keep the graph acyclic)
let pipeOne: (source: unknown, s: Stage<any, any>) => Pipeline<any>
/** @internal */
export function registerPipe(fn: typeof pipeOne): void {
  pipeOne = fn
}

/**
 * A stage: a function run by a group of concurrent workers, with a bounded output queue.
 * Build one with {@link stage} or {@link mapStage}; `setup()` derives a stage with other options.
 * Immutable, so one definition can be used in many pipelines and many runs.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * const double = mapStage((n: number) => n * 2)
 * const wide = double.setup({ workers: 4, qsize: 16 })
 * await pipe([1, 2, 3], wide).toArray() // [2, 4, 6] in completion order
 * ```
 */
export class Stage<in I, out O> {
  /** @internal */
  readonly [KIND]: string
  /** @internal */
  readonly [RUNNER]: RunnerFactory
  /** The stage's validated options. */
  readonly options: Readonly<ResolvedStageOptions>
  /** @internal validates options beyond the common ones */
  readonly extraOptions: ReadonlySet<string>
  private readonly validate: (options: ResolvedStageOptions & Record<string, unknown>) => void

  /** @internal use stage(), mapStage() or the other factories */
  constructor(
    kind: string,
    runner: RunnerFactory,
    options: ResolvedStageOptions & Record<string, unknown>,
    extraOptions: ReadonlySet<string> = new Set(),
    validate: (options: ResolvedStageOptions & Record<string, unknown>) => void = () => {},
  ) {
    this[KIND] = kind
    this[RUNNER] = runner
    this.extraOptions = extraOptions
    this.validate = validate
    validate(options)
    this.options = Object.freeze(options)
  }

  /** The stage's name if set or taken from its function; pipelines name the others `stage<N>`. */
  get name(): string | undefined {
    return this.options.name
  }

  /**
   * Returns a new stage with `options` merged over this one's; this stage is left unchanged.
   *
   * @example
   * ```ts
   * import { mapStage } from 'stageline'
   * const fetchOne = mapStage(async (url: string) => url.length)
   * const wide = fetchOne.setup({ workers: 8 })
   * // fetchOne.options.workers === 1, wide.options.workers === 8
   * ```
   */
  setup(options: StageOptions & Record<string, unknown>): Stage<I, O> {
    const merged = resolveStageOptions(
      `${this[KIND]}().setup()`,
      this.options as ResolvedStageOptions,
      options,
      this.extraOptions,
    ) as ResolvedStageOptions & Record<string, unknown>
    for (const key of this.extraOptions) {
      if ((options as Record<string, unknown>)[key] !== undefined)
        merged[key] = (options as Record<string, unknown>)[key]
    }
    return new Stage<I, O>(this[KIND], this[RUNNER], merged, this.extraOptions, this.validate)
  }

  /**
   * This stage as a plain transform from an async iterable to an async iterable, for it-pipe or
   * anything else that takes one. Each call runs the stage over the given source.
   *
   * @example
   * ```ts
   * import { pipe as itPipe } from 'it-pipe'
   * import { mapStage } from 'stageline'
   * const square = mapStage((n: number) => n * n, { workers: 2, ordered: true })
   * const out: number[] = []
   * await itPipe([1, 2, 3], square.transform, async (src) => { for await (const n of src) out.push(n) })
   * // out: [1, 4, 9]
   * ```
   */
  readonly transform = (source: Iterable<I> | AsyncIterable<I>): AsyncIterableIterator<O> =>
    pipeOne(source, this).results()
}

const MAP_DEFAULTS: ResolvedStageOptions = {
  workers: 1,
  qsize: DEFAULT_QSIZE,
  ordered: false,
  name: undefined,
}

function withFunctionName(
  options: ResolvedStageOptions,
  fn: Function,
): ResolvedStageOptions & Record<string, unknown> {
  return { ...options, name: options.name ?? (fn.name || undefined) }
}

/**
 * Makes a generator stage: each of `workers` workers runs `fn` over its share of the stage's
 * input (every input item goes to exactly one worker) and everything `fn` yields goes on.
 * Use it for stages that filter, split, aggregate or keep state across items.
 *
 * Order: with one worker, outputs keep the order `fn` yields them in; `ordered: true` with
 * several workers is refused (which worker sees which item is not fixed).
 *
 * @example
 * ```ts
 * import { pipe, stage } from 'stageline'
 * const titles = stage(async function* titles(pages: AsyncIterable<string>) {
 *   for await (const html of pages) {
 *     const m = /<title>(.*?)<\/title>/.exec(html)
 *     if (m) yield m[1]
 *   }
 * }, { workers: 2 })
 * const sum = stage(async function* sum(xs: AsyncIterable<number>) {
 *   let total = 0
 *   for await (const x of xs) total += x
 *   yield total
 * })
 * await pipe(['<title>a</title>', 'none'], titles).toArray() // ['a']
 * await pipe([1, 2, 3], sum).execute() // 6
 * ```
 */
export function stage<I, O>(
  fn: (input: AsyncIterable<I>, ctx: StageContext) => AsyncIterable<O> | Iterable<O>,
  options?: StageOptions,
): Stage<I, O> {
  checkFunction('stage()', 'fn', fn)
  const resolved = withFunctionName(resolveStageOptions('stage()', MAP_DEFAULTS, options), fn)
  return new Stage<I, O>('stage', genRunner(fn as GenFn), resolved, undefined, checkGenOptions)
}

function checkGenOptions(o: ResolvedStageOptions): void {
  if (o.ordered && o.workers > 1) {
    throw new TypeError(
      `stage(): \`ordered: true\` needs \`workers: 1\` on a generator stage (got workers: ${o.workers}); ` +
        'with several workers, which worker sees which item is not fixed. Use mapStage() for an ordered parallel map, ' +
        'or drop `ordered`',
    )
  }
}

function genRunner(fn: GenFn): RunnerFactory {
  return () => ({
    ordered: false,
    launch: (g) => g.spawn((g, i) => genLoop(g, i, fn)),
  })
}

/**
 * Options of {@link mapStage}: the common stage options plus step policies.
 *
 * @example
 * ```ts
 * import { type MapStageOptions, mapStage } from 'stageline'
 * const options: MapStageOptions<string> = { workers: 4, retries: 1, timeout: 10_000, name: 'upper' }
 * const upper = mapStage(async (s: string) => s.toUpperCase(), options)
 * ```
 */
export interface MapStageOptions<I = any, S = any> extends StageOptions, PolicyOptions<I, S> {}

/**
 * The output type of a map function's result: awaited, with `skip` taken out.
 *
 * @example
 * ```ts
 * import { type MapOutput, skip } from 'stageline'
 * const even = async (n: number) => (n % 2 === 0 ? n : skip)
 * type Out = MapOutput<ReturnType<typeof even>> // number: the promise awaited, skip taken out
 * const two: Out = 2
 * ```
 */
export type MapOutput<R> = Exclude<Awaited<R>, typeof skip>

/**
 * Makes a map stage: one output per input item. `fn` may be synchronous or async; a synchronous
 * result is passed on without waiting a tick, so cheap steps run at full speed. Returning
 * {@link skip} drops the item. Instead of a function, a step object (or class instance) with
 * `process(item, ctx)` and optional `init(ctx)` / `dispose(state, ctx)` methods may be given.
 * Step policies (retries, timeout, errors, init, dispose, limit, rate) are options.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * const fetchLength = mapStage(async (url: string, { signal }) => {
 *   await new Promise((r) => setTimeout(r, 1))
 *   if (signal.aborted) throw signal.reason
 *   return url.length
 * }, { workers: 8, qsize: 30 })
 * await pipe(['a', 'bb'], fetchLength, mapStage((n: number) => n * 10, { ordered: true })).toArray()
 * ```
 *
 * A parametrised stage is a factory (parallelpipe's `add_n(7)`):
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * const addN = (n: number) => mapStage((x: number) => x + n, { name: `add${n}` })
 * await pipe([1, 2], addN(7)).toArray() // [8, 9]
 * ```
 *
 * Policies and a per-worker resource:
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * const store = mapStage(async (row: { id: number }, ctx) => {
 *   ctx.state.rows.push(row.id)                 // one "connection" per worker
 *   return row.id
 * }, {
 *   workers: 2,
 *   retries: 3, retryDelay: (n) => 10 * 2 ** n, // 20, 40, 80 ms
 *   timeout: 1_000,
 *   init: () => ({ rows: [] as number[] }),
 *   dispose: (conn) => { conn.rows.length = 0 },
 * })
 * await pipe([{ id: 1 }, { id: 2 }], store).toArray()
 * ```
 */
export function mapStage<I, R, S = undefined>(
  fn: (item: I, ctx: MapContext<S>) => R,
  options?: MapStageOptions<I, S>,
): Stage<I, MapOutput<R>>
export function mapStage<I, R, S = undefined>(
  step: Step<I, R, S>,
  options?: MapStageOptions<I, S>,
): Stage<I, MapOutput<R>>
export function mapStage(fnOrStep: unknown, options?: MapStageOptions): Stage<unknown, unknown> {
  const isStep =
    fnOrStep !== null &&
    typeof fnOrStep === 'object' &&
    typeof (fnOrStep as Step<unknown, unknown>).process === 'function'
  if (!isStep && typeof fnOrStep !== 'function') {
    throw new TypeError(
      `mapStage(): expected \`fn\` to be a function or a step object with a process(item, ctx) method, got ${got(fnOrStep)}`,
    )
  }
  if (isStep) {
    const st = fnOrStep as Step<unknown, unknown>
    if (st.init !== undefined && typeof st.init !== 'function')
      checkFunction('mapStage()', 'step.init', st.init)
    if (st.dispose !== undefined && typeof st.dispose !== 'function')
      checkFunction('mapStage()', 'step.dispose', st.dispose)
  }
  const named = isStep ? ((fnOrStep as object).constructor?.name ?? '') : (fnOrStep as Function).name
  const base = resolveStageOptions('mapStage()', MAP_DEFAULTS, options, POLICY_KEYS) as ResolvedStageOptions &
    Record<string, unknown>
  for (const key of POLICY_KEYS) {
    const v = (options as Record<string, unknown> | undefined)?.[key]
    if (v !== undefined) base[key] = v
  }
  const resolved = {
    ...base,
    name: base.name ?? (named && named !== 'Object' ? named : undefined),
  }
  return new Stage('mapStage', mapRunner(fnOrStep, isStep), resolved, POLICY_KEYS, (o) =>
    checkPolicies('mapStage()', o),
  )
}

function mapRunner(fnOrStep: unknown, isStep: boolean): RunnerFactory {
  return (o) => {
    const opts = o as ResolvedStageOptions & Record<string, unknown>
    if (isStep || hasPolicies(opts)) {
      const policies = resolvePolicies(fnOrStep, opts)
      return {
        ordered: o.ordered,
        launch: (g) => g.spawn((g, i) => policyLoop(g, i, policies, o.ordered)),
      }
    }
    const fn = fnOrStep as MapFn
    return {
      ordered: o.ordered,
      fusable: o.ordered ? undefined : fn,
      launch: o.ordered
        ? (g) => g.spawn((g, i) => orderedMapLoop(g, i, fn))
        : (g) => g.spawn((g, i) => mapLoop(g, i, fn)),
    }
  }
}

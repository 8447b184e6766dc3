/**
 * Map stages, `mapStage()`: one output per input item, with optional step policies.
 * @module
 */
import {
  checkFunction,
  got,
  integer,
  fn as isFunction,
  ms,
  oneOf,
  type Schema,
  validateOptions,
} from '../options/check.js'
import { DEFAULT_QSIZE } from '../options/limits.js'
import {
  applyWorkers,
  type ResolvedStageOptions,
  STAGE_SCHEMA,
  type StageOptions,
  type WorkersOption,
  workersOrTuning,
} from '../options/stage.js'
import type { skip } from '../skip.js'
import { Stage } from '../stage.js'
import type { Lane, MapFn, StageContext, StageKind, StagePlan } from './kind.js'
import { mapLoop, orderedMapLoop } from './map-loops.js'
import { type Limiter, type MapContext, type Policies, policyLoop } from './policies.js'
import { RateLimit } from './rate-limit.js'

export type { Limiter, MapContext }

/**
 * Step policies of a map stage.
 *
 * @example
 * ```ts
 * import { mapStage, type PolicyOptions, pipe } from 'stageline'
 * const policy: PolicyOptions<string> = {
 *   retries: 2,
 *   retryDelay: (n) => 10 * 2 ** n, // 20 ms, then 40 ms
 *   timeout: 5_000,
 *   errors: 'skip',
 *   onError: (err, line) => console.log(`skipped ${line}: ${(err as Error).name}`),
 * }
 * const parse = mapStage((line: string) => JSON.parse(line) as number, policy)
 * console.log(await pipe(['1', 'oops', '3'], parse).toArray())
 * // skipped oops: SyntaxError
 * // [ 1, 3 ]
 * ```
 */
export interface PolicyOptions<I = any, S = any> {
  /**
   * How many times an item is tried again after it fails, by the same worker, before the failure
   * counts. A retry waits `retryDelay` first.
   * @default 0
   */
  retries?: number
  /**
   * Milliseconds to wait before a retry, or a function of the retry number (1 for the first retry)
   * and the error, for backoff: `(n) => 100 * 2 ** n`. From 0 to {@link MAX_TIMER_MS}; a function
   * that returns anything else, or throws, fails the run (naming what it returned).
   * @default 0
   */
  retryDelay?: number | ((retry: number, error: unknown) => number)
  /**
   * Milliseconds one try of an item may take. When it expires the item's `ctx.signal` aborts with a
   * TimeoutError and the try fails with it (a late result is dropped). Up to
   * {@link MAX_TIMER_MS}, or `Infinity` for none.
   * @default no timeout
   */
  timeout?: number
  /**
   * What a failure (after retries) does: `'fail'` fails the run; `'skip'` drops the item and calls
   * `onError` with it, so nothing disappears unseen (parallelpipe's `filter_errors`).
   * @default 'fail'
   */
  errors?: 'fail' | 'skip'
  /**
   * Called with every item skipped by `errors: 'skip'`. Required with it. If it returns a promise,
   * the worker waits for it. If it throws or rejects, the run fails with its error.
   */
  onError?: (error: unknown, item: I, ctx: MapContext<S>) => unknown
  /**
   * Called once per worker before its first item; what it returns is `ctx.state` (a connection, a
   * client). Caveat: TypeScript infers `ctx.state`'s type from `init` only when `init`'s own
   * parameter is annotated (`init: (ctx: StageContext) => open(ctx.worker)`) or absent
   * (`init: () => open()`); an unannotated `(ctx) =>` leaves `ctx.state` typed `undefined`.
   */
  init?: (ctx: StageContext) => S | PromiseLike<S>
  /** Called once per worker when it ends, also after a failure or a stop, with the worker's state. */
  dispose?: (state: S, ctx: StageContext) => unknown
  /**
   * A concurrency limit shared with other stages: each call of the function runs inside `limit(...)`.
   * Pass a p-limit instance: `pLimit(4)`.
   */
  limit?: Limiter
  /** A rate limit shared with other stages (see {@link rateLimit}). */
  rate?: RateLimit
}

/** The checkers of the step policies, shared with thread stages (which take some of them). */
export const POLICY_SCHEMA: Schema = {
  retries: integer(0),
  retryDelay: (where, option, value) => (typeof value === 'function' ? value : ms()(where, option, value)),
  timeout: ms({ above0: true, infinity: true }),
  errors: oneOf('fail', 'skip'),
  onError: isFunction,
  init: isFunction,
  dispose: isFunction,
  limit: isFunction,
  rate: (where, option, value) => {
    if (!(value instanceof RateLimit)) {
      throw new TypeError(
        `${where}: expected \`${option}\` to be made by rateLimit(perSecond), got ${got(value)}`,
      )
    }
    return value
  },
}

/** Checks the rules between policies: `onError` goes with `errors: 'skip'`, and the other way round. */
export function checkSkipRule(where: string, o: { errors?: unknown; onError?: unknown }): void {
  if (o.onError !== undefined && o.errors !== 'skip') {
    throw new TypeError(
      `${where}: \`onError\` is called with the items that \`errors: 'skip'\` drops; set \`errors: 'skip'\` too, or leave both out to fail fast`,
    )
  }
  if (o.errors === 'skip' && o.onError === undefined) {
    throw new TypeError(
      `${where}: \`errors: 'skip'\` needs an \`onError(error, item, ctx)\` callback, so that no skipped item goes unseen`,
    )
  }
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
export interface MapStageOptions<I = any, S = any>
  extends Omit<StageOptions, 'workers'>,
    PolicyOptions<I, S> {
  /**
   * How many workers run the stage function concurrently: a number from 1 to {@link MAX_WORKERS},
   * or `'auto'` for workers that tune themselves while the stage runs (between 1 and 256), or
   * `{ min, max }` for tuned workers within bounds. See docs/concepts.md, "Workers that tune
   * themselves".
   * @default 1
   */
  workers?: WorkersOption
}

/**
 * The checked options of a map stage, as `stage.options` shows them: the common options, complete,
 * and the policies that were given.
 *
 * @example
 * ```ts
 * import { mapStage } from 'stageline'
 * const s = mapStage(async (url: string) => url.length, { workers: 8, retries: 2 })
 * console.log(s.options.workers, s.options.retries, s.options.timeout) // 8 2 undefined
 * ```
 */
export interface ResolvedMapStageOptions extends ResolvedStageOptions, PolicyOptions {}

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
 * A map step with a lifecycle: a plain object or a class instance (paipa's class steps).
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type Step } from 'stageline'
 * class Totals implements Step<number, number, { sum: number }> {
 *   init() {
 *     return { sum: 0 }
 *   }
 *   process(n: number, ctx: { state: { sum: number } }) {
 *     ctx.state.sum += n
 *     return ctx.state.sum
 *   }
 * }
 * console.log(await pipe([1, 2, 3], mapStage(new Totals())).toArray()) // [ 1, 3, 6 ]
 * ```
 */
export interface Step<I, R, S = undefined> {
  /** Maps one item. Called as a method, so `this` is the step. */
  process(item: I, ctx: MapContext<S>): R
  /** Called once per worker before its first item; its result is `ctx.state`. */
  init?(ctx: StageContext): S | PromiseLike<S>
  /** Called once per worker when it ends, also after a failure or a stop. */
  dispose?(state: S, ctx: StageContext): unknown
}

const MAP_SCHEMA: Schema = { ...STAGE_SCHEMA, workers: workersOrTuning, ...POLICY_SCHEMA }

const POLICY_KEYS = Object.keys(POLICY_SCHEMA)

function mapKind(fnOrStep: unknown, isStep: boolean): StageKind<ResolvedMapStageOptions> {
  return {
    factory: 'mapStage',
    resolve(where, base, options) {
      const { workers, ...given } = validateOptions(where, options, MAP_SCHEMA)
      const o = { ...base, ...given } as ResolvedMapStageOptions
      applyWorkers(o, workers)
      checkSkipRule(where, o)
      return o
    },
    plan(o): StagePlan {
      const policed =
        isStep || POLICY_KEYS.some((k) => (o as unknown as Record<string, unknown>)[k] !== undefined)
      const fn = fnOrStep as MapFn
      let worker: (lane: Lane) => unknown
      if (policed) {
        const p = policiesOf(fnOrStep, o)
        worker = (lane) => policyLoop(lane, p, o.ordered)
      } else worker = o.ordered ? (lane) => orderedMapLoop(lane, fn) : (lane) => mapLoop(lane, fn)
      return {
        workers: o.workers,
        // a tuned stage may run up to its maximum: its reorder window holds that many
        bound: o.tuning?.max ?? o.workers,
        qsize: o.qsize,
        ordered: o.ordered,
        fusable: policed || o.ordered ? undefined : fn,
        worker,
        tuning: o.tuning,
        start: (port) => port.spawn(o.workers, worker),
      }
    },
  }
}

/** A step object or function plus options, as the policy loop runs them. */
function policiesOf(fnOrStep: unknown, o: ResolvedMapStageOptions): Policies {
  let call: Policies['call']
  let init = o.init as Policies['init']
  let dispose = o.dispose as Policies['dispose']
  if (typeof fnOrStep === 'function') {
    call = fnOrStep as Policies['call']
  } else {
    const step = fnOrStep as Step<unknown, unknown, unknown>
    call = (item, ctx) => step.process(item, ctx)
    if (typeof step.init === 'function') init ??= (ctx) => step.init!(ctx)
    if (typeof step.dispose === 'function') dispose ??= (state, ctx) => step.dispose!(state, ctx)
  }
  return {
    call,
    retries: o.retries ?? 0,
    retryDelay: o.retryDelay ?? 0,
    // Infinity is no timeout: no timer is set
    timeout: o.timeout === Number.POSITIVE_INFINITY ? undefined : o.timeout,
    onError: o.errors === 'skip' ? o.onError : undefined,
    init,
    dispose,
    limit: o.limit,
    rate: o.rate,
  }
}

const MAP_DEFAULTS: ResolvedMapStageOptions = {
  workers: 1,
  qsize: DEFAULT_QSIZE,
  ordered: false,
  name: undefined,
}

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
): Stage<I, MapOutput<R>, MapStageOptions<I, S>, ResolvedMapStageOptions>
export function mapStage<I, R, S = undefined>(
  step: Step<I, R, S>,
  options?: MapStageOptions<I, S>,
): Stage<I, MapOutput<R>, MapStageOptions<I, S>, ResolvedMapStageOptions>
export function mapStage(
  fnOrStep: unknown,
  options?: MapStageOptions,
): Stage<unknown, unknown, MapStageOptions, ResolvedMapStageOptions> {
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
  const kind = mapKind(fnOrStep, isStep)
  const o = kind.resolve('mapStage()', MAP_DEFAULTS, options)
  o.name ??= named && named !== 'Object' ? named : undefined
  return new Stage(kind, o)
}

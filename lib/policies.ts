/**
 * Step policies for map stages: retries with backoff, per-item timeouts, skipping failed items,
 * per-worker init/dispose, and limits shared between stages (a concurrency limiter such as a
 * p-limit instance, or a rate limit). A stage with none of these runs the plain loops in
 * workers.ts; one with any of them runs `policyLoop` below, which pays for what it offers.
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { CHECK_EVERY, dueForTurn, isThenable, nextTurn } from './_utils.js'
import { describeCause, TimeoutError } from './errors.js'
import { send } from './fusion.js'
import type { Group, StageContext } from './group.js'
import { checkFunction, checkInteger, checkMs, got, MAX_TIMER_MS } from './options.js'
import { DONE, EMPTY, type OrderedChannel, SKIP, senderWaiter } from './queue.js'
import { skip } from './skip.js'

export { skip }

/**
 * What a map function receives: the stage context, plus the worker's state and the attempt number.
 *
 * @example
 * ```ts
 * import { type MapContext, mapStage, pipe } from 'stageline'
 * const numbered = mapStage((line: string, ctx: MapContext<{ n: number }>) => `${++ctx.state.n}: ${line}`, {
 *   init: () => ({ n: 0 }), // one state per worker
 * })
 * console.log(await pipe(['a', 'b'], numbered).toArray()) // [ '1: a', '2: b' ]
 * ```
 */
export interface MapContext<S = undefined> extends StageContext {
  /** What the stage's `init` returned for this worker (`undefined` without `init`). */
  readonly state: S
  /** 0 on an item's first try, 1 on its first retry, and so on. */
  readonly attempt: number
}

/**
 * A concurrency limiter shared between stages: p-limit's call shape, `limit(fn)` runs fn when a slot is free.
 *
 * @example
 * ```ts
 * import pLimit from 'p-limit'
 * import { type Limiter, mapStage } from 'stageline'
 * // at most 4 calls at once across both stages, whatever their workers
 * const limit: Limiter = pLimit(4)
 * const fetchA = mapStage(async (id: number) => `a${id}`, { workers: 8, limit })
 * const fetchB = mapStage(async (id: number) => `b${id}`, { workers: 8, limit })
 * ```
 */
export type Limiter = <T>(fn: () => PromiseLike<T> | T) => PromiseLike<T>

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

export const POLICY_KEYS: ReadonlySet<string> = new Set([
  'retries',
  'retryDelay',
  'timeout',
  'errors',
  'onError',
  'init',
  'dispose',
  'limit',
  'rate',
])

/** Validates the policy options of `where` (eagerly: at stage build time). */
export function checkPolicies(where: string, o: Record<string, unknown>): void {
  if (o.retries !== undefined) checkInteger(where, 'retries', o.retries, 0, false)
  if (o.retryDelay !== undefined && typeof o.retryDelay !== 'function')
    checkMs(where, 'retryDelay', o.retryDelay)
  if (o.timeout !== undefined) checkMs(where, 'timeout', o.timeout, { above0: true, infinity: true })
  if (o.errors !== undefined && o.errors !== 'fail' && o.errors !== 'skip') {
    throw new TypeError(`${where}: expected \`errors\` to be 'fail' or 'skip', got ${got(o.errors)}`)
  }
  if (o.onError !== undefined) checkFunction(where, 'onError', o.onError)
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
  if (o.init !== undefined) checkFunction(where, 'init', o.init)
  if (o.dispose !== undefined) checkFunction(where, 'dispose', o.dispose)
  if (o.limit !== undefined) checkFunction(where, 'limit', o.limit)
  if (o.rate !== undefined && !(o.rate instanceof RateLimit)) {
    throw new TypeError(`${where}: expected \`rate\` to be made by rateLimit(perSecond), got ${got(o.rate)}`)
  }
}

/** Whether any policy is set, so the stage needs `policyLoop`. */
export function hasPolicies(o: Record<string, unknown>): boolean {
  for (const key of POLICY_KEYS) if (o[key] !== undefined) return true
  return false
}

/** The slowest rate a RateLimit can space calls at: one per MAX_TIMER_MS. */
const MIN_PER_SECOND = 1000 / MAX_TIMER_MS

/**
 * A rate limit that several stages can share: at most `perSecond` calls start per second, spaced
 * evenly, with up to `burst` calls at once after a quiet spell.
 *
 * @example
 * ```ts
 * import { mapStage, pipe, rateLimit } from 'stageline'
 * const api = rateLimit(50)                        // 50 calls per second across both stages
 * const lookUp = mapStage(async (id: number) => id, { workers: 8, rate: api })
 * const enrich = mapStage(async (id: number) => id, { workers: 8, rate: api })
 * await pipe([1, 2, 3], lookUp, enrich).toArray()
 * ```
 */
export class RateLimit {
  private readonly interval: number
  private readonly burst: number
  private next = 0

  constructor(perSecond: number, options?: { burst?: number }) {
    if (typeof perSecond !== 'number' || !(perSecond >= MIN_PER_SECOND) || !Number.isFinite(perSecond)) {
      throw new RangeError(
        `rateLimit(): expected \`perSecond\` to be a finite number from ${MIN_PER_SECOND} (one call per ${MAX_TIMER_MS} ms, the longest a timer can wait) and up, got ${got(perSecond)}`,
      )
    }
    this.interval = 1000 / perSecond
    this.burst =
      options?.burst === undefined ? 1 : checkInteger('rateLimit()', 'burst', options.burst, 1, false)
  }

  /** Waits for this call's turn; resolves early (without a turn) when `signal` aborts. */
  take(signal?: AbortSignal): Promise<void> | undefined {
    const now = performance.now()
    const earliest = now - (this.burst - 1) * this.interval
    if (this.next < earliest) this.next = earliest
    const at = this.next
    this.next += this.interval
    if (at <= now) return undefined
    return sleep(at - now, undefined, { signal }).catch(() => {})
  }
}

/**
 * Makes a {@link RateLimit} to share between stages (`rate` option of mapStage).
 *
 * @example
 * ```ts
 * import { rateLimit } from 'stageline'
 * const tenPerSecond = rateLimit(10, { burst: 5 })
 * ```
 */
export function rateLimit(perSecond: number, options?: { burst?: number }): RateLimit {
  return new RateLimit(perSecond, options)
}

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

/** The resolved policies a policy loop runs with. @internal */
export interface Policies {
  call: (item: unknown, ctx: MapContext<unknown>) => unknown
  retries: number
  retryDelay: number | ((retry: number, error: unknown) => number)
  timeout: number | undefined
  onError: ((error: unknown, item: unknown, ctx: MapContext<unknown>) => unknown) | undefined
  init: ((ctx: StageContext) => unknown) | undefined
  dispose: ((state: unknown, ctx: StageContext) => unknown) | undefined
  limit: Limiter | undefined
  rate: RateLimit | undefined
}

class WorkerContext implements MapContext<unknown> {
  state: unknown = undefined
  attempt = 0
  /** The error of the item that failed the worker (kept here, not in a closure). */
  lastError: unknown = undefined
  constructor(
    public signal: AbortSignal,
    readonly worker: number,
    readonly stage: string,
  ) {}
}

/**
 * The milliseconds to wait before retry `retry` (1 for the first) of an item that failed with
 * `itemError`: `retryDelay` itself when it is a number (checked when the stage was built), or what
 * the function returns for `(retry, itemError)`. Where the function fails, this throws the error
 * the run is to fail with (on the item), and the item's own error is kept in it:
 * - the function throws: an AggregateError of `[itemError, delayError]`, whose message says that
 *   `retryDelay` threw deciding the wait before retry `retry`;
 * - it returns anything but a number of milliseconds from 0 to {@link MAX_TIMER_MS} (NaN, a
 *   negative number, Infinity, more than a timer can wait, a string): a RangeError, or a TypeError
 *   for a value that is not a number, naming what it returned and the range, with `itemError` as
 *   its `cause`.
 *
 * `where` starts the messages: `mapStage "fetch"`, `threadStage "render"`. Shared by the map and
 * thread stages' policies, so that both judge a delay the same way.
 * @internal
 */
export function retryDelayOf(
  retryDelay: number | ((retry: number, error: unknown) => number),
  retry: number,
  itemError: unknown,
  where: string,
): number {
  if (typeof retryDelay !== 'function') return retryDelay
  let d: unknown
  try {
    d = retryDelay(retry, itemError)
  } catch (delayError) {
    throw new AggregateError(
      [itemError, delayError],
      `${where}: \`retryDelay\` threw deciding the wait before retry ${retry}: ${describeCause(delayError)}`,
    )
  }
  if (typeof d === 'number' && d >= 0 && d <= MAX_TIMER_MS) return d
  const Kind = typeof d === 'number' ? RangeError : TypeError
  throw new Kind(
    `${where}: expected \`retryDelay\` to return a number of milliseconds from 0 to ${MAX_TIMER_MS} (about 24.8 days, the longest a timer can wait) before retry ${retry}, got ${got(d)}`,
    { cause: itemError },
  )
}

/** Runs one try of `x` under the timeout, if any. */
function tryOnce(p: Policies, g: Group, x: unknown, ctx: WorkerContext): unknown {
  if (p.timeout === undefined) {
    return p.limit === undefined ? p.call(x, ctx) : p.limit(() => p.call(x, ctx))
  }
  const ms = p.timeout
  const groupSignal = g.ctl.signal
  const ac = new AbortController()
  const onGroupAbort = (): void => ac.abort(groupSignal.reason)
  groupSignal.addEventListener('abort', onGroupAbort)
  ctx.signal = ac.signal
  let timer: ReturnType<typeof setTimeout> | undefined
  return new Promise((resolve, reject) => {
    timer = setTimeout(() => {
      const err = new TimeoutError(g.name, ms)
      ac.abort(err)
      reject(err)
    }, ms)
    try {
      const r = p.limit === undefined ? p.call(x, ctx) : p.limit(() => p.call(x, ctx))
      if (isThenable(r)) r.then(resolve, reject)
      else resolve(r)
    } catch (err) {
      reject(err)
    }
  }).finally(() => {
    clearTimeout(timer)
    groupSignal.removeEventListener('abort', onGroupAbort)
    ctx.signal = groupSignal
  })
}

const HALTED: unique symbol = Symbol('stageline.halted')

/** A map stage's worker with policies; `ordered` selects the reorder window. */
export async function policyLoop(g: Group, worker: number, p: Policies, ordered: boolean): Promise<void> {
  const input = g.input
  const ctx = new WorkerContext(g.ctl.signal, worker, g.name)
  const w = senderWaiter()
  let failure: { err: unknown; item: unknown } | undefined
  if (p.init !== undefined) {
    try {
      let s = p.init(ctx)
      if (isThenable(s)) s = await s
      ctx.state = s
    } catch (err) {
      g.fail(err, worker, undefined)
      return
    }
  }
  let n = 0
  try {
    for (;;) {
      if (g.halted) break
      // a stage whose items all complete without waiting must still let the event loop turn
      if (++n === CHECK_EVERY) {
        n = 0
        if (dueForTurn()) {
          await nextTurn()
          if (g.halted) break
        }
      }
      if (ordered && !(g.output as OrderedChannel<unknown>).tryAcquire()) {
        await (g.output as OrderedChannel<unknown>).acquire(w)
        if (g.halted) break
      }
      let x = input.poll(w)
      if (x === EMPTY) {
        await input.wait(w)
        x = w.item
        w.item = undefined
        if (g.halted) break
      }
      if (x === DONE) {
        if (ordered) (g.output as OrderedChannel<unknown>).release()
        break
      }
      const seq = w.seq
      g.taken++
      g.busy++
      const y = await processItem(p, g, x, ctx)
      g.busy--
      if (y === HALTED) break
      if (y === FAILED) {
        failure = { err: ctx.lastError, item: x }
        break
      }
      if (y === SKIP || y === skip) {
        if (y === skip) g.skipped++
        if (ordered) (g.output as OrderedChannel<unknown>).fill(seq, SKIP)
        continue
      }
      g.emitted++
      if (ordered) (g.output as OrderedChannel<unknown>).fill(seq, y)
      else {
        const room = send(g, w, y)
        if (room !== undefined) {
          await room
          if (g.halted) break
        }
      }
    }
  } catch (err) {
    failure ??= { err, item: undefined }
  }
  if (p.dispose !== undefined) {
    try {
      const r = p.dispose(ctx.state, ctx)
      if (isThenable(r)) await r
    } catch (err) {
      failure ??= { err, item: undefined }
    }
  }
  if (failure !== undefined) g.fail(failure.err, worker, failure.item)
  else g.exit()
}

const FAILED: unique symbol = Symbol('stageline.failed')

/** Tries `x` with retries; returns the output, SKIP for a skipped failure, HALTED, or FAILED (error in ctx.lastError). */
async function processItem(p: Policies, g: Group, x: unknown, ctx: WorkerContext): Promise<unknown> {
  for (let attempt = 0; ; attempt++) {
    ctx.attempt = attempt
    try {
      if (p.rate !== undefined) {
        const turn = p.rate.take(g.ctl.signal)
        if (turn !== undefined) await turn
        if (g.halted) return HALTED
      }
      let y = tryOnce(p, g, x, ctx)
      if (isThenable(y)) y = await y
      if (g.halted) return HALTED
      return y
    } catch (err) {
      if (g.halted) return HALTED
      if (attempt < p.retries) {
        let d: number
        try {
          d = retryDelayOf(p.retryDelay, attempt + 1, err, `mapStage "${g.name}"`)
        } catch (delayErr) {
          ctx.lastError = delayErr
          return FAILED
        }
        g.retried++
        if (d > 0) {
          await sleep(d, undefined, { signal: g.ctl.signal }).catch(() => {})
          if (g.halted) return HALTED
        }
        continue
      }
      if (p.onError !== undefined) {
        g.failed++
        try {
          // an async onError is awaited: the item counts as skipped once it has seen it, and its
          // rejection fails the run as a throw does (never a rejection left unhandled)
          const r = p.onError(err, x, ctx) as unknown
          if (isThenable(r)) await r
        } catch (cbErr) {
          ctx.lastError = cbErr
          return FAILED
        }
        if (g.halted) return HALTED
        return SKIP
      }
      ctx.lastError = err
      return FAILED
    }
  }
}

/** Resolves a step object or function plus options into the policies a loop runs with. @internal */
export function resolvePolicies(fnOrStep: unknown, o: Record<string, unknown>): Policies {
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
    retries: (o.retries as number | undefined) ?? 0,
    retryDelay: (o.retryDelay as Policies['retryDelay'] | undefined) ?? 0,
    // Infinity is no timeout: no timer is set
    timeout: o.timeout === Number.POSITIVE_INFINITY ? undefined : (o.timeout as number | undefined),
    onError: o.errors === 'skip' ? (o.onError as Policies['onError']) : undefined,
    init,
    dispose,
    limit: o.limit as Limiter | undefined,
    rate: o.rate as RateLimit | undefined,
  }
}

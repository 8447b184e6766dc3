/**
 * threadStage(): a map stage whose function runs on a pool of worker threads, for CPU-bound steps.
 * This file describes the kind of stage (lib/kinds/kind.ts) and checks its options; it does not
 * load piscina, which pool.ts imports when a run of a thread stage starts.
 * @module
 */
import { availableParallelism } from 'node:os'
import { isAbsolute } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { TransferListItem } from 'node:worker_threads'
import type { StageContext, StageKind, StagePlan } from '../kinds/kind.js'
import { checkSkipRule, POLICY_SCHEMA } from '../kinds/map.js'
import type { MapContext } from '../kinds/policies.js'
import type { RateLimit } from '../kinds/rate-limit.js'
import { type Checker, fn, got, integer, ms, type Schema, validateOptions } from '../options/check.js'
import { DEFAULT_QSIZE } from '../options/limits.js'
import {
  countOrTuning,
  type ResolvedStageOptions,
  STAGE_SCHEMA,
  type StageOptions,
  type Tuning,
} from '../options/stage.js'
import { Stage } from '../stage.js'
import { IN_FLIGHT_PER_THREAD, type ThreadPolicies, ThreadRun } from './pool.js'

/**
 * The most items one message to a thread carries, unless `batch` says otherwise. Batches are
 * sized at run time to about 2 ms of work each (see docs/threads.md), so this cap binds only for
 * tiny items; there, on 500,000 tiny items, 1024 moved 1.3x as many items per second as 256.
 */
export const DEFAULT_BATCH = 1024
/** The most threads a thread stage may start. */
export const MAX_THREADS = 1024
/** The largest `batch` of a thread stage. */
export const MAX_BATCH = 1_000_000
/** How long the end of a run waits for a thread's `dispose` export, unless `disposeTimeout` says otherwise. */
export const DEFAULT_DISPOSE_TIMEOUT_MS = 5000

/**
 * What the function in a thread receives besides its item (and what the module's `init` and
 * `dispose` exports receive). `S` is the type of what `init` returns.
 *
 * @example
 * ```ts
 * // checksum.worker.ts, compiled to checksum.worker.js for the threads to load
 * import type { ThreadContext } from 'stageline'
 * export default function checksum(bytes: Uint8Array, { signal }: ThreadContext): number {
 *   let sum = 0
 *   for (let i = 0; i < bytes.length; i++) {
 *     if ((i & 0xffff) === 0) signal.throwIfAborted() // reads the run's state at once, even here
 *     sum = (sum + bytes[i]!) % 65521
 *   }
 *   return sum
 * }
 * ```
 */
export interface ThreadContext<S = unknown> extends StageContext {
  /**
   * Aborts when the run stops, and, with the stage's `timeout`, when the item's time is up (with
   * an Error named `TimeoutError`). In a thread, `signal.aborted` and `signal.throwIfAborted()`
   * read the run's state and the item's deadline at once, even inside a synchronous loop;
   * `'abort'` listeners fire when the thread's event loop gets a turn (while an async function
   * awaits).
   */
  readonly signal: AbortSignal
  /** The 0-based index of this thread within the stage's pool, in the order the threads started. */
  readonly worker: number
  /** What the module's `init` export returned in this thread (undefined without one, and inside `init`). */
  readonly state: S
  /** 0 on an item's first try, 1 on its first retry, and so on. */
  readonly attempt: number
  /**
   * Moves, instead of copies, the given buffers (ArrayBuffers, or MessagePorts) back to the main
   * thread with this batch's results. A moved ArrayBuffer is unusable in the thread afterwards.
   */
  transfer(...list: (TransferListItem | ArrayBufferView)[]): void
}

/**
 * Options of {@link threadStage}.
 *
 * @example
 * ```ts
 * import { threadStage, type ThreadStageOptions } from 'stageline'
 * const options: ThreadStageOptions<{ pixels: ArrayBuffer }> = {
 *   threads: 3,
 *   ordered: true,
 *   export: 'resize',
 *   transfer: (image) => [image.pixels], // moved to the thread, not copied
 * }
 * const resize = threadStage(new URL('./images.worker.js', import.meta.url), options)
 * ```
 *
 * Step policies, per item, as in mapStage (`init` and `dispose` are exports of the worker module):
 * ```ts
 * import { threadStage, rateLimit, TimeoutError } from 'stageline'
 * const render = threadStage<{ id: number }, Uint8Array>(new URL('./render.worker.js', import.meta.url), {
 *   retries: 2,
 *   retryDelay: (retry) => 100 * 2 ** retry, // decided on the main thread
 *   timeout: 10_000,                         // ctx.signal in the thread aborts once it is up
 *   errors: 'skip',
 *   onError: (err, item) => console.error(`dropped ${item.id}`, err instanceof TimeoutError ? 'timeout' : err),
 *   rate: rateLimit(200),                    // items per second, shared with other stages
 * })
 * ```
 */
export interface ThreadStageOptions<I = unknown> extends Omit<StageOptions, 'workers'> {
  /**
   * How many worker threads run the function, from 1 to {@link MAX_THREADS}: the stage's
   * concurrency units, which `stage.options.workers` and the stats' `workers` report. Or `'auto'`:
   * the stage tunes its threads while it runs, between 1 and `os.availableParallelism()`, from its
   * throughput and time per item, as `workers: 'auto'` does for a map stage; or `{ min, max }`
   * for other bounds (`min` defaults to 1, `max` to the larger of `min` and the available cores).
   * An auto stage starts with `min` threads (`stage.options.threads` and `workers` hold it, and
   * `stage.options.tuning` the bounds); threads it stops using stay idle until the run ends, and
   * run the module's `dispose` then.
   * @default the number of available cores minus one, at least 1
   */
  threads?: number | 'auto' | { min?: number; max?: number }
  /**
   * The most items sent to a thread in one message. The stage sends fewer when items are slow
   * (it aims at about 2 ms of work per message) or when fewer are waiting. It also bounds memory:
   * the stage holds at most `qsize` + 2 x `threads` x `batch` items.
   * @default 1024
   */
  batch?: number
  /**
   * The module's export to run.
   * @default 'default'
   */
  export?: string
  /**
   * Returns the buffers of an item to move to the thread instead of copying (they become unusable
   * on the main thread). Called on the main thread for each item.
   * @default undefined: everything is copied
   */
  transfer?: (item: I) => readonly (TransferListItem | ArrayBufferView)[] | undefined
  /**
   * How many times an item whose function throws (or times out) is tried again, alone: the other
   * items of its batch are not run again. A retry waits `retryDelay` first. Decided on the main
   * thread; the retry may run on another thread. Not with `transfer` (the item's moved buffers
   * are gone from the main thread after the first try).
   * @default 0
   */
  retries?: number
  /**
   * Milliseconds to wait before a retry, or a function of the retry number (1 for the first retry)
   * and the error, called on the main thread: `(n) => 100 * 2 ** n`. Items of one batch that fail
   * together are retried together, after the longest of their delays. From 0 to 2^31-1
   * (`MAX_TIMER_MS`): a function that returns anything else fails the run on the item (a
   * RangeError, or a TypeError for a non-number, whose `cause` is the item's error), and one that
   * throws fails it with an AggregateError of the item's error and its own.
   * @default 0
   */
  retryDelay?: number | ((retry: number, error: unknown) => number)
  /**
   * Milliseconds one try of an item may take, counted from when its thread starts it. Once the
   * time is up, `ctx.signal` reports aborted (reason: an Error named `TimeoutError`), so a loop
   * that checks `signal.aborted` or calls `signal.throwIfAborted()` stops, and an async function's
   * promise is given up, as in mapStage; a result that arrives late counts as a timeout. A thread
   * still on the item 100 ms after that (a function that never looks at its signal, a blocking
   * call) is ended, whatever its function does: a new thread replaces it (it runs the module's
   * `init`; the ended thread's `dispose` does not run), and the other items of its batch are sent
   * again, on the same try; those that had run before the stuck one run a second time, since their
   * results were lost with the thread. The failure is a {@link TimeoutError}, retried, skipped or
   * failing the run like any other. With `transfer`, items then go one per batch (a moved buffer
   * cannot be sent again).
   * @default no timeout
   */
  timeout?: number
  /**
   * What an item's failure (after retries) does: `'fail'` fails the run; `'skip'` drops the item
   * and calls `onError` with it. Failures that are not the function's (an item that cannot be
   * sent, `transfer` throwing, a thread that dies) fail the run either way.
   * @default 'fail'
   */
  errors?: 'fail' | 'skip'
  /**
   * Called on the main thread with every item skipped by `errors: 'skip'`, and the error as
   * rebuilt from the thread (a {@link TimeoutError} for a timeout). Required with it; if it throws,
   * or returns a promise that rejects (a returned promise is awaited), the run fails with its
   * error. `ctx.state` is undefined there: the state lives in the threads.
   */
  onError?: (error: unknown, item: I, ctx: MapContext<undefined>) => void
  /**
   * A rate limit, shared with other stages (see {@link rateLimit}): each item takes a turn on the
   * main thread right before it is sent, and items then go to the threads one per message.
   * @default no rate limit
   */
  rate?: RateLimit
  /**
   * Milliseconds the end of a run waits for the worker module's `dispose` export to return in
   * every thread. Past it, the threads still in `dispose` are ended, the stage emits a process
   * warning naming itself, and the run ends as it would have (its results, or its error, stand).
   * Above 0, up to 2^31-1 (`MAX_TIMER_MS`), or `Infinity` to wait as long as `dispose` takes.
   * @default 5000
   */
  disposeTimeout?: number
  /**
   * Not an option of a thread stage: a function cannot be sent to a thread. Export
   * `init(ctx)` from the worker module instead; it runs once in each thread, and what it returns
   * is `ctx.state` there.
   */
  init?: never
  /**
   * Not an option of a thread stage: a function cannot be sent to a thread. Export
   * `dispose(state, ctx)` from the worker module instead.
   */
  dispose?: never
  /**
   * Not supported by a thread stage: the threads bound its concurrency (`threads`), and a limiter
   * slot held on the main thread would cover a whole batch, not one call. Use `rate` to space
   * items out.
   */
  limit?: never
  /**
   * Not an option of a thread stage: its concurrency is its threads. Use `threads`;
   * `stage.options.workers` reports it.
   */
  workers?: never
}

/**
 * The checked, complete options of a thread stage, as `stage.options` shows them: `workers` is
 * `threads`, the stage's concurrency units.
 *
 * @example
 * ```ts
 * import { type ResolvedThreadStageOptions, threadStage } from 'stageline'
 * const hash = threadStage(new URL('./hash.worker.js', import.meta.url), { threads: 3, batch: 64 })
 * const o: Readonly<ResolvedThreadStageOptions> = hash.options
 * console.log(o.workers, o.threads, o.batch, o.name) // 3 3 64 hash.worker
 * ```
 */
export interface ResolvedThreadStageOptions extends ResolvedStageOptions {
  threads: number
  batch: number
  export: string
  transfer: ((item: any) => readonly (TransferListItem | ArrayBufferView)[] | undefined) | undefined
  /** The module as a file URL. */
  module: string
  retries?: number
  retryDelay?: number | ((retry: number, error: unknown) => number)
  timeout?: number
  errors?: 'fail' | 'skip'
  onError?: (error: unknown, item: any, ctx: MapContext<undefined>) => void
  rate?: RateLimit
  disposeTimeout: number
}

const WHERE = 'threadStage()'

/** A checker that refuses an option with its own message, saying why and what to do instead. */
function refused(why: string): Checker {
  return (where, option, value) => {
    throw new TypeError(
      `${where}: \`${option}\` is not supported by a thread stage, got ${got(value)}: ${why}`,
    )
  }
}

/**
 * The options of a thread stage, one checker each: the common ones but `workers`, the thread
 * options, and mapStage's policies that make sense across threads, checked as mapStage checks
 * them. mapStage's other policies and `workers` are in it to be refused with a message that says
 * why (rather than "unknown option").
 */
const THREAD_SCHEMA: Schema = {
  threads: countOrTuning(MAX_THREADS, { min: 1, max: Math.min(MAX_THREADS, availableParallelism()) }),
  batch: integer(1, MAX_BATCH),
  export: (where, option, value) => {
    if (typeof value !== 'string' || value === '') {
      throw new TypeError(
        `${where}: expected \`${option}\` to be the non-empty name of an export, got ${got(value)}`,
      )
    }
    return value
  },
  transfer: fn,
  disposeTimeout: ms({ above0: true, infinity: true }),
  qsize: STAGE_SCHEMA.qsize!,
  ordered: STAGE_SCHEMA.ordered!,
  name: STAGE_SCHEMA.name!,
  retries: POLICY_SCHEMA.retries!,
  retryDelay: POLICY_SCHEMA.retryDelay!,
  timeout: POLICY_SCHEMA.timeout!,
  errors: POLICY_SCHEMA.errors!,
  onError: POLICY_SCHEMA.onError!,
  rate: POLICY_SCHEMA.rate!,
  workers: (where, _option, value) => {
    throw new TypeError(
      `${where}: \`workers\` is not an option of a thread stage, got ${got(value)}; use \`threads\` for the number of threads`,
    )
  },
  init: refused(
    'a function cannot be sent to a thread; export `init(ctx)` from the worker module instead: it runs once in each thread, and what it returns is `ctx.state` there',
  ),
  dispose: refused(
    'a function cannot be sent to a thread; export `dispose(state, ctx)` from the worker module instead: it runs once in each thread before the pool is destroyed',
  ),
  limit: refused(
    'the threads bound its concurrency (`threads`), and a limiter slot held on the main thread would cover a whole batch, not one call; use `rate` to space items out',
  ),
}

/** The kind of a thread stage: the module, the export and everything else are its options. */
const THREAD_KIND: StageKind<ResolvedThreadStageOptions> = {
  factory: 'threadStage',
  resolve(where, base, options) {
    const { threads, ...rest } = validateOptions(where, options, THREAD_SCHEMA) as Record<string, unknown>
    const o = { ...base, ...rest } as ResolvedThreadStageOptions
    if (threads !== undefined) {
      // a count, or the bounds of an auto stage, which starts at its minimum
      o.tuning = typeof threads === 'number' ? undefined : (threads as Tuning)
      o.threads = typeof threads === 'number' ? threads : (threads as Tuning).min
    }
    checkSkipRule(where, o)
    if (o.transfer !== undefined && o.retries !== undefined && o.retries > 0) {
      throw new TypeError(
        `${where}: \`retries\` cannot be combined with \`transfer\`, got retries: ${o.retries}: a retry sends the item again, but \`transfer\` moved its buffers to the thread on the first try (they are empty on the main thread); copy the buffers (no \`transfer\`) to retry, or drop \`retries\``,
      )
    }
    // a thread stage's concurrency units are its threads
    o.workers = o.threads
    return o
  },
  plan(o): StagePlan {
    const policies = policiesOf(o)
    // one item per batch under a rate limit (a turn is taken per item right before it is sent),
    // and with `transfer` under a timeout: the other items of a batch whose thread is ended are
    // sent again, but `transfer` moved their buffers into the ended thread
    const batch =
      policies?.rate === undefined && (o.transfer === undefined || policies?.timeout === undefined)
        ? o.batch
        : 1
    const run = {
      moduleHref: o.module,
      exportName: o.export,
      threads: o.threads,
      most: o.tuning?.max ?? o.threads,
      tuned: o.tuning !== undefined,
      batch,
      ordered: o.ordered,
      transfer: o.transfer,
      disposeTimeout: o.disposeTimeout,
      policies,
    }
    return {
      workers: o.threads,
      // every batch loop holds at most one batch: one running and one queued per thread
      bound: (o.tuning?.max ?? o.threads) * IN_FLIGHT_PER_THREAD * batch,
      qsize: o.qsize,
      ordered: o.ordered,
      countsUnits: true,
      ...(o.tuning === undefined ? {} : { tuning: o.tuning }),
      start: (port) => {
        new ThreadRun(port, run)
      },
    }
  },
}

/**
 * Makes a stage whose function runs on worker threads: `module` is a file URL (or absolute path)
 * of an ES module whose default export, or the export named by `export`, is
 * `(item, ctx) => result | Promise<result>`. Use it for CPU-bound steps, which async workers cannot
 * spread over cores; the rest of the pipeline stays on the main thread.
 *
 * Each run starts its own pool of `threads` threads (loaded with piscina when the run starts) and
 * destroys it when the run ends, however it ends. Items go to the threads in batches, and at most
 * 2 x `threads` batches are in flight: the stage holds at most `qsize` + 2 x `threads` x `batch`
 * items (the stats' `bound`). Its concurrency units are its threads: `stage.options.workers` is
 * `threads` (`workers` is not an option here).
 *
 * Caveats: items and results cross threads by structured clone, and are checked before they go,
 * at any depth, so that nothing changes on the way: plain data (objects, arrays, primitives, Date,
 * Map, Set, typed arrays, errors of the built-in classes, ...) goes; a function, a symbol or an
 * instance of a class (whose methods would be lost), anywhere in an item or a result, fails the run
 * with an error naming the stage, the item and where in it; a Buffer arrives as a Uint8Array. The
 * module is loaded by Node itself in each thread, so it must be JavaScript (point at the compiled
 * .js of a TypeScript module). Errors thrown in a thread reach the main thread with their name,
 * message, stack, cause and sendable properties, as the `cause` of the run's TaskException.
 *
 * @example
 * The module the threads run (its compiled .js is what the stage loads):
 * ```ts
 * // file: hash.worker.ts
 * import { createHash } from 'node:crypto'
 * export default function hash(text: string): string {
 *   return createHash('sha256').update(text).digest('hex')
 * }
 * ```
 * The pipeline:
 * ```ts
 * import { mapStage, pipe, threadStage } from 'stageline'
 * const hash = threadStage<string, string>(new URL('./hash.worker.js', import.meta.url), { threads: 2 })
 * const read = mapStage(async (name: string) => `contents of ${name}`, { workers: 8 })
 * for await (const digest of pipe(['a.txt', 'b.txt'], read, hash).results()) console.log(digest)
 * ```
 */
export function threadStage<I, O>(
  module: URL | string,
  options?: ThreadStageOptions<I>,
): Stage<I, O, ThreadStageOptions<I>, ResolvedThreadStageOptions> {
  const href = moduleHref(module)
  const base: ResolvedThreadStageOptions = {
    workers: 1,
    qsize: DEFAULT_QSIZE,
    ordered: false,
    name: undefined,
    threads: Math.max(1, availableParallelism() - 1),
    batch: DEFAULT_BATCH,
    export: 'default',
    transfer: undefined,
    disposeTimeout: DEFAULT_DISPOSE_TIMEOUT_MS,
    module: href,
  }
  const o = THREAD_KIND.resolve(WHERE, base, options)
  o.name ??= defaultName(href, o.export)
  return new Stage(THREAD_KIND, o)
}

function moduleHref(module: unknown): string {
  if (module instanceof URL) {
    if (module.protocol !== 'file:') {
      throw new TypeError(`${WHERE}: expected \`module\` to be a file: URL, got ${module.href} (URL)`)
    }
    return module.href
  }
  if (typeof module === 'string') {
    if (module.startsWith('file:')) return moduleHref(new URL(module))
    if (isAbsolute(module)) return pathToFileURL(module).href
  }
  throw new TypeError(
    `${WHERE}: expected \`module\` to be a file URL or an absolute path, got ${got(module)}; ` +
      "for a file next to yours, write new URL('./file.js', import.meta.url)",
  )
}

/** The step policies a thread stage applies (per item, as mapStage does). */
const POLICIES = ['retries', 'retryDelay', 'timeout', 'errors', 'onError', 'rate'] as const

/** The policies a run applies, or undefined when none is set (the plain, fastest path). */
function policiesOf(o: ResolvedThreadStageOptions): ThreadPolicies | undefined {
  if (POLICIES.every((key) => o[key] === undefined)) return undefined
  return {
    retries: o.retries ?? 0,
    retryDelay: o.retryDelay ?? 0,
    // Infinity is no timeout: no deadline is set
    timeout: o.timeout === Number.POSITIVE_INFINITY ? undefined : o.timeout,
    onError: o.errors === 'skip' ? o.onError : undefined,
    rate: o.rate,
  }
}

/** `hash.worker` for .../hash.worker.js with the default export; the export's name otherwise. */
function defaultName(href: string, exportName: string): string {
  if (exportName !== 'default') return exportName
  const file = href.slice(href.lastIndexOf('/') + 1)
  const dot = file.lastIndexOf('.')
  return decodeURIComponent(dot > 0 ? file.slice(0, dot) : file)
}

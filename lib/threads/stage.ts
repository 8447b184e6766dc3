/**
 * threadStage(): a map stage whose function runs on a pool of worker threads, for CPU-bound steps.
 * This file only describes the stage and validates its options; it does not load piscina, which
 * pool.ts imports when a run of a thread stage starts.
 * @module
 */
import { availableParallelism } from 'node:os'
import { isAbsolute } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { TransferListItem } from 'node:worker_threads'
import type { StageContext } from '../group.js'
import {
  checkFunction,
  checkInteger,
  checkObject,
  DEFAULT_QSIZE,
  got,
  type ResolvedStageOptions,
  resolveStageOptions,
  type StageOptions,
} from '../options.js'
import { type RunnerFactory, Stage } from '../stage.js'
import { IN_FLIGHT_PER_THREAD, ThreadRun } from './pool.js'

/**
 * The most items one message to a thread carries, unless `batch` says otherwise. Batches are
 * sized at run time to about 2 ms of work each (see docs/threads.md), so this cap binds only for
 * tiny items; there, on 500,000 tiny items, 1024 moved 1.3x as many items per second as 256.
 */
export const DEFAULT_BATCH = 1024

/**
 * What the function in a thread receives besides its item.
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
export interface ThreadContext extends StageContext {
  /**
   * Aborts when the run stops. In a thread, `signal.aborted` and `signal.throwIfAborted()` read
   * the run's state at once, even inside a synchronous loop; `'abort'` listeners fire when the
   * thread's event loop gets a turn (while an async function awaits).
   */
  readonly signal: AbortSignal
  /** The 0-based index of this thread within the stage's pool, in the order the threads started. */
  readonly worker: number
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
 */
export interface ThreadStageOptions<I = unknown> extends Omit<StageOptions, 'workers'> {
  /**
   * How many worker threads run the function.
   * @default the number of available cores minus one, at least 1
   */
  threads?: number
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
}

/** The resolved options of a thread stage, as `stage.options` shows them. */
export interface ResolvedThreadStageOptions extends ResolvedStageOptions {
  threads: number
  batch: number
  export: string
  transfer: ((item: any) => readonly (TransferListItem | ArrayBufferView)[] | undefined) | undefined
  /** The module as a file URL. */
  module: string
}

const WHERE = 'threadStage()'
const EXTRA: ReadonlySet<string> = new Set(['threads', 'batch', 'export', 'transfer'])
/** The `workers` value this stage derived last: a different one was set by hand through setup(). */
const DERIVED: unique symbol = Symbol('stageline.threads.workers')

/**
 * Makes a stage whose function runs on worker threads: `module` is a file URL (or absolute path)
 * of an ES module whose default export, or the export named by `export`, is
 * `(item, ctx) => result | Promise<result>`. Use it for CPU-bound steps, which async workers cannot
 * spread over cores; the rest of the pipeline stays on the main thread.
 *
 * Each run starts its own pool of `threads` threads (loaded with piscina when the run starts) and
 * destroys it when the run ends, however it ends. Items go to the threads in batches, and at most
 * 2 x `threads` batches are in flight: the stage holds at most `qsize` + 2 x `threads` x `batch`
 * items, which `stage.options.workers` reports (it is not an option here).
 *
 * Caveats: items and results cross threads by structured clone, so they must be plain data
 * (objects, arrays, primitives, Date, Map, Set, typed arrays, ...): a function or a symbol, or an
 * item or result that is a class instance (whose methods would be lost), fails the run with an
 * error naming the stage; a Buffer arrives as a Uint8Array. The
 * module is loaded by Node itself in each thread, so it must be JavaScript (point at the compiled
 * .js of a TypeScript module). Errors thrown in a thread reach the main thread with their name,
 * message, stack and cloneable properties, as the `cause` of the run's TaskException.
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
export function threadStage<I, O>(module: URL | string, options?: ThreadStageOptions<I>): Stage<I, O> {
  const href = moduleHref(module)
  if (options !== undefined) {
    checkObject(WHERE, 'options', options)
    if ((options as Record<string, unknown>).workers !== undefined) {
      throw new TypeError(
        `${WHERE}: \`workers\` is not an option of a thread stage, got ${got((options as Record<string, unknown>).workers)}; use \`threads\` for the number of threads`,
      )
    }
  }
  const base: ResolvedThreadStageOptions = {
    workers: 1,
    qsize: DEFAULT_QSIZE,
    ordered: false,
    name: undefined,
    threads: Math.max(1, availableParallelism() - 1),
    batch: DEFAULT_BATCH,
    export: 'default',
    transfer: undefined,
    module: href,
  }
  const resolved = resolveStageOptions(WHERE, base, options, EXTRA) as ResolvedThreadStageOptions
  if (options !== undefined) {
    const o = options as Record<string, unknown>
    for (const key of EXTRA)
      if (o[key] !== undefined) (resolved as unknown as Record<string, unknown>)[key] = o[key]
  }
  checkThreadOptions(resolved)
  resolved.name ??= defaultName(href, resolved.export)
  return new Stage<I, O>(
    'threadStage',
    threadRunner,
    resolved as ResolvedThreadStageOptions & Record<string | symbol, unknown>,
    EXTRA,
    checkThreadOptions as (o: ResolvedStageOptions) => void,
  )
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

/** Validates the thread options, and derives `workers` (the items in flight) from them. */
function checkThreadOptions(o: ResolvedThreadStageOptions & { [DERIVED]?: number }): void {
  if (o[DERIVED] !== undefined && o.workers !== o[DERIVED]) {
    throw new TypeError(
      `${WHERE}: \`workers\` is not an option of a thread stage, got ${got(o.workers)}; use \`threads\` for the number of threads`,
    )
  }
  checkInteger(WHERE, 'threads', o.threads, 1, false)
  checkInteger(WHERE, 'batch', o.batch, 1, false)
  if (typeof o.export !== 'string' || o.export === '') {
    throw new TypeError(
      `${WHERE}: expected \`export\` to be the non-empty name of an export, got ${got(o.export)}`,
    )
  }
  if (o.transfer !== undefined) checkFunction(WHERE, 'transfer', o.transfer)
  o.workers = o.threads * IN_FLIGHT_PER_THREAD * o.batch
  o[DERIVED] = o.workers
}

/** `hash.worker` for .../hash.worker.js with the default export; the export's name otherwise. */
function defaultName(href: string, exportName: string): string {
  if (exportName !== 'default') return exportName
  const file = href.slice(href.lastIndexOf('/') + 1)
  const dot = file.lastIndexOf('.')
  return decodeURIComponent(dot > 0 ? file.slice(0, dot) : file)
}

const threadRunner: RunnerFactory = (options) => {
  const o = options as ResolvedThreadStageOptions
  const plan = {
    moduleHref: o.module,
    exportName: o.export,
    threads: o.threads,
    batch: o.batch,
    transfer: o.transfer,
  }
  return {
    ordered: o.ordered,
    launch: (g) => {
      new ThreadRun(g, plan, o.ordered)
    },
  }
}

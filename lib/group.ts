/**
 * One stage's worker group within one run: its inlet and outlet, its abort controller, its live
 * worker count and its counters. Worker loops (workers.ts) and custom stages (threads, Redis) are
 * written against this class; the run (run.ts) creates one per stage.
 * @module
 */
import { setMaxListeners } from 'node:events'
import type { Inlet, OrderedChannel, Outlet } from './queue.js'

/**
 * What a stage function receives besides its input.
 *
 * @example
 * ```ts
 * import { pipe, type StageContext, stage } from 'stageline'
 * const tag = stage(async function* (input: AsyncIterable<string>, ctx: StageContext) {
 *   for await (const s of input) {
 *     ctx.signal.throwIfAborted() // stop early when the run stops
 *     yield `${s} from ${ctx.stage}, worker ${ctx.worker}`
 *   }
 * }, { name: 'tag' })
 * console.log(await pipe(['a'], tag).toArray()) // [ 'a from tag, worker 0' ]
 * ```
 */
export interface StageContext {
  /** Aborts when the run fails, the consumer stops early, or the caller's signal aborts. */
  readonly signal: AbortSignal
  /** The 0-based index of this worker within its stage. */
  readonly worker: number
  /** The stage's name. */
  readonly stage: string
}

/** The part of a run a group reports to. */
export interface RunHooks {
  fail(err: unknown, stage: string, worker: number, item: unknown): void
  workerExited(): void
  stageFinished(index: number): void
}

export type GroupOutlet = Outlet<unknown> | OrderedChannel<unknown>

/**
 * The most items between two timed ones is SAMPLE_MASK + 1. Timing an item costs two clock reads
 * (about 100 ns each on a cloud VM), so how often a stage is timed adapts to its pace: items are
 * timed about every SAMPLE_GAP_MS of wall time, so a stage doing an item a millisecond is timed on
 * every item, and one doing millions a second on one item in 256, which keeps the cost under about
 * 1% of the cheapest loop (measured with benchmarks/stats-overhead.js).
 */
export const SAMPLE_MASK = 255
const SAMPLE_GAP_MS = 0.05
/** How many of the latest samples the p95 is computed over. */
const SAMPLE_RING = 256

export class Group {
  /** Set when this group must stop: the run is stopping, or every later stage has finished. */
  halted = false
  /** Workers still running. */
  live = 0
  /** Items taken from the input. */
  taken = 0
  /** Items handed to the output. */
  emitted = 0
  /** Items whose failure was skipped by the stage's error policy. */
  failed = 0
  /** Items dropped on purpose (a map function returned `skip`, a filter said no). */
  skipped = 0
  /** Retries made (an item that succeeds on its third try counts 2). */
  retried = 0
  /** Workers working on an item right now. */
  busy = 0
  /** The latest sampled per-item times in ms (a ring; see SAMPLE_MASK). */
  readonly samples = new Float64Array(SAMPLE_RING)
  /** How many items were timed. */
  timed = 0
  /** The sum of the sampled times in ms. */
  timeSum = 0
  readonly ctl = new AbortController()
  /**
   * Stage fusion (fusion.ts): the next stage's group, when that stage is a plain map stage whose
   * function this group's workers may call for an idle worker of it; set by the run before launch,
   * cleared once a call returns a promise.
   */
  next: Group | undefined = undefined
  /** This group's map function, when upstream workers may call it for an idle worker (see `next`). */
  fuseFn: ((item: unknown, ctx: StageContext) => unknown) | undefined = undefined

  constructor(
    readonly run: RunHooks,
    readonly index: number,
    readonly name: string,
    readonly input: Inlet<unknown>,
    readonly output: GroupOutlet,
    readonly workers: number,
  ) {
    // every worker may hand ctx.signal to an API that listens on it (fetch, timers): that is
    // `workers` listeners, not a leak, so the warning threshold grows with the stage
    setMaxListeners(Math.max(10, workers * 4), this.ctl.signal)
  }

  /** Time an item when `(taken & sampleMask) === 0`: adapted by `sampling()`, 0 (every item) at first. */
  sampleMask = 0
  private lastSampleAt = 0

  /** A timed item starts at `t0`: times items more or less often to keep about SAMPLE_GAP_MS between them. */
  sampling(t0: number): void {
    const gap = t0 - this.lastSampleAt
    this.lastSampleAt = t0
    if (gap < SAMPLE_GAP_MS) {
      if (this.sampleMask < SAMPLE_MASK) this.sampleMask = this.sampleMask * 2 + 1
    } else if (gap > 4 * SAMPLE_GAP_MS && this.sampleMask > 0) {
      this.sampleMask >>= 1
    }
  }

  /** Records one sampled per-item time. */
  record(ms: number): void {
    this.samples[this.timed & (SAMPLE_RING - 1)] = ms
    this.timed++
    this.timeSum += ms
  }

  /** The context a worker's function receives. */
  context(worker: number): StageContext {
    return { signal: this.ctl.signal, worker, stage: this.name }
  }

  /** Starts `workers` copies of `loop`. A loop must end by calling `exit()` or `fail()` exactly once. */
  spawn(loop: (g: Group, worker: number) => unknown): void {
    for (let i = 0; i < this.workers; i++) {
      this.live++
      void loop(this, i)
    }
  }

  /** A worker finished normally. The last one closes the output. */
  exit(): void {
    if (--this.live === 0 && !this.halted) {
      this.output.close()
      this.run.stageFinished(this.index)
    }
    this.run.workerExited()
  }

  /** A worker failed on `item` (undefined where unknown): the run fails. */
  fail(err: unknown, worker: number, item: unknown): void {
    // once halted, an error is the stop itself (a fetch given ctx.signal rejects with AbortError)
    // or comes from work nobody will read: when a later stage stopped reading, it must not fail a
    // run that is still delivering
    if (this.halted) {
      this.exit()
      return
    }
    if (item !== undefined) this.failed++
    this.live--
    this.run.fail(err, this.name, worker, item)
    this.run.workerExited()
  }

  /**
   * A call an upstream worker made for this group's idle `worker` (stage fusion) threw on `item`:
   * the run fails as if that worker had thrown. Its workers live on until the run halts them.
   */
  failFused(err: unknown, worker: number, item: unknown): void {
    if (this.halted) return
    this.failed++
    this.run.fail(err, this.name, worker, item)
  }

  /** Stops this group: no new items are taken, `ctx.signal` aborts with `reason`. */
  halt(reason: unknown): void {
    if (this.halted) return
    this.halted = true
    this.input.abort()
    this.output.abort()
    this.ctl.abort(reason)
  }
}

/**
 * Where a kind of stage plugs in: the contract between the engine and a kind.
 *
 * A kind (map, generator, batch, flatMap, thread, Redis, ...) is written against two interfaces and
 * nothing else of the engine:
 * - `StageKind`, which the kind implements: its factory's name, how its options are checked, and
 *   how a stage of it runs (`StagePlan`: its concurrency, how much it may hold, whether its output
 *   keeps input order, and `start(port)`);
 * - `StagePort`, which the engine gives each stage of a run, and `Lane`, one worker's share of it:
 *   take an item, wait for one, emit a result (or fill its slot in input order), count, exit or
 *   fail. The port keeps the stage's time accounting (working, starved, blocked) from where lanes
 *   park and wake, and halts them when the run stops.
 *
 * Adding a kind is one file: a `StageKind` and a factory that returns `new Stage(kind, options)`.
 * @module
 */
import { DONE, type Done, EMPTY, type Empty, SKIP } from '../channel/inlet.js'

export { DONE, type Done, EMPTY, type Empty, SKIP }

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

/** A stage's map function as the engine calls it. */
export type MapFn = (item: unknown, ctx: StageContext) => unknown

/** A kind of stage: how its options are checked, and how a stage of it runs. */
export interface StageKind<O extends object> {
  /** The factory's name, as messages name it: `mapStage`, `threadStage`. */
  readonly factory: string
  /**
   * Checks `options` given to the factory or to `setup()` (`where` names which, for messages),
   * merged over `base` (the defaults, or the stage's current options): returns the complete
   * options, or throws naming the option, the value and what is allowed.
   */
  resolve(where: string, base: O, options: unknown): O
  /** How a stage of this kind, with these options and this name, runs inside one run. */
  plan(options: O, name: string): StagePlan
}

/** How one stage runs inside one run. */
export interface StagePlan {
  /** Concurrency units: workers (map, generator), threads, or in-flight slots (Redis). */
  readonly workers: number
  /**
   * The most items the stage holds in flight, taken and not yet out: `workers` for a stage whose
   * workers take one item at a time. An ordered stage's reorder window is `qsize + bound`.
   */
  readonly bound: number
  /** Capacity of the stage's output queue. */
  readonly qsize: number
  /** Outputs go through the reorder window and leave in input order (lanes `reserve()` and `fill()`). */
  readonly ordered: boolean
  /**
   * Set on plain map stages: their function, which a worker of the stage before may call itself
   * for an idle worker of this stage, instead of queueing the item (stage fusion).
   */
  readonly fusable?: MapFn
  /**
   * True when the kind counts its concurrency units' time itself, with `port.units()` (a thread
   * stage's threads, a Redis stage's slots); false when its lanes are its units and the port counts
   * their time from where they park.
   */
  readonly countsUnits?: boolean
  /**
   * One worker's loop, for a kind whose number of workers may change while it runs: the port
   * starts more of them, and retires some (a retired lane's `take()` says DONE), when the stage is
   * tuned (`tuning`) or resized by `run.setWorkers()`. Kinds without it keep their workers, unless
   * they count their own units and change them themselves (`port.resizable()`).
   */
  readonly worker?: (lane: Lane) => unknown
  /** Set for `workers: 'auto'`: the bounds the stage's tuner keeps its workers within. */
  readonly tuning?: { readonly min: number; readonly max: number }
  /** Starts the stage's workers. Called once per run, after every stage of the run exists. */
  start(port: StagePort): void
}

/** The counters of a stage, for stats: plain fields, incremented by the port and the kind. */
export interface StageCounts {
  /** Items taken from the input (counted by the input itself). */
  readonly taken: number
  /** Items handed to the output (counted by `emit()`/`fill()`). */
  emitted: number
  /** Items that failed: skipped by an error policy, or the one that failed the run. */
  failed: number
  /** Items dropped on purpose (`skip`, a filter). */
  skipped: number
  /** Retries made. */
  retried: number
}

/** All that a kind of stage sees of one run. */
export interface StagePort extends StageCounts {
  /** The stage's name. */
  readonly name: string
  /** Aborts when the stage must stop: the run stops or fails, or every later stage has finished. */
  readonly signal: AbortSignal
  /** True once the stage must stop (then `take()` says DONE and emits are dropped). */
  readonly halted: boolean
  /** Concurrency units now: as planned, until the stage is tuned or resized. */
  readonly workers: number
  /**
   * Starts a worker and returns its lane (lanes are numbered 0, 1, ... in the order they start).
   * The worker must end by calling `lane.exit()` or `lane.fail()` exactly once.
   */
  lane(): Lane
  /** Starts `n` workers running `loop`. */
  spawn(n: number, loop: (lane: Lane) => unknown): void
  /**
   * For a kind that counts its own units (`countsUnits`) and can change their number mid-run (a
   * thread stage's threads): how to apply a new number, at most `most`. The port then resizes the
   * stage by calling `apply` instead of starting or retiring lanes; `workers` reads the new number.
   */
  resizable(apply: (n: number) => void, most: number): void
  /** For kinds that count their own units (`countsUnits`): how many are working and blocked now (the rest are starved). */
  units(working: number, blocked: number): void
  /** Records one sampled per-item time, in ms. */
  record(ms: number): void
  /** Fails the run as this stage, for a failure no lane raised (a pool that broke); `item` where known. */
  fail(err: unknown, worker: number, item: unknown): void
  /** Ordered stages: fills the slot of input position `seq` with `y`, or drops it (SKIP). */
  fill(seq: number, y: unknown): void
}

/** One worker's share of a stage's port. */
export interface Lane {
  /** The worker's 0-based index in its stage. */
  readonly worker: number
  /** The context its function receives (`signal`, `worker`, `stage`). */
  readonly ctx: StageContext
  readonly port: StagePort
  /** After `wait()` resolved: the item handed over, or DONE. Read it with `received()`. */
  readonly item: unknown
  /** The input position of the item this lane took last. */
  readonly seq: number
  /**
   * Set after `wait()` when a worker of the stage before called this lane's function for it (stage
   * fusion) and the call returned a promise: the result of this lane's next item, to await as its own.
   */
  adopted: unknown
  /** Takes an item now, or says EMPTY (then `wait()`) or DONE (the input ended, or the stage halted). */
  take(): unknown
  /** Parks until an item or DONE arrives (call only after `take()` said EMPTY); counted as starved. */
  wait(): Promise<void>
  /** What `wait()` received: the item, or DONE (also once the stage has halted). */
  received(): unknown
  /**
   * Takes back a `wait()` not answered yet: it resolves at once, and `received()` says EMPTY. False
   * if it was answered meanwhile (then `received()` has what it got).
   */
  cancel(): boolean
  /**
   * Sends `y` on (unordered stages): returns undefined once it is on its way, or a promise to await
   * when there is no room downstream (counted as blocked). Dropped once the stage has halted.
   */
  emit(y: unknown): Promise<void> | undefined
  /** Ordered stages: reserves a slot in the reorder window before taking an item (a promise: counted as blocked). */
  reserve(): Promise<void> | undefined
  /** Ordered stages: gives back a reserved slot that will not be filled (the input ended). */
  release(): void
  /**
   * The worker runs again after awaiting a promise this lane gave it (`wait()`, `emit()`,
   * `reserve()`): the lane counts as working from here, not as starved or blocked. `received()`,
   * `take()`, `exit()` and `fail()` do this themselves; a worker that does anything else first after
   * a park (pulls a generator again once room was made, emits again) calls it before that.
   */
  resume(): void
  /** Calls `fn` on `x` with this lane's context, timing the call when the stage samples it. */
  call(fn: MapFn, x: unknown): unknown
  /**
   * Every so many items, says whether the event loop is due a turn (a promise to await), so that a
   * worker whose items never wait does not starve timers and I/O; undefined otherwise.
   */
  pace(): Promise<void> | undefined
  /** The worker is done: the last lane of a stage to exit closes its output (end of stream). */
  exit(): void
  /** The worker failed on `item` (undefined where unknown): the run fails, unless the stage has halted. */
  fail(err: unknown, item: unknown): void
}

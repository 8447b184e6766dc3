/**
 * One stage inside one run: the port its kind runs on (lib/kinds/kind.ts), and its workers'
 * lanes. It owns the stage's input and output, its abort controller, its live worker count, its
 * counters and its time book; where its last worker exits, its output closes: that is end of
 * stream, which travels left to right one channel at a time.
 * @module
 */
import { setMaxListeners } from 'node:events'
import { isThenable } from '../_utils.js'
import type { Channel } from '../channel/bounded.js'
import { Handed } from '../channel/handover.js'
import { DONE, EMPTY, type Inlet, SKIP } from '../channel/inlet.js'
import type { OrderedChannel } from '../channel/reorder.js'
import { Waiter } from '../channel/waiter.js'
import type { Lane, MapFn, StageContext, StagePlan, StagePort } from '../kinds/kind.js'
import { MAX_WORKERS } from '../options/limits.js'
import type { Execution } from './execution.js'
import { fuse } from './fusion.js'
import { CHECK_EVERY } from './pace.js'
import { BLOCKED, STARVED, TimeBook, type TimeTotals, type UnitState, WORKING } from './time.js'
import { Tuner } from './tuner.js'

/** How often a `workers: 'auto'` stage's tuner looks at what the stage measured. */
export const TUNE_MS = 50

/** What a stage's tuner read at the end of a window. */
interface TuneMark extends TimeTotals {
  at: number
  done: number
  failures: number
  timed: number
  timeSum: number
}

/**
 * The most items between two timed ones is SAMPLE_MASK + 1. Timing an item costs two clock reads
 * (about 100 ns each on a cloud VM), so how often a stage is timed adapts to its pace: items are
 * timed about every SAMPLE_GAP_MS of wall time, so a stage doing an item a millisecond is timed on
 * every item, and one doing millions a second on one item in 256, which keeps the cost under about
 * 1% of the cheapest loop (measured with benchmarks/stats-overhead.js).
 */
export const SAMPLE_MASK = 255
const SAMPLE_GAP_MS = 0.05
/**
 * A stage whose sampled items take this long (a moving mean) or longer makes its workers queue
 * behind parked producers instead of overtaking them (Waiter.defers): a park and a wake are then
 * under 1% of an item, and a parked item's wait stays bounded. Faster stages keep overtaking,
 * which spares them a park per item.
 */
export const DEFER_MS = 0.1
/** How many of the latest samples the p95 is computed over. */
const SAMPLE_RING = 256

export class StageRun implements StagePort {
  /** Set when this stage must stop: the run is stopping, or every later stage has finished. */
  halted = false
  /** Workers still running. */
  live = 0
  emitted = 0
  failed = 0
  skipped = 0
  retried = 0
  /** The latest sampled per-item times in ms (a ring; see SAMPLE_MASK). */
  readonly samples = new Float64Array(SAMPLE_RING)
  /** How many items were timed. */
  timed = 0
  /** The sum of the sampled times in ms. */
  timeSum = 0
  /** Time an item when `(taken & sampleMask) === 0`: adapted by `sampling()`, 0 (every item) at first. */
  sampleMask = 0
  private lastSampleAt = 0
  /** A moving mean of the sampled item times, in ms. */
  private recentMs = 0
  /** Its workers queue behind parked producers (see DEFER_MS). */
  private defers = false
  readonly ctl = new AbortController()
  readonly book: TimeBook
  /**
   * Stage fusion (fusion.ts): the next stage, when it is a plain map stage whose function this
   * stage's workers may call for an idle worker of it; set by the run before launch, cleared once a
   * call returns a promise.
   */
  next: StageRun | undefined = undefined
  /** This stage's map function, when upstream workers may call it for an idle worker (see `next`). */
  fuseFn: MapFn | undefined = undefined
  /** Calls upstream workers made for this stage's idle workers (stage fusion). */
  fusedCalls = 0
  /** Of those, the calls whose pending result was handed, with its item, to the idle worker (through the input). */
  handedOver = 0
  /** How many of those calls were timed, and their time by the index of the stage that made them. */
  fusedTimed = 0
  fusedMsBy: Float64Array | undefined = undefined
  /** The workers the stage runs now (lanes retiring after their item are not counted). */
  private target: number
  /** Lanes running, to choose which to retire when the stage shrinks. */
  private readonly running = new Set<WorkerLane>()
  /** Worker indexes of lanes that ended, given again to lanes that start, lowest first. */
  private readonly freeIndexes: number[] = []
  private nextIndex = 0
  /** The controller of a `workers: 'auto'` stage, and its timer; undefined for a fixed stage. */
  tuning: { tuner: Tuner; timer: ReturnType<typeof setInterval>; last: TuneMark } | undefined
  /** The stage's workers tune themselves (still true once it has ended; false once fixed again). */
  tuned = false
  /** Set by a kind that changes its own units' number (`resizable()`): how, and the most it takes. */
  private units_: { apply: (n: number) => void; most: number } | undefined

  constructor(
    readonly exec: Execution,
    readonly index: number,
    readonly name: string,
    readonly plan: StagePlan,
    readonly input: Inlet<unknown>,
    readonly output: Channel<unknown> | OrderedChannel<unknown>,
  ) {
    this.book = new TimeBook(exec.clock)
    this.target = plan.workers
    // every worker may hand ctx.signal to an API that listens on it (fetch, timers): that is
    // `workers` listeners, not a leak, so the warning threshold grows with the stage
    setMaxListeners(Math.max(10, plan.workers * 4), this.ctl.signal)
  }

  /**
   * Items taken: what the input handed out (the input counts, so that no loop has to), plus the
   * items upstream workers worked on for this stage's idle workers without queueing them (fusion).
   */
  get taken(): number {
    return this.input.taken + this.fusedCalls - this.handedOver
  }

  get signal(): AbortSignal {
    return this.ctl.signal
  }

  /** The workers the stage runs now: its plan's, until it is resized (by its tuner, or run.setWorkers()). */
  get workers(): number {
    return this.target
  }

  /** The context a worker's function receives. */
  context(worker: number): StageContext {
    return { signal: this.ctl.signal, worker, stage: this.name }
  }

  lane(): WorkerLane {
    const counted = this.exec.accounting && this.plan.countsUnits !== true
    const index = this.freeIndexes.length > 0 ? this.freeIndexes.shift()! : this.nextIndex++
    const lane = new WorkerLane(this, index, counted)
    lane.defers = this.defers
    this.live++
    this.running.add(lane)
    if (counted) this.book.start()
    return lane
  }

  /** A lane ended: its worker index is free for a lane that starts later (the lowest is given first). */
  private laneEnded(lane: WorkerLane): void {
    this.running.delete(lane)
    const free = this.freeIndexes
    let i = free.length
    while (i > 0 && free[i - 1]! > lane.worker) i--
    free.splice(i, 0, lane.worker)
  }

  /**
   * Runs `n` workers from now on (between 1 and MAX_WORKERS): starts new ones, or retires some (a
   * worker waiting for input stops at once; a busy one finishes the item it holds, then stops).
   * Says `reason` to the run's watchers. False, and nothing changes, where the stage cannot be
   * resized: its kind cannot start workers mid-run, or it has ended.
   */
  resize(n: number, reason: string): boolean {
    const start = this.plan.worker
    const units = this.units_
    if (!this.canResize || this.halted || this.live === 0) return false
    const to = Math.max(1, Math.min(units?.most ?? MAX_WORKERS, n))
    const from = this.target
    if (to === from) return true
    this.target = to
    if (start === undefined) units!.apply(to)
    else if (to > from) {
      for (let i = from; i < to; i++) void start(this.lane())
    } else {
      // idle lanes first (they hold nothing), then the latest started
      const lanes = [...this.running].filter((l) => !l.retiring)
      lanes.sort((a, b) => Number(b.idle) - Number(a.idle) || b.worker - a.worker)
      for (let i = 0; i < from - to; i++) lanes[i]!.retire()
    }
    this.exec.workersChanged(this, from, to, reason)
    return true
  }

  /** Tunes this stage's workers between `min` and `max` from now on (`workers: 'auto'`). */
  /** The stage's workers can change while it runs: its kind starts lanes, or changes its own units. */
  get canResize(): boolean {
    return this.plan.worker !== undefined || this.units_ !== undefined
  }

  /** The most workers the stage may run: its kind's own limit, for a kind that changes its units itself. */
  get mostWorkers(): number {
    return this.units_?.most ?? MAX_WORKERS
  }

  resizable(apply: (n: number) => void, most: number): void {
    this.units_ = { apply, most }
  }

  tune(min: number, max: number): boolean {
    if (!this.canResize || this.halted || this.live === 0) return false
    this.untune()
    const timer = setInterval(this.onTune, TUNE_MS)
    timer.unref()
    this.tuning = { tuner: new Tuner(min, max), timer, last: this.mark() }
    this.tuned = true
    if (this.target < min || this.target > max)
      this.resize(Math.min(max, Math.max(min, this.target)), `bounds ${min}..${max}`)
    return true
  }

  /** Stops tuning: the stage keeps the workers it has; `fixed` when they are set to a number. */
  untune(fixed = false): void {
    if (fixed) this.tuned = false
    if (this.tuning === undefined) return
    clearInterval(this.tuning.timer)
    this.tuning = undefined
  }

  /** What the tuner reads: the stage's counters and time now. */
  private mark(): TuneMark {
    const t = this.book.read()
    return {
      at: this.exec.clock(),
      done: this.emitted + this.skipped + this.failed,
      failures: this.failed + this.retried,
      timed: this.timed,
      timeSum: this.timeSum,
      ...t,
    }
  }

  private readonly onTune = (): void => {
    const t = this.tuning
    if (t === undefined) return
    const now = this.mark()
    const prev = t.last
    t.last = now
    const unit =
      now.workingMs + now.starvedMs + now.blockedMs - (prev.workingMs + prev.starvedMs + prev.blockedMs)
    const timed = now.timed - prev.timed
    const decision = t.tuner.next({
      ms: now.at - prev.at,
      workers: this.target,
      done: now.done - prev.done,
      itemMs: timed > 0 ? (now.timeSum - prev.timeSum) / timed : undefined,
      starved: unit > 0 ? (now.starvedMs - prev.starvedMs) / unit : 0,
      blocked: unit > 0 ? (now.blockedMs - prev.blockedMs) / unit : 0,
      failures: now.failures - prev.failures,
    })
    if (decision !== undefined) this.resize(decision.workers, decision.reason)
  }

  spawn(n: number, loop: (lane: Lane) => unknown): void {
    for (let i = 0; i < n; i++) void loop(this.lane())
  }

  units(working: number, blocked: number): void {
    if (this.exec.accounting) this.book.set(working, blocked, this.target)
  }

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

  record(ms: number): void {
    this.samples[this.timed & (SAMPLE_RING - 1)] = ms
    this.timed++
    this.timeSum += ms
    this.recentMs += (ms - this.recentMs) / Math.min(this.timed, 8)
    const defers = this.recentMs >= DEFER_MS
    if (defers !== this.defers) {
      this.defers = defers
      for (const lane of this.running) lane.defers = defers
    }
  }

  /**
   * Calls `fn` on a sampled item and records how long it took (for an async result, until it
   * settles). Kept out of the loops: with the clock reads inline, the loops ran about 10% slower
   * on cheap synchronous functions. `fusedBy`: the index of the stage whose worker made the call
   * for an idle worker of this one (stage fusion), or -1.
   */
  callTimed(fn: MapFn, x: unknown, ctx: StageContext, fusedBy = -1): unknown {
    const clock = this.exec.clock
    const t0 = clock()
    this.sampling(t0)
    const y = fn(x, ctx)
    if (!isThenable(y)) {
      const ms = clock() - t0
      this.record(ms)
      if (fusedBy >= 0) {
        this.fusedTimed++
        ;(this.fusedMsBy ??= new Float64Array(this.index))[fusedBy]! += ms
      }
      return y
    }
    return Promise.resolve(y).then((v) => {
      this.record(clock() - t0)
      return v
    })
  }

  fill(seq: number, y: unknown): void {
    if (y !== SKIP) this.emitted++
    ;(this.output as OrderedChannel<unknown>).fill(seq, y)
  }

  /** A worker finished normally. The last one closes the output: end of stream. */
  exitLane(lane?: WorkerLane): void {
    if (lane !== undefined) this.laneEnded(lane)
    if (--this.live === 0) {
      this.untune()
      this.lastLaneEnded()
      if (!this.halted) {
        this.output.close()
        this.exec.stageFinished(this.index)
      }
    }
    this.exec.workerExited()
  }

  /**
   * A kind that counts its units has none left once its last lane has ended: they stop counting
   * time (lanes the port counts leave the book one by one, as they end).
   */
  private lastLaneEnded(): void {
    if (this.plan.countsUnits === true && this.exec.accounting) this.book.set(0, 0, 0)
  }

  /** A worker failed on `item` (undefined where unknown): the run fails. */
  failLane(err: unknown, lane: WorkerLane, item: unknown): void {
    // once halted, an error is the stop itself (a fetch given ctx.signal rejects with AbortError)
    // or comes from work nobody will read: when a later stage stopped reading, it must not fail a
    // run that is still delivering
    if (this.halted) {
      this.exitLane(lane)
      return
    }
    const worker = lane.worker
    this.laneEnded(lane)
    if (item !== undefined) this.failed++
    if (--this.live === 0) {
      this.untune()
      this.lastLaneEnded()
    }
    this.exec.fail(err, this.name, worker, item)
    this.exec.workerExited()
  }

  fail(err: unknown, worker: number, item: unknown): void {
    if (this.halted) return
    if (item !== undefined) this.failed++
    this.exec.fail(err, this.name, worker, item)
  }

  /** Stops this stage: no new items are taken, `ctx.signal` aborts with `reason`. */
  halt(reason: unknown): void {
    if (this.halted) return
    this.halted = true
    this.untune()
    this.input.abort()
    this.output.abort()
    this.ctl.abort(reason)
  }
}

/**
 * One worker's lane: its side of the stage's input and output, and its place in the time book. It
 * is the worker's Waiter on both channels, so taking and sending allocate nothing; it enters the
 * starved or blocked state where it parks and leaves it at the worker's first call on the lane
 * after the park (or at `resume()`), which is where the clock is read.
 */
export class WorkerLane extends Waiter implements Lane {
  readonly ctx: StageContext
  adopted: unknown = undefined
  /** What `fuse()` left to send: the result of the last stage it reached. */
  fused: unknown = undefined
  private readonly input: Inlet<unknown>
  /** The state a park puts this lane in: set by the operation that may park. */
  private parking: UnitState = STARVED
  /** The state the book counts this lane in while it is asleep. */
  private counting: UnitState = STARVED
  /** Items this lane has handled, for pacing and for sampling its calls. */
  private n = 0
  private calls = 0
  /** The stage shrank: this lane takes no more items and ends once it holds none. */
  retiring = false
  /** `retiring || asleep`: the one test `take()` makes before its fast path. */
  private special = false
  /** Parked in `wait()`, holding no item. */
  idle = false
  /** Parked, and counted in the book as starved or blocked until its worker runs again. */
  private asleep = false

  constructor(
    readonly stage: StageRun,
    readonly worker: number,
    /** This lane's park and wake move it in the stage's time book (false when the kind counts its units). */
    private readonly counted: boolean,
  ) {
    super()
    this.ctx = stage.context(worker)
    this.input = stage.input
    this.handed = new Handed(stage.exec.turn)
  }

  get port(): StagePort {
    return this.stage
  }

  override park(): Promise<void> {
    if (!this.counted) return super.park()
    // a worker that parks again before anything moved it back to working leaves the state it is
    // counted in, so the book's counts stay whole whatever order a kind calls the lane in
    this.stage.book.move(this.asleep ? this.counting : WORKING, this.parking)
    this.counting = this.parking
    this.asleep = true
    this.special = true
    return super.park()
  }

  /**
   * The worker runs again: its lane counts as working from here. Not at the wake: the party that
   * woke it may go on for a long time before the worker gets to run (a consumer working through its
   * batch), and that time is the worker's wait, not its work. `received()`, `take()`, `exit()` and
   * `fail()` do this, so a kind calls it only where its worker runs code of its own after a park
   * before any of those (a generator pulled again once room was made). Reading the clock here
   * rather than in a microtask queued at the wake keeps the worker's continuation where it was:
   * the microtask cost the cheapest steps about 5%.
   */
  resume(): void {
    if (this.asleep) {
      this.asleep = false
      this.special = this.retiring
      this.stage.book.move(this.counting, WORKING)
    }
  }

  take(): unknown {
    if (!this.special) return this.input.poll(this)
    this.resume()
    return this.retiring ? DONE : this.input.poll(this)
  }

  wait(): Promise<void> {
    this.parking = STARVED
    this.idle = true
    return this.input.wait(this)
  }

  /** The stage shrank: this lane ends, at once if it waits for input, else after its item. */
  retire(): void {
    this.retiring = true
    this.special = true
    if (this.idle) this.cancel()
  }

  received(): unknown {
    if (this.asleep) this.resume()
    const x = this.item
    this.item = undefined
    this.idle = false
    // an item handed over just before the stage halted is not worked on: nobody will read its result
    if (this.stage.halted) return DONE
    // a lane retired while it waited ends; one that was handed an item first works on it
    if (x === EMPTY && this.retiring) return DONE
    return x
  }

  cancel(): boolean {
    if (!this.input.cancel(this)) return false
    this.item = EMPTY
    this.wake()
    return true
  }

  emit(y: unknown): Promise<void> | undefined {
    const s = this.stage
    s.emitted++
    let out = s.output as Channel<unknown>
    if (s.next !== undefined) {
      const at = fuse(this, y)
      if (at === undefined) return undefined
      y = this.fused
      this.fused = undefined
      out = at.output as Channel<unknown>
    }
    if (out.offerLazy(y, this)) return undefined
    this.parking = BLOCKED
    return out.put(this, y)
  }

  reserve(): Promise<void> | undefined {
    const w = this.stage.output as OrderedChannel<unknown>
    if (w.tryAcquire()) return undefined
    this.parking = BLOCKED
    return w.acquire(this)
  }

  release(): void {
    ;(this.stage.output as OrderedChannel<unknown>).release()
  }

  call(fn: MapFn, x: unknown): unknown {
    const s = this.stage
    return (++this.calls & s.sampleMask) !== 0 ? fn(x, this.ctx) : s.callTimed(fn, x, this.ctx)
  }

  pace(): Promise<void> | undefined {
    if (++this.n !== CHECK_EVERY) return undefined
    this.n = 0
    return this.stage.exec.pace.turn()
  }

  exit(): void {
    this.leaveBook()
    this.stage.exitLane(this)
  }

  fail(err: unknown, item: unknown): void {
    this.leaveBook()
    this.stage.failLane(err, this, item)
  }

  /** The lane ends: it leaves the time book (a kind that counts its units leaves with its last lane). */
  private leaveBook(): void {
    if (this.asleep) this.resume()
    if (this.counted) this.stage.book.stop(WORKING)
  }
}

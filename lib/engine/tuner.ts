/**
 * The controller behind `workers: 'auto'`: from what a stage measured over a window (items done
 * per second, time per item, the share of its worker time starved or blocked, failures), how many
 * workers it should run next, and why.
 *
 * The approach, after Netflix's concurrency-limits (Vegas and Gradient2), Vector's adaptive request
 * concurrency and DS2 (docs/design.md, "Workers that tune themselves"):
 * - a stage that is starved (upstream is the limit) or blocked (downstream is the limit) is never
 *   grown; it is shrunk to what its measured work needs (Little's law: workers working on average,
 *   plus headroom), so it holds no idle workers or connections;
 * - otherwise it grows, doubling at first ("slow start", so that a big change is crossed in a few
 *   steps) and then by about a sixth, and keeps a step only if throughput grew with it (a stage
 *   that cannot use more workers, a synchronous one, gives its extra workers back at once, and
 *   waits longer each time before it tries again);
 * - time per item well above the least seen recently, with throughput below the best seen, says
 *   the service behind the stage is saturated: the stage shrinks in proportion (the gradient), to
 *   the workers its current throughput needs at the least time per item;
 * - failures and timeouts are taken as congestion, as losses are in AIMD: the stage backs off by a
 *   quarter.
 * It is a pure function of its inputs and its own state, so that it can be specified without a clock.
 * @module
 */

/** What a stage measured over one window. */
export interface TuneWindow {
  /** Length of the window in ms. */
  readonly ms: number
  /** Workers the stage ran during the window. */
  readonly workers: number
  /** Items finished in the window (out, skipped or failed). */
  readonly done: number
  /** Mean time per item in ms over the window's timed items; undefined when none was timed. */
  readonly itemMs: number | undefined
  /** Shares of the stage's worker time in the window, from 0 to 1. */
  readonly starved: number
  readonly blocked: number
  /** Items that failed, timed out or were retried in the window. */
  readonly failures: number
}

/** A change of a stage's workers, and why. */
export interface TuneDecision {
  readonly workers: number
  readonly reason: string
}

/** Past this share of its worker time starved or blocked, a stage is limited by its neighbours. */
const LIMITED = 0.25
/** Time per item this much above the least seen means the service behind the stage is saturated. */
const SATURATED = 1.3
/** A growth step is kept if throughput grew by at least this share of the growth in workers. */
const KEEP = 0.3
/** Time per item within this much of the least: no sign of saturation. */
const FLAT = 1.1
/** A growth step that brought this share of its growth in throughput or more: double again. */
const FULL = 0.8
/** The most windows a stage waits before it tries more workers again, after steps that did not pay. */
const MAX_BACKOFF = 16
/** The weight of the latest window in the smoothed throughput and time per item. */
const SMOOTH = 0.3
/** Items a window needs before it is judged: fewer, and the window is merged into the next. */
const MIN_ITEMS = 8
/**
 * A count not measured for this many windows is measured afresh when it runs again, not smoothed
 * into what it saw then (the service may have changed meanwhile).
 */
const FRESH_AFTER = 10
/** The least time per item is the least over this many recent windows (so that it can rise again). */
const MIN_WINDOWS = 50

/** What a stage measured while it ran one number of workers (smoothed over its windows). */
interface Level {
  /** Items per second, and mean time per item in ms (-1 while no item was timed). */
  rate: number
  ms: number
  /** The window this level was last measured in. */
  seen: number
}

export class Tuner {
  /** Doubling until the first sign of saturation. */
  private slowStart = true
  /**
   * What each number of workers measured recently. References (the best throughput, the least
   * time per item) are taken over levels, each smoothed over its own windows: the most of noisy
   * windows is biased high and the least biased low, and smoothing across a change of workers
   * would lag behind it.
   */
  private readonly levels = new Map<number, Level>()
  private windows = 0
  /** The workers of the previous window: the first window after a change is partly the old count's. */
  private lastWorkers = -1
  /** The fewest workers the service was seen saturated at, and the window it was last seen in. */
  private ceiling: { workers: number; seen: number } | undefined
  /** The last growth step, to be kept or undone by the throughput it brings. */
  private probe: { from: number; rate: number } | undefined
  /** Windows to wait before the next growth step, and how long the next wait after a failed one is. */
  private cooldown = 0
  private backoff = 2
  private pending: TuneWindow | undefined

  constructor(
    readonly min: number,
    readonly max: number,
  ) {}

  /** The next number of workers after `w`, or undefined to keep the current one. */
  next(w: TuneWindow): TuneDecision | undefined {
    const win = this.merge(w)
    if (win === undefined) return undefined
    const n = win.workers
    this.windows++
    if (this.cooldown > 0) this.cooldown--
    const first = this.lastWorkers < 0
    const changed = n !== this.lastWorkers
    this.lastWorkers = n
    const rate = (win.done * 1000) / win.ms

    if (win.failures > 0 && win.failures >= 0.05 * win.done) {
      this.settle(4)
      return this.to(
        n,
        Math.floor(n * 0.75),
        `${win.failures} of ${win.done} items failed or timed out: backing off`,
      )
    }
    // Little's law: the workers the measured work kept busy on average
    const working = Math.max(0, 1 - win.starved - win.blocked)
    if (win.starved > LIMITED || win.blocked > LIMITED) {
      this.settle(2)
      const needed = Math.ceil(n * working * 1.5) + 1
      const why =
        win.starved >= win.blocked
          ? 'waiting for input (upstream is the limit)'
          : 'waiting for room downstream'
      if (needed >= n) return undefined
      return this.to(
        n,
        needed,
        `${Math.round(Math.max(win.starved, win.blocked) * 100)}% of worker time ${why}: ${needed} workers are enough`,
      )
    }
    // the first window at a new count is partly the old one's: skipped, but in slow start, where
    // a doubling's window is mostly the new count's and waiting a window per step costs the most
    // (the stage's first window, partly its start, is skipped too)
    if (changed && (first || !this.slowStart)) return undefined
    const level = this.measure(n, rate, win.itemMs)
    let best = 0
    let least = Number.POSITIVE_INFINITY
    for (const [k, l] of this.levels) {
      if (this.windows - l.seen > MIN_WINDOWS) this.levels.delete(k)
      else {
        if (l.rate > best) best = l.rate
        if (l.ms > 0 && l.ms < least) least = l.ms
      }
    }
    const ratio = level.ms > 0 && least < Number.POSITIVE_INFINITY ? level.ms / least : 1
    if (this.ceiling !== undefined && this.windows - this.ceiling.seen > MIN_WINDOWS) this.ceiling = undefined
    if (ratio > SATURATED) {
      if (this.ceiling === undefined || n <= this.ceiling.workers)
        this.ceiling = { workers: n, seen: this.windows }
      // saturation right after a growth step is that step failing: back to where it started, and
      // wait longer before the next (holding there would let the stage creep past the knee, one
      // step that costs a little throughput at a time)
      const p = this.probe
      if (p !== undefined) {
        this.settle(this.backoff)
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF)
        if (n > p.from) return this.to(n, p.from, `${n} workers saturated the service: back to ${p.from}`)
      } else this.settle(2)
      // still about as fast as the stage has been: the knee is here, hold
      if (level.rate >= 0.9 * best) return undefined
      // Little's law: the workers that gave the best throughput at the least time per item; where
      // throughput fell far below that best (the service itself lost capacity), the gradient: as
      // many as the current throughput needs at the least time per item
      const target =
        level.rate < 0.5 * best ? Math.ceil(n / ratio) : Math.min(n - 1, Math.ceil((best * least) / 1000))
      return this.to(
        n,
        target,
        `time per item rose to ${ratio.toFixed(1)}x its least, and throughput fell: the service is saturated`,
      )
    }
    // a growth step is judged by the throughput it brought
    const p = this.probe
    this.probe = undefined
    if (p !== undefined && n > p.from) {
      const grew = level.rate / p.rate - 1
      const added = n / p.from - 1
      if (grew < KEEP * added) {
        this.settle(this.backoff)
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF)
        return this.to(
          n,
          p.from,
          `${n - p.from} more workers brought ${Math.round(grew * 100)}% more throughput: back to ${p.from}`,
        )
      }
      this.backoff = 2
      // a step past the fewest workers the service was saturated at, that paid: that was before
      // the service changed
      if (this.ceiling !== undefined && n >= this.ceiling.workers) this.ceiling = undefined
      // a step that paid in full, with time per item still at its least, says there is much more
      // room: double again (a big change upward)
      if (grew >= FULL * added && ratio < FLAT) this.slowStart = true
    }
    if (n >= this.max || this.cooldown > 0) return undefined
    // doubling stops short of where the service was saturated lately; small steps may go past it
    const cap = this.ceiling === undefined ? Number.POSITIVE_INFINITY : this.ceiling.workers - 1
    const small = n + Math.max(1, Math.round(n * 0.15))
    const to = this.slowStart ? Math.max(small, Math.min(n * 2, cap)) : small
    this.probe = { from: n, rate: level.rate }
    return this.to(
      n,
      to,
      this.slowStart ? 'throughput grows with workers: doubling' : 'room left: a few more workers',
    )
  }

  /** Adds a window to what `n` workers measured. */
  private measure(n: number, rate: number, itemMs: number | undefined): Level {
    const l = this.levels.get(n)
    // a count measured again long after (the service may have changed meanwhile) starts afresh
    if (l === undefined || this.windows - l.seen > FRESH_AFTER) {
      const fresh = { rate, ms: itemMs ?? -1, seen: this.windows }
      this.levels.set(n, fresh)
      return fresh
    }
    l.rate = SMOOTH * rate + (1 - SMOOTH) * l.rate
    if (itemMs !== undefined) l.ms = l.ms < 0 ? itemMs : SMOOTH * itemMs + (1 - SMOOTH) * l.ms
    l.seen = this.windows
    return l
  }

  /** Leaves slow start, and waits `windows` before growing again. */
  private settle(windows: number): void {
    this.slowStart = false
    this.probe = undefined
    this.cooldown = Math.max(this.cooldown, windows)
  }

  /** A window with too few items is held and merged into the next one. */
  private merge(w: TuneWindow): TuneWindow | undefined {
    const p = this.pending
    const m: TuneWindow =
      p === undefined
        ? w
        : {
            ms: p.ms + w.ms,
            workers: w.workers,
            done: p.done + w.done,
            itemMs:
              p.itemMs === undefined
                ? w.itemMs
                : w.itemMs === undefined
                  ? p.itemMs
                  : (p.itemMs * p.done + w.itemMs * w.done) / Math.max(1, p.done + w.done),
            starved: (p.starved * p.ms + w.starved * w.ms) / (p.ms + w.ms),
            blocked: (p.blocked * p.ms + w.blocked * w.ms) / (p.ms + w.ms),
            failures: p.failures + w.failures,
          }
    if (m.done < MIN_ITEMS && m.starved <= LIMITED && m.blocked <= LIMITED && m.failures === 0) {
      this.pending = m
      return undefined
    }
    this.pending = undefined
    return m
  }

  private to(from: number, workers: number, reason: string): TuneDecision | undefined {
    const n = Math.min(this.max, Math.max(this.min, workers))
    return n === from ? undefined : { workers: n, reason }
  }
}

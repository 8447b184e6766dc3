/**
 * Time accounting: for each stage, worker-milliseconds spent working, starved (waiting for input)
 * and blocked (holding a result with no room downstream), summed over its concurrency units since
 * the run started.
 *
 * The book integrates counts, not per-item times: it knows how many units are in each state, and
 * adds `count x elapsed` to each state's total whenever a unit changes state. Units change state
 * only where they park and wake (or where a kind that counts its own units says so), so the clock
 * is read there and nowhere on the per-item path.
 * @module
 */

export const WORKING = 0
export const STARVED = 1
export const BLOCKED = 2
export type UnitState = typeof WORKING | typeof STARVED | typeof BLOCKED

/** The clock a run reads, in milliseconds (`performance.now` unless a spec injects one). */
export type Clock = () => number

/** A stage's time totals, in worker-milliseconds. */
export interface TimeTotals {
  workingMs: number
  starvedMs: number
  blockedMs: number
}

export class TimeBook {
  // units in each state now, and worker-ms in each state up to `last`: plain fields, not arrays,
  // so that a park's two moves are a few loads and stores besides the clock read
  private w = 0
  private s = 0
  private b = 0
  private wMs = 0
  private sMs = 0
  private bMs = 0
  private last: number

  constructor(private readonly clock: Clock) {
    this.last = clock()
  }

  /** Units working now. */
  get working(): number {
    return this.w
  }

  private integrate(): void {
    const now = this.clock()
    const dt = now - this.last
    if (dt > 0) {
      this.wMs += this.w * dt
      this.sMs += this.s * dt
      this.bMs += this.b * dt
    }
    this.last = now
  }

  private add(state: UnitState, k: number): void {
    if (state === WORKING) this.w += k
    else if (state === STARVED) this.s += k
    else this.b += k
  }

  /** A unit starts, working. */
  start(): void {
    this.integrate()
    this.w++
  }

  /** A unit in `state` stops for good. */
  stop(state: UnitState): void {
    this.integrate()
    this.add(state, -1)
  }

  /** A unit moves from one state to another. */
  move(from: UnitState, to: UnitState): void {
    this.integrate()
    this.add(from, -1)
    this.add(to, 1)
  }

  /** For kinds that count their own units: `working` and `blocked` of `units` now; the rest are starved. */
  set(working: number, blocked: number, units: number): void {
    this.integrate()
    this.w = working
    this.b = blocked
    this.s = Math.max(0, units - working - blocked)
  }

  /** The totals up to now, without changing the book. */
  read(): TimeTotals {
    const dt = Math.max(0, this.clock() - this.last)
    return {
      workingMs: this.wMs + this.w * dt,
      starvedMs: this.sMs + this.s * dt,
      blockedMs: this.bMs + this.b * dt,
    }
  }
}

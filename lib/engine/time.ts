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
  /** Units in each state now (working, starved, blocked). */
  private readonly n = [0, 0, 0]
  /** Worker-ms in each state up to `last`. */
  private readonly ms = [0, 0, 0]
  private last: number

  constructor(private readonly clock: Clock) {
    this.last = clock()
  }

  /** Units working now. */
  get working(): number {
    return this.n[WORKING]!
  }

  private integrate(now: number): void {
    const dt = now - this.last
    if (dt > 0) {
      const n = this.n
      const ms = this.ms
      ms[0]! += n[0]! * dt
      ms[1]! += n[1]! * dt
      ms[2]! += n[2]! * dt
    }
    this.last = now
  }

  /** A unit starts, working. */
  start(): void {
    this.integrate(this.clock())
    this.n[WORKING]!++
  }

  /** A unit in `state` stops for good. */
  stop(state: UnitState): void {
    this.integrate(this.clock())
    this.n[state]!--
  }

  /** A unit moves from one state to another. */
  move(from: UnitState, to: UnitState): void {
    this.integrate(this.clock())
    this.n[from]!--
    this.n[to]!++
  }

  /** For kinds that count their own units: `working` and `blocked` of `units` now; the rest are starved. */
  set(working: number, blocked: number, units: number): void {
    this.integrate(this.clock())
    const n = this.n
    n[WORKING] = working
    n[BLOCKED] = blocked
    n[STARVED] = Math.max(0, units - working - blocked)
  }

  /** The totals up to now, without changing the book. */
  read(): TimeTotals {
    const now = this.clock()
    const dt = Math.max(0, now - this.last)
    const n = this.n
    const ms = this.ms
    return {
      workingMs: ms[0]! + n[0]! * dt,
      starvedMs: ms[1]! + n[1]! * dt,
      blockedMs: ms[2]! + n[2]! * dt,
    }
  }
}

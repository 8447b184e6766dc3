/**
 * Letting the event loop turn. A worker whose items all complete synchronously (or in microtasks)
 * would keep the event loop from timers, I/O and abort signals until the input ends: every
 * CHECK_EVERY items a lane asks its run, and at most once per TURN_MS the run answers with a turn.
 * @module
 */
import { setImmediate as nextTurn } from 'node:timers/promises'

/** How many items a worker handles between checks of whether the event loop needs a turn. */
export const CHECK_EVERY = 1024
/** A pipeline of functions that never wait on I/O still lets timers and I/O run this often. */
const TURN_MS = 16

/** One run's pacing: when it last gave the event loop a turn. */
export class Pace {
  private lastTurn = performance.now()

  /** A turn of the event loop to await if one is due, else undefined. */
  turn(): Promise<void> | undefined {
    const now = performance.now()
    if (now - this.lastTurn < TURN_MS) return undefined
    this.lastTurn = now
    return nextTurn()
  }
}

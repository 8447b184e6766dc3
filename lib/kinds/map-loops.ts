/**
 * The worker loops of a plain map stage (no policies): one output per item, completing
 * synchronously whenever it can. A map function that returns a plain value is never awaited, and
 * a worker parks only when its input is empty or its output is full.
 *
 * The per-item path allocates nothing of its own: no closure, no promise unless the user's function
 * returns one, and the try/catch sits around the loop, not inside it.
 * @module
 */
import { isThenable, noop } from '../_utils.js'
import { skip } from '../skip.js'
import { DONE, EMPTY, type Lane, type MapFn, SKIP } from './kind.js'

/**
 * A map stage's worker, outputs in completion order. Its results go on through `emit()`, which may
 * fuse them into the next stage; a result of its own function may likewise come from a worker of
 * the stage before, handed over in `lane.adopted` while this worker was idle.
 */
export async function mapLoop(lane: Lane, fn: MapFn): Promise<void> {
  const port = lane.port
  let x: unknown
  let holding = false
  try {
    for (;;) {
      // checked first, so that every path through the loop (skip included) counts
      const turn = lane.pace()
      if (turn !== undefined) await turn
      let y: unknown
      x = lane.take()
      if (x === EMPTY) {
        await lane.wait()
        x = lane.received()
        if (lane.adopted !== undefined) {
          // an upstream worker called our function for us (stage fusion): its result is our item's
          y = lane.adopted
          lane.adopted = undefined
          if (port.halted) {
            ;(y as PromiseLike<unknown>).then(undefined, noop)
            break
          }
          holding = true
        }
      }
      if (!holding) {
        if (x === DONE) break
        holding = true
        y = lane.call(fn, x)
      }
      if (isThenable(y)) {
        y = await y
        if (port.halted) break
      }
      holding = false
      if (y === skip) {
        port.skipped++
        continue
      }
      const room = lane.emit(y)
      if (room !== undefined) await room
    }
  } catch (err) {
    lane.fail(err, holding ? x : undefined)
    return
  }
  lane.exit()
}

/** A map stage's worker, outputs in input order through the stage's reorder window. */
export async function orderedMapLoop(lane: Lane, fn: MapFn): Promise<void> {
  const port = lane.port
  let x: unknown
  let holding = false
  try {
    for (;;) {
      const turn = lane.pace()
      if (turn !== undefined) await turn
      const slot = lane.reserve()
      if (slot !== undefined) await slot
      x = lane.take()
      if (x === EMPTY) {
        await lane.wait()
        x = lane.received()
      }
      if (x === DONE) {
        lane.release()
        break
      }
      const seq = lane.seq
      holding = true
      let y = lane.call(fn, x)
      if (isThenable(y)) {
        y = await y
        if (port.halted) break
      }
      holding = false
      if (y === skip) {
        port.skipped++
        port.fill(seq, SKIP)
        continue
      }
      port.fill(seq, y)
    }
  } catch (err) {
    lane.fail(err, holding ? x : undefined)
    return
  }
  lane.exit()
}

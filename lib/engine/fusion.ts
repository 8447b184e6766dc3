/**
 * Stage fusion: how a worker's result goes on when the next stage is a plain map stage with an
 * idle worker (parked on an empty input). The sending worker calls that stage's function itself,
 * for that idle worker and with its context, instead of queueing the item, and goes on down the
 * chain while the stages after are plain and idle too (docs/design.md, "Stage fusion").
 *
 * Nothing a user can observe changes: the call is counted in its own stage's stats and, if it
 * throws, fails the run as that stage's worker with that item; a synchronous call cannot overlap
 * another call of that stage (one thread); a call that returns a promise is handed, with its item,
 * to the idle worker, which awaits it as its own item, so a stage never has more calls in flight
 * than workers; and items are never fused past queued ones (a worker is idle only while its input
 * is empty), so a one-worker stage keeps its input's order. The first call that returns a promise
 * ends fusion into that stage for the run: async functions gain nothing from it.
 * @module
 */
import { isThenable, noop } from '../_utils.js'
import type { Channel } from '../channel/bounded.js'
import { skip } from '../skip.js'
import type { StageRun, WorkerLane } from './stage-run.js'

/**
 * Fuses `y`, the result of a worker of `lane.stage`, down the chain while the next stage is fusable
 * and has an idle worker. Returns the stage whose output the last result goes into (left in
 * `lane.fused`): `lane.stage` itself when nothing could be fused. Returns undefined when the item is
 * done with: handed over with a pending result, skipped, or its call threw (the run then fails as
 * that stage, so the caller's next take ends its loop).
 */
export function fuse(lane: WorkerLane, y: unknown): StageRun | undefined {
  let at: StageRun = lane.stage
  let nx = at.next
  while (nx !== undefined) {
    const ch = at.output as Channel<unknown>
    const t = ch.idleTaker() as WorkerLane | undefined
    if (t === undefined || nx.halted) break
    const f = nx.fuseFn!
    const tctx = t.ctx
    let z: unknown
    nx.fusedCalls++
    try {
      // a timed call is counted by the stage that made it, so that the stats can move an estimate
      // of the fused calls' time from that stage to this one
      z = (nx.fusedCalls & nx.sampleMask) !== 0 ? f(y, tctx) : nx.callTimed(f, y, tctx, lane.stage.index)
    } catch (err) {
      nx.fail(err, tctx.worker, y)
      return undefined
    }
    if (isThenable(z)) {
      // an async function: stop fusing it (handing each promise over gains nothing, and in A/B
      // the changed timing cost async stages 10%); this call's result still goes to `t`
      at.next = undefined
      handOver(ch, nx, t, y, z)
      return undefined
    }
    if (z === skip) {
      nx.skipped++
      return undefined
    }
    nx.emitted++
    y = z
    at = nx
    nx = nx.next
  }
  lane.fused = y
  return at
}

/**
 * Gives the pending result `p` of a fused call on `item` to `t`, the idle worker of `nx` it was
 * made for, which awaits it as its own item. If the run stopped during the call, nobody will read it.
 */
function handOver(ch: Channel<unknown>, nx: StageRun, t: WorkerLane, item: unknown, p: unknown): void {
  if (nx.halted) {
    ;(p as PromiseLike<unknown>).then(undefined, noop)
    return
  }
  if (ch.idleTaker() !== t) {
    // cannot happen: nothing but a halt takes a parked worker off its queue during a synchronous
    // call. Were it to, failing loudly beats running more calls than workers or losing the item.
    ;(p as PromiseLike<unknown>).then(undefined, noop)
    nx.fail(new Error('stageline internal error: a fused call lost its idle worker'), t.worker, item)
    return
  }
  // the item reaches the taker through the input, which counts it: not a fused item after all
  nx.handedOver++
  t.adopted = p
  ch.offer(item)
}

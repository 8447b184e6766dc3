/**
 * Stage fusion: how a worker sends its result on. Where the next stage is a plain map stage with an
 * idle worker (parked on an empty input), the sending worker calls that stage's function itself,
 * for that idle worker and with its context, instead of queueing the item, and goes on down the
 * chain while the stages after are plain and idle too (docs/design.md, "Stage fusion"). Used by
 * every loop of an unordered stage.
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
import { isThenable, noop } from './_utils.js'
import type { Group, StageContext } from './group.js'
import type { Channel, Waiter } from './queue.js'
import { skip } from './skip.js'

export type MapFn = (item: unknown, ctx: StageContext) => unknown

/**
 * Calls `fn` on a sampled item and records how long it took (for an async result, until it
 * settles). Kept out of the loops: with the clock reads inline, the loops ran about 10% slower
 * on cheap synchronous functions.
 */
export function timed(g: Group, fn: MapFn, x: unknown, ctx: StageContext): unknown {
  const t0 = performance.now()
  g.sampling(t0)
  const y = fn(x, ctx)
  if (!isThenable(y)) {
    g.record(performance.now() - t0)
    return y
  }
  return Promise.resolve(y).then((v) => {
    g.record(performance.now() - t0)
    return v
  })
}

/** Attaches a no-op rejection handler: for a result nobody will read (the run has stopped). */
export function dropQuietly(p: unknown): void {
  ;(p as PromiseLike<unknown>).then(undefined, noop)
}

/**
 * Sends a worker's result `y` on: fused down the chain where it can be (`fuseDown`), else into
 * `g`'s output channel. Returns a promise when the worker must wait for room (it then checks
 * `g.halted`), undefined when the item is on its way or done with. For the loops of unordered
 * stages, whose output is a Channel.
 */
export function send(g: Group, w: Waiter, y: unknown): Promise<void> | undefined {
  let out = g.output as Channel<unknown>
  if (g.next !== undefined) {
    const at = fuseDown(g, y)
    if (at === undefined) return undefined // handed over, skipped, or failed
    y = fused
    fused = undefined
    out = at.output as Channel<unknown>
  }
  return out.offerLazy(y, w) ? undefined : out.put(w, y)
}

/** What `fuseDown` leaves to put into the output of the group it returns. */
let fused: unknown

/**
 * Stage fusion, from a worker of `g` holding `y`, its result: while the next stage is fusable and
 * has an idle worker, calls its function for that worker. Returns the group whose output the last
 * result (left in `fused`) goes to: `g` itself when nothing could be fused. Returns undefined when
 * the item is done with: handed over with a pending result, skipped, or its call threw (the run
 * then fails as that stage, so the caller's next read ends its loop).
 */
function fuseDown(g: Group, y: unknown): Group | undefined {
  let at = g
  let nx = g.next
  while (nx !== undefined) {
    const ch = at.output as Channel<unknown>
    const t = ch.idleTaker()
    if (t === undefined || nx.halted) break
    const f = nx.fuseFn!
    const tctx = t.ctx as StageContext
    let z: unknown
    try {
      z = (++nx.taken & nx.sampleMask) !== 0 ? f(y, tctx) : timed(nx, f, y, tctx)
    } catch (err) {
      nx.failFused(err, tctx.worker, y)
      return undefined
    }
    if (isThenable(z)) {
      // an async function: stop fusing it (handing each promise over gains nothing, and in A/B
      // the changed timing cost async stages 10%); this call's result still goes to `t`
      at.next = undefined
      handOver(ch, nx, t, y, z, tctx)
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
  fused = y
  return at
}

/**
 * Gives the pending result `p` of a fused call on `item` to `t`, the idle worker of `nx` it was
 * made for, which awaits it as its own item. If the run stopped during the call, nobody will read it.
 */
function handOver(
  ch: Channel<unknown>,
  nx: Group,
  t: Waiter,
  item: unknown,
  p: unknown,
  tctx: StageContext,
): void {
  if (nx.halted) {
    dropQuietly(p)
    return
  }
  if (ch.idleTaker() !== t) {
    // cannot happen: nothing but a halt takes a parked worker off its queue during a synchronous
    // call. Were it to, failing loudly beats running more calls than workers or losing the item.
    dropQuietly(p)
    nx.failFused(new Error('stageline internal error: a fused call lost its idle worker'), tctx.worker, item)
    return
  }
  t.adopted = p
  ch.offer(item)
}

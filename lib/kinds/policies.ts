/**
 * The map loop with step policies: retries with backoff, per-item timeouts, skipping failed items,
 * per-worker init/dispose, and limits shared between stages (a concurrency limiter such as a p-limit
 * instance, or a rate limit). A map stage with none of these runs the plain loops (map-loops.ts);
 * one with any of them runs `policyLoop`, which pays for what it offers.
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { isThenable, noop } from '../_utils.js'
import { TimeoutError } from '../errors.js'
import { skip } from '../skip.js'
import { DONE, EMPTY, type Lane, SKIP, type StageContext, type StagePort } from './kind.js'
import type { RateLimit } from './rate-limit.js'
import { type FailurePolicy, nextTry, skipFailed } from './retry.js'

/**
 * What a map function receives: the stage context, plus the worker's state and the attempt number.
 *
 * @example
 * ```ts
 * import { type MapContext, mapStage, pipe } from 'stageline'
 * const numbered = mapStage((line: string, ctx: MapContext<{ n: number }>) => `${++ctx.state.n}: ${line}`, {
 *   init: () => ({ n: 0 }), // one state per worker
 * })
 * console.log(await pipe(['a', 'b'], numbered).toArray()) // [ '1: a', '2: b' ]
 * ```
 */
export interface MapContext<S = undefined> extends StageContext {
  /** What the stage's `init` returned for this worker (`undefined` without `init`). */
  readonly state: S
  /** 0 on an item's first try, 1 on its first retry, and so on. */
  readonly attempt: number
}

/**
 * A concurrency limiter shared between stages: p-limit's call shape, `limit(fn)` runs fn when a slot is free.
 *
 * @example
 * ```ts
 * import pLimit from 'p-limit'
 * import { type Limiter, mapStage } from 'stageline'
 * // at most 4 calls at once across both stages, whatever their workers
 * const limit: Limiter = pLimit(4)
 * const fetchA = mapStage(async (id: number) => `a${id}`, { workers: 8, limit })
 * const fetchB = mapStage(async (id: number) => `b${id}`, { workers: 8, limit })
 * ```
 */
export type Limiter = <T>(fn: () => PromiseLike<T> | T) => PromiseLike<T>

/** The resolved policies a policy loop runs with. */
export interface Policies extends FailurePolicy {
  call: (item: unknown, ctx: MapContext<unknown>) => unknown
  timeout: number | undefined
  init: ((ctx: StageContext) => unknown) | undefined
  dispose: ((state: unknown, ctx: StageContext) => unknown) | undefined
  limit: Limiter | undefined
  rate: RateLimit | undefined
}

class WorkerContext implements MapContext<unknown> {
  state: unknown = undefined
  attempt = 0
  /** The error of the item that failed the worker (kept here, not in a closure). */
  lastError: unknown = undefined
  constructor(
    public signal: AbortSignal,
    readonly worker: number,
    readonly stage: string,
  ) {}
}

/** Runs one try of `x` under the timeout, if any. */
function tryOnce(p: Policies, port: StagePort, x: unknown, ctx: WorkerContext): unknown {
  if (p.timeout === undefined) {
    return p.limit === undefined ? p.call(x, ctx) : p.limit(() => p.call(x, ctx))
  }
  const ms = p.timeout
  const stageSignal = port.signal
  const ac = new AbortController()
  const onStageAbort = (): void => ac.abort(stageSignal.reason)
  stageSignal.addEventListener('abort', onStageAbort)
  ctx.signal = ac.signal
  let timer: ReturnType<typeof setTimeout> | undefined
  return new Promise((resolve, reject) => {
    timer = setTimeout(() => {
      const err = new TimeoutError(port.name, ms)
      ac.abort(err)
      reject(err)
    }, ms)
    try {
      const r = p.limit === undefined ? p.call(x, ctx) : p.limit(() => p.call(x, ctx))
      if (isThenable(r)) r.then(resolve, reject)
      else resolve(r)
    } catch (err) {
      reject(err)
    }
  }).finally(() => {
    clearTimeout(timer)
    stageSignal.removeEventListener('abort', onStageAbort)
    ctx.signal = stageSignal
  })
}

const HALTED: unique symbol = Symbol('stageline.halted')
const FAILED: unique symbol = Symbol('stageline.failed')

/** A map stage's worker with policies; `ordered` selects the reorder window. */
export async function policyLoop(lane: Lane, p: Policies, ordered: boolean): Promise<void> {
  const port = lane.port
  const ctx = new WorkerContext(port.signal, lane.worker, port.name)
  let failure: { err: unknown; item: unknown } | undefined
  if (p.init !== undefined) {
    try {
      let s = p.init(ctx)
      if (isThenable(s)) s = await s
      ctx.state = s
    } catch (err) {
      lane.fail(err, undefined)
      return
    }
  }
  try {
    for (;;) {
      if (port.halted) break
      // a stage whose items all complete without waiting must still let the event loop turn
      const turn = lane.pace()
      if (turn !== undefined) await turn
      if (ordered) {
        const slot = lane.reserve()
        if (slot !== undefined) await slot
      }
      let x = lane.take()
      if (x === EMPTY) {
        await lane.wait()
        x = lane.received()
      }
      if (x === DONE) {
        if (ordered) lane.release()
        break
      }
      const seq = lane.seq
      const y = await processItem(p, port, x, ctx)
      if (y === HALTED) break
      if (y === FAILED) {
        failure = { err: ctx.lastError, item: x }
        break
      }
      if (y === SKIP || y === skip) {
        if (y === skip) port.skipped++
        if (ordered) port.fill(seq, SKIP)
        continue
      }
      if (ordered) port.fill(seq, y)
      else {
        const room = lane.emit(y)
        if (room !== undefined) await room
      }
    }
  } catch (err) {
    failure ??= { err, item: undefined }
  }
  if (p.dispose !== undefined) {
    try {
      const r = p.dispose(ctx.state, ctx)
      if (isThenable(r)) await r
    } catch (err) {
      failure ??= { err, item: undefined }
    }
  }
  if (failure !== undefined) lane.fail(failure.err, failure.item)
  else lane.exit()
}

/** Tries `x` with retries; returns the output, SKIP for a skipped failure, HALTED, or FAILED (error in ctx.lastError). */
async function processItem(p: Policies, port: StagePort, x: unknown, ctx: WorkerContext): Promise<unknown> {
  for (let attempt = 0; ; attempt++) {
    ctx.attempt = attempt
    try {
      if (p.rate !== undefined) {
        const turn = p.rate.take(port.signal)
        if (turn !== undefined) await turn
        if (port.halted) return HALTED
      }
      let y = tryOnce(p, port, x, ctx)
      if (isThenable(y)) y = await y
      if (port.halted) return HALTED
      return y
    } catch (err) {
      if (port.halted) return HALTED
      let delay: number
      try {
        delay = nextTry(p, attempt, err, `mapStage "${port.name}"`)
      } catch (delayErr) {
        ctx.lastError = delayErr
        return FAILED
      }
      if (delay >= 0) {
        port.retried++
        if (delay > 0) {
          await sleep(delay, undefined, { signal: port.signal }).catch(noop)
          if (port.halted) return HALTED
        }
        continue
      }
      if (p.onError !== undefined) {
        port.failed++
        try {
          // an async onError is awaited: the item counts as skipped once it has seen it, and its
          // rejection fails the run as a throw does (never a rejection left unhandled)
          const seen = skipFailed(p, err, x, ctx)
          if (seen !== undefined) await seen
        } catch (cbErr) {
          ctx.lastError = cbErr
          return FAILED
        }
        if (port.halted) return HALTED
        return SKIP
      }
      ctx.lastError = err
      return FAILED
    }
  }
}

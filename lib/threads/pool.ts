/**
 * One run of a thread stage: the piscina pool it owns, the batch loops that feed the pool from the
 * stage's input, and the bridge that carries the run's stop into the threads. Written against the
 * kind contract (lib/kinds/kind.ts): each batch loop is a lane of the stage's port. The thread side
 * is entry.ts, what crosses between the two is protocol.ts, and the stage description is stage.ts.
 *
 * The pool is created when the run starts and destroyed when the stage's last loop ends (the input
 * is done, the run failed, or the consumer stopped), before that loop exits its lane: once a run
 * has settled, none of its threads is left.
 *
 * Time accounting: the stage's units are its threads, as the main thread sees them (the kind
 * counts them itself: `countsUnits`). A thread is working while it holds a batch: min(batches the
 * loops hold, threads), a batch being held from when its loop took it until its results are handed
 * on (its retries, their delays and rate turns included), and every thread while the pool starts
 * (the module loads and `init` runs) and during the end round (`dispose`). An idle thread is
 * blocked when a loop that would feed it waits for room downstream, and starved otherwise.
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { TransferListItem, Worker } from 'node:worker_threads'
import type { Piscina } from 'piscina'
import { noop } from '../_utils.js'
import { describeCause, TimeoutError } from '../errors.js'
import { DONE, EMPTY, type Lane, SKIP, type StagePort } from '../kinds/kind.js'
import type { MapContext } from '../kinds/policies.js'
import type { RateLimit } from '../kinds/rate-limit.js'
import { type FailurePolicy, nextTry, skipFailed } from '../kinds/retry.js'
import { got } from '../options/check.js'
import { SETTLE_GRACE_MS } from '../options/limits.js'
import { fromWire } from '../wire/errors.js'
import { SENDABLE_TO_THREADS, TO_THREADS, unsendable } from '../wire/sendable.js'
import {
  type Answer,
  CHECK,
  ControlBlock,
  encodeReason,
  type FailedItem,
  H_ARRIVED,
  isCloneFailure,
  monotonicOffset,
  S_BATCH,
  S_DEADLINE,
  S_ITEM,
  S_THREAD,
  S_WORKER,
  type ThreadData,
} from './protocol.js'

/** What a run of a thread stage needs from the stage's options. */
export interface ThreadPlan {
  readonly moduleHref: string
  readonly exportName: string
  readonly threads: number
  /** The most threads the stage may run: `threads`, or the upper bound of `threads: 'auto'`. */
  readonly most: number
  /** The stage tunes its threads (`threads: 'auto'` or `{ min, max }`): its port may resize it. */
  readonly tuned: boolean
  /** The most items per batch (`batch`, or 1 where a batch must hold one item: see stage.ts). */
  readonly batch: number
  readonly ordered: boolean
  readonly transfer: ((item: any) => readonly (TransferListItem | ArrayBufferView)[] | undefined) | undefined
  /** How long the end round waits for `dispose` in the threads (ms; Infinity: as long as it takes). */
  readonly disposeTimeout: number
  /** The step policies, or undefined when none is set (the batches then take the plain path). */
  readonly policies: ThreadPolicies | undefined
}

/** The step policies of a thread stage, applied per item (see docs/threads.md, Policies). */
export interface ThreadPolicies extends FailurePolicy {
  readonly timeout: number | undefined
  /** Set with `errors: 'skip'`. */
  readonly onError: ((error: unknown, item: any, ctx: MapContext<undefined>) => unknown) | undefined
  readonly rate: RateLimit | undefined
}

/**
 * Batches in flight per thread: one running and one queued behind it, so a thread finishing a batch
 * finds the next already there, while piscina's own queue never holds more than one per thread
 * (the stage's bounded channels, not the pool, carry the backpressure). Each is a batch loop.
 */
export const IN_FLIGHT_PER_THREAD = 2

/**
 * A batch is sized to cost about this long (see learn()): long enough that piscina's cost per
 * task (tens of microseconds) is small against it, short enough that the threads stay evenly
 * loaded near the end of the input and that a stop is noticed soon.
 */
const TARGET_BATCH_MS = 2

/**
 * How long a thread may stay on an item past the item's deadline before the stage ends the thread
 * (a function that does not look at its signal, or blocks its thread: nothing else can stop it).
 * Long enough for a thread that has just finished the item to move on, short next to any timeout
 * worth setting.
 */
export const STUCK_GRACE_MS = 100

/** The offset from this thread's performance.now() to the clock of the deadlines in the control block. */
const CLOCK_OFFSET = monotonicOffset()

/** Now, on the clock of the deadlines in the control block. */
function sharedNow(): number {
  return performance.now() + CLOCK_OFFSET
}

/** The compiled thread side, once found (see entryURL()). */
let entry: URL | undefined

/**
 * The thread side's compiled module. A worker thread loads modules with Node's own loader, which
 * does not read TypeScript, so it is always the compiled entry.ts: entry.js next to this file once
 * built (dist/threads/), or the build's when this file runs from the sources (the specs run lib/).
 */
async function entryURL(stage: string): Promise<URL> {
  if (entry !== undefined) return entry
  // node:fs is imported here, not at the top: its ESM namespace loads fs/promises, streams and
  // readline, about 1 MB of RSS in every program that imports stageline and never uses threads
  const { existsSync } = await import('node:fs')
  const beside = new URL('./entry.js', import.meta.url)
  const built = new URL('../../dist/threads/entry.js', import.meta.url)
  for (const url of [beside, built]) if (existsSync(fileURLToPath(url))) return (entry = url)
  throw new Error(
    `threadStage "${stage}": its worker-thread entry is missing: neither ${beside.href} nor ${built.href} exists; ` +
      '`npm run build` compiles lib/threads/entry.ts to dist/threads/entry.js',
  )
}

/**
 * Loaded on the first run of any thread stage, so that importing stageline does not load piscina.
 * (piscina's CommonJS typings give its ESM namespace a confused type, hence the cast.)
 */
let piscina: Promise<{ Piscina: typeof Piscina }> | undefined

/** A task whose thread the watchdog ended: the index of the item it was stuck on, and the thread's index. */
interface Stuck {
  at: number
  worker: number
}

/** An item that failed a try: its position in the batch, its error, and the thread that ran it. */
interface Failed {
  at: number
  err: unknown
  worker: number
}

/** A batch that failed: the run fails with `err` on `item`, as thread `worker`. */
class BatchFailure {
  constructor(
    readonly err: unknown,
    readonly worker: number,
    readonly item: unknown,
  ) {}
}

const NO_RESULTS: unknown[] = []

/** The pool is starting: its threads load the module and run `init`. */
const STARTING = 0
/** The batch loops run. */
const RUNNING = 1
/** The end round: the threads run `dispose`. */
const ENDING = 2

export class ThreadRun {
  private pool: Piscina | undefined
  private readonly ready: Promise<void>
  /** Loops still running; the last one to end destroys the pool. */
  private active: number
  private destroyed: Promise<void> | undefined
  /** Every thread the pool started, and a promise of its exit (see track()). */
  private readonly threads = new Map<Worker, Promise<void>>()
  private graceTimer: ReturnType<typeof setTimeout> | undefined
  /** Threads with a slot in the control block: the threads, and replacements for a few that die. */
  private readonly slots: number
  private readonly control: ControlBlock
  private readonly flags: Int32Array
  /** The last batch id given (batches are numbered only under a timeout, from 1). */
  private batchIds = 0
  /** The watchdog's next look at the slots (only with a timeout; see watch()). */
  private watchTimer: ReturnType<typeof setTimeout> | undefined
  /** Threads the watchdog ended, by threadId, until their exit is seen. */
  private readonly ending = new Set<number>()
  /** Tasks whose thread the watchdog ended, by batch id, until their rejection is seen. */
  private readonly ended = new Map<number, Stuck>()
  /** The end round has begun: no thread is replaced any more. */
  private closing = false
  /** What an item costs, in ms, averaged over recent batches (see learn()); -1 before the first batch returns. */
  private perItem = -1
  /** Items per batch now: starts at 1 and follows `perItem`, up to `plan.batch`. */
  private size = 1
  /** The module exports `dispose` (a check said so): after a stop too, the pool is destroyed after the end round. */
  private disposes = false
  /** STARTING, RUNNING or ENDING: what the threads do, for the time accounting. */
  private phase = STARTING
  /** Batches the loops hold (taken, and their results not yet handed on). */
  private holding = 0
  /** Loops waiting for room downstream. */
  private roomWaits = 0
  /** The units last reported to the port: threads working, and idle threads blocked. */
  private working = -1
  private blocked = -1
  /** The threads the stage runs now: `plan.threads`, until a tuned stage is resized. */
  private running: number
  /** Batch loops started: two per thread, for the most threads the stage has run so far. */
  private loops = 0
  /**
   * A tuned stage gates its batches: at most `limit()` of them are on the pool at once, whatever
   * the number of loops (which never shrinks). These are the batches on the pool, and the loops
   * waiting for a turn.
   */
  private sending = 0
  private readonly turnWaits: (() => void)[] = []

  constructor(
    private readonly port: StagePort,
    private readonly plan: ThreadPlan,
  ) {
    this.running = plan.threads
    this.active = 0
    this.slots = 2 * plan.most + 8
    this.control = ControlBlock.create(this.slots)
    this.flags = this.control.flags
    port.signal.addEventListener('abort', this.onHalt, { once: true })
    this.recount()
    this.ready = this.start()
    this.startLoops()
    if (plan.tuned) port.resizable(this.resize, plan.most)
  }

  /** Starts batch loops up to two per thread the stage runs now. */
  private startLoops(): void {
    const want = this.running * IN_FLIGHT_PER_THREAD
    for (; this.loops < want; this.loops++) {
      this.active++
      const lane = this.port.lane()
      void (this.plan.ordered ? this.orderedLoop(lane) : this.loop(lane))
    }
  }

  /**
   * A tuned stage runs `n` threads from now on. Growing lets piscina start threads up to `n` (they
   * start for the batches that find none idle) and starts loops to feed them; shrinking lets fewer
   * batches on the pool at once. A thread is never ended for it: threads the stage stops using
   * stay idle in the pool, and run `dispose` in the end round with the others.
   */
  private readonly resize = (n: number): void => {
    this.running = n
    this.capPool()
    this.startLoops()
    this.recount()
    this.wakeTurns()
  }

  /**
   * The most threads piscina may start: the threads the stage runs now. piscina reads its
   * `maxThreads` option each time it considers starting a thread; `options` is the pool's live
   * options object. (Lowering it ends no thread: piscina only stops starting new ones.)
   */
  private capPool(): void {
    const options = (this.pool as { options?: { maxThreads?: number } } | undefined)?.options
    if (options !== undefined && typeof options.maxThreads === 'number') options.maxThreads = this.running
  }

  /**
   * Batches a tuned stage lets on the pool at once: two per thread (one running, one queued behind
   * it), or one per thread while the pool holds more threads than the stage runs (it shrank):
   * piscina gives a batch to any idle thread, so more batches would run on more threads.
   */
  private limit(): number {
    const n = this.running
    return this.pool !== undefined && this.pool.threads.length > n ? n : n * IN_FLIGHT_PER_THREAD
  }

  /** Waits until a tuned stage may send one more batch (or the stage halted), and takes the turn. */
  private async turn(): Promise<void> {
    while (this.sending >= this.limit() && !this.port.halted) {
      await new Promise<void>((resolve) => this.turnWaits.push(resolve))
    }
    this.sending++
  }

  private endTurn(): void {
    this.sending--
    this.wakeTurns()
  }

  /** Lets the loops waiting for a turn look again. */
  private wakeTurns(): void {
    const waits = this.turnWaits.splice(0)
    for (const wake of waits) wake()
  }

  /**
   * Tells the port how many threads are working and how many idle ones are blocked, when that
   * changed (see the module's comment).
   */
  private recount(): void {
    const t = this.running
    let w = t
    let b = 0
    if (this.phase === RUNNING) {
      w = Math.min(this.holding, t)
      b = Math.min(this.roomWaits, t - w)
    }
    if (w === this.working && b === this.blocked) return
    this.working = w
    this.blocked = b
    this.port.units(w, b)
  }

  /** Loads piscina, starts the threads, and has them load the module and find the export (one check per thread). */
  private async start(): Promise<void> {
    try {
      await this.startPool()
    } finally {
      this.phase = RUNNING
      this.recount()
    }
  }

  private async startPool(): Promise<void> {
    const filename = await entryURL(this.port.name)
    piscina ??= import('piscina') as Promise<unknown> as Promise<{ Piscina: typeof Piscina }>
    const { Piscina: Pool } = await piscina
    if (this.port.halted) return
    const p = this.plan
    const workerData: ThreadData = {
      module: p.moduleHref,
      exportName: p.exportName,
      stage: this.port.name,
      control: this.control.buffer,
      slots: this.slots,
      timeout: p.policies?.timeout,
      keepGoing: this.keepGoing,
    }
    const pool = new Pool({
      filename: filename.href,
      // threads start for tasks (the checks below start them all) and are never retired. Not
      // minThreads: piscina tops a pool up to minThreads whenever a dead thread's exit arrives,
      // even after destroy() has returned, which would leave new threads running after the run
      minThreads: 0,
      idleTimeout: Number.POSITIVE_INFINITY,
      maxThreads: this.running,
      // the loops keep at most this many tasks in flight; the rest is room for the checks that
      // replace threads the watchdog ended (see replace())
      maxQueue: p.most * IN_FLIGHT_PER_THREAD + this.slots,
      concurrentTasksPerWorker: 1,
      recordTiming: false,
      workerData,
    })
    this.pool = pool
    pool.on('error', this.onPoolError)
    pool.on('workerCreate', this.track)
    this.track()
    const checks: Promise<Answer>[] = []
    for (let i = 0; i < this.running; i++) checks.push(pool.run(CHECK))
    for (const answer of await Promise.all(checks)) {
      if (answer.error !== undefined) throw new BatchFailure(fromWire(answer.error), answer.worker, undefined)
      if (answer.dispose === true) this.disposes = true
    }
    if (p.policies?.timeout !== undefined && !this.port.halted) this.watch()
  }

  /** A batch loop, outputs in completion order. */
  private async loop(lane: Lane): Promise<void> {
    const port = this.port
    let failure: BatchFailure | undefined
    try {
      await this.ready
      outer: for (;;) {
        if (port.halted) break
        let x = lane.take()
        if (x === EMPTY) {
          await lane.wait()
          x = lane.received()
        }
        if (x === DONE) break
        // the rest of the batch is what the input has now: only the first item is waited for
        const batch = [x]
        const max = this.size
        while (batch.length < max) {
          const y = lane.take()
          if (y === EMPTY || y === DONE) break
          batch.push(y)
        }
        const results = await this.send(batch)
        if (port.halted) break
        for (let i = 0; i < results.length; i++) {
          const y = results[i]
          if (y === SKIP) continue
          const room = lane.emit(y)
          if (room !== undefined) {
            this.roomWait(1)
            await room
            this.roomWait(-1)
            if (port.halted) break outer
          }
        }
      }
    } catch (err) {
      failure = err instanceof BatchFailure ? err : new BatchFailure(err, 0, undefined)
    }
    await this.loopEnded(lane, failure)
  }

  /**
   * A batch loop, outputs in input order: a slot of the reorder window is reserved per item before
   * it is taken. A batch takes more items only while a slot is free at once; the reservation that
   * had to wait is the first of the loop's next batch, awaited once this batch is on its way.
   */
  private async orderedLoop(lane: Lane): Promise<void> {
    const port = this.port
    const seqs: number[] = []
    let pending: Promise<void> | undefined
    let failure: BatchFailure | undefined
    try {
      await this.ready
      for (;;) {
        if (port.halted) break
        const slot = pending ?? lane.reserve()
        pending = undefined
        if (slot !== undefined) {
          this.roomWait(1)
          await slot
          this.roomWait(-1)
          if (port.halted) break
        }
        let x = lane.take()
        if (x === EMPTY) {
          await lane.wait()
          x = lane.received()
        }
        if (x === DONE) {
          lane.release()
          break
        }
        const batch = [x]
        seqs.length = 0
        seqs.push(lane.seq)
        const max = this.size
        while (batch.length < max) {
          const next = lane.reserve()
          if (next !== undefined) {
            pending = next
            break
          }
          const y = lane.take()
          if (y === EMPTY || y === DONE) {
            lane.release()
            break
          }
          batch.push(y)
          seqs.push(lane.seq)
        }
        const results = await this.send(batch)
        if (port.halted) break
        for (let i = 0; i < results.length; i++) port.fill(seqs[i]!, results[i])
      }
    } catch (err) {
      failure = err instanceof BatchFailure ? err : new BatchFailure(err, 0, undefined)
    }
    await this.loopEnded(lane, failure)
  }

  /** A loop waits for room downstream (+1), or got it (-1). */
  private roomWait(d: number): void {
    this.roomWaits += d
    this.recount()
  }

  /** Runs one batch on the pool, held by its loop meanwhile; resolves to its results, or throws a BatchFailure. */
  private async send(batch: unknown[]): Promise<unknown[]> {
    const gated = this.plan.tuned
    if (gated) {
      await this.turn()
      if (this.port.halted) {
        this.endTurn()
        return NO_RESULTS
      }
    }
    this.holding++
    this.recount()
    try {
      return await this.sendHeld(batch)
    } finally {
      this.holding--
      if (gated) this.endTurn()
      this.recount()
      if (this.port.halted) this.destroyIfIdle()
    }
  }

  private async sendHeld(batch: unknown[]): Promise<unknown[]> {
    const port = this.port
    const n = batch.length
    const transfer = this.plan.transfer
    let transferList: TransferListItem[] | undefined
    for (let i = 0; i < n; i++) {
      const x = batch[i]
      // one call for the common case (a primitive returns at once)
      const refused = unsendable(x, 'item', TO_THREADS)
      if (refused !== undefined) {
        throw new BatchFailure(
          new TypeError(
            `threadStage "${port.name}": an item cannot be sent to its thread: ${refused}; ${SENDABLE_TO_THREADS}`,
          ),
          0,
          x,
        )
      }
      if (transfer !== undefined) {
        let list: readonly (TransferListItem | ArrayBufferView)[] | undefined
        try {
          list = transfer(x)
        } catch (err) {
          throw new BatchFailure(err, 0, x)
        }
        if (list !== undefined) transferList = this.movable(list, x, transferList)
      }
    }
    let answer: Answer
    let sent = performance.now()
    try {
      const rate = this.plan.policies?.rate
      if (rate !== undefined) {
        // a batch is one item under a rate limit (see stage.ts): its turn comes right before it goes
        const turn = rate.take(port.signal)
        if (turn !== undefined) {
          await turn
          if (port.halted) return NO_RESULTS
          sent = performance.now()
        }
      }
      answer =
        this.plan.policies?.timeout === undefined
          ? await this.pool!.run(batch, transferList === undefined ? undefined : { transferList })
          : await this.runWatched(batch, 0, transferList)
    } catch (err) {
      if (port.halted) {
        this.rejectedAfterHalt(err)
        return NO_RESULTS
      }
      throw this.explain(err, batch)
    }
    if (answer.out !== undefined) {
      this.learn(answer.ms!, performance.now() - sent, n)
      if (answer.skipped === undefined && answer.failed === undefined) return answer.out
      return this.settle(batch, answer)
    }
    if (answer.stopped === true) return NO_RESULTS
    throw this.failureOf(answer, batch)
  }

  /** The BatchFailure of an answer that stopped at a failed item (`at`; -1: the module or its init). */
  private failureOf(answer: Answer, items: unknown[]): BatchFailure {
    const at = answer.at!
    const err =
      answer.timedOut === true
        ? new TimeoutError(this.port.name, this.plan.policies!.timeout!)
        : fromWire(answer.error!)
    return new BatchFailure(err, answer.worker, at >= 0 ? items[at] : undefined)
  }

  /**
   * A batch came back with skipped or failed items: marks the skipped ones SKIP, retries the
   * failed ones (only those, after retryDelay, together: one retry task per round, or one per
   * item under a rate limit), then skips what still fails (onError) or fails the run with it.
   * What a failure leads to is decided as for a map stage (lib/kinds/retry.ts). Resolves to the
   * batch's results, or NO_RESULTS if the run stopped meanwhile.
   */
  private async settle(items: unknown[], answer: Answer): Promise<unknown[]> {
    const port = this.port
    const p = this.plan.policies
    const where = `threadStage "${port.name}"`
    const out = answer.out!
    let pending = this.takeOutcome(out, answer, undefined)
    for (let attempt = 0; pending.length > 0; attempt++) {
      const again: number[] = []
      let delay = 0
      for (const f of pending) {
        let d = -1
        if (p !== undefined) {
          try {
            d = nextTry(p, attempt, f.err, where)
          } catch (delayErr) {
            throw new BatchFailure(delayErr, f.worker, items[f.at])
          }
        }
        if (d >= 0) {
          port.retried++
          if (d > delay) delay = d
          again.push(f.at)
        } else if (p?.onError !== undefined) {
          port.failed++
          out[f.at] = SKIP
          const ctx: MapContext<undefined> = {
            signal: port.signal,
            worker: f.worker,
            stage: port.name,
            state: undefined,
            attempt,
          }
          try {
            // an async onError is awaited: its rejection fails the run as a throw does
            const seen = skipFailed(p, f.err, items[f.at], ctx)
            if (seen !== undefined) await seen
          } catch (cbErr) {
            throw new BatchFailure(cbErr, f.worker, items[f.at])
          }
        } else {
          throw new BatchFailure(f.err, f.worker, items[f.at])
        }
      }
      if (again.length === 0) break
      // the items of one round wait the longest of their delays (each waits at least its own)
      if (delay > 0) await sleep(delay, undefined, { signal: port.signal }).catch(noop)
      if (port.halted) return NO_RESULTS
      pending = []
      const one = p?.rate !== undefined
      for (let k = 0; k < again.length; k += one ? 1 : again.length) {
        const at = one ? again.slice(k, k + 1) : again
        const retried = await this.retry(
          at.map((i) => items[i]),
          attempt + 1,
        )
        if (retried === undefined || port.halted) return NO_RESULTS
        if (retried.out === undefined)
          throw this.failureOf(
            retried,
            at.map((i) => items[i]),
          )
        pending.push(...this.takeOutcome(out, retried, at))
      }
    }
    return out
  }

  /**
   * Copies the outcome of a (retry) task into the batch's results: results at their places, SKIP
   * for items that returned `skip`; returns the failed items. `at` maps the task's items to their
   * places in the batch (undefined: the task is the batch).
   */
  private takeOutcome(out: unknown[], answer: Answer, at: number[] | undefined): Failed[] {
    const failed: Failed[] = []
    if (at !== undefined) {
      const got = answer.out!
      for (let k = 0; k < at.length; k++) out[at[k]!] = got[k]
    }
    if (answer.skipped !== undefined) {
      for (const k of answer.skipped) {
        out[at === undefined ? k : at[k]!] = SKIP
        this.port.skipped++
      }
    }
    if (answer.failed !== undefined) {
      for (const [k, w, timedOut, worker] of answer.failed) {
        failed.push({
          at: at === undefined ? k : at[k]!,
          err: timedOut ? new TimeoutError(this.port.name, this.plan.policies!.timeout!) : fromWire(w!),
          worker: worker ?? answer.worker,
        })
      }
    }
    return failed
  }

  /** Runs a retry task: `items` on try `attempt` + 1. Undefined if the run stopped. */
  private async retry(items: unknown[], attempt: number): Promise<Answer | undefined> {
    const port = this.port
    try {
      const rate = this.plan.policies?.rate
      if (rate !== undefined) {
        const turn = rate.take(port.signal)
        if (turn !== undefined) await turn
        if (port.halted) return undefined
      }
      const answer =
        this.plan.policies?.timeout === undefined
          ? ((await this.pool!.run({ items, attempt, id: 0 })) as Answer)
          : await this.runWatched(items, attempt, undefined)
      return answer.stopped === true ? undefined : answer
    } catch (err) {
      if (port.halted) {
        this.rejectedAfterHalt(err)
        return undefined
      }
      throw this.explain(err, items)
    } finally {
      if (port.halted) this.destroyIfIdle()
    }
  }

  /**
   * Runs `items` on try `attempt` + 1 under a timeout: the task carries a batch id, which its
   * thread writes in its slot with the item it is on, so that the watchdog can end a thread stuck
   * on an item. A task whose thread was ended is answered by afterStuck().
   */
  private async runWatched(
    items: unknown[],
    attempt: number,
    transferList: TransferListItem[] | undefined,
  ): Promise<Answer> {
    const id = (this.batchIds = (this.batchIds % 0x7fffffff) + 1)
    try {
      const answer = (await this.pool!.run(
        { items, attempt, id },
        transferList === undefined ? undefined : { transferList },
      )) as Answer
      // ended by the watchdog as it answered: its answer stands
      this.ended.delete(id)
      return answer
    } catch (err) {
      const stuck = this.ended.get(id)
      if (stuck === undefined || stuck.at >= items.length) throw err
      this.ended.delete(id)
      if (this.port.halted) return { worker: stuck.worker, stopped: true }
      return this.afterStuck(items, attempt, stuck)
    }
  }

  /**
   * The answer of a task whose thread the watchdog ended while it was stuck on item `stuck.at`:
   * that item timed out. The task's other items go again, on the same try (they never finished,
   * so it is not a retry; the items before the stuck one did run, but their results were lost
   * with the thread, so their function runs again), and their outcome is merged into the answer.
   * Without `keepGoing` the timeout ends the task, as a failure does.
   */
  private async afterStuck(items: unknown[], attempt: number, stuck: Stuck): Promise<Answer> {
    const timeout = this.plan.policies!.timeout!
    if (!this.keepGoing) return { worker: stuck.worker, at: stuck.at, timedOut: true }
    const n = items.length
    const out = new Array<unknown>(n)
    const failed: FailedItem[] = [[stuck.at, undefined, true, stuck.worker]]
    let skipped: number[] | undefined
    let ms = timeout
    if (n > 1) {
      const others: number[] = []
      for (let i = 0; i < n; i++) if (i !== stuck.at) others.push(i)
      const again = await this.runWatched(
        others.map((i) => items[i]),
        attempt,
        undefined,
      )
      if (again.out === undefined)
        return again.at === undefined || again.at < 0 ? again : { ...again, at: others[again.at] }
      for (let k = 0; k < others.length; k++) out[others[k]!] = again.out[k]
      if (again.skipped !== undefined) skipped = again.skipped.map((k) => others[k]!)
      if (again.failed !== undefined) {
        for (const [k, w, timedOut, thread] of again.failed)
          failed.push([others[k]!, w, timedOut, thread ?? again.worker])
        failed.sort((a, b) => a[0] - b[0])
      }
      ms += again.ms ?? 0
    }
    return { worker: stuck.worker, out, ms, skipped, failed }
  }

  /**
   * The watchdog, with a timeout: looks at the slots, ends the thread of any that has been on one
   * item past its deadline and STUCK_GRACE_MS (a function that never looks at its signal, a thread
   * blocked in a synchronous call: nothing else can stop it), and comes back when the next item it
   * knows of would be due (or after a timeout and the grace period, for items not started yet).
   */
  private readonly watch = (): void => {
    this.watchTimer = undefined
    if (this.port.halted || this.closing || this.destroyed !== undefined) return
    const flags = this.flags
    const now = sharedNow()
    const nowMs = Math.floor(now) | 0
    let next = now + this.plan.policies!.timeout! + STUCK_GRACE_MS
    for (let k = 0; k < this.slots; k++) {
      const b = this.control.slot(k)
      // the opposite order of entry.ts mark(): the deadline read is at least as recent as the
      // item, so one that is long past belongs to that item, which its thread is still on
      const at = Atomics.load(flags, b + S_ITEM)
      const batch = Atomics.load(flags, b + S_BATCH)
      const deadline = Atomics.load(flags, b + S_DEADLINE)
      const threadId = Atomics.load(flags, b + S_THREAD)
      if (threadId === 0 || batch === 0 || this.ending.has(threadId)) continue
      // ms past the deadline (Int32 arithmetic: the clock's whole ms wrap around in the slot)
      const late = (nowMs - deadline) | 0
      if (late >= STUCK_GRACE_MS) this.endStuck(threadId, batch, at, Atomics.load(flags, b + S_WORKER))
      else if (now + STUCK_GRACE_MS - late < next) next = now + STUCK_GRACE_MS - late
    }
    this.watchTimer = setTimeout(this.watch, next - now)
    // the task in flight keeps the process alive, not the watchdog
    this.watchTimer.unref()
  }

  /**
   * Ends the thread `threadId`, stuck on item `at` of batch `batch`: its task is rejected once it
   * has exited, and runWatched() finds why here. A new thread replaces it (see threadExited()).
   */
  private endStuck(threadId: number, batch: number, at: number, worker: number): void {
    let thread: Worker | undefined
    for (const t of this.pool!.threads) if (t.threadId === threadId) thread = t
    if (thread === undefined) return
    this.ending.add(threadId)
    this.ended.set(batch, { at, worker })
    void thread.terminate().then(noop, noop)
  }

  /**
   * Starts a thread in place of one the watchdog ended: a check task, which makes piscina start a
   * thread (it starts one when a task finds no idle thread; with minThreads 0 it never does so by
   * itself, and tasks queued for the ended thread would wait for one). The new thread runs `init`;
   * if that fails, the run fails.
   */
  private replace(): void {
    if (this.port.halted || this.closing || this.destroyed !== undefined) return
    ;(this.pool!.run(CHECK) as Promise<Answer>).then((a) => {
      if (a.error !== undefined) this.port.fail(fromWire(a.error), a.worker, undefined)
    }, noop)
  }

  /** A failed item does not end its batch when it may be retried or skipped. */
  private get keepGoing(): boolean {
    const p = this.plan.policies
    return p !== undefined && (p.retries > 0 || p.onError !== undefined)
  }

  /** Adds what `transfer(item)` returned to the batch's transfer list, once each; a view moves its buffer. */
  private movable(
    list: readonly (TransferListItem | ArrayBufferView)[],
    item: unknown,
    into: TransferListItem[] | undefined,
  ): TransferListItem[] | undefined {
    if (!Array.isArray(list)) {
      throw new BatchFailure(
        new TypeError(
          `threadStage "${this.port.name}": \`transfer\` must return an array (or undefined), got ${got(list)}`,
        ),
        0,
        item,
      )
    }
    for (let t of list) {
      if (ArrayBuffer.isView(t)) t = t.buffer as ArrayBuffer
      if (!(t instanceof ArrayBuffer) && !(t instanceof globalThis.MessagePort)) {
        throw new BatchFailure(
          new TypeError(
            `threadStage "${this.port.name}": \`transfer\` returned ${got(t)}, which cannot be moved to a thread (an ArrayBuffer, a view of one, or a MessagePort can)`,
          ),
          0,
          item,
        )
      }
      into ??= []
      if (!into.includes(t)) into.push(t)
    }
    return into
  }

  /**
   * Sizes the next batches from what this one cost: the thread's time on it, or, when moving the
   * items and results costs more than the function (large items, a cheap function), its share of
   * the round trip (a batch waits behind the one batch queued ahead of it on its thread). Without
   * the round trip, a cheap function would get full batches of large items, and memory would hold
   * 2 x threads x batch of them.
   */
  private learn(threadMs: number, roundTripMs: number, n: number): void {
    this.port.record(threadMs / n)
    const ms = Math.max(threadMs, roundTripMs / IN_FLIGHT_PER_THREAD)
    const per = ms / n
    this.perItem = this.perItem < 0 ? per : (this.perItem + per) / 2
    const max = this.plan.batch
    const size = this.perItem > 0 ? Math.floor(TARGET_BATCH_MS / this.perItem) : max
    this.size = size < 1 ? 1 : Math.min(size, max)
  }

  /** Turns a rejected task (the thread never answered) into the error the run fails with. */
  private explain(err: unknown, batch: unknown[]): BatchFailure {
    const name = this.port.name
    const e = err as { name?: unknown; resultIndex?: unknown; worker?: unknown } | null
    if (e !== null && typeof e === 'object' && typeof e.resultIndex === 'number') {
      // entry.ts found the result that could not be posted back, and let its thread die with this
      return new BatchFailure(err, typeof e.worker === 'number' ? e.worker : 0, batch[e.resultIndex])
    }
    if (isCloneFailure(err)) {
      // posting the batch failed on what the sendable rule cannot see (a MessagePort that
      // `transfer` did not list): find the item (only here, on the failure path, is each cloned)
      for (const x of batch) {
        try {
          structuredClone(x)
        } catch (cause) {
          return new BatchFailure(
            new TypeError(
              `threadStage "${name}": an item could not be sent to its thread (structured clone): ${describeCause(cause)}`,
              { cause },
            ),
            0,
            x,
          )
        }
      }
    }
    return new BatchFailure(
      new Error(
        `threadStage "${name}": a batch of ${batch.length} items got no answer from its thread (it could not be sent, or the thread died): ${describeCause(err)}`,
        { cause: err },
      ),
      0,
      undefined,
    )
  }

  /**
   * A loop ended, failing with `failure` or not. The last one closes the pool (after the end
   * round) before it exits its lane, so that the stage's output closes once no thread is left.
   * A failure fails the run as the thread that failed (the TaskException names it), not the loop.
   */
  private async loopEnded(lane: Lane, failure: BatchFailure | undefined): Promise<void> {
    if (--this.active === 0) {
      const late = await this.close()
      // a failure of the end round (dispose threw, a thread's timer threw) fails a run that is
      // still running; once the stage has stopped it no longer can, and it is not lost either
      if (late !== undefined && failure === undefined && this.port.halted) this.lateWarning(late.err)
      failure ??= late
    }
    if (failure !== undefined) this.port.fail(failure.err, failure.worker, failure.item)
    lane.exit()
  }

  /** A thread failed once the stage had stopped: the run's outcome stands, and the failure is a process warning. */
  private lateWarning(err: unknown): void {
    process.emitWarning(
      `stageline: a thread of threadStage "${this.port.name}" failed after the stage had stopped (the run's outcome is unchanged): ${describeCause(err)}`,
    )
  }

  /**
   * A task was rejected after the stage stopped. The pool destroyed under it says nothing; a
   * thread that died by itself meanwhile (an uncaught error, process.exit()) is a process warning.
   */
  private rejectedAfterHalt(err: unknown): void {
    if (this.destroyed === undefined) this.lateWarning(err)
  }

  /**
   * The run stops: tell the threads. Batches that have not started will not start; if no thread is
   * inside a batch, the pool goes now (what is queued in it was never started), otherwise once the
   * running batches return, or after the grace period for a function that ignores ctx.signal.
   */
  private readonly onHalt = (): void => {
    this.wakeTurns()
    clearTimeout(this.watchTimer)
    this.control.stop(encodeReason(this.port.signal.reason))
    if (this.destroyIfIdle()) return
    // half the run's grace period, so that the threads are gone within it and the run settles
    // after; it also bounds the end round after a stop
    this.graceTimer = setTimeout(this.destroy, SETTLE_GRACE_MS / 2)
    this.graceTimer.unref()
  }

  /**
   * After a stop: destroys the pool if no thread is inside a batch. The stop flag is raised before
   * this reads the running flags, and a thread raises its running flag before it reads the stop
   * flag, so a batch either stops by itself or is seen here. Says whether it destroyed the pool.
   */
  private destroyIfIdle(): boolean {
    // with a dispose export, the loops end by themselves (batches that start now stop at once),
    // and the last one runs the end round before it destroys the pool (close())
    if (this.disposes || this.control.anyRunning()) return false
    void this.destroy()
    return true
  }

  /**
   * A thread exited: it runs nothing any more (one that died inside a batch left its flags
   * raised), and its slot is free for a new thread. One the watchdog ended is replaced.
   */
  private threadExited(threadId: number): void {
    this.control.leave(threadId)
    if (this.ending.delete(threadId)) this.replace()
    if (this.port.halted) this.destroyIfIdle()
  }

  /**
   * The pool failed outside any task (piscina emits 'error': a thread threw while it held no
   * task): the run fails, or, once the stage has stopped, it is a process warning. Once the pool
   * is being destroyed, what piscina reports is its own teardown (an answer that arrives for a
   * task it has just dropped), not a thread's failure.
   */
  private readonly onPoolError = (err: unknown): void => {
    if (!this.port.halted) this.port.fail(err, 0, undefined)
    else if (this.destroyed === undefined) this.lateWarning(err)
  }

  /**
   * The last loop ended: runs the end round (unless the stage stopped and the module exports no
   * `dispose`), then destroys the pool. Resolves to the failure of the end round, if any.
   */
  private async close(): Promise<BatchFailure | undefined> {
    let failure: BatchFailure | undefined
    this.closing = true
    clearTimeout(this.watchTimer)
    // the abort listener stays during the round: a stop then still bounds it (onHalt's timer)
    if (this.pool !== undefined && this.destroyed === undefined && (this.disposes || !this.port.halted)) {
      this.phase = ENDING
      this.recount()
      failure = await this.endRound(this.pool)
    }
    this.port.signal.removeEventListener('abort', this.onHalt)
    clearTimeout(this.graceTimer)
    await this.destroy()
    return failure
  }

  /**
   * Ends the run in every thread: one task per thread, which entry.ts holds until every thread has
   * one (piscina gives a task to any idle thread). It runs `dispose` and lets the thread's timers
   * that are due run: piscina blocks an idle thread, so a timer the function set after its last
   * batch (one that throws, say) would otherwise never run, and its error would vanish with the
   * pool. No batch is in flight by now. Resolves to the first failure: a dispose that threw, or a
   * thread that died during the round.
   */
  private async endRound(pool: Piscina): Promise<BatchFailure | undefined> {
    const n = pool.threads.length
    Atomics.store(this.flags, H_ARRIVED, 0)
    const task = { end: n }
    let failure: BatchFailure | undefined
    let answered = 0
    const round = Promise.all(
      Array.from({ length: n }, () =>
        (pool.run(task) as Promise<Answer>).then(
          (a) => {
            answered++
            if (a.error !== undefined) failure ??= new BatchFailure(fromWire(a.error), a.worker, undefined)
          },
          (err: unknown) => {
            answered++
            // the pool destroyed under the round (the grace period after a stop ran out) says
            // nothing; otherwise the thread died during it, of its own error
            if (this.destroyed === undefined) failure ??= new BatchFailure(err, 0, undefined)
          },
        ),
      ),
    )
    const ms = this.plan.disposeTimeout
    if (ms === Number.POSITIVE_INFINITY) await round
    else {
      let timer: ReturnType<typeof setTimeout> | undefined
      const late = new Promise<true>((resolve) => {
        timer = setTimeout(resolve, ms, true)
      })
      const timedOut = await Promise.race([round, late])
      clearTimeout(timer)
      // a dispose that does not return: close() destroys the pool next, which ends its thread
      if (timedOut === true && answered < n) {
        process.emitWarning(
          `stageline: threadStage "${this.port.name}": dispose did not return within ${ms} ms (disposeTimeout) in ${n - answered} of its ${n} threads; they were ended (the run's outcome is unchanged)`,
        )
      }
    }
    return failure
  }

  /**
   * Notes the pool's threads. piscina's destroy() waits only for the threads still in its pool; a
   * thread that died (and was replaced) may still be exiting, so the run waits for those too.
   */
  private readonly track = (): void => {
    for (const t of this.pool!.threads) {
      if (this.threads.has(t)) continue
      const id = t.threadId
      this.threads.set(
        t,
        new Promise<void>((resolve) =>
          t.once('exit', () => {
            this.threadExited(id)
            resolve()
          }),
        ),
      )
    }
  }

  /** Destroys the pool once; every call waits for the same end: every thread it started has exited. */
  private readonly destroy = (): Promise<void> => {
    if (this.destroyed === undefined) {
      const pool = this.pool
      this.destroyed =
        pool === undefined
          ? Promise.resolve()
          : pool
              .destroy()
              .then(() => Promise.all(this.threads.values()))
              .then(noop)
    }
    return this.destroyed
  }
}

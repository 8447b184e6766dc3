/**
 * serveStage(): a worker process's side of a Redis stage. It reads entries of every live run of
 * the stage through the stage's consumer group, runs the function on their items with bounded
 * concurrency, writes each entry's results and acknowledges it in one step, renews the entries it
 * holds so that only a dead or stalled worker's are reclaimed, and takes over such entries itself.
 * @module
 */
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { setTimeout as delay } from 'node:timers/promises'
import { isThenable, noop } from '../_utils.js'
import { describeCause, RunStopped } from '../errors.js'
import type { StageContext } from '../kinds/kind.js'
import { checkFunction, checkMs } from '../options/check.js'
import { SENDABLE, unsendable } from '../wire/sendable.js'
import { pack, packError, unpackItems } from './codec.js'
import { Connection } from './connection.js'
import { redis } from './deps.js'
import type { RedisConnectionError } from './errors.js'
import { checkStageName, resolveServeOptions, type ServeOptions } from './options.js'
import { RedisWorkQueue } from './streams.js'
import { type Delivery, PROTOCOL_VERSION, RunGone, type RunInfo, type WorkQueue } from './transport.js'

const { ErrorReply } = redis

/** How long one blocking read waits before it is issued again. */
const READ_BLOCK_MS = 1000
/** How often the list of live runs is read again when no notification came. */
const REFRESH_MS = 2000
/** The fewest stalled entries one look for them takes over (per run), busy or not. */
const MIN_RECLAIM = 64
/** The most entries one read asks for (per run). */
const MAX_READ = 16

/**
 * What a worker's function receives besides the item.
 *
 * @example
 * ```ts
 * import type { WorkerContext } from 'stageline/redis'
 * const done = new Set<string>()
 * // a worker function whose side effect runs once per item, even when an item is delivered again
 * async function charge(order: { id: string; cents: number }, ctx: WorkerContext): Promise<string> {
 *   const key = `${ctx.runId}:${ctx.seq}`
 *   if (done.has(key)) return 'already charged'
 *   ctx.signal.throwIfAborted()
 *   done.add(key)
 *   return `charged ${order.cents} (attempt ${ctx.attempt})`
 * }
 * // serveStage('charge', { concurrency: 8 }, charge) would serve it
 * ```
 */
export interface WorkerContext extends StageContext {
  /**
   * Aborts when the item's run is stopped or fails, when this worker is closing, or when this
   * worker lost the item's entry to another worker (it went silent for longer than
   * `visibilityTimeout`).
   */
  readonly signal: AbortSignal
  /** The 0-based concurrency slot running the item in this worker process. */
  readonly worker: number
  /** The id of the run the item belongs to. */
  readonly runId: string
  /** The item's 0-based position in its run's input. */
  readonly seq: number
  /**
   * Which delivery of the item this is: 1 the first time, more when a worker died or stalled
   * holding it (or closed before finishing it). Use it to make side effects idempotent.
   */
  readonly attempt: number
}

/**
 * A running worker, as {@link serveStage} returns it.
 *
 * @example
 * ```ts
 * import type { StageWorker } from 'stageline/redis'
 * // a worker process's shutdown: finish what it holds, put back what it has not started
 * function closeOnSignal(worker: StageWorker): void {
 *   process.once('SIGTERM', () => {
 *     void worker.close({ grace: 10_000 })
 *   })
 *   worker.closed.catch((err: unknown) => {
 *     console.error(`worker ${worker.id} lost Redis:`, err)
 *     process.exitCode = 1
 *   })
 * }
 * ```
 */
export interface StageWorker {
  /** This worker's consumer name in the stage's consumer group: `host:pid:random`. */
  readonly id: string
  /**
   * Settles when the worker has stopped: resolves after `close()`, rejects with a
   * {@link RedisConnectionError} (or the error the server gave) when it stopped because Redis
   * could not be reached. Its entries are then redelivered to other workers.
   */
  readonly closed: Promise<void>
  /**
   * Stops taking entries, lets the items it holds finish, writes their results and acknowledges
   * them, then disconnects. Their `ctx.signal` aborts after `grace` ms (default at once; `Infinity`:
   * never, the items run to their end): an item whose function then throws is put back in the
   * queue for another worker, one whose function returns anyway is acknowledged. Entries not yet
   * started are put back at once.
   */
  close(options?: { grace?: number }): Promise<void>
}

/**
 * Serves a Redis stage: runs `fn` on the items that pipelines send through
 * `redisStage(name, ...)`, in this process, with up to `concurrency` items at once. Start it in
 * as many processes, on as many hosts, as needed; they share the work. Resolves once connected and
 * ready.
 *
 * `fn` runs at least once per item: a worker that dies or stalls for longer than the stage's
 * `visibilityTimeout` has its items redone elsewhere (`ctx.attempt` tells). What it returns goes
 * back to the pipeline; what it throws fails the pipeline's run. A run whose state Redis lost (a
 * restart, a flush) is dropped here (its items' `ctx.signal` aborts) while the others go on.
 *
 * Caveat: renewals need the event loop. A function that blocks it (synchronous CPU work) for
 * longer than `visibilityTimeout` gets its items redelivered; run such work in worker threads.
 *
 * @example
 * <!-- no-run: needs a Redis server -->
 * ```ts
 * import { serveStage } from 'stageline/redis'
 * const worker = await serveStage('resize', { url: 'redis://127.0.0.1:6379', concurrency: 8 },
 *   async (job: { path: string }, ctx) => {
 *     const res = await fetch(`http://thumbnailer/${job.path}`, { signal: ctx.signal })
 *     return { path: job.path, bytes: Number(res.headers.get('content-length')) }
 *   })
 * process.once('SIGTERM', () => void worker.close())
 * await worker.closed
 * ```
 */
export async function serveStage<I, O>(
  name: string,
  options: ServeOptions | undefined,
  fn: (item: I, ctx: WorkerContext) => O | PromiseLike<O>,
): Promise<StageWorker> {
  const where = 'serveStage()'
  checkStageName(where, name)
  const o = resolveServeOptions(where, options)
  checkFunction(where, 'fn', fn)
  const consumer = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
  const main = await Connection.open(o)
  let queue: RedisWorkQueue
  try {
    queue = await RedisWorkQueue.open(main, name, consumer)
  } catch (err) {
    main.destroy()
    throw main.failure(err, 'could not connect to')
  }
  const server = new Server(name, consumer, o.concurrency, fn as ItemFn, queue)
  try {
    await server.start()
  } catch (err) {
    await queue.close()
    throw queue.failure(err)
  }
  return server
}

type ItemFn = (item: unknown, ctx: WorkerContext) => unknown

interface RunState {
  readonly info: RunInfo
  readonly held: Set<Held>
  ended: boolean
  lastRenew: number
  lastReclaim: number
}

/** An entry this worker holds, from delivery until it is acknowledged, put back or dropped. */
class Held {
  /** Aborts the `ctx.signal` of the entry's items. */
  private readonly ctl = new AbortController()
  /** Set once the entry's items must stop. */
  aborted = false
  /** The results, by item. */
  readonly values: unknown[]
  readonly count: number
  /** The next item to start. */
  next = 0
  /** Items running now. */
  running = 0
  /** No more items are started (closing, or the entry was taken away). */
  halt = false
  /** An item threw: the error went to the run. */
  failed = false
  /** An item was aborted because this worker is closing: the entry goes back to the queue. */
  requeue = false
  /** The entry must not be written back: its run ended, or another worker holds it now. */
  dropped = false
  /** Renewal found the entry taken over by another worker. */
  lost = false
  settled = false
  /** When its first item started (for the read-ahead estimate). */
  startedAt = 0

  constructor(
    readonly d: Delivery,
    readonly run: RunState,
    readonly attempt: number,
    /** The items, decoded. */
    readonly items: unknown[],
    /** Where each item's message ends in `d.items` (to send an item back with its error). */
    readonly ends: number[],
  ) {
    this.count = items.length
    this.values = new Array(items.length)
  }

  get signal(): AbortSignal {
    return this.ctl.signal
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.ctl.abort(reason)
  }

  /** Item `i`'s own msgpack message. */
  raw(i: number): Buffer {
    return this.d.items.subarray(i === 0 ? 0 : this.ends[i - 1], this.ends[i])
  }
}

class Server implements StageWorker {
  readonly closed: Promise<void>
  private resolveClosed!: () => void
  private rejectClosed!: (err: unknown) => void
  private readonly runs = new Map<string, RunState>()
  private readonly ended = new Set<string>()
  private readonly ready: Held[] = []
  private readyHead = 0
  private running = 0
  private readonly slots: number[] = []
  private pumping = false
  private closing = false
  private stopped = false
  private closeCalled: Promise<void> | undefined
  private readonly writes = new Set<Promise<unknown>>()
  /** Finished entries waiting for the next completion call, by run. */
  private readonly completing = new Map<RunState, [Delivery, Buffer][]>()
  private wakeReader: (() => void) | undefined
  private wakeMaintenance: (() => void) | undefined
  private wakeIdle: (() => void) | undefined
  private fatal: { error: unknown } | undefined
  private refreshing: Promise<void> | undefined
  private lastRefresh = 0
  /**
   * Moving averages of an entry's processing time and of a write's round trip, in ms. When entries
   * finish much faster than a round trip, the reader asks for several per read (a worker waiting on
   * the network is the bottleneck); when they are slow, for one at a time (entries held here wait
   * while other workers could have taken them).
   */
  private entryMs = 1
  private writeMs = 0.2
  private readLoopDone: Promise<void> = Promise.resolve()
  private maintenanceDone: Promise<void> = Promise.resolve()

  constructor(
    private readonly stage: string,
    readonly id: string,
    private readonly concurrency: number,
    private readonly fn: ItemFn,
    private readonly queue: WorkQueue,
  ) {
    for (let i = concurrency - 1; i >= 0; i--) this.slots.push(i)
    this.closed = new Promise<void>((resolve, reject) => {
      this.resolveClosed = resolve
      this.rejectClosed = reject
    })
    // an unobserved `closed` must not crash the process: the caller sees it where it awaits it
    this.closed.catch(() => {})
  }

  async start(): Promise<void> {
    await this.queue.onRunEvent((event, runId) => {
      if (event === '-') this.endRun(runId)
      else if (!this.runs.has(runId)) {
        // a blocked read covers the old list of runs: interrupt it so the next one includes this run
        void this.refresh().then(() => {
          this.wakeReader?.()
          this.queue.interrupt()
        }, noop)
      }
    })
    await this.refresh()
    this.readLoopDone = this.readLoop().catch((err) => this.die(err))
    this.maintenanceDone = this.maintain().catch((err) => this.die(err))
  }

  // ---- runs ----

  private refresh(): Promise<void> {
    if (this.refreshing !== undefined) return this.refreshing
    this.refreshing = (async () => {
      try {
        const infos = await this.queue.runs()
        this.lastRefresh = performance.now()
        const alive = new Set<string>()
        for (const info of infos) {
          alive.add(info.runId)
          if (!this.runs.has(info.runId) && !this.ended.has(info.runId)) {
            if (info.version !== String(PROTOCOL_VERSION)) {
              this.refuse(info)
              continue
            }
            this.runs.set(info.runId, { info, held: new Set(), ended: false, lastRenew: 0, lastReclaim: 0 })
            this.wakeMaintenance?.() // its visibilityTimeout may call for a shorter tick
          }
        }
        for (const runId of [...this.runs.keys()]) if (!alive.has(runId)) this.endRun(runId, 'unlisted')
      } finally {
        this.refreshing = undefined
      }
    })()
    return this.refreshing
  }

  /**
   * Fails a run started by a pipeline that speaks another protocol version (or records none: a
   * release before versions were recorded), once, without reading any of its entries: what it
   * sends could be misread. Should the refusal not reach Redis, the next listing of runs tries again.
   */
  private refuse(info: RunInfo): void {
    const runId = info.runId
    this.markEnded(runId)
    const theirs =
      info.version === undefined
        ? 'version 1 (it records none: a stageline release before versions were recorded)'
        : /^\d{1,9}$/.test(info.version)
          ? `version ${info.version}`
          : `an unknown version (${JSON.stringify(info.version.slice(0, 40))})`
    const err = new Error(
      `stage "${this.stage}": run ${runId} was started by a pipeline that speaks ${theirs} of stageline's Redis protocol, ` +
        `and this worker (${this.id}) speaks version ${PROTOCOL_VERSION}: it does not read the run's items. ` +
        "Run the same stageline version in the pipeline's process and in the stage's workers",
    )
    this.write(
      this.queue.refuse(runId, packError(err, this.id, 0), pack(undefined)).catch((e: unknown) => {
        this.ended.delete(runId)
        throw e
      }),
    )
  }

  /** Remembers that a run ended, so that a later listing does not take it up again. */
  private markEnded(runId: string): void {
    this.ended.add(runId)
    if (this.ended.size > 10_000) this.ended.delete(this.ended.values().next().value!)
  }

  /**
   * A run ended (or failed, or was cancelled), or is gone from Redis: abort its items here and
   * forget it. `why`: its end was announced, or its results found its keys deleted (`ended`); it is
   * no longer in the list of live runs (`unlisted`); its input stream or consumer group is gone
   * (`gone`: it ended, or Redis lost it).
   */
  private endRun(runId: string, why: 'ended' | 'unlisted' | 'gone' = 'ended'): void {
    this.markEnded(runId)
    const run = this.runs.get(runId)
    if (run === undefined) return
    this.runs.delete(runId)
    this.queue.forget(runId)
    run.ended = true
    const reason = new RunStopped(
      why === 'ended'
        ? `run ${runId} of stage "${this.stage}" ended (stopped, failed or finished)`
        : why === 'unlisted'
          ? `run ${runId} of stage "${this.stage}" is no longer listed in Redis (it ended, its pipeline stopped renewing it, or Redis lost it)`
          : `the input stream or consumer group of run ${runId} of stage "${this.stage}" is gone from Redis (it ended, or Redis lost it: was the server restarted or flushed?)`,
    )
    for (const h of run.held) {
      h.dropped = true
      h.halt = true
      h.abort(reason)
      if (h.running === 0) this.settle(h)
    }
    this.queue.interrupt()
  }

  // ---- reading ----

  private hasRoom(): boolean {
    return this.readyHead === this.ready.length && this.running < this.concurrency
  }

  private async readLoop(): Promise<void> {
    let errors = 0
    /** Reads in a row that found a run's queue gone without saying which run. */
    let unnamed = 0
    while (!this.closing) {
      if (!this.hasRoom()) {
        await this.nap(Number.POSITIVE_INFINITY, 'reader')
        continue
      }
      if (this.runs.size === 0) {
        await this.nap(READ_BLOCK_MS, 'reader')
        if (!this.closing && this.runs.size === 0) await this.refresh()
        continue
      }
      const runIds = [...this.runs.keys()]
      let batch = Number.POSITIVE_INFINITY
      for (const run of this.runs.values()) batch = Math.min(batch, run.info.batch)
      const needed = Math.ceil((this.concurrency - this.running) / batch)
      const ahead = Math.ceil(this.writeMs / Math.max(this.entryMs, 0.001))
      const count = Math.max(1, Math.min(MAX_READ, Math.max(needed, ahead)))
      let got: Delivery[] | null
      try {
        got = await this.queue.read(runIds, count, READ_BLOCK_MS)
        errors = 0
        unnamed = 0
      } catch (err) {
        if (this.closing) break
        if (!this.queue.alive) throw this.queue.failure(err)
        if (err instanceof RunGone) {
          // a run's stream or group is gone: it ended while being read, or Redis lost it (a
          // restart, a flush). Drop it here, so that the next read leaves it out; read the live
          // runs again. Should the reply not say which run, back off rather than spin.
          if (err.runId !== undefined && this.runs.has(err.runId)) {
            unnamed = 0
            this.endRun(err.runId, 'gone')
          } else if (++unnamed > 2) await delay(Math.min(1000, 10 * 2 ** unnamed))
        } else if (++errors > 10) {
          // anything else (a dropped connection being re-established) is retried a few times
          throw this.queue.failure(err)
        }
        if (errors > 0) await delay(Math.min(1000, 10 * 2 ** errors))
        await this.refresh().catch(noop)
        continue
      }
      if (got === null) {
        if (performance.now() - this.lastRefresh > REFRESH_MS) await this.refresh()
        continue
      }
      for (const d of got) this.accept(d)
    }
  }

  /** Takes an entry delivered to this worker (read or reclaimed). */
  private accept(d: Delivery): void {
    const run = this.runs.get(d.runId)
    if (run === undefined) return // its run ended meanwhile: the entry went with its keys
    const attempt = d.prior + d.deliveries
    if (attempt > run.info.maxDeliveries) {
      this.write(this.queue.expire(d, attempt, run.info.deadLetter))
      return
    }
    if (this.closing) {
      this.write(this.queue.requeue(d, attempt))
      return
    }
    let decoded: ReturnType<typeof unpackItems>
    try {
      decoded = unpackItems(d.items)
    } catch (err) {
      // the entry stays pending: the run fails on the report
      this.write(this.queue.report(d, d.seq, packError(err, this.id, attempt), d.items))
      return
    }
    const h = new Held(d, run, attempt, decoded.values, decoded.ends)
    run.held.add(h)
    this.ready.push(h)
    this.pump()
  }

  // ---- running items ----

  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      while (this.running < this.concurrency && this.readyHead < this.ready.length) {
        const h = this.ready[this.readyHead]!
        if (h.halt || this.closing) {
          h.halt = true
          this.shiftReady()
          if (h.running === 0) this.settle(h)
          continue
        }
        const i = h.next++
        if (h.next === h.count) this.shiftReady()
        this.run(h, i)
      }
    } finally {
      this.pumping = false
    }
    if (this.hasRoom()) this.wakeReader?.()
  }

  private shiftReady(): void {
    this.ready[this.readyHead++] = undefined as unknown as Held
    if (this.readyHead === this.ready.length) {
      this.ready.length = 0
      this.readyHead = 0
    }
  }

  private run(h: Held, i: number): void {
    this.running++
    h.running++
    if (i === 0) h.startedAt = performance.now()
    const slot = this.slots.pop()!
    let y: unknown
    let thenable: boolean
    try {
      const item = h.items[i]
      h.items[i] = undefined // let it be collected once the function is done with it
      const ctx: WorkerContext = {
        signal: h.signal,
        worker: slot,
        stage: this.stage,
        runId: h.d.runId,
        seq: h.d.seq + i,
        attempt: h.attempt,
      }
      y = this.fn(item, ctx)
      thenable = isThenable(y) // reads `then`: a getter of the result's may throw
    } catch (err) {
      this.itemFailed(h, i, slot, err)
      return
    }
    if (thenable) this.awaitResult(h, i, slot, y as PromiseLike<unknown>)
    else this.itemDone(h, i, slot, y)
  }

  /**
   * Waits for a result that is a promise or another thenable. The item settles once, on the first
   * call of either callback, whatever the thenable does (calls both, calls one twice, throws from
   * `then`): a second settlement would corrupt the count of running items.
   */
  private awaitResult(h: Held, i: number, slot: number, y: PromiseLike<unknown>): void {
    let settled = false
    const failed = (err: unknown): void => {
      if (settled) return
      settled = true
      this.itemFailed(h, i, slot, err)
    }
    try {
      y.then((v) => {
        if (settled) return
        settled = true
        this.itemDone(h, i, slot, v)
      }, failed)
    } catch (err) {
      failed(err)
    }
  }

  private itemDone(h: Held, i: number, slot: number, value: unknown): void {
    // checked before it is packed: the packer would send a function as undefined, an instance of
    // a class as a plain object; refused, the item fails as if the function had thrown
    const refused = unsendable(value, 'result')
    if (refused !== undefined) {
      this.itemFailed(h, i, slot, new TypeError(`${refused}; ${SENDABLE}`))
      return
    }
    h.values[i] = value
    this.itemSettled(h, slot)
  }

  private itemFailed(h: Held, i: number, slot: number, err: unknown): void {
    if (h.aborted) {
      // aborted by us: closing (the entry goes back), or its run ended / another worker has it
      if (h.dropped || h.lost) h.dropped = true
      else h.requeue = true
    } else if (!h.failed) {
      h.failed = true
      h.halt = true
      this.write(this.queue.report(h.d, h.d.seq + i, packError(err, this.id, h.attempt), h.raw(i)))
    }
    this.itemSettled(h, slot)
  }

  private itemSettled(h: Held, slot: number): void {
    this.running--
    h.running--
    this.slots.push(slot)
    if (h.running === 0 && (h.halt || h.next === h.count)) this.settle(h)
    this.pump()
  }

  /** Every item of `h` that will run has finished: write back, put back, or drop the entry. */
  private settle(h: Held): void {
    if (h.settled) return
    h.settled = true
    h.run.held.delete(h)
    const succeeded = !h.failed && !h.requeue && !h.dropped && h.next === h.count
    if (h.run.ended) {
      // nothing to write: the run's keys are gone
    } else if (h.failed) {
      // the entry stays pending, unacknowledged: the run fails on the report already sent (and
      // should the report have been dropped, a later delivery reports the failure again)
    } else if (!succeeded) {
      // not every item ran: put the entry back, unless another worker owns it now
      if (!h.lost && !h.dropped) this.write(this.queue.requeue(h.d, h.attempt))
    } else {
      const now = performance.now()
      this.entryMs += (now - h.startedAt - this.entryMs) / 8
      let values: Buffer
      try {
        values = pack(h.values)
      } catch (err) {
        this.reportUnpackable(h, err)
        return
      }
      this.completeLater(h, values)
    }
    this.checkIdle()
  }

  /**
   * Queues an entry's completion: entries that finish in the same turn of the event loop (all of
   * a read's entries, with a fast function) are completed by one script call per run.
   */
  private completeLater(h: Held, values: Buffer): void {
    let list = this.completing.get(h.run)
    if (list === undefined) this.completing.set(h.run, (list = []))
    list.push([h.d, values])
    if (this.completing.size === 1 && list.length === 1) {
      this.write(new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushCompletions()))
    }
  }

  private flushCompletions(): void {
    const now = performance.now()
    for (const [run, list] of this.completing) {
      if (run.ended) continue
      const runId = run.info.runId
      this.write(
        this.queue.complete(runId, list).then((done) => {
          if (done < 0) this.endRun(runId) // its keys are gone: drop what is left of it here
        }),
        now,
      )
    }
    this.completing.clear()
  }

  /** A result could not be serialized: the run fails on the first such item, as on a thrown error. */
  private reportUnpackable(h: Held, err: unknown): void {
    let i = 0
    for (; i < h.values.length; i++) {
      try {
        pack(h.values[i])
      } catch {
        break
      }
    }
    const cause = new TypeError(
      `the result of item ${h.d.seq + i} cannot be sent back: ${describeCause(err)}`,
    )
    i = Math.min(i, h.count - 1)
    this.write(this.queue.report(h.d, h.d.seq + i, packError(cause, this.id, h.attempt), h.raw(i)))
    this.checkIdle()
  }

  /**
   * Tracks a write to Redis. If it fails on a dropped connection that is being re-established,
   * the entry stays pending and is redelivered after visibilityTimeout; a connection given up for
   * good, or an error reply from the server, stops the worker.
   */
  private write(p: Promise<unknown>, since = 0): void {
    this.writes.add(p)
    p.then(
      () => {
        this.writes.delete(p)
        if (since > 0) this.writeMs += (performance.now() - since - this.writeMs) / 8
        this.checkIdle()
      },
      (err) => {
        this.writes.delete(p)
        if (!this.queue.alive || err instanceof ErrorReply) this.die(this.queue.failure(err))
        this.checkIdle()
      },
    )
  }

  // ---- leases ----

  private async maintain(): Promise<void> {
    let errors = 0
    while (!this.stopped) {
      let vis = Number.POSITIVE_INFINITY
      for (const run of this.runs.values()) vis = Math.min(vis, run.info.visibilityTimeout)
      await this.nap(Math.max(5, Math.min(1000, vis / 6)), 'maintenance')
      if (this.stopped) return
      const now = performance.now()
      const work: Promise<void>[] = []
      for (const run of this.runs.values()) {
        const v = run.info.visibilityTimeout
        if (run.held.size > 0 && now - run.lastRenew >= v / 3) {
          run.lastRenew = now
          work.push(this.renew(run))
        } else if (run.held.size === 0) run.lastRenew = now
        // a busy worker takes over stalled entries too (they wait here, renewed, for a free slot):
        // were only idle workers to, a worker stalled forever would hold its entries for as long
        // as every other one stays busy
        if (!this.closing && now - run.lastReclaim >= v / 6) {
          run.lastReclaim = now
          const free = this.concurrency - this.running - this.waiting()
          work.push(this.reclaim(run, Math.max(MIN_RECLAIM, Math.ceil(Math.max(0, free) / run.info.batch))))
        }
      }
      try {
        await Promise.all(work)
        errors = 0
      } catch (err) {
        if (!this.queue.alive || ++errors > 10) throw this.queue.failure(err)
      }
    }
  }

  /** Items delivered and not started yet. */
  private waiting(): number {
    let n = 0
    for (let i = this.readyHead; i < this.ready.length; i++) {
      const h = this.ready[i]!
      n += h.count - h.next
    }
    return n
  }

  private async renew(run: RunState): Promise<void> {
    const byId = new Map<string, Held>()
    for (const h of run.held) byId.set(h.d.id, h)
    const lost = await this.queue.renew(run.info.runId, [...byId.keys()])
    if (lost === null) return this.endRun(run.info.runId, 'gone')
    for (const id of lost) {
      const h = byId.get(id)
      if (h === undefined || h.settled) continue
      h.lost = true
      h.halt = true
      h.abort(new RunStopped(`entry ${id} was handed to another worker (this one was silent too long)`))
      if (h.running === 0) this.settle(h)
    }
  }

  private async reclaim(run: RunState, count: number): Promise<void> {
    const got = await this.queue.reclaim(run.info.runId, run.info.visibilityTimeout, count)
    if (got === null) return this.endRun(run.info.runId, 'gone')
    for (const d of got) this.accept(d)
  }

  // ---- closing ----

  /** Waits `ms` (Infinity: until woken), or until the loop's wake function is called. */
  private nap(ms: number, loop: 'reader' | 'maintenance'): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined
      const self = this
      function done(): void {
        clearTimeout(timer)
        if (loop === 'reader') self.wakeReader = undefined
        else self.wakeMaintenance = undefined
        resolve()
      }
      if (loop === 'reader') this.wakeReader = done
      else this.wakeMaintenance = done
    })
  }

  private held(): number {
    let n = 0
    for (const run of this.runs.values()) n += run.held.size
    return n
  }

  private checkIdle(): void {
    if (this.wakeIdle !== undefined && this.running === 0 && this.writes.size === 0 && this.held() === 0) {
      this.wakeIdle()
    }
  }

  close(options?: { grace?: number }): Promise<void> {
    if (this.closeCalled !== undefined) return this.closeCalled
    let grace: number
    try {
      const given = options?.grace
      grace = given === undefined ? 0 : checkMs('worker.close()', 'grace', given, { infinity: true })
    } catch (err) {
      return Promise.reject(err)
    }
    this.closeCalled = this.shutdown(grace)
    return this.closeCalled
  }

  /** Stops the worker on an error it cannot recover from: `closed` rejects with it. */
  private die(err: unknown): void {
    if (this.fatal !== undefined) return
    this.fatal = { error: err }
    this.abortAll(new RunStopped(`the worker ${this.id} stopped: ${describeCause(err)}`))
    if (this.closeCalled === undefined) this.closeCalled = this.shutdown(0)
    // an ongoing close() need not wait for writes that cannot happen any more
    this.wakeIdle?.()
  }

  private abortAll(reason: unknown): void {
    for (const run of this.runs.values()) for (const h of run.held) h.abort(reason)
  }

  private async shutdown(grace: number): Promise<void> {
    this.closing = true
    this.queue.interrupt()
    this.wakeReader?.()
    this.pump() // entries not started go back to the queue now
    if (this.fatal === undefined) {
      const reason = new RunStopped(`the worker ${this.id} is closing`)
      // Infinity: never abort (no timer: Node would fire one set for Infinity after 1 ms)
      const timer =
        grace > 0 && grace !== Number.POSITIVE_INFINITY
          ? setTimeout(() => this.abortAll(reason), grace)
          : undefined
      if (grace === 0) this.abortAll(reason)
      await new Promise<void>((resolve) => {
        this.wakeIdle = resolve
        this.checkIdle()
      })
      this.wakeIdle = undefined
      clearTimeout(timer)
    }
    this.stopped = true
    this.wakeMaintenance?.()
    await this.readLoopDone
    await this.maintenanceDone
    await this.queue.close()
    if (this.fatal === undefined) this.resolveClosed()
    else this.rejectClosed(this.fatal.error)
  }
}

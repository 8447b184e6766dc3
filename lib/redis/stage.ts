/**
 * redisStage(): a kind of stage whose workers live in other processes. Inside a run it is a loop
 * pair on two lanes of the stage's port: the producer takes items from the stage's input, packs
 * them into entries and appends them under the run's capacity; the collector reads results back,
 * drops duplicates, emits them (or, with `ordered`, fills their slots in the port's reorder
 * window), and frees capacity. Both end in the run's teardown, which deletes the run's keys.
 *
 * The stage's concurrency units are its `capacity` in-flight slots, whose time it counts itself
 * (`countsUnits`): a slot is working while its item is in Redis and its result has not come back,
 * blocked while its result waits for room downstream, starved otherwise.
 * @module
 */
import { randomBytes } from 'node:crypto'
import {
  DONE,
  EMPTY,
  type Lane,
  SKIP,
  type StageKind,
  type StagePlan,
  type StagePort,
} from '../kinds/kind.js'
import { Stage } from '../stage.js'
import { SENDABLE, unsendable } from '../wire/sendable.js'
import { PackedBatch, unpack, unpackError, unpackItems } from './codec.js'
import { Connection } from './connection.js'
import { DeliveryLimitError, RunStateLostError } from './errors.js'
import {
  checkStageName,
  type RedisStageOptions,
  type ResolvedRedisStageOptions,
  resolveRedisStageOptions,
  stageDefaults,
} from './options.js'
import { KEY_TTL_MS, RedisRunQueue } from './streams.js'
import type { RunQueue } from './transport.js'

/** How long one blocking read of results waits before it is issued again. */
const READ_BLOCK_MS = 1000
/** Appends sent without waiting for the previous one's answer: round trips overlap. */
const APPENDS_IN_FLIGHT = 8

/** An entry to append: `count` items packed in `items`, the first being item `seq` of the run. */
interface Outgoing {
  seq: number
  count: number
  items: Buffer
  ends: Buffer
}

/** The kind of a Redis stage (lib/kinds/kind.ts). */
const REDIS_STAGE: StageKind<ResolvedRedisStageOptions> = {
  factory: 'redisStage',
  resolve: resolveRedisStageOptions,
  plan(o): StagePlan {
    return {
      workers: o.capacity,
      bound: o.capacity,
      qsize: o.qsize,
      ordered: o.ordered,
      countsUnits: true,
      start: (port) => void new RemoteRun(port, o).run(),
    }
  },
}

/**
 * Makes a stage whose items are processed by worker processes, on this host or others, that run
 * {@link serveStage} with the same `name`; the items travel through Redis Streams. It is a Stage
 * like any other: pipe it, `setup()` it, put local stages before and after it.
 *
 * Guarantees: at most `capacity` items of a run are in Redis at once (the pipeline stops pulling
 * its input meanwhile); every item's result reaches the next stage exactly once, even when a worker
 * dies and its items are redone elsewhere (the function itself may run more than once on an item:
 * at-least-once); an item's exception in a worker fails the run with a TaskException whose cause
 * is a {@link RemoteError}; an early break, an abort or a failure deletes everything the run put in
 * Redis and aborts `ctx.signal` for its items in the workers. Runs are isolated: two pipelines may
 * share a Redis and a stage name. A run whose state Redis lost (a server restarted without
 * persistence, a flush, a failover that missed writes) fails with a {@link RunStateLostError}
 * rather than wait or finish short. A worker of another stageline version refuses the run (it
 * fails, naming both protocol versions) rather than misread it. See docs/distributed.md.
 *
 * Its stats count `capacity` concurrency units (`workers`), the in-flight slots: `busy` is how many
 * hold an item in Redis whose result has not come back.
 *
 * Caveat: with no worker serving the stage, a run waits (items stay queued in Redis) rather than
 * failing: pass a `signal` to `results()` to give up after a while.
 *
 * @example
 * <!-- no-run: needs a Redis server -->
 * ```ts
 * import { pipe, mapStage } from 'stageline'
 * import { redisStage } from 'stageline/redis'
 * const resize = redisStage<{ path: string }, { path: string; bytes: number }>('resize', {
 *   url: 'redis://127.0.0.1:6379',
 *   capacity: 1000,
 *   visibilityTimeout: 60_000,
 * })
 * const store = mapStage(async (r: { path: string; bytes: number }) => r.bytes)
 * for await (const bytes of pipe([{ path: 'a.png' }, { path: 'b.png' }], resize, store).results()) {
 *   console.log(bytes)
 * }
 * ```
 */
export function redisStage<I, O>(
  name: string,
  options?: RedisStageOptions,
): Stage<I, O, RedisStageOptions, ResolvedRedisStageOptions> {
  const where = 'redisStage()'
  checkStageName(where, name)
  const o = REDIS_STAGE.resolve(where, stageDefaults(name), options)
  if (o.name !== name) {
    throw new TypeError(
      `${where}: the stage is named by its first argument (${JSON.stringify(name)}), and its options name it ${JSON.stringify(o.name)}: leave \`name\` out of the options, or give the same`,
    )
  }
  return new Stage(REDIS_STAGE, o)
}

/** One run of a Redis stage. */
class RemoteRun {
  private queue: RunQueue | undefined
  private main: Connection | undefined
  private readonly runId = randomBytes(9).toString('base64url')
  private readonly batch: number
  /** The producer's lane, worker 0: the lane the run's failure is reported on. */
  private readonly producer: Lane
  /** The collector's lane, worker 1. */
  private readonly collector: Lane
  /** Set once this loop has a failure to report (reported at once, or once `failing` settles). */
  private failed = false
  /** Set once the run finished without failing: its keys are being deleted. */
  private finished = false
  /**
   * Settles once the failure has been reported: after the run's keys were deleted, or once a
   * dropped connection's effect on them was looked at.
   */
  private failing: Promise<void> = Promise.resolve()
  /** The deletion of the run's keys, once begun. */
  private tornDown: Promise<void> | undefined
  private touchTimer: NodeJS.Timeout | undefined
  /** The wait for a dropped connection to come back, while one is under way. */
  private recovering: Promise<void> | undefined

  // producer
  /** Items taken and numbered (the next item's seq). */
  private numbered = 0
  /** Items Redis confirmed appending. */
  private appended = 0
  /** Entries Redis confirmed appending (an entry cut short by the script counts once). */
  private entries = 0
  /** Items in appends not answered yet, and how many such appends there are. */
  private sending = 0
  private appends = 0
  /** Items released whose release Redis confirmed: the producer's view of the room is never more than Redis's. */
  private releasedConfirmed = 0
  /** Entries cut short by the append script (only when the local view of the room was wrong). */
  private readonly leftovers: Outgoing[] = []
  private cutShort = false
  private total = -1
  private wakeProducer: (() => void) | undefined

  // collector
  /** Items whose results arrived (each counted once). */
  private received = 0
  /** Entries whose results arrived (each counted once). */
  private entriesReceived = 0
  /** Every item below this input position has arrived. */
  private low = 0
  /** Entries above `low` that arrived, by input position: their size (to tell a duplicate). */
  private readonly above = new Map<number, number>()
  private wakeCollector: (() => void) | undefined
  private releasing: Promise<void> = Promise.resolve()

  // time accounting of the `capacity` slots (see account())
  /** Results read and not yet handed on while the collector waits for room downstream. */
  private waitingRoom = 0
  /** The producer waits for room in the reorder window (`ordered`). */
  private reserving = false
  private lastWorking = -1
  private lastBlocked = -1

  constructor(
    private readonly port: StagePort,
    private readonly o: ResolvedRedisStageOptions,
  ) {
    this.batch = Math.min(o.batch, o.capacity)
    this.producer = port.lane()
    this.collector = port.lane()
  }

  async run(): Promise<void> {
    const port = this.port
    const onHalt = (): void => this.interrupt()
    port.signal.addEventListener('abort', onHalt, { once: true })
    this.account()
    try {
      this.main = await Connection.open(this.o)
      if (!port.halted) {
        this.queue = await RedisRunQueue.open(this.main, this.o.name, this.runId, this.o)
        if (!port.halted) {
          this.touchTimer = setInterval(() => this.touch(), KEY_TTL_MS / 3)
          this.touchTimer.unref()
          // a connection that dropped while no command was waiting on it fails nothing by itself:
          // once it is back, look at once whether the run's state survived whole (a server
          // restarted without persistence comes back empty, one restarted from an older snapshot
          // without writes it had acknowledged)
          this.queue.onReconnect((dropped) => {
            if (!this.stopping && !this.finished) this.recover(dropped).catch((e) => this.fatal(e, undefined))
          })
          await Promise.all([
            this.produce().catch((err) => this.fatal(err, undefined)),
            this.collect().catch((err) => this.fatal(err, undefined)),
          ])
        }
      }
    } catch (err) {
      this.fatal(err, undefined)
    } finally {
      port.signal.removeEventListener('abort', onHalt)
      clearInterval(this.touchTimer)
    }
    if (this.failed) {
      // the failure is reported once the keys are deleted, or (a dropped connection) once its
      // effect on them has been looked at: then they are deleted if they can be
      void this.failing.then(() => this.teardown())
      return
    }
    this.finished = true
    await this.teardown()
    // the producer's lane exits last: its exit closes the stage's output, once the keys are gone
    this.collector.exit()
    this.producer.exit()
  }

  /**
   * Tells the port how many of the `capacity` slots are working and blocked (the rest are
   * starved), when that changed. Working: items sent to Redis whose results have not come back.
   * Blocked: results read back that wait for room downstream (the collector waits to emit them),
   * or, with `ordered`, every slot not working while the producer waits for room in the reorder
   * window (as a local ordered stage's workers are blocked there). Called where the counts change
   * by an entry or a read of results, never per item.
   */
  private account(): void {
    const cap = this.o.capacity
    const working = Math.max(0, Math.min(cap, this.appended + this.sending - this.received))
    const blocked = this.reserving ? cap - working : Math.min(this.waitingRoom, cap - working)
    if (working === this.lastWorking && blocked === this.lastBlocked) return
    this.lastWorking = working
    this.lastBlocked = blocked
    this.port.units(working, blocked)
  }

  /** Ends both lanes, failing the run with `err` on `item` (unless it is stopping anyway). */
  private report(err: unknown, item: unknown): void {
    this.collector.exit()
    this.producer.fail(err, item)
  }

  /**
   * Reports the first failure to the run (unless it is stopping or done anyway) and wakes both
   * loops. A command that failed because the connection dropped is waited out (see recover())
   * rather than reported here, except where no retry applies: then it is reported once the
   * connection is back or given up (within about `connectTimeout`), as a RunStateLostError when
   * the run's state did not survive (a server restarted empty), else as the RedisConnectionError
   * it is.
   * Any other failure is reported once the run's keys are deleted (or after `connectTimeout`, should
   * Redis not answer), so that whoever catches the run's rejection finds nothing of it in Redis.
   */
  private fatal(err: unknown, item: unknown): void {
    if (this.failed || this.finished || this.port.halted) return
    this.failed = true
    const queue = this.queue
    if (queue === undefined) {
      this.report(this.main?.failure(err, 'could not connect to') ?? err, item)
    } else if (queue.reconnecting(err)) {
      const dropped = queue.failure(err)
      this.failing = queue.survived().then((kept) => {
        const reported =
          kept === false ? this.vanished(true, dropped) : kept ? dropped : this.main!.failure(err)
        this.report(reported, item)
      })
    } else {
      const reported = queue.failure(err)
      this.failing = waitAtMost(this.teardown(), this.o.connectTimeout).then(() =>
        this.report(reported, item),
      )
    }
    this.interrupt()
  }

  private interrupt(): void {
    this.queue?.close()
    this.wakeProducer?.()
    this.wakeCollector?.()
  }

  private get stopping(): boolean {
    return this.port.halted || this.failed
  }

  /** Extends the run's keys; fails the run if its state is gone. */
  private touch(): void {
    if (this.stopping || this.finished) return
    this.queue?.touch().then(
      (held) => {
        if (held < 0) this.fatal(this.vanished(), undefined)
      },
      (err) => this.onCommandError(err),
    )
  }

  /**
   * A command failed: on a dropped connection, waits for it to come back and then calls `retry`
   * (the command, sent again: every command of a run may be); otherwise, or should the wait
   * fail, fails the run.
   */
  private onCommandError(err: unknown, retry?: () => void): void {
    if (this.stopping || this.finished) return
    if (this.queue === undefined || !this.queue.reconnecting(err)) {
      this.fatal(err, undefined)
      return
    }
    this.recover(err).then(
      () => {
        if (!this.stopping) retry?.()
      },
      (e: unknown) => this.fatal(e, undefined),
    )
  }

  /**
   * Waits out a dropped connection (once for every command that failed on it): resolves once it
   * is back and the run's state is found whole; rejects with the run's failure otherwise. A
   * connection not back within about `connectTimeout`: a RedisConnectionError. The run's state gone
   * (a server restarted empty or flushed): a RunStateLostError. Its counters below what Redis
   * confirmed (a restart from an older snapshot, a failover to a replica that missed writes): a
   * RunStateLostError with `lostWrites`.
   */
  private recover(err: unknown): Promise<void> {
    this.recovering ??= this.waitOut(err).finally(() => {
      this.recovering = undefined
    })
    return this.recovering
  }

  private async waitOut(err: unknown): Promise<void> {
    const queue = this.queue!
    const dropped = queue.failure(err)
    const kept = await queue.survived()
    if (kept === undefined) throw this.main!.failure(err)
    if (!kept) throw this.vanished(true, dropped)
    // what Redis confirmed before the counts are asked for: a write confirmed later may have run
    // after the counts were read
    const appended = this.appended
    const released = this.releasedConfirmed
    const counts = await queue.counts()
    if (counts === null) throw this.vanished(true, dropped)
    if (counts.appended < appended || counts.released < released) {
      throw new RunStateLostError(this.o.name, this.runId, {
        reconnected: true,
        lostWrites: true,
        cause: dropped,
      })
    }
  }

  /** The run's state is gone: `reconnected` when found after a dropped connection (`cause`) came back. */
  private vanished(reconnected = false, cause?: unknown): RunStateLostError {
    return new RunStateLostError(this.o.name, this.runId, reconnected ? { reconnected, cause } : {})
  }

  /** Deletes the run's keys and closes its connections (once); never rejects. */
  private teardown(): Promise<void> {
    this.tornDown ??= this.end()
    return this.tornDown
  }

  private async end(): Promise<void> {
    try {
      await this.releasing
      if (this.queue !== undefined) await this.queue.end()
      else await this.main?.close()
    } catch {
      // the keys expire by themselves within KEY_TTL_MS
      this.queue?.close()
      this.main?.destroy()
    }
  }

  /**
   * Takes items, packs them into entries of up to `batch` items (or what `maxWait` allows), appends.
   * With `ordered`, a slot of the reorder window is reserved before each item is taken.
   */
  private async produce(): Promise<void> {
    const lane = this.producer
    const ordered = this.o.ordered
    const batch = this.batch
    const maxWait = this.o.maxWait
    const buf = new PackedBatch()
    let firstAt = 0
    let reserved = false
    // the deadline of a partial entry takes back the lane's wait: it then receives EMPTY
    let timer: NodeJS.Timeout | undefined
    const onDeadline = (): void => {
      timer = undefined
      lane.cancel()
    }
    try {
      for (;;) {
        if (ordered && !reserved) {
          const room = lane.reserve()
          if (room !== undefined) {
            this.reserving = true
            this.account()
            await room
            this.reserving = false
            this.account()
            if (this.stopping) return
          }
          reserved = true
        }
        let x = lane.take()
        if (x === EMPTY) {
          if (buf.count > 0 && maxWait === 0) {
            await this.send(buf)
            if (this.stopping) return
            continue
          }
          // with maxWait Infinity a partial entry waits for the input (no timer: Node would fire
          // one set for Infinity after 1 ms)
          if (buf.count > 0 && maxWait !== Number.POSITIVE_INFINITY) {
            timer = setTimeout(onDeadline, Math.max(0, firstAt + maxWait - performance.now()))
          }
          await lane.wait()
          if (timer !== undefined) {
            clearTimeout(timer)
            timer = undefined
          }
          if (this.stopping) return
          x = lane.received()
          if (x === EMPTY) {
            await this.send(buf)
            if (this.stopping) return
            continue
          }
        }
        if (x === DONE) {
          if (reserved) lane.release()
          break
        }
        reserved = false
        // checked before it is packed: the packer would send a function as undefined, an instance
        // of a class as a plain object
        const refused = unsendable(x)
        if (refused !== undefined) {
          this.fatal(new TypeError(`${refused}; ${SENDABLE}`), x)
          return
        }
        if (buf.count === 0) firstAt = performance.now()
        try {
          buf.add(x)
        } catch (err) {
          this.fatal(err, x)
          return
        }
        if (buf.count === batch) {
          await this.send(buf)
          if (this.stopping) return
        }
      }
    } finally {
      if (timer !== undefined) clearTimeout(timer)
    }
    // the input said DONE because the stage halted: nothing more is sent
    if (this.stopping) return
    if (buf.count > 0) {
      await this.send(buf)
      if (this.stopping) return
    }
    // wait for every append to be answered (and any entry cut short to be sent again)
    while (this.appends > 0 || this.leftovers.length > 0) {
      if (this.leftovers.length > 0) await this.resend()
      else await this.parkProducer()
      if (this.stopping) return
    }
    this.total = this.appended
    this.wakeCollector?.()
  }

  /** Numbers the batch's items and appends them as one entry. */
  private async send(buf: PackedBatch): Promise<void> {
    const { items, ends, count } = buf.take()
    const seq = this.numbered
    this.numbered += count
    while (this.leftovers.length > 0) {
      await this.resend()
      if (this.stopping) return
    }
    await this.append({ seq, count, items, ends })
  }

  /** Sends the rest of an entry cut short, once something changed (never in a tight loop). */
  private async resend(): Promise<void> {
    if (this.cutShort) {
      this.cutShort = false
      await this.parkProducer()
      if (this.stopping) return
    }
    await this.append(this.leftovers.shift()!)
  }

  /**
   * Sends an append once the room this process knows of (capacity minus items appended or being
   * appended, plus releases Redis confirmed) can take the whole entry, with at most
   * APPENDS_IN_FLIGHT appends unanswered. The script enforces the bound on the server; this view
   * never overestimates the room, so entries are not cut short in practice.
   */
  private async append(e: Outgoing): Promise<void> {
    const capacity = this.o.capacity
    while (
      this.appends >= APPENDS_IN_FLIGHT ||
      capacity - (this.appended + this.sending - this.releasedConfirmed) < e.count
    ) {
      await this.parkProducer()
      if (this.stopping) return
    }
    this.appends++
    this.sending += e.count
    this.account()
    this.dispatch(e)
  }

  /** Sends an append; one lost to a dropped connection is sent again once it is back. */
  private dispatch(e: Outgoing): void {
    this.queue!.append(e.seq, e.count, e.items, e.ends).then(
      (added) => {
        this.appends--
        this.sending -= e.count
        if (added < 0) return this.fatal(this.vanished(), undefined)
        this.appended += added
        if (added > 0) this.entries++
        if (added < e.count) {
          this.leftovers.push(rest(e, added))
          this.cutShort = true
          this.account()
        }
        this.wakeProducer?.()
        this.wakeCollector?.()
      },
      (err) => this.onCommandError(err, () => this.dispatch(e)),
    )
  }

  private parkProducer(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wakeProducer = () => {
        this.wakeProducer = undefined
        resolve()
      }
    })
  }

  /**
   * Reads results back, drops duplicates, hands them on and frees capacity. Unordered, results go
   * on through the collector's lane as they arrive; ordered, each fills its item's slot of the
   * port's reorder window (a dead-lettered item's slot is skipped), which releases them in input
   * order and never waits: room for them was reserved when their items were taken.
   */
  private async collect(): Promise<void> {
    const queue = this.queue!
    const port = this.port
    const lane = this.collector
    const ordered = this.o.ordered
    /** Results of one read to emit (unordered). */
    const out: unknown[][] = []
    for (;;) {
      if (this.total >= 0 && this.low === this.total) return
      if (this.received === this.appended) {
        // nothing in flight: wait for the producer rather than block a connection on Redis
        await new Promise<void>((resolve) => {
          this.wakeCollector = resolve
        })
        this.wakeCollector = undefined
        if (this.stopping) return
        continue
      }
      let records: Awaited<ReturnType<RunQueue['read']>>
      try {
        records = await queue.read(READ_BLOCK_MS)
      } catch (err) {
        if (this.stopping) return
        if (!queue.reconnecting(err)) throw err
        await this.recover(err)
        continue
      }
      if (this.stopping) return
      if (records === null) {
        // A second without results: make sure the run's state is still there (and extend its
        // keys), entries included. Every entry Redis confirmed appending is in the input stream
        // (queued, or held by a worker), or its results are in the output stream after the last
        // one read, or they were read: each script moves an entry from one to the next in one
        // step. Fewer than that in Redis means entries were lost while the keys stayed (a failover
        // to a replica that missed writes): their results would never come. Appends confirmed
        // after the count was asked for are not expected (they may have run after it).
        const expected = this.entries - this.entriesReceived
        let held: number
        try {
          held = await queue.touch(expected)
        } catch (err) {
          if (this.stopping || !queue.reconnecting(err)) throw err
          await this.recover(err)
          continue
        }
        if (this.stopping) return
        if (held < 0) throw this.vanished()
        if (held < expected) {
          throw new RunStateLostError(this.o.name, this.runId, { missing: expected - held })
        }
        continue
      }
      const ids = new Array<string>(records.length)
      let freed = 0
      let pending = 0
      for (let i = 0; i < records.length; i++) {
        const r = records[i]!
        ids[i] = r.id
        let values: unknown[] | number
        switch (r.kind) {
          case 'values':
            values = unpack(r.values) as unknown[]
            break
          case 'dead':
            values = r.count
            break
          case 'error':
            this.fatal(unpackError(r.error, r.seq), unpack(r.item))
            return
          case 'limit':
            this.fatal(
              new DeliveryLimitError(this.o.name, r.seq, r.count, r.deliveries, this.o.maxDeliveries),
              unpackItems(r.items).values[0],
            )
            return
        }
        const n = typeof values === 'number' ? values : values.length
        if (r.seq < this.low || this.above.has(r.seq)) continue // a duplicate: already had it
        if (r.seq === this.low) {
          this.low += n
          for (let s = this.above.get(this.low); s !== undefined; s = this.above.get(this.low)) {
            this.above.delete(this.low)
            this.low += s
          }
        } else this.above.set(r.seq, n)
        this.received += n
        this.entriesReceived++
        freed += n
        if (typeof values === 'number') {
          // dead-lettered: gone on without
          port.failed += values
          if (ordered) for (let j = 0; j < values; j++) port.fill(r.seq + j, SKIP)
        } else if (ordered) {
          for (let j = 0; j < values.length; j++) port.fill(r.seq + j, values[j])
        } else {
          out.push(values)
          pending += values.length
        }
      }
      this.account()
      for (let k = 0; k < out.length; k++) {
        const values = out[k]!
        for (let j = 0; j < values.length; j++) {
          const room = lane.emit(values[j])
          pending--
          if (room !== undefined) {
            // this one and the rest of the read wait for room downstream
            this.waitingRoom = pending + 1
            this.account()
            await room
            if (this.stopping) return
          }
        }
      }
      out.length = 0
      if (this.waitingRoom !== 0) {
        this.waitingRoom = 0
        this.account()
      }
      this.release(ids, freed)
    }
  }

  /** Deletes results read and frees capacity, without waiting: the next read goes out meanwhile. */
  private release(ids: string[], items: number): void {
    this.releasing = this.queue!.release(ids, items).then(
      () => {
        this.releasedConfirmed += items
        this.wakeProducer?.()
      },
      (err) => this.onCommandError(err, () => this.release(ids, items)),
    )
  }
}

/** The part of `e` after its first `added` items. */
function rest(e: Outgoing, added: number): Outgoing {
  if (added === 0) return e
  const cut = e.ends.readUInt32BE(4 * (added - 1))
  const ends = Buffer.allocUnsafe(4 * (e.count - added))
  for (let i = added; i < e.count; i++) ends.writeUInt32BE(e.ends.readUInt32BE(4 * i) - cut, 4 * (i - added))
  return { seq: e.seq + added, count: e.count - added, items: e.items.subarray(cut), ends }
}

/** Resolves once `p` settles or `ms` have passed, whichever is first (`p` never rejects). */
function waitAtMost(p: Promise<void>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    p.then(() => {
      clearTimeout(timer)
      resolve()
    })
  })
}

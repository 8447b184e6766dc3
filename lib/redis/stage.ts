/**
 * redisStage(): a stage whose workers live in other processes. Inside a run it is one loop pair:
 * the producer takes items from the stage's input, packs them into entries and appends them under
 * the run's capacity; the collector reads results back, drops duplicates, restores input order when
 * asked, and frees capacity. Both end in the run's teardown, which deletes the run's keys.
 * @module
 */
import { randomBytes } from 'node:crypto'
import type { Group } from '../group.js'
import {
  checkObject,
  DEFAULT_QSIZE,
  got,
  type ResolvedStageOptions,
  resolveStageOptions,
} from '../options.js'
import { type Channel, DONE, EMPTY, Waiter } from '../queue.js'
import { type RunnerFactory, Stage } from '../stage.js'
import { SENDABLE, unsendable } from '../wire/sendable.js'
import { PackedBatch, unpack, unpackError, unpackItems } from './codec.js'
import { Connection } from './connection.js'
import { DeliveryLimitError, RemoteError, RunStateLostError } from './errors.js'
import {
  checkStageName,
  REDIS_STAGE_OPTIONS,
  type RedisStageOptions,
  type ResolvedRedisOptions,
  resolveRedisOptions,
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

const DEFAULTS: ResolvedStageOptions = { workers: 1, qsize: DEFAULT_QSIZE, ordered: false, name: undefined }

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
 * rather than wait or finish short. See docs/distributed.md.
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
export function redisStage<I, O>(name: string, options?: RedisStageOptions): Stage<I, O> {
  const where = 'redisStage()'
  checkStageName(where, name)
  if (options !== undefined) checkObject(where, 'options', options)
  const o: Record<string, unknown> = { ...(options as Record<string, unknown> | undefined), name }
  const resolved = resolveStageOptions(where, DEFAULTS, o, REDIS_STAGE_OPTIONS) as ResolvedStageOptions &
    Record<string, unknown>
  for (const key of REDIS_STAGE_OPTIONS) if (o[key] !== undefined) resolved[key] = o[key]
  return new Stage<I, O>('redisStage', runner, resolved, REDIS_STAGE_OPTIONS, validate)
}

function validate(o: ResolvedStageOptions & Record<string, unknown>): void {
  const where = 'redisStage()'
  checkStageName(where, o.name)
  if (o.workers !== 1) {
    throw new TypeError(
      `${where}: \`workers\` does not apply to a Redis stage (got ${got(o.workers)}): its workers are the serveStage() processes; set \`concurrency\` there`,
    )
  }
  resolveRedisOptions(where, o)
}

const runner: RunnerFactory = (options) => {
  const o = options as ResolvedStageOptions & Record<string, unknown>
  const redis = resolveRedisOptions('redisStage()', o)
  const name = o.name as string
  return {
    // the reorder window is the collector's own: it counts against `capacity`, not qsize + workers
    ordered: false,
    launch: (g) => g.spawn((g) => new RemoteRun(g, name, redis, o.ordered).run()),
  }
}

/** One run of a Redis stage. */
class RemoteRun {
  private queue: RunQueue | undefined
  private main: Connection | undefined
  private readonly runId = randomBytes(9).toString('base64url')
  private readonly batch: number
  /** Set once this loop has a failure to report with g.fail() (reported at once, or once `failing` settles). */
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
  /** Items given back to the capacity. */
  private released = 0
  /** Every item below this input position has arrived (unordered) or been emitted (ordered). */
  private low = 0
  /** Entries above `low` that arrived: their size (unordered), or their values (ordered; a number for dead ones). */
  private readonly above = new Map<number, number | unknown[]>()
  private wakeCollector: (() => void) | undefined
  private releasing: Promise<void> = Promise.resolve()

  constructor(
    private readonly g: Group,
    private readonly stage: string,
    private readonly o: ResolvedRedisOptions,
    private readonly ordered: boolean,
  ) {
    this.batch = Math.min(o.batch, o.capacity)
  }

  async run(): Promise<void> {
    const g = this.g
    const onHalt = (): void => this.interrupt()
    g.ctl.signal.addEventListener('abort', onHalt, { once: true })
    try {
      this.main = await Connection.open(this.o)
      if (!g.halted) {
        this.queue = await RedisRunQueue.open(this.main, this.stage, this.runId, this.o)
        if (!g.halted) {
          this.touchTimer = setInterval(() => this.touch(), KEY_TTL_MS / 3)
          this.touchTimer.unref()
          // a connection that dropped while no command was waiting on it fails nothing by itself:
          // once it is back, look at once whether the run's state survived (a server restarted
          // without persistence comes back empty)
          this.queue.onReconnect((dropped) => this.touch({ dropped }))
          await Promise.all([
            this.produce().catch((err) => this.fatal(err, undefined)),
            this.collect().catch((err) => this.fatal(err, undefined)),
          ])
        }
      }
    } catch (err) {
      this.fatal(err, undefined)
    } finally {
      g.ctl.signal.removeEventListener('abort', onHalt)
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
    g.exit()
  }

  /**
   * Reports the first failure to the run (unless it is stopping or done anyway) and wakes both
   * loops. A command that failed because the connection dropped is reported once the connection
   * is back or given up (within about `connectTimeout`): as a RunStateLostError when the run's
   * state did not survive (a server restarted empty), else as the RedisConnectionError it is.
   * Any other failure is reported once the run's keys are deleted (or after `connectTimeout`, should
   * Redis not answer), so that whoever catches the run's rejection finds nothing of it in Redis.
   */
  private fatal(err: unknown, item: unknown): void {
    if (this.failed || this.finished || this.g.halted) return
    this.failed = true
    const queue = this.queue
    if (queue === undefined) {
      this.g.fail(this.main?.failure(err, 'could not connect to') ?? err, 0, item)
    } else if (queue.reconnecting(err)) {
      const dropped = queue.failure(err)
      this.failing = queue.survived().then((kept) => {
        const reported =
          kept === false ? this.vanished(true, dropped) : kept ? dropped : this.main!.failure(err)
        this.g.fail(reported, 0, item)
      })
    } else {
      const reported = queue.failure(err)
      this.failing = waitAtMost(this.teardown(), this.o.connectTimeout).then(() =>
        this.g.fail(reported, 0, item),
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
    return this.g.halted || this.failed
  }

  /**
   * Extends the run's keys; fails the run if its state is gone. `reconnect`: looked at because a
   * connection came back, having dropped with `reconnect.dropped`.
   */
  private touch(reconnect?: { dropped: unknown }): void {
    if (this.stopping || this.finished) return
    this.queue?.touch().then(
      (held) => {
        if (held >= 0) return
        this.fatal(
          reconnect === undefined ? this.vanished() : this.vanished(true, reconnect.dropped),
          undefined,
        )
      },
      (err) => this.fatal(err, undefined),
    )
  }

  /** The run's state is gone: `reconnected` when found after a dropped connection (`cause`) came back. */
  private vanished(reconnected = false, cause?: unknown): RunStateLostError {
    return new RunStateLostError(this.stage, this.runId, reconnected ? { reconnected, cause } : {})
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

  /** Takes items, packs them into entries of up to `batch` items (or what `maxWait` allows), appends. */
  private async produce(): Promise<void> {
    const g = this.g
    const input = g.input
    const w = new Waiter()
    const batch = this.batch
    const maxWait = this.o.maxWait
    const buf = new PackedBatch()
    let deadline = 0
    // an input.wait() still pending after a partial entry was sent on maxWait
    let parked: Promise<void> | undefined
    for (;;) {
      let x: unknown
      if (parked !== undefined) {
        await parked
        parked = undefined
        if (this.stopping) return
        x = w.item
        w.item = undefined
      } else {
        x = input.poll(w)
        if (x === EMPTY) {
          const p = input.wait(w)
          // with maxWait Infinity a partial entry waits for the input (no timer: Node would fire
          // one set for Infinity after 1 ms)
          if (
            buf.count > 0 &&
            maxWait !== Number.POSITIVE_INFINITY &&
            !(await settlesWithin(p, deadline - performance.now()))
          ) {
            parked = p
            await this.send(buf)
            if (this.stopping) return
            continue
          }
          await p
          if (this.stopping) return
          x = w.item
          w.item = undefined
        }
      }
      if (x === DONE) break
      g.taken++
      // checked before it is packed: the packer would send a function as undefined, an instance
      // of a class as a plain object
      const refused = unsendable(x)
      if (refused !== undefined) {
        this.fatal(new TypeError(`${refused}; ${SENDABLE}`), x)
        return
      }
      if (buf.count === 0) deadline = performance.now() + maxWait
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
    this.queue!.append(e.seq, e.count, e.items, e.ends).then(
      (added) => {
        this.appends--
        this.sending -= e.count
        if (added < 0) return this.fatal(this.vanished(), undefined)
        this.appended += added
        if (added > 0) this.entries++
        this.g.busy = this.appended - this.released
        if (added < e.count) {
          this.leftovers.push(rest(e, added))
          this.cutShort = true
        }
        this.wakeProducer?.()
        this.wakeCollector?.()
      },
      (err) => this.fatal(err, undefined),
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

  /** Reads results back, drops duplicates, emits (in order when asked), frees capacity. */
  private async collect(): Promise<void> {
    const g = this.g
    const queue = this.queue!
    const out = g.output as Channel<unknown>
    const w = new Waiter()
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
        throw err
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
        const held = await queue.touch(expected)
        if (this.stopping) return
        if (held < 0) throw this.vanished()
        if (held < expected) {
          throw new RunStateLostError(this.stage, this.runId, { missing: expected - held })
        }
        continue
      }
      const ids = new Array<string>(records.length)
      let freed = 0
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
          case 'error': {
            const info = unpackError(r.error)
            this.fatal(new RemoteError(info, info.consumer, info.attempt, r.seq), unpack(r.item))
            return
          }
          case 'limit':
            this.fatal(
              new DeliveryLimitError(this.stage, r.seq, r.count, r.deliveries, this.o.maxDeliveries),
              unpackItems(r.items).values[0],
            )
            return
        }
        const n = typeof values === 'number' ? values : values.length
        if (r.seq < this.low || this.above.has(r.seq)) continue // a duplicate: already had it
        this.received += n
        this.entriesReceived++
        if (typeof values === 'number') g.failed += values
        if (this.ordered) {
          this.above.set(r.seq, values)
          // emit every entry that is next in input order
          for (let next = this.above.get(this.low); next !== undefined; next = this.above.get(this.low)) {
            this.above.delete(this.low)
            if (typeof next === 'number') {
              this.low += next
              freed += next
              continue
            }
            this.low += next.length
            freed += next.length
            for (let j = 0; j < next.length; j++) {
              g.emitted++
              if (!out.offer(next[j])) {
                await out.put(w, next[j])
                if (this.stopping) return
              }
            }
          }
        } else {
          if (r.seq === this.low) {
            this.low += n
            for (let s = this.above.get(this.low); s !== undefined; s = this.above.get(this.low)) {
              this.above.delete(this.low)
              this.low += s as number
            }
          } else this.above.set(r.seq, n)
          freed += n
          if (typeof values === 'number') continue
          for (let j = 0; j < values.length; j++) {
            g.emitted++
            if (!out.offer(values[j])) {
              await out.put(w, values[j])
              if (this.stopping) return
            }
          }
        }
      }
      this.release(ids, freed)
    }
  }

  /** Deletes results read and frees capacity, without waiting: the next read goes out meanwhile. */
  private release(ids: string[], items: number): void {
    this.released += items
    this.g.busy = this.appended - this.released
    this.releasing = this.queue!.release(ids, items).then(
      () => {
        this.releasedConfirmed += items
        this.wakeProducer?.()
      },
      (err) => this.fatal(err, undefined),
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

/** Resolves true if `p` settles within `ms`, false otherwise (`p` is left pending, to be awaited later). */
function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
  if (ms <= 0) return Promise.resolve(false)
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(resolve, ms, false)
    p.then(() => {
      clearTimeout(timer)
      resolve(true)
    })
  })
}

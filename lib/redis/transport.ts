/**
 * The transport a distributed stage is written against: what the pipeline's side (a run's queue
 * pair) and a worker's side (the stage's work queue) need from a message engine. Redis Streams
 * implement it in streams.ts; another engine (NATS JetStream: publish, pull consumer, ack, nak,
 * in-progress, max deliver) would implement the same two interfaces and reuse the stage driver
 * (stage.ts) and the worker (serve.ts) unchanged.
 *
 * Items travel as opaque payloads grouped in entries (one Buffer holding the items' msgpack messages
 * back to back); an entry is the unit a worker receives, acknowledges, and gets redelivered.
 * @module
 */

/**
 * The version of what a run and its workers exchange: the run's metadata, its entries, its result
 * and error records. A run records the version its pipeline speaks; a worker serves only runs of
 * its own version and refuses any other (or one that records none: a run of a release before
 * versions were recorded), failing it with a message that names both, rather than misread it.
 * Raised whenever what is exchanged changes in a way the other side would misread.
 */
export const PROTOCOL_VERSION = 2

/** Settings a run publishes for the workers that serve it. */
export interface RunSettings {
  capacity: number
  batch: number
  visibilityTimeout: number
  maxDeliveries: number
  deadLetter: boolean
}

/** What a worker sent back for one entry, as the run's collector reads it. */
export type ResultRecord =
  /** The results of an entry's items, in order: one packed array. */
  | { kind: 'values'; id: string; seq: number; values: Buffer }
  /** An item's function threw: the packed error and the item's own payload. */
  | { kind: 'error'; id: string; seq: number; error: Buffer; item: Buffer }
  /** An entry exceeded maxDeliveries: its items. */
  | { kind: 'limit'; id: string; seq: number; count: number; deliveries: number; items: Buffer }
  /** An entry exceeded maxDeliveries and went to the dead-letter stream. */
  | { kind: 'dead'; id: string; seq: number; count: number }

/** The pipeline's side of one run: the run's input queue and result queue, bounded together. */
export interface RunQueue {
  /**
   * Adds, as one entry, as many of the `count` items packed in `items` (item `i` ends at offset
   * `ends.readUInt32BE(4 * i)`) as fit under the run's capacity, the first being item `seq` of the
   * run. Resolves to how many were added (0 when the run is full), or -1 when the run's keys are gone.
   * Idempotent: sent again (its answer lost with a dropped connection), it answers what it added.
   */
  append(seq: number, count: number, items: Buffer, ends: Buffer): Promise<number>
  /**
   * The run's monotonic counters as the engine holds them: items ever appended, items ever
   * released; null when the run's state is gone. Below what the engine confirmed to this process,
   * they tell acknowledged writes lost (a restart from an older snapshot, a failover to a replica
   * that missed them).
   */
  counts(): Promise<{ appended: number; released: number } | null>
  /** Waits up to `blockMs` for results after the last one read; null when none came. */
  read(blockMs: number): Promise<ResultRecord[] | null>
  /** Deletes results read (`ids`) and gives `items` back to the run's capacity; idempotent likewise. */
  release(ids: readonly string[], items: number): Promise<void>
  /**
   * Extends the expiry of the run's keys and counts the run's entries the engine holds: those
   * queued or being worked on, plus results after the last one read (counted up to `expected`,
   * none by default). -1 when the run's state is gone (its keys, its input stream or its
   * consumer group): the engine lost it, or it was deleted.
   */
  touch(expected?: number): Promise<number>
  /**
   * Calls `fn` each time a connection of the run comes back after dropping, with the error the
   * drop gave (in the words failure() would use).
   */
  onReconnect(fn: (dropped: unknown) => void): void
  /** Whether `err`, a command's failure, is a dropped connection that is being re-established. */
  reconnecting(err: unknown): boolean
  /**
   * After a command failed on a dropped connection: waits for the connection to come back (about
   * `connectTimeout` at most) and says whether the run's state is still in the engine: true, false
   * when it is gone (a server restarted empty, or flushed), undefined when that cannot be told
   * (the connection did not come back).
   */
  survived(): Promise<boolean | undefined>
  /** Deletes everything the run left in the engine and tells the workers it ended. */
  end(): Promise<void>
  /** Makes a pending read() reject or return at once, and closes the connections. */
  close(): void
  /** Reports an error of the underlying connection in the words the user should see. */
  failure(err: unknown): unknown
}

/** A run as a worker sees it. */
export interface RunInfo extends RunSettings {
  runId: string
  /**
   * The protocol version the run's pipeline speaks, as the run recorded it; undefined for a run
   * that recorded none (a release before versions were recorded). The settings are read as this
   * version writes them: only for a run of {@link PROTOCOL_VERSION} may they be relied on.
   */
  version: string | undefined
}

/** An entry handed to a worker. */
export interface Delivery {
  runId: string
  id: string
  /** The run's input position of the entry's first item. */
  seq: number
  /** Deliveries made before this entry was put back in the queue (a closing worker's entries). */
  prior: number
  /** How many times the engine has delivered this entry (1 on the first delivery). */
  deliveries: number
  /** How many items the entry holds. */
  count: number
  /** The items' msgpack messages back to back. */
  items: Buffer
}

/** The worker's side: every run of one stage. */
export interface WorkQueue {
  /** The runs alive now. */
  runs(): Promise<RunInfo[]>
  /** Calls `fn('+', runId)` when a run starts and `fn('-', runId)` when one ends; resolves once listening. */
  onRunEvent(fn: (event: '+' | '-', runId: string) => void): Promise<void>
  /** Forgets what the queue kept about a run that ended (a reclaim cursor). */
  forget(runId: string): void
  /**
   * Waits up to `blockMs` for new entries of the given runs, at most `count` per run. Rejects with
   * a {@link RunGone} when the queue of one of them is gone.
   */
  read(runIds: readonly string[], count: number, blockMs: number): Promise<Delivery[] | null>
  /** Makes a pending read() return early. */
  interrupt(): void
  /**
   * For each entry of the run, writes its results (packed) for the run, then acknowledges and
   * deletes the entry; skips those another worker completed already. Resolves to how many were
   * completed here, -1 when the run is gone.
   */
  complete(runId: string, done: readonly (readonly [Delivery, Buffer])[]): Promise<number>
  /** Sends an item's failure (and the item's own payload) to the run; the entry stays held. */
  report(d: Delivery, seq: number, error: Buffer, item: Buffer): Promise<void>
  /**
   * Fails a run this worker will not serve (it speaks another protocol version): sends it an error
   * record for no item (`seq` -1, `item` the payload a reader takes for the item), without reading
   * any of its entries. Resolves to false when the run is gone.
   */
  refuse(runId: string, error: Buffer, item: Buffer): Promise<boolean>
  /**
   * Renews the lease on entries of a run still being worked on; resolves to the ids this worker
   * lost, or null when the run's queue is gone (its run ended, or the engine lost it).
   */
  renew(runId: string, ids: readonly string[]): Promise<string[] | null>
  /**
   * Takes over up to `count` entries of a run whose holders were silent for `minIdle` ms; null when
   * the run's queue is gone.
   */
  reclaim(runId: string, minIdle: number, count: number): Promise<Delivery[] | null>
  /** Puts an entry back at the end of its run's queue for another worker (`attempts` deliveries so far). */
  requeue(d: Delivery, attempts: number): Promise<void>
  /** Takes an entry past maxDeliveries out of the queue: to the dead-letter stream, or as a failure of the run. */
  expire(d: Delivery, attempts: number, deadLetter: boolean): Promise<void>
  /** Closes the connections. */
  close(): Promise<void>
  /** Reports an error of the underlying connection in the words the user should see. */
  failure(err: unknown): unknown
  /** False once a connection is gone for good (it may be reconnecting while true). */
  readonly alive: boolean
}

/**
 * What WorkQueue.read() rejects with when the queue of one of the runs read is gone from the
 * engine: the run ended meanwhile, or the engine lost it (restarted empty, flushed). `runId` is
 * the run, when the engine said which.
 */
export class RunGone extends Error {
  override name = 'RunGone'
  constructor(
    readonly runId: string | undefined,
    cause: unknown,
  ) {
    super(`the queue of ${runId === undefined ? 'a run' : `run ${runId}`} is gone`, { cause })
  }
}

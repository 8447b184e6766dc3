/**
 * The error classes of the Redis transport. Like the core's, each keeps what it wraps as `cause`.
 * @module
 */

/**
 * What a worker sends back when a stage function throws: the thrown error's name, message and stack.
 *
 * @example
 * ```ts
 * import type { RemoteErrorInfo } from 'stageline/redis'
 * // what a worker sends back when its function throws, and how it reads once rebuilt
 * const info: RemoteErrorInfo = { name: 'TypeError', message: 'bad size', code: 'E_SIZE' }
 * console.log(`${info.name}: ${info.message} (${info.code})`) // TypeError: bad size (E_SIZE)
 * ```
 */
export interface RemoteErrorInfo {
  name: string
  message: string
  stack?: string | undefined
  /** The error's `code` property, when it had a string or number one (`'ENOENT'`, 404). */
  code?: string | number | undefined
}

/**
 * An error thrown by a stage function in a worker process, rebuilt in the pipeline's process.
 * It becomes the `cause` of the run's {@link TaskException}, so the run reads like a local failure.
 *
 * `name`, `message` and `stack` are the remote error's own (a remote `TypeError` arrives with
 * `name === 'TypeError'`): test for it with `instanceof RemoteError`. Its other own properties that
 * can be sent (`code`, `status`, ...) come along, and its `cause`, rebuilt, to a depth of 8: the
 * error crosses in the form a thread stage's errors cross in. `consumer` names the worker process
 * (`host:pid:random`), `attempt` the delivery it failed on, `seq` the item's input position.
 *
 * A worker also fails a run it will not serve, one started by a pipeline that speaks another
 * version of stageline's Redis protocol: its RemoteError names both versions, with `seq` -1 and
 * `attempt` 0 (no item's failure).
 *
 * @example
 * <!-- no-run: needs a Redis server -->
 * ```ts
 * import { pipe, TaskException } from 'stageline'
 * import { redisStage, RemoteError } from 'stageline/redis'
 * try {
 *   await pipe([1, 2, 3], redisStage<number, number>('check', { url: 'redis://127.0.0.1:6379' })).toArray()
 * } catch (err) {
 *   if (err instanceof TaskException && err.cause instanceof RemoteError) {
 *     console.log(err.cause.consumer, err.cause.name, err.cause.message, err.item)
 *   }
 * }
 * ```
 */
export class RemoteError extends Error {
  /** The worker process that ran the item: `host:pid:random`. */
  readonly consumer: string
  /** The delivery of the item's entry this failure happened on (1 for the first); 0 when no item's. */
  readonly attempt: number
  /** The item's 0-based position in the run's input; -1 when the failure is no item's. */
  readonly seq: number
  /** The remote error's `code`, when it had one. */
  readonly code: string | number | undefined

  constructor(info: RemoteErrorInfo, consumer: string, attempt: number, seq: number) {
    super(info.message)
    this.name = info.name
    this.consumer = consumer
    this.attempt = attempt
    this.seq = seq
    this.code = info.code
    this.stack = info.stack ?? `${info.name}: ${info.message}`
  }
}

/**
 * The cause of a run's failure when an entry of items was delivered more than `maxDeliveries`
 * times (its workers crashed or stalled past `visibilityTimeout` each time) and no dead-letter
 * stream was configured.
 *
 * @example
 * ```ts
 * import { DeliveryLimitError } from 'stageline/redis'
 * const err = new DeliveryLimitError('resize', 12, 3, 4, 3)
 * // err.message: 'stage "resize": the entry holding items 12..14 was delivered 4 times (maxDeliveries: 3)'
 * ```
 */
export class DeliveryLimitError extends Error {
  override name = 'DeliveryLimitError'
  constructor(
    /** The stage's name. */
    readonly stage: string,
    /** The input position of the entry's first item. */
    readonly seq: number,
    /** How many items the entry holds. */
    readonly count: number,
    /** Deliveries made, counting the one that found the limit exceeded. */
    readonly deliveries: number,
    /** The stage's `maxDeliveries`. */
    readonly maxDeliveries: number,
  ) {
    const items = count === 1 ? `item ${seq}` : `items ${seq}..${seq + count - 1}`
    super(
      `stage "${stage}": the entry holding ${items} was delivered ${deliveries} times (maxDeliveries: ${maxDeliveries})`,
    )
  }
}

/**
 * The cause of a run's failure when Redis lost what the run kept there, so that whether its items
 * completed cannot be known: the run fails rather than wait forever or finish short. Either its
 * state vanished whole (its keys, its input stream or its consumer group are gone: a server
 * restarted without persistence, `FLUSHALL`/`FLUSHDB`, keys deleted, or expired while the
 * pipeline's process was unresponsive), or `missing` of its entries did while its keys stayed (a
 * restart from an older snapshot, a failover to a replica that missed writes). When the loss was
 * found on reconnecting after a dropped connection, `cause` is the error the drop gave.
 *
 * @example
 * ```ts
 * import { RunStateLostError } from 'stageline/redis'
 * const err = new RunStateLostError('resize', 'Kd3x9Qa1', { reconnected: true })
 * // err.message: 'stage "resize": the state of run Kd3x9Qa1 vanished from Redis while the
 * // connection was down (was the server restarted, or flushed?); whether its items completed
 * // cannot be known'
 * console.log(err.name, err.stage, err.runId)
 * ```
 */
export class RunStateLostError extends Error {
  override name = 'RunStateLostError'
  /** How many of the run's entries are gone while its keys are there; undefined when its state vanished whole. */
  readonly missing: number | undefined
  /** Whether the loss was found on reconnecting after the connection dropped. */
  readonly reconnected: boolean
  /**
   * Whether writes Redis had acknowledged are gone while the run's keys stayed: its counters of
   * items appended and released are below what it confirmed (a restart from an older snapshot, a
   * failover to a replica that had not received them).
   */
  readonly lostWrites: boolean
  constructor(
    /** The stage's name. */
    readonly stage: string,
    /** The run's id (its keys are `stageline:{<stage>}:<runId>:*`). */
    readonly runId: string,
    options: { missing?: number; reconnected?: boolean; lostWrites?: boolean; cause?: unknown } = {},
  ) {
    const { missing, reconnected = false, lostWrites = false } = options
    const what = lostWrites
      ? `writes of run ${runId} that Redis had acknowledged are gone after the connection came back (was the server restarted from an older snapshot, or failed over to a replica that missed them?); whether its items completed cannot be known`
      : missing === undefined
        ? `the state of run ${runId} vanished from Redis ${
            reconnected
              ? 'while the connection was down (was the server restarted, or flushed?)'
              : '(was the server restarted or flushed, were its keys deleted, or did they expire while this process was unresponsive?)'
          }; whether its items completed cannot be known`
        : `${missing} ${missing === 1 ? 'entry' : 'entries'} of run ${runId} vanished from Redis (was the server restarted from an older snapshot, or failed over to a replica that missed writes?); their items cannot complete`
    super(`stage "${stage}": ${what}`, 'cause' in options ? { cause: options.cause } : undefined)
    this.missing = missing
    this.reconnected = reconnected
    this.lostWrites = lostWrites
  }
}

/**
 * Connecting to Redis failed for good: the server is unreachable, refused the credentials, or the
 * connection was lost and could not be re-established within `connectTimeout`. The message names
 * the server with any password replaced by `***`; `cause` is the client's last error.
 *
 * @example
 * <!-- no-run: needs a Redis server -->
 * ```ts
 * import { serveStage, RedisConnectionError } from 'stageline/redis'
 * try {
 *   await serveStage('resize', { url: 'redis://:wrong@127.0.0.1:6379' }, (x: number) => x)
 * } catch (err) {
 *   if (err instanceof RedisConnectionError) console.error(err.message) // no password in it
 * }
 * ```
 */
export class RedisConnectionError extends Error {
  override name = 'RedisConnectionError'
  constructor(
    message: string,
    /** The server as given, with any password replaced by `***`. */
    readonly server: string,
    cause: unknown,
  ) {
    super(message, { cause })
  }
}

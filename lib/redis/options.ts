/**
 * Options of redisStage() and serveStage(), their defaults, and eager validation with messages
 * that name the option, the value, its type and what is allowed.
 * @module
 */
import type { RedisClientOptions } from 'redis'
import {
  checkBoolean,
  checkInteger,
  checkMs,
  checkObject,
  got,
  MAX_CAPACITY,
  MAX_WORKERS,
} from '../options.js'

/**
 * Client options passed to node-redis's `createClient()` as they are: `username`, `password`,
 * `database`, `name`, `socket` (TLS: `{ tls: true, ca, cert, key }`; a unix socket: `{ path }`), ...
 * Three are set by stageline: `url` (the `url` option), `RESP` (always 3) and, unless you give your
 * own, `socket.reconnectStrategy` (one that gives up after `connectTimeout`).
 *
 * @example
 * ```ts
 * import { redisStage, type RedisClientConfig } from 'stageline/redis'
 * const client: RedisClientConfig = { username: 'pipeline', password: 'secret', database: 2 }
 * // nothing connects until a run of the pipeline starts
 * const hash = redisStage<string, string>('hash', { url: 'redis://cache.internal:6379', client })
 * console.log(hash.name) // hash
 * ```
 */
export type RedisClientConfig = Omit<RedisClientOptions, 'url' | 'RESP'>

/**
 * How to reach Redis: what redisStage() and serveStage() have in common.
 *
 * @example
 * ```ts
 * import type { RedisConnectionOptions } from 'stageline/redis'
 * // the same connection for the pipeline's stage and for the workers that serve it
 * const redis: RedisConnectionOptions = { url: 'redis://127.0.0.1:6379/0', connectTimeout: 10_000 }
 * console.log(redis.connectTimeout) // 10000
 * ```
 */
export interface RedisConnectionOptions {
  /**
   * The server: `redis[s]://[[username][:password]@][host][:port][/db-number]`. Errors show it
   * with the password replaced by `***`; the stage's `options` keep it as given, so do not log
   * those.
   * @default 'redis://127.0.0.1:6379'
   */
  url?: string
  /** Further node-redis client options (TLS, auth, database): see {@link RedisClientConfig}. */
  client?: RedisClientConfig
  /**
   * How long, in ms, connecting may take before the run fails, or serveStage() rejects, with a
   * `RedisConnectionError`; a refused password fails at once. A connection that drops during
   * a run fails the run (whether its last commands took effect cannot be known) once it is back,
   * or after this long: with a `RunStateLostError` if the run's state did not survive (a server
   * restarted without persistence), else a `RedisConnectionError`. A worker reconnects, and stops
   * (`closed` rejects) if that takes longer than this.
   * @default 5000
   */
  connectTimeout?: number
}

/**
 * Options of {@link redisStage}.
 *
 * @example
 * ```ts
 * import { redisStage, type RedisStageOptions } from 'stageline/redis'
 * const options: RedisStageOptions = { capacity: 5_000, batch: 50, visibilityTimeout: 120_000, ordered: true }
 * const transcode = redisStage<{ file: string }, { file: string; ok: boolean }>('transcode', options)
 * console.log(transcode.options.ordered) // true
 * ```
 */
export interface RedisStageOptions extends RedisConnectionOptions {
  /**
   * Items of one run that may be in Redis at once, waiting for a worker, being worked on, or
   * finished and not yet read back: the stage's bound, like `qsize` for a local stage. The
   * pipeline stops pulling its input while it is reached. At most 2^31 - 1 (`MAX_CAPACITY`).
   * @default 1000
   */
  capacity?: number
  /**
   * Items per stream entry: the unit a worker reads, acknowledges and gets redelivered. Larger
   * entries cost fewer round trips; every item of an entry is redone when its worker dies.
   * @default 100
   */
  batch?: number
  /**
   * How long, in ms, a partly filled entry waits for more items before it is sent anyway (only
   * when the input has nothing ready: a fast source fills entries without waiting). `Infinity`:
   * an entry waits until it is full or the input ends.
   * @default 5
   */
  maxWait?: number
  /**
   * How long, in ms, a worker may go without a sign of life before the entries it holds are
   * handed to another worker. Live workers renew their entries every third of it, however long
   * an item takes.
   * @default 30000
   */
  visibilityTimeout?: number
  /**
   * How many times an entry may be delivered (first delivery included) before its items fail the
   * run with a {@link DeliveryLimitError}, or go to the dead-letter stream with `deadLetter`.
   * @default 5
   */
  maxDeliveries?: number
  /**
   * Move entries past `maxDeliveries` to the stream `stageline:{<name>}:dead` (kept, never expired)
   * and go on without their items, instead of failing the run.
   * @default false
   */
  deadLetter?: boolean
  /**
   * Emit results in input order rather than completion order. The reorder window counts against
   * `capacity`.
   * @default false
   */
  ordered?: boolean
  /**
   * Capacity of the stage's local output queue (results read back from Redis, waiting for the
   * next stage).
   * @default 64
   */
  qsize?: number
}

/**
 * Options of {@link serveStage}.
 *
 * @example
 * ```ts
 * import type { ServeOptions } from 'stageline/redis'
 * // in a worker process: serveStage('transcode', options, fn) runs 4 items at a time
 * const options: ServeOptions = { concurrency: 4, url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' }
 * console.log(options.concurrency) // 4
 * ```
 */
export interface ServeOptions extends RedisConnectionOptions {
  /**
   * How many items this worker process runs the function on at once, from 1 to
   * 10,000 (`MAX_WORKERS`).
   * @default 1
   */
  concurrency?: number
}

export const STAGE_DEFAULTS = {
  url: 'redis://127.0.0.1:6379',
  capacity: 1000,
  batch: 100,
  maxWait: 5,
  visibilityTimeout: 30_000,
  maxDeliveries: 5,
  deadLetter: false,
  connectTimeout: 5000,
} as const

/** The largest `batch`: a stream entry's fields are spread onto Lua's C stack (8000 slots). */
export const MAX_BATCH = 1000
/** The smallest `visibilityTimeout`: renewals run every third of it. */
export const MIN_VISIBILITY_MS = 30

/** The validated Redis-specific options of a stage. */
export interface ResolvedRedisOptions {
  url: string
  client: RedisClientConfig | undefined
  connectTimeout: number
  capacity: number
  batch: number
  maxWait: number
  visibilityTimeout: number
  maxDeliveries: number
  deadLetter: boolean
}

export const REDIS_STAGE_OPTIONS: ReadonlySet<string> = new Set([
  'url',
  'client',
  'connectTimeout',
  'capacity',
  'batch',
  'maxWait',
  'visibilityTimeout',
  'maxDeliveries',
  'deadLetter',
])

/** Validates a stage name used in Redis key names: it goes inside a `{hash tag}`. */
export function checkStageName(where: string, name: unknown): string {
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`${where}: expected \`name\` to be a non-empty string, got ${got(name)}`)
  }
  if (/[{}]/.test(name) || name.length > 200) {
    throw new RangeError(
      `${where}: expected \`name\` to have at most 200 characters and no \`{\` or \`}\` (it is the Redis Cluster hash tag of the stage's keys), got ${got(name)}`,
    )
  }
  return name
}

function checkUrl(where: string, value: unknown): string {
  if (typeof value !== 'string') {
    throw new TypeError(
      `${where}: expected \`url\` to be a redis:// or rediss:// URL string, got ${got(value)}`,
    )
  }
  let protocol: string
  try {
    protocol = new URL(value).protocol
  } catch {
    throw new TypeError(
      `${where}: expected \`url\` to be a redis:// or rediss:// URL string, got ${got(redactUrl(value))}`,
    )
  }
  if (protocol !== 'redis:' && protocol !== 'rediss:') {
    throw new TypeError(
      `${where}: expected \`url\` to be a redis:// or rediss:// URL string, got ${got(redactUrl(value))}`,
    )
  }
  return value
}

/** Replaces the password in a URL with `***`, so it can go into a message. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, '$1***@')
}

/** Validates the connection options shared by both sides. */
export function resolveConnection(
  where: string,
  o: Record<string, unknown>,
): Pick<ResolvedRedisOptions, 'url' | 'client' | 'connectTimeout'> {
  const url = o.url === undefined ? STAGE_DEFAULTS.url : checkUrl(where, o.url)
  let client: RedisClientConfig | undefined
  if (o.client !== undefined) {
    checkObject(where, 'client', o.client)
    if ('url' in (o.client as object)) {
      throw new TypeError(`${where}: give the server as the \`url\` option, not as \`client.url\``)
    }
    client = o.client as RedisClientConfig
  }
  const connectTimeout =
    o.connectTimeout === undefined
      ? STAGE_DEFAULTS.connectTimeout
      : checkMs(where, 'connectTimeout', o.connectTimeout, { min: 1 })
  return { url, client, connectTimeout }
}

/** Validates the Redis-specific options of a stage (the common ones are resolveStageOptions' job). */
export function resolveRedisOptions(where: string, o: Record<string, unknown>): ResolvedRedisOptions {
  const conn = resolveConnection(where, o)
  return {
    ...conn,
    capacity:
      o.capacity === undefined
        ? STAGE_DEFAULTS.capacity
        : checkInteger(where, 'capacity', o.capacity, 1, false, MAX_CAPACITY),
    batch: o.batch === undefined ? STAGE_DEFAULTS.batch : checkBatch(where, o.batch),
    maxWait:
      o.maxWait === undefined
        ? STAGE_DEFAULTS.maxWait
        : checkMs(where, 'maxWait', o.maxWait, { infinity: true }),
    visibilityTimeout:
      o.visibilityTimeout === undefined
        ? STAGE_DEFAULTS.visibilityTimeout
        : checkMs(where, 'visibilityTimeout', o.visibilityTimeout, { min: MIN_VISIBILITY_MS }),
    maxDeliveries:
      o.maxDeliveries === undefined
        ? STAGE_DEFAULTS.maxDeliveries
        : checkInteger(where, 'maxDeliveries', o.maxDeliveries, 1, false),
    deadLetter:
      o.deadLetter === undefined
        ? STAGE_DEFAULTS.deadLetter
        : checkBoolean(where, 'deadLetter', o.deadLetter),
  }
}

function checkBatch(where: string, value: unknown): number {
  const n = checkInteger(where, 'batch', value, 1, false)
  if (n > MAX_BATCH) {
    throw new RangeError(
      `${where}: expected \`batch\` to be an integer from 1 to ${MAX_BATCH}, got ${got(value)}`,
    )
  }
  return n
}

const SERVE_OPTIONS = new Set(['url', 'client', 'connectTimeout', 'concurrency'])

/** Validates serveStage()'s options. */
export function resolveServeOptions(
  where: string,
  options: unknown,
): Pick<ResolvedRedisOptions, 'url' | 'client' | 'connectTimeout'> & { concurrency: number } {
  if (options === undefined) options = {}
  checkObject(where, 'options', options)
  const o = options as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!SERVE_OPTIONS.has(key)) {
      const allowed = [...SERVE_OPTIONS].map((k) => `\`${k}\``).join(', ')
      throw new TypeError(`${where}: unknown option \`${key}\`; the options are ${allowed}`)
    }
  }
  return {
    ...resolveConnection(where, o),
    concurrency:
      o.concurrency === undefined
        ? 1
        : checkInteger(where, 'concurrency', o.concurrency, 1, false, MAX_WORKERS),
  }
}

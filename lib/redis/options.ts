/**
 * Options of redisStage() and serveStage(), their defaults, and their schemas: both are checked
 * by the one validator (lib/options/check.ts), whose messages name the option, the value, its type
 * and what is allowed.
 * @module
 */
import type { RedisClientOptions, RedisClusterOptions } from 'redis'
import {
  boolean,
  type Checker,
  checkInteger,
  checkObject,
  got,
  integer,
  ms,
  type Schema,
  validateOptions,
} from '../options/check.js'
import { DEFAULT_QSIZE, MAX_CAPACITY, MAX_WORKERS } from '../options/limits.js'
import { type ResolvedStageOptions, STAGE_SCHEMA } from '../options/stage.js'

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
 * A Redis Cluster to connect to, passed to node-redis's `createCluster()` as it is: `rootNodes`
 * (some of the cluster's nodes, e.g. `[{ url: 'redis://10.0.0.1:7000' }]`), `defaults` (options of
 * every node's client: `username`, `password`, `socket: { tls: true, ca, ... }`), and any other
 * cluster option. stageline sets `RESP` (always 3) and, unless `defaults.socket` gives its own,
 * `defaults.socket.reconnectStrategy` and `defaults.socket.connectTimeout`.
 *
 * Every key of a stage carries the stage's name as its hash tag (`stageline:{<name>}:...`), so a
 * stage lives in one slot, on one master: spread the load across masters with several stages.
 *
 * @example
 * ```ts
 * import { redisStage, type RedisClusterConfig } from 'stageline/redis'
 * const cluster: RedisClusterConfig = {
 *   rootNodes: [{ url: 'redis://10.0.0.1:7000' }, { url: 'redis://10.0.0.2:7000' }],
 *   defaults: { password: 'secret' },
 * }
 * const resize = redisStage<string, string>('resize', { cluster })
 * console.log(resize.options.cluster?.rootNodes.length) // 2
 * ```
 */
export type RedisClusterConfig = Omit<RedisClusterOptions, 'RESP'>

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
   * A Redis Cluster instead of one server (`url` and `client` are then refused): see
   * {@link RedisClusterConfig}.
   */
  cluster?: RedisClusterConfig
  /**
   * How long, in ms, connecting may take before the run fails, or serveStage() rejects, with a
   * `RedisConnectionError`; a refused password or a failed TLS handshake fails at once. A
   * connection that drops during a run is waited out for this long (a server restarted with its
   * data, a cluster failing over), and what was not answered is sent again; longer, the run fails
   * with a `RedisConnectionError`. Should the run's state not have survived whole (a server
   * restarted without persistence, or from an older snapshot), it fails with a
   * `RunStateLostError`. A worker reconnects, and stops (`closed` rejects) if that takes longer
   * than this.
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
   * Emit results in input order rather than completion order. Results wait for the earlier ones in
   * the stage's reorder window, which holds `qsize + capacity` items, as a local stage's holds
   * `qsize + workers`: the stage takes an item only once the window has room for it, so the
   * pipeline reads at most `qsize + capacity` items ahead of its consumer.
   * @default false
   */
  ordered?: boolean
  /**
   * Capacity of the stage's local output queue (results read back from Redis, waiting for the
   * next stage).
   * @default 64
   */
  qsize?: number
  /**
   * The stage's name, in Redis and in errors and stats: the `name` given to redisStage(), which
   * workers serve with serveStage(). `setup({ name })` makes a stage served under another name.
   */
  name?: string
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

/** The defaults of the Redis options of a stage. */
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
  cluster: RedisClusterConfig | undefined
  connectTimeout: number
  capacity: number
  batch: number
  maxWait: number
  visibilityTimeout: number
  maxDeliveries: number
  deadLetter: boolean
}

/**
 * The checked, complete options of a Redis stage, as `stage.options` shows them. `workers` is
 * `capacity`: a Redis stage's concurrency units are its in-flight slots (its workers are the
 * serveStage() processes, wherever they run).
 *
 * @example
 * ```ts
 * import { redisStage, type ResolvedRedisStageOptions } from 'stageline/redis'
 * const o: ResolvedRedisStageOptions = redisStage('resize', { capacity: 50 }).options
 * console.log(o.name, o.capacity, o.workers, o.batch) // resize 50 50 100
 * ```
 */
export interface ResolvedRedisStageOptions extends ResolvedStageOptions, ResolvedRedisOptions {
  name: string
}

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

const url: Checker = (where, option, value) => {
  const allowed = `${where}: expected \`${option}\` to be a redis:// or rediss:// URL string, got`
  if (typeof value !== 'string') throw new TypeError(`${allowed} ${got(value)}`)
  let protocol: string
  try {
    protocol = new URL(value).protocol
  } catch {
    throw new TypeError(`${allowed} ${got(redactUrl(value))}`)
  }
  if (protocol !== 'redis:' && protocol !== 'rediss:')
    throw new TypeError(`${allowed} ${got(redactUrl(value))}`)
  return value
}

const client: Checker = (where, option, value) => {
  checkObject(where, option, value)
  if ('url' in (value as object)) {
    throw new TypeError(`${where}: give the server as the \`url\` option, not as \`client.url\``)
  }
  return value
}

const cluster: Checker = (where, option, value) => {
  checkObject(where, option, value)
  const nodes = (value as { rootNodes?: unknown }).rootNodes
  if (
    !Array.isArray(nodes) ||
    nodes.length === 0 ||
    !nodes.every((n) => typeof n === 'object' && n !== null)
  ) {
    throw new TypeError(
      `${where}: expected \`${option}.rootNodes\` to be a non-empty array of node options ({ url: 'redis://host:port' }), got ${Array.isArray(nodes) && nodes.length === 0 ? 'an empty array' : got(nodes)}`,
    )
  }
  for (const n of nodes as { url?: unknown }[])
    if (n.url !== undefined) url(where, `${option}.rootNodes[].url`, n.url)
  return value
}

/** Refuses `cluster` given together with `url` or `client`. */
function checkClusterAlone(where: string, options: unknown): void {
  if (typeof options !== 'object' || options === null) return
  const o = options as Record<string, unknown>
  if (o.cluster === undefined) return
  for (const other of ['url', 'client']) {
    if (o[other] !== undefined) {
      throw new TypeError(
        `${where}: give either \`cluster\` or \`${other}\`, not both: a cluster's nodes are its \`rootNodes\`, and options of every node's client go in \`cluster.defaults\``,
      )
    }
  }
}

const batch: Checker = (where, option, value) => {
  const n = checkInteger(where, option, value, 1, false)
  if (n > MAX_BATCH) {
    throw new RangeError(
      `${where}: expected \`${option}\` to be an integer from 1 to ${MAX_BATCH}, got ${got(value)}`,
    )
  }
  return n
}

/** Replaces the password in a URL with `***`, so it can go into a message. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, '$1***@')
}

/** The connection options both sides take. */
const CONNECTION_SCHEMA: Schema = {
  url,
  client,
  cluster,
  connectTimeout: ms({ min: 1 }),
}

/** The options of redisStage() and its setup(): the Redis ones plus `ordered`, `qsize` and `name`. */
const REDIS_STAGE_SCHEMA: Schema = {
  ...CONNECTION_SCHEMA,
  capacity: integer(1, MAX_CAPACITY),
  batch,
  maxWait: ms({ infinity: true }),
  visibilityTimeout: ms({ min: MIN_VISIBILITY_MS }),
  maxDeliveries: integer(1),
  deadLetter: boolean,
  ordered: STAGE_SCHEMA.ordered!,
  qsize: STAGE_SCHEMA.qsize!,
  name: (where, _option, value) => checkStageName(where, value),
}

/** The defaults of a Redis stage named `name`. */
export function stageDefaults(name: string): ResolvedRedisStageOptions {
  return {
    ...STAGE_DEFAULTS,
    client: undefined,
    cluster: undefined,
    workers: STAGE_DEFAULTS.capacity,
    qsize: DEFAULT_QSIZE,
    ordered: false,
    name,
  }
}

/**
 * Checks `options` given to redisStage() or to a Redis stage's setup() (`where` names which),
 * merged over `base`, and returns the complete options. `workers` is refused: it is not a Redis
 * stage's to set.
 */
export function resolveRedisStageOptions(
  where: string,
  base: ResolvedRedisStageOptions,
  options: unknown,
): ResolvedRedisStageOptions {
  if (options !== undefined) {
    checkObject(where, 'options', options)
    if (Object.hasOwn(options as object, 'workers')) {
      throw new TypeError(
        `${where}: \`workers\` does not apply to a Redis stage (got ${got((options as { workers: unknown }).workers)}): ` +
          'its workers are the serveStage() processes (set `concurrency` there), and its concurrency here is ' +
          '`capacity`, the items of a run it may have in Redis at once',
      )
    }
  }
  checkClusterAlone(where, options)
  const o = { ...base, ...validateOptions(where, options, REDIS_STAGE_SCHEMA) } as ResolvedRedisStageOptions
  o.workers = o.capacity
  return o
}

const SERVE_SCHEMA: Schema = {
  ...CONNECTION_SCHEMA,
  concurrency: integer(1, MAX_WORKERS),
}

/** The checked options of serveStage(). */
export type ResolvedServeOptions = Pick<
  ResolvedRedisOptions,
  'url' | 'client' | 'cluster' | 'connectTimeout'
> & {
  concurrency: number
}

/** Validates serveStage()'s options. */
export function resolveServeOptions(where: string, options: unknown): ResolvedServeOptions {
  if (options !== undefined) checkObject(where, 'options', options)
  checkClusterAlone(where, options)
  return {
    url: STAGE_DEFAULTS.url,
    client: undefined,
    cluster: undefined,
    connectTimeout: STAGE_DEFAULTS.connectTimeout,
    concurrency: 1,
    ...validateOptions(where, options, SERVE_SCHEMA),
  }
}

/**
 * Opening node-redis clients the way the transport needs them: RESP3, an 'error' listener always
 * attached (a client without one crashes the process), a reconnect strategy that gives up (the
 * default retries forever and `connect()` never settles), errors that never show the password,
 * and Lua scripts run by SHA with a fallback to EVAL.
 * @module
 */
import { createHash } from 'node:crypto'
import type { RedisArgument } from 'redis'
import { describeCause } from '../errors.js'
import { redis } from './deps.js'
import { RedisConnectionError } from './errors.js'
import { type RedisClientConfig, type RedisClusterConfig, redactUrl } from './options.js'

const {
  ClientClosedError,
  ClientOfflineError,
  ConnectionTimeoutError,
  createClient,
  createCluster,
  DisconnectsClientError,
  ErrorReply,
  RESP_TYPES,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  TimeoutError,
} = redis

export type Client = ReturnType<typeof createClient>

/**
 * Replies whose bulk strings stay Buffers (payloads are msgpack) and whose RESP3 maps arrive as
 * flat `[key, value, ...]` arrays, so XREAD and XREADGROUP replies have one shape to parse.
 */
export const BUFFERS = {
  typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer, [RESP_TYPES.MAP]: Array },
} as const

/** Where and how to connect. */
export interface ConnectionConfig {
  url: string
  client: RedisClientConfig | undefined
  /** A cluster's nodes and options: then `url` and `client` are not used. */
  cluster?: RedisClusterConfig | undefined
  connectTimeout: number
}

/** The client's errors that mean the connection failed, not the command. */
const CONNECTION_ERRORS: (abstract new (...args: any[]) => Error)[] = [
  SocketClosedUnexpectedlyError,
  ClientClosedError,
  ClientOfflineError,
  DisconnectsClientError,
  ConnectionTimeoutError,
  SocketTimeoutError,
  TimeoutError,
]

/**
 * Whether `err` says the connection failed (dropped, refused, timed out), not the command. Never
 * throws: `err` may be anything a user's getter threw while an item was packed (a revoked Proxy).
 */
export function isConnectionError(err: unknown): boolean {
  try {
    if (CONNECTION_ERRORS.some((C) => err instanceof C)) return true
    const code = (err as { code?: unknown } | null)?.code
    return (
      typeof code === 'string' &&
      /^(ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|ENOTFOUND|EHOSTUNREACH|ENETUNREACH)$/.test(code)
    )
  } catch {
    return false
  }
}

/**
 * Error replies to a command the server refused, for now, before running it: it is loading its
 * data (after a restart), or a cluster's slot is moving or has no reachable master yet.
 */
function isTransient(err: unknown): boolean {
  return err instanceof ErrorReply && /^(LOADING|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY) /.test(err.message)
}

/** Replies Redis gives to a refused login: retrying cannot help. */
function isAuthFailure(err: unknown): boolean {
  return (
    err instanceof ErrorReply && /^(WRONGPASS|NOAUTH|NOPERM|ERR AUTH|ERR invalid password)/.test(err.message)
  )
}

/** A single server's client, or a cluster's. */
type Backend = Client | Cluster
export type Cluster = ReturnType<typeof createCluster>

/**
 * One node-redis client (or cluster client) and its state, shared by the {@link Connection}s that
 * hold it: the command connection of a process is shared by every run and worker in it that
 * connects the same way (see {@link Connection.open}); a blocking reader has a link of its own.
 */
class Link {
  /** The last error the client reported (its 'error' event), the cause of a failure to reconnect. */
  lastError: unknown = undefined
  /** The error that ended the last connection that was ready (not a failed attempt to reconnect). */
  droppedBy: unknown = undefined
  private ready = false
  /** Set once the reconnect strategy gave up: the client is unusable from here on. */
  gaveUp = false
  /** How many Connections hold it. */
  refs = 0
  readonly server: string
  readonly client: Backend
  readonly cluster: Cluster | undefined

  constructor(
    readonly config: ConnectionConfig,
    /** The key it is shared under (undefined: not shared). */
    readonly shareKey: string | undefined,
  ) {
    this.server = describeServer(config)
    if (config.cluster !== undefined) {
      this.cluster = createCluster(clusterOptions(config, this)) as unknown as Cluster
      this.client = this.cluster
      // a node's connection dropping is what a single client's 'error' is
      this.cluster.on('node-error', (err: unknown) => this.onError(err))
      this.cluster.on('node-ready', () => {
        this.ready = true
      })
    } else {
      this.cluster = undefined
      this.client = createClient(clientOptions(config, this)) as Client
      this.client.on('ready', () => {
        this.ready = true
      })
    }
    // without a listener, an 'error' event would be thrown and crash the process
    this.client.on('error', (err: unknown) => this.onError(err))
  }

  private onError(err: unknown): void {
    this.lastError = err
    if (this.ready) this.droppedBy = err
    this.ready = false
  }

  get alive(): boolean {
    return this.client.isOpen && !this.gaveUp
  }

  /** The event a client emits each time it (or, on a cluster, one of its nodes) is ready again. */
  get readyEvent(): string {
    return this.cluster === undefined ? 'ready' : 'node-ready'
  }

  async start(): Promise<void> {
    try {
      await this.client.connect()
    } catch (err) {
      this.destroy()
      throw this.failure(err, 'could not connect to')
    }
  }

  /**
   * The error to report for `err`, a command's or connect()'s failure: a RedisConnectionError
   * naming the server (password redacted) when the connection failed, else `err` (an error reply).
   */
  failure(err: unknown, what = 'lost the connection to'): unknown {
    // `err` may be anything a user's getter threw while an item was packed: read it warily
    if (this.alive && !isConnectionError(err) && !isTlsFailure(err)) return err
    let ours = false
    try {
      ours = err instanceof RedisConnectionError
    } catch {
      // a revoked Proxy
    }
    if (ours) return err
    const cause = this.gaveUp && this.lastError !== undefined ? this.lastError : err
    let detail: string
    try {
      detail =
        cause instanceof Error
          ? isAuthFailure(cause)
            ? `the server refused the credentials (${cause.message})`
            : isTlsFailure(cause)
              ? `the TLS handshake failed (${(cause as NodeJS.ErrnoException).code}: ${cause.message})`
              : cause.message
          : String(cause)
    } catch {
      detail = describeCause(cause)
    }
    return new RedisConnectionError(`${what} Redis at ${this.server}: ${detail}`, this.server, cause)
  }

  /**
   * Sends a command; a reply saying the server cannot serve it yet (loading its data after a
   * restart, a cluster slot moving or its master failing over: see {@link isTransient}) is waited
   * out, trying again for up to `connectTimeout`. Such a command was refused before it ran.
   */
  async send(key: RedisArgument, args: RedisArgument[], options?: object): Promise<unknown> {
    let since = 0
    for (let i = 0; ; i++) {
      try {
        if (this.cluster !== undefined) return await sendRouted(this.cluster, key, args, options)
        return await (this.client as Client).sendCommand(args, options)
      } catch (err) {
        if (!isTransient(err)) throw err
        const now = performance.now()
        if (i === 0) since = now
        if (now - since >= this.config.connectTimeout || !this.client.isOpen) throw err
        await new Promise((r) => setTimeout(r, Math.min(10 * 2 ** i, 200)))
      }
    }
  }

  /**
   * Closes the client after its pending replies, waiting at most `connectTimeout` for them; never
   * throws. A client that is not connected (reconnecting) is dropped at once: node-redis's close()
   * would wait for replies that cannot come, forever.
   */
  async close(): Promise<void> {
    if (!this.client.isOpen) return
    if (this.client.isReady) {
      let timer: NodeJS.Timeout | undefined
      try {
        await new Promise<void>((resolve, reject) => {
          timer = setTimeout(resolve, this.config.connectTimeout)
          this.client.close().then(resolve, reject)
        })
      } catch {
        // dropped below
      } finally {
        clearTimeout(timer)
      }
    }
    this.destroy()
  }

  destroy(): void {
    if (this.shareKey !== undefined && SHARED.get(this.shareKey)?.link === this) SHARED.delete(this.shareKey)
    try {
      if (this.client.isOpen) this.client.destroy()
    } catch {
      // already gone
    }
  }
}

/**
 * Sends a command on a cluster, routed by `key`. While the cluster client re-reads the topology
 * (a failover), its slot table may be empty for a moment: a command then throws a TypeError before
 * anything is sent, and is tried again (a few times, briefly).
 */
async function sendRouted(cluster: Cluster, key: RedisArgument, args: RedisArgument[], options?: object) {
  for (let i = 0; ; i++) {
    try {
      return await cluster.sendCommand(key, false, args, options as never)
    } catch (err) {
      // by name: the TypeError may come from another realm (a test runner's), where instanceof fails
      if (i >= 20 || (err as Error | null)?.name !== 'TypeError' || !cluster.isOpen) throw err
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

/** The command links shared in this process, by how they connect. */
const SHARED = new Map<string, { link: Link; opening: Promise<void> }>()

/** Ids of objects and functions in connection options, which JSON cannot tell apart. */
const ids = new WeakMap<object, number>()
let nextId = 0

/** A key that equals another's when two configurations connect the same way. */
function shareKeyOf(config: ConnectionConfig): string {
  return JSON.stringify([config.url, config.connectTimeout, config.client, config.cluster], (_k, v) => {
    if (typeof v === 'function' || (typeof v === 'object' && v !== null && !isPlain(v))) {
      let id = ids.get(v)
      if (id === undefined) ids.set(v, (id = ++nextId))
      return `#object ${id}`
    }
    return v
  })
}

function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null || Array.isArray(v)
}

/**
 * One holder's hold on a client: a run's or a worker's. Closing or destroying it lets go of the
 * client, which is closed once nobody holds it. A holder's listeners go with its hold.
 */
export class Connection {
  private released = false
  private readonly listeners: (() => void)[] = []

  /** @internal */
  constructor(private readonly link: Link) {
    link.refs++
  }

  /**
   * The process's shared command connection for `config` (opened if none is open): every run and
   * worker that connects the same way uses one connection. Rejects with a RedisConnectionError
   * within about `connectTimeout` ms.
   */
  static async open(config: ConnectionConfig): Promise<Connection> {
    const key = shareKeyOf(config)
    for (;;) {
      const shared = SHARED.get(key)
      if (shared === undefined) break
      const conn = new Connection(shared.link)
      try {
        await shared.opening
      } catch (err) {
        conn.released = true
        shared.link.refs--
        throw err
      }
      if (conn.alive) return conn
      // it gave up reconnecting: open another
      if (conn.release(false)) shared.link.destroy()
      if (SHARED.get(key) === shared) SHARED.delete(key)
    }
    const link = new Link(config, key)
    const opening = link.start()
    SHARED.set(key, { link, opening })
    const conn = new Connection(link)
    try {
      await opening
    } catch (err) {
      conn.released = true
      link.refs--
      if (SHARED.get(key)?.link === link) SHARED.delete(key)
      throw err
    }
    return conn
  }

  /** A client of its own to the same server with the same options (for a blocking reader). */
  async duplicate(): Promise<Connection> {
    const link = new Link(this.link.config, undefined)
    const conn = new Connection(link)
    await link.start()
    return conn
  }

  get client(): Backend {
    return this.link.client
  }
  get lastError(): unknown {
    return this.link.lastError
  }
  get droppedBy(): unknown {
    return this.link.droppedBy
  }
  get gaveUp(): boolean {
    return this.link.gaveUp
  }
  get server(): string {
    return this.link.server
  }
  /** Whether the link goes to a cluster. */
  get isCluster(): boolean {
    return this.link.cluster !== undefined
  }

  /** False once this hold was let go of, or the client is closed or gave up reconnecting. */
  get alive(): boolean {
    return !this.released && this.link.alive
  }

  /** Sends a command that names `key` (on a cluster, the node serving its slot runs it). */
  send<T = unknown>(key: RedisArgument, args: RedisArgument[], options?: object): Promise<T> {
    return this.link.send(key, args, options) as Promise<T>
  }

  /** Calls `fn` each time the connection is ready again after dropping (until this hold ends). */
  onReady(fn: () => void): void {
    const client = this.link.client as unknown as NodeJS.EventEmitter
    const event = this.link.readyEvent
    client.on(event, fn)
    this.listeners.push(() => client.off(event, fn))
  }

  /** Subscribes `fn` to `channel` on this connection (RESP3: commands go on alongside). */
  async subscribe(channel: string, fn: (message: string) => void): Promise<void> {
    const client = this.link.client as Client
    await client.subscribe(channel, fn)
    this.listeners.push(() => {
      if (client.isOpen) client.unsubscribe(channel, fn).catch(() => {})
    })
  }

  /**
   * The error to report for `err`, a command's or connect()'s failure: a RedisConnectionError
   * naming the server (password redacted) when the connection failed, else `err` (an error reply).
   */
  failure(err: unknown, what = 'lost the connection to'): unknown {
    return this.link.failure(err, what)
  }

  /** Lets go of the client: closed after its pending replies once nobody holds it; never throws. */
  async close(): Promise<void> {
    if (this.release(true)) await this.link.close()
  }

  /** Lets go of the client: dropped now (a blocked command rejects) once nobody holds it; never throws. */
  destroy(): void {
    if (this.release(true)) this.link.destroy()
  }

  /** Ends this hold (once): whether nobody holds the link any more. */
  private release(listeners: boolean): boolean {
    if (this.released) return false
    this.released = true
    if (listeners) for (const off of this.listeners.splice(0)) off()
    return --this.link.refs === 0
  }
}

/** The server as errors name it: the URL, or a cluster's root nodes, passwords redacted. */
function describeServer(config: ConnectionConfig): string {
  if (config.cluster === undefined) return redactUrl(config.url)
  const roots = config.cluster.rootNodes.map((n) =>
    typeof n.url === 'string'
      ? redactUrl(n.url)
      : `${n.socket && 'host' in n.socket ? n.socket.host : '?'}:${n.socket && 'port' in n.socket ? n.socket.port : '?'}`,
  )
  return `cluster ${roots.join(', ')}`
}

/**
 * A reconnect strategy that gives up after `connectTimeout` (the default retries forever and
 * `connect()` never settles), and at once on a refused login or a failed TLS handshake: retrying
 * cannot help.
 */
function giveUpAfter(config: ConnectionConfig, link: Link) {
  let since = 0
  return (retries: number, cause: unknown): number | Error => {
    const now = performance.now()
    if (retries === 0) since = now
    if (isAuthFailure(cause) || isTlsFailure(cause) || now - since >= config.connectTimeout) {
      link.gaveUp = true
      link.lastError = cause
      return new Error('stageline/redis: gave up reconnecting')
    }
    return Math.max(1, Math.min(50 * 2 ** retries, 1000, config.connectTimeout - (now - since)))
  }
}

function socketOptions(
  config: ConnectionConfig,
  link: Link,
  given: object | undefined,
): Record<string, unknown> {
  const socket: Record<string, unknown> = { ...(given ?? {}) }
  if (socket.connectTimeout === undefined) socket.connectTimeout = config.connectTimeout
  if (socket.reconnectStrategy === undefined) socket.reconnectStrategy = giveUpAfter(config, link)
  return socket
}

function clientOptions(config: ConnectionConfig, link: Link): any {
  const given = config.client ?? {}
  return { ...given, url: config.url, RESP: 3, socket: socketOptions(config, link, given.socket) }
}

function clusterOptions(config: ConnectionConfig, link: Link): any {
  const given = config.cluster!
  const defaults: Record<string, unknown> = { ...(given.defaults ?? {}) }
  defaults.socket = socketOptions(config, link, defaults.socket as object | undefined)
  return { ...given, defaults, RESP: 3 }
}

/** A failed TLS handshake (an untrusted certificate, TLS to a port that does not speak it). */
function isTlsFailure(err: unknown): boolean {
  try {
    const code = (err as { code?: unknown } | null)?.code
    return (
      typeof code === 'string' &&
      /^(ERR_SSL_|ERR_TLS_|UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED|CERT_|EPROTO$)/.test(code)
    )
  } catch {
    return false
  }
}

/** A Lua script run with EVALSHA, falling back to EVAL the first time a server lacks it. */
export class Script {
  readonly sha: string
  constructor(
    readonly source: string,
    readonly keys: number,
  ) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  /**
   * The argument array of one call, to be filled from index 3 on (keys, then arguments). Built
   * by the caller so that a batch of payloads is copied once, not spread again.
   */
  args(n: number): RedisArgument[] {
    const args = new Array<RedisArgument>(3 + n)
    args[0] = 'EVALSHA'
    args[1] = this.sha
    args[2] = String(this.keys)
    return args
  }

  /**
   * Loads the scripts into the cache of the server that holds `key`, so that their first calls do
   * not need a second round trip.
   */
  static async load(conn: Connection, key: string, scripts: readonly Script[]): Promise<void> {
    await Promise.all(scripts.map((s) => conn.send(key, ['SCRIPT', 'LOAD', s.source])))
  }

  /**
   * Runs the script. A server that lost it (restarted, SCRIPT FLUSH) answers NOSCRIPT and gets it
   * again with EVAL: one more round trip, during which later commands may overtake this one, so
   * the scripts are written not to depend on the order of calls from one process.
   */
  async run<T>(conn: Connection, args: RedisArgument[], options?: object): Promise<T> {
    // the first key routes the call (every key of a call shares the stage's hash tag)
    const key = args[3]!
    try {
      return await conn.send<T>(key, args, options)
    } catch (err) {
      if (!(err instanceof ErrorReply) || !err.message.startsWith('NOSCRIPT')) throw err
      const again = args.slice()
      again[0] = 'EVAL'
      again[1] = this.source
      return await conn.send<T>(key, again, options)
    }
  }
}

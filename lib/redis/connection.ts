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
import { type RedisClientConfig, redactUrl } from './options.js'

const {
  ClientClosedError,
  ClientOfflineError,
  ConnectionTimeoutError,
  createClient,
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

/** Replies Redis gives to a refused login: retrying cannot help. */
function isAuthFailure(err: unknown): boolean {
  return (
    err instanceof ErrorReply && /^(WRONGPASS|NOAUTH|NOPERM|ERR AUTH|ERR invalid password)/.test(err.message)
  )
}

/** One client and what is needed to report its failures without leaking secrets. */
export class Connection {
  /** The last error the client reported (its 'error' event), the cause of a failure to reconnect. */
  lastError: unknown = undefined
  /** The error that ended the last connection that was ready (not a failed attempt to reconnect). */
  droppedBy: unknown = undefined
  private ready = false
  /** Set once the reconnect strategy gave up: the client is unusable from here on. */
  gaveUp = false
  readonly server: string

  private constructor(
    readonly client: Client,
    private readonly config: ConnectionConfig,
  ) {
    this.server = redactUrl(config.url)
    // without a listener, an 'error' event would be thrown and crash the process
    client.on('error', (err: unknown) => {
      this.lastError = err
      if (this.ready) this.droppedBy = err
      this.ready = false
    })
    client.on('ready', () => {
      this.ready = true
    })
  }

  /** Connects a new client; rejects with a RedisConnectionError within about `connectTimeout` ms. */
  static async open(config: ConnectionConfig): Promise<Connection> {
    let conn: Connection | undefined
    const client = createClient(clientOptions(config, () => conn)) as Client
    return Connection.start(client, config, (c) => (conn = c))
  }

  /** A second client to the same server with the same options (for a blocking reader). */
  async duplicate(): Promise<Connection> {
    let conn: Connection | undefined
    const client = this.client.duplicate(clientOptions(this.config, () => conn)) as Client
    return Connection.start(client, this.config, (c) => (conn = c))
  }

  private static async start(
    client: Client,
    config: ConnectionConfig,
    bind: (c: Connection) => void,
  ): Promise<Connection> {
    const conn = new Connection(client, config)
    bind(conn)
    try {
      await client.connect()
    } catch (err) {
      client.destroy()
      throw conn.failure(err, 'could not connect to')
    }
    return conn
  }

  /** False once the client is closed or gave up reconnecting. */
  get alive(): boolean {
    return this.client.isOpen && !this.gaveUp
  }

  /**
   * The error to report for `err`, a command's or connect()'s failure: a RedisConnectionError
   * naming the server (password redacted) when the connection failed, else `err` (an error reply).
   */
  failure(err: unknown, what = 'lost the connection to'): unknown {
    // `err` may be anything a user's getter threw while an item was packed: read it warily
    if (this.alive && !isConnectionError(err)) return err
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
            : cause.message
          : String(cause)
    } catch {
      detail = describeCause(cause)
    }
    return new RedisConnectionError(`${what} Redis at ${this.server}: ${detail}`, this.server, cause)
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

  /** Drops the connection now (a blocked command rejects); never throws. */
  destroy(): void {
    try {
      if (this.client.isOpen) this.client.destroy()
    } catch {
      // already gone
    }
  }
}

function clientOptions(config: ConnectionConfig, self: () => Connection | undefined): any {
  const given = config.client ?? {}
  const socket: Record<string, unknown> = { ...(given.socket ?? {}) }
  if (socket.connectTimeout === undefined) socket.connectTimeout = config.connectTimeout
  if (socket.reconnectStrategy === undefined) {
    let since = 0
    socket.reconnectStrategy = (retries: number, cause: unknown): number | Error => {
      const now = performance.now()
      if (retries === 0) since = now
      const c = self()
      if (isAuthFailure(cause) || now - since >= config.connectTimeout) {
        if (c !== undefined) {
          c.gaveUp = true
          c.lastError = cause
        }
        return new Error('stageline/redis: gave up reconnecting')
      }
      return Math.max(1, Math.min(50 * 2 ** retries, 1000, config.connectTimeout - (now - since)))
    }
  }
  return { ...given, url: config.url, RESP: 3, socket }
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

  /** Loads the scripts into the server's cache, so that their first calls do not need a second round trip. */
  static async load(client: Client, scripts: readonly Script[]): Promise<void> {
    await Promise.all(scripts.map((s) => client.sendCommand(['SCRIPT', 'LOAD', s.source])))
  }

  /**
   * Runs the script. A server that lost it (restarted, SCRIPT FLUSH) answers NOSCRIPT and gets it
   * again with EVAL: one more round trip, during which later commands may overtake this one, so
   * the scripts are written not to depend on the order of calls from one process.
   */
  async run<T>(client: Client, args: RedisArgument[], options?: object): Promise<T> {
    try {
      return (await client.sendCommand(args, options)) as T
    } catch (err) {
      if (!(err instanceof ErrorReply) || !err.message.startsWith('NOSCRIPT')) throw err
      const again = args.slice()
      again[0] = 'EVAL'
      again[1] = this.source
      return (await client.sendCommand(again, options)) as T
    }
  }
}

/**
 * The transport on Redis Streams (node-redis client, RESP3).
 *
 * Keys, all with the stage's name as the Redis Cluster hash tag so that every script's keys live
 * in one slot:
 * - `stageline:{name}:<run>:in`   the run's input stream; the stage's consumer group reads it.
 *   An entry is `s <seq> c <count> b <items> [a <prior deliveries>]`, `<items>` being the items'
 *   msgpack messages back to back (one field, not one per item: a command with hundreds of
 *   arguments costs several times more to send and parse).
 * - `stageline:{name}:<run>:out`  the run's results; only the run's own process reads it.
 * - `stageline:{name}:<run>:meta` a hash: `v` (the protocol version, PROTOCOL_VERSION), `n` (items
 *   of the run in Redis), `cap`, the settings workers need, and the append and release counters
 *   (`q`, `p<seq>`, `a`, `r`: see APPEND and RELEASE). Every script that writes for a run
 *   checks it exists first, so a late write never recreates a run's keys after they were deleted.
 * - `stageline:{name}:runs`       a sorted set of live runs, scored by lease deadline (server time).
 * - `stageline:{name}:dead`       the dead-letter stream (only with `deadLetter`; never expired).
 * - `stageline:{name}:w:<consumer>` a worker's doorbell: a stream its blocking read also waits on,
 *   to which it adds an entry to end that read early (a run started, it is closing). It expires
 *   `KEY_TTL_MS` after the worker last renewed it, and is deleted when the worker closes.
 * - channel `stageline:{name}:events`: `+<run>` when a run starts, `-<run>` when it ends.
 *
 * A run's state can vanish under it (a server restarted without persistence, FLUSHALL, keys
 * deleted or expired): scripts that need the input stream's consumer group check that it exists
 * and answer "gone" rather than fail on NOGROUP, and TOUCH also counts the run's entries, so that
 * the pipeline notices entries lost while the keys stayed.
 * @module
 */
import type { RedisArgument } from 'redis'
import { MAX_TIMER_MS } from '../options/limits.js'
import { BUFFERS, type Client, type Connection, isConnectionError, Script } from './connection.js'
import { redis } from './deps.js'
import {
  type Delivery,
  PROTOCOL_VERSION,
  type ResultRecord,
  RunGone,
  type RunInfo,
  type RunQueue,
  type RunSettings,
  type WorkQueue,
} from './transport.js'

const { ErrorReply } = redis

/** How long a run's keys live without being refreshed (a pipeline process that died leaves them this long). */
export const KEY_TTL_MS = 30_000

/** The names of a stage's keys. */
export class StageKeys {
  readonly base: string
  readonly runs: string
  readonly events: string
  readonly dead: string
  constructor(readonly stage: string) {
    this.base = `stageline:{${stage}}`
    this.runs = `${this.base}:runs`
    this.events = `${this.base}:events`
    this.dead = `${this.base}:dead`
  }
  input(runId: string): string {
    return `${this.base}:${runId}:in`
  }
  output(runId: string): string {
    return `${this.base}:${runId}:out`
  }
  meta(runId: string): string {
    return `${this.base}:${runId}:meta`
  }
  /** A worker's doorbell stream (`consumer`: its consumer name). */
  bell(consumer: string): string {
    return `${this.base}:w:${consumer}`
  }
  /** The consumer group of every run of the stage. */
  get group(): string {
    return this.stage
  }
}

const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
const KEEP_OUT_TTL = `local ttl = redis.call('PTTL', KEYS[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
`
// whether stream `key` exists and has consumer group `group` (XINFO GROUPS answers RESP2 arrays in
// a script: each group is a flat array of field names and values, the name first)
const HAS_GROUP = `local function has_group(key, group)
  if redis.call('EXISTS', key) == 0 then return false end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    if g[2] == group then return true end
  end
  return false
end
`

// KEYS in, meta, runs; ARGV runId, group, ttl, channel, then the meta hash's field/value pairs
const BEGIN = new Script(
  `${NOW}redis.call('HSET', KEYS[2], 'n', 0, unpack(ARGV, 5))
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], '+' .. ARGV[1])
return 1`,
  3,
)

// KEYS in, meta; ARGV seq, count, items, ends (each item's end offset in items, 4 bytes big-endian):
// the bounded append, one call per entry. It adds the items that fit (cutting `items` after the
// last one that does) and returns how many, 0 when the run is full, -1 when its keys are gone.
// Sent again after a dropped connection, it appends nothing twice: meta `q` is the input position
// below which every item was appended, `p<seq>` the size of an entry appended above it (appends may
// arrive out of order: see Script.run), and an entry found there answers what it added then.
// `a` counts the items ever appended, for telling acknowledged writes lost.
const APPEND = new Script(
  `local m = redis.call('HMGET', KEYS[2], 'n', 'cap', 'q', 'p' .. ARGV[1])
if not m[1] then return -1 end
local seq = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local q = tonumber(m[3]) or 0
if seq < q then
  if q - seq < count then return q - seq end
  return count
end
if m[4] then return tonumber(m[4]) end
local k = tonumber(m[2]) - tonumber(m[1])
if k > count then k = count end
if k <= 0 then return 0 end
local items = ARGV[3]
if k < count then items = string.sub(items, 1, struct.unpack('>I4', ARGV[4], 4 * (k - 1) + 1)) end
if not redis.call('XADD', KEYS[1], 'NOMKSTREAM', '*', 's', ARGV[1], 'c', k, 'b', items) then return -1 end
redis.call('HINCRBY', KEYS[2], 'n', k)
redis.call('HINCRBY', KEYS[2], 'a', k)
if seq == q then
  q = seq + k
  while true do
    local above = redis.call('HMGET', KEYS[2], 'p' .. q)[1]
    if not above then break end
    redis.call('HDEL', KEYS[2], 'p' .. q)
    q = q + tonumber(above)
  end
  redis.call('HSET', KEYS[2], 'q', q)
else
  redis.call('HSET', KEYS[2], 'p' .. seq, k)
end
return k`,
  2,
)

// KEYS out, meta; ARGV items, id, id, ...: sent again after a dropped connection, it frees nothing
// twice (the results it deletes are gone the second time). `r` counts the items ever released.
const RELEASE = new Script(
  `if #ARGV > 1 and redis.call('XDEL', KEYS[1], unpack(ARGV, 2)) == 0 then return 0 end
local n = tonumber(ARGV[1])
if n > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'n', -n)
  redis.call('HINCRBY', KEYS[2], 'r', n)
end
return 1`,
  2,
)

// KEYS in, out, meta, runs; ARGV runId, ttl, group, last result read, limit: -1 when the run's
// state is gone, else the entries of the run in Redis: its input stream's (queued or pending) plus
// its results after the last one read, these counted up to `limit`
const TOUCH = new Script(
  `${HAS_GROUP}if redis.call('EXISTS', KEYS[3]) == 0 or not has_group(KEYS[1], ARGV[3]) then return -1 end
${NOW}redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
local unread = 0
if tonumber(ARGV[5]) > 0 then
  unread = #redis.call('XRANGE', KEYS[2], '(' .. ARGV[4], '+', 'COUNT', ARGV[5])
end
return redis.call('XLEN', KEYS[1]) + unread`,
  4,
)

// KEYS in, out, meta, runs; ARGV runId, channel
const END = new Script(
  `redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], '-' .. ARGV[1])
return 1`,
  4,
)

// KEYS runs: the live runs, forgetting those whose lease ran out (their pipeline died)
const LIST = new Script(
  `${NOW}redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)`,
  1,
)

// KEYS in, out, meta; ARGV group, then id, seq, values for each entry of the run: results are
// written only by the worker whose XACK took the entry out of the pending list, so a run sees each
// entry's results once. Returns how many entries were completed here.
const COMPLETE = new Script(
  `if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local done = 0
for i = 2, #ARGV, 3 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[2], '*', 's', ARGV[i + 1], 'v', ARGV[i + 2])
    done = done + 1
  end
end
if done > 0 then
  ${KEEP_OUT_TTL}end
return done`,
  3,
)

// KEYS in, out, meta; ARGV group, id, seq, error, item: only while the entry is still pending (a
// stalled worker failing on an entry another worker has completed does not fail the run)
const REPORT = new Script(
  `${HAS_GROUP}if redis.call('EXISTS', KEYS[3]) == 0 or not has_group(KEYS[1], ARGV[1]) then return -1 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 's', ARGV[3], 'e', ARGV[4], 'x', ARGV[5])
${KEEP_OUT_TTL}return 1`,
  3,
)

// KEYS in; ARGV group, consumer, id, ...: renews (XCLAIM JUSTID: the delivery count stays) the
// entries still pending for this consumer, returns the others (nil when the stream or group is gone)
const RENEW = new Script(
  `${HAS_GROUP}local lost = {}
if not has_group(KEYS[1], ARGV[1]) then return false end
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    lost[#lost + 1] = ARGV[i]
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost`,
  1,
)

// KEYS in; ARGV group, consumer, minIdle, cursor, count: XAUTOCLAIM plus each entry's delivery
// count, which XAUTOCLAIM does not return (XPENDING does). One XAUTOCLAIM scans at most COUNT x 10
// pending entries, so it goes on from the returned cursor (within this call) until it has `count`
// entries or has gone round the whole pending list. Nil when the stream or its group is gone.
const RECLAIM = new Script(
  `${HAS_GROUP}if not has_group(KEYS[1], ARGV[1]) then return false end
local want = tonumber(ARGV[5])
local cursor = ARGV[4]
local entries = {}
local counts = {}
for _ = 1, 100 do
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', want - #entries)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[2] then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
      if #p > 0 then
        entries[#entries + 1] = e
        counts[#counts + 1] = p[1][4]
      end
    end
  end
  if cursor == '0-0' or #entries >= want then break end
end
return {cursor, entries, counts}`,
  1,
)

// KEYS in, out, meta; ARGV error, item: a failure of the run that is no item's (seq -1), sent
// without reading the run's entries (a worker refusing a run of another protocol version)
const REFUSE = new Script(
  `if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
redis.call('XADD', KEYS[2], '*', 's', '-1', 'e', ARGV[1], 'x', ARGV[2])
${KEEP_OUT_TTL}return 1`,
  3,
)

// KEYS in, meta; ARGV group, id, attempts: the same items as a new entry at the stream's end
const REQUEUE = new Script(
  `if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 or redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local f = e[1][2]
redis.call('XADD', KEYS[1], 'NOMKSTREAM', '*', 's', f[2], 'c', f[4], 'b', f[6], 'a', ARGV[3])
return 1`,
  2,
)

// KEYS in, out, meta, dead; ARGV group, id, deliveries, runId, consumer, deadLetter ('1' or '0')
const EXPIRE = new Script(
  `if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 or redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local f = e[1][2]
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[4], '*', 'run', ARGV[4], 'seq', f[2], 'count', f[4], 'deliveries', ARGV[3],
    'consumer', ARGV[5], 'items', f[6])
  redis.call('XADD', KEYS[2], '*', 's', f[2], 'k', f[4])
else
  redis.call('XADD', KEYS[2], '*', 's', f[2], 'l', f[4], 'n', ARGV[3], 'x', f[6])
end
${KEEP_OUT_TTL}return 1`,
  4,
)

// KEYS bell; ARGV group, ttl: a worker's doorbell stream with its consumer group, made if missing
// (a ring only adds to a stream that exists: one made by XADD alone would lack the group)
const BELL = new Script(
  `${HAS_GROUP}if not has_group(KEYS[1], ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`,
  1,
)

/** How much longer than connectTimeout survived() waits for an answer. */
const SURVIVED_SLACK_MS = 2000

/** `p`'s value, or undefined if it does not settle within `ms` (it is left to settle unobserved). */
function settleWithin<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  p.catch(() => {})
  if (ms <= 0) return Promise.resolve(undefined)
  return new Promise<T | undefined>((resolve, reject) => {
    // connectTimeout plus the slack may pass the longest wait a timer can hold (Node would fire
    // a longer one after 1 ms)
    const timer = setTimeout(resolve, Math.min(ms, MAX_TIMER_MS), undefined)
    p.then(
      (v) => {
        clearTimeout(timer)
        resolve(v)
      },
      (err: unknown) => {
        clearTimeout(timer)
        reject(err)
      },
    )
  })
}

/**
 * Options of a blocking read: Buffer replies, and a command timeout longer than the block (node-redis
 * times every command out after 5 s by default, or after the user's `commandOptions.timeout`).
 */
function blocking(blockMs: number): typeof BUFFERS & { timeout: number } {
  return { ...BUFFERS, timeout: blockMs + 5000 }
}

const str = (b: Buffer | string): string => (typeof b === 'string' ? b : b.toString('latin1'))

/** Parses a result entry's fields (`s <seq> <kind> <value> ...`). */
function parseResult(id: string, f: Buffer[]): ResultRecord {
  const seq = Number(str(f[1]!))
  switch (str(f[2]!)) {
    case 'v':
      return { kind: 'values', id, seq, values: f[3]! }
    case 'e':
      return { kind: 'error', id, seq, error: f[3]!, item: f[5]! }
    case 'k':
      return { kind: 'dead', id, seq, count: Number(str(f[3]!)) }
    case 'l':
      return {
        kind: 'limit',
        id,
        seq,
        count: Number(str(f[3]!)),
        deliveries: Number(str(f[5]!)),
        items: f[7]!,
      }
    default:
      throw new Error(`stageline/redis: unknown result record ${JSON.stringify(str(f[2]!))} in ${id}`)
  }
}

/** Parses an input entry's fields (`s <seq> c <count> b <items> [a <prior>]`) into a delivery. */
function parseEntry(runId: string, id: string, f: Buffer[], deliveries: number): Delivery {
  return {
    runId,
    id,
    seq: Number(str(f[1]!)),
    count: Number(str(f[3]!)),
    items: f[5]!,
    prior: f.length > 7 ? Number(str(f[7]!)) : 0,
    deliveries,
  }
}

/** The pipeline's side of one run on Redis Streams. */
export class RedisRunQueue implements RunQueue {
  private lastId = '0-0'
  private readonly inKey: string
  private readonly outKey: string
  private readonly metaKey: string

  private constructor(
    private readonly keys: StageKeys,
    private readonly runId: string,
    private readonly main: Connection,
    private readonly reader: Connection,
    private readonly connectTimeout: number,
  ) {
    this.inKey = keys.input(runId)
    this.outKey = keys.output(runId)
    this.metaKey = keys.meta(runId)
  }

  /** Connects, creates the run's keys and announces the run to the workers. */
  static async open(
    main: Connection,
    stage: string,
    runId: string,
    s: RunSettings & { connectTimeout: number },
  ): Promise<RedisRunQueue> {
    let reader: Connection | undefined
    try {
      reader = await main.duplicate()
      const keys = new StageKeys(stage)
      const q = new RedisRunQueue(keys, runId, main, reader, s.connectTimeout)
      const meta = [
        'v',
        String(PROTOCOL_VERSION),
        'cap',
        String(s.capacity),
        'batch',
        String(s.batch),
        'vis',
        String(s.visibilityTimeout),
        'maxd',
        String(s.maxDeliveries),
        'dl',
        s.deadLetter ? '1' : '0',
      ]
      await Script.load(main, q.inKey, [BEGIN, APPEND, RELEASE, TOUCH, END])
      const args = BEGIN.args(7 + meta.length)
      args.splice(
        3,
        7 + meta.length,
        q.inKey,
        q.metaKey,
        keys.runs,
        runId,
        keys.group,
        String(KEY_TTL_MS),
        keys.events,
        ...meta,
      )
      await BEGIN.run(main, args)
      return q
    } catch (err) {
      reader?.destroy()
      throw err
    }
  }

  async append(seq: number, count: number, items: Buffer, ends: Buffer): Promise<number> {
    const args = APPEND.args(6)
    args[3] = this.inKey
    args[4] = this.metaKey
    args[5] = String(seq)
    args[6] = String(count)
    args[7] = items
    args[8] = ends
    return APPEND.run<number>(this.main, args)
  }

  async read(blockMs: number): Promise<ResultRecord[] | null> {
    let reply: [Buffer, [Buffer, Buffer[]][]] | [] | null
    try {
      reply = (await this.reader.send(
        this.outKey,
        ['XREAD', 'COUNT', '64', 'BLOCK', String(blockMs), 'STREAMS', this.outKey, this.lastId],
        blocking(blockMs),
      )) as typeof reply
    } catch (err) {
      // the server ended the blocked read: it became a replica (a cluster failover), or the stream
      // was deleted (the run's keys are gone, which the collector's next check tells)
      if (err instanceof ErrorReply && err.message.startsWith('UNBLOCKED')) return null
      throw err
    }
    if (reply === null || reply.length === 0) return null
    const entries = reply[1]
    const out = new Array<ResultRecord>(entries.length)
    for (let i = 0; i < entries.length; i++) {
      const [rawId, fields] = entries[i]!
      const id = str(rawId)
      out[i] = parseResult(id, fields)
      this.lastId = id
    }
    return out
  }

  async release(ids: readonly string[], items: number): Promise<void> {
    const args = RELEASE.args(3 + ids.length)
    args[3] = this.outKey
    args[4] = this.metaKey
    args[5] = String(items)
    for (let i = 0; i < ids.length; i++) args[6 + i] = ids[i]!
    await RELEASE.run(this.main, args)
  }

  async counts(): Promise<{ appended: number; released: number } | null> {
    const m = await this.main.send<(string | null)[]>(this.metaKey, ['HMGET', this.metaKey, 'v', 'a', 'r'])
    if (m[0] == null) return null
    return { appended: Number(m[1] ?? 0), released: Number(m[2] ?? 0) }
  }

  async touch(expected = 0): Promise<number> {
    const args = TOUCH.args(9)
    args.splice(
      3,
      9,
      this.inKey,
      this.outKey,
      this.metaKey,
      this.keys.runs,
      this.runId,
      String(KEY_TTL_MS),
      this.keys.group,
      this.lastId,
      String(expected),
    )
    return TOUCH.run<number>(this.main, args)
  }

  onReconnect(fn: (dropped: unknown) => void): void {
    // 'ready' comes again only after a reconnect: both clients were ready before this was called
    for (const c of [this.main, this.reader]) c.onReady(() => fn(c.failure(c.droppedBy)))
  }

  reconnecting(err: unknown): boolean {
    return isConnectionError(err) && this.main.alive
  }

  async survived(): Promise<boolean | undefined> {
    // a reply may also be lost to a second drop (the command client may learn of the first one
    // after the reader did): try again while the client reconnects. Commands wait in node-redis's
    // offline queue until it is back, and fail when it gives up (after connectTimeout); a server
    // that takes the connection and never answers is cut short by the timer.
    const deadline = performance.now() + this.connectTimeout + SURVIVED_SLACK_MS
    for (let i = 0; i < 3 && this.main.alive; i++) {
      try {
        const held = await settleWithin(this.touch(), deadline - performance.now())
        return held === undefined ? undefined : held >= 0
      } catch (err) {
        if (!isConnectionError(err)) return undefined
      }
    }
    return undefined
  }

  async end(): Promise<void> {
    const args = END.args(6)
    args.splice(3, 6, this.inKey, this.outKey, this.metaKey, this.keys.runs, this.runId, this.keys.events)
    try {
      await END.run(this.main, args)
    } finally {
      this.close()
      await this.main.close()
    }
  }

  close(): void {
    this.reader.destroy()
  }

  failure(err: unknown): unknown {
    return this.reader.alive ? this.main.failure(err) : this.reader.failure(err)
  }
}

/** A worker's side of one stage on Redis Streams. */
export class RedisWorkQueue implements WorkQueue {
  private readonly group: string
  /** The worker's doorbell stream, which its blocking read also waits on (see {@link interrupt}). */
  private readonly bell: string
  /** The doorbell must be made again (first read, or it expired or was lost) before the next read. */
  private bellMissing = true
  private bellTimer: NodeJS.Timeout | undefined

  private constructor(
    private readonly keys: StageKeys,
    private readonly consumer: string,
    private readonly main: Connection,
    private readonly reader: Connection,
  ) {
    this.group = keys.group
    this.bell = keys.bell(consumer)
  }

  /**
   * Takes two connections: `main`, the process's shared command connection (RESP3: it also carries
   * the subscription to the stage's events), and a blocking reader of its own (a blocked
   * XREADGROUP holds its connection until it returns).
   */
  static async open(main: Connection, stage: string, consumer: string): Promise<RedisWorkQueue> {
    let reader: Connection | undefined
    try {
      reader = await main.duplicate()
      const keys = new StageKeys(stage)
      await Script.load(main, keys.runs, [
        LIST,
        COMPLETE,
        REPORT,
        REFUSE,
        RENEW,
        RECLAIM,
        REQUEUE,
        EXPIRE,
        BELL,
      ])
      const q = new RedisWorkQueue(keys, consumer, main, reader)
      await q.ringable()
      // the doorbell lives KEY_TTL_MS unless renewed: a worker that died leaves nothing for long
      q.bellTimer = setInterval(() => void q.ringable().catch(() => {}), KEY_TTL_MS / 3)
      q.bellTimer.unref()
      return q
    } catch (err) {
      reader?.destroy()
      throw err
    }
  }

  /** Makes the doorbell stream and its consumer group if they are missing, and extends its expiry. */
  private async ringable(): Promise<void> {
    const args = BELL.args(3)
    args.splice(3, 3, this.bell, this.group, String(KEY_TTL_MS))
    await BELL.run(this.main, args)
    this.bellMissing = false
  }

  async runs(): Promise<RunInfo[]> {
    const args = LIST.args(1)
    args[3] = this.keys.runs
    const ids = await LIST.run<string[]>(this.main, args)
    const metas = await Promise.all(
      ids.map((id) =>
        this.main.send<(string | null)[]>(this.keys.meta(id), [
          'HMGET',
          this.keys.meta(id),
          'cap',
          'batch',
          'vis',
          'maxd',
          'dl',
          'v',
        ]),
      ),
    )
    const out: RunInfo[] = []
    for (let i = 0; i < ids.length; i++) {
      const m = metas[i]!
      // ended between the two calls (a run of another version may lack the settings, not `v`)
      if (m[0] == null && m[5] == null) continue
      out.push({
        runId: ids[i]!,
        version: m[5] ?? undefined,
        capacity: Number(m[0]),
        batch: Number(m[1]),
        visibilityTimeout: Number(m[2]),
        maxDeliveries: Number(m[3]),
        deadLetter: m[4] === '1',
      })
    }
    return out
  }

  async onRunEvent(fn: (event: '+' | '-', runId: string) => void): Promise<void> {
    await this.main.subscribe(this.keys.events, (message: string) => {
      const kind = message[0]
      if (kind === '+' || kind === '-') fn(kind, message.slice(1))
    })
  }

  async read(runIds: readonly string[], count: number, blockMs: number): Promise<Delivery[] | null> {
    const args: RedisArgument[] = ['XREADGROUP', 'GROUP', this.group, this.consumer, 'COUNT', String(count)]
    args.push('BLOCK', String(blockMs), 'STREAMS')
    for (const id of runIds) args.push(this.keys.input(id))
    args.push(this.bell)
    for (let i = 0; i <= runIds.length; i++) args.push('>')
    if (this.bellMissing) await this.ringable()
    let reply: (Buffer | [Buffer, Buffer[]][])[] | null
    try {
      reply = (await this.reader.send(this.bell, args, blocking(blockMs))) as typeof reply
    } catch (err) {
      const gone = this.gone(err)
      if (gone === undefined) throw err
      if (gone.runId !== undefined) throw gone
      // the doorbell may be what is gone (it expired while this process was unresponsive, or the
      // server lost it): make it again before the next read
      this.bellMissing = true
      if (gone.bell) return null
      throw gone
    }
    if (reply === null || reply.length === 0) return null
    const out: Delivery[] = []
    for (let i = 0; i < reply.length; i += 2) {
      const key = str(reply[i] as Buffer)
      if (key === this.bell) {
        // rung: acknowledge the rings, which are all this read was for
        const rings = (reply[i + 1] as [Buffer, Buffer[]][]).map(([id]) => str(id))
        this.main.send(this.bell, ['XACK', this.bell, this.group, ...rings]).catch(() => {})
        continue
      }
      const runId = key.slice(this.keys.base.length + 1, key.length - 3)
      for (const [id, fields] of reply[i + 1] as [Buffer, Buffer[]][]) {
        out.push(parseEntry(runId, str(id), fields, 1))
      }
    }
    return out
  }

  /**
   * A RunGone for a read's error reply saying a stream or its group is missing: NOGROUP names the
   * stream; UNBLOCKED (a stream deleted while the read blocked on it, Redis 7) does not.
   */
  private gone(err: unknown): (RunGone & { bell?: boolean }) | undefined {
    if (!(err instanceof ErrorReply)) return undefined
    if (err.message.startsWith('UNBLOCKED')) return new RunGone(undefined, err)
    if (!err.message.startsWith('NOGROUP')) return undefined
    const key = /'([^']*)'/.exec(err.message)?.[1]
    if (key === this.bell) return Object.assign(new RunGone(undefined, err), { bell: true })
    const prefix = `${this.keys.base}:`
    const runId =
      key?.startsWith(prefix) && key.endsWith(':in') ? key.slice(prefix.length, key.length - 3) : undefined
    return new RunGone(runId, err)
  }

  /**
   * Rings the doorbell: an entry added to the worker's own stream, which its blocking read waits
   * on besides the runs' streams, ends the read at once (no admin command such as CLIENT UNBLOCK
   * is needed, so the stage's ACL stays within its own keys).
   */
  interrupt(): void {
    if (this.bellMissing) return // no read can be waiting on it
    this.main.send(this.bell, ['XADD', this.bell, 'NOMKSTREAM', 'MAXLEN', '1', '*', 'r', '1']).catch(() => {
      // the read ends at its block timeout instead
    })
  }

  async complete(runId: string, done: readonly (readonly [Delivery, Buffer])[]): Promise<number> {
    const args = COMPLETE.args(4 + 3 * done.length)
    args[3] = this.keys.input(runId)
    args[4] = this.keys.output(runId)
    args[5] = this.keys.meta(runId)
    args[6] = this.group
    for (let i = 0; i < done.length; i++) {
      const [d, values] = done[i]!
      args[7 + 3 * i] = d.id
      args[8 + 3 * i] = String(d.seq)
      args[9 + 3 * i] = values
    }
    return COMPLETE.run<number>(this.main, args)
  }

  async report(d: Delivery, seq: number, error: Buffer, item: Buffer): Promise<void> {
    const args = REPORT.args(8)
    args.splice(
      3,
      8,
      this.keys.input(d.runId),
      this.keys.output(d.runId),
      this.keys.meta(d.runId),
      this.group,
      d.id,
      String(seq),
      error,
      item,
    )
    await REPORT.run(this.main, args)
  }

  async refuse(runId: string, error: Buffer, item: Buffer): Promise<boolean> {
    const args = REFUSE.args(5)
    args.splice(3, 5, this.keys.input(runId), this.keys.output(runId), this.keys.meta(runId), error, item)
    return (await REFUSE.run<number>(this.main, args)) === 1
  }

  async renew(runId: string, ids: readonly string[]): Promise<string[] | null> {
    const args = RENEW.args(3 + ids.length)
    args[3] = this.keys.input(runId)
    args[4] = this.group
    args[5] = this.consumer
    for (let i = 0; i < ids.length; i++) args[6 + i] = ids[i]!
    return RENEW.run<string[] | null>(this.main, args)
  }

  private readonly cursors = new Map<string, string>()

  async reclaim(runId: string, minIdle: number, count: number): Promise<Delivery[] | null> {
    const args = RECLAIM.args(6)
    const cursor = this.cursors.get(runId) ?? '0-0'
    args.splice(
      3,
      6,
      this.keys.input(runId),
      this.group,
      this.consumer,
      String(minIdle),
      cursor,
      String(count),
    )
    const reply = (await RECLAIM.run(this.main, args, BUFFERS)) as
      | [Buffer, [Buffer, Buffer[]][], number[]]
      | null
    if (reply === null) {
      this.cursors.delete(runId)
      return null
    }
    this.cursors.set(runId, str(reply[0]))
    const entries = reply[1]
    const counts = reply[2]
    const out: Delivery[] = []
    for (let i = 0; i < entries.length; i++) {
      const [id, fields] = entries[i]!
      out.push(parseEntry(runId, str(id), fields, Number(counts[i])))
    }
    return out
  }

  async requeue(d: Delivery, attempts: number): Promise<void> {
    const args = REQUEUE.args(5)
    args.splice(3, 5, this.keys.input(d.runId), this.keys.meta(d.runId), this.group, d.id, String(attempts))
    await REQUEUE.run(this.main, args)
  }

  async expire(d: Delivery, attempts: number, deadLetter: boolean): Promise<void> {
    const args = EXPIRE.args(10)
    args.splice(
      3,
      10,
      this.keys.input(d.runId),
      this.keys.output(d.runId),
      this.keys.meta(d.runId),
      this.keys.dead,
      this.group,
      d.id,
      String(attempts),
      d.runId,
      this.consumer,
      deadLetter ? '1' : '0',
    )
    await EXPIRE.run(this.main, args)
  }

  forget(runId: string): void {
    this.cursors.delete(runId)
  }

  async close(): Promise<void> {
    clearInterval(this.bellTimer)
    this.reader.destroy()
    // not while the connection is down: the command would wait for it
    if (this.main.alive && this.main.client.isReady) {
      try {
        await this.main.send(this.bell, ['DEL', this.bell])
      } catch {
        // it expires by itself
      }
    }
    await this.main.close()
  }

  failure(err: unknown): unknown {
    for (const c of [this.main, this.reader]) if (!c.alive) return c.failure(err)
    return this.main.failure(err)
  }

  get alive(): boolean {
    return this.main.alive && this.reader.alive
  }
}

export type { Client }

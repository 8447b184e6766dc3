/**
 * stageline/redis against a real redis-server (started by the spec, see helpers/redis-server.ts),
 * with workers served in this process. Worker child processes: redis-processes.spec.ts.
 */
import { createServer } from 'node:net'
import { inspect } from 'node:util'
import { Packr, pack, unpackMultiple } from 'msgpackr'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import { MAX_TIMER_MS, mapStage, pipe, RunStopped, type StageStats, TaskException } from '../lib/index.js'
import {
  DeliveryLimitError,
  RedisConnectionError,
  RemoteError,
  RunStateLostError,
  redisStage,
  type StageWorker,
  serveStage,
  type WorkerContext,
} from '../lib/redis/index.js'
import { SENDABLE } from '../lib/wire/sendable.js'
import { type RedisServer, reportUnavailable, startRedisServer } from './helpers/redis-server.js'
import { keysOf, type Raw, range, rawClient, runsOf, sleep, waitFor } from './helpers/redis-util.js'

const started = await startRedisServer()
if (!started.ok) reportUnavailable('spec/redis.spec.ts', started.reason)

describe.runIf(started.ok)('stageline/redis, workers in this process', () => {
  let server: RedisServer
  let url: string
  let raw: Raw
  const workers: StageWorker[] = []
  let n = 0
  const fresh = (): string => `s${process.pid}-${++n}`
  const serve = async <I, O>(
    name: string,
    fn: (x: I, ctx: WorkerContext) => O | Promise<O>,
    concurrency = 1,
  ): Promise<StageWorker> => {
    const w = await serveStage(name, { url, concurrency }, fn)
    workers.push(w)
    return w
  }

  beforeAll(async () => {
    server = (started as { server: RedisServer }).server
    url = server.url
    raw = await rawClient(url)
  })
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.close()))
    await raw?.close()
    await server?.stop()
  })

  test('every item comes back exactly once, through several workers and multi-item entries', async () => {
    const name = fresh()
    const seen: number[] = []
    const double = (x: number): number => {
      seen.push(x)
      return x * 2
    }
    await serve(name, double, 2)
    await serve(name, async (x: number) => double(x), 3)
    const out = await pipe(
      range(2000),
      redisStage<number, number>(name, { url, batch: 7, capacity: 50 }),
    ).toArray()
    expect(out.sort((a, b) => a - b)).toEqual(range(2000).map((x) => x * 2))
    expect(seen.length).toBe(2000)
  })

  test('a finished run leaves no key behind, and its keys carry an expiry while it runs', async () => {
    const name = fresh()
    const ttls: number[] = []
    let keysDuring: string[] = []
    await serve(name, async (x: number) => {
      if (x === 0) {
        keysDuring = await keysOf(raw, name)
        for (const k of keysDuring) ttls.push(Number(await raw.sendCommand(['PTTL', k])))
      }
      return x
    })
    await pipe(range(5), redisStage<number, number>(name, { url, batch: 1 })).toArray()
    expect(await keysOf(raw, name)).toEqual([])
    // a run's input stream, meta hash and the stage's run list, each with the stage's hash tag
    expect(keysDuring.some((k) => k.endsWith(':in'))).toBe(true)
    expect(keysDuring.some((k) => k.endsWith(':meta'))).toBe(true)
    expect(keysDuring.every((k) => k.startsWith(`stageline:{${name}}:`))).toBe(true)
    expect(ttls.length).toBe(keysDuring.length)
    for (const t of ttls) expect(t).toBeGreaterThan(0)
  })

  test('an early break stops feeding, aborts ctx.signal for the run in the workers and deletes its keys', async () => {
    const name = fresh()
    const reasons: unknown[] = []
    let started = 0
    await serve(
      name,
      async (x: number, ctx: WorkerContext) => {
        started++
        if (x === 0) return x
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
        reasons.push(ctx.signal.reason)
        throw ctx.signal.reason
      },
      4,
    )
    let pulled = 0
    let closed = 0
    function* source(): Generator<number> {
      try {
        for (let i = 0; i < 1_000_000; i++) {
          pulled++
          yield i
        }
      } finally {
        closed++
      }
    }
    const capacity = 20
    for await (const x of pipe(source, redisStage<number, number>(name, { url, batch: 1, capacity }))) {
      expect(x).toBe(0)
      break
    }
    expect(closed).toBe(1)
    expect(pulled).toBeLessThanOrEqual(capacity + 1)
    await waitFor('the run keys to be deleted', async () => (await keysOf(raw, name)).length === 0)
    await waitFor('the held items to be aborted', () => reasons.length === started - 1)
    expect(reasons[0]).toBeInstanceOf(RunStopped)
  })

  test('a worker error rejects the run with a TaskException carrying the remote name, message and stack', async () => {
    const name = fresh()
    await serve(name, function check(x: number) {
      if (x === 7) throw new TypeError(`seven is bad (${x})`)
      return x
    })
    let closed = 0
    function* source(): Generator<number> {
      try {
        yield* range(1_000_000)
      } finally {
        closed++
      }
    }
    const err = await pipe(
      source,
      redisStage<number, number>(name, { url, batch: 3 }),
      mapStage((x: number) => x),
    )
      .toArray()
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskException)
    const te = err as TaskException
    expect(te.stage).toBe(name)
    expect(te.item).toBe(7)
    expect(te.message).toBe(`The task "${name}-0" raised TypeError: seven is bad (7)`)
    expect(te.cause).toBeInstanceOf(RemoteError)
    const cause = te.cause as RemoteError
    expect(cause.name).toBe('TypeError')
    expect(cause.message).toBe('seven is bad (7)')
    expect(cause.stack).toMatch(/^TypeError: seven is bad \(7\)\n +at .*check.*redis\.spec\.ts/)
    expect(cause.seq).toBe(7)
    expect(cause.attempt).toBe(1)
    expect(cause.consumer).toMatch(/:\d+:[0-9a-f]+$/)
    expect(closed).toBe(1)
    await waitFor('the failed run keys to be deleted', async () => (await keysOf(raw, name)).length === 0)
  })

  test('a thrown non-Error value and an error code arrive as a RemoteError too', async () => {
    const name = fresh()
    await serve(name, (x: number) => {
      if (x === 1) throw 'plain string'
      if (x === 2) throw Object.assign(new Error('no such file'), { code: 'ENOENT' })
      return x
    })
    const e1 = await pipe([1], redisStage<number, number>(name, { url }))
      .toArray()
      .catch((e: unknown) => e)
    const c1 = (e1 as TaskException).cause as RemoteError
    expect([c1.name, c1.message, c1.code]).toEqual([
      'Error',
      'a non-Error value was thrown: plain string',
      undefined,
    ])
    const e2 = await pipe([2], redisStage<number, number>(name, { url }))
      .toArray()
      .catch((e: unknown) => e)
    const c2 = (e2 as TaskException).cause as RemoteError
    expect([c2.name, c2.message, c2.code]).toEqual(['Error', 'no such file', 'ENOENT'])
  })

  test('two concurrent runs sharing a Redis and a stage name do not mix items', async () => {
    const name = fresh()
    await serve(name, async (x: string) => `${x}!`, 4)
    const stage = redisStage<string, string>(name, { url, batch: 5, capacity: 30 })
    const a = range(300).map((i) => `a${i}`)
    const b = range(300).map((i) => `b${i}`)
    const [ra, rb] = await Promise.all([pipe(a, stage).toArray(), pipe(b, stage).toArray()])
    expect(ra.sort()).toEqual(a.map((x) => `${x}!`).sort())
    expect(rb.sort()).toEqual(b.map((x) => `${x}!`).sort())
  })

  test('Date, Map, Set, typed arrays, BigInt, undefined and cycles round-trip both ways', async () => {
    const name = fresh()
    await serve(name, (x: unknown) => ({ got: x, made: new Map<string, unknown>([['when', new Date(5)]]) }))
    const cyclic: { name: string; self?: unknown } = { name: 'c' }
    cyclic.self = cyclic
    const items: unknown[] = [
      new Date(0),
      new Map<unknown, unknown>([
        [1, { a: 1 }],
        ['k', new Set([1, 2])],
      ]),
      new Set(['x', 'y']),
      new Uint8Array([1, 2, 3]),
      new Float64Array([1.5, -2]),
      10n ** 20n,
      undefined,
      null,
      cyclic,
    ]
    const out = (await pipe(
      items,
      redisStage<unknown, { got: unknown; made: Map<string, unknown> }>(name, {
        url,
        ordered: true,
        batch: 4,
      }),
    ).toArray()) as { got: any; made: Map<string, unknown> }[]
    expect(out.map((r) => r.got).slice(0, 8)).toEqual(items.slice(0, 8))
    expect(out[1]!.got).toBeInstanceOf(Map)
    expect(out[1]!.got.get('k')).toBeInstanceOf(Set)
    expect(out[3]!.got).toBeInstanceOf(Uint8Array)
    expect(out[4]!.got).toBeInstanceOf(Float64Array)
    expect(out[6]!.got).toBeUndefined()
    expect(out[8]!.got.self).toBe(out[8]!.got)
    expect(out[0]!.made).toBeInstanceOf(Map)
    expect(out[0]!.made.get('when')).toEqual(new Date(5))
  })

  test('ordered: true emits results in input order whatever order the workers finish in', async () => {
    const name = fresh()
    const delayed = (f: number, m: number) => async (x: number) => {
      await sleep((x * f) % m)
      return x
    }
    await serve(name, delayed(7, 5), 4)
    await serve(name, delayed(3, 4), 4)
    const out = await pipe(
      range(200),
      redisStage<number, number>(name, { url, ordered: true, batch: 2, capacity: 24, qsize: 0 }),
    ).toArray()
    expect(out).toEqual(range(200))
  })

  test('the bound holds while a slow worker runs: Redis never holds more than capacity items of the run', async () => {
    const name = fresh()
    await serve(
      name,
      async (x: number) => {
        await sleep(2)
        return x
      },
      2,
    )
    const capacity = 10
    const batch = 3
    let pulled = 0
    let delivered = 0
    let maxAhead = 0
    function* source(): Generator<number> {
      for (let i = 0; i < 150; i++) {
        pulled++
        maxAhead = Math.max(maxAhead, pulled - delivered)
        yield i
      }
    }
    // the run's item count, and the entries in its streams, sampled while it runs
    const sample = `local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
      local n, xin, xout = 0, 0, 0
      for _, id in ipairs(ids) do
        local base = string.sub(KEYS[1], 1, -5) .. id
        n = math.max(n, tonumber(redis.call('HGET', base .. ':meta', 'n') or 0))
        xin = math.max(xin, redis.call('XLEN', base .. ':in'))
        xout = math.max(xout, redis.call('XLEN', base .. ':out'))
      end
      return {n, xin, xout, #ids}`
    const peaks = [0, 0, 0]
    let samples = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const r = (await raw.sendCommand(['EVAL', sample, '1', `stageline:{${name}}:runs`])) as number[]
        if (r[3]! > 0) samples++
        for (let i = 0; i < 3; i++) peaks[i] = Math.max(peaks[i]!, r[i]!)
      }
    })()
    const stage = redisStage<number, number>(name, { url, capacity, batch, qsize: 0 })
    for await (const _ of pipe(source, stage)) delivered++
    sampling = false
    await sampler
    expect(delivered).toBe(150)
    expect(samples).toBeGreaterThan(10)
    // the count of items came within an entry of the bound and never passed it (an entry is sent
    // whole once it fits); XLEN counts entries, at most one per item
    expect(peaks[0]).toBeGreaterThan(capacity - batch)
    expect(peaks[0]).toBeLessThanOrEqual(capacity)
    expect(peaks[1]).toBeLessThanOrEqual(capacity)
    expect(peaks[2]).toBeLessThanOrEqual(capacity)
    // read ahead of the consumer: the items in Redis plus the entry being filled, never more
    expect(maxAhead).toBeGreaterThanOrEqual(capacity)
    expect(maxAhead).toBeLessThanOrEqual(capacity + batch)
  })

  test('an item slower than visibilityTimeout is renewed, not redelivered, and comes back once', async () => {
    const name = fresh()
    const calls = new Map<number, number>()
    const work = async (x: number, ctx: WorkerContext): Promise<{ x: number; attempt: number }> => {
      calls.set(x, (calls.get(x) ?? 0) + 1)
      if (x === 3) await sleep(800)
      return { x, attempt: ctx.attempt }
    }
    // two workers: had the slow item's lease lapsed, the idle one would have reclaimed it
    await serve(name, work, 2)
    await serve(name, work, 2)
    const out = await pipe(
      range(10),
      redisStage<number, { x: number; attempt: number }>(name, {
        url,
        batch: 1,
        visibilityTimeout: 200,
      }),
    ).toArray()
    expect(out.map((r) => r.x).sort((a, b) => a - b)).toEqual(range(10))
    expect(out.find((r) => r.x === 3)!.attempt).toBe(1)
    expect(calls.get(3)).toBe(1)
  })

  test('an entry delivered more than maxDeliveries times fails the run with a DeliveryLimitError', async () => {
    const name = fresh()
    const stage = redisStage<number, number>(name, { url, batch: 1, maxDeliveries: 1, visibilityTimeout: 60 })
    const run = pipe([1, 2, 3], stage).toArray()
    // a consumer that takes the first entry and dies without a word
    const [runId] = await waitFor('the run to start', () =>
      runsOf(raw, name).then((r) => (r.length ? r : null)),
    )
    const key = `stageline:{${name}}:${runId}:in`
    await waitFor('the first entry', async () => Number(await raw.sendCommand(['XLEN', key])) > 0)
    await raw.sendCommand(['XREADGROUP', 'GROUP', name, 'ghost', 'COUNT', '1', 'STREAMS', key, '>'])
    await serve(name, (x: number) => x)
    const err = await run.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).item).toBe(1)
    const cause = (err as TaskException).cause as DeliveryLimitError
    expect(cause).toBeInstanceOf(DeliveryLimitError)
    expect(cause.deliveries).toBe(2)
    expect(cause.maxDeliveries).toBe(1)
    expect(cause.message).toBe(
      `stage "${name}": the entry holding item 0 was delivered 2 times (maxDeliveries: 1)`,
    )
  })

  test('with deadLetter, such an entry goes to the dead-letter stream and the run goes on without it', async () => {
    const name = fresh()
    const stage = redisStage<number, number>(name, {
      url,
      batch: 2,
      maxDeliveries: 1,
      visibilityTimeout: 60,
      deadLetter: true,
      ordered: true,
    })
    const run = pipe([1, 2, 3, 4, 5], stage).toArray()
    const [runId] = await waitFor('the run to start', () =>
      runsOf(raw, name).then((r) => (r.length ? r : null)),
    )
    const key = `stageline:{${name}}:${runId}:in`
    await waitFor('the first entry', async () => Number(await raw.sendCommand(['XLEN', key])) > 0)
    await raw.sendCommand(['XREADGROUP', 'GROUP', name, 'ghost', 'COUNT', '1', 'STREAMS', key, '>'])
    await serve(name, (x: number) => x * 10)
    expect(await run).toEqual([30, 40, 50])
    const dead = `stageline:{${name}}:dead`
    const entries = (await raw.sendCommand(['XRANGE', dead, '-', '+'])) as [string, string[]][]
    expect(entries.length).toBe(1)
    const fields = entries[0]![1]
    const get = (f: string): string => fields[fields.indexOf(f) + 1]!
    expect([get('run'), get('seq'), get('count'), get('deliveries')]).toEqual([runId, '0', '2', '2'])
    const items = (await raw.sendCommand(['XRANGE', dead, '-', '+'], {
      typeMapping: { 36: Buffer },
    })) as [Buffer, Buffer[]][]
    const payload = items[0]![1][items[0]![1].findIndex((b) => b.toString() === 'items') + 1]!
    expect(unpackMultiple(payload)).toEqual([1, 2])
    expect(await keysOf(raw, name)).toEqual([dead])
    await raw.del(dead)
  })

  test('close() lets held items finish, acknowledges them and disconnects', async () => {
    const name = fresh()
    let begun = false
    let abortedAt = -1
    const w = await serve(name, async (x: number, ctx: WorkerContext) => {
      begun = true
      const t0 = performance.now()
      ctx.signal.addEventListener('abort', () => (abortedAt = performance.now() - t0))
      await sleep(150) // ignores the signal
      return x + 1
    })
    const run = pipe([41], redisStage<number, number>(name, { url })).toArray()
    await waitFor('the item to start', () => begun)
    await expect(w.close({ grace: -1 })).rejects.toThrow(
      'worker.close(): expected `grace` to be a number of milliseconds from 0 to 2147483647 (about 24.8 days, the longest a timer can wait) or `Infinity`, got -1 (number)',
    )
    await w.close({ grace: 50 })
    await w.closed
    expect(await run).toEqual([42])
    // the signal aborted after the grace period, while the item was still running
    expect(abortedAt).toBeGreaterThanOrEqual(40)
  })

  test('close({ grace: Infinity }) never aborts held items, and a grace past a timer is refused', async () => {
    const name = fresh()
    let begun = false
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let aborted: boolean | undefined
    const w = await serve(name, async (x: number, ctx: WorkerContext) => {
      begun = true
      await gate
      aborted = ctx.signal.aborted
      return x + 1
    })
    const run = pipe([1], redisStage<number, number>(name, { url })).toArray()
    await waitFor('the item to start', () => begun)
    await expect(w.close({ grace: 2 ** 31 })).rejects.toThrow(
      'worker.close(): expected `grace` to be a number of milliseconds from 0 to 2147483647 (about 24.8 days, the longest a timer can wait) or `Infinity`, got 2147483648 (number)',
    )
    // a timer asked to wait longer than 2^31-1 ms (or Infinity) fires after 1 ms instead
    const timers = vi.spyOn(globalThis, 'setTimeout')
    try {
      const closing = w.close({ grace: Number.POSITIVE_INFINITY })
      expect(timers.mock.calls.filter((c) => !((c[1] ?? 0) <= MAX_TIMER_MS))).toEqual([])
      release()
      await closing
    } finally {
      timers.mockRestore()
    }
    expect(aborted).toBe(false)
    expect(await run).toEqual([2])
  })

  test('maxWait: Infinity sends an entry only when it is full or the input ends, with no timer', async () => {
    const name = fresh()
    await serve(name, (x: number) => x)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let parked = false
    async function* source(): AsyncGenerator<number> {
      yield* [0, 1, 2, 3]
      parked = true
      await gate
    }
    const out: number[] = []
    const timers = vi.spyOn(globalThis, 'setTimeout')
    let run: Promise<void> | undefined
    try {
      const stage = redisStage<number, number>(name, { url, batch: 3, maxWait: Number.POSITIVE_INFINITY })
      expect(stage.options).toMatchObject({ maxWait: Number.POSITIVE_INFINITY })
      run = (async () => {
        for await (const x of pipe(source, stage)) out.push(x)
      })()
      // the full entry (0, 1, 2) goes and comes back; 3 waits for more items, however long
      await waitFor('the first entry back', () => out.length >= 3)
      expect(parked).toBe(true)
      expect(out.sort()).toEqual([0, 1, 2])
      expect(timers.mock.calls.filter((c) => !((c[1] ?? 0) <= MAX_TIMER_MS))).toEqual([])
    } finally {
      timers.mockRestore()
      release()
      await run
    }
    expect(out.sort()).toEqual([0, 1, 2, 3])
  })

  test('close() while the server is unreachable gives up on it after connectTimeout instead of waiting forever', async () => {
    const own = await startRedisServer()
    if (!own.ok) throw new Error(own.reason)
    const w = await serveStage(fresh(), { url: own.server.url, connectTimeout: 300 }, (x: number) => x)
    await own.server.stop()
    // node-redis's close() waits for replies to the commands queued while it reconnects: from a
    // server that is gone, forever
    await w.close()
    await w.closed
  })

  test('an item aborted by close() goes back to the queue and another worker completes it', async () => {
    const name = fresh()
    const attempts: [string, number][] = []
    const a = await serve(name, async (_: number, ctx: WorkerContext) => {
      attempts.push(['a', ctx.attempt])
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      throw ctx.signal.reason
    })
    const run = pipe([1, 2], redisStage<number, number>(name, { url, batch: 2 })).toArray()
    await waitFor('worker a to start', () => attempts.length > 0)
    await serve(name, (x: number, ctx: WorkerContext) => {
      attempts.push(['b', ctx.attempt])
      return x
    })
    await a.close()
    expect((await run).sort()).toEqual([1, 2])
    expect(attempts).toEqual([
      ['a', 1],
      ['b', 2],
      ['b', 2],
    ])
  })

  test('an item that cannot be sent fails the run naming it and where, and leaves no key behind', async () => {
    const name = fresh()
    const served: unknown[] = []
    await serve(name, (x: unknown) => {
      served.push(x)
      return x
    })
    class Point {
      x = 1
    }
    const anon = [() => 1][0]!
    const cases: [unknown, string][] = [
      [anon, 'item is a function (anonymous)'],
      [{ id: 1, f() {} }, 'item.f is a function f'],
      [{ tags: ['a', anon] }, 'item.tags[1] is a function (anonymous)'],
      [Symbol('s'), 'item is a symbol (Symbol(s))'],
      [{ at: new Point() }, 'item.at is an instance of Point'],
      [new Map([['k', new Set([1, anon])]]), 'item.get("k").values()[1] is a function (anonymous)'],
    ]
    for (const [bad, reason] of cases) {
      const err = await pipe([1, 2, bad, 3], redisStage<unknown, unknown>(name, { url, batch: 2 }))
        .toArray()
        .catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TaskException)
      const te = err as TaskException
      expect(te.item).toBe(bad)
      expect(te.stage).toBe(name)
      expect(te.cause).toBeInstanceOf(TypeError)
      expect((te.cause as Error).message).toBe(`${reason}; ${SENDABLE}`)
      // deleted before the run rejected, not after: nothing to wait for
      expect(await keysOf(raw, name)).toEqual([])
    }
    // nothing after the refused item was sent, and nothing changed reached a worker
    for (const x of served) expect([1, 2]).toContain(x)
  })

  test('a result that cannot be sent back fails its item as a throw would, never arriving changed', async () => {
    const name = fresh()
    await serve(name, (x: number) => {
      if (x === 2) return { user: { id: 2, f() {} } }
      if (x === 4) return new URL('http://h/')
      if (x === 5) return Symbol('no')
      return x
    })
    const cases: [number, string][] = [
      [2, 'result.user.f is a function f'],
      [4, 'result is an instance of URL'],
      [5, 'result is a symbol (Symbol(no))'],
    ]
    for (const [item, reason] of cases) {
      const err = await pipe([1, item, 3], redisStage<number, unknown>(name, { url, batch: 3 }))
        .toArray()
        .catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TaskException)
      const te = err as TaskException
      expect(te.item).toBe(item)
      expect(te.cause).toBeInstanceOf(RemoteError)
      const cause = te.cause as RemoteError
      expect([cause.name, cause.message, cause.seq]).toEqual(['TypeError', `${reason}; ${SENDABLE}`, 1])
    }
    // the worker goes on serving
    expect((await pipe([1, 3], redisStage<number, unknown>(name, { url })).toArray()).sort()).toEqual([1, 3])
  })

  test('a thrown value that cannot be described still fails the run with a RemoteError, and the worker goes on', async () => {
    const name = fresh()
    const hostile = (what: string): PropertyDescriptor => ({
      get() {
        throw new Error(`no ${what}`)
      },
    })
    const throwers: (() => unknown)[] = [
      () => Object.defineProperty(new Error('m'), 'message', hostile('message')),
      () => Object.defineProperty(new TypeError('n'), 'name', hostile('name')),
      () => Object.defineProperty(new RangeError('s'), 'stack', hostile('stack')),
      () => Object.defineProperty(new Error('c'), 'code', hostile('code')),
      () =>
        new Proxy(new Error('p'), {
          getPrototypeOf() {
            throw new Error('no prototype')
          },
        }),
      () => {
        const { proxy, revoke } = Proxy.revocable(new Error('r'), {})
        revoke()
        return proxy
      },
      () => ({
        toString() {
          throw new Error('no string')
        },
      }),
    ]
    // described as the one error form describes them (lib/wire/errors.ts), as thread stages do
    const expected: [string, string | RegExp][] = [
      ['Error', 'an Error was thrown whose name or message could not be read: Error (describing it threw)'],
      [
        'Error',
        'an Error was thrown whose name or message could not be read: TypeError (describing it threw)',
      ],
      ['RangeError', 's'],
      ['Error', 'c'],
      ['Error', 'a value was thrown that could not be looked at: a value that could not be described'],
      ['Error', 'a value was thrown that could not be looked at: a value that could not be described'],
      ['Error', 'a non-Error value was thrown: [object Object]'],
    ]
    // odd items throw, even ones reject (the function is async)
    await serve(name, (x: number) => {
      if (x >= 100) return Promise.reject(throwers[x - 100]!())
      if (x >= 10) throw throwers[x - 10]!()
      return x
    })
    for (const base of [10, 100]) {
      for (let i = 0; i < throwers.length; i++) {
        const err = await pipe([base + i], redisStage<number, number>(name, { url }))
          .toArray()
          .catch((e: unknown) => e)
        expect(err).toBeInstanceOf(TaskException)
        const cause = (err as TaskException).cause as RemoteError
        expect(cause).toBeInstanceOf(RemoteError)
        expect(cause.name).toBe(expected[i]![0])
        expect(cause.message).toMatch(expected[i]![1])
        expect(cause.code).toBeUndefined()
      }
    }
    expect(await pipe([1, 2], redisStage<number, number>(name, { url, ordered: true })).toArray()).toEqual([
      1, 2,
    ])
  })

  test('a hostile thenable returned by the function fails its item or settles it once', async () => {
    const name = fresh()
    let running = 0
    let most = 0
    const thenables: unknown[] = [
      undefined,
      {
        // biome-ignore lint/suspicious/noThenProperty: a hostile thenable is what is tested
        get then() {
          throw new Error('then getter')
        },
      },
      {
        // biome-ignore lint/suspicious/noThenProperty: a hostile thenable is what is tested
        then() {
          throw new Error('then threw')
        },
      },
      {
        // biome-ignore lint/suspicious/noThenProperty: a hostile thenable is what is tested
        then(ok: (v: unknown) => void, bad: (e: unknown) => void) {
          ok(30)
          ok(31)
          bad(new Error('too late'))
        },
      },
    ]
    await serve(name, (x: number) => {
      if (x < thenables.length) return thenables[x]
      return (async () => {
        most = Math.max(most, ++running)
        await sleep(1)
        running--
        return x
      })()
    })
    for (const [x, message] of [
      [1, 'then getter'],
      [2, 'then threw'],
    ] as const) {
      const err = await pipe([x], redisStage<number, number>(name, { url }))
        .toArray()
        .catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TaskException)
      expect(((err as TaskException).cause as RemoteError).message).toBe(message)
    }
    expect(await pipe([3], redisStage<number, number>(name, { url })).toArray()).toEqual([30])
    // the worker's count of running items stayed right: still one item at a time (concurrency 1)
    const out = await pipe(range(20, 10), redisStage<number, number>(name, { url, batch: 1 })).toArray()
    expect(out.sort((a, b) => a - b)).toEqual(range(20, 10))
    expect(most).toBe(1)
  })

  test('items from a trickling source go out in partial entries after maxWait, not when the entry is full', async () => {
    const name = fresh()
    await serve(name, (x: number) => x)
    for (const maxWait of [0, 5]) {
      let pulled = 0
      async function* trickle(): AsyncGenerator<number> {
        for (let i = 0; i < 6; i++) {
          await sleep(15)
          pulled++
          yield i
        }
      }
      const seenAt: number[] = []
      for await (const _ of pipe(trickle, redisStage<number, number>(name, { url, batch: 100, maxWait }))) {
        seenAt.push(pulled)
      }
      // each result came back while the source was still producing (an entry of 100 would wait for all)
      expect(seenAt.length).toBe(6)
      expect(seenAt[0]).toBeLessThan(6)
    }
  })

  /** The change in a stage's time totals between two snapshots. */
  const spent = (a: StageStats, b: StageStats): { working: number; starved: number; blocked: number } => ({
    working: b.workingMs - a.workingMs,
    starved: b.starvedMs - a.starvedMs,
    blocked: b.blockedMs - a.blockedMs,
  })

  test('stats count the capacity slots: workers and bound are capacity, busy the items in Redis not back yet', async () => {
    const name = fresh()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    await serve(
      name,
      async (x: number) => {
        if (x < 3) await gate
        return x
      },
      8,
    )
    const run = pipe(range(10), redisStage<number, number>(name, { url, capacity: 5, batch: 1 })).start()
    await waitFor('every item but the held ones back', () => run.stats().stages[0]!.out === 7)
    const a = run.stats().stages[0]!
    expect(a).toMatchObject({ name, workers: 5, bound: 5, busy: 3, in: 10, out: 7, failed: 0 })
    await raw.ping() // some time passes, in nothing but a round trip
    const b = run.stats().stages[0]!
    expect(b.busy).toBe(3)
    // 3 slots working, 2 starved (the input is done), none blocked: time accrues in that ratio
    const d = spent(a, b)
    expect(d.working).toBeGreaterThan(0)
    expect(d.starved / d.working).toBeCloseTo(2 / 3, 6)
    expect(d.blocked).toBe(0)
    release()
    await run.done
    const end = run.stats().stages[0]!
    expect(end).toMatchObject({ workers: 5, bound: 5, busy: 0, in: 10, out: 10 })
    // once the run is over, its slots count no more time
    await raw.ping()
    expect(spent(end, run.stats().stages[0]!)).toEqual({ working: 0, starved: 0, blocked: 0 })
  })

  test('results that wait for room downstream count as blocked slots, not busy ones', async () => {
    const name = fresh()
    await serve(name, (x: number) => x)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const seen: number[] = []
    // one entry of 4 items comes back as one record: the consumer takes the first and holds it
    const run = pipe(
      range(4),
      redisStage<number, number>(name, {
        url,
        capacity: 4,
        batch: 4,
        qsize: 0,
        maxWait: Number.POSITIVE_INFINITY,
      }),
    ).start({
      onResult: (x) => {
        seen.push(x)
        return seen.length === 1 ? gate : undefined
      },
    })
    await waitFor('the consumer to hold the first result', () => seen.length === 1)
    await waitFor('the collector to wait for room', () => run.stats().stages[0]!.out === 2)
    const a = run.stats().stages[0]!
    expect(a).toMatchObject({ workers: 4, busy: 0, in: 4, out: 2 })
    await raw.ping()
    const d = spent(a, run.stats().stages[0]!)
    // 3 results wait (the one being handed on and the 2 after it), 1 slot is free: 3 to 1
    expect(d.working).toBe(0)
    expect(d.starved).toBeGreaterThan(0)
    expect(d.blocked / d.starved).toBeCloseTo(3, 6)
    release()
    await run.done
    expect(seen).toEqual([0, 1, 2, 3])
  })

  test("ordered: results wait in the port's reorder window, which holds qsize + capacity items", async () => {
    const name = fresh()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    await serve(
      name,
      async (x: number) => {
        if (x === 0) await gate
        return x
      },
      4,
    )
    let pulled = 0
    function* source(): Generator<number> {
      for (let i = 0; i < 30; i++) {
        pulled++
        yield i
      }
    }
    const out: number[] = []
    const stage = redisStage<number, number>(name, { url, ordered: true, capacity: 4, batch: 1, qsize: 2 })
    const run = pipe(source, stage).start({ onResult: (x) => void out.push(x) })
    // item 0 is held in Redis; items 1..5 came back and wait for it in the window, which is full
    await waitFor('the reorder window to fill', () => run.stats().stages[0]!.out === 5)
    await raw.ping()
    const a = run.stats().stages[0]!
    expect(a).toMatchObject({ workers: 4, bound: 4, busy: 1, in: 6, out: 5, queued: 6, capacity: 6 })
    expect(pulled).toBe(6)
    expect(out).toEqual([])
    await raw.ping()
    const b = run.stats().stages[0]!
    expect(b).toMatchObject({ in: 6, out: 5 })
    // the stage waits for room downstream: 1 slot works, the other 3 are blocked, none starved
    const d = spent(a, b)
    expect(d.starved).toBe(0)
    expect(d.working).toBeGreaterThan(0)
    expect(d.blocked / d.working).toBeCloseTo(3, 6)
    release()
    await run.done
    expect(out).toEqual(range(30))
  })

  test('a worker refuses a run of another protocol version, which fails naming both versions', async () => {
    const cases: [string, (key: string) => Promise<unknown>, string][] = [
      ['a later one', (key) => raw.hSet(key, 'v', '99'), 'version 99'],
      [
        'an earlier release, which records none',
        (key) => raw.hDel(key, 'v'),
        'version 1 (it records none: a stageline release before versions were recorded)',
      ],
    ]
    for (const [, alter, theirs] of cases) {
      const name = fresh()
      // no worker serves the stage yet: the run's metadata is changed before any reads it
      const run = pipe(range(5), redisStage<number, number>(name, { url }))
        .toArray()
        .catch((e: unknown) => e)
      const [runId] = await waitFor('the run to start', () =>
        runsOf(raw, name).then((r) => (r.length ? r : null)),
      )
      await alter(`stageline:{${name}}:${runId}:meta`)
      const calls: number[] = []
      const w = await serve(name, (x: number) => {
        calls.push(x)
        return x
      })
      const err = await run
      expect(err).toBeInstanceOf(TaskException)
      const te = err as TaskException
      expect([te.stage, te.item]).toEqual([name, undefined])
      const cause = te.cause as RemoteError
      expect(cause).toBeInstanceOf(RemoteError)
      expect(cause.message).toBe(
        `stage "${name}": run ${runId} was started by a pipeline that speaks ${theirs} of stageline's Redis protocol, and this worker (${w.id}) speaks version 2: it does not read the run's items. Run the same stageline version in the pipeline's process and in the stage's workers`,
      )
      expect([cause.seq, cause.attempt, cause.consumer]).toEqual([-1, 0, w.id])
      // none of the run's items was read, and the failed run left nothing behind
      expect(calls).toEqual([])
      expect(await keysOf(raw, name)).toEqual([])
      // the worker goes on serving runs of its own version
      expect((await pipe([1, 2], redisStage<number, number>(name, { url })).toArray()).sort()).toEqual([1, 2])
    }
  })

  test("a remote error's properties and cause come along, and do not overwrite the RemoteError's own fields", async () => {
    const name = fresh()
    await serve(name, (x: number) => {
      throw Object.assign(new RangeError('outer', { cause: new TypeError('inner') }), {
        code: 'E_OUT',
        status: 503,
        details: { id: x },
        seq: 'theirs',
        consumer: 'theirs',
      })
    })
    const err = await pipe([4], redisStage<number, number>(name, { url }))
      .toArray()
      .catch((e: unknown) => e)
    const cause = (err as TaskException).cause as RemoteError & { status?: unknown; details?: unknown }
    expect(cause).toBeInstanceOf(RemoteError)
    expect([cause.name, cause.message, cause.code, cause.status, cause.details, cause.seq]).toEqual([
      'RangeError',
      'outer',
      'E_OUT',
      503,
      { id: 4 },
      0,
    ])
    expect(cause.consumer).toMatch(/:\d+:[0-9a-f]+$/)
    expect(cause.stack).toMatch(/^RangeError: outer\n/)
    expect(cause.cause).toBeInstanceOf(TypeError)
    expect((cause.cause as Error).message).toBe('inner')
  })

  test('an error record of an earlier worker, without the error form, still fails the run', async () => {
    const name = fresh()
    const run = pipe([1], redisStage<number, number>(name, { url }))
      .toArray()
      .catch((e: unknown) => e)
    const [runId] = await waitFor('the run to start', () =>
      runsOf(raw, name).then((r) => (r.length ? r : null)),
    )
    const legacy = {
      name: 'TypeError',
      message: 'old',
      stack: 'TypeError: old\n    at w (w.js:1:1)',
      code: 404,
      consumer: 'h:1:ab',
      attempt: 2,
    }
    // packed as workers pack, with structured clone (a plain msgpack map would decode as a Map)
    const packr = new Packr({ structuredClone: true })
    const record = ['s', '0', 'e', packr.pack(legacy), 'x', packr.pack(1)]
    await raw.sendCommand(['XADD', `stageline:{${name}}:${runId}:out`, '*', ...record])
    const err = await run
    expect((err as TaskException).item).toBe(1)
    const cause = (err as TaskException).cause as RemoteError
    expect(cause).toBeInstanceOf(RemoteError)
    expect([
      cause.name,
      cause.message,
      cause.stack,
      cause.code,
      cause.consumer,
      cause.attempt,
      cause.seq,
    ]).toEqual([...Object.values(legacy), 0])
  })

  test('results sent twice for the same items reach the consumer once', async () => {
    const name = fresh()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    await serve(name, async (x: number) => {
      if (x > 0) await gate
      return x
    })
    const out: number[] = []
    const run = (async () => {
      for await (const x of pipe(range(4), redisStage<number, number>(name, { url, batch: 1 }))) out.push(x)
    })()
    await waitFor('the first result', () => out.length === 1)
    // a second copy of item 0's result, as a worker that lost a race would have written it
    const [runId] = await runsOf(raw, name)
    await raw.sendCommand(['XADD', `stageline:{${name}}:${runId}:out`, '*', 's', '0', 'v', pack([0])])
    await sleep(20)
    release()
    await run
    expect(out.sort()).toEqual([0, 1, 2, 3])
  })

  test('the append script holds the bound even when the count in Redis disagrees with the pipeline', async () => {
    const name = fresh()
    await serve(name, async (x: number) => {
      await sleep(1)
      return x
    })
    let skewed = false
    const stage = redisStage<number, number>(name, { url, capacity: 8, batch: 3 })
    const out: number[] = []
    for await (const x of pipe(range(60), stage)) {
      if (!skewed) {
        // 4 items the pipeline does not know of: entries it sends whole must now be cut by the script
        const [runId] = await runsOf(raw, name)
        await raw.sendCommand(['HINCRBY', `stageline:{${name}}:${runId}:meta`, 'n', '4'])
        skewed = true
      }
      out.push(x)
    }
    expect(out.sort((a, b) => a - b)).toEqual(range(60))
  })

  test('a run whose keys vanish fails with a clear error', async () => {
    const name = fresh()
    await serve(name, async (x: number) => {
      await sleep(2)
      return x
    })
    const run = pipe(range(1000), redisStage<number, number>(name, { url, capacity: 10, batch: 2 }))
      .toArray()
      .catch((e: unknown) => e)
    const [runId] = await waitFor('the run to start', () =>
      runsOf(raw, name).then((r) => (r.length ? r : null)),
    )
    await raw.del(`stageline:{${name}}:${runId}:meta`)
    const err = await run
    expect(err).toBeInstanceOf(TaskException)
    const cause = (err as TaskException).cause as RunStateLostError
    expect(cause).toBeInstanceOf(RunStateLostError)
    expect([cause.stage, cause.runId, cause.missing, cause.reconnected]).toEqual([
      name,
      runId,
      undefined,
      false,
    ])
    expect(cause.message).toBe(
      `stage "${name}": the state of run ${runId} vanished from Redis (was the server restarted or flushed, were its keys deleted, or did they expire while this process was unresponsive?); whether its items completed cannot be known`,
    )
  })

  test("a worker that lost an entry's lease to another consumer aborts its items and the entry completes once", async () => {
    const name = fresh()
    const reasons: unknown[] = []
    const attempts: number[] = []
    await serve(name, async (x: number, ctx: WorkerContext) => {
      attempts.push(ctx.attempt)
      if (ctx.attempt > 1) return x
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
      reasons.push(ctx.signal.reason)
      throw ctx.signal.reason
    })
    const run = pipe([5], redisStage<number, number>(name, { url, visibilityTimeout: 60 })).toArray()
    await waitFor('the item to start', () => attempts.length === 1)
    const [runId] = await runsOf(raw, name)
    const key = `stageline:{${name}}:${runId}:in`
    const pending = (await raw.sendCommand(['XPENDING', key, name, '-', '+', '10'])) as [string, string][]
    // another consumer takes the entry over (as XAUTOCLAIM would after a stall), then goes silent
    await raw.sendCommand(['XCLAIM', key, name, 'ghost', '0', pending[0]![0]])
    expect(await run).toEqual([5])
    expect(reasons[0]).toBeInstanceOf(RunStopped)
    expect(String((reasons[0] as Error).message)).toMatch(/was handed to another worker/)
    // delivered to this worker, stolen by the ghost (a delivery), reclaimed from the silent ghost
    expect(attempts).toEqual([1, 3])
  })

  test('an unreachable server fails the run with a RedisConnectionError', async () => {
    const probe = await startRedisServer()
    if (!probe.ok) throw new Error(probe.reason)
    const dead = probe.server.url
    await probe.server.stop() // nothing listens on that port any more
    const err = await pipe([1], redisStage<number, number>(fresh(), { url: dead, connectTimeout: 200 }))
      .toArray()
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).cause).toBeInstanceOf(RedisConnectionError)
    expect(((err as TaskException).cause as Error).message).toMatch(
      /could not connect to Redis at redis:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/,
    )
    await expect(serveStage(fresh(), { url: dead, connectTimeout: 200 }, (x) => x)).rejects.toThrow(
      RedisConnectionError,
    )
  })

  describe('a server that requires a password', () => {
    let locked: RedisServer
    const secret = 's3cret-pass'
    const wrong = 'hunter2-wrong'
    beforeAll(async () => {
      const s = await startRedisServer({ password: secret })
      if (!s.ok) throw new Error(s.reason)
      locked = s.server
    })
    afterAll(() => locked?.stop())

    const connections = async (): Promise<number> => {
      const r = await rawClient(locked.url)
      const info = String(await r.sendCommand(['INFO', 'stats']))
      await r.close()
      return Number(/total_connections_received:(\d+)/.exec(info)![1])
    }

    test('a wrong password fails the run at once, without retrying, and never shows the password', async () => {
      const bad = `redis://:${wrong}@127.0.0.1:${locked.port}`
      const before = await connections()
      const err = await pipe([1], redisStage<number, number>(fresh(), { url: bad, connectTimeout: 10_000 }))
        .toArray()
        .catch((e: unknown) => e)
      // one refused login and no retry (the inspecting client's own connection is the other one)
      expect((await connections()) - before).toBe(2)
      expect(err).toBeInstanceOf(TaskException)
      const cause = (err as TaskException).cause as RedisConnectionError
      expect(cause).toBeInstanceOf(RedisConnectionError)
      expect(cause.message).toMatch(
        /could not connect to Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: the server refused the credentials \(WRONGPASS/,
      )
      for (const text of [
        inspect(err, { depth: 10 }),
        (err as Error).stack,
        cause.stack,
        JSON.stringify(cause),
      ]) {
        expect(text).not.toContain(wrong)
      }
      const e2 = await serveStage(fresh(), { url: bad }, (x) => x).catch((e: unknown) => e)
      expect(e2).toBeInstanceOf(RedisConnectionError)
      expect(inspect(e2, { depth: 10 })).not.toContain(wrong)
    })

    test('the right password, given as a client option, works', async () => {
      const name = fresh()
      const base = `redis://127.0.0.1:${locked.port}`
      const w = await serveStage(name, { url: base, client: { password: secret } }, (x: number) => -x)
      try {
        expect(
          await pipe(
            [1, 2],
            redisStage<number, number>(name, { url: base, client: { password: secret } }),
          ).toArray(),
        ).toEqual(expect.arrayContaining([-1, -2]))
      } finally {
        await w.close()
      }
    })
  })

  test('losing Redis mid-run fails the run and stops the worker with a RedisConnectionError', async () => {
    const own = await startRedisServer()
    if (!own.ok) throw new Error(own.reason)
    const name = fresh()
    let begun = false
    const w = await serveStage(name, { url: own.server.url, connectTimeout: 300 }, async (x: number) => {
      begun = true
      await sleep(50)
      return x
    })
    const run = pipe(
      range(100),
      redisStage<number, number>(name, { url: own.server.url, connectTimeout: 300, batch: 1 }),
    )
      .toArray()
      .catch((e: unknown) => e)
    await waitFor('the worker to start an item', () => begun)
    await own.server.stop()
    // hold the freed port, answering nothing: another spec file's server or HTTP listener taking
    // it would otherwise let the clients reconnect to a stranger
    const holder = createServer((socket) => socket.destroy())
    await new Promise<void>((resolve) => {
      holder.once('error', () => resolve()) // taken already: the test goes on without the guard
      holder.listen(own.server.port, '127.0.0.1', () => resolve())
    })
    try {
      const err = await run
      expect(err).toBeInstanceOf(TaskException)
      expect((err as TaskException).cause).toBeInstanceOf(RedisConnectionError)
      expect(((err as TaskException).cause as Error).message).toMatch(/Redis at redis:\/\/127\.0\.0\.1:\d+/)
      await expect(w.closed).rejects.toThrow(RedisConnectionError)
    } finally {
      await new Promise((resolve) => holder.close(resolve))
    }
  })
})

/**
 * stageline/redis when Redis loses what a run keeps there: a server restarted without persistence
 * (SIGKILLed, then started again empty on the same port while items are in flight), FLUSHALL, a
 * run's input stream or consumer group deleted, its keys expired, and entries lost while its keys
 * stay (what a failover to a replica that missed writes leaves). The run must fail with a
 * RunStateLostError, never wait forever nor finish short; the worker must drop that run, not spin,
 * and go on serving. A hang shows as a test reaching its timeout.
 *
 * Each test starts its own redis-server (no persistence, loopback, a free port: see
 * helpers/redis-killable.ts). Workers run in this process, as in redis.spec.ts.
 */
import { spawnSync } from 'node:child_process'
import { afterEach, describe, expect, test } from 'vitest'
import { mapStage, pipe, RunStopped, type Source, type Stage, TaskException } from '../lib/index.js'
import {
  RedisConnectionError,
  RunStateLostError,
  redisStage,
  type StageWorker,
  serveStage,
  type WorkerContext,
} from '../lib/redis/index.js'
import { freshRedis, redisAt, type Server } from './helpers/redis-killable.js'
import { reportUnavailable } from './helpers/redis-server.js'
import { type Raw, range, rawClient, runsOf, waitFor } from './helpers/redis-util.js'

const BINARY = process.env.REDIS_SERVER ?? 'redis-server'
/** Long enough for a loaded 2-core machine, short enough that a hang fails the test rather than CI. */
const TIMEOUT = 30_000

const probe = spawnSync(BINARY, ['--version'], { encoding: 'utf8' })
const unavailable =
  probe.error === undefined
    ? undefined
    : (probe.error as NodeJS.ErrnoException).code === 'ENOENT'
      ? `no ${BINARY} binary on PATH`
      : `${BINARY}: ${probe.error.message}`
if (unavailable !== undefined) reportUnavailable('spec/redis-lost-state.spec.ts', unavailable)

/** What a worker's `closed` did: still 'running', or how it settled. */
function watch(w: StageWorker): { state: 'running' | 'closed' | 'failed'; error?: unknown } {
  const seen: { state: 'running' | 'closed' | 'failed'; error?: unknown } = { state: 'running' }
  w.closed.then(
    () => (seen.state = 'closed'),
    (error: unknown) => Object.assign(seen, { state: 'failed', error }),
  )
  return seen
}

/** Commands the server has processed so far (spinning clients show as tens of thousands a second). */
async function commands(raw: Raw): Promise<number> {
  const info = String(await raw.sendCommand(['INFO', 'stats']))
  return Number(/total_commands_processed:(\d+)/.exec(info)![1])
}

/** Expires every key of the run whose input stream is KEYS[1], as a lapsed lease would. */
const EXPIRE_RUN = `local base = string.sub(KEYS[1], 1, -3)
for _, k in ipairs({'in', 'out', 'meta'}) do redis.call('PEXPIRE', base .. k, 1) end
return 1`

/**
 * The run's rejection (a TaskException), or a failure of the test if it finished (short). Observed
 * at once: a run that rejects before the test awaits this is not an unhandled rejection.
 */
function rejection(run: Promise<unknown[]>): Promise<TaskException> {
  const outcome = run.then(
    (values) => {
      throw new Error(`the run finished with ${values.length} results instead of failing`)
    },
    (error: unknown) => {
      expect(error).toBeInstanceOf(TaskException)
      return error as TaskException
    },
  )
  outcome.catch(() => {})
  return outcome
}

/**
 * Runs `source` through `stage` and a counting step; `run` is the run's rejection (see
 * {@link rejection}), `delivered()` how many results have come out so far.
 */
function countedRun(
  source: Source<number>,
  stage: Stage<number, number>,
): { run: Promise<TaskException>; delivered: () => number } {
  let n = 0
  const run = rejection(
    pipe(
      source,
      stage,
      mapStage((x: number) => {
        n++
        return x
      }),
    ).toArray(),
  )
  return { run, delivered: () => n }
}

describe.runIf(unavailable === undefined)("stageline/redis when Redis loses a run's state", () => {
  /** Workers, clients and gates to close after each test, last opened first; then the servers. */
  const cleanup: (() => Promise<unknown>)[] = []
  const servers: Server[] = []
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f().catch(() => {})
    for (const s of servers.splice(0)) await s.stop()
  })
  let n = 0
  const fresh = (): string => `lost${process.pid}-${++n}`
  const server = async (): Promise<Server> => {
    const s = await freshRedis()
    servers.push(s)
    return s
  }
  const client = async (url: string): Promise<Raw> => {
    const raw = await rawClient(url)
    cleanup.push(() => raw.close())
    return raw
  }
  const serve = async <I, O>(
    name: string,
    url: string,
    concurrency: number,
    fn: (x: I, ctx: WorkerContext) => O | Promise<O>,
  ): Promise<StageWorker> => {
    const w = await serveStage(name, { url, concurrency }, fn)
    cleanup.push(() => w.close())
    return w
  }

  test('a server restarted empty mid-run fails the run once reconnected; the worker drops the run and serves the next', {
    timeout: TIMEOUT,
  }, async () => {
    let s = await server()
    const { url, port } = s
    const name = fresh()
    let held: unknown
    let holding = false
    const worker = await serve(name, url, 4, async (x: number, ctx: WorkerContext) => {
      if (x === 60 && !holding) {
        // in flight when the server dies (in the first run only): the worker must let go of it
        holding = true
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
        held = ctx.signal.reason
        throw ctx.signal.reason
      }
      await new Promise((r) => setTimeout(r, 2))
      return x
    })
    const closed = watch(worker)
    const { run, delivered } = countedRun(
      range(3000),
      redisStage<number, number>(name, { url, batch: 2, capacity: 20 }),
    )
    await waitFor('item 60 to be in flight', () => holding && delivered() >= 50)
    await s.kill()
    s = await redisAt(port).catch((err: Error) => {
      throw new Error(`could not restart Redis on port ${port} (another process took it?): ${err.message}`)
    })
    servers.push(s)

    const err = await run
    expect(err.stage).toBe(name)
    const cause = err.cause as RunStateLostError
    expect(cause).toBeInstanceOf(RunStateLostError)
    expect(cause.stage).toBe(name)
    expect(cause.reconnected).toBe(true)
    expect(cause.missing).toBeUndefined()
    expect(cause.message).toBe(
      `stage "${name}": the state of run ${cause.runId} vanished from Redis while the connection was down (was the server restarted, or flushed?); whether its items completed cannot be known`,
    )
    // what the dropped connection said, kept as the cause
    expect(cause.cause).toBeInstanceOf(RedisConnectionError)
    expect(delivered()).toBeLessThan(3000)

    // the worker let go of the run's item, reconnected, and serves a new run on the new server
    await waitFor('the held item to be aborted', () => held !== undefined)
    expect(held).toBeInstanceOf(RunStopped)
    expect(
      await pipe(range(100), redisStage<number, number>(name, { url, batch: 3 })).toArray(),
    ).toHaveLength(100)
    expect(closed.state).toBe('running')
  })

  test('a restart while the run waits on its source fails the run as soon as the connection is back', {
    timeout: TIMEOUT,
  }, async () => {
    let s = await server()
    const { url, port } = s
    const name = fresh()
    const worker = await serve(name, url, 2, (x: number) => x)
    const closed = watch(worker)
    let resume!: () => void
    const paused = new Promise<void>((resolve) => (resume = resolve))
    let pulled = 0
    async function* source(): AsyncGenerator<number> {
      for (let i = 0; i < 10; i++) {
        pulled++
        yield i
      }
      await paused // nothing in flight meanwhile: every item is back, no command is waiting
      pulled++
      yield 10
    }
    const { run, delivered } = countedRun(source, redisStage<number, number>(name, { url, batch: 1 }))
    cleanup.push(async () => resume())
    await waitFor('the first ten results', () => delivered() === 10)
    await s.kill()
    s = await redisAt(port)
    servers.push(s)
    // not on the next append (the source is still paused), nor 10 s later when the keys are
    // next renewed: on the reconnect
    const err = await run
    const cause = err.cause as RunStateLostError
    expect(cause).toBeInstanceOf(RunStateLostError)
    expect(cause.reconnected).toBe(true)
    expect(cause.cause).toBeInstanceOf(RedisConnectionError)
    expect(pulled).toBe(10)
    expect(closed.state).toBe('running')
  })

  test('FLUSHALL mid-run fails the run with a RunStateLostError; the worker goes on serving', {
    timeout: TIMEOUT,
  }, async () => {
    const s = await server()
    const raw = await client(s.url)
    const name = fresh()
    const worker = await serve(name, s.url, 4, async (x: number) => {
      await new Promise((r) => setTimeout(r, 2))
      return x
    })
    const closed = watch(worker)
    const { run, delivered } = countedRun(
      range(3000),
      redisStage<number, number>(name, { url: s.url, batch: 2, capacity: 20 }),
    )
    await waitFor('some results', () => delivered() >= 50)
    await raw.sendCommand(['FLUSHALL'])
    const cause = (await run).cause as RunStateLostError
    expect(cause).toBeInstanceOf(RunStateLostError)
    expect(cause.reconnected).toBe(false)
    expect(cause.message).toMatch(
      /^stage "lost\d+-\d+": the state of run \S+ vanished from Redis \(was the server restarted or flushed, /,
    )
    expect(await pipe(range(20), redisStage<number, number>(name, { url: s.url })).toArray()).toHaveLength(20)
    expect(closed.state).toBe('running')
  })

  test.each([
    ['its input stream is deleted', (key: string) => ['DEL', key]],
    ['its consumer group is destroyed', (key: string, group: string) => ['XGROUP', 'DESTROY', key, group]],
    // a run's keys share one expiry, refreshed every 10 s by its pipeline: as if it had been
    // unresponsive for 30 s
    ['its keys expire', (key: string) => ['EVAL', EXPIRE_RUN, '1', key]],
  ])(
    'a run fails when %s; the worker drops that run without spinning and serves another',
    { timeout: TIMEOUT },
    async (_, command) => {
      const s = await server()
      const raw = await client(s.url)
      const name = fresh()
      let held: unknown
      let holding = false
      const worker = await serve(name, s.url, 2, async (x: string, ctx: WorkerContext) => {
        if (x === 'a0') {
          holding = true
          await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }))
          held = ctx.signal.reason
          throw ctx.signal.reason
        }
        return x
      })
      const closed = watch(worker)
      const stage = redisStage<string, string>(name, { url: s.url, batch: 1 })
      const a = rejection(
        pipe(
          range(10).map((i) => `a${i}`),
          stage,
        ).toArray(),
      )
      await waitFor('run a to hold its first item', () => holding)
      const [runId] = await runsOf(raw, name)
      const before = await commands(raw)
      await raw.sendCommand(command(`stageline:{${name}}:${runId}:in`, name))

      const cause = (await a).cause as RunStateLostError
      expect(cause).toBeInstanceOf(RunStateLostError)
      expect(cause.runId).toBe(runId)
      expect(cause.reconnected).toBe(false)
      // the worker let go of run a's item, and reads run b (a read naming a's stream would fail)
      const b = range(50).map((i) => `b${i}`)
      expect((await pipe(b, stage).toArray()).sort()).toEqual(b.sort())
      await waitFor('the held item to be aborted', () => held !== undefined)
      expect(held).toBeInstanceOf(RunStopped)
      expect(closed.state).toBe('running')
      // a worker retrying a read that names a missing stream does ~10,000 commands a second; two
      // runs and a couple of seconds of polling take a few hundred
      expect((await commands(raw)) - before).toBeLessThan(3000)
    },
  )

  test("entries lost while the run's keys stay (a failover that missed writes) fail the run naming how many", {
    timeout: TIMEOUT,
  }, async () => {
    const s = await server()
    const raw = await client(s.url)
    const name = fresh()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    cleanup.push(async () => release())
    let started = 0
    await serve(name, s.url, 1, async (x: number) => {
      started++
      await gate
      return x
    })
    const { run, delivered } = countedRun(
      range(6),
      redisStage<number, number>(name, { url: s.url, batch: 1 }),
    )
    // the worker holds item 0; items 1..5 wait in the input stream, one entry each
    await waitFor('item 0 to start', () => started === 1)
    const [runId] = await runsOf(raw, name)
    const key = `stageline:{${name}}:${runId}:in`
    await waitFor('every entry to be queued', async () => Number(await raw.sendCommand(['XLEN', key])) === 6)
    const entries = (await raw.sendCommand(['XRANGE', key, '-', '+'])) as [string, unknown][]
    await raw.sendCommand(['XDEL', key, entries[5]![0], entries[4]![0]])
    release()
    const cause = (await run).cause as RunStateLostError
    expect(cause).toBeInstanceOf(RunStateLostError)
    expect(cause.missing).toBe(2)
    expect(cause.message).toBe(
      `stage "${name}": 2 entries of run ${runId} vanished from Redis (was the server restarted from an older snapshot, or failed over to a replica that missed writes?); their items cannot complete`,
    )
    // the others came through before the run failed: it waited for what could still come
    expect(delivered()).toBe(4)
  })
})

/**
 * stageline/redis when the connection drops and comes back: a server SIGKILLed mid-run and started
 * again on its port with its append-only file (`appendfsync always`) is waited out, and the run
 * completes with every item exactly once, also while the server answers LOADING (reading its data
 * back); one started again from an older snapshot has lost writes
 * it had acknowledged, and the run fails with a RunStateLostError (`lostWrites`), never hangs; one
 * gone for longer than `connectTimeout` fails the run with a RedisConnectionError.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { pipe, TaskException } from '../lib/index.js'
import {
  RedisConnectionError,
  RunStateLostError,
  redisStage,
  type StageWorker,
  serveStage,
} from '../lib/redis/index.js'
import { freshRedis, redisAt, type Server } from './helpers/redis-killable.js'
import { reportUnavailable } from './helpers/redis-server.js'
import { keysOf, range, rawClient, sleep, waitFor } from './helpers/redis-util.js'

const BINARY = process.env.REDIS_SERVER ?? 'redis-server'
const probe = spawnSync(BINARY, ['--version'], { encoding: 'utf8' })
const unavailable = probe.error === undefined ? undefined : `${BINARY}: ${probe.error.message}`
if (unavailable !== undefined) reportUnavailable('spec/redis-reconnect.spec.ts', unavailable)

describe.runIf(unavailable === undefined)('stageline/redis across a dropped connection', () => {
  const cleanup: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f().catch(() => {})
  })
  /** A server whose files live in a directory of its own, removed after the test. */
  const persistent = async (more: string[]): Promise<{ server: Server; dir: string; args: string[] }> => {
    const dir = mkdtempSync(join(tmpdir(), 'stageline-aof-'))
    cleanup.push(async () => rmSync(dir, { recursive: true, force: true }))
    const args = ['--dir', dir, ...more]
    const server = await freshRedis(args)
    cleanup.push(() => server.stop())
    return { server, dir, args }
  }
  const serve = async (
    name: string,
    url: string,
    fn: (x: number) => Promise<number>,
  ): Promise<StageWorker> => {
    const w = await serveStage(name, { url, concurrency: 8, connectTimeout: 15_000 }, fn)
    cleanup.push(() => w.close())
    return w
  }

  /**
   * Runs `items` numbers through a Redis stage served by `workers` workers (1 ms an item); once
   * `restartAfter` items are done, kills the server and starts it again on the same port and files
   * after `pauseMs`. Resolves to the outputs, sorted, once the restarted server is up.
   */
  const throughRestart = async (o: {
    name: string
    server: Server
    args: string[]
    items: number
    workers: number
    restartAfter: number
    pauseMs: number
  }): Promise<number[]> => {
    let restarted: Promise<void> | undefined
    let done = 0
    const fn = async (x: number): Promise<number> => {
      await sleep(1)
      if (++done === o.restartAfter) {
        restarted = (async () => {
          await o.server.kill()
          if (o.pauseMs > 0) await sleep(o.pauseMs)
          // answering PING does not wait for the data: a server still loading says LOADING meanwhile
          const again = await redisAt(o.server.port, o.args)
          cleanup.unshift(() => again.stop()) // stopped after the workers close
        })()
      }
      return x + 1
    }
    for (let i = 0; i < o.workers; i++) await serve(o.name, o.server.url, fn)
    const out = await pipe(
      range(o.items),
      redisStage<number, number>(o.name, {
        url: o.server.url,
        batch: 20,
        capacity: 400,
        connectTimeout: 15_000,
        visibilityTimeout: 2000,
      }),
    ).toArray()
    await restarted
    return out.sort((x, y) => x - y)
  }

  test('a server restarted with its append-only file mid-run is waited out: every item exactly once', async () => {
    const { server, args } = await persistent(['--appendonly', 'yes', '--appendfsync', 'always'])
    const name = 'reconnect-aof'
    const out = await throughRestart({
      name,
      server,
      args,
      items: 4000,
      workers: 2,
      restartAfter: 1500,
      pauseMs: 300,
    })
    expect(out).toEqual(range(4000, 1))
    const raw = await rawClient(server.url)
    cleanup.push(() => raw.close())
    expect(await keysOf(raw, name)).toEqual([])
  }, 60_000)

  test('a server still loading its data after a restart is waited out (LOADING replies)', async () => {
    // every write on disk before it is acknowledged: with `everysec`, a server whose fsync is slow
    // (a busy disk) acknowledges writes it has not yet written, and SIGKILL loses them; the run
    // then rightly fails with lostWrites, which is another spec's case
    const { server, args } = await persistent([
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--enable-debug-command',
      'yes',
    ])
    const raw = await rawClient(server.url)
    // enough data that loading it after the restart takes a while, in the append-only file's base
    await raw.sendCommand(['DEBUG', 'POPULATE', '500000', 'filler'])
    await raw.sendCommand(['BGREWRITEAOF'])
    await waitFor('the rewrite', async () =>
      /aof_rewrite_in_progress:0/.test(String(await raw.sendCommand(['INFO', 'persistence']))),
    )
    await raw.close()
    const out = await throughRestart({
      name: 'reconnect-loading',
      server,
      args,
      items: 3000,
      workers: 1,
      restartAfter: 500,
      pauseMs: 0,
    })
    expect(out).toEqual(range(3000, 1))
    const after = await rawClient(server.url)
    cleanup.push(() => after.close())
    // the server did refuse commands while it loaded (its error counts start at the restart)
    expect(String(await after.sendCommand(['INFO', 'errorstats']))).toMatch(/errorstat_LOADING:count=[1-9]/)
  }, 60_000)

  test('a server restarted from an older snapshot fails the run with lostWrites, never hangs', async () => {
    const { server, args } = await persistent([])
    const name = 'reconnect-rdb'
    const raw = await rawClient(server.url)
    let saved: Promise<unknown> | undefined
    let restarted: Promise<void> | undefined
    let done = 0
    const fn = async (x: number): Promise<number> => {
      await sleep(1)
      done++
      if (done === 300) saved = raw.sendCommand(['SAVE'])
      if (done === 1500) {
        restarted = (async () => {
          await saved
          await server.kill()
          const again = await redisAt(server.port, args)
          cleanup.unshift(() => again.stop()) // stopped after the workers close
        })()
      }
      return x
    }
    await serve(name, server.url, fn)
    const failed = await pipe(
      range(4000),
      redisStage<number, number>(name, { url: server.url, batch: 20, capacity: 400, connectTimeout: 15_000 }),
    )
      .toArray()
      .catch((e: unknown) => e)
    await restarted
    expect(failed).toBeInstanceOf(TaskException)
    const cause = (failed as TaskException).cause
    expect(cause).toBeInstanceOf(RunStateLostError)
    expect((cause as RunStateLostError).lostWrites).toBe(true)
    expect((cause as Error).message).toMatch(/writes of run \S+ that Redis had acknowledged are gone/)
    await raw.close().catch(() => {})
  }, 60_000)

  test('a server gone for longer than connectTimeout fails the run with a RedisConnectionError', async () => {
    const server = await freshRedis()
    cleanup.push(() => server.stop())
    const name = 'reconnect-gone'
    let killed: Promise<void> | undefined
    let done = 0
    const w = await serveStage(
      name,
      { url: server.url, concurrency: 4, connectTimeout: 1000 },
      async (x: number) => {
        await sleep(1)
        if (++done === 200) killed = server.kill()
        return x
      },
    )
    const failed = await pipe(
      range(2000),
      redisStage<number, number>(name, { url: server.url, batch: 10, capacity: 100, connectTimeout: 1000 }),
    )
      .toArray()
      .catch((e: unknown) => e)
    await killed
    expect(failed).toBeInstanceOf(TaskException)
    expect((failed as TaskException).cause).toBeInstanceOf(RedisConnectionError)
    // the worker gives up likewise: its `closed` rejects
    await expect(w.closed).rejects.toThrow(RedisConnectionError)
  }, 30_000)
})

/**
 * stageline/redis with workers in child processes (spec/fixtures/redis/worker.mjs), each importing
 * the current sources transpiled by helpers/redis-build.ts, against a spec-owned redis-server.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { pipe } from '../lib/index.js'
import { redisStage } from '../lib/redis/index.js'
import { type Build, buildRedisEntry } from './helpers/redis-build.js'
import { type RedisServer, reportUnavailable, startRedisServer } from './helpers/redis-server.js'
import { keysOf, type Raw, range, rawClient, waitFor } from './helpers/redis-util.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/redis/worker.mjs', import.meta.url))

const started = await startRedisServer()
if (!started.ok) reportUnavailable('spec/redis-processes.spec.ts', started.reason)

interface Started {
  type: 'start'
  n: number
  seq: number
  attempt: number
  pid: number
}
interface Result {
  n: number
  pid: number
  attempt: number
  seq: number
}

/** A worker child process and the IPC messages it sent. */
class Child {
  readonly proc: ChildProcess
  readonly starts: Started[] = []
  readonly ready: Promise<void>
  exited = false

  constructor(
    entry: string,
    url: string,
    name: string,
    concurrency: number,
    onStart?: (m: Started, c: Child) => void,
  ) {
    this.proc = fork(FIXTURE, [url, name, String(concurrency)], {
      env: { ...process.env, STAGELINE_REDIS_ENTRY: entry },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    this.proc.once('exit', () => {
      this.exited = true
    })
    this.ready = new Promise((resolve, reject) => {
      this.proc.once('exit', (code, signal) => reject(new Error(`worker exited early (${code ?? signal})`)))
      this.proc.on('message', (m: { type: string }) => {
        if (m.type === 'ready') resolve()
        else if (m.type === 'start') {
          this.starts.push(m as Started)
          onStart?.(m as Started, this)
        }
      })
    })
  }

  get pid(): number {
    return this.proc.pid!
  }

  async stop(): Promise<void> {
    if (this.exited) return
    const gone = new Promise((resolve) => this.proc.once('exit', resolve))
    this.proc.send('close')
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000)
    await gone
    clearTimeout(timer)
  }
}

describe.runIf(started.ok)('stageline/redis, workers in child processes', () => {
  let server: RedisServer
  let raw: Raw
  let build: Build
  let children: Child[] = []
  let n = 0
  const fresh = (): string => `p${process.pid}-${++n}`
  const spawnWorkers = async (
    name: string,
    count: number,
    concurrency: number,
    onStart?: (m: Started, c: Child) => void,
  ): Promise<Child[]> => {
    const made = range(count).map(() => new Child(build.entry, server.url, name, concurrency, onStart))
    children.push(...made)
    await Promise.all(made.map((c) => c.ready))
    return made
  }

  beforeAll(async () => {
    server = (started as { server: RedisServer }).server
    raw = await rawClient(server.url)
    build = buildRedisEntry()
  })
  afterEach(async () => {
    await Promise.all(children.map((c) => c.stop()))
    children = []
  })
  afterAll(async () => {
    build?.remove()
    await raw?.close()
    await server?.stop()
  })

  test('three worker processes serve a stage and every item comes back exactly once', async () => {
    const name = fresh()
    const kids = await spawnWorkers(name, 3, 1)
    const items = range(90).map((i) => ({ n: i, ms: 2 }))
    const out = (await pipe(
      items,
      redisStage<{ n: number; ms: number }, Result>(name, {
        url: server.url,
        batch: 1,
        capacity: 30,
      }),
    ).toArray()) as Result[]
    expect(out.map((r) => r.n).sort((a, b) => a - b)).toEqual(range(90))
    expect(out.every((r) => r.attempt === 1)).toBe(true)
    // the work was shared: each process ran some of the items, and no item ran twice
    const pids = new Set(out.map((r) => r.pid))
    expect([...pids].sort()).toEqual(kids.map((k) => k.pid).sort())
    expect(kids.reduce((sum, k) => sum + k.starts.length, 0)).toBe(90)
    expect(await keysOf(raw, name)).toEqual([])
  })

  test('a worker killed while it holds an item: the item goes to another worker and the run completes exactly once', async () => {
    const name = fresh()
    let victim: Child | undefined
    await spawnWorkers(name, 3, 2, (m, c) => {
      if (m.n === 7 && m.attempt === 1) {
        victim = c
        c.proc.kill('SIGKILL')
      }
    })
    const items = range(40).map((i) => (i === 7 ? { n: i, hang: true } : { n: i, ms: 3 }))
    const out = (await pipe(
      items,
      redisStage<unknown, Result>(name, {
        url: server.url,
        batch: 2,
        capacity: 12,
        visibilityTimeout: 300,
      }),
    ).toArray()) as Result[]
    expect(victim).toBeDefined()
    expect(victim!.exited).toBe(true)
    expect(out.map((r) => r.n).sort((a, b) => a - b)).toEqual(range(40))
    const seven = out.find((r) => r.n === 7)!
    expect(seven.attempt).toBe(2)
    expect(seven.pid).not.toBe(victim!.pid)
    // item 7 ran twice in all: once on the killed worker, once on the one that reclaimed it
    const sevens = children
      .flatMap((c) => c.starts.filter((s) => s.n === 7))
      .sort((a, b) => a.attempt - b.attempt)
    expect(sevens.map((s) => [s.attempt, s.pid === victim!.pid])).toEqual([
      [1, true],
      [2, false],
    ])
    await waitFor('no key left', async () => (await keysOf(raw, name)).length === 0)
  })
})

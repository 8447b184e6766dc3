/**
 * stageline/redis: how many connections a run and a worker process hold (counted with CLIENT
 * LIST, by client name), and a worker's doorbell, which ends its blocking read early without
 * CLIENT UNBLOCK.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { pipe } from '../lib/index.js'
import { redisStage, type StageWorker, serveStage } from '../lib/redis/index.js'
import { type RedisServer, reportUnavailable, startRedisServer } from './helpers/redis-server.js'
import { bellsOf, keysOf, type Raw, range, rawClient, waitFor } from './helpers/redis-util.js'

const started = await startRedisServer()
if (!started.ok) reportUnavailable('spec/redis-connections.spec.ts', started.reason)

describe.runIf(started.ok)('stageline/redis connections', () => {
  let server: RedisServer
  let url: string
  let raw: Raw

  beforeAll(async () => {
    server = (started as { server: RedisServer }).server
    url = server.url
    raw = await rawClient(url)
  })
  afterAll(async () => {
    await raw?.close()
    await server?.stop()
  })

  /** Connections open now whose client name is `name`. */
  const count = async (name: string): Promise<number> => {
    const list = String(await raw.sendCommand(['CLIENT', 'LIST']))
    return list.split('\n').filter((line) => line.includes(` name=${name} `)).length
  }

  /** Resolves once `n` calls are waiting; each call waits until `open()`. */
  const gate = () => {
    let waiting = 0
    let release!: () => void
    const opened = new Promise<void>((r) => (release = r))
    return {
      fn: async (x: number): Promise<number> => {
        waiting++
        await opened
        return x
      },
      waiting: () => waiting,
      open: release,
    }
  }

  test('a worker process holds one shared command connection plus one blocking reader per stage', async () => {
    const client = { name: 'conn-w' }
    const one = await serveStage('conn-a', { url, client }, (x: number) => x)
    expect(await count('conn-w')).toBe(2)
    const more: StageWorker[] = [
      await serveStage('conn-b', { url, client }, (x: number) => x),
      await serveStage('conn-c', { url, client }, (x: number) => x),
    ]
    // three stages: 4 connections (there were 3 per stage: commands, reader, subscriber)
    expect(await count('conn-w')).toBe(4)
    // a worker's doorbell lives while it does
    expect(await bellsOf(raw, 'conn-a')).toEqual([`stageline:{conn-a}:w:${one.id}`])
    await one.close()
    expect(await count('conn-w')).toBe(3)
    expect(await bellsOf(raw, 'conn-a')).toEqual([])
    await Promise.all(more.map((w) => w.close()))
    await waitFor('every connection closed', async () => (await count('conn-w')) === 0)
  })

  test('a run holds one command connection shared by its Redis stages, plus one reader each', async () => {
    const g = gate()
    const wb = await serveStage('conn-e', { url, concurrency: 4 }, g.fn)
    const a = await serveStage('conn-d', { url, concurrency: 4 }, (x: number) => x)
    const client = { name: 'conn-p' }
    // the source ends only once the count is taken: both stages are running meanwhile
    let counted!: () => void
    const taken = new Promise<void>((r) => (counted = r))
    async function* source(): AsyncGenerator<number> {
      yield* range(4)
      await taken
    }
    const run = pipe(
      source(),
      redisStage<number, number>('conn-d', { url, client, batch: 1 }),
      redisStage<number, number>('conn-e', { url, client, batch: 1 }),
    ).toArray()
    await waitFor('items held in the second stage', () => g.waiting() === 4)
    // two Redis stages in one run: 3 connections (there were 2 per stage)
    expect(await count('conn-p')).toBe(3)
    counted()
    g.open()
    expect((await run).sort()).toEqual(range(4))
    await waitFor('the run closed its connections', async () => (await count('conn-p')) === 0)
    expect(await keysOf(raw, 'conn-d')).toEqual([])
    await Promise.all([a.close(), wb.close()])
  })

  test('a run with one Redis stage holds two connections', async () => {
    const g = gate()
    const w = await serveStage('conn-f', { url, concurrency: 2 }, g.fn)
    const run = pipe(
      range(2),
      redisStage<number, number>('conn-f', { url, client: { name: 'conn-q' } }),
    ).toArray()
    await waitFor('items held', () => g.waiting() === 2)
    expect(await count('conn-q')).toBe(2)
    g.open()
    expect((await run).sort()).toEqual(range(2))
    await w.close()
    await waitFor('the run closed its connections', async () => (await count('conn-q')) === 0)
  })

  test('a run that starts is taken up at once by a worker blocked on its doorbell, without CLIENT UNBLOCK', async () => {
    const w = await serveStage('conn-g', { url }, (x: number) => x + 1)
    const before = await commandCalls(raw, 'client|unblock')
    const out = await pipe(range(10), redisStage<number, number>('conn-g', { url })).toArray()
    expect(out.sort((a, b) => a - b)).toEqual(range(10, 1))
    await w.close()
    expect(await commandCalls(raw, 'client|unblock')).toBe(before)
    // the ring went out as an XADD to the doorbell, acknowledged by the worker
    expect(await commandCalls(raw, 'xack')).toBeGreaterThan(0)
  })
})

/** How many times the server ran `command` (INFO commandstats). */
async function commandCalls(raw: Raw, command: string): Promise<number> {
  const info = String(await raw.sendCommand(['INFO', 'commandstats']))
  const m = new RegExp(`^cmdstat_${command.replace('|', '\\|')}:calls=(\\d+)`, 'm').exec(info)
  return m === null ? 0 : Number(m[1])
}

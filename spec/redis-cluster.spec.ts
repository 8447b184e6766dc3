/**
 * stageline/redis on a Redis Cluster the spec starts (helpers/redis-cluster.ts): every key of a
 * stage in its hash tag's slot, on that slot's master, and nothing any command or script touches
 * outside it (MONITOR); a manual failover of that master to its replica in the middle of a run.
 */
import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { pipe, TaskException } from '../lib/index.js'
import {
  type RedisClusterConfig,
  RedisConnectionError,
  RunStateLostError,
  redisStage,
  type StageWorker,
  serveStage,
} from '../lib/redis/index.js'
import { type RedisCluster, startRedisCluster } from './helpers/redis-cluster.js'
import { reportUnavailable } from './helpers/redis-server.js'
import { keysOf, type Raw, range, rawClient, sleep, waitFor } from './helpers/redis-util.js'

// three masters with a replica each; the tests run in order: the manual failover leaves the
// cluster whole (its roles swapped), the unplanned one comes last
const started = await startRedisCluster(3, 1)
if (!started.ok) reportUnavailable('spec/redis-cluster.spec.ts', started.reason)

/** The slot of a stage's keys (its hash tag), as the cluster computes it. */
async function slotOf(raw: Raw, stage: string): Promise<number> {
  return Number(await raw.sendCommand(['CLUSTER', 'KEYSLOT', `stageline:{${stage}}:runs`]))
}

/** Every key that starts with `stageline:` on a node. */
async function stagelineKeys(raw: Raw): Promise<string[]> {
  return (await raw.sendCommand(['KEYS', 'stageline:*'])) as string[]
}

describe.runIf(started.ok)('stageline/redis on a Redis Cluster', () => {
  let cluster: RedisCluster
  let config: RedisClusterConfig

  beforeAll(() => {
    cluster = (started as { ok: true; cluster: RedisCluster }).cluster
    config = { rootNodes: cluster.urls.map((url) => ({ url })) }
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  test("every key of a run is in its stage's slot, on that slot's master, and no command touches another", async () => {
    const name = 'clu-a'
    const first = await cluster.node(cluster.nodes[0]!.port)
    const slot = await slotOf(first, name)
    const master = await cluster.masterOf(slot)
    // MONITOR every master: what each runs, scripts' own commands included
    const masters = cluster.nodes.slice(0, 3).map((n) => n.port)
    const touched = new Map<number, Set<string>>()
    const monitors: Raw[] = []
    for (const port of masters) {
      const seen = new Set<string>()
      touched.set(port, seen)
      const mon = await rawClient(`redis://127.0.0.1:${port}`)
      await mon.monitor((line: string) => {
        for (const m of line.matchAll(/"(stageline:[^"]*)"/g)) seen.add(m[1]!)
      })
      monitors.push(mon)
    }
    let during: Map<number, string[]> | undefined
    const look = async (): Promise<void> => {
      during = new Map()
      for (const port of masters) during.set(port, await stagelineKeys(await cluster.node(port)))
    }
    const workers: StageWorker[] = await Promise.all(
      [4, 4].map((concurrency) =>
        serveStage(name, { cluster: config, concurrency }, async (x: number) => {
          if (x === 1000) await look()
          return x + 1
        }),
      ),
    )
    const out = await pipe(
      range(2000),
      redisStage<number, number>(name, { cluster: config, batch: 20, capacity: 200 }),
    ).toArray()
    expect(out.sort((a, b) => a - b)).toEqual(range(2000, 1))
    await Promise.all(workers.map((w) => w.close()))
    await sleep(50) // the last commands reach MONITOR
    for (const mon of monitors) await mon.close()

    // while it ran, its keys were on the slot's master only
    for (const [port, keys] of during!) {
      if (port === master) expect(keys.some((k) => k.endsWith(':in'))).toBe(true)
      else expect(keys).toEqual([])
    }
    // every key any command or script named is in the stage's slot (the events channel, which
    // workers subscribe to on any node, is no key)
    for (const [port, seen] of touched) {
      // (nor is the pattern of this spec's own KEYS)
      const keys = [...seen].filter((k) => k !== `stageline:{${name}}:events` && k !== 'stageline:*')
      if (port !== master) {
        expect(keys).toEqual([])
        continue
      }
      for (const suffix of [':in', ':out', ':meta', ':runs'])
        expect(keys.some((k) => k.endsWith(suffix))).toBe(true)
      expect(keys.some((k) => k.startsWith(`stageline:{${name}}:w:`))).toBe(true) // doorbells
      const raw = await cluster.node(master)
      for (const key of keys) expect(Number(await raw.sendCommand(['CLUSTER', 'KEYSLOT', key]))).toBe(slot)
    }
    expect(await keysOf(await cluster.node(master), name)).toEqual([])
  }, 30_000)

  test('a stage runs on the cluster as a user with the documented ACL rule plus +cluster|slots', async () => {
    const name = 'clu-acl'
    const doc = readFileSync(new URL('../docs/distributed.md', import.meta.url), 'utf8')
    const rule = /<!-- acl-rule -->\n```text\n(ACL SETUSER [^\n]+)\n```/.exec(doc)![1]!
    const args = `${rule} +cluster|slots`
      .replaceAll('<user>', 'clu-user')
      .replaceAll('<password>', 'clu-pw-41f')
      .replaceAll('<stage>', name)
      .split(' ')
    // ACLs are per node: every node gets the user
    for (const n of cluster.nodes) {
      const raw = await cluster.node(n.port)
      expect(await raw.sendCommand(args)).toBe('OK')
      await raw.sendCommand(['ACL', 'LOG', 'RESET'])
    }
    const user: RedisClusterConfig = { ...config, defaults: { username: 'clu-user', password: 'clu-pw-41f' } }
    const w = await serveStage(name, { cluster: user, concurrency: 4 }, (x: number) => x * 5)
    const out = await pipe(
      range(300),
      redisStage<number, number>(name, { cluster: user, batch: 10 }),
    ).toArray()
    expect(out.sort((a, b) => a - b)).toEqual(range(300).map((x) => x * 5))
    await w.close()
    for (const n of cluster.nodes)
      expect(await (await cluster.node(n.port)).sendCommand(['ACL', 'LOG'])).toEqual([])
  })

  test('refuses cluster together with url', () => {
    expect(() => redisStage('clu-b', { cluster: config, url: cluster.urls[0] })).toThrow(
      /give either `cluster` or `url`/,
    )
  })

  test('a run goes on through a manual failover of its master, every item exactly once', async () => {
    const c = cluster
    const config: RedisClusterConfig = { rootNodes: c.urls.map((url) => ({ url })) }
    const name = 'clu-f'
    const slot = await slotOf(await c.node(c.nodes[0]!.port), name)
    const master = await c.masterOf(slot)
    const replica = await c.replicaOf(slot)
    let done = 0
    let failedOver: Promise<unknown> | undefined
    const calls = new Map<number, number>()
    const fn = async (x: number): Promise<number> => {
      calls.set(x, (calls.get(x) ?? 0) + 1)
      await sleep(1)
      if (++done === 700) {
        failedOver = c.node(replica).then((r) => r.sendCommand(['CLUSTER', 'FAILOVER']))
      }
      return x * 2
    }
    const workers = await Promise.all(
      [4, 4].map((concurrency) => serveStage(name, { cluster: config, concurrency }, fn)),
    )
    const out = await pipe(
      range(2000),
      redisStage<number, number>(name, {
        cluster: config,
        batch: 10,
        capacity: 100,
        visibilityTimeout: 3000,
      }),
    ).toArray()
    expect(await failedOver).toBe('OK')
    expect(out.sort((a, b) => a - b)).toEqual(range(2000).map((x) => x * 2))
    // the function ran on every item (at least once)
    expect(calls.size).toBe(2000)
    await c.settled(slot)
    expect(await c.masterOf(slot)).toBe(replica)
    expect(master).not.toBe(replica)
    await Promise.all(workers.map((w) => w.close()))
    await waitFor('no key left', async () => (await keysOf(await c.node(replica), name)).length === 0)
  }, 60_000)

  test('an unplanned failover that loses acknowledged writes fails the run with a clear error, never hangs', async () => {
    const c = cluster
    await c.settled()
    const pidOf = async (port: number): Promise<number> =>
      Number(/process_id:(\d+)/.exec(String(await (await c.node(port)).sendCommand(['INFO', 'server'])))![1])
    let replicaPid = 0
    try {
      const config: RedisClusterConfig = { rootNodes: c.urls.map((url) => ({ url })) }
      const name = 'clu-u'
      const slot = await slotOf(await c.node(c.nodes[0]!.port), name)
      const master = await c.masterOf(slot)
      const replica = await c.replicaOf(slot)
      const masterPid = await pidOf(master)
      replicaPid = await pidOf(replica)
      const takeover = await c.node(replica)
      let done = 0
      let faulted: Promise<void> | undefined
      const fn = async (x: number): Promise<number> => {
        await sleep(2)
        if (++done === 600) {
          faulted = (async () => {
            // the replica stops taking the master's writes while the run goes on, then the master
            // dies and the replica takes over without them
            process.kill(replicaPid, 'SIGSTOP')
            await sleep(1500)
            process.kill(masterPid, 'SIGKILL')
            process.kill(replicaPid, 'SIGCONT')
            await takeover.sendCommand(['CLUSTER', 'FAILOVER', 'TAKEOVER'])
          })()
        }
        return x
      }
      const workers = await Promise.all(
        [4, 4].map((concurrency) =>
          serveStage(name, { cluster: config, concurrency, connectTimeout: 3000 }, fn),
        ),
      )
      const failed = await pipe(
        range(100_000),
        redisStage<number, number>(name, { cluster: config, batch: 10, capacity: 200, connectTimeout: 3000 }),
      )
        .toArray()
        .catch((e: unknown) => e)
      await faulted
      expect(failed).toBeInstanceOf(TaskException)
      const cause = (failed as TaskException).cause
      expect(cause instanceof RunStateLostError || cause instanceof RedisConnectionError, String(cause)).toBe(
        true,
      )
      await Promise.all(workers.map((w) => w.close().catch(() => {})))
    } finally {
      if (replicaPid > 0) process.kill(replicaPid, 'SIGCONT')
    }
  }, 60_000)
})

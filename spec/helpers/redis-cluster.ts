/**
 * Starts a private Redis Cluster for a spec file: `masters` redis-servers with `--cluster-enabled`
 * (each through helpers/redis-server.ts: loopback, free ports, stopped with the spec or when its
 * process dies), `replicas` replicas per master, joined by `redis-cli --cluster create`, and waits
 * until every node says `cluster_state:ok`. Resolves to the reason when it cannot, as
 * startRedisServer() does.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type RedisServer, startRedisServer } from './redis-server.js'
import { type Raw, rawClient, sleep } from './redis-util.js'

export interface RedisCluster {
  /** Every node, masters first (in the order `redis-cli --cluster create` made them masters). */
  readonly nodes: RedisServer[]
  /** `redis://127.0.0.1:<port>` of every node. */
  readonly urls: string[]
  /** The node (its port) that serves `slot` as master now. */
  masterOf(slot: number): Promise<number>
  /** A replica (its port) of the master serving `slot`. */
  replicaOf(slot: number): Promise<number>
  /** A plain client of the node on `port` (closed with the cluster). */
  node(port: number): Promise<Raw>
  /** Waits until every node says `cluster_state:ok` and agrees on who serves `slot`. */
  settled(slot?: number): Promise<void>
  stop(): Promise<void>
}

export type ClusterStarted = { ok: true; cluster: RedisCluster } | { ok: false; reason: string }

const CLI = process.env.REDIS_CLI ?? 'redis-cli'

function runCli(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(CLI, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (c) => (output += c))
    child.stderr.on('data', (c) => (output += c))
    child.once('error', (err) => resolve({ code: -1, output: err.message }))
    child.once('exit', (code) => resolve({ code, output }))
  })
}

export async function startRedisCluster(masters = 3, replicas = 0): Promise<ClusterStarted> {
  const dir = mkdtempSync(join(tmpdir(), 'stageline-cluster-'))
  const nodes: RedisServer[] = []
  const clients = new Map<number, Raw>()
  const stop = async (): Promise<void> => {
    await Promise.all([...clients.values()].map((c) => c.close().catch(() => {})))
    clients.clear()
    await Promise.all(nodes.map((n) => n.stop()))
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const started = await startRedisServer({
        args: ['--cluster-enabled', 'yes', '--dir', dir, '--cluster-config-file', `nodes-${i}.conf`].concat([
          '--cluster-node-timeout',
          '2000',
          '--cluster-replica-validity-factor',
          '0',
          // a replica's first sync at once (the default waits 5 s for more replicas to join it)
          '--repl-diskless-sync-delay',
          '0',
        ]),
      })
      if (!started.ok) {
        await stop()
        return started
      }
      nodes.push(started.server)
    }
    const addresses = nodes.map((n) => `127.0.0.1:${n.port}`)
    const created = await runCli([
      '--cluster',
      'create',
      ...addresses,
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ])
    if (created.code !== 0) {
      await stop()
      return {
        ok: false,
        reason: `${CLI} --cluster create failed (${created.code}): ${created.output.trim()}`,
      }
    }
  } catch (err) {
    await stop()
    return { ok: false, reason: `could not start a cluster: ${(err as Error).message}` }
  }
  const node = async (port: number): Promise<Raw> => {
    let c = clients.get(port)
    if (c === undefined) {
      c = await rawClient(`redis://127.0.0.1:${port}`)
      clients.set(port, c)
    }
    return c
  }
  /** [start, end, [host, port, id], ...replicas] of every slot range, as `port` sees them. */
  const slots = async (port: number): Promise<[number, number, ...[string, number, string][]][]> =>
    (await (await node(port)).sendCommand(['CLUSTER', 'SLOTS'])) as never
  const served = async (port: number, slot: number) => {
    for (const [start, end, ...owners] of await slots(port)) {
      if (slot >= start && slot <= end) return owners
    }
    throw new Error(`no node serves slot ${slot}`)
  }
  const cluster: RedisCluster = {
    nodes,
    urls: nodes.map((n) => `redis://127.0.0.1:${n.port}`),
    node,
    masterOf: async (slot) => (await served(nodes[0]!.port, slot))[0]![1],
    replicaOf: async (slot) => {
      const owners = await served(nodes[0]!.port, slot)
      if (owners.length < 2) throw new Error(`slot ${slot} has no replica`)
      return owners[1]![1]
    },
    settled: async (slot) => {
      const deadline = Date.now() + 30_000
      for (;;) {
        let ok = true
        const masters = new Set<number>()
        for (const n of nodes) {
          const info = String(await (await node(n.port)).sendCommand(['CLUSTER', 'INFO']))
          if (!info.includes('cluster_state:ok')) ok = false
          // every master has its replicas, as every node sees it
          for (const [, , ...owners] of await slots(n.port)) if (owners.length < 1 + replicas) ok = false
          if (slot !== undefined) masters.add((await served(n.port, slot))[0]![1])
        }
        if (ok && masters.size <= 1) return
        if (Date.now() > deadline) throw new Error('the cluster did not settle within 30 s')
        await sleep(50)
      }
    },
    stop,
  }
  try {
    await cluster.settled()
  } catch (err) {
    await stop()
    return { ok: false, reason: (err as Error).message }
  }
  return { ok: true, cluster }
}

// Items per second through a Redis-backed stage (stageline/redis) with 1 and 4 worker processes,
// next to a local mapStage, all running the identity function on integers.
//
//   npm run build && node benchmarks/redis.js [--items N] [--runs R] [--url redis://...]
//
// Without --url it starts its own redis-server (no persistence) on a free loopback port and stops
// it afterwards. Each cell is the median of R runs, cells alternating within each round; every
// run's output is checked (count and sum) after the timed section. The suite imports
// `benchRedis()` and gets the rows back.
import { fork, spawn as spawnProcess } from 'node:child_process'
import { createServer, connect as netConnect } from 'node:net'
import { fileURLToPath } from 'node:url'
import { intFlag, stringFlag } from './common.js'

const SELF = fileURLToPath(import.meta.url)
const dist = new URL('../dist/', import.meta.url)

/** Settings of the Redis stage under test: entries of 100 items, 2000 items in Redis at most. */
export const STAGE_OPTIONS = { batch: 100, capacity: 2000 }

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** Whether a Redis server answers PING on `port` of 127.0.0.1 (within 500 ms). */
export function ping(port) {
  return new Promise((resolve) => {
    const sock = netConnect({ port, host: '127.0.0.1' })
    const done = (ok) => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(500, () => done(false))
    sock.once('error', () => done(false))
    sock.on('data', (d) => done(d.toString().includes('+PONG')))
    sock.once('connect', () => sock.write('PING\r\n'))
  })
}

// runs the server under a shell that kills it once our end of its stdin closes (stop(), or this
// process dying in any way), so an interrupted benchmark leaves no server behind
const WATCHDOG = 'exec 3<&0; "$0" "$@" & rs=$!; (read _ <&3; kill $rs 2>/dev/null) & wait $rs'

/** Starts a private redis-server; resolves to { url, stop() }. */
export async function startRedis() {
  const port = await freePort()
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  const binary = process.env.REDIS_SERVER ?? 'redis-server'
  const child = spawnProcess('sh', ['-c', WATCHDOG, binary, ...args, '--loglevel', 'warning'], {
    stdio: ['pipe', 'ignore', 'inherit'],
  })
  const failed = new Promise((_, reject) => {
    child.once('error', (err) => reject(new Error(`cannot start redis-server: ${err.message}`)))
    child.once('exit', (code) => reject(new Error(`${binary} exited with ${code}`)))
  })
  failed.catch(() => {})
  const deadline = Date.now() + 10_000
  while (!(await ping(port))) {
    await Promise.race([failed, new Promise((r) => setTimeout(r, 25))])
    if (Date.now() > deadline) throw new Error('redis-server did not answer PING within 10 s')
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', resolve)
        child.stdin.end()
      }),
  }
}

/** Starts `n` worker processes serving `name` with the identity function. */
async function startWorkers(n, url, name) {
  const kids = []
  for (let i = 0; i < n; i++) {
    const kid = fork(SELF, ['--worker', url, name], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    kids.push(kid)
  }
  await Promise.all(
    kids.map(
      (k) =>
        new Promise((resolve, reject) => {
          k.once('message', resolve)
          k.once('exit', (code) => reject(new Error(`a worker exited with ${code}`)))
        }),
    ),
  )
  return {
    stop: () =>
      Promise.all(
        kids.map(
          (k) =>
            new Promise((resolve) => {
              k.once('exit', resolve)
              k.disconnect()
            }),
        ),
      ),
  }
}

async function timed(pipeline, n) {
  const t0 = performance.now()
  let count = 0
  let sum = 0
  for await (const x of pipeline) {
    count++
    sum += x
  }
  const seconds = (performance.now() - t0) / 1000
  const expected = (n * (n - 1)) / 2
  if (count !== n || sum !== expected) throw new Error(`wrong output: ${count} items summing to ${sum}`)
  return n / seconds
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

/**
 * Runs the matrix and returns one row per cell: { impl, workers, itemsPerSec, ratio } (ratio to
 * the local stage, measured in the same process run).
 */
export async function benchRedis({ items = 300_000, runs = 5, url } = {}) {
  const { pipe, mapStage } = await import(new URL('index.js', dist))
  const { redisStage } = await import(new URL('redis/index.js', dist))
  const own = url === undefined ? await startRedis() : undefined
  const server = url ?? own.url
  const input = Array.from({ length: items }, (_, i) => i)
  const cells = [
    { impl: 'local mapStage', workers: 0 },
    { impl: 'redisStage', workers: 1 },
    { impl: 'redisStage', workers: 4 },
  ]
  const pools = []
  try {
    for (const cell of cells) {
      if (cell.workers === 0) continue
      cell.name = `bench-${process.pid}-${cell.workers}`
      pools.push(await startWorkers(cell.workers, server, cell.name))
      cell.stage = redisStage(cell.name, { url: server, ...STAGE_OPTIONS })
    }
    const local = mapStage((x) => x)
    const rates = cells.map(() => [])
    for (let r = 0; r < runs; r++) {
      for (let c = 0; c < cells.length; c++) {
        const cell = cells[c]
        rates[c].push(await timed(pipe(input, cell.workers === 0 ? local : cell.stage), items))
      }
    }
    const base = median(rates[0])
    return cells.map((cell, c) => ({
      impl: cell.impl,
      workers: cell.workers,
      itemsPerSec: Math.round(median(rates[c])),
      ratio: median(rates[c]) / base,
      runs: rates[c].map(Math.round),
    }))
  } finally {
    await Promise.all(pools.map((p) => p.stop()))
    await own?.stop()
  }
}

async function worker(url, name) {
  const { serveStage } = await import(new URL('redis/index.js', dist))
  const w = await serveStage(name, { url, concurrency: 1 }, (x) => x)
  process.on('disconnect', () => void w.close().then(() => process.exit(0)))
  process.send('ready')
}

if (process.argv[1] === SELF) {
  if (process.argv[2] === '--worker') {
    await worker(process.argv[3], process.argv[4])
  } else {
    const items = intFlag(process.argv, 'items', 300_000)
    const runs = intFlag(process.argv, 'runs', 5)
    const rows = await benchRedis({ items, runs, url: stringFlag(process.argv, 'url', undefined) })
    console.log(
      `identity on ${items} integers, median of ${runs} runs; Redis stage ${JSON.stringify(STAGE_OPTIONS)}`,
    )
    console.log('implementation       worker processes      items/s   vs local   runs')
    for (const r of rows) {
      console.log(
        `${r.impl.padEnd(20)} ${String(r.workers || '-').padStart(16)} ${String(r.itemsPerSec).padStart(12)} ${r.ratio.toFixed(3).padStart(10)}   ${r.runs.join(' ')}`,
      )
    }
  }
}

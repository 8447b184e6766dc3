/**
 * `node benchmarks/redis-ab.js <distA> <distB> [--items N] [--rounds N] [--workers N]`
 *
 * A/B of the Redis stage of two builds of stageline: the identity function on integers through
 * `redisStage` (the settings of benchmarks/redis.js), each build with its own worker processes
 * (`concurrency: 1`) on one redis-server of its own. Runs alternate A B B A round by round in one
 * process, so that drift in the machine's speed hits both alike. Wall time is noisy on a shared
 * machine, so each run also measures CPU time per item: the pipeline's process, and everything
 * (the pipeline's process, the worker processes and redis-server). Prints the medians per build
 * and the median of the per-round ratios (B over A).
 *
 *   git archive <base> | tar -x -C <dir> && (cd <dir> && npm install && npm run build)
 *   npm run build && node benchmarks/redis-ab.js <dir>/dist dist
 * @module
 */
import { fork } from 'node:child_process'
import { resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { intFlag, median } from './common.js'
import { STAGE_OPTIONS, startRedis } from './redis.js'

const SELF = fileURLToPath(import.meta.url)

/** A worker process: serves `name` with the identity function; answers 'cpu' with its CPU time. */
async function worker(dist, url, name) {
  const { serveStage } = await import(pathToFileURL(resolve(dist, 'redis/index.js')).href)
  const w = await serveStage(name, { url, concurrency: 1 }, (x) => x)
  process.on('message', (m) => {
    if (m === 'cpu') {
      const u = process.cpuUsage()
      process.send({ cpu: u.user + u.system })
    }
  })
  process.on('disconnect', () => void w.close().then(() => process.exit(0)))
  process.send('ready')
}

/** Starts `n` worker processes of build `dist`; returns a way to read their CPU time and to stop them. */
async function startWorkers(dist, n, url, name) {
  const kids = []
  for (let i = 0; i < n; i++) {
    kids.push(fork(SELF, ['--worker', dist, url, name], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  }
  await Promise.all(
    kids.map(
      (k) =>
        new Promise((ok, fail) => {
          k.once('message', ok)
          k.once('exit', (code) => fail(new Error(`a worker exited with ${code}`)))
        }),
    ),
  )
  const cpuOf = (k) =>
    new Promise((ok) => {
      k.once('message', (m) => ok(m.cpu))
      k.send('cpu')
    })
  return {
    /** CPU time of the worker processes so far, in µs. */
    cpu: async () => (await Promise.all(kids.map(cpuOf))).reduce((a, b) => a + b, 0),
    stop: () =>
      Promise.all(
        kids.map(
          (k) =>
            new Promise((ok) => {
              k.once('exit', ok)
              k.disconnect()
            }),
        ),
      ),
  }
}

/** redis-server's CPU time so far, in µs (INFO cpu). */
async function serverCpu(raw) {
  const info = String(await raw.sendCommand(['INFO', 'cpu']))
  const read = (key) => Number(new RegExp(`${key}:([0-9.]+)`).exec(info)[1])
  return (read('used_cpu_user') + read('used_cpu_sys')) * 1e6
}

/** One run of build `b`: its throughput and CPU time per item (pipeline process, and all). */
async function once(b, input, raw) {
  const n = input.length
  const cpu0 = process.cpuUsage()
  const w0 = await b.workers.cpu()
  const s0 = await serverCpu(raw)
  const t0 = performance.now()
  let count = 0
  let sum = 0
  for await (const x of b.sl.pipe(input, b.stage)) {
    count++
    sum += x
  }
  const seconds = (performance.now() - t0) / 1000
  const own = process.cpuUsage(cpu0)
  const pipeline = own.user + own.system
  const rest = (await b.workers.cpu()) - w0 + ((await serverCpu(raw)) - s0)
  if (count !== n || sum !== (n * (n - 1)) / 2)
    throw new Error(`wrong output: ${count} items summing to ${sum}`)
  return { perSec: n / seconds, pipelineUs: pipeline / n, totalUs: (pipeline + rest) / n }
}

async function main() {
  const args = process.argv.slice(2)
  const dirs = args.filter((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')))
  if (dirs.length !== 2) {
    console.error('usage: node benchmarks/redis-ab.js <distA> <distB> [--items N] [--rounds N] [--workers N]')
    process.exit(2)
  }
  const items = intFlag(args, 'items', 300_000)
  const rounds = intFlag(args, 'rounds', 10)
  const workers = intFlag(args, 'workers', 1)
  const own = await startRedis()
  const { createClient } = await import('redis')
  const raw = createClient({ url: own.url })
  await raw.connect()
  const builds = []
  try {
    for (const [i, dir] of dirs.entries()) {
      const dist = resolve(dir)
      const name = `ab-${process.pid}-${i}`
      const sl = await import(pathToFileURL(resolve(dist, 'index.js')).href)
      const { redisStage } = await import(pathToFileURL(resolve(dist, 'redis/index.js')).href)
      builds.push({
        sl,
        stage: redisStage(name, { url: own.url, ...STAGE_OPTIONS }),
        workers: await startWorkers(dist, workers, own.url, name),
        runs: [],
      })
    }
    const input = Array.from({ length: items }, (_, i) => i)
    // one warm-up run each, not counted
    for (const b of builds) await once(b, input, raw)
    const ratios = { perSec: [], pipelineUs: [], totalUs: [] }
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [0, 1] : [1, 0]
      const got = []
      for (const i of order) got[i] = await once(builds[i], input, raw)
      for (const [i, b] of builds.entries()) b.runs.push(got[i])
      for (const k of Object.keys(ratios)) ratios[k].push(got[1][k] / got[0][k])
    }
    const med = (b, k) => median(b.runs.map((x) => x[k]))
    console.log(
      `redisStage ${JSON.stringify(STAGE_OPTIONS)}, identity on ${items} integers, ${workers} worker process(es), ${rounds} rounds (A B B A ...)`,
    )
    console.log('build                 items/s   CPU µs/item (pipeline)   CPU µs/item (all)')
    for (const [i, b] of builds.entries()) {
      console.log(
        `${`${'AB'[i]}: ${dirs[i]}`.padEnd(20)} ${String(Math.round(med(b, 'perSec'))).padStart(8)} ${med(b, 'pipelineUs').toFixed(3).padStart(24)} ${med(b, 'totalUs').toFixed(3).padStart(19)}`,
      )
    }
    console.log(
      `B/A, median of the per-round ratios: items/s ${median(ratios.perSec).toFixed(3)}, CPU per item (pipeline) ${median(ratios.pipelineUs).toFixed(3)}, CPU per item (all) ${median(ratios.totalUs).toFixed(3)}`,
    )
  } finally {
    await Promise.all(builds.map((b) => b.workers.stop()))
    await raw.close()
    await own.stop()
  }
}

if (process.argv[2] === '--worker') await worker(process.argv[3], process.argv[4], process.argv[5])
else await main()

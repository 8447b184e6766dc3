// stageline/redis next to BullMQ on the same redis-server and machine, with the same number of
// worker processes (apart from the producer), measured in one run, cells alternating in each round:
//   trivial   the identity function on N items: redisStage with its defaults, against
//             Queue.addBulk + Worker (concurrency 50)
//   sleep10   a 10 ms sleep on 20,000 items, 4 worker processes of concurrency 8: redisStage and
//             BullMQ, against a local mapStage of 32 workers doing the same in the producer's process
// and for each Redis cell the commands per item (INFO commandstats) and bytes per item (network
// in + out, INFO stats), which explain the difference. Writes benchmarks/results/bullmq.json and
// benchmarks/results/bullmq.svg.
//
//   npm run build && node benchmarks/bullmq.js [--items 50000] [--rounds 3]
//
// BullMQ keeps a completed job's record unless told not to: `removeOnComplete: true` here, as a
// long-running deployment sets it. A BullMQ run counts as done when its workers have completed
// every job (they report completions to the producer over IPC); a stageline run when every result
// is back in the producer's process.
import { fork } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { intFlag } from './common.js'
import { startRedis } from './redis.js'

const SELF = fileURLToPath(import.meta.url)
const dist = new URL('../dist/', import.meta.url)
const results = new URL('./results/', import.meta.url)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const PROCESSES = 4

/** Worker processes of `impl` ('stageline' | 'bullmq') serving queue `name`. */
async function startWorkers(impl, url, name, concurrency, ms) {
  const kids = []
  for (let i = 0; i < PROCESSES; i++) {
    kids.push(
      fork(SELF, ['--worker', impl, url, name, String(concurrency), String(ms)], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    )
  }
  let completed = 0
  let onProgress = () => {}
  await Promise.all(
    kids.map(
      (k) =>
        new Promise((resolve, reject) => {
          k.on('message', (m) => {
            if (m === 'ready') resolve()
            else if (typeof m === 'number') {
              completed += m
              onProgress()
            }
          })
          k.once('exit', (code) => reject(new Error(`a ${impl} worker exited with ${code}`)))
        }),
    ),
  )
  return {
    /** Resolves once the workers have reported `n` more completions. */
    completions(n) {
      const target = completed + n
      return new Promise((resolve) => {
        onProgress = () => {
          if (completed >= target) resolve()
        }
        onProgress()
      })
    },
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

/** Commands run and bytes moved so far (INFO commandstats and INFO stats). */
async function serverCounters(raw) {
  const cmds = String(await raw.sendCommand(['INFO', 'commandstats']))
  let calls = 0
  for (const m of cmds.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) calls += Number(m[1])
  const stats = String(await raw.sendCommand(['INFO', 'stats']))
  const bytes =
    Number(/total_net_input_bytes:(\d+)/.exec(stats)[1]) +
    Number(/total_net_output_bytes:(\d+)/.exec(stats)[1])
  return { calls, bytes }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

export async function benchBullmq({ items = 50_000, sleepItems = 20_000, rounds = 3 } = {}) {
  const { pipe, mapStage } = await import(new URL('index.js', dist))
  const { redisStage } = await import(new URL('redis/index.js', dist))
  const { Queue } = await import('bullmq')
  const { createClient } = await import('redis')
  const server = await startRedis()
  const { port } = new URL(server.url)
  const raw = createClient({ url: server.url })
  raw.on('error', () => {})
  await raw.connect()
  const connection = { host: '127.0.0.1', port: Number(port) }
  const pools = []
  const queues = []
  try {
    const sl1 = `sl-trivial-${process.pid}`
    const sl10 = `sl-sleep-${process.pid}`
    const bq1 = `bq-trivial-${process.pid}`
    const bq10 = `bq-sleep-${process.pid}`
    pools.push(await startWorkers('stageline', server.url, sl1, 1, 0))
    pools.push(await startWorkers('stageline', server.url, sl10, 8, 10))
    const bqTrivial = await startWorkers('bullmq', server.url, bq1, 50, 0)
    const bqSleep = await startWorkers('bullmq', server.url, bq10, 8, 10)
    pools.push(bqTrivial, bqSleep)
    const q1 = new Queue(bq1, { connection })
    const q10 = new Queue(bq10, { connection })
    queues.push(q1, q10)

    const stagelineRun = async (name, n, options) => {
      let count = 0
      let sum = 0
      for await (const x of pipe(
        Array.from({ length: n }, (_, i) => i),
        redisStage(name, { url: server.url, ...options }),
      ).results()) {
        count++
        sum += x
      }
      if (count !== n || sum !== (n * (n - 1)) / 2)
        throw new Error(`stageline: wrong output (${count}, ${sum})`)
    }
    const bullmqRun = async (queue, pool, n) => {
      const done = pool.completions(n)
      for (let i = 0; i < n; i += 1000) {
        const jobs = []
        for (let j = i; j < Math.min(n, i + 1000); j++) {
          jobs.push({ name: 'j', data: j, opts: { removeOnComplete: true, removeOnFail: true } })
        }
        await queue.addBulk(jobs)
      }
      await done
    }
    const localRun = async (n) => {
      let count = 0
      for await (const _ of pipe(
        Array.from({ length: n }, (_, i) => i),
        mapStage(
          async (x) => {
            await sleep(10)
            return x
          },
          { workers: 32 },
        ),
      ).results())
        count++
      if (count !== n) throw new Error('local: wrong output')
    }

    const cells = [
      {
        workload: 'trivial',
        impl: 'stageline redisStage (defaults)',
        run: () => stagelineRun(sl1, items, {}),
        n: items,
      },
      {
        workload: 'trivial',
        impl: 'BullMQ addBulk + Worker (concurrency 50)',
        run: () => bullmqRun(q1, bqTrivial, items),
        n: items,
      },
      {
        workload: 'sleep10',
        impl: 'local mapStage (32 workers)',
        run: () => localRun(sleepItems),
        n: sleepItems,
        local: true,
      },
      {
        workload: 'sleep10',
        impl: 'stageline redisStage (defaults, 4 x 8)',
        run: () => stagelineRun(sl10, sleepItems, {}),
        n: sleepItems,
      },
      {
        workload: 'sleep10',
        impl: 'BullMQ Worker (4 x 8)',
        run: () => bullmqRun(q10, bqSleep, sleepItems),
        n: sleepItems,
      },
    ]
    for (const c of cells) Object.assign(c, { rates: [], calls: [], bytes: [] })
    const loads = [loadavg()[0]]
    for (let r = 0; r < rounds; r++) {
      for (const c of cells) {
        const before = await serverCounters(raw)
        const t0 = performance.now()
        await c.run()
        const seconds = (performance.now() - t0) / 1000
        const after = await serverCounters(raw)
        c.rates.push(c.n / seconds)
        // the two INFO calls of the measurement itself are left out
        c.calls.push((after.calls - before.calls - 2) / c.n)
        c.bytes.push((after.bytes - before.bytes) / c.n)
      }
      loads.push(loadavg()[0])
    }
    const rows = cells.map((c) => ({
      workload: c.workload,
      impl: c.impl,
      itemsPerSec: Math.round(median(c.rates)),
      min: Math.round(Math.min(...c.rates)),
      max: Math.round(Math.max(...c.rates)),
      cmdsPerItem: c.local ? null : median(c.calls),
      bytesPerItem: c.local ? null : Math.round(median(c.bytes)),
      items: c.n,
    }))
    const rate = (impl) => rows.find((r) => r.impl === impl).itemsPerSec
    const ratios = {
      trivialVsBullmq: rate(cells[0].impl) / rate(cells[1].impl),
      sleepVsLocal: rate(cells[3].impl) / rate(cells[2].impl),
      sleepVsBullmq: rate(cells[3].impl) / rate(cells[4].impl),
    }
    return { rows, ratios, rounds, loads, processes: PROCESSES }
  } finally {
    await Promise.all(queues.map((q) => q.close()))
    await Promise.all(pools.map((p) => p.stop()))
    await raw.close()
    await server.stop()
  }
}

/** A bar chart (SVG) of items per second, one group per workload, on a log scale. */
export function renderBullmqChart(report) {
  const rows = report.rows
  const w = 760
  const barH = 22
  const left = 340
  const h = 40 + rows.length * (barH + 8) + 30
  const maxLog = Math.log10(Math.max(...rows.map((r) => r.itemsPerSec)) * 1.5)
  const x = (v) => left + ((w - left - 90) * Math.log10(Math.max(v, 1))) / maxLog
  const colors = { stageline: '#2f6fb0', BullMQ: '#c0392b', local: '#7f8c8d' }
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12" role="img">`,
    '<title>Items per second: stageline redisStage and BullMQ on the same redis-server</title>',
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14">items per second, median of ${report.rounds} rounds (log scale), ${report.processes} worker processes</text>`,
  ]
  rows.forEach((r, i) => {
    const y = 36 + i * (barH + 8)
    const color = r.impl.startsWith('stageline')
      ? colors.stageline
      : r.impl.startsWith('BullMQ')
        ? colors.BullMQ
        : colors.local
    parts.push(`<text x="10" y="${y + 15}">${r.workload}: ${r.impl.replace(/&/g, '&amp;')}</text>`)
    parts.push(
      `<rect x="${left}" y="${y}" width="${x(r.itemsPerSec) - left}" height="${barH}" fill="${color}"/>`,
    )
    parts.push(
      `<text x="${x(r.itemsPerSec) + 6}" y="${y + 15}">${r.itemsPerSec.toLocaleString('en-US')}</text>`,
    )
  })
  parts.push('</svg>')
  return `${parts.join('\n')}\n`
}

async function worker(impl, url, name, concurrency, ms) {
  let done = 0
  setInterval(() => {
    if (done > 0) {
      process.send(done)
      done = 0
    }
  }, 20).unref()
  const fn =
    ms === 0
      ? (x) => x
      : async (x) => {
          await sleep(ms)
          return x
        }
  if (impl === 'stageline') {
    const { serveStage } = await import(new URL('redis/index.js', dist))
    const w = await serveStage(name, { url, concurrency }, fn)
    process.on('disconnect', () => void w.close().then(() => process.exit(0)))
  } else {
    const { Worker } = await import('bullmq')
    const { port } = new URL(url)
    const w = new Worker(
      name,
      async (job) => {
        const y = await fn(job.data)
        done++
        return y
      },
      { connection: { host: '127.0.0.1', port: Number(port) }, concurrency },
    )
    await w.waitUntilReady()
    process.on('disconnect', () => void w.close().then(() => process.exit(0)))
  }
  process.send('ready')
}

if (process.argv[1] === SELF) {
  if (process.argv[2] === '--worker') {
    const [impl, url, name, concurrency, ms] = process.argv.slice(3)
    await worker(impl, url, name, Number(concurrency), Number(ms))
  } else {
    const items = intFlag(process.argv, 'items', 50_000)
    const rounds = intFlag(process.argv, 'rounds', 3)
    const report = await benchBullmq({ items, rounds })
    mkdirSync(results, { recursive: true })
    // arrays of numbers on one line, as the formatter (biome) writes them
    const json = JSON.stringify(report, null, 2).replace(
      /\[\n\s+([\d.,\s]+?)\n\s+\]/g,
      (_, xs) => `[${xs.split(/,\s*/).join(', ')}]`,
    )
    writeFileSync(new URL('bullmq.json', results), `${json}\n`)
    writeFileSync(new URL('bullmq.svg', results), renderBullmqChart(report))
    console.log(
      `load average (1 min) at start and after each round: ${report.loads.map((l) => l.toFixed(2)).join(' ')}`,
    )
    console.log(
      'workload  implementation                              items/s (median, min..max)   cmds/item  bytes/item',
    )
    for (const r of report.rows) {
      console.log(
        `${r.workload.padEnd(9)} ${r.impl.padEnd(42)} ${String(r.itemsPerSec).padStart(9)} (${r.min}..${r.max})`.padEnd(
          92,
        ) +
          `${r.cmdsPerItem === null ? '-' : r.cmdsPerItem.toFixed(2)}`.padStart(9) +
          `${r.bytesPerItem === null ? '-' : r.bytesPerItem}`.padStart(12),
      )
    }
    const { trivialVsBullmq, sleepVsLocal, sleepVsBullmq } = report.ratios
    console.log(`trivial: stageline ${trivialVsBullmq.toFixed(1)}x BullMQ (target >= 5x)`)
    console.log(
      `10 ms: stageline ${sleepVsLocal.toFixed(2)}x local (target >= 0.8x), ${sleepVsBullmq.toFixed(2)}x BullMQ (target >= 1x)`,
    )
  }
}

// A chaos soak of a Redis stage: items through a redisStage served by worker processes while a
// seeded chaos loop, every few seconds, does one of
//   kill     SIGKILL a worker process and start a new one
//   stop     SIGSTOP a worker past visibilityTimeout, then SIGCONT it (its late results must not count)
//   restart  SIGKILL redis-server (appendonly yes, appendfsync always) and start it again on its port
//   pause    block the pipeline's event loop past one renewal of the run's keys
// Each kind happens once first (in a seeded order), then seeded choices. At the end it checks
// every item's result came exactly once (by sequence number, and the sum), that no key of the run
// is left, and each worker's heap after GC; it reports how many faults of each kind happened and
// how long recovery took (from a fault's start to the first result after it ended). Then the two
// faults that must fail: Redis gone for longer than connectTimeout (the run fails with a
// RedisConnectionError in bounded time), and a worker stopped forever (none of its items is held
// longer than visibilityTimeout plus one renewal before another worker takes it over).
//
//   npm run build && node benchmarks/chaos.js [--items 1000000] [--seed 7] [--ms 4]
//
// spec/redis-chaos.spec.ts runs a short version (`runChaos()` with fewer items and shorter pauses).
import { fork, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { intFlag } from './common.js'
import { freePort, ping } from './redis.js'

const SELF = fileURLToPath(import.meta.url)
const dist = new URL('../dist/', import.meta.url)

/** The soak's settings; runChaos() takes any of them. */
export const CHAOS_DEFAULTS = {
  items: 1_000_000,
  /** ms of work per item (a sleep) */
  msPerItem: 4,
  workers: 4,
  concurrency: 8,
  capacity: 2000,
  batch: 20,
  visibilityTimeout: 3000,
  connectTimeout: 15_000,
  seed: 7,
  /** ms between faults: uniform in [min, max] */
  every: [3000, 8000],
  /** ms the pipeline's event loop is blocked by a pause: past one renewal of its keys (every 10 s) */
  pause: [10_500, 12_000],
  /** ms redis-server stays down on a restart */
  down: [200, 1200],
  /** stop after this many faults (Infinity: until the run ends) */
  maxFaults: Number.POSITIVE_INFINITY,
  log: (line) => console.log(line),
}

export const FAULTS = ['kill', 'stop', 'restart', 'pause']

/** A seeded PRNG (mulberry32): the same seed, the same faults in the same order. */
export function random(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// the server runs under a shell that kills it once our end of its stdin closes (stop(), or this
// process dying), and prints its pid so that a fault can SIGKILL it
// (`wait` quietly: the shell would report each SIGKILL of the server as "Killed")
const WATCHDOG =
  'exec 3<&0; "$0" "$@" & rs=$!; echo "pid=$rs"; (read _ <&3; kill $rs 2>/dev/null) & wait $rs 2>/dev/null'

/** A redis-server on `port` with its append-only file in `dir` (fsync on every write). */
async function redisAt(port, dir) {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir]
  args.push('--appendonly', 'yes', '--appendfsync', 'always', '--loglevel', 'warning')
  const binary = process.env.REDIS_SERVER ?? 'redis-server'
  const child = spawn('sh', ['-c', WATCHDOG, binary, ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (c) => (out += c))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const deadline = Date.now() + 10_000
  while (!(await ping(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.stdin.end()
      throw new Error(`redis-server did not start on port ${port}`)
    }
    await sleep(10)
  }
  const pid = Number(/pid=(\d+)/.exec(out)?.[1])
  return {
    kill: async () => {
      process.kill(pid, 'SIGKILL')
      await exited
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin.end()
        await exited
      }
    },
  }
}

/** A worker process serving `name`; `onStart(seq, attempt, at)` hears of each item it starts (when `track`). */
function startWorker(url, name, o, track, onStart) {
  const kid = fork(
    SELF,
    ['--worker', url, name, String(o.concurrency), String(o.msPerItem), String(o.connectTimeout)],
    {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: ['--expose-gc'],
      env: { ...process.env, CHAOS_TRACK: track ? '1' : '' },
    },
  )
  const waiting = new Map()
  let asked = 0
  kid.on('message', (m) => {
    if (m.kind === 'start') onStart?.(m.seq, m.attempt, m.at, kid)
    else if (m.kind === 'heap') waiting.get(m.id)?.(m.bytes)
  })
  const ready = new Promise((resolve, reject) => {
    const onReady = (m) => {
      if (m.kind === 'ready') {
        kid.off('message', onReady)
        resolve()
      }
    }
    kid.on('message', onReady)
    kid.once('exit', (code) => reject(new Error(`a worker exited with ${code} before it was ready`)))
  })
  ready.catch(() => {})
  return {
    kid,
    ready,
    /** Its heap after a full GC, in bytes (undefined if it does not answer within 5 s). */
    heap: () =>
      new Promise((resolve) => {
        const id = ++asked
        const timer = setTimeout(() => resolve(undefined), 5000)
        waiting.set(id, (bytes) => {
          clearTimeout(timer)
          waiting.delete(id)
          resolve(bytes)
        })
        try {
          kid.send({ kind: 'heap', id })
        } catch {
          resolve(undefined)
        }
      }),
    stop: () =>
      new Promise((resolve) => {
        if (kid.exitCode !== null || kid.signalCode !== null) return resolve()
        kid.once('exit', resolve)
        try {
          kid.kill('SIGCONT')
          kid.disconnect()
        } catch {
          kid.kill('SIGKILL')
        }
      }),
  }
}

const median = (xs) => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

/** Every key of the stage (`stageline:{name}:*`), doorbells included. */
async function stageKeys(url, name) {
  const { createClient } = await import('redis')
  const c = createClient({ url, socket: { reconnectStrategy: false } })
  c.on('error', () => {})
  await c.connect()
  try {
    return await c.sendCommand(['KEYS', `stageline:{${name}}:*`])
  } finally {
    await c.close()
  }
}

/**
 * Runs the soak; resolves to its report: { items, results, duplicates, missing, sumOk, keysLeft (the
 * run's), bellsLeft (doorbells of killed workers, which expire), faults: { kind: { count,
 * recoveryMs: { median, max } } }, heaps: [{ startMB, endMB }] (workers alive at the end), seconds }.
 */
export async function runChaos(options = {}) {
  const o = { ...CHAOS_DEFAULTS, ...options }
  const { pipe } = await import(new URL('index.js', dist))
  const { redisStage } = await import(new URL('redis/index.js', dist))
  const rnd = random(o.seed)
  const uniform = ([lo, hi]) => lo + (hi - lo) * rnd()
  const dir = mkdtempSync(join(tmpdir(), 'stageline-chaos-'))
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  let server = await redisAt(port, dir)
  const name = `chaos-${process.pid}`
  const workers = []
  const heaps = []
  const record = async (w) => {
    const startBytes = await w.heap()
    const entry = { startMB: startBytes / 2 ** 20, endMB: Number.NaN }
    heaps.push(entry)
    w.entry = entry
  }
  const t0 = performance.now()
  try {
    for (let i = 0; i < o.workers; i++) workers.push(startWorker(url, name, o, false))
    await Promise.all(workers.map((w) => w.ready))
    await Promise.all(workers.map(record))

    const seen = new Uint8Array(o.items)
    let results = 0
    let duplicates = 0
    let sum = 0
    /** Faults that ended, waiting for the next result to measure their recovery. */
    const recovering = []
    const faults = Object.fromEntries(FAULTS.map((k) => [k, { count: 0, recoveries: [] }]))
    let finished = false

    async function* source() {
      for (let i = 0; i < o.items; i++) yield i
    }
    const stage = redisStage(name, {
      url,
      capacity: o.capacity,
      batch: o.batch,
      visibilityTimeout: o.visibilityTimeout,
      connectTimeout: o.connectTimeout,
    })

    const chaos = (async () => {
      const order = [...FAULTS]
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1))
        ;[order[i], order[j]] = [order[j], order[i]]
      }
      let n = 0
      while (!finished && n < o.maxFaults) {
        const wait = uniform(o.every)
        const until = performance.now() + wait
        while (!finished && performance.now() < until) await sleep(Math.min(100, until - performance.now()))
        if (finished) break
        const kind = n < order.length ? order[n] : FAULTS[Math.floor(rnd() * FAULTS.length)]
        n++
        const started = performance.now()
        const at = ((started - t0) / 1000).toFixed(1)
        if (kind === 'kill') {
          const i = Math.floor(rnd() * workers.length)
          workers[i].kid.kill('SIGKILL')
          const fresh = startWorker(url, name, o, false)
          workers[i] = fresh
          await fresh.ready
          await record(fresh)
          o.log(`${at}s kill: worker ${i} SIGKILLed, a new one started`)
        } else if (kind === 'stop') {
          const i = Math.floor(rnd() * workers.length)
          const w = workers[i]
          w.kid.kill('SIGSTOP')
          await sleep(o.visibilityTimeout + 500)
          w.kid.kill('SIGCONT')
          o.log(`${at}s stop: worker ${i} stopped for ${o.visibilityTimeout + 500} ms`)
        } else if (kind === 'restart') {
          const down = uniform(o.down)
          await server.kill()
          await sleep(down)
          server = await redisAt(port, dir)
          o.log(`${at}s restart: redis-server down ${Math.round(down)} ms`)
        } else {
          const ms = uniform(o.pause)
          const end = performance.now() + ms
          while (performance.now() < end) {
            // the pipeline's event loop is blocked: no renewal, no read, no append
          }
          o.log(`${at}s pause: the pipeline's event loop blocked ${Math.round(ms)} ms`)
        }
        faults[kind].count++
        recovering.push({ kind, started })
      }
    })()

    for await (const x of pipe(source(), stage).results()) {
      if (seen[x] === 1) duplicates++
      else {
        seen[x] = 1
        results++
        sum += x
      }
      if (recovering.length > 0) {
        const now = performance.now()
        for (const f of recovering.splice(0)) faults[f.kind].recoveries.push(now - f.started)
      }
    }
    finished = true
    await chaos
    const seconds = (performance.now() - t0) / 1000
    for (const w of workers) if (w.entry !== undefined) w.entry.endMB = (await w.heap()) / 2 ** 20
    await Promise.all(workers.map((w) => w.stop()))
    workers.length = 0
    // a SIGKILLed worker's doorbell is its own, not the run's: it expires 30 s after its last renewal
    const keys = await stageKeys(url, name)
    const keysLeft = keys.filter((k) => !k.startsWith(`stageline:{${name}}:w:`))
    const bellsLeft = keys.length - keysLeft.length
    const expectedSum = (o.items * (o.items - 1)) / 2
    return {
      items: o.items,
      results,
      duplicates,
      missing: o.items - results,
      sumOk: sum === expectedSum,
      keysLeft,
      bellsLeft,
      seconds,
      faults: Object.fromEntries(
        Object.entries(faults).map(([k, f]) => [
          k,
          {
            count: f.count,
            recoveryMs: {
              median: Math.round(median(f.recoveries)),
              max: Math.round(Math.max(...f.recoveries, 0)),
            },
          },
        ]),
      ),
      heaps: heaps.filter((h) => Number.isFinite(h.endMB)),
    }
  } finally {
    await Promise.all(workers.map((w) => w.stop()))
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * Redis gone for longer than connectTimeout: resolves to { error, ms }, the run's error (the cause
 * of its TaskException) and the time from the kill to the run's failure.
 */
export async function goneForGood({ connectTimeout = 2000, items = 20_000 } = {}) {
  const o = { ...CHAOS_DEFAULTS, connectTimeout, msPerItem: 2 }
  const { pipe } = await import(new URL('index.js', dist))
  const { redisStage } = await import(new URL('redis/index.js', dist))
  const dir = mkdtempSync(join(tmpdir(), 'stageline-chaos-'))
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  const server = await redisAt(port, dir)
  const name = `gone-${process.pid}`
  const w = startWorker(url, name, o, false)
  try {
    await w.ready
    let killedAt = 0
    let n = 0
    const run = pipe(
      Array.from({ length: items }, (_, i) => i),
      redisStage(name, { url, batch: 20, capacity: 400, connectTimeout }),
    ).results()
    let error
    try {
      for await (const _ of run) {
        if (++n === 500) {
          killedAt = performance.now()
          await server.kill()
        }
      }
    } catch (err) {
      error = err?.cause ?? err
    }
    return { error, ms: performance.now() - killedAt }
  } finally {
    await w.stop()
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * A worker stopped forever while it holds items: resolves to { heldMs, bound } where heldMs is,
 * for each item the stopped worker had started, the time from the SIGSTOP until another worker
 * started it, and bound is visibilityTimeout plus one renewal (a third of it).
 */
export async function stalledForever({ visibilityTimeout = 1500, items = 3000 } = {}) {
  const o = { ...CHAOS_DEFAULTS, visibilityTimeout, msPerItem: 5, concurrency: 4 }
  const { pipe } = await import(new URL('index.js', dist))
  const { redisStage } = await import(new URL('redis/index.js', dist))
  const dir = mkdtempSync(join(tmpdir(), 'stageline-chaos-'))
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  const server = await redisAt(port, dir)
  const name = `stall-${process.pid}`
  const starts = new Map() // seq -> [{ attempt, at, kid }]
  const onStart = (seq, attempt, at, kid) => {
    let list = starts.get(seq)
    if (list === undefined) starts.set(seq, (list = []))
    list.push({ attempt, at, pid: kid.pid })
  }
  const ws = [0, 1, 2].map(() => startWorker(url, name, o, true, onStart))
  try {
    await Promise.all(ws.map((w) => w.ready))
    let stoppedAt = 0
    let n = 0
    const victim = ws[0].kid
    for await (const _ of pipe(
      Array.from({ length: items }, (_, i) => i),
      redisStage(name, { url, batch: 10, capacity: 200, visibilityTimeout }),
    ).results()) {
      if (++n === 300) {
        victim.kill('SIGSTOP')
        stoppedAt = Date.now()
      }
    }
    const heldMs = []
    for (const list of starts.values()) {
      const first = list.find((s) => s.pid === victim.pid)
      if (first === undefined || first.at > stoppedAt) continue
      const after = list.find((s) => s.pid !== victim.pid && s.at > first.at)
      // an item the victim finished before the stop was not held by it
      if (after !== undefined) heldMs.push(after.at - stoppedAt)
    }
    return { heldMs, bound: visibilityTimeout + visibilityTimeout / 3 }
  } finally {
    await Promise.all(ws.map((w) => w.stop()))
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

async function worker(url, name, concurrency, msPerItem, connectTimeout) {
  const { serveStage } = await import(new URL('redis/index.js', dist))
  const track = process.env.CHAOS_TRACK === '1'
  const w = await serveStage(name, { url, concurrency, connectTimeout }, async (x, ctx) => {
    // (not once the soak has let go of this worker: a send would fail with EPIPE)
    if (track && process.connected)
      process.send({ kind: 'start', seq: x, attempt: ctx.attempt, at: Date.now() })
    await sleep(msPerItem)
    return x
  })
  process.on('message', (m) => {
    if (m.kind !== 'heap') return
    globalThis.gc?.()
    process.send({ kind: 'heap', id: m.id, bytes: process.memoryUsage().heapUsed })
  })
  process.on('disconnect', () => void w.close().then(() => process.exit(0)))
  w.closed.catch(() => process.exit(3))
  process.send({ kind: 'ready' })
}

if (process.argv[1] === SELF) {
  if (process.argv[2] === '--worker') {
    const [url, name, concurrency, ms, connectTimeout] = process.argv.slice(3)
    await worker(url, name, Number(concurrency), Number(ms), Number(connectTimeout))
  } else {
    const { loadavg } = await import('node:os')
    const items = intFlag(process.argv, 'items', CHAOS_DEFAULTS.items)
    const seed = intFlag(process.argv, 'seed', CHAOS_DEFAULTS.seed)
    const msPerItem = intFlag(process.argv, 'ms', CHAOS_DEFAULTS.msPerItem)
    console.log(
      `chaos soak: ${items} items, ${msPerItem} ms each, seed ${seed}, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    )
    const r = await runChaos({ items, seed, msPerItem })
    console.log(
      `\n${r.items} items in ${r.seconds.toFixed(1)} s: ${r.results} results once, ${r.duplicates} duplicates, ${r.missing} missing, sum ${r.sumOk ? 'ok' : 'WRONG'}, run keys left: ${r.keysLeft.length} (doorbells of killed workers, expiring: ${r.bellsLeft})`,
    )
    console.log('fault      count   recovery median   recovery max')
    for (const [k, f] of Object.entries(r.faults)) {
      console.log(
        `${k.padEnd(10)} ${String(f.count).padStart(5)} ${String(f.recoveryMs.median).padStart(14)} ms ${String(f.recoveryMs.max).padStart(11)} ms`,
      )
    }
    console.log(
      'worker heaps after GC (MB, start -> end):',
      r.heaps.map((h) => `${h.startMB.toFixed(1)} -> ${h.endMB.toFixed(1)}`).join(', '),
    )
    const gone = await goneForGood()
    console.log(
      `\nredis gone past connectTimeout (2000 ms): ${gone.error?.name}: failed ${Math.round(gone.ms)} ms after the kill`,
    )
    const stall = await stalledForever()
    console.log(
      `worker stopped forever: ${stall.heldMs.length} items it held, taken over after ${Math.round(median(stall.heldMs))} ms median, ${Math.round(Math.max(...stall.heldMs))} ms max (bound ${stall.bound} ms)`,
    )
    process.exit(r.duplicates === 0 && r.missing === 0 && r.sumOk && r.keysLeft.length === 0 ? 0 : 1)
  }
}

/**
 * `node benchmarks/http.js [--items N] [--rounds N] [--only a,b]` (after `npm run build`): latency
 * and throughput on real sockets. A local HTTP server, in a child process of its own, answers each
 * request after a fixed delay with a small JSON body (`GET /<ms>/<id>`); every implementation
 * fetches from it through the same keep-alive agent settings, 10,000 items through 3 stages:
 *
 *   fetch with 16 workers, the server waiting 5 ms -> parse the body (sync) -> fetch with 4 workers,
 *   the server waiting 1 ms -> a `for await` consumer
 *
 * Each implementation runs in a child process of its own that loads only the library it measures
 * (and a fresh one each round: the rounds alternate the order of the implementations). A child
 * warms up on a twentieth of the items (compiles the hot paths, opens the agent's sockets), then
 * times the run: its throughput, and each item's latency, from the moment the first stage's
 * function starts on it to the moment the consumer receives it (p50 and p99). It also counts the
 * items waiting between the first fetch and the second (finished by the first, not yet started by
 * the second) and reports the peak: what the read-ahead let pile up.
 *
 * The read-ahead is the same for every implementation that has the knob, `READ_AHEAD` items
 * queued behind each stage beyond those its workers hold: stageline `qsize`, Node's `highWaterMark`
 * (Node adds the concurrency to it), p-map's `backpressure` (counted with the running calls, so
 * concurrency + READ_AHEAD). it-parallel and the hand-written scheduler have no bound; the peak
 * printed beside them says what they held.
 *
 * Targets: stageline's throughput at least the best peer's; its p50 and p99 within 5% of the best
 * (lowest) peer's.
 * @module
 */
import { execFile, fork } from 'node:child_process'
import { Agent, createServer, get } from 'node:http'
import { loadavg } from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { intFlag, median, optimalRun, range } from './common.js'

const SELF = fileURLToPath(import.meta.url)

/** The stages: a fetch the server answers after 5 ms (16 workers), a parse, a fetch after 1 ms (4). */
export const HTTP_STEPS = { first: { ms: 5, workers: 16 }, last: { ms: 1, workers: 4 } }

/** Items each stage may queue beyond those its workers hold, for every implementation with the knob. */
export const READ_AHEAD = 16

/** The agent every implementation fetches with: keep-alive, a socket per concurrent request. */
export const AGENT_OPTIONS = {
  keepAlive: true,
  maxSockets: HTTP_STEPS.first.workers + HTTP_STEPS.last.workers,
}

/** The implementations: name, label, and whether it is stageline (the others are peers). */
export const HTTP_IMPLS = [
  { name: 'stageline', label: 'stageline mapStage() 16 + sync + 4 workers', role: 'stageline' },
  { name: 'p-map', label: 'p-map pMapIterable', role: 'peer' },
  { name: 'node', label: 'node Readable.from().map()', role: 'peer' },
  { name: 'it-parallel', label: 'it-pipe + it-parallel', role: 'peer' },
  { name: 'hand-written', label: 'hand-written scheduler (no bound)', role: 'peer' },
]

/**
 * With `STAGELINE_DIST_B` set to another build's `dist/index.js`, that build runs too, as
 * `stageline-b`, in the same alternating rounds: an A/B of two builds on this workload.
 */
if (process.env.STAGELINE_DIST_B) {
  HTTP_IMPLS.splice(1, 0, {
    name: 'stageline-b',
    label: 'stageline, build B (STAGELINE_DIST_B)',
    role: 'build-b',
  })
}

// ---------------------------------------------------------------------------------------------
// The server

/** A small body, the same size for every id (about 80 bytes). */
function body(id) {
  return JSON.stringify({ id, name: `item ${id}`, tags: ['a', 'b'], ok: true })
}

/** In the server child: listens on a free port, says which to its parent, answers until killed. */
function serve() {
  const server = createServer((req, res) => {
    const [, ms, id] = req.url.split('/')
    const b = body(Number(id))
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) })
      res.end(b)
    }, Number(ms))
  })
  server.keepAliveTimeout = 60_000
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }))
  process.on('disconnect', () => process.exit(0))
}

/** Starts the server child; resolves to `{ port, close() }`. */
export function startServer() {
  return new Promise((resolve, reject) => {
    const child = fork(SELF, ['--server'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`the server exited with code ${code}`)))
    child.once('message', (m) => {
      child.removeAllListeners('exit')
      resolve({
        port: m.port,
        close: () =>
          new Promise((done) => {
            child.once('exit', () => done())
            child.kill()
          }),
      })
    })
  })
}

// ---------------------------------------------------------------------------------------------
// One run, in a client child

/** GET `/<ms>/<id>` through `agent`; resolves to the body. */
function fetchBody(agent, port, ms, id) {
  return new Promise((resolve, reject) => {
    const req = get({ agent, host: '127.0.0.1', port, path: `/${ms}/${id}` }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => {
        text += chunk
      })
      res.on('end', () => resolve(text))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

/**
 * The three steps over one agent, with the instruments: the first records when an item enters it,
 * the counter of items waiting between the two fetches goes up when the first ends and down when
 * the second starts.
 */
function steps(agent, port) {
  const waiting = { now: 0, peak: 0 }
  const first = async (i) => {
    const t0 = performance.now()
    const text = await fetchBody(agent, port, HTTP_STEPS.first.ms, i)
    if (++waiting.now > waiting.peak) waiting.peak = waiting.now
    return { t0, t1: performance.now(), text }
  }
  const parse = (r) => ({ t0: r.t0, t1: r.t1, id: JSON.parse(r.text).id })
  const last = async (r) => {
    waiting.now--
    const t2 = performance.now()
    const text = await fetchBody(agent, port, HTTP_STEPS.last.ms, r.id)
    if (text.length < 20) throw new Error(`short body: ${text}`)
    return { t0: r.t0, t1: r.t1, t2, t3: performance.now(), id: r.id + 1 }
  }
  return { first, parse, last, waiting }
}

/** The output of one implementation over `src`: an async iterable of the last step's results. */
async function output(name, src, s, sl) {
  const { first, last } = HTTP_STEPS
  if (name === 'stageline' || name === 'stageline-b') {
    return sl.pipe(
      src,
      sl.mapStage(s.first, { workers: first.workers, qsize: 0 }),
      sl.mapStage(s.parse, { qsize: READ_AHEAD }),
      sl.mapStage(s.last, { workers: last.workers, qsize: READ_AHEAD }),
    )
  }
  if (name === 'p-map') {
    const { pMapIterable } = await import('p-map')
    const step = (it, fn, workers, ahead) =>
      pMapIterable(it, fn, { concurrency: workers, backpressure: workers + ahead, preserveOrder: false })
    return step(step(step(src, s.first, first.workers, 0), s.parse, 1, READ_AHEAD), s.last, last.workers, 0)
  }
  if (name === 'node') {
    const { Readable } = await import('node:stream')
    return Readable.from(src)
      .map(s.first, { concurrency: first.workers, highWaterMark: 0 })
      .map(s.parse, { highWaterMark: READ_AHEAD })
      .map(s.last, { concurrency: last.workers, highWaterMark: 0 })
  }
  if (name === 'it-parallel') {
    const { default: parallel } = await import('it-parallel')
    const par = (fn, workers) => (source) =>
      parallel(
        (async function* tasks() {
          for await (const x of source) yield () => fn(x)
        })(),
        { concurrency: workers, ordered: false },
      )
    const { pipe } = await import('it-pipe')
    return pipe(
      src,
      par(s.first, first.workers),
      async function* parse(source) {
        for await (const x of source) yield s.parse(x)
      },
      par(s.last, last.workers),
    )
  }
  if (name === 'hand-written') {
    // optimalRun consumes by itself: hand it a last step that is also the consumer's body
    return { handWritten: true }
  }
  throw new Error(`unknown implementation ${name}`)
}

/** One run of `n` items: `{ ms, cpuMs, count, sum, lat, parts, peakWaiting }` (`lat`, `parts`: ms per item). */
async function runOnce(name, n, agent, port, sl) {
  const s = steps(agent, port)
  let count = 0
  let sum = 0
  const lat = new Float64Array(n)
  // where each item's time went: the first fetch, waiting for the second, the second, the hand-over
  const parts = [new Float64Array(n), new Float64Array(n), new Float64Array(n), new Float64Array(n)]
  const record = (y, now) => {
    lat[count] = now - y.t0
    parts[0][count] = y.t1 - y.t0
    parts[1][count] = y.t2 - y.t1
    parts[2][count] = y.t3 - y.t2
    parts[3][count] = now - y.t3
    count++
    sum += y.id
  }
  const cpu0 = process.cpuUsage()
  const t = performance.now()
  const out = await output(name, range(n), s, sl)
  if (out.handWritten) {
    const { first, last } = HTTP_STEPS
    const consumer = async (r) => {
      record(await s.last(r), performance.now())
      return 0
    }
    await optimalRun(range(n), [
      { fn: s.first, workers: first.workers },
      { fn: s.parse, workers: 1 },
      { fn: consumer, workers: last.workers },
    ])
  } else {
    for await (const y of out) record(y, performance.now())
  }
  const ms = performance.now() - t
  const cpu = process.cpuUsage(cpu0)
  const cpuMs = (cpu.user + cpu.system) / 1000
  const seen = (xs) => xs.subarray(0, count)
  return { ms, cpuMs, count, sum, lat: seen(lat), parts: parts.map(seen), peakWaiting: s.waiting.peak }
}

/** The latency at quantile `q` of a sorted array. */
function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

/** In a client child: warm up, then the timed run; resolves to what the parent prints. */
async function client(name, n, port) {
  const agent = new Agent(AGENT_OPTIONS)
  const dist = process.env.STAGELINE_DIST ?? fileURLToPath(new URL('../dist/index.js', import.meta.url))
  const sl =
    name === 'stageline'
      ? await import(pathToFileURL(dist).href)
      : name === 'stageline-b'
        ? await import(pathToFileURL(process.env.STAGELINE_DIST_B).href)
        : undefined
  const warm = Math.max(20, Math.floor(n / 20))
  await runOnce(name, warm, agent, port, sl)
  const r = await runOnce(name, n, agent, port, sl)
  agent.destroy()
  const want = (n * (n - 1)) / 2 + n
  if (r.count !== n || r.sum !== want)
    throw new Error(`count ${r.count}, sum ${r.sum}, expected ${n} and ${want}`)
  const sorted = Array.from(r.lat).sort((a, b) => a - b)
  const sortedParts = r.parts.map((xs) => Array.from(xs).sort((a, b) => a - b))
  return {
    impl: name,
    n,
    ms: r.ms,
    itemsPerSec: (n * 1000) / r.ms,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    peakWaiting: r.peakWaiting,
    cpuUsPerItem: (r.cpuMs * 1000) / n,
    // p50 and p99 of each part: first fetch, waiting, second fetch, hand-over to the consumer
    parts: sortedParts.map((xs) => [quantile(xs, 0.5), quantile(xs, 0.99)]),
  }
}

/** Runs one implementation in a child of its own against the server on `port`. */
export function runHttpChild(name, n, port) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [SELF, '--client', name, String(n), String(port)],
      { timeout: 300_000 },
      (err, stdout, stderr) => {
        if (err) resolve({ impl: name, error: stderr.trim().split('\n').pop() || err.message })
        else resolve(JSON.parse(stdout.trim().split('\n').pop()))
      },
    )
  })
}

/**
 * The workload: a server child, then `rounds` rounds of one child per implementation, the order
 * rotated each round. Resolves to `{ rows, targets }`: per implementation the medians of its
 * throughput, p50 and p99 (with their ranges), and the targets judged against the best peer.
 */
export async function measureHttp({ n = 10_000, rounds = 5, only, parts = false, log = () => {} } = {}) {
  const impls = HTTP_IMPLS.filter((i) => only === undefined || only.includes(i.name))
  const server = await startServer()
  const runs = new Map(impls.map((i) => [i.name, []]))
  try {
    for (let r = 0; r < rounds; r++) {
      const order = impls.map((_, k) => impls[(k + r) % impls.length])
      for (const impl of order) {
        const res = await runHttpChild(impl.name, n, server.port)
        runs.get(impl.name).push(res)
        log(
          res.error === undefined
            ? `  round ${r + 1} ${impl.name.padEnd(12)} ${res.itemsPerSec.toFixed(0).padStart(6)} items/s  p50 ${res.p50.toFixed(2)} ms  p99 ${res.p99.toFixed(2)} ms  waiting peak ${res.peakWaiting}  client cpu ${res.cpuUsPerItem.toFixed(0)} us/item${parts ? `  parts p50/p99 ${res.parts.map(([a, b]) => `${a.toFixed(1)}/${b.toFixed(1)}`).join(' ')}` : ''}`
            : `  round ${r + 1} ${impl.name.padEnd(12)} FAILED ${res.error}`,
        )
      }
    }
  } finally {
    await server.close()
  }
  const rows = impls.map((impl) => {
    const all = runs.get(impl.name)
    const failed = all.find((x) => x.error !== undefined)
    if (failed !== undefined) return { ...impl, error: failed.error }
    const pick = (k) => all.map((x) => x[k])
    const range3 = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) })
    return {
      ...impl,
      error: undefined,
      runs: all.length,
      itemsPerSec: range3(pick('itemsPerSec')),
      p50: range3(pick('p50')),
      p99: range3(pick('p99')),
      peakWaiting: Math.max(...pick('peakWaiting')),
    }
  })
  return { rows, targets: httpTargets(rows) }
}

/** The targets, judged on medians: stageline against the best peer on each measure. */
export function httpTargets(rows) {
  const sl = rows.find((r) => r.role === 'stageline')
  const peers = rows.filter((r) => r.role === 'peer' && r.error === undefined)
  if (sl === undefined || peers.length === 0) return []
  const best = (k, dir) =>
    peers.reduce((b, r) => ((dir > 0 ? r[k].median > b[k].median : r[k].median < b[k].median) ? r : b))
  const ok = sl.error === undefined
  const out = []
  const bt = best('itemsPerSec', 1)
  out.push({
    workload: 'http',
    text: `http: stageline throughput >= the best peer's (${bt.name})`,
    value: ok
      ? `${sl.itemsPerSec.median.toFixed(0)} vs ${bt.itemsPerSec.median.toFixed(0)} items/s (${(sl.itemsPerSec.median / bt.itemsPerSec.median).toFixed(3)}x)`
      : sl.error,
    pass: ok && sl.itemsPerSec.median >= bt.itemsPerSec.median,
  })
  for (const k of ['p50', 'p99']) {
    const b = best(k, -1)
    out.push({
      workload: 'http',
      text: `http: stageline ${k} latency within 5% of the best peer's (${b.name})`,
      value: ok
        ? `${sl[k].median.toFixed(2)} vs ${b[k].median.toFixed(2)} ms (${(sl[k].median / b[k].median).toFixed(3)}x)`
        : sl.error,
      pass: ok && sl[k].median <= b[k].median * 1.05,
    })
  }
  return out
}

/** The table as printed. */
export function httpTable(rows) {
  const fmt = (x, d) => `${x.median.toFixed(d)} (${x.min.toFixed(d)}..${x.max.toFixed(d)})`
  const lines = [
    'implementation                              items/s (min..max)     p50 ms (min..max)     p99 ms (min..max)     peak waiting',
  ]
  for (const r of rows) {
    lines.push(
      r.error !== undefined
        ? `${r.label.padEnd(44)}FAILED: ${r.error}`
        : `${r.label.padEnd(44)}${fmt(r.itemsPerSec, 0).padEnd(23)}${fmt(r.p50, 2).padEnd(22)}${fmt(r.p99, 2).padEnd(22)}${r.peakWaiting}`,
    )
  }
  return lines.join('\n')
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2)
  if (args[0] === '--server') serve()
  else if (args[0] === '--client') {
    const [name, n, port] = args.slice(1)
    console.log(JSON.stringify(await client(name, Number(n), Number(port))))
  } else {
    const n = intFlag(args, 'items', 10_000)
    const rounds = intFlag(args, 'rounds', 5)
    const at = args.indexOf('--only')
    const only = at < 0 ? undefined : args[at + 1].split(',')
    const load = () =>
      loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')
    console.log(
      `http: ${n.toLocaleString('en-US')} items, fetch (server waits ${HTTP_STEPS.first.ms} ms) x ${HTTP_STEPS.first.workers} workers -> parse -> fetch (${HTTP_STEPS.last.ms} ms) x ${HTTP_STEPS.last.workers}; read-ahead ${READ_AHEAD}; ${rounds} rounds, a process per run; load average ${load()}`,
    )
    const parts = args.includes('--parts')
    const { rows, targets } = await measureHttp({ n, rounds, only, parts, log: console.log })
    console.log(`\n${httpTable(rows)}\n(medians of ${rounds} rounds; load average at the end ${load()})`)
    for (const t of targets) console.log(`  ${t.pass ? 'met   ' : 'MISSED'}  ${t.text}: ${t.value}`)
  }
}

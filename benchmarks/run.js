/**
 * `npm run bench [-- options]`: runs the throughput workloads against the peers in this one process
 * run (the memory workload in child processes), prints the tables and the target verdicts, and
 * writes the JSON and the SVG chart to benchmarks/results/.
 *
 * Options:
 *   --quick            small sizes, one round: a smoke check in well under a minute
 *   --rounds N         timed runs per implementation (default 5; 1 with --quick)
 *   --only a,b         only the workloads whose id starts with one of these (overhead-async, io, http, memory, cpu, ...)
 *   --reduce-below R   peers under R x the baseline in the warm-up run on the reduced size (default 0.5)
 *   --out DIR          where to write the results (default benchmarks/results)
 * @module
 */
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { renderChart } from './chart.js'
import { cleanCheck, measureImport } from './clean.js'
import { measureWorkload } from './harness.js'
import { measureMemory } from './memory.js'
import { deferToClean, evaluateTargets, memoryTable, throughputTable, toJson } from './report.js'
import { defineWorkloads, SIZES } from './workloads.js'

const here = dirname(fileURLToPath(import.meta.url))

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    only: { type: 'string' },
    'reduce-below': { type: 'string', default: '0.5' },
    out: { type: 'string', default: join(here, 'results') },
  },
})
const quick = args.quick
const rounds = args.rounds === undefined ? (quick ? 1 : 5) : Number(args.rounds)
if (!Number.isInteger(rounds) || rounds < 1)
  throw new RangeError(`--rounds: expected an integer >= 1, got ${args.rounds}`)
const reduceBelow = Number(args['reduce-below'])
if (!(reduceBelow >= 0))
  throw new RangeError(`--reduce-below: expected a number >= 0, got ${args['reduce-below']}`)
const only = args.only?.split(',').filter((s) => s !== '')
const wanted = (id) => only === undefined || only.some((o) => id.startsWith(o))
const sizes = quick ? SIZES.quick : SIZES.full
const memorySizes = quick ? [5_000, 20_000] : [1_000_000, 10_000_000]
/** Children per size for the implementations the memory targets compare (stageline, p-map): one peak moves 1-3 MB between runs. */
const MEMORY_REPEATS = 3

const log = (line) => console.log(line)
const started = performance.now()
const meta = {
  date: new Date().toISOString(),
  machine: `${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GB, ${process.platform} ${process.arch}`,
  node: process.version,
  command: `npm run bench${quick ? ' -- --quick' : ''}${args.rounds !== undefined ? ` --rounds ${rounds}` : ''}${only ? ` --only ${only.join(',')}` : ''}`,
  commit: gitCommit(),
  quick,
  rounds,
  reduceBelow,
  sizes,
  memorySizes,
  loadavgStart: loadavg(),
}
log(`stageline benchmarks, ${meta.date}`)
log(
  `${meta.machine}, node ${meta.node}, load average ${meta.loadavgStart.map((x) => x.toFixed(2)).join(' ')}`,
)
log(`${rounds} round(s) per cell; ratios are per-round pairs with the baseline, median shown [min..max]`)
log(`peers below ${reduceBelow}x the baseline in the warm-up run on ${sizes.reduced} items (marked *)`)

const distEntry = join(here, '..', 'dist', 'index.js')
if (!existsSync(distEntry)) {
  console.error(
    `benchmarks: ${relative(process.cwd(), distEntry)} is missing; run \`npm run build\` first (npm run bench does)`,
  )
  process.exit(1)
}
// The run uses a snapshot of dist/: a build may replace dist/ while a long run goes on, and a
// thread stage loads its worker module from disk when it starts (a rebuilt one may not match). It
// sits under node_modules/ so that the snapshot's imports of its dependencies resolve as dist's do.
const snapshot = join(here, '..', 'node_modules', '.cache', 'stageline-bench', String(process.pid))
cpSync(dirname(distEntry), join(snapshot, 'dist'), { recursive: true })
// node_modules/ ends the search for a package.json: say here that the snapshot's files are ESM
writeFileSync(join(snapshot, 'package.json'), '{ "type": "module" }\n')
process.on('exit', () => rmSync(snapshot, { recursive: true, force: true }))
process.env.STAGELINE_DIST = join(snapshot, 'dist', 'index.js') // for the memory children
const sl = await import(pathToFileURL(process.env.STAGELINE_DIST).href)

const throughput = []
for (const w of defineWorkloads(sl, sizes)) {
  if (!wanted(w.id)) continue
  log(`\n== ${w.title} (${w.n} items)`)
  const rows = await measureWorkload(w, { rounds, reduceBelow, warmupN: quick ? 5_000 : 50_000, log })
  throughput.push(...rows)
  log(throughputTable(rows))
}

// Workloads written alongside this suite, each in its own module with the shape its author chose:
// - cpu.js (the cpu workload): default export `cpu({ quick, rounds, log, sl })`, measuring with this harness
//   and resolving to `{ rows, targets }` (rows as measureWorkload returns them);
// - http.js (latency on real sockets): `measureHttp({ n, rounds, log })`, resolving to `{ rows, targets }`
//   with rows of its own shape (throughput, p50, p99), printed by its `httpTable()` and kept under `http`;
// - memory-peak.js: `measurePeak({ n, runs, impls, log })`, resolving to `{ rows, targets }` (rows of
//   its own shape, printed by `peakTable()` and kept under `memoryPeak`);
// - redis.js (the Redis workload): `benchRedis({ items, runs })`, resolving to rows
//   `{ impl, workers, itemsPerSec, ratio, runs }` with ratios to a local mapStage, turned into rows here.
const EXTRA = [
  {
    id: 'cpu',
    file: 'cpu.js',
    what: 'the cpu workload, thread stages against piscina',
    run: async (mod) => mod.default({ quick, rounds, log, sl }),
  },
  {
    id: 'http',
    file: 'http.js',
    what: 'latency on real sockets',
    run: async (mod) => {
      const { rows, targets } = await mod.measureHttp({ n: quick ? 1_000 : 10_000, rounds, log })
      log(mod.httpTable(rows))
      return { rows: [], targets, http: rows }
    },
  },
  {
    id: 'memory-peak',
    file: 'memory-peak.js',
    what: 'the memory peak of 1 KB records through a sync and an async map stage',
    run: async (mod) => {
      const n = quick ? 200_000 : 10_000_000
      const { rows, targets } = await mod.measurePeak({
        n,
        runs: quick ? 1 : 3,
        impls: ['stageline', 'p-map'],
        log,
      })
      log(mod.peakTable(rows))
      return { rows: [], targets, memoryPeak: rows }
    },
  },
  {
    id: 'redis',
    file: 'redis.js',
    what: 'the Redis workload',
    run: async (mod) => {
      const items = quick ? 20_000 : 300_000
      return { rows: redisRows(await mod.benchRedis({ items, runs: rounds }), items), targets: [] }
    },
  },
]
const extra = []
const extraTargets = []
const extraWorkloads = new Set()
for (const { id, file, what, run } of EXTRA) {
  if (!wanted(id)) continue
  const path = join(here, file)
  if (!existsSync(path)) {
    log(`\n== ${id}: SKIPPED, benchmarks/${file} is not there yet (${what})`)
    extra.push({ workload: id, skipped: `benchmarks/${file} is not there yet` })
    continue
  }
  log(`\n== ${id}: benchmarks/${file}`)
  try {
    const result = await run(await import(pathToFileURL(path).href))
    const rows = Array.isArray(result?.rows) ? result.rows : []
    for (const w of new Set(rows.map((r) => r.workload))) {
      const ws = rows.filter((r) => r.workload === w)
      log(`${ws[0].title}\n${throughputTable(ws)}`)
    }
    throughput.push(...rows)
    for (const r of rows) extraWorkloads.add(r.workload)
    if (Array.isArray(result?.targets)) extraTargets.push(...result.targets)
    const { rows: _rows, targets: _targets, ...rest } = result ?? {}
    extra.push({ workload: id, ...rest })
  } catch (err) {
    log(`  FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    extra.push({ workload: id, error: String(err) })
  }
}

// the overhead targets again, each in a child process that loads stageline and nothing else: with
// the peers' libraries loaded (as here), the bare chain slows down more than stageline does
let clean = { results: [], targets: [] }
if (['overhead-async', 'overhead-sync', 'generator'].some((id) => wanted(id))) {
  log(`\n== overhead targets, stageline alone in its process (benchmarks/clean.js, ${sizes.overhead} items)`)
  clean = await cleanCheck({ n: sizes.overhead, rounds, log })
  clean.import = await measureImport()
  log(
    `  import: ${clean.import.median.toFixed(1)} ms to import stageline in a fresh process (not in any row's time)`,
  )
}

let memory = []
if (wanted('memory')) {
  log(`\n== memory: ${memorySizes.join(' and ')} items of 1 KB, 2 steps, consumer yielding every 100 items`)
  memory = await measureMemory({
    sizes: memorySizes,
    parallel: 2,
    log,
    maxSeconds: quick ? 60 : 150,
    repeats: quick ? 1 : MEMORY_REPEATS,
  })
  log(memoryTable(memory))
}

// targets of this suite's own workloads; the cpu and redis modules evaluate theirs
const own = throughput.filter((r) => !extraWorkloads.has(r.workload))
// where a workload was also measured alone, that row decides (see deferToClean)
const targets = [
  ...deferToClean(evaluateTargets(own, memory), clean.results),
  ...clean.targets,
  ...extraTargets,
]
if (targets.length > 0) {
  log('\n== stageline targets')
  for (const t of targets) log(`  ${t.info ? 'info  ' : t.pass ? 'met   ' : 'MISSED'}  ${t.text}: ${t.value}`)
}

meta.loadavgEnd = loadavg()
meta.seconds = Math.round((performance.now() - started) / 1000)
const result = { meta, throughput, clean: clean.results, cleanImport: clean.import, memory, extra, targets }
mkdirSync(args.out, { recursive: true })
const base = join(args.out, quick ? 'quick' : 'bench')
writeFileSync(`${base}.json`, `${toJson(result)}\n`)
writeFileSync(`${base}.svg`, renderChart(result))
log(
  `\nwrote ${relative(process.cwd(), `${base}.json`)} and ${relative(process.cwd(), `${base}.svg`)} in ${meta.seconds} s`,
)

const failed = [...throughput, ...memory].filter((r) => r.error !== null)
if (failed.length > 0) {
  log(`\n${failed.length} implementation(s) gave a wrong result or failed:`)
  for (const r of failed) log(`  ${r.workload} ${r.impl}: ${r.error}`)
  process.exitCode = 1
}

/** redis.js's rows in the suite's row format (benchmarks/types.d.ts). */
function redisRows(rows, items) {
  const title = `redis: identity on ${items} integers, redisStage with 1 and 4 worker processes vs a local mapStage`
  return rows.map((r) => ({
    workload: 'redis',
    group: 'redis',
    title,
    impl: r.workers === 0 ? r.impl : `${r.impl} x${r.workers}`,
    label: r.workers === 0 ? r.impl : `${r.impl}, ${r.workers} worker process${r.workers === 1 ? '' : 'es'}`,
    role: r.workers === 0 ? 'baseline' : 'stageline',
    ordered: undefined,
    baseline: 'local mapStage',
    n: items,
    reduced: false,
    runs: Array.isArray(r.runs) ? r.runs.length : 0,
    itemsPerSec: r.itemsPerSec ?? null,
    ratio: r.ratio ?? null,
    ratioMin: null,
    ratioMax: null,
    target: undefined,
    peakReorder: null,
    error: r.itemsPerSec == null ? 'no result' : null,
  }))
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: here, encoding: 'utf8' }).trim()
  } catch {
    return null
  }
}

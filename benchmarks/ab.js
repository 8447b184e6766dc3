/**
 * `node benchmarks/ab.js <distA> <distB> [--kind sync|async|gen|genmap|io|threads|thread-records] [--workers N] [--items N] [--rounds N] [--stats] [--a MODE] [--b MODE] [--processes N]`
 *
 * A/B of two builds of stageline on one workload, alternating A and B round by round in one
 * process (which goes first alternates too) so that drift in the machine's speed hits both alike.
 * The overhead workloads are 3 steps of x + 1 read with `for await` (`sync` and `async` map stages,
 * `gen` generator stages, `genmap` a generator step then 2 sync map steps); `io` is 2 map stages
 * that wait 5 ms (16 workers) then 1 ms (4 workers) per item, 2,000 items by default; `threads` is
 * one thread stage over benchmarks/cpu.js's tiny items (`--workers` threads), `thread-records` the
 * same with small records (objects of a few fields) as items and results. `--stats` runs with an
 * `onProgress` callback, so that the stages keep their time accounting. `--a` and `--b` set how
 * each build's runs are made (MODE): `plain` (no option), `stats` (as `--stats`), `sampled` (an
 * `onProgress` callback on a run that keeps no time book: the sampled timings without the time
 * accounting; it reaches into the build's engine, so both builds must have its layout) or `report`
 * (each run writes a JSON report to a temporary folder: its sampling and its writing are timed with
 * the run). The same build as A and B with `--a sampled --b stats` measures what the time accounting
 * costs, `--a stats --b report` what a report costs over it, `--a plain --b report` all a report
 * costs. Prints the median of the
 * per-round ratios (B's speed over A's), the spread between the 20th and 80th percentile, and each
 * build's median rate; A against itself gives the A/A spread of the measurement. With
 * `--processes N` the whole measurement runs in N fresh processes one after the other, and the
 * median of their medians is printed with each one's: a process's JIT and heap settle differently
 * from one process to the next, which moves one process's ratio by several percent where the
 * median over a dozen processes moves by under one. Use it before and after an engine change:
 *
 *   git worktree add ../stageline-base HEAD && (cd ../stageline-base && npm install && npm run build)
 *   npm run build && node benchmarks/ab.js ../stageline-base/dist dist --kind gen --workers 4
 * @module
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { consume, intFlag, range } from './common.js'

const KINDS = ['sync', 'async', 'gen', 'genmap', 'io', 'threads', 'thread-records']
const MODES = ['plain', 'stats', 'sampled', 'report']

function usage(problem) {
  console.error(
    `${problem}\nusage: node benchmarks/ab.js <distA> <distB> [--kind ${KINDS.join('|')}] [--workers N] [--items N] [--rounds N] [--stats]`,
  )
  process.exit(2)
}

const args = process.argv.slice(2)
const dirs = args.filter((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')))
if (dirs.length !== 2) usage(`expected two build directories, got ${dirs.length}`)
const kindAt = args.indexOf('--kind')
const kind = kindAt < 0 ? 'sync' : args[kindAt + 1]
if (!KINDS.includes(kind)) usage(`--kind must be one of ${KINDS.join(', ')}, got ${kind}`)
const nums = {
  workers: intFlag(args, 'workers', 1),
  items: intFlag(args, 'items', kind === 'io' ? 2_000 : 300_000),
  rounds: intFlag(args, 'rounds', kind === 'io' ? 7 : 15),
}
const stats = args.includes('--stats')
/** The mode of build A's or B's runs (`--a`, `--b`), `stats` or `plain` by `--stats`. */
function mode(flag) {
  const at = args.indexOf(flag)
  const m = at < 0 ? (stats ? 'stats' : 'plain') : args[at + 1]
  if (!MODES.includes(m)) usage(`${flag} must be one of ${MODES.join(', ')}, got ${m}`)
  return m
}
const modes = [mode('--a'), mode('--b')]

const processes = intFlag(args, 'processes', 1)
if (processes > 1) {
  // the same command without --processes, once per fresh process; each prints its own line
  const at = args.indexOf('--processes')
  const own = [...args.slice(0, at), ...args.slice(at + 2)]
  const medians = []
  for (let i = 0; i < processes; i++) {
    const line = execFileSync(process.execPath, [fileURLToPath(import.meta.url), ...own], {
      encoding: 'utf8',
    }).trim()
    console.log(`  process ${i + 1}: ${line}`)
    medians.push(Number(/B\/A speed ([0-9.]+)/.exec(line)[1]))
  }
  medians.sort((x, y) => x - y)
  const mid = medians.length >> 1
  const median = medians.length % 2 ? medians[mid] : (medians[mid - 1] + medians[mid]) / 2
  console.log(
    `median over ${processes} processes: B/A speed ${median.toFixed(3)} (processes ${medians[0].toFixed(3)}..${medians.at(-1).toFixed(3)})`,
  )
  process.exit(0)
}
const reports = mkdtempSync(join(tmpdir(), 'stageline-ab-'))
process.on('exit', () => rmSync(reports, { recursive: true, force: true }))

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor

/** The module the thread stages' threads load: its `tiny` and `tinyRecord` exports. */
const CPU = new URL('./cpu.js', import.meta.url)

/** Small records as a thread stage's items: a few fields, a nested array and object. */
function* records(n) {
  for (let i = 0; i < n; i++) yield { id: i, name: `item ${i}`, tags: ['a', 'b'], at: { x: i, y: -i } }
}

/** Counts the records a thread stage sends back (`{ id, h }`) and sums their ids. */
async function consumeRecords(iterable) {
  let count = 0
  let sum = 0
  for await (const r of iterable) {
    count++
    sum += r.id
  }
  return { count, sum: sum - (count * (count - 1)) / 2, inversions: 0 }
}

/**
 * One run of the workload on build `sl`, its runs made as `how` says; each build gets its own copies
 * of the functions. `engine` is the build's engine modules, for the `sampled` mode.
 */
function job(sl, how, tag, engine) {
  const { workers, items } = nums
  if (kind === 'threads' || kind === 'thread-records') {
    const rec = kind === 'thread-records'
    const s = sl.threadStage(CPU, { export: rec ? 'tinyRecord' : 'tiny', threads: workers })
    return async () => {
      const r = await (rec ? consumeRecords(sl.pipe(records(items), s)) : consume(sl.pipe(range(items), s)))
      if (r.count !== items) throw new Error(`expected ${items} items, got ${r.count}`)
    }
  }
  const gen = () =>
    sl.stage(new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1'), { workers })
  const map = (sync) =>
    sl.mapStage(sync ? new Function('x', 'return x + 1') : new Function('return async (x) => x + 1')(), {
      workers,
    })
  const wait = (ms, w) =>
    sl.mapStage(
      async (x) => {
        await sleep(ms)
        return x + 1
      },
      { workers: w },
    )
  // genmap: one generator stage, then two sync map stages (fused into the generator's worker)
  const steps =
    kind === 'gen'
      ? [gen(), gen(), gen()]
      : kind === 'genmap'
        ? [gen(), map(true), map(true)]
        : kind === 'io'
          ? [wait(5, 16), wait(1, 4)]
          : [map(kind === 'sync'), map(kind === 'sync'), map(kind === 'sync')]
  // with an onProgress callback the run keeps its time accounting (the interval never fires)
  const options =
    how === 'stats'
      ? { onProgress() {}, progressInterval: 2 ** 31 - 1 }
      : how === 'report'
        ? { report: join(reports, `${tag}.json`) }
        : undefined
  if (how === 'sampled') {
    // what `results({ onProgress })` does, but on a run that keeps no time book
    const { Execution, Results, watchProgress } = engine
    const open = () => {
      const exec = new Execution(sl.pipe(range(items), ...steps).plan, { accounting: false })
      watchProgress(exec, () => {}, 2 ** 31 - 1)
      return exec
    }
    return async () => {
      const r = await consume(new Results(open))
      if (r.count !== items) throw new Error(`expected ${items} items, got ${r.count}`)
    }
  }
  return async () => {
    const r = await consume(sl.pipe(range(items), ...steps).results(options))
    if (r.count !== items) throw new Error(`expected ${items} items, got ${r.count}`)
  }
}

const load = (d, file) => import(pathToFileURL(resolve(d, file)).href)
const [a, b] = await Promise.all(dirs.map((d) => load(d, 'index.js')))
/** The engine modules of build `d`, for the `sampled` mode. */
async function engineOf(d) {
  const [{ Execution }, { Results }, { watchProgress }] = await Promise.all(
    ['engine/execution.js', 'engine/consumer.js', 'engine/stats.js'].map((f) => load(d, f)),
  )
  return { Execution, Results, watchProgress }
}
const engines = await Promise.all(dirs.map((d, i) => (modes[i] === 'sampled' ? engineOf(d) : undefined)))
const runA = job(a, modes[0], 'a', engines[0])
const runB = job(b, modes[1], 'b', engines[1])
const ratios = []
const rates = [[], []]
/** Runs `run` once and says how long it took, in ms. */
async function timed(run) {
  const t = performance.now()
  await run()
  return performance.now() - t
}
for (let r = 0; r < nums.rounds; r++) {
  // which build goes first alternates, so that what the first run of a round pays (or leaves
  // behind: garbage, a pool's threads exiting) weighs on both alike
  let ta
  let tb
  if (r % 2 === 0) {
    ta = await timed(runA)
    tb = await timed(runB)
  } else {
    tb = await timed(runB)
    ta = await timed(runA)
  }
  ratios.push(ta / tb)
  rates[0].push((nums.items * 1000) / ta)
  rates[1].push((nums.items * 1000) / tb)
}
const quantile = (xs, q) => {
  const sorted = [...xs].sort((x, y) => x - y)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}
const at = (q) => quantile(ratios, q)
const perSec = (xs) => `${Math.round(quantile(xs, 0.5) / 1000)}k items/s`
console.log(
  `${kind}${modes[0] === modes[1] ? (modes[0] === 'plain' ? '' : ` (with ${modes[0]})`) : ` (A ${modes[0]}, B ${modes[1]})`}, workers ${nums.workers}, ${nums.items} items, ${nums.rounds} rounds: B/A speed ${at(0.5).toFixed(3)} (p20..p80 ${at(0.2).toFixed(2)}..${at(0.8).toFixed(2)}); medians A ${perSec(rates[0])}, B ${perSec(rates[1])}`,
)

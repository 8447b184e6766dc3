/**
 * The overhead workloads' targets again, each in a child process that loads stageline and nothing
 * else: `node benchmarks/clean.js [--items N] [--rounds N]` (after `npm run build`), or as part of
 * `npm run bench`.
 *
 * Why: in the main benchmark process the peers' libraries are loaded too, and with them loaded the
 * bare async-generator chain runs up to 1.9x slower while stageline runs about 1.1x slower. The
 * cause is the size of V8's young generation (docs/dev/engine-notes.md, "The baseline moves with
 * the young generation"): V8 grows it with the heap, to 16 MB a semi-space in a process that has
 * imported a few libraries or holds some tens of thousands of objects, and the bare chain, which
 * allocates about 15 promises an item, runs 1.6x slower with it. A child that loads only stageline keeps a small heap and a
 * small young generation. So every case runs twice, in children of their own: with V8's default
 * (the tiny heap of a benchmark process) and with the young generation fixed at 16 MB (what an
 * application's process gets). Each child alternates the bare chain and stageline round by round,
 * as the main harness does, and checks count and sum after every timed run.
 * @module
 */
import { execFile } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { bareChain, consume, intFlag, range, rangeSum } from './common.js'

/** The cases: the overhead workloads of workloads.js, with their targets. */
export const CLEAN_CASES = [
  { kind: 'async', workers: 1, min: 1.0 },
  { kind: 'async', workers: 4, min: 1.0 },
  { kind: 'sync', workers: 1, min: 5.0 },
  { kind: 'sync', workers: 4, min: 5.0 },
  { kind: 'gen', workers: 1, min: 0.9 },
  { kind: 'gen', workers: 4, min: 0.9 },
]

const WORKLOAD = { async: 'overhead-async', sync: 'overhead-sync', gen: 'generator' }

/**
 * The young generation each case runs with: V8's default (`youngMB` null), and a semi-space of 16
 * MB from the start, the size V8 grows it to by itself in a process that has imported the peers'
 * libraries or holds 60,000 small objects (`node benchmarks/young.js`; docs/dev/engine-notes.md).
 */
export const YOUNG_SETTINGS = [null, 16]

/** The node flags of a young-generation setting. */
function youngFlags(youngMB) {
  return youngMB === null ? [] : [`--min-semi-space-size=${youngMB}`, `--max-semi-space-size=${youngMB}`]
}

/** How a target's text names a setting. */
function youngText(youngMB) {
  return youngMB === null ? '' : `, young generation ${youngMB} MB`
}

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor
/** A generator step compiled for one use (see freshInc() in workloads.js). */
const freshInc = () => new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1')

/** The bare chain and stageline for one case, as `(n) => Promise<{ count, sum }>`. */
function jobs(sl, kind, workers) {
  if (kind === 'gen') {
    const inc = freshInc()
    const st = sl.stage(freshInc(), { workers })
    return {
      bare: (n) => consume(inc(inc(inc(range(n))))),
      stageline: (n) => consume(sl.pipe(range(n), st, st, st)),
    }
  }
  const fn = kind === 'sync' ? (x) => x + 1 : async (x) => x + 1
  const ms = sl.mapStage(fn, { workers })
  return {
    bare: (n) => consume(bareChain(range(n), [fn, fn, fn], kind === 'sync')),
    stageline: (n) => consume(sl.pipe(range(n), ms, ms, ms)),
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]
}

/**
 * Measures one case in this process: a warm-up of each, then `rounds` rounds alternating which
 * goes first. Resolves to the median ratio (bare time / stageline time) with its range and the
 * median ns per item of each; rejects if either gives a wrong count or sum.
 */
export async function measureClean(sl, { kind, workers, n, rounds }) {
  const job = jobs(sl, kind, workers)
  const check = (name, r, size) => {
    const want = rangeSum(size, 3)
    if (r.count !== size || r.sum !== want)
      throw new Error(`${name}: count ${r.count}, sum ${r.sum}, expected ${size} and ${want}`)
  }
  const warm = Math.max(1, n >> 3)
  for (const name of ['bare', 'stageline']) check(name, await job[name](warm), warm)
  const times = { bare: [], stageline: [] }
  for (let r = 0; r < rounds; r++) {
    for (const name of r % 2 === 0 ? ['bare', 'stageline'] : ['stageline', 'bare']) {
      const t0 = performance.now()
      const result = await job[name](n)
      times[name].push(performance.now() - t0)
      check(name, result, n)
    }
  }
  const ratios = times.bare.map((t, i) => t / times.stageline[i])
  return {
    workload: `${WORKLOAD[kind]}/w${workers}`,
    ratio: median(ratios),
    ratioMin: Math.min(...ratios),
    ratioMax: Math.max(...ratios),
    bareNs: (median(times.bare) / n) * 1e6,
    stagelineNs: (median(times.stageline) / n) * 1e6,
  }
}

const CHILD = fileURLToPath(import.meta.url)

/** Runs one case in a child process of its own; resolves to its result or `{ error }`, with `youngMB`. */
function runChild(c, n, rounds, youngMB) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...youngFlags(youngMB), CHILD, '--child', c.kind, String(c.workers), String(n), String(rounds)],
      { timeout: 300_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          resolve({
            workload: `${WORKLOAD[c.kind]}/w${c.workers}`,
            youngMB,
            error: stderr.trim().split('\n').pop() ?? err.message,
          })
          return
        }
        resolve({ ...JSON.parse(stdout.trim().split('\n').pop()), youngMB })
      },
    )
  })
}

/**
 * Every case, one child each, one after the other. Resolves to the results and the targets
 * judged on them (`{ workload, text, value, pass }`, as run.js prints them).
 */
export async function cleanCheck({ n, rounds, log = () => {} }) {
  const results = []
  const targets = []
  for (const youngMB of YOUNG_SETTINGS) {
    for (const c of CLEAN_CASES) {
      const r = await runChild(c, n, rounds, youngMB)
      results.push(r)
      const ok = r.error === undefined
      const where = `${r.workload}${youngMB === null ? '' : ` (young ${youngMB} MB)`}`
      log(
        ok
          ? `  ${where.padEnd(34)} bare ${r.bareNs.toFixed(0).padStart(5)} ns/item, stageline ${r.stagelineNs.toFixed(0).padStart(5)} ns/item: ${r.ratio.toFixed(2)}x [${r.ratioMin.toFixed(2)}x..${r.ratioMax.toFixed(2)}x]`
          : `  ${where}: FAILED ${r.error}`,
      )
      targets.push({
        workload: r.workload,
        text: `${r.workload}, stageline alone in its process${youngText(youngMB)}: stageline >= ${c.min}x the bare chain`,
        value: ok
          ? `${r.ratio.toFixed(2)}x (runs ${r.ratioMin.toFixed(2)}x..${r.ratioMax.toFixed(2)}x)`
          : r.error,
        pass: ok && r.ratio >= c.min,
      })
    }
  }
  return { results, targets }
}

const argv = process.argv.slice(2)
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const dist = process.env.STAGELINE_DIST ?? fileURLToPath(new URL('../dist/index.js', import.meta.url))
  if (argv[0] === '--child') {
    const sl = await import(pathToFileURL(dist).href)
    const [kind, workers, n, rounds] = argv.slice(1)
    const r = await measureClean(sl, { kind, workers: Number(workers), n: Number(n), rounds: Number(rounds) })
    console.log(JSON.stringify(r))
  } else {
    const { targets } = await cleanCheck({
      n: intFlag(argv, 'items', 1_000_000),
      rounds: intFlag(argv, 'rounds', 5),
      log: console.log,
    })
    for (const t of targets) console.log(`  ${t.pass ? 'met   ' : 'MISSED'}  ${t.text}: ${t.value}`)
  }
}

/**
 * The overhead targets, each a row measured alone in a child process that loads stageline and
 * nothing else: `node benchmarks/clean.js [--items N] [--rounds N] [--row ID] [--young default|16]`
 * (after `npm run build`), or as part of `npm run bench`. `--row overhead-sync/w1` reruns one row
 * (with `--young` one setting of it); every row prints the command that reruns it.
 *
 * Why alone: in the main benchmark process the peers' libraries are loaded too, and with them
 * loaded the bare async-generator chain runs up to 1.9x slower while stageline runs about 1.1x
 * slower. The cause is the size of V8's young generation (docs/dev/engine-notes.md, "The baseline
 * moves with the young generation"): V8 grows it with the heap, to 16 MB a semi-space in a process
 * that has imported a few libraries or holds some tens of thousands of objects, and the bare chain,
 * which allocates about 15 promises an item, runs 1.6x slower with it. A child that loads only
 * stageline keeps a small heap and a small young generation. So every row runs twice, in children
 * of their own: with V8's default (the tiny heap of a benchmark process) and with the young
 * generation fixed at 16 MB (what an application's process gets).
 *
 * Each child alternates its implementations round by round (which goes first rotates), times only
 * the run (the import happens before the first round, and the `import` row measures it on its own,
 * in fresh processes), and checks count and sum after every timed run. The generator rows run a
 * third implementation beside the bare chain: the least queued design (least-queued.js), a ring
 * and a `then()` pump per step; their target is against it, their ratio to the bare chain is
 * printed beside. The `toArray()` rows time, for scale, a plain loop that builds the same array
 * (`arrayNs`): in a fresh process, collecting a million results costs more than the whole run may
 * take at 6x the bare chain.
 * @module
 */
import { execFile } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { bareChain, consume, intFlag, range, rangeSum, tallyArray } from './common.js'
import { minimalQueued } from './least-queued.js'

const WORKLOAD = { async: 'overhead-async', sync: 'overhead-sync', gen: 'generator' }

/**
 * The rows: the overhead workloads of workloads.js, each with its consumer (`for await` or
 * `toArray()`), what its target is measured against (`bare`: the bare async-generator chain;
 * `least-queued`: the least queued design), and the least ratio that meets it with V8's default
 * young generation (`min`) and with a 16 MB one (`minYoung`).
 */
export const CLEAN_CASES = [
  { kind: 'async', consumer: 'for-await', against: 'bare', min: 1, minYoung: 1 },
  { kind: 'sync', consumer: 'for-await', against: 'bare', min: 4, minYoung: 5 },
  { kind: 'sync', consumer: 'toArray', against: 'bare', min: 6, minYoung: 6 },
  { kind: 'gen', consumer: 'for-await', against: 'least-queued', min: 0.95, minYoung: 0.95 },
].flatMap((c) => [1, 4].map((workers) => ({ ...c, workers })))

/** A row's id: its workload, and `toArray` where that is its consumer. */
export function rowId(c) {
  return `${WORKLOAD[c.kind]}/w${c.workers}${c.consumer === 'toArray' ? ' toArray' : ''}`
}

/**
 * The young generation each row runs with: V8's default (`youngMB` null), and a semi-space of 16
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

const AGAINST = { bare: 'the bare chain', 'least-queued': 'the least queued design' }

const AsyncGeneratorFunction = Object.getPrototypeOf(async function* () {}).constructor
/** A generator step compiled for one use (see freshInc() in workloads.js). */
const freshInc = () => new AsyncGeneratorFunction('src', 'for await (const x of src) yield x + 1')

/** The implementations of one row, as `(n) => Promise<{ count, sum }>`: bare, stageline, and for generator rows the least queued design. */
function jobs(sl, { kind, workers, consumer }) {
  const read = consumer === 'toArray' ? async (p) => tallyArray(await p.toArray()) : (p) => consume(p)
  if (kind === 'gen') {
    const inc = freshInc()
    const st = sl.stage(freshInc(), { workers })
    const least = [freshInc(), freshInc(), freshInc()]
    return {
      bare: (n) => consume(inc(inc(inc(range(n))))),
      stageline: (n) => read(sl.pipe(range(n), st, st, st)),
      'least-queued': (n) => consume(minimalQueued(least, range(n))),
    }
  }
  const fn = kind === 'sync' ? (x) => x + 1 : async (x) => x + 1
  const ms = sl.mapStage(fn, { workers })
  const job = {
    bare: (n) => consume(bareChain(range(n), [fn, fn, fn], kind === 'sync')),
    stageline: (n) => read(sl.pipe(range(n), ms, ms, ms)),
  }
  if (consumer === 'toArray') {
    // for scale: a plain loop building the same array, what collecting 1M results costs by itself
    job.array = async (n) => {
      const ys = []
      for (const x of range(n)) ys.push(fn(fn(fn(x))))
      return tallyArray(ys)
    }
  }
  return job
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]
}

/**
 * Measures one row in this process: a warm-up of each implementation, then `rounds` rounds with
 * the order rotated each round. Resolves to the median ratio of stageline's speed to what the
 * target is against (with its range), the median ratio to the bare chain, and the median ns per
 * item of each; rejects if any gives a wrong count or sum.
 */
export async function measureClean(sl, c) {
  const { n, rounds } = c
  const against = c.against ?? 'bare'
  const job = jobs(sl, { consumer: 'for-await', ...c })
  const names = Object.keys(job)
  const check = (name, r, size) => {
    const want = rangeSum(size, 3)
    if (r.count !== size || r.sum !== want)
      throw new Error(`${name}: count ${r.count}, sum ${r.sum}, expected ${size} and ${want}`)
  }
  const warm = Math.max(1, n >> 3)
  for (const name of names) check(name, await job[name](warm), warm)
  const times = Object.fromEntries(names.map((name) => [name, []]))
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(k + r) % names.length]
      const t0 = performance.now()
      const result = await job[name](n)
      times[name].push(performance.now() - t0)
      check(name, result, n)
    }
  }
  const ratiosTo = (base) => times[base].map((t, i) => t / times.stageline[i])
  const ratios = ratiosTo(against)
  const ns = (name) => (median(times[name]) / n) * 1e6
  return {
    row: rowId({ consumer: 'for-await', ...c }),
    workload: `${WORKLOAD[c.kind]}/w${c.workers}`,
    against,
    ratio: median(ratios),
    ratioMin: Math.min(...ratios),
    ratioMax: Math.max(...ratios),
    ratioBare: median(ratiosTo('bare')),
    bareNs: ns('bare'),
    stagelineNs: ns('stageline'),
    ...(against === 'bare' ? {} : { againstNs: ns(against) }),
    ...(job.array === undefined ? {} : { arrayNs: ns('array') }),
  }
}

const CHILD = fileURLToPath(import.meta.url)

/** The command that reruns one row alone. */
export function rowCommand(c, youngMB) {
  return `node benchmarks/clean.js --row ${rowId(c).replace(' ', ':')}${youngMB === null ? ' --young default' : ` --young ${youngMB}`}`
}

/** Runs one row in a child process of its own; resolves to its result or `{ error }`, with `youngMB`. */
function runChild(c, n, rounds, youngMB) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...youngFlags(youngMB), CHILD, '--child', rowId(c).replace(' ', ':'), String(n), String(rounds)],
      { timeout: 300_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          resolve({
            row: rowId(c),
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

/** Milliseconds to import stageline in a fresh process (the `import` row), `times` processes. */
export async function measureImport(times = 5) {
  const ms = []
  for (let i = 0; i < times; i++) {
    ms.push(
      await new Promise((resolve, reject) => {
        execFile(process.execPath, [CHILD, '--import'], { timeout: 60_000 }, (err, stdout) => {
          if (err) reject(err)
          else resolve(Number(stdout.trim().split('\n').pop()))
        })
      }),
    )
  }
  return { median: median(ms), min: Math.min(...ms), max: Math.max(...ms) }
}

/** The row of `--row ID` (`overhead-sync/w1`, `overhead-sync/w1:toArray`). */
function findRow(id) {
  const c = CLEAN_CASES.find((x) => rowId(x) === id.replace(':', ' '))
  if (c === undefined) {
    console.error(
      `--row must be one of ${CLEAN_CASES.map((x) => rowId(x).replace(' ', ':')).join(', ')}, got ${id}`,
    )
    process.exit(2)
  }
  return c
}

/**
 * Every row, one child each, one after the other, first with V8's default young generation, then
 * with 16 MB (`cases` and `young` narrow that down). Resolves to the results and the targets judged
 * on them (`{ workload, text, value, pass }`, as run.js prints them).
 */
export async function cleanCheck({ n, rounds, log = () => {}, cases = CLEAN_CASES, young = YOUNG_SETTINGS }) {
  const results = []
  const targets = []
  for (const youngMB of young) {
    for (const c of cases) {
      const r = await runChild(c, n, rounds, youngMB)
      results.push(r)
      const ok = r.error === undefined
      const where = `${r.row}${youngMB === null ? '' : ` (young ${youngMB} MB)`}`
      const beside =
        ok && r.against !== 'bare'
          ? `, least queued ${r.againstNs.toFixed(0).padStart(5)} ns/item: ${r.ratio.toFixed(2)}x it [${r.ratioMin.toFixed(2)}x..${r.ratioMax.toFixed(2)}x], ${r.ratioBare.toFixed(2)}x the bare chain`
          : ok
            ? `: ${r.ratio.toFixed(2)}x [${r.ratioMin.toFixed(2)}x..${r.ratioMax.toFixed(2)}x]${r.arrayNs === undefined ? '' : `; a plain loop building the array ${r.arrayNs.toFixed(0)} ns/item`}`
            : ''
      log(
        ok
          ? `  ${where.padEnd(36)} bare ${r.bareNs.toFixed(0).padStart(5)} ns/item, stageline ${r.stagelineNs.toFixed(0).padStart(5)} ns/item${beside}   (${rowCommand(c, youngMB)})`
          : `  ${where}: FAILED ${r.error}`,
      )
      const min = youngMB === null ? c.min : c.minYoung
      targets.push({
        workload: r.workload,
        text: `${r.row}, stageline alone in its process${youngText(youngMB)}: stageline >= ${min}x ${AGAINST[c.against]}`,
        value: ok
          ? `${r.ratio.toFixed(2)}x (runs ${r.ratioMin.toFixed(2)}x..${r.ratioMax.toFixed(2)}x)${r.against === 'bare' ? '' : `; ${r.ratioBare.toFixed(2)}x the bare chain`}`
          : r.error,
        pass: ok && r.ratio >= min,
      })
    }
  }
  return { results, targets }
}

const argv = process.argv.slice(2)
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const dist = process.env.STAGELINE_DIST ?? fileURLToPath(new URL('../dist/index.js', import.meta.url))
  if (argv[0] === '--import') {
    const t = performance.now()
    await import(pathToFileURL(dist).href)
    console.log(performance.now() - t)
  } else if (argv[0] === '--child') {
    const c = findRow(argv[1])
    const sl = await import(pathToFileURL(dist).href)
    const [n, rounds] = argv.slice(2)
    console.log(JSON.stringify(await measureClean(sl, { ...c, n: Number(n), rounds: Number(rounds) })))
  } else {
    const at = argv.indexOf('--row')
    const yAt = argv.indexOf('--young')
    const cases = at < 0 ? CLEAN_CASES : [findRow(argv[at + 1])]
    const young = yAt < 0 ? YOUNG_SETTINGS : [argv[yAt + 1] === 'default' ? null : Number(argv[yAt + 1])]
    if (at < 0 && yAt < 0) {
      const imp = await measureImport()
      console.log(
        `  import                               ${imp.median.toFixed(1)} ms to import stageline in a fresh process (${imp.min.toFixed(1)}..${imp.max.toFixed(1)}, 5 processes; not in any row's time)`,
      )
    }
    const { targets } = await cleanCheck({
      n: intFlag(argv, 'items', 1_000_000),
      rounds: intFlag(argv, 'rounds', 5),
      log: console.log,
      cases,
      young,
    })
    for (const t of targets) console.log(`  ${t.pass ? 'met   ' : 'MISSED'}  ${t.text}: ${t.value}`)
  }
}

/**
 * `node benchmarks/stats-overhead.js [options]`: what the always-on stats cost.
 *
 * The counters (taken, emitted, ...) cannot be switched off; the optional part is the sampled
 * per-item timing of map stages (a lane's `call()` in lib/engine/stage-run.ts times one item in up
 * to 256, as often as its measured cost allows; see SAMPLE_MASK there). This script compiles lib/
 * twice into a temporary directory inside the project,
 * once as it is ("stats on") and once with the sampling lines taken out ("stats off"), and runs
 * 1M items through 3 synchronous and through 3 async map stages with each, alternating on and off
 * within each round (the order flips every round). It prints, per workload, the median rate of
 * each build and the median of the per-round on/off ratios, both per second of wall time and per
 * second of CPU time (the steadier figure on a loaded machine). The shared lib/ and dist/ are not
 * touched. The target: stats on within 5% of stats off.
 *
 * Options:
 *   --rounds N          rounds (default 9)
 *   --items N           items per run (default 1000000)
 *   --processes         run every measurement in a fresh child process (no JIT state shared
 *                       between the builds; slower); default: both builds in this process
 *   --sample-every N    build "on" timing at most one item in N (a power of two) instead of lib's 256
 *   --aa                A/A check of the method: "off" is built unpatched too (ratio should be ~1)
 * @module
 */
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { median } from './harness.js'

const here = fileURLToPath(import.meta.url)
const root = join(dirname(here), '..')
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    items: { type: 'string', default: '1000000' },
    processes: { type: 'boolean', default: false },
    'sample-every': { type: 'string' },
    aa: { type: 'boolean', default: false },
    // internal: the child process of --processes measuring one build
    child: { type: 'string' },
    workload: { type: 'string' },
  },
})
const rounds = Number(args.rounds)
const items = Number(args.items)

const WORKLOADS = {
  '3 sync map stages': (lib, numbers) =>
    lib.pipe(
      numbers,
      lib.mapStage((n) => n + 1),
      lib.mapStage((n) => n + 1),
      lib.mapStage((n) => n + 1),
    ),
  '3 async map stages': (lib, numbers) =>
    lib.pipe(
      numbers,
      lib.mapStage(async (n) => n + 1),
      lib.mapStage(async (n) => n + 1),
      lib.mapStage(async (n) => n + 1),
    ),
}

const numbers = Array.from({ length: items }, (_, i) => i)
const expectedSum = (items * (items - 1)) / 2 + 3 * items

/** One run: items per second of wall time and per second of this process's CPU time. */
async function once(lib, make) {
  const p = make(lib, numbers)
  let sum = 0
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  for await (const n of p) sum += n
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  if (sum !== expectedSum) throw new Error(`wrong sum: ${sum}, expected ${expectedSum}`)
  return { wall: (items * 1000) / ms, cpu: (items * 1e6) / (c.user + c.system) }
}

if (args.child !== undefined) {
  // a child: warm up once, then report the better of two timed runs
  const lib = await import(pathToFileURL(join(args.child, 'index.js')).href)
  const make = WORKLOADS[args.workload]
  await once(lib, make)
  const a = await once(lib, make)
  const b = await once(lib, make)
  process.stdout.write(JSON.stringify({ wall: Math.max(a.wall, b.wall), cpu: Math.max(a.cpu, b.cpu) }))
  process.exit(0)
}

/** Takes the sampled timing out of stage-run.ts; fails loudly if the code no longer looks as expected. */
function withoutSampling(source) {
  const sampled =
    /\(s\.taken & s\.sampleMask\) !== 0 \? fn\(x, this\.ctx\) : s\.callTimed\(fn, x, this\.ctx\)/g
  const found = source.match(sampled)?.length ?? 0
  if (found !== 1) throw new Error(`stage-run.ts changed: expected 1 sampled call, found ${found}`)
  return source.replace(sampled, 'fn(x, this.ctx)')
}

/** Sets SAMPLE_MASK in stage-run.ts so that one item in `every` is timed. */
function sampleEvery(source, every) {
  if (!Number.isInteger(every) || every < 1 || (every & (every - 1)) !== 0) {
    throw new RangeError(`--sample-every: expected a power of two, got ${every}`)
  }
  const mask = /export const SAMPLE_MASK = \d+/
  if (!mask.test(source)) throw new Error('stage-run.ts changed: no `export const SAMPLE_MASK = <n>`')
  return source.replace(mask, `export const SAMPLE_MASK = ${every - 1}`)
}

/** Compiles a copy of lib/ into `dir`/dist, optionally patched; returns the dist directory. */
function build(dir, { unsampled, every }) {
  cpSync(join(root, 'lib'), join(dir, 'lib'), { recursive: true })
  const file = join(dir, 'lib', 'engine', 'stage-run.ts')
  if (every !== undefined) writeFileSync(file, sampleEvery(readFileSync(file, 'utf8'), every))
  if (unsampled) writeFileSync(file, withoutSampling(readFileSync(file, 'utf8')))
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      extends: join(root, 'tsconfig.json'),
      compilerOptions: {
        noEmit: false,
        rootDir: 'lib',
        outDir: 'dist',
        sourceMap: false,
        declaration: false,
      },
      include: ['lib'],
      exclude: ['lib/redis'],
    }),
  )
  try {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', dir], {
      stdio: 'pipe',
    })
  } catch (err) {
    // type errors elsewhere in lib/ do not stop the emit; a missing output does
    if (!existsSync(join(dir, 'dist', 'index.js'))) throw err
  }
  return join(dir, 'dist')
}

const tmp = mkdtempSync(join(root, '.stats-overhead-'))
try {
  const every = args['sample-every'] === undefined ? undefined : Number(args['sample-every'])
  const dists = {
    on: build(join(tmp, 'on'), { unsampled: false, every }),
    off: build(join(tmp, 'off'), { unsampled: !args.aa }),
  }
  const libs = args.processes
    ? undefined
    : {
        on: await import(pathToFileURL(join(dists.on, 'index.js')).href),
        off: await import(pathToFileURL(join(dists.off, 'index.js')).href),
      }
  const measure = async (variant, name) => {
    if (libs !== undefined) return once(libs[variant], WORKLOADS[name])
    const out = execFileSync(process.execPath, [
      here,
      '--child',
      dists[variant],
      '--workload',
      name,
      '--items',
      String(items),
    ])
    return JSON.parse(String(out))
  }

  const notes = [
    args.aa ? 'A/A check: both builds unpatched' : '',
    every === undefined ? '' : `"on" times 1 item in ${every}`,
    args.processes ? 'a child process per measurement' : 'both builds in one process',
  ].filter(Boolean)
  console.log(
    `stats overhead (${notes.join('; ')}): ${items.toLocaleString('en-US')} items, ${rounds} rounds, load ${loadavg()[0].toFixed(1)}`,
  )
  for (const name of Object.keys(WORKLOADS)) {
    if (libs !== undefined) {
      await measure('on', name)
      await measure('off', name)
    }
    const rates = { on: [], off: [] }
    const ratios = { wall: [], cpu: [] }
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? ['on', 'off'] : ['off', 'on']
      const round = {}
      for (const v of order) round[v] = await measure(v, name)
      rates.on.push(round.on)
      rates.off.push(round.off)
      ratios.wall.push(round.on.wall / round.off.wall)
      ratios.cpu.push(round.on.cpu / round.off.cpu)
    }
    const rate = (v, k) => `${(median(rates[v].map((x) => x[k])) / 1e6).toFixed(2)}M`
    console.log(
      `${name}: items/s of wall time: on ${rate('on', 'wall')}, off ${rate('off', 'wall')}, ` +
        `median on/off ratio ${median(ratios.wall).toFixed(3)}; ` +
        `items/s of CPU time: on ${rate('on', 'cpu')}, off ${rate('off', 'cpu')}, ` +
        `median on/off ratio ${median(ratios.cpu).toFixed(3)}`,
    )
  }
} finally {
  rmSync(tmp, { recursive: true, force: true })
}

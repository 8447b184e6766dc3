/**
 * `node benchmarks/young.js [--items N] [--rounds N]` (after `npm run build`): the bare
 * async-generator chain and stageline, 3 sync steps each, in fresh child processes that differ
 * only in the state of V8's heap: as they start; holding 20,000 or 60,000 small objects (a heap of
 * about 16 or 18 MB); with the peers' libraries imported; and with the young generation's
 * semi-space fixed at 1 or 16 MB by flag. Each row prints ns per item (median of the rounds), the
 * new space's size after the runs and the heap in use.
 *
 * What it shows (docs/dev/engine-notes.md, "The baseline moves with the young generation"): the bare
 * chain's speed follows the size V8 gives the young generation, which V8 grows with the heap: 8 MB
 * a semi-space (16 MB of new space) in a fresh process or one holding 20,000 objects, 16 MB (32 MB)
 * in one holding 60,000 or with the peers' libraries imported. stageline's speed barely moves.
 * @module
 */
import { execFile } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { getHeapSpaceStatistics } from 'node:v8'
import { bareChain, consume, intFlag, median, range } from './common.js'

const SELF = fileURLToPath(import.meta.url)

/** The settings: a label, node flags, and what the child does before it measures. */
export const YOUNG_CASES = [
  { label: 'as started', flags: [], setup: 'none' },
  { label: 'holding 20,000 objects', flags: [], setup: 'hold:20000' },
  { label: 'holding 60,000 objects', flags: [], setup: 'hold:60000' },
  { label: "the peers' libraries imported", flags: [], setup: 'peers' },
  { label: 'semi-space fixed at 1 MB, peers imported', flags: ['--max-semi-space-size=1'], setup: 'peers' },
  {
    label: 'semi-space fixed at 16 MB',
    flags: ['--min-semi-space-size=16', '--max-semi-space-size=16'],
    setup: 'none',
  },
]

/** In the child: sets the heap up, measures, returns `{ bareNs, stagelineNs, newSpaceMB, heapMB }`. */
async function measure(setup, n, rounds) {
  const held = []
  if (setup.startsWith('hold:')) {
    const k = Number(setup.slice(5))
    for (let i = 0; i < k; i++) held.push({ a: i, b: [i], c: `x${i}` })
  } else if (setup === 'peers') {
    for (const m of ['effect', 'rxjs', 'p-map', 'it-parallel', 'it-pipe', 'node:stream']) await import(m)
  }
  const dist = process.env.STAGELINE_DIST ?? fileURLToPath(new URL('../dist/index.js', import.meta.url))
  const sl = await import(pathToFileURL(dist).href)
  const inc = (x) => x + 1
  const ms = sl.mapStage(inc)
  const jobs = {
    bare: () => consume(bareChain(range(n), [inc, inc, inc], true)),
    stageline: () => consume(sl.pipe(range(n), ms, ms, ms)),
  }
  const times = { bare: [], stageline: [] }
  for (let r = 0; r < rounds; r++) {
    for (const name of r % 2 === 0 ? ['bare', 'stageline'] : ['stageline', 'bare']) {
      const t0 = performance.now()
      const res = await jobs[name]()
      times[name].push(performance.now() - t0)
      if (res.count !== n) throw new Error(`${name}: ${res.count} items, expected ${n}`)
    }
  }
  const newSpace = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')
  return {
    bareNs: (median(times.bare) / n) * 1e6,
    stagelineNs: (median(times.stageline) / n) * 1e6,
    newSpaceMB: newSpace.space_size / 2 ** 20,
    heapMB: process.memoryUsage().heapUsed / 2 ** 20,
    held: held.length,
  }
}

/** Runs one case in a fresh child; resolves to its result (with `label`) or `{ label, error }`. */
export function runYoungCase(c, n, rounds) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...c.flags, SELF, '--child', c.setup, String(n), String(rounds)],
      { timeout: 300_000 },
      (err, stdout, stderr) => {
        if (err) resolve({ label: c.label, error: stderr.trim().split('\n').pop() ?? err.message })
        else resolve({ label: c.label, ...JSON.parse(stdout.trim().split('\n').pop()) })
      },
    )
  })
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2)
  if (args[0] === '--child') {
    const [setup, n, rounds] = args.slice(1)
    console.log(JSON.stringify(await measure(setup, Number(n), Number(rounds))))
  } else {
    const n = intFlag(args, 'items', 1_000_000)
    const rounds = intFlag(args, 'rounds', 5)
    console.log(
      `3 sync steps, ${n.toLocaleString('en-US')} items, median of ${rounds} rounds, a fresh process each`,
    )
    console.log('  bare ns  stageline ns  ratio  new space MB  heap MB  process')
    for (const c of YOUNG_CASES) {
      const r = await runYoungCase(c, n, rounds)
      if (r.error !== undefined) {
        console.log(`  FAILED ${r.error}  ${r.label}`)
        continue
      }
      console.log(
        `  ${r.bareNs.toFixed(0).padStart(7)}  ${r.stagelineNs.toFixed(0).padStart(12)}  ${(r.bareNs / r.stagelineNs).toFixed(2).padStart(4)}x  ${r.newSpaceMB.toFixed(1).padStart(12)}  ${r.heapMB.toFixed(0).padStart(7)}  ${r.label}`,
      )
    }
  }
}

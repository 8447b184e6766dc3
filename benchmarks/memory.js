/**
 * The memory workload: `n` items of 1 KB (a fresh string each) through 2 async map steps, read by a
 * consumer that yields to the event loop every 100 items, so anything unbounded upstream runs
 * ahead of it and piles up. Each (implementation, n) runs in its own child process
 * (memory-child.js) that loads only the library it measures and reports its peak RSS
 * (`process.resourceUsage().maxRSS`); the difference between the peaks at two sizes is the memory
 * that grows with the input.
 *
 * The implementations import their library when they run, so a child's RSS holds that library
 * only. RxJS is left out: `from(iterable)` pushes the whole source synchronously into mergeMap's
 * buffer, so it holds every item by design (10 GB at 10M items of 1 KB).
 * @module
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { bareChain, consumeSlowly, median, rangeSum } from './common.js'

export const ITEM_BYTES = 1024
/** The consumer yields to the event loop after every this many items. */
export const YIELD_EVERY = 100
/** Workers per step, for every implementation with a concurrency knob. */
export const MEMORY_WORKERS = 2

/**
 * The items: a fresh 1 KB string each (a line of a log file, say), with its index. Strings rather
 * than Buffers: a Buffer.alloc per item costs 2 us, which would make the 10M runs take minutes
 * per implementation and measure the allocator more than the pipeline.
 */
export function* kilobytes(n) {
  for (let i = 0; i < n; i++) yield { id: i, mark: 0, line: String(i).padEnd(ITEM_BYTES, '.') }
}

/** Step 1 marks the item, step 2 passes it on; the consumer adds index + mark. */
const mark = async (x) => {
  x.mark = 1
  return x
}
const pass = async (x) => x
const value = (x) => x.id + x.mark + (x.line.length === ITEM_BYTES ? 0 : Number.NaN)

export function memoryExpect(n) {
  return { count: n, sum: rangeSum(n, 1) }
}

const steps = [
  { fn: mark, workers: MEMORY_WORKERS },
  { fn: pass, workers: MEMORY_WORKERS },
]

/**
 * The implementations: `run(n, sl)` does the job and resolves to `{ count, sum }`; `sl` is the
 * stageline module under test. `required` ones run at every size whatever their speed (the targets
 * need them). `role: 'control'` marks the deliberately unbounded one, whose
 * growth shows that the measurement sees growth; it runs on `controlScale` of the sizes.
 */
export const MEMORY_IMPLS = [
  {
    name: 'stageline',
    label: `stageline mapStage() x2, workers ${MEMORY_WORKERS}`,
    role: 'stageline',
    required: true,
    run: (n, sl) =>
      consumeSlowly(
        sl.pipe(
          kilobytes(n),
          sl.mapStage(mark, { workers: MEMORY_WORKERS }),
          sl.mapStage(pass, { workers: MEMORY_WORKERS }),
        ),
        YIELD_EVERY,
        value,
      ),
  },
  {
    name: 'bare',
    label: 'bare async-generator chain',
    role: 'baseline',
    run: (n) => consumeSlowly(bareChain(kilobytes(n), [mark, pass], false), YIELD_EVERY, value),
  },
  {
    name: 'p-map',
    label: 'p-map pMapIterable',
    role: 'peer',
    required: true, // stageline's memory target is measured against it
    run: async (n) => {
      const { pMapIterable } = await import('p-map')
      let it = kilobytes(n)
      for (const { fn, workers } of steps) {
        it = pMapIterable(it, fn, { concurrency: workers, backpressure: workers, preserveOrder: false })
      }
      return consumeSlowly(it, YIELD_EVERY, value)
    },
  },
  {
    name: 'node',
    label: 'node Readable.from().map()',
    role: 'peer',
    run: async (n) => {
      const { Readable } = await import('node:stream')
      let r = Readable.from(kilobytes(n))
      for (const { fn, workers } of steps) r = r.map(fn, { concurrency: workers })
      return consumeSlowly(r, YIELD_EVERY, value)
    },
  },
  {
    name: 'it-parallel',
    label: 'it-pipe + it-parallel',
    role: 'peer',
    run: async (n) => {
      const [{ pipe }, { default: parallel }] = await Promise.all([import('it-pipe'), import('it-parallel')])
      const step =
        ({ fn, workers }) =>
        (source) =>
          parallel(
            (async function* tasks() {
              for await (const x of source) yield () => fn(x)
            })(),
            { concurrency: workers },
          )
      return pipe(kilobytes(n), step(steps[0]), step(steps[1]), (src) =>
        consumeSlowly(src, YIELD_EVERY, value),
      )
    },
  },
  {
    name: 'effect',
    label: 'Effect Stream.mapEffect',
    role: 'peer',
    run: async (n) => {
      const { Effect, Stream } = await import('effect')
      const { setImmediate: nextTurn } = await import('node:timers/promises')
      let s = Stream.fromIterable(kilobytes(n))
      for (const { fn, workers } of steps) {
        s = Stream.mapEffect(s, (x) => Effect.promise(() => fn(x)), { concurrency: workers, unordered: true })
      }
      const tally = { count: 0, sum: 0, inversions: 0 }
      const turn = Effect.promise(() => nextTurn())
      await Effect.runPromise(
        Stream.runForEach(s, (b) => {
          tally.count++
          tally.sum += value(b)
          return tally.count % YIELD_EVERY === 0 ? turn : Effect.void
        }),
      )
      return tally
    },
  },
  {
    name: 'it-pushable',
    label: 'hand-rolled stages on it-pushable (unbounded control)',
    role: 'control',
    run: async (n) => {
      const { pushable } = await import('it-pushable')
      // each step: one loop reads its input and pushes every result at once (push never waits)
      const step = (fn, input) => {
        const out = pushable({ objectMode: true })
        void (async () => {
          try {
            for await (const x of input) out.push(await fn(x))
            out.end()
          } catch (err) {
            out.end(err)
          }
        })()
        return out
      }
      return consumeSlowly(step(pass, step(mark, kilobytes(n))), YIELD_EVERY, value)
    },
  },
]

/** The control's sizes are the workload's divided by this (it holds every item: 10M would be 11 GB). */
export const CONTROL_SCALE = 10

const CHILD = fileURLToPath(new URL('./memory-child.js', import.meta.url))

/** Runs one implementation on `n` items in a child process: `{ count, sum, maxRssMB, ms }` or `{ error }`. */
export function runChild(name, n, timeoutMs = 600_000) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CHILD, name, String(n)],
      { timeout: timeoutMs, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed
            ? `killed after ${timeoutMs} ms`
            : (stderr.trim().split('\n').pop() ?? err.message)
          resolve({ error: `child failed: ${why}` })
          return
        }
        try {
          resolve(JSON.parse(stdout.trim().split('\n').pop()))
        } catch {
          resolve({ error: `child printed no result: ${stdout.slice(-200)}` })
        }
      },
    )
  })
}

/**
 * Runs every implementation at every size, `parallel` children at a time (RSS is per process, so
 * children running side by side do not disturb each other's peak; they only share the CPUs). The
 * largest size runs last, and an implementation whose run at the size before projects to more
 * than `maxSeconds` there is skipped at it, with the reason in its row (unless it is `required`).
 * Resolves to one row per implementation with its peak RSS at each size and the growth between
 * the smallest and largest.
 *
 * The `required` implementations (those the targets compare) run `repeats` times at each size, in
 * children of their own, and their peak is the median: one child's peak RSS moves by 1-3 MB from
 * run to run, as much as the margin the target "no more than p-map's" is decided by. A point then
 * carries every run's peak in `rssRuns`. A run that fails fails the point: none is left out.
 * `run` starts one child (`runChild` unless a test gives its own).
 */
export async function measureMemory({
  sizes,
  parallel = 1,
  log = () => {},
  only = () => true,
  maxSeconds = Number.POSITIVE_INFINITY,
  repeats = 1,
  run = runChild,
}) {
  if (!Number.isInteger(repeats) || repeats < 1) {
    throw new RangeError(`measureMemory: repeats must be a positive integer, got ${repeats}`)
  }
  const jobs = []
  // repeats after the first come after every first run, so a burst of load lands on several
  for (let rep = 0; rep < repeats; rep++) {
    for (const impl of MEMORY_IMPLS) {
      if (!only(impl.name) || (rep > 0 && !impl.required)) continue
      sizes.forEach((size, i) => {
        const n = impl.role === 'control' ? Math.max(1, Math.round(size / CONTROL_SCALE)) : size
        jobs.push({ impl, n, last: i === sizes.length - 1 && i > 0 })
      })
    }
  }
  const done = new Map()
  const runPhase = async (phase) => {
    let next = 0
    const worker = async () => {
      while (next < phase.length) {
        const job = phase[next++]
        const before = jobs.filter((j) => j.impl === job.impl && j !== job && !j.last).pop()
        const prev = before === undefined ? undefined : done.get(before)
        if (job.last && !job.impl.required && prev !== undefined && prev.error === undefined) {
          const projected = (prev.ms / 1000) * (job.n / before.n)
          if (projected > maxSeconds) {
            const r = {
              skipped: `skipped at ${job.n} items: projected ${projected.toFixed(0)} s > ${maxSeconds} s`,
            }
            done.set(job, r)
            log(`  ${job.impl.name} ${job.n}: ${r.skipped}`)
            continue
          }
        }
        const r = await run(job.impl.name, job.n)
        const want = memoryExpect(job.n)
        if (r.error === undefined && (r.count !== want.count || r.sum !== want.sum)) {
          r.error = `count ${r.count} sum ${r.sum}, expected count ${want.count} sum ${want.sum}`
        }
        done.set(job, r)
        log(
          `  ${job.impl.name} ${job.n}: ${r.error ?? `peak RSS ${r.maxRssMB.toFixed(1)} MB in ${(r.ms / 1000).toFixed(1)} s`}`,
        )
      }
    }
    await Promise.all(Array.from({ length: parallel }, worker))
  }
  await runPhase(jobs.filter((j) => !j.last))
  // the largest size, slowest implementations first so the two lanes end together
  const largest = jobs.filter((j) => j.last)
  const cost = (j) => {
    const prev = jobs.filter((k) => k.impl === j.impl && !k.last).pop()
    return prev === undefined ? 0 : (done.get(prev).ms ?? 0)
  }
  await runPhase(largest.sort((a, b) => cost(b) - cost(a)))
  const rows = []
  for (const impl of MEMORY_IMPLS) {
    const mine = jobs.filter((j) => j.impl === impl)
    if (mine.length === 0) continue
    const points = [...new Set(mine.map((j) => j.n))].map((n) => {
      const runs = mine.filter((j) => j.n === n).map((j) => done.get(j))
      const ok = runs.every((r) => r.error === undefined && r.skipped === undefined)
      const point = {
        n,
        maxRssMB: ok ? median(runs.map((r) => r.maxRssMB)) : null,
        itemsPerSec: ok ? n / (median(runs.map((r) => r.ms)) / 1000) : null,
      }
      if (ok && runs.length > 1) point.rssRuns = runs.map((r) => r.maxRssMB)
      return point
    })
    const errors = mine.map((j) => done.get(j).error).filter((e) => e !== undefined)
    const skipped = mine.map((j) => done.get(j).skipped).filter((e) => e !== undefined)
    const first = points[0].maxRssMB
    const last = points.length > 1 ? points[points.length - 1].maxRssMB : null
    rows.push({
      workload: 'memory',
      impl: impl.name,
      label: impl.label,
      role: impl.role,
      points,
      growthMB: first === null || last === null ? null : last - first,
      error: errors.length > 0 ? errors.join('; ') : null,
      skipped: skipped.length > 0 ? skipped.join('; ') : null,
    })
  }
  return rows
}

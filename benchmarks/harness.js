/**
 * Timing a workload: warm-up, rounds of alternating runs, the result checked after every run,
 * medians and ratios against the workload's baseline measured in the same rounds.
 *
 * - Only the job is timed (`impl.run(n)`: building the pipeline, pulling the source, consuming),
 *   between `performance.now()` calls; the result is checked after the clock stops, and a run
 *   whose count or sum is wrong posts no number at all (the cell reports the error).
 * - Rounds alternate: each round runs every implementation once, in an order rotated per round,
 *   so a burst of load from the rest of the machine spreads over all of them.
 * - Ratios are paired: in each round, an implementation's rate over the baseline's rate at the
 *   same `n` in that round; the cell reports the median of those ratios (drift between rounds
 *   cancels out, which medians of rates taken separately would not do).
 * - Peers far slower than the baseline (below `reduceBelow` of it in the warm-up) run on the
 *   workload's `reducedN` items, and the baseline is then also run at that size in every round,
 *   so their ratio compares like with like.
 * @module
 */
import { median } from './common.js'
import { checkResult } from './workloads.js'

export { median }

/** A run that has not settled after this long counts as failed (a hung pipeline must not hang the suite). */
export const RUN_TIMEOUT_MS = 180_000

/** Runs `impl` once on `n` items: `{ ms, result, error }`, the clock around the job only. */
export async function timeOnce(workload, impl, n, timeoutMs = RUN_TIMEOUT_MS) {
  globalThis.gc?.()
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result after ${timeoutMs} ms`)), timeoutMs)
  })
  const t0 = performance.now()
  let result
  try {
    result = await Promise.race([impl.run(n), timeout])
  } catch (err) {
    return { ms: performance.now() - t0, result: undefined, error: `threw ${describe(err)}` }
  } finally {
    clearTimeout(timer)
  }
  const ms = performance.now() - t0
  return { ms, result, error: checkResult(workload, impl, n, result) }
}

function describe(err) {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}

/**
 * Measures every implementation of `workload`. Options: `rounds` (runs per implementation),
 * `warmupN` (items of the warm-up run), `reduceBelow` (the warm-up ratio under which a peer runs
 * on `reducedN` items), `log` (progress lines). Resolves to one cell per implementation.
 */
export async function measureWorkload(workload, options = {}) {
  const {
    rounds = 5,
    warmupN = 20_000,
    reduceBelow = 0.1,
    log = () => {},
    timeoutMs = RUN_TIMEOUT_MS,
  } = options
  const impls = workload.impls
  const base = impls.find((i) => i.name === workload.baseline)
  if (base === undefined) throw new Error(`${workload.id}: no implementation named ${workload.baseline}`)
  const cells = new Map(
    impls.map((impl) => [
      impl,
      { n: workload.n, rates: [], ratios: [], peakAhead: [], error: undefined, reduced: false },
    ]),
  )

  // warm-up: compiles the hot paths, checks every implementation once, and finds the slow peers
  const warmN = Math.min(workload.n, warmupN)
  const warmRate = new Map()
  for (const impl of impls) {
    const r = await timeOnce(workload, impl, warmN, timeoutMs)
    const cell = cells.get(impl)
    if (r.error !== undefined) {
      cell.error = `warm-up on ${warmN} items: ${r.error}`
      log(`  ${impl.name}: FAILED ${cell.error}`)
    } else warmRate.set(impl, (warmN * 1000) / r.ms)
  }
  if (!warmRate.has(base)) {
    for (const cell of cells.values()) cell.error ??= `the baseline ${base.name} failed`
    return collect(workload, cells, base)
  }
  const baseWarm = warmRate.get(base)
  if (workload.reducedN !== undefined && workload.reducedN < workload.n) {
    for (const impl of impls) {
      if (impl.role !== 'peer' || !warmRate.has(impl)) continue
      if (impl.reduced === true || warmRate.get(impl) / baseWarm < reduceBelow) {
        const cell = cells.get(impl)
        cell.n = workload.reducedN
        cell.reduced = true
      }
    }
  }
  const sizes = new Set([...cells.values()].filter((c) => c.error === undefined).map((c) => c.n))

  for (let round = 0; round < rounds; round++) {
    // the baseline once per size in use, then the others; the order rotates from round to round
    const baseRate = new Map()
    const runs = [...sizes].map((n) => [base, n])
    for (const impl of impls) {
      if (impl !== base && cells.get(impl).error === undefined) runs.push([impl, cells.get(impl).n])
    }
    const rotated = rotate(runs, round)
    const rates = []
    const times = []
    for (const [impl, n] of rotated) {
      const r = await timeOnce(workload, impl, n, timeoutMs)
      times.push(`${impl.name}${n === workload.n ? '' : `@${n}`} ${(r.ms / 1000).toFixed(2)}s`)
      if (r.error !== undefined) {
        const cell = cells.get(impl)
        cell.error = `round ${round + 1}, ${n} items: ${r.error}`
        log(`  ${impl.name}: FAILED ${cell.error}`)
        continue
      }
      const rate = (n * 1000) / r.ms
      if (impl === base) baseRate.set(n, rate)
      rates.push([impl, n, rate, r.result])
    }
    for (const [impl, n, rate, result] of rates) {
      const cell = cells.get(impl)
      if (impl === base && n !== cell.n) continue // the baseline's extra run at a reduced size
      if (cell.error !== undefined) continue
      cell.rates.push(rate)
      const b = baseRate.get(n)
      if (b !== undefined) cell.ratios.push(rate / b)
      if (typeof result.peakAhead === 'number') cell.peakAhead.push(result.peakAhead)
    }
    log(`  round ${round + 1}/${rounds}: ${times.join(', ')}`)
  }
  const baseError = cells.get(base).error
  if (baseError !== undefined) {
    for (const cell of cells.values()) cell.error ??= `the baseline ${base.name} failed: ${baseError}`
  }
  return collect(workload, cells, base)
}

function rotate(xs, k) {
  if (xs.length === 0) return xs
  const s = k % xs.length
  return [...xs.slice(s), ...xs.slice(0, s)]
}

function collect(workload, cells, base) {
  const out = []
  for (const [impl, c] of cells) {
    const ok = c.error === undefined && c.rates.length > 0
    out.push({
      workload: workload.id,
      group: workload.group,
      title: workload.title,
      impl: impl.name,
      label: impl.label,
      role: impl.role,
      ordered: impl.ordered,
      baseline: base.name,
      n: c.n,
      reduced: c.reduced,
      runs: c.rates.length,
      itemsPerSec: ok ? median(c.rates) : null,
      ratio: ok ? median(c.ratios) : null,
      ratioMin: ok ? Math.min(...c.ratios) : null,
      ratioMax: ok ? Math.max(...c.ratios) : null,
      target: workload.target,
      peakReorder: ok && impl.ordered === true && c.peakAhead.length > 0 ? Math.max(...c.peakAhead) : null,
      error: c.error ?? null,
    })
  }
  return out
}

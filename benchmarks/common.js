/**
 * What every benchmark shares and that loads no peer library (the memory children import only
 * this and the one library they measure, so their RSS is theirs): the source, the consumers that
 * count and sum what comes out, the bare async-generator chain, a sleep.
 * @module
 */
import { setImmediate as nextTurn } from 'node:timers/promises'

/** The integers 0 .. n-1, produced lazily (a source that is read, not an array that is indexed). */
export function* range(n) {
  for (let i = 0; i < n; i++) yield i
}

/** Sum of 0 .. n-1 plus `k` per item: what `n` integers come to after `k` increments each. */
export function rangeSum(n, k) {
  return (n * (n - 1)) / 2 + k * n
}

/**
 * Counts and sums an async iterable, and counts inversions (an item smaller than the one before
 * it), which must be 0 wherever the output is supposed to keep input order.
 */
export async function consume(iterable) {
  let count = 0
  let sum = 0
  let inversions = 0
  let prev = Number.NEGATIVE_INFINITY
  for await (const y of iterable) {
    count++
    sum += y
    if (y < prev) inversions++
    prev = y
  }
  return { count, sum, inversions }
}

/** Counts and sums an array (for consumers that collect first: `toArray()`). */
export function tallyArray(ys) {
  let sum = 0
  let inversions = 0
  let prev = Number.NEGATIVE_INFINITY
  for (const y of ys) {
    sum += y
    if (y < prev) inversions++
    prev = y
  }
  return { count: ys.length, sum, inversions }
}

/**
 * An async iterator with nothing behind it: `next()` returns an already resolved promise of the
 * next of n precomputed values. Read with `for await`, it is the floor of the protocol itself:
 * no library handing its results to a `for await` loop can beat it.
 */
export class ResolvedIterator {
  constructor(n, k) {
    this.i = 0
    this.n = n
    this.k = k
  }

  [Symbol.asyncIterator]() {
    return this
  }

  next() {
    if (this.i === this.n) return Promise.resolve({ value: undefined, done: true })
    return Promise.resolve({ value: this.k + this.i++, done: false })
  }
}

/** The same as {@link consume}, yielding to the event loop every `every` items. */
export async function consumeSlowly(iterable, every, value = (y) => y) {
  let count = 0
  let sum = 0
  for await (const y of iterable) {
    count++
    sum += value(y)
    if (count % every === 0) await nextTurn()
  }
  return { count, sum, inversions: 0 }
}

/** The bare async-generator step: `for await (const x of src) yield await fn(x)`. */
export function bareStep(fn, sync) {
  return sync
    ? async function* bareSync(src) {
        for await (const x of src) yield fn(x)
      }
    : async function* bareAsync(src) {
        for await (const x of src) yield await fn(x)
      }
}

/** An async iterable through `fns`, chained as bare async generators. */
export function bareChain(src, fns, sync) {
  let it = src
  for (const fn of fns) it = bareStep(fn, sync)(it)
  return it
}

/** Resolves after `ms` milliseconds: the "I/O" of the io and ordered workloads. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * The value of `--name N` in a script's arguments, a positive integer, or `fallback` when absent;
 * exits with code 2 and a message naming the flag when it is not a positive integer.
 */
export function intFlag(args, name, fallback) {
  const i = args.indexOf(`--${name}`)
  const v = i < 0 ? fallback : Number(args[i + 1])
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${name} must be a positive integer, got ${args[i + 1]}`)
    process.exit(2)
  }
  return v
}

/** The value after `--name` in `args`, or `fallback` when the flag is not given. */
export function stringFlag(args, name, fallback) {
  const i = args.indexOf(`--${name}`)
  if (i < 0) return fallback
  const v = args[i + 1]
  if (v === undefined || v.startsWith('--')) {
    console.error(`--${name} needs a value`)
    process.exit(2)
  }
  return v
}

/** The median of a list of numbers (the mean of the middle two for an even length; NaN for none). */
export function median(xs) {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/**
 * The hand-written optimal scheduler of the io and ordered workloads: per step, `workers` plain
 * async loops; the first step reads the source iterator, later ones a plain array (the previous
 * step's output) with a list of parked loops, no bound anywhere. Nothing a library adds
 * (backpressure, fail-fast, cancellation) is here, so its time is the floor for the job.
 */
export async function optimalRun(src, steps) {
  const it = src[Symbol.iterator]()
  const tally = { count: 0, sum: 0, inversions: 0 }
  const queues = steps.map(() => ({ items: [], head: 0, closed: false, parked: [] }))
  const take = async (q) => {
    for (;;) {
      if (q.head < q.items.length) {
        const x = q.items[q.head]
        q.items[q.head++] = undefined
        return { x }
      }
      if (q.closed) return undefined
      await new Promise((resolve) => q.parked.push(resolve))
    }
  }
  const give = (q, y) => {
    q.items.push(y)
    if (q.parked.length > 0) q.parked.shift()()
  }
  const groups = steps.map(async ({ fn, workers }, k) => {
    const out = queues[k + 1]
    const loops = []
    for (let w = 0; w < workers; w++) {
      loops.push(
        (async () => {
          for (;;) {
            let x
            if (k === 0) {
              const r = it.next()
              if (r.done) return
              x = r.value
            } else {
              const got = await take(queues[k])
              if (got === undefined) return
              x = got.x
            }
            const y = await fn(x)
            if (out === undefined) {
              tally.count++
              tally.sum += y
            } else give(out, y)
          }
        })(),
      )
    }
    await Promise.all(loops)
    if (out !== undefined) {
      out.closed = true
      for (const wake of out.parked.splice(0)) wake()
    }
  })
  await Promise.all(groups)
  return tally
}

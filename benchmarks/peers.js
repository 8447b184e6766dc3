/**
 * One adapter per peer library, turning "map this function over that iterable with N concurrent
 * calls" into that library's idiom, plus the hand-written optimal scheduler.
 *
 * Every adapter gives its library its best configuration for the job: unordered where the library
 * has the choice (stageline's default), its own sink where it is push-based (RxJS subscribe,
 * Effect runFold), and the sync-map operator where it has one for synchronous functions.
 * @module
 */
import { Readable } from 'node:stream'
import { Effect, Stream } from 'effect'
import parallel from 'it-parallel'
import { pipe as itPipe } from 'it-pipe'
import { pMapIterable } from 'p-map'
import { from, lastValueFrom, mergeMap, map as rxMap, reduce as rxReduce } from 'rxjs'

// ---------------------------------------------------------------------------------------------
// One map step per library. `fn` may be sync or async; `sync` says which, for the libraries that
// have a separate operator for synchronous functions.

/** it-pipe + it-parallel: each step turns items into tasks and runs `workers` of them at a time. */
export function itParallelChain(src, steps, consumer) {
  const transforms = steps.map(
    ({ fn, workers, ordered }) =>
      (source) =>
        parallel(
          (async function* tasks() {
            for await (const x of source) yield async () => fn(x)
          })(),
          { concurrency: workers, ordered: ordered ?? false },
        ),
  )
  return itPipe(src, ...transforms, consumer)
}

/** p-map's pMapIterable, backpressure at its tightest (= concurrency), unordered unless asked. */
export function pMapChain(src, steps) {
  let it = src
  for (const { fn, workers, ordered } of steps) {
    it = pMapIterable(it, fn, {
      concurrency: workers,
      backpressure: workers,
      preserveOrder: ordered ?? false,
    })
  }
  return it
}

/** Node's `Readable.from(src).map(fn, { concurrency })` (always in input order). */
export function nodeChain(src, steps) {
  let r = Readable.from(src)
  for (const { fn, workers } of steps) r = r.map(fn, { concurrency: workers })
  return r
}

/** RxJS `mergeMap(fn, workers)` per step (`map` for a sync function), summed by `reduce`. */
export async function rxjsRun(src, steps, sync) {
  const ops = steps.map(({ fn, workers }) => (sync ? rxMap(fn) : mergeMap(fn, workers)))
  return lastValueFrom(
    from(src).pipe(
      ...ops,
      rxReduce((acc, y) => {
        acc.count++
        acc.sum += y
        return acc
      }, newTally()),
    ),
  )
}

/** Effect `Stream.mapEffect(fn, { concurrency, unordered })` per step (`Stream.map` when sync). */
export async function effectRun(src, steps, sync, { ordered = false } = {}) {
  let s = Stream.fromIterable(src)
  for (const { fn, workers } of steps) {
    s = sync
      ? Stream.map(s, fn)
      : Stream.mapEffect(s, (x) => Effect.promise(() => fn(x)), {
          concurrency: workers,
          unordered: !ordered,
        })
  }
  return Effect.runPromise(
    Stream.runFold(s, newTally, (acc, y) => {
      acc.count++
      acc.sum += y
      if (y < acc.prev) acc.inversions++
      acc.prev = y
      return acc
    }),
  )
}

function newTally() {
  return { count: 0, sum: 0, inversions: 0, prev: Number.NEGATIVE_INFINITY }
}

// the hand-written optimal scheduler lives in common.js, which loads no peer library (http.js's
// children import it alone)
export { optimalRun } from './common.js'

/**
 * `flatMap()`: a kind of stage that maps each item to any number of outputs. Written against the
 * kind contract alone (lib/kinds/kind.ts).
 * @module
 */
import {
  closeQuietly,
  isAsyncIterable,
  isIterable,
  isThenable,
  iteratorResult,
  openIterator,
} from '../_utils.js'
import { checkFunction, got, validateOptions } from '../options/check.js'
import { DEFAULT_QSIZE } from '../options/limits.js'
import {
  applyWorkers,
  type ResolvedStageOptions,
  STAGE_SCHEMA,
  type StageOptions,
  type WorkersOption,
  workersOrTuning,
} from '../options/stage.js'
import { Stage } from '../stage.js'
import { DONE, EMPTY, type Lane, type MapFn, type StageContext, type StageKind } from './kind.js'

/**
 * Options of {@link flatMap}: the common stage options, with `workers` that may tune themselves.
 *
 * @example
 * ```ts
 * import { type FlatMapOptions, flatMap, pipe } from 'stageline'
 * const options: FlatMapOptions = { workers: 'auto', name: 'expand' }
 * console.log(await pipe([2], flatMap(async (n: number) => [n, n], options)).toArray()) // [ 2, 2 ]
 * ```
 */
export interface FlatMapOptions extends Omit<StageOptions, 'workers'> {
  /** A number of workers, or `'auto'`/`{ min, max }` for workers that tune themselves. @default 1 */
  workers?: WorkersOption
}

function flatMapKind(fn: MapFn): StageKind<ResolvedStageOptions> {
  return {
    factory: 'flatMap',
    resolve(where, base, options) {
      const { workers, ...given } = validateOptions(where, options, {
        ...STAGE_SCHEMA,
        workers: workersOrTuning,
      })
      const o = { ...base, ...given } as ResolvedStageOptions
      applyWorkers(o, workers)
      if (o.ordered && (o.workers > 1 || o.tuning !== undefined)) {
        throw new TypeError(
          `${where}: \`ordered: true\` needs \`workers: 1\` (got workers: ${o.workers}); with one worker outputs keep input order anyway`,
        )
      }
      return o
    },
    plan: (o) => {
      const worker = (lane: Lane): Promise<void> => flatMapLoop(lane, fn)
      return {
        workers: o.workers,
        bound: o.tuning?.max ?? o.workers,
        qsize: o.qsize,
        // one worker keeps order by itself: its output is not reordered
        ordered: false,
        worker,
        tuning: o.tuning,
        start: (port) => port.spawn(o.workers, worker),
      }
    },
  }
}

/**
 * Maps each item to any number of outputs: `fn` returns an array, an Iterable or an
 * AsyncIterable (or a promise of one), and every element goes on. Outputs of one item stay
 * together and in order; `ordered: true` with several workers is refused.
 *
 * @example
 * ```ts
 * import { flatMap, pipe } from 'stageline'
 * const words = flatMap((line: string) => line.split(' '))
 * await pipe(['a b', 'c'], words).toArray() // ['a', 'b', 'c']
 * ```
 */
export function flatMap<I, O>(
  fn: (
    item: I,
    ctx: StageContext,
  ) => Iterable<O> | AsyncIterable<O> | PromiseLike<Iterable<O> | AsyncIterable<O>>,
  options?: FlatMapOptions,
): Stage<I, O, FlatMapOptions> {
  checkFunction('flatMap()', 'fn', fn)
  const kind = flatMapKind(fn as MapFn)
  const o = kind.resolve(
    'flatMap()',
    { workers: 1, qsize: DEFAULT_QSIZE, ordered: false, name: undefined },
    options,
  )
  o.name ??= fn.name || undefined
  return new Stage<I, O, FlatMapOptions>(kind, o)
}

async function flatMapLoop(lane: Lane, fn: MapFn): Promise<void> {
  const port = lane.port
  let x: unknown
  let holding = false
  let it: Iterator<unknown> | AsyncIterator<unknown> | undefined
  try {
    outer: for (;;) {
      x = lane.take()
      if (x === EMPTY) {
        await lane.wait()
        x = lane.received()
      }
      if (x === DONE) break
      holding = true
      let many = fn(x, lane.ctx)
      if (isThenable(many)) {
        many = await many
        if (port.halted) break
      }
      if (Array.isArray(many)) {
        for (const y of many) {
          const room = lane.emit(y)
          if (room !== undefined) {
            await room
            if (port.halted) break outer
            lane.resume()
          }
        }
      } else if (isAsyncIterable(many) || isIterable(many)) {
        it = openIterator(many as Iterable<unknown>, "flatMap()'s function's result: its").it
        for (;;) {
          let r = it.next()
          if (isThenable(r)) {
            r = await r
            if (port.halted) break outer
          }
          if (iteratorResult(r).done) break
          const room = lane.emit(r.value)
          if (room !== undefined) {
            await room
            if (port.halted) break outer
            // the iterator's next result is this worker's work, not time blocked
            lane.resume()
          }
        }
        it = undefined
      } else {
        throw new TypeError(
          `flatMap(): the function must return an array, an Iterable or an AsyncIterable, got ${got(many)}`,
        )
      }
      holding = false
      const turn = lane.pace()
      if (turn !== undefined) await turn
    }
  } catch (err) {
    closeQuietly(it)
    lane.fail(err, holding ? x : undefined)
    return
  }
  closeQuietly(it)
  lane.exit()
}

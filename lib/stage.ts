/**
 * Stage: a kind of stage plus its validated options. Nothing runs until a pipeline built from it is
 * read; each run asks the kind how the stage runs (lib/kinds/kind.ts).
 * @module
 */
import { results } from './engine/consumer.js'
import type { StageKind, StagePlan } from './kinds/kind.js'
import type { ResolvedStageOptions, StageOptions } from './options/stage.js'

/** @internal */
export const KIND: unique symbol = Symbol('stageline.kind')

/**
 * A stage: a function run by a group of concurrent workers, with a bounded output queue.
 * Build one with {@link stage}, {@link mapStage} or another stage factory; `setup()` derives a
 * stage with other options. Immutable, so one definition can be used in many pipelines and runs.
 *
 * `Opts` is what its factory and `setup()` accept (a misspelt option is a compile error), `R` what
 * `options` holds once they are checked and complete.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * const double = mapStage((n: number) => n * 2)
 * const wide = double.setup({ workers: 4, qsize: 16 })
 * await pipe([1, 2, 3], wide).toArray() // [2, 4, 6] in completion order
 * ```
 */
export class Stage<
  in I,
  out O,
  Opts extends object = StageOptions,
  R extends ResolvedStageOptions = ResolvedStageOptions,
> {
  /** @internal */
  readonly [KIND]: StageKind<R>
  /** The stage's checked, complete options. */
  readonly options: Readonly<R>

  /** @internal use stage(), mapStage() or the other factories */
  constructor(kind: StageKind<R>, options: R) {
    this[KIND] = kind
    this.options = Object.freeze(options)
  }

  /** The stage's name if set or taken from its function; pipelines name the others `stage<N>`. */
  get name(): string | undefined {
    return this.options.name
  }

  /**
   * Returns a new stage with `options` merged over this one's; this stage is left unchanged. It
   * takes the options the stage's factory takes, checked the same way.
   *
   * @example
   * ```ts
   * import { mapStage } from 'stageline'
   * const fetchOne = mapStage(async (url: string) => url.length)
   * const wide = fetchOne.setup({ workers: 8 })
   * // fetchOne.options.workers === 1, wide.options.workers === 8
   * ```
   */
  setup(options: Opts): Stage<I, O, Opts, R> {
    const kind = this[KIND]
    return new Stage<I, O, Opts, R>(kind, kind.resolve(`${kind.factory}().setup()`, this.options, options))
  }

  /** @internal how this stage runs inside one run, under the name its pipeline gave it */
  plan(name: string): StagePlan {
    return this[KIND].plan(this.options, name)
  }

  /**
   * This stage as a plain transform from an async iterable to an async iterable, for it-pipe or
   * anything else that takes one. Each call runs the stage over the given source.
   *
   * @example
   * ```ts
   * import { pipe as itPipe } from 'it-pipe'
   * import { mapStage } from 'stageline'
   * const square = mapStage((n: number) => n * n, { workers: 2, ordered: true })
   * const out: number[] = []
   * await itPipe([1, 2, 3], square.transform, async (src) => { for await (const n of src) out.push(n) })
   * // out: [1, 4, 9]
   * ```
   */
  readonly transform = (source: Iterable<I> | AsyncIterable<I>): AsyncIterableIterator<O> =>
    results<O>({ source, stages: [this], names: [this.name ?? 'stage1'] })
}

/**
 * Any stage, whatever its kind: what a pipeline accepts.
 *
 * @example
 * ```ts
 * import { type AnyStage, batch, mapStage, pipe } from 'stageline'
 * // stages of different kinds, each with its own options type, under one type
 * const double: AnyStage<number, number> = mapStage((n: number) => n * 2)
 * const pairs: AnyStage<number, number[]> = batch<number>(2)
 * console.log(await pipe([1, 2, 3], double, pairs).toArray()) // [ [ 2, 4 ], [ 6 ] ]
 * ```
 */
export type AnyStage<I, O> = Stage<I, O, any, any>

/**
 * Watching a run from outside the core: a dashboard (`stageline/dashboard`) and telemetry
 * (`stageline/otel`) are given to a run as options, and the run hands itself to them when it
 * starts. They live in their own entry points; the core knows them only by this key, so that the
 * core import loads none of their code. Nothing they do can fail the run: an observer that throws
 * while attaching is a process warning.
 * @module
 */
import { describeCause } from '../errors.js'
import { got } from '../options/check.js'
import type { Execution, RunPlan } from './execution.js'

/** The key under which an observer keeps the function a run calls when it starts. @internal */
export const OBSERVE: unique symbol = Symbol('stageline.observe')

/** What an observer is, and where one is made (for messages). */
const MADE_BY = {
  dashboard: 'a dashboard made by `dashboard()` of stageline/dashboard',
  telemetry: 'telemetry made by `otelMetrics()` of stageline/otel',
} as const

/**
 * Something that watches runs from outside the core, given to a run as an option: a dashboard
 * (`dashboard()` of `stageline/dashboard`, the run option `dashboard`) or telemetry
 * (`otelMetrics()` of `stageline/otel`, the run option `telemetry`).
 *
 * @example
 * ```ts
 * import { mapStage, pipe, type RunObserver } from 'stageline'
 * import { dashboard } from 'stageline/dashboard'
 * const live = await dashboard({ port: 0 })
 * const observer: RunObserver = live
 * console.log(observer.observes) // dashboard
 * await pipe([1, 2, 3], mapStage((n: number) => n * 2)).toArray({ dashboard: live })
 * await live.close()
 * ```
 */
export interface RunObserver {
  /** What it is: `'dashboard'` or `'telemetry'`, the run option it is given as. */
  readonly observes: keyof typeof MADE_BY
  /** @internal called once when a run starts, with the run and what it was built from */
  [OBSERVE](run: Execution, plan: RunPlan): void
}

/** A checker for the run option `option` (`dashboard` or `telemetry`): an observer of that kind. */
export function observer(kind: keyof typeof MADE_BY) {
  return (where: string, option: string, value: unknown): unknown => {
    const o = value as Partial<RunObserver> | null
    if (o === null || typeof o !== 'object' || typeof o[OBSERVE] !== 'function' || o.observes !== kind) {
      const what =
        o !== null &&
        typeof o === 'object' &&
        typeof o[OBSERVE] === 'function' &&
        typeof o.observes === 'string' &&
        o.observes in MADE_BY
          ? MADE_BY[o.observes as keyof typeof MADE_BY]
          : got(value)
      throw new TypeError(`${where}: expected \`${option}\` to be ${MADE_BY[kind]}, got ${what}`)
    }
    return value
  }
}

/** Hands `run` to `o`; a failure there is a process warning, never the run's. */
export function attach(o: RunObserver, run: Execution, plan: RunPlan): void {
  try {
    o[OBSERVE](run, plan)
  } catch (err) {
    process.emitWarning(`stageline: the ${o.observes} could not watch run ${run.id}: ${describeCause(err)}`)
  }
}

/**
 * OpenTelemetry metrics of runs: each run given the option `telemetry: otelMetrics()` records its
 * stages' counters, worker time, queue sizes and workers through `@opentelemetry/api`, on an
 * interval and once more when it ends. Nothing it does can fail a run: a failure is one process
 * warning, and the run is no longer recorded.
 * @module
 */
import type { Attributes, Counter, Gauge, Meter } from '@opentelemetry/api'
import { type Execution, RUNNING } from '../engine/execution.js'
import { OBSERVE, type RunObserver } from '../engine/observe.js'
import { snapshot } from '../engine/stats.js'
import { describeCause } from '../errors.js'
import { got, integer, type Schema, validateOptions } from '../options/check.js'
import { MAX_TIMER_MS } from '../options/limits.js'
import { otel } from './deps.js'

/**
 * Options of {@link otelMetrics}.
 *
 * @example
 * ```ts
 * import { metrics } from '@opentelemetry/api'
 * import { type OtelMetricsOptions, otelMetrics } from 'stageline/otel'
 * const options: OtelMetricsOptions = { meter: metrics.getMeter('my-importer'), interval: 5_000 }
 * const telemetry = otelMetrics(options)
 * ```
 */
export interface OtelMetricsOptions {
  /**
   * The meter the instruments are made on.
   * @default `metrics.getMeter('stageline')` of the global meter provider
   */
  meter?: Meter
  /**
   * Milliseconds between two recordings of a run (a run is also recorded once when it ends).
   * @default 1000
   */
  interval?: number
}

/**
 * The metrics a run records (see {@link otelMetrics}); give it to runs as the option `telemetry`.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * import { otelMetrics, type Telemetry } from 'stageline/otel'
 * const telemetry: Telemetry = otelMetrics()
 * await pipe([1, 2, 3], mapStage((n: number) => n * 2)).toArray({ telemetry })
 * ```
 */
export type Telemetry = RunObserver

/** The instruments' names, units and attributes, as recorded. */
export const INSTRUMENTS = {
  items: 'stageline.stage.items',
  time: 'stageline.stage.time',
  queue: 'stageline.stage.queue.size',
  workers: 'stageline.stage.workers',
} as const

const OUTCOMES = ['in', 'out', 'failed', 'skipped', 'retried'] as const
const STATES = [
  ['working', 'workingMs'],
  ['starved', 'starvedMs'],
  ['blocked', 'blockedMs'],
] as const

const SCHEMA: Schema = {
  meter: (where, option, value) => {
    const m = value as Partial<Meter> | null
    if (
      m === null ||
      typeof m !== 'object' ||
      typeof m.createCounter !== 'function' ||
      typeof m.createGauge !== 'function'
    ) {
      throw new TypeError(
        `${where}: expected \`${option}\` to be an OpenTelemetry Meter (with createCounter() and createGauge(), @opentelemetry/api 1.9 or later), got ${got(value)}`,
      )
    }
    return value
  },
  interval: integer(10, MAX_TIMER_MS),
}

class Metrics implements Telemetry {
  readonly observes = 'telemetry' as const
  private readonly items: Counter
  private readonly time: Counter
  private readonly queue: Gauge
  private readonly workers: Gauge

  constructor(
    meter: Meter,
    private readonly interval: number,
  ) {
    const { INT, DOUBLE } = otel.ValueType
    this.items = meter.createCounter(INSTRUMENTS.items, {
      description: 'Items of a stage by outcome: taken in, handed out, failed, skipped; and retries made',
      unit: '{item}',
      valueType: INT,
    })
    this.time = meter.createCounter(INSTRUMENTS.time, {
      description:
        'Worker time of a stage by state, summed over its workers: working, starved (waiting for input), blocked (waiting for room downstream)',
      unit: 's',
      valueType: DOUBLE,
    })
    this.queue = meter.createGauge(INSTRUMENTS.queue, {
      description: "Items waiting in a stage's output queue",
      unit: '{item}',
      valueType: INT,
    })
    this.workers = meter.createGauge(INSTRUMENTS.workers, {
      description: "A stage's concurrency units: workers, threads, or in-flight slots of a Redis stage",
      unit: '{worker}',
      valueType: INT,
    })
  }

  [OBSERVE](run: Execution): void {
    const last = run.stages.map(() => ({
      in: 0,
      out: 0,
      failed: 0,
      skipped: 0,
      retried: 0,
      workingMs: 0,
      starvedMs: 0,
      blockedMs: 0,
    }))
    const attrs: Attributes[] = run.stages.map((s) => ({
      'stageline.stage.name': s.name,
      'stageline.run.id': run.id,
    }))
    let failed = false
    run.watch((r) => {
      if (failed) return
      try {
        const stats = snapshot(r).stages
        for (let i = 0; i < stats.length; i++) {
          const s = stats[i]!
          const was = last[i]!
          const a = attrs[i]!
          for (const outcome of OUTCOMES) {
            const d = s[outcome] - was[outcome]
            if (d > 0) this.items.add(d, { ...a, 'stageline.item.outcome': outcome })
            was[outcome] = s[outcome]
          }
          for (const [state, key] of STATES) {
            const d = s[key] - was[key]
            if (d > 0) this.time.add(d / 1000, { ...a, 'stageline.worker.state': state })
            was[key] = s[key]
          }
          this.queue.record(s.queued, a)
          this.workers.record(r.state === RUNNING ? s.workers : 0, a)
        }
      } catch (err) {
        failed = true
        process.emitWarning(`stageline: telemetry stopped recording run ${run.id}: ${describeCause(err)}`)
      }
    }, this.interval)
  }
}

/**
 * Records runs as OpenTelemetry metrics through `@opentelemetry/api` (an optional peer dependency:
 * `npm install @opentelemetry/api`, with the SDK and exporter of your choice). Give the result to
 * runs as the option `telemetry`. Each stage of each run records, with the attributes
 * `stageline.stage.name` and `stageline.run.id`:
 * - `stageline.stage.items`, a counter of `{item}`, by `stageline.item.outcome`: `in`, `out`,
 *   `failed`, `skipped`, `retried`;
 * - `stageline.stage.time`, a counter of seconds (`s`) of worker time, by `stageline.worker.state`:
 *   `working`, `starved`, `blocked`;
 * - `stageline.stage.queue.size`, a gauge of `{item}` waiting in the stage's output queue;
 * - `stageline.stage.workers`, a gauge of `{worker}`: the stage's concurrency units (0 once the
 *   run has ended).
 *
 * A run is recorded every `interval` ms and once more when it ends, so its counters end at its
 * totals.
 *
 * @example
 * ```ts
 * import { MeterProvider, InMemoryMetricExporter, AggregationTemporality, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
 * import { mapStage, pipe } from 'stageline'
 * import { otelMetrics } from 'stageline/otel'
 * const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
 * const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 })
 * const provider = new MeterProvider({ readers: [reader] })
 * const telemetry = otelMetrics({ meter: provider.getMeter('example') })
 * await pipe([1, 2, 3], mapStage((n: number) => n * 2, { name: 'double' })).toArray({ telemetry })
 * await reader.forceFlush()
 * const names = exporter.getMetrics()[0]!.scopeMetrics[0]!.metrics.map((m) => m.descriptor.name)
 * console.log(names.includes('stageline.stage.items')) // true
 * await provider.shutdown()
 * ```
 */
export function otelMetrics(options?: OtelMetricsOptions): Telemetry {
  const o = validateOptions('otelMetrics()', options, SCHEMA) as OtelMetricsOptions
  return new Metrics(o.meter ?? otel.metrics.getMeter('stageline'), o.interval ?? 1000)
}

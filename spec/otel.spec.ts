/**
 * stageline/otel: a run's metrics recorded through @opentelemetry/api, read back with the metrics
 * SDK's in-memory exporter.
 */
import {
  AggregationTemporality,
  type DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics'
import { afterEach, describe, expect, test } from 'vitest'
import { filter, mapStage, pipe } from '../lib/index.js'
import { otelMetrics } from '../lib/otel/index.js'
import { numbers, recordUnhandledRejections } from './helpers/instruments.js'

recordUnhandledRejections()

let provider: MeterProvider | undefined
afterEach(async () => {
  await provider?.shutdown()
  provider = undefined
})

function sdk() {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })
  provider = new MeterProvider({ readers: [reader] })
  const meter = provider.getMeter('spec')
  const collect = async (): Promise<Map<string, MetricData>> => {
    await reader.forceFlush()
    const all =
      exporter
        .getMetrics()
        .at(-1)
        ?.scopeMetrics.flatMap((s) => s.metrics) ?? []
    return new Map(all.map((m) => [m.descriptor.name, m]))
  }
  return { meter, collect }
}

function point(m: MetricData | undefined, attrs: Record<string, string>): number | undefined {
  const p = (m?.dataPoints as DataPoint<number>[] | undefined)?.find((d) =>
    Object.entries(attrs).every(([k, v]) => d.attributes[k] === v),
  )
  return p?.value
}

describe('otelMetrics()', () => {
  test('records items by outcome, worker time by state, queue sizes and workers, with OpenTelemetry units', async () => {
    const { meter, collect } = sdk()
    let tries = 0
    const flaky = mapStage(
      (n: number) => {
        if (n === 4 && tries++ === 0) throw new Error('once')
        if (n === 6) throw new Error('always')
        return n
      },
      { name: 'flaky', retries: 1, errors: 'skip', onError: () => {}, workers: 2 },
    )
    const even = filter((n: number) => n % 2 === 0)
    const run = pipe(numbers(10), even, flaky).start({ telemetry: otelMetrics({ meter }) })
    await run.done
    const stats = run.stats()
    const m = await collect()
    const items = m.get('stageline.stage.items')
    expect(items?.descriptor).toMatchObject({ unit: '{item}', valueType: 0 })
    for (const s of stats.stages) {
      const at = { 'stageline.stage.name': s.name, 'stageline.run.id': stats.runId }
      expect(point(items, { ...at, 'stageline.item.outcome': 'in' }), s.name).toBe(s.in)
      expect(point(items, { ...at, 'stageline.item.outcome': 'out' }), s.name).toBe(s.out)
      expect(point(items, { ...at, 'stageline.item.outcome': 'failed' }) ?? 0, s.name).toBe(s.failed)
      expect(point(items, { ...at, 'stageline.item.outcome': 'skipped' }) ?? 0, s.name).toBe(s.skipped)
      expect(point(items, { ...at, 'stageline.item.outcome': 'retried' }) ?? 0, s.name).toBe(s.retried)
    }
    expect(stats.stages[0]!.skipped).toBe(5)
    expect(stats.stages[1]).toMatchObject({ failed: 1, retried: 2 })
    const time = m.get('stageline.stage.time')
    expect(time?.descriptor).toMatchObject({ unit: 's', valueType: 1 })
    const f = stats.stages[1]!
    const at = { 'stageline.stage.name': 'flaky', 'stageline.run.id': stats.runId }
    const seconds =
      (point(time, { ...at, 'stageline.worker.state': 'working' }) ?? 0) +
      (point(time, { ...at, 'stageline.worker.state': 'starved' }) ?? 0) +
      (point(time, { ...at, 'stageline.worker.state': 'blocked' }) ?? 0)
    expect(seconds).toBeCloseTo((f.workingMs + f.starvedMs + f.blockedMs) / 1000, 6)
    const queue = m.get('stageline.stage.queue.size')
    expect(queue?.descriptor.unit).toBe('{item}')
    expect(point(queue, at)).toBe(0)
    const workers = m.get('stageline.stage.workers')
    expect(workers?.descriptor.unit).toBe('{worker}')
    expect(point(workers, at)).toBe(0) // the run has ended: no worker is left
  })

  test('a running run shows its workers and queue', async () => {
    const { meter, collect } = sdk()
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    const held = mapStage(
      async (n: number) => {
        await gate
        return n
      },
      { name: 'held', workers: 3 },
    )
    const run = pipe(numbers(6), held).start({ telemetry: otelMetrics({ meter, interval: 10 }) })
    // the first recording comes on the run's next interval: waited for, with a guard
    let m = await collect()
    const deadline = Date.now() + 10_000
    while (point(m.get('stageline.stage.workers'), { 'stageline.stage.name': 'held' }) !== 3) {
      expect(Date.now(), 'no recording of the running run').toBeLessThan(deadline)
      await new Promise((r) => setTimeout(r, 10))
      m = await collect()
    }
    expect(point(m.get('stageline.stage.queue.size'), { 'stageline.stage.name': 'held' })).toBe(0)
    expect(point(m.get('stageline.stage.items'), { 'stageline.item.outcome': 'in' })).toBe(3)
    release()
    await run.done
    m = await collect()
    expect(point(m.get('stageline.stage.items'), { 'stageline.item.outcome': 'out' })).toBe(6)
  })

  test('bad options are refused; a meter that throws never fails the run, it is one warning', async () => {
    expect(() => otelMetrics({ meter: {} as never })).toThrow(
      'otelMetrics(): expected `meter` to be an OpenTelemetry Meter (with createCounter() and createGauge(), @opentelemetry/api 1.9 or later), got [object Object] (object)',
    )
    expect(() => otelMetrics({ interval: 0 })).toThrow(/`interval` to be an integer from 10/)
    const broken = {
      createCounter: () => ({
        add() {
          throw new Error('exporter down')
        },
      }),
      createGauge: () => ({ record() {} }),
    }
    const seen: string[] = []
    const on = (w: Error): void => {
      seen.push(w.message)
    }
    process.on('warning', on)
    try {
      const out = await pipe(
        [1, 2, 3],
        mapStage((n: number) => n),
      ).toArray({ telemetry: otelMetrics({ meter: broken as never }) })
      expect(out).toEqual([1, 2, 3])
      await new Promise((r) => setImmediate(r))
    } finally {
      process.off('warning', on)
    }
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatch(/^stageline: telemetry stopped recording run [0-9a-f]{8}: Error: exporter down$/)
  })

  test('without a meter, the global meter provider is used', async () => {
    const out = await pipe(
      [1],
      mapStage((n: number) => n),
    ).toArray({ telemetry: otelMetrics() })
    expect(out).toEqual([1])
  })
})

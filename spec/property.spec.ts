/**
 * Property tests over random pipelines: random stages (sync map, async map, a map that is sync for
 * some items and async for others, generator, a generator that stops reading early), workers,
 * qsize, ordered, random sources (arrays, arrays with promise items, sync and async generators, a
 * source function pushing into its bucket) with microtask jitter (and stages that sometimes wait a
 * turn of the event loop), random failure points, random early breaks, and failures whose error
 * cannot be described (its `message` and `name` getters throw).
 */
import fc from 'fast-check'
import { expect, test } from 'vitest'
import {
  type Feed,
  mapStage,
  pipe,
  type Stage,
  type StageContext,
  stage,
  TaskException,
} from '../lib/index.js'
import {
  abortListeners,
  flush,
  recordUnhandledRejections,
  type SourceSpy,
  settlesWithin,
  spiedAsyncSource,
  spiedSyncSource,
  ticks,
} from './helpers/instruments.js'

const guard = recordUnhandledRejections()

type Kind = 'sync' | 'async' | 'mixed' | 'gen' | 'take'

interface StagePlan {
  kind: Kind
  workers: number
  qsize: number
  ordered: boolean
  jitter: number
  /**
   * The longest waits (4 ticks) become a turn of the event loop instead: the sender then waits
   * past the point where lazily handed items are woken (lib/queue.ts, Handed) with no park.
   */
  turns: boolean
  /** Honours ctx.signal the way fetch() does: rejects with its reason once it aborts. */
  honours: boolean
  /** For 'take': how many items the function reads before it returns. */
  limit: number
}

interface Plan {
  source: 'array' | 'promises' | 'sync' | 'async' | 'bucket'
  n: number
  sourceJitter: number
  stages: StagePlan[]
  /** Where a failure is planted: -1 the source, i a stage; `item` the item it fails on. */
  failure: { at: number; item: number } | null
  /** Break out of the loop (or abort the caller's signal) after this many outputs. */
  breakAfter: number | null
  stopBy: 'break' | 'abort'
  consumer: 'iterate' | 'toArray' | 'execute'
  /** The planted error's `message` and `name` getters throw. */
  hostile: boolean
}

const stagePlan: fc.Arbitrary<StagePlan> = fc
  .record({
    kind: fc.constantFrom<Kind>('sync', 'async', 'async', 'mixed', 'gen', 'take'),
    workers: fc.integer({ min: 1, max: 6 }),
    qsize: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constant(Number.POSITIVE_INFINITY)),
    ordered: fc.boolean(),
    jitter: fc.integer({ min: 0, max: 1000 }),
    turns: fc.boolean(),
    honours: fc.boolean(),
    limit: fc.integer({ min: 0, max: 60 }),
  })
  .map((s) => ({
    ...s,
    ordered: s.ordered && (s.kind === 'sync' || s.kind === 'async' || s.kind === 'mixed' || s.workers === 1),
  }))

const planArb: fc.Arbitrary<Plan> = fc
  .record({
    source: fc.constantFrom<Plan['source']>('array', 'promises', 'sync', 'async', 'bucket'),
    n: fc.integer({ min: 0, max: 200 }),
    sourceJitter: fc.integer({ min: 0, max: 1000 }),
    stages: fc.array(stagePlan, { minLength: 1, maxLength: 5 }),
    failure: fc.option(
      fc.record({ at: fc.integer({ min: -1, max: 4 }), item: fc.integer({ min: 0, max: 220 }) }),
      {
        freq: 2,
      },
    ),
    breakAfter: fc.option(fc.integer({ min: 0, max: 150 }), { freq: 3 }),
    stopBy: fc.constantFrom<Plan['stopBy']>('break', 'break', 'abort'),
    consumer: fc.constantFrom<Plan['consumer']>('iterate', 'iterate', 'toArray', 'execute'),
    hostile: fc.boolean(),
  })
  .map((p) => {
    let failure = p.failure
    if (failure !== null) {
      if (failure.at >= p.stages.length) failure = { ...failure, at: p.stages.length - 1 }
      if (failure.at === -1 && p.source === 'array') failure = { ...failure, at: 0 }
    }
    return { ...p, failure, breakAfter: p.consumer === 'iterate' ? p.breakAfter : null }
  })

/** 0-4 microtask ticks, a pure function of the seed and the item. */
function jitterOf(seed: number, x: number): number {
  return (Math.imul(seed + 1, 2654435761) ^ Math.imul(x + 7, 40503)) >>> 29 > 3 ? 0 : (seed + x) % 5
}

/** A stage's wait before item `x`: `jitterOf` ticks, or a turn of the event loop (see `turns`). */
function pause(s: StagePlan, x: number): Promise<void> {
  const n = jitterOf(s.jitter, x)
  return s.turns && n === 4 ? flush(1) : ticks(n)
}

const stopReason = new Error('the caller aborted')

class Planted extends Error {
  constructor(
    readonly where: number,
    hostile = false,
  ) {
    super(`planted failure at ${where}`)
    if (hostile) {
      for (const key of ['message', 'name']) {
        Object.defineProperty(this, key, {
          get() {
            throw new Error(`no ${key} for you`)
          },
        })
      }
    }
  }
}

/** A planted failure of `plan` at `where`. */
function planted(plan: Plan, where: number): Planted {
  return new Planted(where, plan.hostile)
}

async function check(plan: Plan): Promise<void> {
  const { n } = plan
  const input = Array.from({ length: n }, (_, i) => i)
  let triggered = false
  let firedWhileStopping = false
  let calls = 0
  const fails = (at: number, x: number, signal: AbortSignal): boolean => {
    if (plan.failure !== null && plan.failure.at === at && plan.failure.item === x) {
      triggered = true
      firedWhileStopping = signal.aborted
      return true
    }
    return false
  }

  let spy: SourceSpy | undefined
  let source: Iterable<number> | AsyncIterable<number> = input
  const sourceOptions = {
    failAt: plan.failure?.at === -1 ? plan.failure.item : undefined,
    error: planted(plan, -1),
  }
  if (plan.source === 'sync') {
    const s = spiedSyncSource(input, sourceOptions)
    source = s.source
    spy = s.spy
  } else if (plan.source === 'async') {
    const s = spiedAsyncSource(input, { ...sourceOptions, ticks: (i) => jitterOf(plan.sourceJitter, i) })
    source = s.source
    spy = s.spy
  } else if (plan.source === 'promises') {
    // every other item a promise, settled after jitter; a planted source failure is a rejected one
    source = input.map((x) => {
      // a thenable that rejects when it is read: one the run never reaches is never a rejection
      if (x === sourceOptions.failAt) {
        return {
          // biome-ignore lint/suspicious/noThenProperty: a lazily rejecting thenable, on purpose
          then(_: unknown, fail: (err: unknown) => void) {
            triggered = true
            fail(sourceOptions.error)
          },
        }
      }
      return x % 2 === 0 ? x : ticks(jitterOf(plan.sourceJitter, x)).then(() => x)
    }) as unknown as number[]
  } else if (plan.source === 'bucket') {
    // pushes until the input ends or a push is refused (the run ended or stopped reading)
    source = (async (bucket: Feed<number>) => {
      for (const x of input) {
        await ticks(jitterOf(plan.sourceJitter, x))
        if (x === sourceOptions.failAt) {
          triggered = true
          throw sourceOptions.error
        }
        await bucket.push(x)
      }
    }) as unknown as number[]
  }

  const stages: Stage<number, number>[] = plan.stages.map((s, i) => {
    const options = { workers: s.workers, qsize: s.qsize, ordered: s.ordered, name: `s${i}` }
    switch (s.kind) {
      case 'sync':
        return mapStage((x: number, ctx: StageContext) => {
          calls++
          if (fails(i, x, ctx.signal)) throw planted(plan, i)
          return x
        }, options)
      case 'async':
        return mapStage(async (x: number, ctx: StageContext) => {
          calls++
          await pause(s, x)
          if (s.honours) ctx.signal.throwIfAborted()
          if (fails(i, x, ctx.signal)) throw planted(plan, i)
          return x
        }, options)
      case 'mixed':
        // synchronous for some items, a promise for the others: under stage fusion, the first
        // promise of a fused call is handed over to the idle worker it was made for
        return mapStage((x: number, ctx: StageContext) => {
          calls++
          if (jitterOf(s.jitter, x) === 0 || x % 2 === 0) {
            if (fails(i, x, ctx.signal)) throw planted(plan, i)
            return x
          }
          return pause(s, x).then(() => {
            if (s.honours) ctx.signal.throwIfAborted()
            if (fails(i, x, ctx.signal)) throw planted(plan, i)
            return x
          })
        }, options)
      case 'gen':
        return stage(async function* (xs: AsyncIterable<number>, ctx: StageContext) {
          for await (const x of xs) {
            calls++
            await pause(s, x)
            if (s.honours) ctx.signal.throwIfAborted()
            if (fails(i, x, ctx.signal)) throw planted(plan, i)
            yield x
          }
        }, options)
      default:
        return stage(async function* take(xs: AsyncIterable<number>, ctx: StageContext) {
          let k = 0
          if (s.limit === 0) return
          for await (const x of xs) {
            calls++
            await pause(s, x)
            if (s.honours) ctx.signal.throwIfAborted()
            if (fails(i, x, ctx.signal)) throw planted(plan, i)
            yield x
            if (++k === s.limit) return
          }
        }, options)
    }
  })
  const pipeline = pipe(source, ...stages)

  const out: number[] = []
  let broke = false
  let error: unknown
  try {
    if (plan.consumer === 'toArray') {
      out.push(...((await settlesWithin(pipeline.toArray(), 'the run', plan)) as number[]))
    } else if (plan.consumer === 'execute') {
      const last = await settlesWithin(pipeline.execute(), 'the run', plan)
      if (last !== undefined) out.push(last as number)
    } else {
      await settlesWithin(
        (async () => {
          const controller = new AbortController()
          const results = pipeline.results({ signal: controller.signal })
          try {
            if (plan.breakAfter === 0) {
              broke = true
              if (plan.stopBy === 'abort') controller.abort(stopReason)
              for await (const _ of results) break
              return
            }
            for await (const x of results) {
              out.push(x as number)
              if (out.length === plan.breakAfter) {
                broke = true
                if (plan.stopBy === 'break') break
                controller.abort(stopReason)
              }
            }
          } finally {
            expect(abortListeners(controller.signal)).toBe(0)
          }
        })(),
        'the run',
        plan,
      )
    }
  } catch (err) {
    error = err
  }
  const callsAtEnd = calls
  await flush(2)
  if (spy?.threw) triggered = true

  // after the run has settled, no stage function is called again
  expect(calls).toBe(callsAtEnd)
  // the source is closed or exhausted, never read after its end
  if (spy !== undefined) {
    expect(spy.opened).toBeLessThanOrEqual(1)
    expect(spy.opened === 0 || spy.exhausted || spy.threw || spy.returns === 1).toBe(true)
    // a generator closed before its first next() never enters its body, so never its finally
    expect(spy.finalized).toBe(spy.nexts > 0 ? 1 : 0)
    expect(spy.returns).toBeLessThanOrEqual(1)
    expect(spy.nextAfterEnd).toBe(0)
  }
  expect(guard.events).toEqual([])

  const truncating = plan.stages.some((s) => s.kind === 'take')
  if (error === stopReason) {
    // the caller's abort: only after it was asked for, and only if nothing failed first
    expect(broke && plan.stopBy === 'abort').toBe(true)
    expect(out.length).toBe(plan.breakAfter)
    return
  }
  if (broke && plan.stopBy === 'abort' && error === undefined) {
    expect.fail(`the caller's signal aborted but the run resolved: ${JSON.stringify(plan)}`)
  }
  if (error !== undefined) {
    // a failure that fired while its stage was already told to stop is not the run's failure
    expect(firedWhileStopping).toBe(false)
    // only a planted failure may fail a run, and it is reported as a TaskException naming its stage
    expect(error).toBeInstanceOf(TaskException)
    const e = error as TaskException
    expect(e.cause).toBeInstanceOf(Planted)
    const at = (e.cause as Planted).where
    expect(at).toBe(plan.failure!.at)
    expect(e.stage).toBe(at === -1 ? 'source' : `s${at}`)
    const kind = at === -1 ? 'source' : plan.stages[at]!.kind
    expect(e.item).toBe(
      kind === 'sync' || kind === 'async' || kind === 'mixed' ? plan.failure!.item : undefined,
    )
    expect(triggered).toBe(true)
    return
  }
  // a planted failure that fired fails the run, unless the run was already stopping
  if (triggered && !broke && !truncating) {
    expect.fail(`a planted failure fired but the run resolved: ${JSON.stringify(plan)}`)
  }
  // nothing is duplicated, and nothing is made up
  expect(new Set(out).size).toBe(out.length)
  for (const x of out) expect(x >= 0 && x < n).toBe(true)
  if (broke || truncating || triggered) return
  if (plan.consumer === 'execute') {
    if (n === 0) expect(out).toEqual([])
    else expect(out).toHaveLength(1)
    return
  }
  // every item exactly once, in input order when every stage keeps order
  const keepsOrder = plan.stages.every((s) => s.workers === 1 || s.ordered)
  if (keepsOrder) expect(out).toEqual(input)
  else expect([...out].sort((a, b) => a - b)).toEqual(input)
}

test('random pipelines terminate, deliver every item exactly once and report planted failures', async () => {
  await fc.assert(fc.asyncProperty(planArb, check), { numRuns: Number(process.env.HUNT ?? 300) })
})

test('random ordered pipelines without failures keep input order', async () => {
  const ordered = planArb.map((p) => ({
    ...p,
    failure: null,
    breakAfter: null,
    consumer: 'toArray' as const,
    stages: p.stages.map((s) =>
      s.kind === 'take'
        ? { ...s, kind: 'gen' as const, workers: 1, ordered: false }
        : { ...s, ordered: s.kind !== 'gen', workers: s.kind === 'gen' ? 1 : s.workers },
    ),
  }))
  await fc.assert(fc.asyncProperty(ordered, check), { numRuns: 100 })
})

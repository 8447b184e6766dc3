/**
 * Property tests over random pipelines of the library's other steps: `filter()`, `flatMap()`,
 * `batch()` (flattened again), map stages returning `skip`, and map stages with policies
 * (`retries`, `errors: 'skip'` with `onError`, per-worker `init`/`dispose`), with random workers,
 * qsize, order, microtask jitter, a planted failure and early breaks. Each plan is run against a
 * model: the same steps applied to an array, one after the other.
 */
import fc from 'fast-check'
import { expect, test } from 'vitest'
import {
  batch,
  filter,
  flatMap,
  mapStage,
  pipe,
  type RunStats,
  type Stage,
  type StageContext,
  skip,
  TaskException,
} from '../lib/index.js'
import { flush, recordUnhandledRejections, settlesWithin, ticks } from './helpers/instruments.js'

const guard = recordUnhandledRejections()

type Kind = 'filter' | 'flatMap' | 'batch' | 'skipper' | 'retry' | 'skipErrors' | 'stateful'
type Shape = 'sync' | 'async' | 'mixed'

interface StepPlan {
  kind: Kind
  shape: Shape
  workers: number
  qsize: number
  ordered: boolean
  /** Seeds the step's choices (which items it drops, fails, waits on). */
  salt: number
  /** batch(): its size and whether a partial batch goes on at once (maxWait 0) or waits for more. */
  size: number
  eager: boolean
  /** flatMap(): what the function returns. */
  returns: 'array' | 'iterable' | 'asyncIterable'
}

interface Plan {
  n: number
  steps: StepPlan[]
  /** A planted failure: step `at` throws (for good, past any retries) on input value `value`. */
  failure: { at: number; value: number } | null
  breakAfter: number | null
  /** `toArray()` takes results without a promise per item: a path of its own. */
  consumer: 'iterate' | 'toArray'
  /** Read the run's stats (`onProgress`): the stages then keep their time books. */
  stats: boolean
}

/** 0..7, a pure function of the salt and the value. */
function hash(salt: number, x: number): number {
  return (Math.imul(salt + 11, 2654435761) ^ Math.imul(x + 3, 40503)) >>> 29
}

const stepPlan: fc.Arbitrary<StepPlan> = fc
  .record({
    kind: fc.constantFrom<Kind>('filter', 'flatMap', 'batch', 'skipper', 'retry', 'skipErrors', 'stateful'),
    shape: fc.constantFrom<Shape>('sync', 'async', 'mixed'),
    workers: fc.integer({ min: 1, max: 5 }),
    qsize: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(64)),
    ordered: fc.boolean(),
    salt: fc.integer({ min: 0, max: 1000 }),
    size: fc.integer({ min: 1, max: 7 }),
    eager: fc.boolean(),
    returns: fc.constantFrom<StepPlan['returns']>('array', 'iterable', 'asyncIterable'),
  })
  .map((s) => ({
    ...s,
    // flatMap refuses `ordered: true` with several workers; batch has one worker and keeps order
    ordered: s.kind === 'flatMap' ? s.ordered && s.workers === 1 : s.ordered,
    workers: s.kind === 'batch' ? 1 : s.workers,
  }))

const planArb: fc.Arbitrary<Plan> = fc
  .record({
    n: fc.integer({ min: 0, max: 120 }),
    steps: fc.array(stepPlan, { minLength: 1, maxLength: 4 }),
    failure: fc.option(
      fc.record({ at: fc.integer({ min: 0, max: 3 }), value: fc.integer({ min: 0, max: 150 }) }),
      {
        freq: 3,
      },
    ),
    breakAfter: fc.option(fc.integer({ min: 0, max: 100 }), { freq: 3 }),
    consumer: fc.constantFrom<Plan['consumer']>('iterate', 'iterate', 'toArray'),
    stats: fc.boolean(),
  })
  .map((p) => {
    let failure = p.failure
    if (failure !== null && failure.at >= p.steps.length) failure = { ...failure, at: p.steps.length - 1 }
    // batch() takes no function to plant a failure in
    if (failure !== null && p.steps[failure.at]!.kind === 'batch') failure = null
    return { ...p, failure, breakAfter: p.consumer === 'iterate' ? p.breakAfter : null }
  })

class Planted extends Error {
  constructor(
    readonly at: number,
    readonly value: number,
  ) {
    super(`planted failure at step ${at} on ${value}`)
  }
}
class Flaky extends Error {}
class Rejected extends Error {}

/** What each step does to one value, as the model sees it: the values it passes on. */
function modelStep(s: StepPlan, x: number): number[] {
  switch (s.kind) {
    case 'filter':
      return hash(s.salt, x) < 3 ? [] : [x]
    case 'flatMap':
      return [2 * x, 2 * x + 1]
    case 'skipper':
      return hash(s.salt, x) === 0 ? [] : [x]
    case 'skipErrors':
      return hash(s.salt, x) < 2 ? [] : [x]
    default: // batch (flattened), retry, stateful: every value as it came
      return [x]
  }
}

/** True where a step keeps its input's order. */
function keepsOrder(s: StepPlan): boolean {
  return s.kind === 'batch' || s.workers === 1 || s.ordered
}

async function check(plan: Plan): Promise<void> {
  const input = Array.from({ length: plan.n }, (_, i) => i)
  let calls = 0
  let triggered = false
  const skippedErrors = plan.steps.map(() => 0)
  const inits = plan.steps.map(() => 0)
  const disposes = plan.steps.map(() => 0)
  const attempts = plan.steps.map(() => new Map<number, number>())

  /**
   * Runs `body` now (sync), after a few microtask ticks or a turn of the event loop (async), or
   * either, by the step's shape. A turn lets lazily handed items (lib/queue.ts) wake on the turn.
   */
  const shaped = <T>(s: StepPlan, x: number, body: () => T): T | Promise<T> => {
    calls++ // counted when the stage calls the function: a call in flight may finish after the run failed
    const wait = hash(s.salt + 1, x) % 5
    if (s.shape === 'sync' || (s.shape === 'mixed' && wait < 2)) return body()
    return (wait === 4 ? flush(1) : ticks(wait)).then(body)
  }
  const planted = (i: number, x: number) => {
    if (plan.failure !== null && plan.failure.at === i && plan.failure.value === x) {
      triggered = true
      throw new Planted(i, x)
    }
  }

  // steps of differing types (batch() makes arrays): typed loosely, the model checks the values
  const stages: Stage<unknown, unknown>[] = []
  const add = (...st: Stage<never, unknown>[]) => stages.push(...(st as Stage<unknown, unknown>[]))
  plan.steps.forEach((s, i) => {
    const name = `s${i}`
    const options = { workers: s.workers, qsize: s.qsize, ordered: s.ordered, name }
    switch (s.kind) {
      case 'filter':
        add(
          filter(
            (x: number) =>
              shaped(s, x, () => {
                planted(i, x)
                return hash(s.salt, x) >= 3
              }),
            options,
          ),
        )
        return
      case 'flatMap':
        add(
          flatMap(
            (x: number) =>
              shaped(s, x, () => {
                planted(i, x)
                const out = [2 * x, 2 * x + 1]
                if (s.returns === 'array') return out
                if (s.returns === 'iterable') return out.values()
                return (async function* () {
                  for (const y of out) {
                    await ticks(hash(s.salt, y) % 3)
                    yield y
                  }
                })()
              }),
            { workers: s.workers, qsize: s.qsize, ordered: s.ordered, name },
          ),
        )
        return
      case 'batch':
        add(
          batch<number>(s.size, { maxWait: s.eager ? 0 : Number.POSITIVE_INFINITY, qsize: s.qsize, name }),
          flatMap((xs: number[]) => xs, { name: `${name}-flat` }),
        )
        return
      case 'skipper':
        add(
          mapStage(
            (x: number) =>
              shaped(s, x, () => {
                planted(i, x)
                return hash(s.salt, x) === 0 ? skip : x
              }),
            options,
          ),
        )
        return
      case 'retry':
        // fails the first 0-2 tries of an item, then succeeds: retries 2 always get it through
        add(
          mapStage(
            (x: number, ctx) =>
              shaped(s, x, () => {
                planted(i, x)
                attempts[i]!.set(x, (attempts[i]!.get(x) ?? 0) + 1)
                if (ctx.attempt < hash(s.salt, x) % 3) throw new Flaky(`try ${ctx.attempt} of ${x}`)
                return x
              }),
            { ...options, retries: 2 },
          ),
        )
        return
      case 'skipErrors':
        add(
          mapStage(
            (x: number) =>
              shaped(s, x, () => {
                planted(i, x)
                if (hash(s.salt, x) < 2) throw new Rejected(`no ${x}`)
                return x
              }),
            {
              ...options,
              errors: 'skip',
              onError: (err: unknown, x: number) => {
                // a planted failure is not skipped: errors 'skip' would hide it, so it is rethrown
                if (err instanceof Planted) throw err
                expect(err).toBeInstanceOf(Rejected)
                expect(hash(s.salt, x)).toBeLessThan(2)
                skippedErrors[i]!++
              },
            },
          ),
        )
        return
      default:
        add(
          mapStage(
            (x: number, ctx) =>
              shaped(s, x, () => {
                planted(i, x)
                expect(ctx.state).toEqual({ worker: ctx.worker })
                return x
              }),
            {
              ...options,
              init: (ctx: StageContext) => {
                inits[i]!++
                return { worker: ctx.worker }
              },
              dispose: () => {
                disposes[i]!++
              },
            },
          ),
        )
    }
  })

  const out: number[] = []
  let broke = false
  let error: unknown
  let last: RunStats | undefined
  const options = plan.stats ? { onProgress: (s: RunStats) => (last = s) } : undefined
  try {
    await settlesWithin(
      (async () => {
        if (plan.consumer === 'toArray') {
          out.push(...((await pipe(input, ...stages).toArray(options)) as number[]))
          return
        }
        for await (const x of pipe(input, ...stages).results(options)) {
          if (out.length === plan.breakAfter) {
            broke = true
            break
          }
          out.push(x as number)
        }
      })(),
      'the run',
      plan,
    )
  } catch (err) {
    error = err
  }
  const callsAtEnd = calls
  await flush(2)
  expect(calls).toBe(callsAtEnd) // nothing is called once the run has settled
  expect(guard.events).toEqual([])
  // every worker that was set up is torn down, whatever ended the run
  expect(disposes).toEqual(inits)
  plan.steps.forEach((s, i) => {
    expect(inits[i]!).toBeLessThanOrEqual(s.kind === 'stateful' ? s.workers : 0)
  })

  if (error !== undefined) {
    expect(error).toBeInstanceOf(TaskException)
    const e = error as TaskException
    expect(e.cause).toBeInstanceOf(Planted)
    const cause = e.cause as Planted
    expect(cause.at).toBe(plan.failure!.at)
    expect(e.stage).toBe(`s${cause.at}`)
    expect(triggered).toBe(true)
    return
  }
  // the model: the steps applied one after the other
  let expected = input
  const reached: number[][] = []
  for (const s of plan.steps) {
    reached.push(expected)
    expected = expected.flatMap((x) => modelStep(s, x))
  }
  const failureReached =
    plan.failure !== null && reached[plan.failure.at]!.includes(plan.failure.value) && !broke
  if (failureReached)
    expect.fail(`the planted failure was reached but the run resolved: ${JSON.stringify(plan)}`)
  // nothing duplicated, nothing made up
  expect(new Set(out).size).toBe(out.length)
  const allowed = new Set(expected)
  for (const x of out) expect(allowed.has(x)).toBe(true)
  if (broke || triggered) return
  if (plan.stats) {
    // the time books stay whole whatever order the kinds park and resume in: no state's total
    // below zero, and every worker out of the working state once the run has ended
    expect(last).toBeDefined()
    for (const st of last!.stages) {
      expect(Math.min(st.workingMs, st.starvedMs, st.blockedMs), st.name).toBeGreaterThanOrEqual(0)
      expect(st.busy, st.name).toBe(0)
    }
  }
  // every value exactly once, in the model's order when every step keeps order
  if (plan.steps.every(keepsOrder)) expect(out).toEqual(expected)
  else expect([...out].sort((a, b) => a - b)).toEqual([...expected].sort((a, b) => a - b))
  // each skipped error was reported to onError once, and each retried item tried as planned
  plan.steps.forEach((s, i) => {
    if (s.kind === 'skipErrors') {
      expect(skippedErrors[i]).toBe(reached[i]!.filter((x) => hash(s.salt, x) < 2).length)
    }
    if (s.kind === 'retry') {
      for (const x of reached[i]!) expect(attempts[i]!.get(x)).toBe((hash(s.salt, x) % 3) + 1)
    }
  })
}

test('random pipelines of filter, flatMap, batch, skip and policies match the model, once per value', async () => {
  await fc.assert(fc.asyncProperty(planArb, check), { numRuns: Number(process.env.HUNT ?? 300) })
})

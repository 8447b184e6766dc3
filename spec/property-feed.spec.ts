/**
 * Property tests over fed background runs: several producers push into a `feed()` of random
 * capacity (one at a time, or with `pushAll`) while a run started with `start()` processes the
 * items through random stages and a slow or fast `onResult`; the run ends by `end()`, `stop()`
 * (graceful, possibly while pushes wait), `abort()`, or a planted failure, each at a random
 * point. Whatever ends it: every push settles, nothing is delivered twice or made up, the run's
 * `done` settles the way its ending says, and a graceful end delivers every accepted item.
 *
 * The producers push into a feed made by the test, or into the bucket of a source function (which
 * rethrows a refused push, as a `while (true) await bucket.push(x)` loop would): a run that ends
 * on purpose must not fail because its source function's push was refused.
 */
import fc from 'fast-check'
import { expect, test } from 'vitest'
import {
  type Feed,
  FeedClosedError,
  feed,
  mapStage,
  pipe,
  RunStopped,
  type Source,
  type Stage,
  type StageContext,
  stage,
  TaskException,
} from '../lib/index.js'
import { flush, recordUnhandledRejections, settlesWithin, ticks } from './helpers/instruments.js'

const guard = recordUnhandledRejections()

type Kind = 'sync' | 'async' | 'gen'

interface StagePlan {
  kind: Kind
  workers: number
  qsize: number
  ordered: boolean
  salt: number
}

interface Plan {
  /** Who owns the feed: the test (`feed()`), or the run (a source function's bucket). */
  via: 'feed' | 'bucket'
  capacity: number
  /** Items per producer; producer p pushes p * 1000 + i. */
  producers: number[]
  /** How producer p pushes: one push() at a time, or pushAll() of a sync or async iterable. */
  modes: ('push' | 'pushAll' | 'pushAllAsync')[]
  stages: StagePlan[]
  slowResults: boolean
  /** start({ collectInput }): the whole feed is read before the first stage starts. */
  collectInput: boolean
  /** What ends the run, and after how many deliveries (for stop and abort). */
  ending: 'end' | 'stop' | 'stopEarly' | 'abort' | 'fail'
  after: number
  salt: number
}

function hash(salt: number, x: number): number {
  return (Math.imul(salt + 5, 2654435761) ^ Math.imul(x + 9, 40503)) >>> 29
}

/** 0-3 microtask ticks or, now and then, a turn of the event loop. */
function pause(salt: number, x: number): Promise<void> {
  const n = hash(salt, x) % 5
  return n === 4 ? flush(1) : ticks(n)
}

const stagePlan: fc.Arbitrary<StagePlan> = fc
  .record({
    kind: fc.constantFrom<Kind>('sync', 'async', 'gen'),
    workers: fc.integer({ min: 1, max: 4 }),
    qsize: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constant(64)),
    ordered: fc.boolean(),
    salt: fc.integer({ min: 0, max: 1000 }),
  })
  .map((s) => ({ ...s, ordered: s.ordered && s.kind !== 'gen' }))

const planArb: fc.Arbitrary<Plan> = fc
  .record({
    via: fc.constantFrom<Plan['via']>('feed', 'bucket'),
    capacity: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(64)),
    producers: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 3 }),
    modes: fc.array(fc.constantFrom<Plan['modes'][number]>('push', 'pushAll', 'pushAllAsync'), {
      minLength: 3,
      maxLength: 3,
    }),
    stages: fc.array(stagePlan, { minLength: 1, maxLength: 3 }),
    slowResults: fc.boolean(),
    collectInput: fc.boolean(),
    ending: fc.constantFrom<Plan['ending']>('end', 'end', 'stop', 'stopEarly', 'abort', 'fail'),
    after: fc.integer({ min: 0, max: 60 }),
    salt: fc.integer({ min: 0, max: 1000 }),
  })
  .map((p) => ({ ...p, modes: p.modes.slice(0, p.producers.length) }))

class Planted extends Error {}

async function check(plan: Plan): Promise<void> {
  // a bucket is made by the run, with the default capacity, when the source function is called
  let input: Feed<number> = feed<number>({ capacity: plan.capacity })
  const total = plan.producers.reduce((a, b) => a + b, 0)
  // the failure is planted on an item some producer pushes, when there is one
  const failOn = plan.ending === 'fail' && total > 0 ? pickItem(plan, plan.after % total) : undefined
  let failed = false
  const stages: Stage<number, number>[] = plan.stages.map((s, i) => {
    const options = { workers: s.workers, qsize: s.qsize, ordered: s.ordered, name: `s${i}` }
    const check = (x: number) => {
      if (i === 0 && x === failOn) {
        failed = true
        throw new Planted(`planted on ${x}`)
      }
      return x
    }
    if (s.kind === 'sync') return mapStage(check, options)
    if (s.kind === 'async')
      return mapStage(async (x: number) => pause(s.salt, x).then(() => check(x)), options)
    return stage(async function* (xs: AsyncIterable<number>, _ctx: StageContext) {
      for await (const x of xs) {
        await pause(s.salt, x)
        yield check(x)
      }
    }, options)
  })

  const delivered: number[] = []
  let ended: Promise<void> | undefined
  let stopping = false
  const stopReason = new RunStopped('aborted by the test')
  // every producer's pushes, each settling to accepted or refused
  const accepted = new Set<number>()
  const refused: unknown[] = []
  // push() calls made before a graceful stop() that were refused: end() lets waiting pushes in
  let refusedFromBefore = 0
  const produce = async (p: number): Promise<void> => {
    const items = Array.from({ length: plan.producers[p]! }, (_, i) => p * 1000 + i)
    const mode = plan.modes[p]!
    if (mode === 'push') {
      for (const x of items) {
        const before = !stopping
        try {
          await input.push(x)
          accepted.add(x)
        } catch (err) {
          refused.push(err)
          if (before) refusedFromBefore++
          if (plan.via === 'bucket') throw err
          return
        }
      }
      return
    }
    // pushAll: an item counts as accepted once the iterable was asked for the next one (or ended)
    let pending: number | undefined
    const note = (x: number) => {
      if (pending !== undefined) accepted.add(pending)
      pending = x
    }
    const source =
      mode === 'pushAll'
        ? (function* () {
            for (const x of items) {
              note(x)
              yield x
            }
          })()
        : (async function* () {
            for (const x of items) {
              note(x)
              await pause(plan.salt, x)
              yield x
            }
          })()
    try {
      await input.pushAll(source)
      if (pending !== undefined) accepted.add(pending)
    } catch (err) {
      refused.push(err)
      if (plan.via === 'bucket') throw err
    }
  }
  let producing: Promise<void> | undefined
  const source: Source<number> =
    plan.via === 'feed'
      ? input
      : (bucket: Feed<number>) => {
          input = bucket
          producing = Promise.all(plan.producers.map((_, p) => produce(p))).then(() => {})
          return producing
        }
  const run = pipe(source as Source<unknown>, ...stages).start({
    collectInput: plan.collectInput,
    onResult: async (item) => {
      const x = item as number // a spread of stages types the output as unknown
      delivered.push(x)
      if (delivered.length === plan.after && ended === undefined) {
        if (plan.ending === 'stop') {
          stopping = true
          ended = run.stop().catch(() => {})
        }
        if (plan.ending === 'abort') ended = run.abort(stopReason)
      }
      if (plan.slowResults) await pause(plan.salt, x)
    },
  })
  if (plan.ending === 'stopEarly') {
    stopping = true
    ended = run.stop().catch(() => {})
  }

  if (plan.via === 'feed') {
    await settlesWithin(Promise.all(plan.producers.map((_, p) => produce(p))), 'the pushes', plan)
    if (plan.ending === 'end' || plan.ending === 'fail' || ended === undefined) input.end()
  } else {
    // the source function ends the bucket when it returns; its rejection is the run's to handle
    await settlesWithin(
      producing!.catch(() => {}),
      'the pushes',
      plan,
    )
  }

  let outcome: unknown
  try {
    await settlesWithin(run.done, 'run.done', plan)
  } catch (err) {
    outcome = err
  }
  if (ended !== undefined) await settlesWithin(ended, 'stop() or abort()', plan)
  await flush(2)
  expect(guard.events).toEqual([])
  expect(run.alive).toBe(false)

  // nothing twice, nothing made up
  expect(new Set(delivered).size).toBe(delivered.length)
  const pushed = new Set(plan.producers.flatMap((k, p) => Array.from({ length: k }, (_, i) => p * 1000 + i)))
  for (const x of delivered) expect(pushed.has(x)).toBe(true)
  // a push is refused only with a FeedClosedError, and only once the run is ending
  for (const err of refused) expect(err).toBeInstanceOf(FeedClosedError)

  if (failed) {
    expect(outcome).toBeInstanceOf(TaskException)
    expect((outcome as TaskException).cause).toBeInstanceOf(Planted)
    expect((outcome as TaskException).stage).toBe('s0')
    return
  }
  if (plan.ending === 'abort' && ended !== undefined) {
    expect(outcome).toBe(stopReason)
    return
  }
  // ended gracefully (end(), or stop() before or during the pushes): no failure, and every
  // accepted item delivered exactly once; a refused push happens only when stop() ended the feed
  expect(outcome).toBeUndefined()
  expect(refusedFromBefore).toBe(0)
  expect([...delivered].sort((a, b) => a - b)).toEqual([...accepted].sort((a, b) => a - b))
  if (plan.ending === 'end' || plan.ending === 'fail') expect(refused).toEqual([])
  else if (ended === undefined) expect(refused).toEqual([])
  if (refused.length === 0 && (plan.ending === 'end' || plan.ending === 'fail')) {
    expect(delivered.length).toBe(total)
  }
}

/** The k-th pushed item over all producers. */
function pickItem(plan: Plan, k: number): number {
  for (const [p, count] of plan.producers.entries()) {
    if (k < count) return p * 1000 + k
    k -= count
  }
  throw new Error('unreachable')
}

test('fed background runs: every push settles, and a graceful end delivers every accepted item once', async () => {
  await fc.assert(fc.asyncProperty(planArb, check), { numRuns: Number(process.env.HUNT ?? 200) })
})

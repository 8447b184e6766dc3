/**
 * A stage whose number of workers changes while it runs (`run.setWorkers()`, and the tuner of
 * `workers: 'auto'`): every promise of a stage holds (no item lost or duplicated, order where
 * asked, init/dispose once per worker that starts or stops, worker indexes unique among live
 * workers, the output bound), asserted through instruments, never the clock.
 */
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import {
  batch,
  feed,
  flatMap,
  mapStage,
  pipe,
  type StageContext,
  stage,
  TaskException,
  type WorkersEvent,
} from '../lib/index.js'
import {
  flush,
  numbers,
  Peak,
  recordUnhandledRejections,
  settlesWithin,
  sorted,
  ticks,
} from './helpers/instruments.js'

recordUnhandledRejections()

describe('run.setWorkers()', () => {
  test('grows a stage at once: more calls run together, each worker index unique among the live ones', async () => {
    const input = feed<number>()
    const peak = new Peak()
    const gates: (() => void)[] = []
    const live = new Set<number>()
    let clash = false
    const events: WorkersEvent[] = []
    const run = pipe(
      input,
      mapStage(
        (n: number, ctx: StageContext) =>
          peak.run(async () => {
            if (live.has(ctx.worker)) clash = true
            live.add(ctx.worker)
            await new Promise<void>((r) => gates.push(r))
            live.delete(ctx.worker)
            return n
          }),
        { name: 'work', workers: 2 },
      ),
    ).start({ onWorkers: (e) => events.push(e) })
    await input.pushAll(numbers(10))
    while (gates.length < 2) await flush(1)
    expect(peak.current).toBe(2)
    run.setWorkers('work', 6)
    while (gates.length < 6) await flush(1)
    expect(peak.max).toBe(6)
    expect(run.stats().stages[0]).toMatchObject({ workers: 6, tuning: 'fixed' })
    expect(events).toEqual([
      expect.objectContaining({ stage: 'work', index: 0, from: 2, to: 6, reason: 'set by run.setWorkers()' }),
    ])
    input.end()
    while (gates.length > 0) {
      for (const g of gates.splice(0)) g()
      await flush(1)
    }
    await run.done
    expect(clash).toBe(false)
  })

  test('shrinks a stage: busy workers finish their item, idle ones stop at once, nothing is lost; dispose runs once per worker that stopped', async () => {
    const input = feed<number>({ capacity: 0 })
    const gates: (() => void)[] = []
    let inits = 0
    let disposes = 0
    const out: number[] = []
    const peak = new Peak()
    const run = pipe(
      input,
      mapStage(
        (n: number) =>
          peak.run(async () => {
            await new Promise<void>((r) => gates.push(r))
            return n
          }),
        {
          name: 'work',
          workers: 6,
          init: () => {
            inits++
          },
          dispose: () => {
            disposes++
          },
        },
      ),
    ).start({ onResult: (n) => out.push(n) })
    // three items held, three workers idle
    void input.push(0)
    void input.push(1)
    void input.push(2)
    while (gates.length < 3) await flush(1)
    expect(inits).toBe(6)
    run.setWorkers('work', 2)
    await flush(2)
    // the three idle workers stopped at once, with their dispose
    expect(disposes).toBe(3)
    for (const g of gates.splice(0)) g()
    await flush(2)
    // one of the busy ones, retired, stopped after its item
    expect(disposes).toBe(4)
    expect(run.stats().stages[0]!.workers).toBe(2)
    const pushes = input.pushAll(numbers(20).map((n) => n + 3))
    for (let i = 0; i < 200 && out.length < 23; i++) {
      for (const g of gates.splice(0)) g()
      await flush(1)
    }
    await pushes
    expect(peak.current).toBeLessThanOrEqual(2)
    input.end()
    for (const g of gates.splice(0)) g()
    await run.done
    expect(sorted(out)).toEqual(numbers(23))
    expect(disposes).toBe(inits)
  })

  test('an ordered stage keeps input order while it grows and shrinks', async () => {
    const input = feed<number>()
    const out: number[] = []
    const run = pipe(
      input,
      mapStage(
        async (n: number) => {
          await ticks((n * 7) % 5)
          return n
        },
        { name: 'ordered', workers: 3, ordered: true },
      ),
    ).start({ onResult: (n) => out.push(n) })
    for (let i = 0; i < 300; i++) {
      await input.push(i)
      if (i % 37 === 0) run.setWorkers('ordered', 1 + ((i * 13) % 9))
    }
    input.end()
    await run.done
    expect(out).toEqual(numbers(300))
  })

  test('is refused for a stage the pipeline does not have, has twice, keeps its workers, or has ended', async () => {
    const input = feed<number>()
    const twice = mapStage((n: number) => n, { name: 'same' })
    const gen = stage(async function* gen(xs: AsyncIterable<number>) {
      yield* xs
    })
    const run = pipe(
      input,
      twice,
      twice,
      gen,
      batch<number>(2),
      flatMap((b: number[]) => b, { name: 'flat' }),
    ).start()
    expect(() => run.setWorkers('nope', 2)).toThrow(
      'run.setWorkers(): no stage is named "nope"; the stages are "same", "same", "gen", "batch", "flat"',
    )
    expect(() => run.setWorkers('same', 2)).toThrow('run.setWorkers(): more than one stage is named "same"')
    expect(() => run.setWorkers('gen', 2)).toThrow(
      'run.setWorkers(): stage "gen" keeps its workers while it runs (a generator, batch or Redis stage, or a thread stage given a number of threads)',
    )
    expect(() => run.setWorkers('batch', 2)).toThrow(/stage "batch" keeps its workers/)
    expect(() => run.setWorkers('flat', 0)).toThrow(RangeError)
    expect(() => run.setWorkers('flat', { min: 4, max: 2 } as never)).toThrow(
      /`workers.min` to be at most `workers.max`/,
    )
    run.setWorkers('flat', 3)
    input.end()
    await run.done
    expect(() => run.setWorkers('flat', 2)).toThrow('run.setWorkers(): stage "flat" has ended')
  })

  test("'auto' turns the stage's tuner on, a number turns it off", async () => {
    const input = feed<number>()
    const run = pipe(
      input,
      mapStage(async (n: number) => n, { name: 'w', workers: 2 }),
    ).start()
    expect(run.stats().stages[0]!.tuning).toBe('fixed')
    run.setWorkers('w', 'auto')
    expect(run.stats().stages[0]!.tuning).toBe('auto')
    run.setWorkers('w', { min: 3, max: 5 })
    // raised to the new minimum at once
    expect(run.stats().stages[0]).toMatchObject({ tuning: 'auto', workers: 3 })
    run.setWorkers('w', 4)
    expect(run.stats().stages[0]).toMatchObject({ tuning: 'fixed', workers: 4 })
    input.end()
    await run.done
  })
})

describe("workers: 'auto' as an option", () => {
  test("mapStage and flatMap take 'auto' and { min, max }; options.workers is the start, options.tuning the bounds", () => {
    expect(mapStage((n: number) => n, { workers: 'auto' }).options).toMatchObject({
      workers: 1,
      tuning: { min: 1, max: 256 },
    })
    expect(mapStage((n: number) => n, { workers: { min: 4 } }).options).toMatchObject({
      workers: 4,
      tuning: { min: 4, max: 256 },
    })
    expect(mapStage((n: number) => n, { workers: { max: 8 } }).options).toMatchObject({
      workers: 1,
      tuning: { min: 1, max: 8 },
    })
    expect(flatMap((n: number) => [n], { workers: 'auto' }).options.tuning).toEqual({ min: 1, max: 256 })
    const auto = mapStage((n: number) => n, { workers: 'auto' })
    expect(auto.setup({ workers: 3 }).options).toMatchObject({ workers: 3, tuning: undefined })
    expect(mapStage((n: number) => n).setup({ workers: 'auto' }).options.tuning).toEqual({ min: 1, max: 256 })
  })

  test('bad bounds are refused at once, naming what is wrong', () => {
    const bad: [unknown, RegExp][] = [
      [{ min: 0 }, /`workers.min` to be an integer from 1 to 10000, got 0/],
      [{ min: 1.5 }, /`workers.min` to be an integer from 1 to 10000, got 1.5/],
      [{ max: 'lots' }, /`workers.max` to be an integer from 1 to 10000, got "lots"/],
      [{ min: 9, max: 3 }, /`workers.min` to be at most `workers.max`, got min 9 and max 3/],
      [{ mni: 2 }, /unknown key `mni` in `workers`; the keys are `min`, `max`/],
      ['fast', /`workers` to be an integer from 1 to 10000, 'auto' or \{ min, max \}, got "fast"/],
    ]
    for (const [workers, message] of bad) {
      expect(() => mapStage((n: number) => n, { workers } as never)).toThrow(message)
      expect(() => mapStage((n: number) => n).setup({ workers } as never)).toThrow(message)
    }
  })

  test("a generator stage refuses 'auto', saying why", () => {
    const gen = async function* (xs: AsyncIterable<number>) {
      yield* xs
    }
    expect(() => stage(gen, { workers: 'auto' } as never)).toThrow(
      "stage(): `workers: 'auto'` is not for a generator stage: retiring one of its workers would end its input, so an aggregating generator would emit partial results; give it a number of workers",
    )
    expect(() => stage(gen).setup({ workers: { min: 2 } } as never)).toThrow(/is not for a generator stage/)
  })

  test('an auto stage reports its tuning and moves its workers, each change with a reason', async () => {
    const events: WorkersEvent[] = []
    const gates: (() => void)[] = []
    const p = pipe(
      numbers(200),
      mapStage(
        async (n: number) => {
          await new Promise<void>((r) => gates.push(r))
          return n
        },
        { workers: { min: 2, max: 6 }, name: 'auto' },
      ),
    )
    const run = p.start({ onWorkers: (e) => events.push(e) })
    expect(run.stats().stages[0]).toMatchObject({ tuning: 'auto', workers: 2 })
    // the tuner runs on its own timer: the items are released until the run is done
    const done = settlesWithin(run.done, 'the auto run', {}, 15_000)
    let settled = false
    void done.then(() => {
      settled = true
    })
    while (!settled) {
      for (const g of gates.splice(0)) g()
      await new Promise((r) => setTimeout(r, 2))
    }
    await done
    for (const e of events) {
      expect(e.to).toBeGreaterThanOrEqual(2)
      expect(e.to).toBeLessThanOrEqual(6)
      expect(e.reason).toMatch(/\w/)
    }
  })
})

describe('random resizing', () => {
  type Kind = 'sync' | 'async' | 'ordered' | 'policies'
  interface Plan {
    kind: Kind
    start: number
    n: number
    changes: { at: number; to: number }[]
    failAt: number | null
    stopAt: number | null
    salt: number
  }
  const planArb: fc.Arbitrary<Plan> = fc.record({
    kind: fc.constantFrom<Kind>('sync', 'async', 'ordered', 'policies'),
    start: fc.integer({ min: 1, max: 6 }),
    n: fc.integer({ min: 0, max: 150 }),
    changes: fc.array(
      fc.record({ at: fc.integer({ min: 0, max: 150 }), to: fc.integer({ min: 1, max: 8 }) }),
      {
        maxLength: 6,
      },
    ),
    failAt: fc.option(fc.integer({ min: 0, max: 160 }), { freq: 4 }),
    stopAt: fc.option(fc.integer({ min: 0, max: 160 }), { freq: 4 }),
    salt: fc.integer({ min: 0, max: 1000 }),
  })

  class Planted extends Error {}

  async function check(plan: Plan): Promise<void> {
    const input = feed<number>({ capacity: 4 })
    let inits = 0
    let disposes = 0
    const live = new Set<number>()
    let clash = false
    let failed = false
    const fn = async (n: number, ctx: StageContext) => {
      if (live.has(ctx.worker)) clash = true
      live.add(ctx.worker)
      try {
        if (plan.kind !== 'sync') await ticks((n + plan.salt) % 4)
        if (n === plan.failAt) {
          failed = true
          throw new Planted(String(n))
        }
        return n
      } finally {
        live.delete(ctx.worker)
      }
    }
    const options = {
      name: 'w',
      workers: plan.start,
      ordered: plan.kind === 'ordered',
      ...(plan.kind === 'policies'
        ? {
            init: () => {
              inits++
            },
            dispose: () => {
              disposes++
            },
          }
        : {}),
    }
    const syncFn = (n: number) => {
      if (n === plan.failAt) {
        failed = true
        throw new Planted(String(n))
      }
      return n
    }
    const s = plan.kind === 'sync' ? mapStage(syncFn, options) : mapStage(fn, options)
    const out: number[] = []
    const run = pipe(input, s).start({ onResult: (x) => out.push(x as number) })
    let stopping: Promise<void> | undefined
    const producing = (async () => {
      for (let i = 0; i < plan.n; i++) {
        for (const c of plan.changes) if (c.at === i && run.alive) run.setWorkers('w', c.to)
        if (i === plan.stopAt) stopping = run.stop().catch(() => {})
        try {
          await input.push(i)
        } catch {
          return
        }
      }
      input.end()
    })()
    let outcome: unknown
    try {
      await settlesWithin(run.done, 'the run', plan)
    } catch (err) {
      outcome = err
    }
    await settlesWithin(producing, 'the pushes', plan)
    if (stopping !== undefined) await stopping
    await flush(2)
    expect(clash).toBe(false)
    expect(new Set(out).size).toBe(out.length)
    if (plan.kind === 'ordered') expect(out).toEqual([...out].sort((a, b) => a - b))
    if (plan.kind === 'policies') expect(disposes).toBe(inits)
    if (failed) {
      expect(outcome).toBeInstanceOf(TaskException)
      expect((outcome as TaskException).cause).toBeInstanceOf(Planted)
      return
    }
    expect(outcome).toBeUndefined()
    // nothing lost: every item accepted by the feed came out
    const accepted = plan.stopAt !== null && plan.stopAt < plan.n ? out.length : plan.n
    expect(sorted(out)).toEqual(numbers(accepted).filter((x) => out.includes(x) || accepted === plan.n))
    if (plan.stopAt === null || plan.stopAt >= plan.n) expect(sorted(out)).toEqual(numbers(plan.n))
  }

  test('resizing at random points loses, repeats and reorders nothing, and balances init with dispose', async () => {
    await fc.assert(fc.asyncProperty(planArb, check), { numRuns: Number(process.env.HUNT ?? 150) })
  })
})

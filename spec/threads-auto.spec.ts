/**
 * A thread stage whose threads tune themselves (`threads: 'auto'` or `{ min, max }`): its options,
 * and a pool whose number of threads changes mid-run (`run.setWorkers()`, which the tuner also
 * uses). How many items run at once is read back from the threads themselves (spec/fixtures/
 * threads/gate.js holds each item until the spec opens its gate), never from the clock.
 */
import { availableParallelism } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, test } from 'vitest'
import { feed, pipe, threadStage, type WorkersEvent } from '../lib/index.js'
import { MAX_THREADS } from '../lib/threads/stage.js'
import { numbers, recordUnhandledRejections } from './helpers/instruments.js'

recordUnhandledRejections()

const FIXTURES = new URL('./fixtures/threads/', import.meta.url)
const GATE = new URL('gate.js', FIXTURES)
const WORK = new URL('work.js', FIXTURES)
const CORES = Math.min(MAX_THREADS, availableParallelism())

/** Waits (a few ms at a time, at most 15 s) until `cond` holds; throws naming `what` otherwise. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 7500; i++) {
    if (cond()) return
    await sleep(2)
  }
  throw new Error(`still waiting for ${what}`)
}

describe('threadStage({ threads: auto })', () => {
  test("'auto' tunes between 1 and the available cores, starting at 1; { min, max } sets other bounds", () => {
    const auto = threadStage(WORK, { threads: 'auto' })
    expect(auto.options.threads).toBe(1)
    expect(auto.options.workers).toBe(1)
    expect(auto.options.tuning).toEqual({ min: 1, max: CORES })
    const bounded = threadStage(WORK, { threads: { min: 2, max: 5 } })
    expect([bounded.options.threads, bounded.options.workers]).toEqual([2, 2])
    expect(bounded.options.tuning).toEqual({ min: 2, max: 5 })
    expect(threadStage(WORK, { threads: { max: 3 } }).options.tuning).toEqual({ min: 1, max: 3 })
    // { min } alone: at most the cores, or min when it is more
    expect(threadStage(WORK, { threads: { min: CORES + 2 } }).options.tuning).toEqual({
      min: CORES + 2,
      max: CORES + 2,
    })
    // setup() takes the same values; a number fixes the threads again
    expect(auto.setup({ batch: 8 }).options.tuning).toEqual({ min: 1, max: CORES })
    const fixed = auto.setup({ threads: 3 })
    expect([fixed.options.threads, fixed.options.tuning]).toEqual([3, undefined])
    expect(threadStage(WORK, { threads: 2 }).setup({ threads: 'auto' }).options.tuning).toEqual({
      min: 1,
      max: CORES,
    })
  })

  test('bad bounds are refused at once, naming the option and what is allowed', () => {
    expect(() => threadStage(WORK, { threads: { min: 0 } })).toThrow(
      /threads\.min.*integer from 1 to 1024, got 0/,
    )
    expect(() => threadStage(WORK, { threads: { min: 4, max: 2 } })).toThrow(
      'expected `threads.min` to be at most `threads.max`, got min 4 and max 2',
    )
    expect(() => threadStage(WORK, { threads: { max: 1.5 } })).toThrow(/threads\.max.*1\.5/)
    expect(() => threadStage(WORK, { threads: { max: 2000 } })).toThrow(/threads\.max.*1024.*2000/)
    expect(() => threadStage(WORK, { threads: { most: 2 } as never })).toThrow(
      'unknown key `most` in `threads`; the keys are `min`, `max`',
    )
    expect(() => threadStage(WORK, { threads: 'many' as never })).toThrow(
      'expected `threads` to be an integer from 1 to 1024, \'auto\' or { min, max }, got "many" (string)',
    )
  })

  test('a tuned thread stage delivers every item once and reports tuning: auto', async () => {
    const s = threadStage<number, number>(WORK, { threads: { min: 1, max: 2 }, name: 'hash' })
    const seen: string[] = []
    const run = pipe(numbers(3000), s).start({ onResult: () => {} })
    seen.push(run.stats().stages[0]!.tuning)
    await run.done
    const done = run.stats().stages[0]!
    expect(seen).toEqual(['auto'])
    expect(done.tuning).toBe('auto')
    expect(done.out).toBe(3000)
    const out = await pipe(numbers(500), s.setup({ ordered: true })).toArray()
    expect(out.length).toBe(500)
  })
})

describe('run.setWorkers() on a thread stage', () => {
  test('grows the pool at once, and after shrinking runs fewer items at once on the threads it keeps; dispose runs once in every thread', async () => {
    const shared = new SharedArrayBuffer(4 * (3 + 20))
    const a = new Int32Array(shared)
    const open = (...ns: number[]) => {
      for (const n of ns) {
        Atomics.store(a, 3 + n, 1)
        Atomics.notify(a, 3 + n)
      }
    }
    const input = feed<{ n: number; shared: SharedArrayBuffer }>()
    const results: { n: number; worker: number }[] = []
    const events: WorkersEvent[] = []
    const run = pipe(
      input,
      threadStage<{ n: number; shared: SharedArrayBuffer }, { n: number; worker: number }>(GATE, {
        threads: { min: 1, max: 3 },
        name: 'gate',
      }),
    ).start({ onResult: (r) => void results.push(r), onWorkers: (e) => events.push(e) })
    try {
      run.setWorkers('gate', 1) // fixed from now on: no tuner moves it
      await input.pushAll(numbers(6).map((n) => ({ n, shared })))
      await until(() => Atomics.load(a, 0) === 1, 'the first item to run')
      run.setWorkers('gate', 3)
      expect(run.stats().stages[0]!.workers).toBe(3)
      await until(() => Atomics.load(a, 0) === 3, 'three items to run at once')
      open(0, 1, 2)
      await until(() => results.length === 3 && Atomics.load(a, 0) === 3, 'the next three to run')
      expect(new Set(results.map((r) => r.worker))).toEqual(new Set([0, 1, 2]))
      // shrink: the pool keeps its three threads, but one item runs at a time
      run.setWorkers('gate', 1)
      open(3, 4, 5)
      await until(() => results.length === 6, 'the items that ran before the shrink')
      Atomics.store(a, 1, 0)
      await input.pushAll(numbers(6).map((n) => ({ n: n + 6, shared })))
      await until(
        () => run.stats().stages[0]!.in === 12 && Atomics.load(a, 0) === 1,
        'items taken after the shrink',
      )
      // a grace in which a batch sent past the limit would have reached an idle thread
      await sleep(50)
      expect(Atomics.load(a, 0)).toBe(1)
      for (let n = 6; n < 12; n++) {
        open(n)
        await until(() => results.length === n + 1, `item ${n}`)
      }
      expect(Atomics.load(a, 1)).toBe(1)
      input.end()
      await run.done
    } finally {
      open(...numbers(12))
      await run.abort().catch(() => {})
    }
    expect(results.map((r) => r.n).sort((x, y) => x - y)).toEqual(numbers(12))
    expect(Atomics.load(a, 2)).toBe(3)
    expect(events.map((e) => `${e.from}->${e.to}: ${e.reason}`)).toEqual([
      '1->3: set by run.setWorkers()',
      '3->1: set by run.setWorkers()',
    ])
  })

  test("keeps input order while its threads change, and 'auto' is 1 to the stage's most threads", async () => {
    const input = feed<number>()
    const out: number[] = []
    const events: WorkersEvent[] = []
    const run = pipe(
      input,
      threadStage<number, number>(WORK, {
        threads: { min: 1, max: 4 },
        ordered: true,
        export: 'uneven',
        name: 'u',
      }),
    ).start({ onResult: (n) => void out.push(n), onWorkers: (e) => events.push(e) })
    const expected: number[] = []
    const { uneven } = (await import(WORK.href)) as { uneven: (n: number) => number }
    for (let i = 0; i < 300; i++) {
      expected.push(uneven(i))
      await input.push(i)
      if (i % 37 === 0) run.setWorkers('u', 1 + ((i * 7) % 4))
    }
    run.setWorkers('u', 'auto')
    input.end()
    await run.done
    expect(out).toEqual(expected)
    expect(run.stats().stages[0]!.tuning).toBe('auto')
    expect(events.length).toBeGreaterThan(3)
    expect(events.every((e) => e.to >= 1 && e.to <= 4)).toBe(true)
  })

  test('is refused for a thread stage given a number of threads, and above the most threads of a tuned one', async () => {
    const input = feed<number>()
    const run = pipe(
      input,
      threadStage(WORK, { threads: 2, name: 'fixed' }),
      threadStage(WORK, { threads: { max: 3 }, name: 'tuned' }),
    ).start()
    try {
      expect(() => run.setWorkers('fixed', 4)).toThrow(
        'run.setWorkers(): stage "fixed" keeps its workers while it runs (a generator, batch or Redis stage, or a thread stage given a number of threads)',
      )
      expect(() => run.setWorkers('tuned', 4)).toThrow(
        'run.setWorkers(): stage "tuned" runs at most 3 workers (the upper bound of its threads), got 4',
      )
      expect(() => run.setWorkers('tuned', { max: 9 })).toThrow(/at most 3 workers.*got max 9/)
      run.setWorkers('tuned', 'auto')
      expect(run.stats().stages[1]!.tuning).toBe('auto')
    } finally {
      input.end()
      await run.done
    }
  })
})

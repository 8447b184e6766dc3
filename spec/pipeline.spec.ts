import { Readable } from 'node:stream'
import fc from 'fast-check'
import { pipe as itPipe } from 'it-pipe'
import { describe, expect, test, vi } from 'vitest'
import { drain } from '../lib/engine/consumer.js'
import { Execution } from '../lib/engine/execution.js'
import { snapshot } from '../lib/engine/stats.js'
import { mapStage, Pipeline, pipe, stage } from '../lib/index.js'
import {
  defer,
  flush,
  numbers,
  Peak,
  recordUnhandledRejections,
  settlesWithin,
  sorted,
  spiedAsyncSource,
  spiedSyncSource,
  ticks,
} from './helpers/instruments.js'

recordUnhandledRejections()

/** A cheap deterministic jitter: 0-4 microtask ticks depending on the item. */
const jitter = (n: number): number => (n * 7919) % 5

describe('concurrency', () => {
  test('a map stage runs exactly `workers` calls at once at its peak', async () => {
    const peak = new Peak()
    const work = mapStage((n: number) => peak.run(() => ticks(1 + jitter(n)).then(() => n)), { workers: 4 })
    const out = await pipe(numbers(200), work).toArray()
    expect(peak.max).toBe(4)
    expect(sorted(out)).toEqual(numbers(200))
  })

  test('a generator stage runs exactly `workers` copies of its function at once', async () => {
    const peak = new Peak()
    let started = 0
    const copy = stage(
      async function* copy(xs: AsyncIterable<number>) {
        started++
        for await (const x of xs) {
          peak.enter()
          await ticks(1 + jitter(x))
          peak.leave()
          yield x
        }
      },
      { workers: 3 },
    )
    const out = await pipe(numbers(300), copy).toArray()
    expect(started).toBe(3)
    expect(peak.max).toBe(3)
    expect(sorted(out)).toEqual(numbers(300))
  })

  test('each stage of a chain reaches its own peak concurrency', async () => {
    const peaks = [new Peak(), new Peak(), new Peak()]
    // the middle stage is the slow one, so its input queue is never empty for long
    const cost = [1, 30, 1]
    const step = (i: number, workers: number) =>
      mapStage((n: number) => peaks[i]!.run(() => ticks(cost[i]! + jitter(n)).then(() => n)), { workers })
    const out = await pipe(numbers(300), step(0, 2), step(1, 5), step(2, 3)).toArray()
    expect(peaks.map((p) => p.max)).toEqual([2, 5, 3])
    expect(sorted(out)).toEqual(numbers(300))
  })
})

describe('every item exactly once', () => {
  test('1000 items through sync, async and generator stages arrive exactly once each', async () => {
    const out = await pipe(
      numbers(1000),
      mapStage((n: number) => n * 2, { workers: 3 }),
      mapStage(
        async (n: number) => {
          await ticks(jitter(n))
          return n + 1
        },
        { workers: 4, qsize: 3 },
      ),
      stage(
        async function* minusOne(xs: AsyncIterable<number>) {
          for await (const x of xs) yield x - 1
        },
        { workers: 2, qsize: 0 },
      ),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(1000).map((n) => n * 2))
  })

  test('4 mappers over 1000 items give the right multiset (parallelpipe)', async () => {
    const out = await pipe(
      numbers(1000),
      mapStage(
        async (n: number) => {
          await ticks(jitter(n))
          return n * n
        },
        { workers: 4 },
      ),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(1000).map((n) => n * n))
  })

  test('undefined, null and false are items like any other', async () => {
    const items = [undefined, null, false, 0, '', Number.NaN]
    const out = await pipe(
      items,
      mapStage((x: unknown) => x, { workers: 2, ordered: true }),
    ).toArray()
    expect(out).toEqual(items)
    const unordered = await pipe(
      items,
      mapStage(async (x: unknown) => x, { workers: 3, qsize: 0 }),
    ).toArray()
    expect(unordered).toHaveLength(items.length)
    for (const x of items) expect(unordered).toContainEqual(x)
  })

  test('an async source feeds every item exactly once to several workers', async () => {
    const { source, spy } = spiedAsyncSource(500, { ticks: jitter })
    const out = await pipe(
      source,
      mapStage(async (n: number) => n, { workers: 4, qsize: 2 }),
    ).toArray()
    expect(sorted(out)).toEqual(numbers(500))
    expect(spy.exhausted).toBe(true)
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('a pipeline with no stages yields its source', async () => {
    expect(await pipe(numbers(5)).toArray()).toEqual(numbers(5))
    const { source } = spiedAsyncSource(5)
    expect(await pipe(source).toArray()).toEqual(numbers(5))
  })
})

describe('ordered output', () => {
  test('ordered: true gives input order whatever order the workers finish in', async () => {
    const out = await pipe(
      numbers(500),
      mapStage(
        async (n: number) => {
          await ticks(jitter(n) * 3)
          return n
        },
        { workers: 4, ordered: true, qsize: 2 },
      ),
    ).toArray()
    expect(out).toEqual(numbers(500))
  })

  test('ordered stages in a chain keep input order end to end', async () => {
    const slow = (k: number) =>
      mapStage(
        async (n: number) => {
          await ticks((n * k) % 7)
          return n
        },
        { workers: 3, ordered: true, qsize: 0 },
      )
    const out = await pipe(
      numbers(300),
      slow(3),
      slow(5),
      mapStage((n: number) => n, { ordered: true }),
    ).toArray()
    expect(out).toEqual(numbers(300))
  })

  test('a one-worker generator stage keeps the order it yields in', async () => {
    const out = await pipe(
      numbers(200),
      mapStage(async (n: number) => n, { workers: 3, ordered: true }),
      stage(async function* pairs(xs: AsyncIterable<number>) {
        for await (const x of xs) {
          await ticks(jitter(x))
          yield x
        }
      }),
    ).toArray()
    expect(out).toEqual(numbers(200))
  })

  test('the reorder window holds at most qsize + workers items while the head item is slow', async () => {
    const head = defer()
    let calls = 0
    const qsize = 2
    const workers = 3
    const p = pipe(
      numbers(100),
      mapStage(
        async (n: number) => {
          calls++
          if (n === 0) await head.promise
          return n
        },
        { workers, qsize, ordered: true },
      ),
    )
    const it = p.results()
    const first = it.next()
    await flush()
    // items 1.. are done but wait behind item 0; no more are taken than the window allows
    expect(calls).toBe(qsize + workers)
    head.resolve()
    expect(await first).toEqual({ value: 0, done: false })
    const rest: number[] = []
    for await (const n of it) rest.push(n)
    expect(rest).toEqual(numbers(100).slice(1))
    expect(calls).toBe(100)
  })
})

describe('hand-over between stages', () => {
  // A worker's results are handed to a parked worker of the next stage lazily (lib/queue.ts,
  // offerLazy): the taker is woken when some party parks, or at the next turn of the event loop.
  // These stages wait, after sending an item, for the next stage to have it: were the wake put off
  // until the sender parks, they would wait forever.
  test('a generator stage that waits for the next stage to take what it yielded does not hang', async () => {
    const seen = [defer(), defer(), defer()]
    const produce = stage(async function* (input: AsyncIterable<number>) {
      for await (const n of input) {
        yield n
        await seen[n]!.promise // resolved by the next stage, once it has item n
      }
    })
    const record = mapStage((n: number) => {
      seen[n]!.resolve()
      return n * 10
    })
    expect(await pipe([0, 1, 2], produce, record).toArray()).toEqual([0, 10, 20])
  }, 5000)

  test('an async map stage that waits for the next stage to take its previous result does not hang', async () => {
    const seen = [defer(), defer(), defer()]
    const first = mapStage(async (n: number) => {
      if (n > 0) await seen[n - 1]!.promise
      return n
    })
    const second = stage(async function* (input: AsyncIterable<number>) {
      for await (const n of input) {
        seen[n]!.resolve()
        yield n
      }
    })
    expect(await pipe([0, 1, 2], first, second).toArray()).toEqual([0, 1, 2])
  }, 5000)

  test('a generator stage whose next item waits on a timer still delivers the one before at once', async () => {
    const later = defer()
    const delivered: number[] = []
    const slow = stage(async function* () {
      yield 1
      await later.promise // e.g. a fetch: released only once the consumer saw item 1
      yield 2
    })
    for await (const n of pipe([0], slow).results()) {
      delivered.push(n)
      if (n === 1) setTimeout(() => later.resolve(), 1)
    }
    expect(delivered).toEqual([1, 2])
  }, 5000)
})

describe('fake timers', () => {
  test('a pipeline of generator and async stages completes while the test fakes the timers', async () => {
    // a lazy hand-over is bounded by a turn of the event loop (lib/queue.ts): taken from the real
    // setImmediate, so that vi.useFakeTimers() cannot freeze a run that uses no timer of its own
    vi.useFakeTimers()
    try {
      const inc = stage(async function* (input: AsyncIterable<number>) {
        for await (const n of input) yield n + 1
      })
      const double = mapStage(async (n: number) => n * 2)
      expect(await pipe([1, 2, 3], inc, double, inc).toArray()).toEqual([5, 7, 9])
      // long enough that workers yield to the event loop for fairness (node:timers/promises)
      const sync = mapStage((n: number) => n + 1, { workers: 2 })
      const spread = mapStage(async (n: number) => n + 1, { workers: 3 })
      let sum = 0
      for await (const n of pipe(numbers(50_000), inc, sync, spread, inc).results()) sum += n
      expect(sum).toBe((50_000 * 49_999) / 2 + 4 * 50_000)
    } finally {
      vi.useRealTimers()
    }
  }, 5000)
})

describe('bounded memory', () => {
  test('with a consumer that does not read, a stage takes exactly qsize + workers items', async () => {
    const { source, spy } = spiedSyncSource(1000)
    const p = pipe(
      source,
      mapStage(async (n: number) => n, { workers: 3, qsize: 4 }),
    )
    const it = p.results()
    const first = await it.next() // start the run, then stop reading
    await flush()
    // one item was consumed (in completion order: any of the first 3 workers' items); the queue
    // holds 4 and each of the 3 workers holds one more
    expect([0, 1, 2]).toContain(first.value)
    expect(spy.reads).toBe(1 + 4 + 3)
    await flush()
    expect(spy.reads).toBe(1 + 4 + 3)
    await it.return!()
    expect(spy.returns).toBe(1)
  })

  test('no stage of a chain gets more than its qsize + workers ahead of a slow consumer', async () => {
    const bounds = [
      { workers: 3, qsize: 4 },
      { workers: 2, qsize: 5 },
      { workers: 4, qsize: 0 },
    ]
    let calls = [0, 0, 0]
    const { source, spy } = spiedSyncSource(2000)
    const step = (i: number) =>
      mapStage(async (n: number) => {
        calls[i]!++
        await ticks(jitter(n))
        return n
      }, bounds[i]!)
    let consumed = 0
    let worst = [0, 0, 0]
    for await (const _ of pipe(source, step(0), step(1), step(2))) {
      consumed++
      await flush() // a slow consumer: everything upstream runs as far as it may
      const ahead = [calls[0]! - calls[1]!, calls[1]! - calls[2]!, calls[2]! - consumed]
      worst = worst.map((w, i) => Math.max(w, ahead[i]!))
      // the source is read only for the first stage's workers: every item read is being worked on
      expect(spy.reads).toBe(calls[0])
    }
    expect(consumed).toBe(2000)
    for (let i = 0; i < 3; i++) {
      expect(worst[i]).toBeLessThanOrEqual(bounds[i]!.qsize + bounds[i]!.workers)
    }
    // the bound is reached, so the check above measures something
    expect(worst[2]).toBe(bounds[2]!.qsize + bounds[2]!.workers)
    calls = [0, 0, 0]
  })

  test('an async source is read on demand: no more than the first stage can hold', async () => {
    const { source, spy } = spiedAsyncSource(1000)
    const p = pipe(
      source,
      mapStage((n: number) => n, { workers: 2, qsize: 0 }),
    )
    const it = p.results()
    await it.next()
    await flush(5)
    // 1 consumed, then 2 workers each hold one item in a hand-off queue: nothing else is read
    expect(spy.reads).toBe(1 + 2)
    await flush(5)
    expect(spy.reads).toBe(3)
    await it.return!()
    expect(spy.returns).toBe(1)
  })

  test('qsize 0 hands each item over with no buffer', async () => {
    const { source, spy } = spiedSyncSource(100)
    const it = pipe(
      source,
      mapStage(async (n: number) => n, { qsize: 0 }),
    ).results()
    const got: number[] = []
    for (let i = 0; i < 5; i++) {
      got.push((await it.next()).value as number)
      await flush()
      // the one worker holds exactly one finished item, waiting for the consumer
      expect(spy.reads).toBe(got.length + 1)
    }
    expect(got).toEqual([0, 1, 2, 3, 4])
    await it.return!()
  })

  test('qsize Infinity lets a stage run ahead of a consumer that does not read', async () => {
    const { source, spy } = spiedSyncSource(1000)
    const it = pipe(
      source,
      mapStage(async (n: number) => n, { workers: 2, qsize: Number.POSITIVE_INFINITY }),
    ).results()
    const first = it.next()
    await flush(5)
    expect(spy.reads).toBe(1000)
    expect(spy.exhausted).toBe(true)
    expect((await first).value).toBe(0)
    const rest: number[] = []
    for await (const n of it) rest.push(n)
    expect(sorted([0, ...rest])).toEqual(numbers(1000))
  })
})

describe('waiting for room', () => {
  /**
   * Runs 300 items through a stage of 16 workers whose items take 1 ms (on a clock the test moves)
   * and finish in a scrambled order, into a queue of 16 in front of a slower stage of 1 worker.
   * Says, for each item, how many items finished the first stage after it yet reached the second
   * before it.
   */
  async function overtakes(slowMs: number): Promise<number[]> {
    const clock = { now: 0 }
    const finished: number[] = []
    const started: number[] = []
    const first = mapStage(
      (n: number) => {
        clock.now += slowMs
        return ticks(jitter(n) * 3).then(() => {
          finished.push(n)
          return n
        })
      },
      { workers: 16, qsize: 16 },
    )
    const second = mapStage(
      async (n: number) => {
        started.push(n)
        await ticks(12)
        return n
      },
      { workers: 1 },
    )
    const exec = new Execution(pipe(numbers(300), first, second).plan, { clock: () => clock.now })
    await drain(exec, () => {})
    const finishedAt = new Map(finished.map((n, i) => [n, i]))
    const startedAt = new Map(started.map((n, i) => [n, i]))
    return numbers(300).map(
      (n) =>
        started.filter(
          (m) => finishedAt.get(m)! > finishedAt.get(n)! && startedAt.get(m)! < startedAt.get(n)!,
        ).length,
    )
  }

  test('random chains of slow and fast stages, some taking turns and some overtaking, move every item exactly once', async () => {
    // the rule only changes which producer goes first: whatever the mix, nothing is lost,
    // duplicated or left waiting
    const stagePlan = fc.record({
      slow: fc.boolean(),
      async: fc.boolean(),
      workers: fc.integer({ min: 1, max: 6 }),
      qsize: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(16)),
      salt: fc.integer({ min: 0, max: 100 }),
    })
    const plan = fc.record({
      n: fc.integer({ min: 0, max: 150 }),
      stages: fc.array(stagePlan, { minLength: 1, maxLength: 3 }),
      consumerTicks: fc.integer({ min: 0, max: 6 }),
      accounting: fc.boolean(),
    })
    await fc.assert(
      fc.asyncProperty(plan, async (p) => {
        const clock = { now: 0 }
        const stages = p.stages.map((sp) =>
          mapStage(
            (n: number) => {
              if (sp.slow) clock.now += 1
              if (!sp.async) return n
              return ticks((n * 7 + sp.salt) % 5).then(() => n)
            },
            { workers: sp.workers, qsize: sp.qsize },
          ),
        )
        const out: number[] = []
        const exec = new Execution(pipe(numbers(p.n), ...stages).plan, {
          clock: () => clock.now,
          accounting: p.accounting,
        })
        await settlesWithin(
          drain(exec, (x) => {
            out.push(x as number)
            return p.consumerTicks > 0 ? ticks(p.consumerTicks) : undefined
          }),
          'the run',
          p,
        )
        expect(sorted(out)).toEqual(numbers(p.n))
        if (p.accounting) {
          // the time books stay whole too: no total below zero, nobody left working
          for (const st of snapshot(exec).stages) {
            expect(Math.min(st.workingMs, st.starvedMs, st.blockedMs)).toBeGreaterThanOrEqual(0)
            expect(st.busy).toBe(0)
          }
        }
      }),
      { numRuns: Number(process.env.HUNT ?? 150) },
    )
  })

  test('results of a slow stage wait their turn: none is overtaken by more than the stage has workers', async () => {
    // a producer that finds the queue full parks; one whose result comes later must not take the
    // room first, or a parked result can wait without bound (the p99 of a chain of fetches)
    const slow = await overtakes(1)
    expect(Math.max(...slow)).toBeLessThanOrEqual(16)
    // a fast stage's results do overtake parked ones (here by over a hundred): fairness there would
    // cost a park an item, and its results wait microseconds either way
    const fast = await overtakes(0)
    expect(Math.max(...fast)).toBeGreaterThan(16)
  })
})

describe('running', () => {
  test('nothing runs before the pipeline is read', async () => {
    let sourceCalls = 0
    let stageCalls = 0
    const p = pipe(
      () => {
        sourceCalls++
        return numbers(3)
      },
      mapStage((n: number) => {
        stageCalls++
        return n
      }),
    )
    const it = p.results()
    const it2 = p[Symbol.asyncIterator]()
    await flush()
    expect([sourceCalls, stageCalls]).toEqual([0, 0])
    expect(await it.next()).toEqual({ value: 0, done: false })
    expect(sourceCalls).toBe(1)
    await it.return!()
    await it2.return!()
    expect(sourceCalls).toBe(1)
  })

  test('results() twice on a re-iterable source runs the pipeline twice', async () => {
    let sourceCalls = 0
    let stageCalls = 0
    const p = pipe(
      () => {
        sourceCalls++
        return numbers(10)
      },
      mapStage((n: number) => {
        stageCalls++
        return n + 1
      }),
    )
    const a: number[] = []
    for await (const n of p.results()) a.push(n)
    const b: number[] = []
    for await (const n of p.results()) b.push(n)
    expect(a).toEqual(numbers(10).map((n) => n + 1))
    expect(b).toEqual(a)
    expect(sourceCalls).toBe(2)
    expect(stageCalls).toBe(20)
    // an array is re-iterable too
    const q = pipe(
      [1, 2],
      mapStage((n: number) => n),
    )
    expect(await q.toArray()).toEqual([1, 2])
    expect(await q.toArray()).toEqual([1, 2])
  })

  test('execute() resolves to the last output, or undefined when there is none', async () => {
    const last = await pipe(
      numbers(10),
      mapStage((n: number) => n * 10),
    ).execute()
    expect(last).toBe(90)
    const none = await pipe(
      [] as number[],
      mapStage((n: number) => n * 10),
    ).execute()
    expect(none).toBeUndefined()
    const filtered = await pipe(
      numbers(10),
      stage(async function* negatives(xs: AsyncIterable<number>) {
        for await (const x of xs) if (x < 0) yield x
      }),
    ).execute()
    expect(filtered).toBeUndefined()
  })

  test('a stage that sums gives one result via execute() (parallelpipe)', async () => {
    const sum = stage(async function* sum(xs: AsyncIterable<number>) {
      let total = 0
      for await (const x of xs) total += x
      yield total
    })
    const total = await pipe(
      numbers(1000),
      mapStage(async (n: number) => n, { workers: 4 }),
      sum,
    ).execute()
    expect(total).toBe(499500)
  })

  test('toArray() collects every output in the order it came out', async () => {
    const out = await pipe(
      ['a', 'b', 'c'],
      mapStage((s: string) => s.toUpperCase()),
    ).toArray()
    expect(out).toEqual(['A', 'B', 'C'])
  })

  test('a middle stage that waits before reading still gives the right output (parallelpipe)', async () => {
    const go = defer()
    let readsBeforeGo = -1
    const { source, spy } = spiedSyncSource(300)
    const waits = stage(
      async function* waits(xs: AsyncIterable<number>) {
        await go.promise
        for await (const x of xs) yield x
      },
      { workers: 2 },
    )
    const run = pipe(
      source,
      mapStage(async (n: number) => n + 1, { workers: 3, qsize: 5 }),
      waits,
      mapStage((n: number) => n),
    ).toArray()
    await flush(5)
    readsBeforeGo = spy.reads
    go.resolve()
    const out = await run
    // the first stage filled its queue and stopped, then resumed once the middle stage read
    expect(readsBeforeGo).toBe(5 + 3)
    expect(sorted(out)).toEqual(numbers(300).map((n) => n + 1))
  })

  test('a pipeline is an AsyncIterable that Readable.from() accepts', async () => {
    const p = pipe(
      numbers(50),
      mapStage(async (n: number) => n * 2, { workers: 2, ordered: true }),
    )
    const out: number[] = []
    for await (const n of Readable.from(p)) out.push(n as number)
    expect(out).toEqual(numbers(50).map((n) => n * 2))
  })

  test('Readable.from() on a pipeline closes the run when the stream is destroyed', async () => {
    const { source, spy } = spiedSyncSource(1000)
    const signals: AbortSignal[] = []
    const p = pipe(
      source,
      mapStage(async (n: number, { signal }) => {
        signals.push(signal)
        return n
      }),
    )
    const readable = Readable.from(p)
    for await (const n of readable) {
      if (n === 3) break
    }
    await flush()
    expect(spy.returns).toBe(1)
    expect(signals.every((s) => s.aborted)).toBe(true)
  })

  test('a pipeline is a source for it-pipe', async () => {
    const p = pipe(
      numbers(20),
      mapStage((n: number) => n + 1, { workers: 2, ordered: true }),
    )
    const out = await itPipe(p, async (src) => {
      const all: number[] = []
      for await (const n of src) all.push(n)
      return all
    })
    expect(out).toEqual(numbers(20).map((n) => n + 1))
  })

  test('a stage serves as a plain transform inside it-pipe', async () => {
    const square = mapStage((n: number) => n * n, { workers: 2, ordered: true })
    const titles = stage(async function* evens(xs: AsyncIterable<number>) {
      for await (const x of xs) if (x % 2 === 0) yield x
    })
    const out = await itPipe(numbers(10), square.transform, titles.transform, async (src) => {
      const all: number[] = []
      for await (const n of src) all.push(n)
      return all
    })
    expect(out).toEqual([0, 4, 16, 36, 64])
  })

  test('pipeline.pipe() returns a new pipeline with the stages appended, leaving the first unchanged', async () => {
    const inc = mapStage((n: number) => n + 1)
    const base = pipe([1, 2, 3], inc)
    const longer = base.pipe(inc, inc).pipe(mapStage((n: number) => `${n}`))
    expect(longer).toBeInstanceOf(Pipeline)
    expect(longer).not.toBe(base)
    expect(await base.toArray()).toEqual([2, 3, 4])
    expect(await longer.toArray()).toEqual(['4', '5', '6'])
    expect(longer.stageNames).toEqual(['stage1', 'stage2', 'stage3', 'stage4'])
  })

  test('a source function is called once per run, and may return an async iterable', async () => {
    let calls = 0
    const p = pipe(
      async function* () {
        calls++
        yield* [1, 2, 3]
      },
      mapStage((n: number) => n * 2),
    )
    expect(await p.toArray()).toEqual([2, 4, 6])
    expect(await p.execute()).toBe(6)
    expect(calls).toBe(2)
  })
})

describe('names', () => {
  test('a stage is named after its function, by position, or explicitly', () => {
    const named = mapStage(function double(n: number) {
      return n * 2
    })
    const anonymous = mapStage((n: number) => n)
    const explicit = mapStage((n: number) => n, { name: 'explicit' })
    const p = pipe(
      [1],
      named,
      anonymous,
      explicit,
      stage(async function* (xs: AsyncIterable<number>) {
        yield* xs
      }),
    )
    expect(p.stageNames).toEqual(['double', 'stage2', 'explicit', 'stage4'])
    expect(named.name).toBe('double')
    expect(anonymous.name).toBeUndefined()
  })
})

describe('concurrent reads', () => {
  test('concurrent next() calls on results() each get a different item', async () => {
    const it = pipe(
      numbers(6),
      mapStage(async (n: number) => n, { workers: 2 }),
    ).results()
    const batch = await Promise.all([it.next(), it.next(), it.next(), it.next()])
    const rest: number[] = []
    for await (const n of it) rest.push(n)
    const first = batch.map((r) => r.value as number)
    expect(sorted([...first, ...rest])).toEqual(numbers(6))
  })

  test('a generator stage may read its input with concurrent next() calls', async () => {
    const pairs = stage(
      async function* pairs(xs: AsyncIterable<number>) {
        const it = xs[Symbol.asyncIterator]()
        for (;;) {
          const [a, b] = await Promise.all([it.next(), it.next()])
          if (!a.done) yield a.value
          if (!b.done) yield b.value
          if (a.done || b.done) return
        }
      },
      { workers: 2 },
    )
    const { source } = spiedAsyncSource(101, { ticks: jitter })
    const out = await pipe(source, pairs).toArray()
    expect(sorted(out)).toEqual(numbers(101))
  })

  test('a generator worker that gives up while a read is pending loses no item for the others', async () => {
    // worker 0 races its input against a deadline that has already passed, and returns: its
    // pending next() must not swallow an item that worker 1 would otherwise have read
    const gate = defer()
    const giveUp = stage(
      async function* giveUp(xs: AsyncIterable<number>, { worker }: { worker: number }) {
        const it = xs[Symbol.asyncIterator]()
        if (worker === 0) {
          const r = await Promise.race([it.next(), Promise.resolve('deadline' as const)])
          if (r === 'deadline') return
          if (!r.done) yield r.value
        }
        for (let r = await it.next(); !r.done; r = await it.next()) yield r.value
      },
      { workers: 2 },
    )
    const { source } = spiedAsyncSource(20, { gate: (i) => (i === 0 ? gate.promise : undefined) })
    const run = pipe(source, giveUp).toArray()
    await flush()
    gate.resolve()
    expect(sorted(await run)).toEqual(numbers(20))
  })
})

/**
 * Time accounting: every stage's worker-milliseconds working, starved (waiting for input) and
 * blocked (holding a result with no room downstream), kept by the port from where lanes park and
 * wake. Asserted through an injected clock that only the test moves, never the wall clock: a stage
 * function "takes" time by moving the clock forward.
 */
import { describe, expect, test } from 'vitest'
import { drain } from '../lib/engine/consumer.js'
import { Execution } from '../lib/engine/execution.js'
import { snapshot } from '../lib/engine/stats.js'
import { TimeBook, type TimeTotals } from '../lib/engine/time.js'
import { batch, flatMap, mapStage, type Pipeline, pipe, type StageStats, stage } from '../lib/index.js'
import { numbers, recordUnhandledRejections } from './helpers/instruments.js'

recordUnhandledRejections()

/** A clock that moves only when the test says so. */
function fakeClock() {
  const c = { now: 1000, read: () => c.now }
  return c
}

/** Runs `p` to the end with `clock`, calling `each` per output; resolves to the final stats. */
async function run(p: Pipeline<unknown>, clock: () => number, each: (x: unknown) => unknown = () => {}) {
  const exec = new Execution(p.plan, { clock, accounting: true })
  await drain(exec, each)
  return snapshot(exec)
}

function shares(s: StageStats) {
  const all = s.workingMs + s.starvedMs + s.blockedMs
  return { working: s.workingMs / all, starved: s.starvedMs / all, blocked: s.blockedMs / all }
}

describe('TimeBook', () => {
  test('integrates the units in each state over the clock', () => {
    const c = fakeClock()
    const book = new TimeBook(c.read)
    book.start()
    book.start()
    c.now += 10 // two working
    book.move(0, 1)
    c.now += 5 // one working, one starved
    book.move(0, 2)
    c.now += 4 // one starved, one blocked
    book.stop(1)
    c.now += 3 // one blocked
    expect(book.read()).toEqual({ workingMs: 25, starvedMs: 9, blockedMs: 7 })
    expect(book.working).toBe(0)
  })

  test('a kind that counts its own units sets them; the rest of its units are starved', () => {
    const c = fakeClock()
    const book = new TimeBook(c.read)
    book.set(3, 1, 8)
    c.now += 2
    book.set(0, 0, 8)
    c.now += 1
    expect(book.read()).toEqual({ workingMs: 6, starvedMs: 8 + 8, blockedMs: 2 })
  })
})

describe('time accounting in a run', () => {
  test('a stage that is the bottleneck works all the time', async () => {
    const c = fakeClock()
    const slow = mapStage(
      (n: number) => {
        c.now += 1 // 1 ms of work per item
        return n
      },
      { name: 'slow' },
    )
    const s = (await run(pipe(numbers(200), slow), c.read)).stages[0]!
    expect(s.workingMs).toBeCloseTo(200)
    expect(s.starvedMs).toBe(0)
    expect(s.blockedMs).toBe(0)
    expect(s.busyShare).toBe(1)
  })

  test('a stage fed slower than it works is starved (upstream is the limit)', async () => {
    const c = fakeClock()
    async function* source() {
      for (let i = 0; i < 50; i++) {
        c.now += 9 // the source takes 9 ms per item
        yield i
      }
    }
    const quick = mapStage(
      (n: number) => {
        c.now += 1
        return n
      },
      { name: 'quick' },
    )
    const s = (await run(pipe(source(), quick), c.read)).stages[0]!
    const sh = shares(s)
    expect(sh.working).toBeCloseTo(0.1, 2)
    expect(sh.starved).toBeCloseTo(0.9, 2)
    expect(s.blockedMs).toBe(0)
  })

  test('a stage whose consumer is slower is blocked (downstream is the limit)', async () => {
    const c = fakeClock()
    const quick = mapStage(
      (n: number) => {
        c.now += 1
        return n
      },
      { name: 'quick', qsize: 1 },
    )
    const s = (
      await run(pipe(numbers(100), quick), c.read, () => {
        c.now += 4 // the consumer takes 4 ms per item
      })
    ).stages[0]!
    const sh = shares(s)
    expect(sh.working).toBeCloseTo(0.2, 1)
    expect(sh.blocked).toBeCloseTo(0.8, 1)
  })

  test('a generator or flatMap step that works again once room is made counts that as working', async () => {
    // each result takes 1 ms to make after the one before found room; the consumer takes 4 ms an item
    const c = fakeClock()
    const gen = stage(
      async function* gen(xs: AsyncIterable<number>) {
        // one input item, 100 results: each made before the generator reads its input again
        for await (const n of xs) {
          for (let i = 0; i < 100; i++) {
            c.now += 1
            yield n + i
          }
        }
      },
      { name: 'gen', qsize: 1 },
    )
    const g = (await run(pipe(numbers(1), gen), c.read, () => (c.now += 4))).stages[0]!
    expect(shares(g).working).toBeCloseTo(0.2, 1)
    expect(shares(g).blocked).toBeCloseTo(0.8, 1)

    const d = fakeClock()
    const fm = flatMap(
      function* each(n: number) {
        for (let i = 0; i < 10; i++) {
          d.now += 1
          yield n + i
        }
      },
      { name: 'each', qsize: 1 },
    )
    const f = (await run(pipe(numbers(10), fm), d.read, () => (d.now += 4))).stages[0]!
    expect(shares(f).working).toBeCloseTo(0.2, 1)
    expect(shares(f).blocked).toBeCloseTo(0.8, 1)
  })

  test('a worker that parks again before it takes another item stays counted once', async () => {
    // an array's results sent one after the other, each waiting for room: the book's counts stay
    // whole (no worker counted twice, none left blocked after the run)
    const c = fakeClock()
    const fm = flatMap(
      (n: number) => {
        c.now += 10
        return [n, n, n, n, n]
      },
      { name: 'five', qsize: 1 },
    )
    const f = (await run(pipe(numbers(20), fm), c.read, () => (c.now += 1))).stages[0]!
    expect(f.busy).toBe(0)
    // one worker, so its three totals add up to its life: 20 x 10 ms of work and most of the 100 x
    // 1 ms the consumer takes (it reads the last items after the worker has ended)
    const life = f.workingMs + f.starvedMs + f.blockedMs
    expect(life).toBeGreaterThanOrEqual(290)
    expect(life).toBeLessThanOrEqual(300)
    expect(f.workingMs).toBeCloseTo(200, 0)
    expect(f.blockedMs).toBeGreaterThan(0)
  })

  test('with several workers, time is worker-time: an async stage of 4 waiting on a slow source', async () => {
    const c = fakeClock()
    const gates: (() => void)[] = []
    const work = mapStage(
      async (n: number) => {
        await new Promise<void>((resolve) => gates.push(resolve))
        return n
      },
      { workers: 4, name: 'work' },
    )
    const exec = new Execution(pipe(numbers(8), work).plan, { clock: c.read, accounting: true })
    const done = drain(exec, () => {})
    await new Promise((r) => setImmediate(r))
    // four workers each hold an item: all working
    expect(snapshot(exec).stages[0]!.busy).toBe(4)
    c.now += 10
    for (const g of gates.splice(0)) g()
    await new Promise((r) => setImmediate(r))
    c.now += 10
    for (const g of gates.splice(0)) g()
    await done
    const s = snapshot(exec).stages[0]!
    expect(s.workers).toBe(4)
    expect(s.workingMs).toBeCloseTo(80) // 4 workers x 20 ms
    expect(s.busy).toBe(0)
  })

  test('a retry delay, a rate limit and init/dispose count as working (the worker holds its item)', async () => {
    const c = fakeClock()
    let tries = 0
    const flaky = mapStage(
      (n: number) => {
        c.now += 1
        if (n === 0 && tries++ === 0) throw new Error('once')
        return n
      },
      {
        retries: 1,
        init: () => {
          c.now += 5
          return undefined
        },
        dispose: () => {
          c.now += 5
        },
        name: 'flaky',
      },
    )
    const s = (await run(pipe(numbers(10), flaky), c.read)).stages[0]!
    expect(s.workingMs).toBeCloseTo(5 + 11 + 5)
    expect(s.starvedMs + s.blockedMs).toBe(0)
  })

  test('generator, batch and flatMap stages are accounted the same way', async () => {
    const c = fakeClock()
    async function* source() {
      for (let i = 0; i < 40; i++) {
        c.now += 3
        yield i
      }
    }
    const gen = stage(async function* gen(xs: AsyncIterable<number>) {
      for await (const x of xs) {
        c.now += 1
        yield x
      }
    })
    const stats = await run(
      pipe(
        source(),
        gen,
        batch<number>(4),
        flatMap((b: number[]) => b),
      ),
      c.read,
    )
    const [g, b, f] = stats.stages
    // the generator works 1 ms of every 4 and waits on the source the rest
    expect(shares(g!).working).toBeCloseTo(0.25, 1)
    // batch and flatMap never work (their steps take no time): starved all along
    expect(b!.workingMs).toBe(0)
    expect(f!.workingMs).toBe(0)
    for (const s of [g!, b!, f!]) expect(s.workingMs + s.starvedMs + s.blockedMs).toBeCloseTo(160, 0)
  })

  test('fused synchronous stages count their time in the stage whose function runs', async () => {
    const c = fakeClock()
    const a = mapStage(
      (n: number) => {
        c.now += 1
        return n
      },
      { name: 'a' },
    )
    const b = mapStage(
      (n: number) => {
        c.now += 3
        return n
      },
      { name: 'b' },
    )
    const stats = await run(pipe(numbers(100), a, b), c.read)
    const [sa, sb] = stats.stages
    // b's calls ran inside a's worker (fusion), yet each stage shows its own function's time
    expect(sa!.workingMs).toBeCloseTo(100, -1)
    expect(sb!.workingMs).toBeCloseTo(300, -1)
    expect(sa!.workingMs + sa!.starvedMs + sa!.blockedMs).toBeCloseTo(400, 0)
  })

  test('busyShare is the working share since the previous snapshot', async () => {
    const c = fakeClock()
    let gate!: () => void
    const waiting = new Promise<void>((r) => {
      gate = r
    })
    const two = mapStage(
      async (n: number) => {
        if (n === 1) await waiting
        return n
      },
      { name: 'two' },
    )
    const exec = new Execution(pipe([0, 1], two).plan, { clock: c.read, accounting: true })
    const done = drain(exec, () => {})
    await new Promise((r) => setImmediate(r))
    c.now += 10
    const since: TimeTotals[] = []
    expect(snapshot(exec, since).stages[0]!.busyShare).toBe(1) // holding item 1 all along
    gate()
    await done
    c.now += 10
    expect(snapshot(exec, since).stages[0]!.busyShare).toBe(0) // exited: no unit time at all since
  })

  test('each watcher gets busyShare since its own previous snapshot', async () => {
    const c = fakeClock()
    let gate!: () => void
    const held = new Promise<void>((r) => {
      gate = r
    })
    const one = mapStage(async (n: number) => {
      await held
      return n
    })
    const exec = new Execution(pipe([0], one).plan, { clock: c.read, accounting: true })
    const done = drain(exec, () => {})
    await new Promise((r) => setImmediate(r))
    const a: TimeTotals[] = []
    c.now += 10
    expect(snapshot(exec, a).stages[0]!.busyShare).toBe(1)
    gate()
    await done
    c.now += 10
    // the watcher that looked at 10 ms sees no unit time since; one that never looked sees it all
    expect(snapshot(exec, a).stages[0]!.busyShare).toBe(0)
    expect(snapshot(exec, []).stages[0]!.busyShare).toBe(1)
  })

  test('a run whose stats nobody can read keeps no time book', async () => {
    let reads = 0
    const exec = new Execution(
      pipe(
        numbers(100),
        mapStage((n: number) => n, { qsize: 1 }),
      ).plan,
      {
        clock: () => ++reads,
      },
    )
    const book = exec.stages[0]!.book
    await drain(exec, () => {})
    const before = reads
    expect(book.read().workingMs).toBe(0)
    expect(reads - before).toBe(1) // only the read above: no park or wake read the clock
  })
})

describe('time figures through the public stats', () => {
  test('a background run reports worker time that adds up to its workers over the elapsed time', async () => {
    const r = pipe(
      numbers(50),
      mapStage(async (n: number) => n, { workers: 3, name: 'w' }),
    ).start()
    await r.done
    const s = r.stats().stages[0]!
    expect(s.workers).toBe(3)
    expect(s.bound).toBe(3)
    expect(s.workingMs).toBeGreaterThanOrEqual(0)
    expect(s.starvedMs).toBeGreaterThanOrEqual(0)
    expect(s.blockedMs).toBeGreaterThanOrEqual(0)
    expect(s.busyShare).toBeGreaterThanOrEqual(0)
    expect(s.busyShare).toBeLessThanOrEqual(1)
    expect(s.busy).toBe(0)
  })
})

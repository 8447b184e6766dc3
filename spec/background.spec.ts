import { describe, expect, test } from 'vitest'
import { type Feed, feed, mapStage, pipe, RunStopped, TaskException } from '../lib/index.js'
import {
  abortListeners,
  defer,
  flush,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  sorted,
  spiedSyncSource,
  whenAborted,
} from './helpers/instruments.js'

recordUnhandledRejections()

describe('pipeline.start()', () => {
  test('a started run consumes its own outputs, reports them to onResult, and stop() waits for all', async () => {
    const input = feed<number>({ capacity: 5 })
    const seen: number[] = []
    const run = pipe(
      input,
      mapStage(async (n: number) => n * 2, { workers: 3 }),
    ).start({
      onResult: (n) => {
        seen.push(n)
      },
    })
    expect(run.alive).toBe(true)
    await input.pushAll(numbers(100))
    await run.stop()
    expect(run.alive).toBe(false)
    expect(sorted(seen)).toEqual(numbers(100).map((n) => n * 2))
    expect(input.closed).toBe(true)
  })

  test('done resolves to the last output, without anyone reading the outputs', async () => {
    const run = pipe(
      [1, 2, 3],
      mapStage((n: number) => n + 1),
    ).start()
    expect(await run.done).toBe(4)
    expect(run.alive).toBe(false)
    expect(
      await pipe(
        [],
        mapStage((n: number) => n),
      ).start().done,
    ).toBeUndefined()
  })

  test('an async onResult is waited for before the next output (backpressure)', async () => {
    let inside = 0
    let overlapped = false
    const run = pipe(
      numbers(20),
      mapStage(async (n: number) => n, { workers: 4 }),
    ).start({
      onResult: async () => {
        if (++inside > 1) overlapped = true
        await flush(1)
        inside--
      },
    })
    await run.done
    expect(overlapped).toBe(false)
  })

  test('an error in a background run is never lost: done and stop() reject, alive turns false', async () => {
    const run = pipe(
      numbers(10),
      mapStage(function bad(n: number) {
        if (n === 5) throw new Error('bg failure')
        return n
      }),
    ).start()
    const err = await rejectionOf(run.stop())
    expect(err).toBeInstanceOf(TaskException)
    expect((err as TaskException).message).toBe('The task "bad-0" raised Error: bg failure')
    expect(await rejectionOf(run.done)).toBe(err)
    expect(run.alive).toBe(false)
  })

  test('a failed run whose done is never awaited leaves no unhandled rejection', async () => {
    const run = pipe(
      [1],
      mapStage((): number => {
        throw new Error('nobody listens')
      }),
    ).start()
    await flush(5)
    expect(run.alive).toBe(false)
  })

  test('an onResult that throws fails the run with stage "onResult"', async () => {
    const run = pipe(
      [1, 2],
      mapStage((n: number) => n),
    ).start({
      onResult: () => {
        throw new Error('sink full')
      },
    })
    const err = (await rejectionOf(run.done)) as TaskException
    expect(err.stage).toBe('onResult')
    expect(err.item).toBe(1)
  })

  test('stop() on an iterable source stops pulling it, closes it, and finishes the items taken in', async () => {
    const { source, spy } = spiedSyncSource(numbers(1_000_000))
    const gate = defer()
    let finished = 0
    const run = pipe(
      source,
      mapStage(
        async (n: number) => {
          await gate.promise
          finished++
          return n
        },
        { workers: 4 },
      ),
    ).start()
    await flush(2)
    const taken = spy.reads
    expect(taken).toBe(4)
    const stopped = run.stop()
    gate.resolve()
    await stopped
    expect(finished).toBe(taken)
    expect(spy.returns).toBe(1)
  })

  test('abort() drops in-flight work, signals it, resolves once settled; done rejects with the reason', async () => {
    const signals: AbortSignal[] = []
    const run = pipe(
      numbers(100),
      mapStage(
        async (n: number, { signal }) => {
          signals.push(signal)
          await whenAborted(signal)
          return n
        },
        { workers: 3 },
      ),
    ).start()
    await flush(2)
    const reason = new Error('enough')
    await run.abort(reason)
    expect(signals.length).toBe(3)
    expect(signals.every((s) => s.aborted && s.reason === reason)).toBe(true)
    expect(await rejectionOf(run.done)).toBe(reason)
    expect(await rejectionOf(run.stop())).toBe(reason)
    expect(run.alive).toBe(false)
  })

  test('abort() without a reason rejects done with a RunStopped', async () => {
    const input = feed<number>()
    const run = pipe(
      input,
      mapStage((n: number) => n),
    ).start()
    await run.abort()
    expect(await rejectionOf(run.done)).toBeInstanceOf(RunStopped)
  })

  test("the caller's signal aborts a started run, and its listener is removed afterwards", async () => {
    const c = new AbortController()
    const input = feed<number>()
    const run = pipe(
      input,
      mapStage((n: number) => n),
    ).start({ signal: c.signal })
    expect(abortListeners(c.signal)).toBe(1)
    c.abort(new Error('shutdown'))
    expect(((await rejectionOf(run.done)) as Error).message).toBe('shutdown')
    expect(abortListeners(c.signal)).toBe(0)
  })

  test('await using stops the run gracefully at the end of the block', async () => {
    const input = feed<number>()
    const seen: number[] = []
    let alive: boolean
    {
      await using run = pipe(
        input,
        mapStage((n: number) => n),
      ).start({ onResult: (n) => void seen.push(n) })
      await input.pushAll([1, 2, 3])
      alive = run.alive
    }
    expect(alive).toBe(true)
    expect(seen).toEqual([1, 2, 3])
    expect(input.closed).toBe(true)
  })

  test('stats() and onProgress report a started run', async () => {
    const input = feed<number>()
    const snapshots: number[] = []
    const run = pipe(
      input,
      mapStage((n: number) => n, { name: 'id' }),
    ).start({
      onProgress: (s) => snapshots.push(s.itemsOut),
      progressInterval: 5,
    })
    await input.pushAll([1, 2, 3])
    input.end()
    await run.done
    const s = run.stats()
    expect(s.state).toBe('done')
    expect(s.itemsOut).toBe(3)
    expect(s.stages[0]).toMatchObject({ name: 'id', in: 3, out: 3 })
    // the final report comes when the run ends
    expect(snapshots.at(-1)).toBe(3)
  })

  test('onResult is never called before start() has returned the run it may stop', async () => {
    const seen: string[] = []
    // a bucket of capacity 0 and a synchronous stage: the first output is ready during start()
    const run = pipe(
      async (bucket: Feed<number>) => {
        for (let i = 0; i < 3; i++) await bucket.push(i)
      },
      mapStage((n: number) => n),
    ).start({
      onResult: (n) => {
        // run is in its temporal dead zone until start() returns: reading it earlier throws
        if (n === 0) void run.abort()
        seen.push(`run ${n}`)
      },
    })
    await expect(run.done).rejects.toBeInstanceOf(RunStopped)
    expect(seen).toEqual(['run 0'])
  })

  test('bad start() options are refused at once', () => {
    const p = pipe(
      [1],
      mapStage((n: number) => n),
    )
    expect(() => p.start({ daemon: 'yes' } as never)).toThrow(/`daemon` to be true or false/)
    expect(() => p.start({ onResult: 3 } as never)).toThrow(/`onResult` to be a function/)
    expect(() => p.start({ deamon: true } as never)).toThrow(/unknown option `deamon`/)
    expect(() => p.start({ progressInterval: 0 } as never)).toThrow(/`progressInterval`/)
  })

  test.each([[5], [null], ['daemon'], [true], [[{ daemon: true }]]])(
    'start(%o) is refused as toArray() refuses it: options are an object',
    async (bad) => {
      const p = pipe([1])
      expect(() => p.start(bad as never)).toThrow(TypeError)
      expect(() => p.start(bad as never)).toThrow(/^start\(\): expected an options object, got /)
      await expect(p.toArray(bad as never)).rejects.toThrow(/^toArray\(\): expected an options object, got /)
      await expect(p.execute(bad as never)).rejects.toThrow(/^execute\(\): expected an options object, got /)
      await expect(p.results(bad as never).next()).rejects.toThrow(
        /^results\(\): expected an options object, got /,
      )
    },
  )
})

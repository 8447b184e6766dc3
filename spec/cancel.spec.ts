import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, test } from 'vitest'
import { mapStage, pipe, RunStopped, type StageContext, skip, stage, TaskException } from '../lib/index.js'
import {
  abortListeners,
  defer,
  flush,
  numbers,
  recordUnhandledRejections,
  rejectionOf,
  spiedAsyncSource,
  spiedSyncSource,
  ticks,
  untilAborted,
  whenAborted,
} from './helpers/instruments.js'

recordUnhandledRejections()

const jitter = (n: number): number => (n * 7919) % 5

describe('breaking out of for await', () => {
  test('break closes the source once and stops the one worker after exactly one more call', async () => {
    const { source, spy } = spiedSyncSource(1000)
    let calls = 0
    const signals = new Set<AbortSignal>()
    const p = pipe(
      source,
      mapStage(
        async (n: number, { signal }: StageContext) => {
          calls++
          signals.add(signal)
          await ticks(1)
          return n
        },
        { qsize: 0 },
      ),
    )
    let callsAtBreak = -1
    for await (const n of p) {
      expect(n).toBe(0)
      // the worker handed item 0 over and has already started on item 1
      callsAtBreak = calls
      break
    }
    expect(callsAtBreak).toBe(2)
    expect(spy.returns).toBe(1)
    expect(spy.finalized).toBe(1)
    expect([...signals].every((s) => s.aborted && s.reason instanceof RunStopped)).toBe(true)
    await flush(5)
    expect(calls).toBe(2)
    expect(spy.reads).toBe(2)
    expect(spy.nextAfterEnd).toBe(0)
  })

  test('after a break no stage function of a busy chain is called again', async () => {
    const { source, spy } = spiedAsyncSource(10_000, { ticks: jitter })
    const calls = [0, 0, 0]
    const contexts: StageContext[] = []
    const step = (i: number, workers: number) =>
      mapStage(
        async (n: number, ctx: StageContext) => {
          if (calls[i]++ === 0 || ctx.worker > 0) contexts.push(ctx)
          await ticks(jitter(n + i))
          return n
        },
        { workers, qsize: 2 },
      )
    let seen = 0
    let atBreak: number[] = []
    for await (const _ of pipe(source, step(0, 3), step(1, 2), step(2, 4))) {
      if (++seen === 50) {
        atBreak = [...calls]
        break
      }
    }
    expect(spy.returns).toBe(1)
    expect(contexts.every((c) => c.signal.aborted && c.signal.reason instanceof RunStopped)).toBe(true)
    await flush(5)
    expect(calls).toEqual(atBreak)
    expect(spy.nextAfterEnd).toBe(0)
    await flush()
    expect(spy.finalized).toBe(1)
  })

  test('return() on the results iterator stops the run the same way', async () => {
    const { source, spy } = spiedSyncSource(100)
    let calls = 0
    const it = pipe(
      source,
      mapStage((n: number) => {
        calls++
        return n
      }),
    ).results()
    expect(await it.next()).toEqual({ value: 0, done: false })
    const at = calls
    expect(await it.return!()).toEqual({ value: undefined, done: true })
    expect(spy.returns).toBe(1)
    expect(await it.next()).toEqual({ value: undefined, done: true })
    await flush()
    expect(calls).toBe(at)
  })

  test('return() before the first next() starts nothing', async () => {
    let opened = 0
    const it = pipe(() => {
      opened++
      return [1, 2, 3]
    }).results()
    expect(await it.return!()).toEqual({ value: undefined, done: true })
    expect(await it.next()).toEqual({ value: undefined, done: true })
    expect(opened).toBe(0)
  })

  test('return() while next() calls are pending ends them as done', async () => {
    const gate = defer()
    const it = pipe(
      numbers(10),
      mapStage(async (n: number, { signal }: StageContext) => {
        await untilAborted(gate.promise, signal)
        return n
      }),
    ).results()
    const a = it.next()
    const b = it.next()
    await flush()
    await it.return!()
    expect(await a).toEqual({ value: undefined, done: true })
    expect(await b).toEqual({ value: undefined, done: true })
    gate.resolve()
  })

  test('a break while a worker ignores its signal returns within the grace period, the worker still pending', async () => {
    const stuck = defer<number>()
    let calls = 0
    const p = pipe(
      numbers(100),
      mapStage(
        async (n: number) => {
          calls++
          if (n === 1) return stuck.promise
          return n
        },
        { workers: 2, qsize: 0 },
      ),
    )
    for await (const _ of p) break
    expect(stuck.settled).toBe(false)
    const at = calls
    stuck.reject(new Error('late, after the break'))
    await flush(3)
    expect(calls).toBe(at)
  })
})

describe("the caller's signal", () => {
  test('aborting it rejects results() with the signal reason and stops every worker', async () => {
    const controller = new AbortController()
    const reason = new Error('cancelled by caller')
    const { source, spy } = spiedSyncSource(1000)
    const signals = new Set<AbortSignal>()
    let calls = 0
    const p = pipe(
      source,
      mapStage(
        async (n: number, { signal }: StageContext) => {
          calls++
          signals.add(signal)
          await ticks(2)
          return n
        },
        { workers: 3 },
      ),
    )
    let atAbort = -1
    const err = await rejectionOf(
      (async () => {
        for await (const n of p.results({ signal: controller.signal })) {
          if (n >= 10 && atAbort < 0) {
            controller.abort(reason)
            atAbort = calls
          }
        }
      })(),
    )
    expect(err).toBe(reason)
    expect(spy.returns).toBe(1)
    expect(signals.size).toBe(1)
    expect([...signals][0]!.aborted).toBe(true)
    expect([...signals][0]!.reason).toBe(reason)
    await flush()
    expect(calls).toBe(atAbort)
  })

  test('aborting it rejects execute() and toArray() with the signal reason', async () => {
    for (const method of ['execute', 'toArray'] as const) {
      const controller = new AbortController()
      const p = pipe(
        numbers(1000),
        mapStage(async (n: number) => {
          if (n === 20) controller.abort('stop here')
          await ticks(1)
          return n
        }),
      )
      expect(await rejectionOf(p[method]({ signal: controller.signal }))).toBe('stop here')
      expect(abortListeners(controller.signal)).toBe(0)
    }
  })

  test('an already aborted signal rejects at once without calling the source function', async () => {
    const controller = new AbortController()
    const reason = new Error('too late')
    controller.abort(reason)
    let opened = 0
    let calls = 0
    const p = pipe(
      () => {
        opened++
        return numbers(3)
      },
      mapStage((n: number) => {
        calls++
        return n
      }),
    )
    expect(await rejectionOf(p.results({ signal: controller.signal }).next())).toBe(reason)
    expect(await rejectionOf(p.execute({ signal: controller.signal }))).toBe(reason)
    expect(await rejectionOf(p.toArray({ signal: controller.signal }))).toBe(reason)
    expect(opened).toBe(0)
    expect(calls).toBe(0)
    expect(abortListeners(controller.signal)).toBe(0)
  })

  test('a signal aborted while the source function runs still rejects the run', async () => {
    const controller = new AbortController()
    let calls = 0
    const p = pipe(
      () => {
        controller.abort('aborted while opening')
        return numbers(10)
      },
      mapStage((n: number) => {
        calls++
        return n
      }),
    )
    expect(await rejectionOf(p.toArray({ signal: controller.signal }))).toBe('aborted while opening')
    expect(calls).toBe(0)
    expect(abortListeners(controller.signal)).toBe(0)
  })

  test('a signal that is not an AbortSignal makes the run reject, not throw', async () => {
    const p = pipe(
      [1],
      mapStage((n: number) => n),
    )
    for (const bad of ['yes', 42, {}, null]) {
      const options = { signal: bad } as unknown as { signal: AbortSignal }
      const it = p.results(options) // building the iterator does not throw
      const err = await rejectionOf(it.next())
      expect(err).toBeInstanceOf(TypeError)
      expect((err as Error).message).toMatch(/`signal`.*AbortSignal/)
      expect(await rejectionOf(p.execute(options))).toBeInstanceOf(TypeError)
      expect(await rejectionOf(p.toArray(options))).toBeInstanceOf(TypeError)
    }
    expect(await rejectionOf(p.execute(42 as unknown as object))).toBeInstanceOf(TypeError)
  })

  test('no abort listener is left on the caller signal after any kind of run', async () => {
    const controller = new AbortController()
    const { signal } = controller
    const double = mapStage(async (n: number) => n * 2, { workers: 2 })
    const failing = mapStage((n: number) => {
      if (n === 3) throw new Error('3')
      return n
    })
    const first2 = stage(async function* first2(xs: AsyncIterable<number>) {
      let i = 0
      for await (const x of xs) {
        yield x
        if (++i === 2) return
      }
    })

    // while a run is live, it listens
    const it = pipe(numbers(10), double).results({ signal })
    await it.next()
    expect(abortListeners(signal)).toBe(1)
    await it.return!()
    expect(abortListeners(signal)).toBe(0)

    for await (const _ of pipe(numbers(10), double).results({ signal })) {
      // read to the end
    }
    expect(abortListeners(signal)).toBe(0)
    await pipe(numbers(10), double).toArray({ signal })
    await pipe(numbers(10), double).execute({ signal })
    expect(abortListeners(signal)).toBe(0)
    for await (const _ of pipe(numbers(10), double).results({ signal })) break
    expect(abortListeners(signal)).toBe(0)
    await rejectionOf(pipe(numbers(10), failing).toArray({ signal }))
    expect(abortListeners(signal)).toBe(0)
    await rejectionOf(
      pipe(() => {
        throw new Error('no source')
      }, double).toArray({ signal }),
    )
    expect(abortListeners(signal)).toBe(0)
    await pipe(numbers(10), double, first2, double).toArray({ signal })
    expect(abortListeners(signal)).toBe(0)
    await pipe(spiedAsyncSource(20).source, double).toArray({ signal })
    expect(abortListeners(signal)).toBe(0)
    expect(signal.aborted).toBe(false)
  })
})

describe('a later stage that stops reading', () => {
  test('a generator stage that reads 3 items and returns ends the run; upstream stops and the source is closed', async () => {
    const { source, spy } = spiedSyncSource(1000)
    const upstream: AbortSignal[] = []
    let calls = 0
    const first3 = stage(async function* first3(xs: AsyncIterable<number>) {
      let i = 0
      for await (const x of xs) {
        yield x
        if (++i === 3) return
      }
    })
    const out = await pipe(
      source,
      mapStage(
        async (n: number, { signal }: StageContext) => {
          calls++
          upstream.push(signal)
          await ticks(1)
          return n
        },
        { workers: 2, qsize: 1, ordered: true },
      ),
      first3,
    ).toArray()
    expect(out).toEqual([0, 1, 2])
    expect(spy.returns).toBe(1)
    expect(upstream[0]!.aborted).toBe(true)
    expect(upstream[0]!.reason).toBeInstanceOf(RunStopped)
    const at = calls
    await flush(3)
    expect(calls).toBe(at)
    expect(calls).toBeLessThanOrEqual(3 + 1 + 2 + 1) // what first3 took, the queue, the workers, a hand-off
  })

  test('upstream workers that honour their abort by throwing do not fail the run', async () => {
    // a fetch() given ctx.signal rejects with an AbortError when a later stage stops reading: that
    // rejection is the stop working as intended, not a failure of the run
    const first3 = stage(async function* first3(xs: AsyncIterable<number>) {
      let i = 0
      for await (const x of xs) {
        yield x
        if (++i === 3) return
      }
    })
    const slowConsumer = mapStage(async (n: number) => {
      await ticks(20)
      return n
    })
    const { source, spy } = spiedSyncSource(100)
    const out = await pipe(
      source,
      mapStage(
        async (n: number, { signal }: StageContext) => {
          await untilAborted(ticks(5), signal)
          signal.throwIfAborted()
          return n
        },
        { workers: 4 },
      ),
      first3,
      slowConsumer,
    ).toArray()
    expect(out).toHaveLength(3)
    expect(spy.returns).toBe(1)
  })

  test('a generator stage that never reads its input ends the run once it returns', async () => {
    const { source, spy } = spiedAsyncSource(1000)
    const out = await pipe(
      source,
      mapStage((n: number) => n),
      stage(async function* ignoresInput() {
        yield 'a'
        yield 'b'
      }),
    ).toArray()
    expect(out).toEqual(['a', 'b'])
    await flush()
    expect(spy.finalized).toBe(1)
  })

  test('a failure after a later stage stopped reading is not reported, the run still ends normally', async () => {
    const upstreamFailure = defer()
    const first1 = stage(async function* first1(xs: AsyncIterable<number>) {
      for await (const x of xs) {
        yield x
        return
      }
    })
    const out = await pipe(
      numbers(10),
      mapStage(
        async (n: number) => {
          if (n === 1) await upstreamFailure.promise
          return n
        },
        { workers: 2 },
      ),
      first1,
      mapStage(async (n: number) => {
        upstreamFailure.reject(new Error('upstream failed after the stop'))
        await ticks(10)
        return n
      }),
    ).toArray()
    expect(out).toEqual([0])
  })
})

describe('signals inside a stage', () => {
  test('ctx.signal is not aborted during a run that completes', async () => {
    const signals = new Set<AbortSignal>()
    await pipe(
      numbers(20),
      mapStage(
        (n: number, { signal }: StageContext) => {
          signals.add(signal)
          return n
        },
        { workers: 2 },
      ),
    ).toArray()
    expect(signals.size).toBe(1)
    expect([...signals][0]!.aborted).toBe(false)
  })

  test('ctx carries the worker index and the stage name', async () => {
    const seen = new Set<string>()
    await pipe(
      numbers(100),
      mapStage(
        async function named(n: number, { worker, stage }: StageContext) {
          seen.add(`${stage}/${worker}`)
          await ticks(jitter(n))
          return n
        },
        { workers: 3 },
      ),
    ).toArray()
    expect([...seen].sort()).toEqual(['named/0', 'named/1', 'named/2'])
  })

  test('a TaskException is what the other workers see as the abort reason', async () => {
    let reason: unknown
    const err = await rejectionOf(
      pipe(
        numbers(10),
        mapStage(
          async (n: number, { signal }: StageContext) => {
            if (n === 0) {
              await ticks(2)
              throw new Error('zero')
            }
            try {
              await whenAborted(signal)
            } catch (e) {
              reason = e
              throw e
            }
            return n
          },
          { workers: 2 },
        ),
      ).toArray(),
    )
    expect(err).toBeInstanceOf(TaskException)
    expect(reason).toBe(err)
  })
})

describe('synchronous work still lets the event loop turn', () => {
  function* endless(): Generator<number> {
    for (let i = 0; ; i++) yield i
  }

  test('an endless source through synchronous map stages stops when a macrotask aborts the signal', async () => {
    const controller = new AbortController()
    setImmediate(() => controller.abort('from a macrotask'))
    let calls = 0
    const p = pipe(
      endless,
      mapStage(
        (n: number) => {
          calls++
          return n + 1
        },
        { workers: 2 },
      ),
      mapStage((n: number) => n * 2, { ordered: true }),
    )
    expect(await rejectionOf(p.execute({ signal: controller.signal }))).toBe('from a macrotask')
    const at = calls
    await flush()
    expect(calls).toBe(at)
  })

  test('an endless synchronous generator stage stops when a macrotask aborts the signal', async () => {
    const controller = new AbortController()
    setImmediate(() => controller.abort('stop'))
    const p = pipe(
      [0],
      stage(endless),
      mapStage((n: number) => n),
    )
    expect(await rejectionOf(p.toArray({ signal: controller.signal }))).toBe('stop')
  })

  test('a map stage that skips every item still lets a macrotask abort the run', async () => {
    for (const ordered of [false, true]) {
      const controller = new AbortController()
      setImmediate(() => controller.abort('stop skipping'))
      const p = pipe(
        endless,
        mapStage((_: number) => skip, { ordered }),
      )
      expect(await rejectionOf(p.execute({ signal: controller.signal }))).toBe('stop skipping')
    }
  })

  test('a consumer reading an endless synchronous pipeline can be stopped by a macrotask', async () => {
    const controller = new AbortController()
    setImmediate(() => controller.abort('enough'))
    let seen = 0
    const err = await rejectionOf(
      (async () => {
        for await (const _ of pipe(
          endless,
          mapStage((n: number) => n),
        ).results({ signal: controller.signal }))
          seen++
      })(),
    )
    expect(err).toBe('enough')
    expect(seen).toBeGreaterThan(0)
  })
})

describe('a results() iterator dropped without return()', () => {
  // gc() is not exposed in vitest's workers; this turns it on for the process, as --expose-gc would
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void

  test('its run is stopped once the iterator is collected: the source is closed, stages see the signal', async () => {
    const events: string[] = []
    async function* source() {
      try {
        for (let i = 0; ; i++) yield i
      } finally {
        events.push('source closed')
      }
    }
    const p = pipe(
      source(),
      mapStage((x: number) => x * 2, {
        init: (ctx) => {
          ctx.signal.addEventListener('abort', () =>
            events.push(`aborted: ${(ctx.signal.reason as Error).name}`),
          )
        },
        dispose: () => {
          events.push('disposed')
        },
      }),
    )
    // read two items, then lose the iterator: no break, no return()
    await (async () => {
      const it = p.results()[Symbol.asyncIterator]()
      expect((await it.next()).value).toBe(0)
      expect((await it.next()).value).toBe(2)
    })()
    for (let i = 0; i < 100 && !events.includes('source closed'); i++) {
      gc()
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    expect(events).toContain('source closed')
    expect(events).toContain('aborted: RunStopped')
    await new Promise((resolve) => setTimeout(resolve, 5))
    expect(events).toContain('disposed')
  })

  test('an iterator read to the end or closed is not stopped again when collected', async () => {
    let stops = 0
    const make = () =>
      pipe(
        [1, 2, 3],
        mapStage((x: number) => x, {
          init: (ctx) => {
            ctx.signal.addEventListener('abort', () => stops++)
          },
        }),
      )
    await (async () => {
      const all: number[] = []
      for await (const x of make().results()) all.push(x)
      expect(all).toEqual([1, 2, 3])
      const it = make().results()
      await it.next()
      await it.return?.()
    })()
    const after = stops // the return() above aborted its run once
    for (let i = 0; i < 5; i++) {
      gc()
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    expect(after).toBe(1)
    expect(stops).toBe(1)
  })
})

import { spawnSync } from 'node:child_process'
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { drain } from '../lib/engine/consumer.js'
import { Execution } from '../lib/engine/execution.js'
import { snapshot } from '../lib/engine/stats.js'
import { feed, mapStage, pipe, RunStopped, stage, TaskException, threadStage } from '../lib/index.js'
import { SENDABLE_TO_THREADS } from '../lib/wire/sendable.js'
import {
  abortListeners,
  flush,
  numbers,
  rejectionOf,
  sorted,
  spiedSyncSource,
} from './helpers/instruments.js'
import { hasProc, osThreads, threadsBackTo } from './helpers/threads.js'

const FIXTURES = new URL('./fixtures/threads/', import.meta.url)
const WORK = new URL('work.js', FIXTURES)
const HOSTILE = new URL('hostile.js', FIXTURES)
// the same functions, loaded on this thread, to compare against
const work: any = await import(WORK.href)

/** Polls `ok` every 10 ms until it holds, for up to `ms`; says whether it came to hold. */
async function eventually(ok: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 10))
  }
  return true
}

/** Resolves once `state[i]` is non-zero (a thread wrote it). */
async function whenSet(state: Int32Array, i: number): Promise<void> {
  while (Atomics.load(state, i) === 0) {
    const r = (Atomics as any).waitAsync(state, i, 0, 10_000)
    if (r.async) await r.value
  }
}

function shared(n: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * n))
}

beforeAll(async () => {
  // the first run loads piscina and starts libuv's pool: only after it do thread counts stay level
  await pipe([1, 2, 3], threadStage(WORK, { threads: 2 })).toArray()
})

describe('results', () => {
  test('gives the same results as a mapStage running the same function', async () => {
    const items = numbers(1_000)
    const onThreads = await pipe(items, threadStage<number, number>(WORK, { threads: 2 })).toArray()
    const onMain = await pipe(items, mapStage(work.default as (n: number) => number)).toArray()
    expect(onThreads).toHaveLength(1_000)
    expect(sorted(onThreads)).toEqual(sorted(onMain))
  })

  test('keeps input order with ordered: true while threads finish batches out of order', async () => {
    const items = numbers(300)
    const out = await pipe(
      items,
      threadStage<number, number>(WORK, { export: 'uneven', threads: 2, batch: 3, ordered: true }),
    ).toArray()
    expect(out).toEqual(items.map((n) => work.uneven(n)))
  })

  test('keeps input order with ordered: true on a slow source (batches of whatever is there)', async () => {
    async function* slow() {
      for (let i = 0; i < 60; i++) {
        if (i % 7 === 0) await new Promise((r) => setTimeout(r, 1))
        yield i
      }
    }
    const out = await pipe(
      slow,
      threadStage<number, number>(WORK, { export: 'uneven', ordered: true }),
    ).toArray()
    expect(out).toEqual(numbers(60).map((n) => work.uneven(n)))
  })

  test('works between async stages in a mixed pipeline', async () => {
    const fetchLike = mapStage(
      async (n: number) => {
        await new Promise((r) => setTimeout(r, 0))
        return n + 1
      },
      { workers: 4 },
    )
    const label = mapStage((h: number) => `#${h}`)
    const out = await pipe(
      numbers(200),
      fetchLike,
      threadStage<number, number>(WORK, { threads: 2 }),
      label,
    ).toArray()
    expect(out.sort()).toEqual(
      numbers(200)
        .map((n) => `#${work.mix(n + 1)}`)
        .sort(),
    )
  })

  test('gives the function its context: the stage name, the thread index and a live signal', async () => {
    const out = await pipe(
      numbers(40),
      threadStage<number, any>(WORK, { export: 'context', threads: 2, batch: 1 }),
    ).toArray()
    expect(out).toHaveLength(40)
    for (const r of out) {
      expect(r.stage).toBe('context')
      expect([0, 1]).toContain(r.worker)
      expect(r.aborted).toBe(false)
    }
  })

  test('names the stage after the file, or after the export', () => {
    expect(threadStage(WORK).name).toBe('work')
    expect(threadStage(WORK, { export: 'failAt57' }).name).toBe('failAt57')
    expect(threadStage(WORK, { name: 'hash' }).name).toBe('hash')
    expect((threadStage(fileURLToPath(WORK)).options as any).module).toBe(WORK.href)
    expect((threadStage(WORK.href).options as any).module).toBe(WORK.href)
  })

  test('moves buffers with `transfer` into the thread and with ctx.transfer() back', async () => {
    const items = numbers(5).map((i) => ({ buf: new Uint8Array(8).fill(i).buffer }))
    const sent = items.map((x) => x.buf)
    const out = await pipe(
      items,
      threadStage<{ buf: ArrayBuffer }, any>(WORK, {
        export: 'sumAndReply',
        ordered: true,
        transfer: (item) => [item.buf],
      }),
    ).toArray()
    expect(out.map((r) => r.sum)).toEqual([0, 8, 16, 24, 32])
    expect(out.map((r) => r.seenBytes)).toEqual([8, 8, 8, 8, 8])
    // moved, not copied: the main thread's buffers are detached
    expect(sent.map((b) => b.byteLength)).toEqual([0, 0, 0, 0, 0])
    expect(out.map((r) => [...new Uint8Array(r.reply)])).toEqual([0, 8, 16, 24, 32].map((s) => [s, s, s, s]))
  })

  test('moves the buffer of a view returned by `transfer`, and refuses what cannot be moved', async () => {
    const view = new Uint8Array(8).fill(2)
    const [r] = await pipe(
      [{ buf: view.buffer }],
      threadStage<{ buf: ArrayBuffer }, any>(WORK, { export: 'sumAndReply', transfer: () => [view] }),
    ).toArray()
    expect(r.sum).toBe(16)
    expect(view.byteLength).toBe(0)
    const item = { buf: new SharedArrayBuffer(4) }
    const err = (await rejectionOf(
      pipe(
        [item],
        threadStage(WORK, { export: 'identity', transfer: (x: typeof item) => [x.buf as any] }),
      ).toArray(),
    )) as TaskException
    expect(err.item).toBe(item)
    expect((err.cause as Error).message).toBe(
      'threadStage "identity": `transfer` returned [object SharedArrayBuffer] (object), which cannot be moved to a thread (an ArrayBuffer, a view of one, or a MessagePort can)',
    )
    const err2 = (await rejectionOf(
      pipe([1], threadStage(WORK, { export: 'identity', transfer: () => 'nope' as any })).toArray(),
    )) as TaskException
    expect((err2.cause as Error).message).toBe(
      'threadStage "identity": `transfer` must return an array (or undefined), got "nope" (string)',
    )
    const boom = new Error('no buffers today')
    const err4 = (await rejectionOf(
      pipe(
        [1, 2],
        threadStage(WORK, {
          export: 'identity',
          transfer: (n: number) => {
            if (n === 2) throw boom
            return undefined
          },
        }),
      ).toArray(),
    )) as TaskException
    expect(err4.item).toBe(2)
    expect(err4.cause).toBe(boom)
    const err3 = (await rejectionOf(
      pipe([7], threadStage(WORK, { export: 'transfersShared' })).toArray(),
    )) as TaskException
    expect(err3.item).toBe(7)
    expect((err3.cause as Error).message).toBe(
      'threadStage "transfersShared": ctx.transfer() got SharedArrayBuffer, which cannot be moved (an ArrayBuffer, a view of one, or a MessagePort can)',
    )
  })

  test('runs the same stage twice, each run with its own pool', async () => {
    const s = threadStage<number, number>(WORK, { threads: 2, ordered: true })
    const a = await pipe(numbers(50), s).toArray()
    const b = await pipe(numbers(50), s).toArray()
    expect(a).toEqual(numbers(50).map((n) => work.mix(n)))
    expect(b).toEqual(a)
  })

  test.each([false, true])(
    'does not let the pool queue buffer the input: 2 x threads batches in flight, bounded behind a slow consumer (ordered: %s)',
    async (ordered) => {
      const gate = shared(2)
      const { source, spy } = spiedSyncSource(numbers(10_000).map((n) => ({ n, gate })))
      const it = pipe(
        source,
        threadStage<{ n: number }, number>(WORK, {
          export: 'gated',
          threads: 1,
          batch: 4,
          qsize: 2,
          ordered,
        }),
      )[Symbol.asyncIterator]()
      const first = it.next()
      // the thread is blocked on its first item: what the stage took is the two batches in flight,
      // of one item each (no batch has come back yet to size the next)
      await whenSet(gate, 1)
      await flush(5)
      expect(spy.reads).toBe(2)
      Atomics.store(gate, 0, 1)
      Atomics.notify(gate, 0)
      expect((await first).value).toBe(0)
      // the consumer stops reading: the stage fills its bound and stops taking input. At most
      // 2 loops x batch 4 (in flight, or results waiting for room) + qsize 2 (unordered), or a
      // reorder window of qsize 2 + 2 x 4 (ordered); plus the 1 item read
      let last = -1
      let still = 0
      await eventually(() => {
        still = spy.reads === last ? still + 1 : 0
        last = spy.reads
        return still >= 10
      })
      expect(spy.reads).toBeGreaterThanOrEqual(3)
      expect(spy.reads).toBeLessThanOrEqual(2 * 4 + 2 + 1)
      await it.return!()
      expect(spy.finalized).toBe(1)
    },
  )
})

describe('errors', () => {
  test('an error in item 57 rejects with a TaskException whose cause came from the thread', async () => {
    const err = (await rejectionOf(
      pipe(numbers(100), threadStage(WORK, { export: 'failAt57', threads: 2 })).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.stage).toBe('failAt57')
    expect(err.item).toBe(57)
    expect([0, 1]).toContain(err.worker)
    expect(err.message).toBe(`The task "failAt57-${err.worker}" raised ItemError: item 57 is cursed`)
    const cause = err.cause as Error & { code: string }
    expect(cause).toBeInstanceOf(Error)
    expect(cause.name).toBe('ItemError')
    expect(cause.message).toBe('item 57 is cursed')
    expect(cause.code).toBe('E_ITEM')
    // the stack is the thread's: it names the function and the worker module
    expect(cause.stack).toContain('ItemError: item 57 is cursed')
    expect(cause.stack).toMatch(/at failAt57 \(.*fixtures\/threads\/work\.js:\d+:\d+\)/)
  })

  test('keeps a built-in error class and its cause chain, from an async function', async () => {
    const err = (await rejectionOf(
      pipe(numbers(10), threadStage(WORK, { export: 'failAsync', ordered: true })).toArray(),
    )) as TaskException
    expect(err.item).toBe(3)
    expect(err.cause).toBeInstanceOf(RangeError)
    expect((err.cause as Error).message).toBe('three is out of range')
    expect(((err.cause as Error).cause as Error).message).toBe('the root')
  })

  test('keeps a thrown non-Error value as it is', async () => {
    const err = (await rejectionOf(
      pipe(numbers(5), threadStage(WORK, { export: 'throwsString' })).toArray(),
    )) as TaskException
    expect(err.item).toBe(2)
    expect(err.cause).toBe('a plain string')
  })

  test('a module that cannot be found fails the run before any item is taken', async () => {
    const { source, spy } = spiedSyncSource(numbers(10))
    const err = (await rejectionOf(
      pipe(source, threadStage(new URL('missing.js', FIXTURES))).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.stage).toBe('missing')
    expect(err.item).toBeUndefined()
    expect(String((err.cause as Error).message)).toMatch(
      /threadStage "missing": could not load its module file:.*missing\.js/,
    )
    expect(spy.reads).toBe(0)
    expect(spy.returns).toBe(1)
  })

  test('a module that throws while loading fails the run before any item is taken', async () => {
    const { source, spy } = spiedSyncSource(numbers(10))
    const err = (await rejectionOf(
      pipe(source, threadStage(new URL('throws-on-load.js', FIXTURES))).toArray(),
    )) as TaskException
    expect((err.cause as Error).message).toContain('could not load its module')
    expect((err.cause as Error).message).toContain('this module refuses to load')
    expect(((err.cause as Error).cause as Error).message).toBe('this module refuses to load')
    expect(spy.reads).toBe(0)
  })

  test('a missing or non-function export fails the run before any item is taken, naming the exports', async () => {
    const { source, spy } = spiedSyncSource(numbers(10))
    const err = (await rejectionOf(
      pipe(source, threadStage(new URL('named-only.js', FIXTURES))).toArray(),
    )) as TaskException
    expect(err.cause).toBeInstanceOf(TypeError)
    expect((err.cause as Error).message).toBe(
      `threadStage "named-only": the module ${new URL('named-only.js', FIXTURES).href} has no function export \`default\` (no such export; its exports: double, label)`,
    )
    expect(spy.reads).toBe(0)
    const err2 = (await rejectionOf(
      pipe([1], threadStage(WORK, { export: 'notAFunction' })).toArray(),
    )) as TaskException
    expect((err2.cause as Error).message).toContain('has no function export `notAFunction` (it is number;')
  })

  test('an item that cannot be sent fails clearly, naming the stage, the item and where in it', async () => {
    const refusal = (where: string) =>
      `threadStage "identity": an item cannot be sent to its thread: ${where}; ${SENDABLE_TO_THREADS}`
    const f = () => 1
    const e1 = (await rejectionOf(
      pipe([1, f, 3], threadStage(WORK, { export: 'identity' })).toArray(),
    )) as TaskException
    expect(e1.item).toBe(f)
    expect((e1.cause as Error).message).toBe(refusal('item is a function f'))
    class Point {
      constructor(readonly x: number) {}
    }
    const p = new Point(1)
    const e2 = (await rejectionOf(
      pipe([p], threadStage(WORK, { export: 'identity' })).toArray(),
    )) as TaskException
    expect(e2.item).toBe(p)
    expect((e2.cause as Error).message).toBe(refusal('item is an instance of Point'))
    const nested = { g: () => 2 }
    const e3 = (await rejectionOf(
      pipe([1, 2, nested], threadStage(WORK, { export: 'identity' })).toArray(),
    )) as TaskException
    expect(e3.item).toBe(nested)
    expect((e3.cause as Error).message).toBe(refusal('item.g is a function g'))
    // structured clone would send it, as a plain object without its class: checked at any depth
    const deep = { points: [p] }
    const e4 = (await rejectionOf(
      pipe([deep], threadStage(WORK, { export: 'identity' })).toArray(),
    )) as TaskException
    expect(e4.item).toBe(deep)
    expect((e4.cause as Error).message).toBe(refusal('item.points[0] is an instance of Point'))
    // an error keeps only its class, message, stack and cause on the way: one with more is refused
    const coded = Object.assign(new RangeError('x'), { code: 'E1' })
    const e5 = (await rejectionOf(
      pipe([{ coded }], threadStage(WORK, { export: 'identity' })).toArray(),
    )) as TaskException
    expect((e5.cause as Error).message).toBe(
      refusal('item.coded is a RangeError with properties of its own (code), which would not be sent'),
    )
  })

  test('an item structured clone refuses past the sendable rule (a port `transfer` did not list) fails on the item', async () => {
    const { port1, port2 } = new MessageChannel()
    try {
      const item = { port: port1 }
      const err = (await rejectionOf(
        pipe([item], threadStage(WORK, { export: 'identity', threads: 1 })).toArray(),
      )) as TaskException
      expect(err.item).toBe(item)
      expect((err.cause as Error).message).toBe(
        'threadStage "identity": an item could not be sent to its thread (structured clone): TypeError: Object that needs transfer was found in message but not listed in transferList',
      )
    } finally {
      port1.close()
      port2.close()
    }
  })

  test('plain data of every cloneable kind goes through unchanged (a Buffer arrives as a Uint8Array)', async () => {
    const items = [
      { a: [1, 'two', null, undefined, true, 10n] },
      new Date(5),
      new Map([[1, 'one']]),
      new Set([2]),
      /re/g,
      new Uint16Array([7]),
      Object.assign(Object.create(null), { bare: 1 }),
      new Error('sent as data'),
    ]
    const out = await pipe(
      items,
      threadStage<unknown, unknown>(WORK, { export: 'identity', ordered: true }),
    ).toArray()
    expect(out.slice(0, 7)).toEqual(items.slice(0, 7))
    expect((out[7] as Error).message).toBe('sent as data')
    const [buf] = await pipe(
      [Buffer.from('hi')],
      threadStage<Buffer, Uint8Array>(WORK, { export: 'identity' }),
    ).toArray()
    expect(buf).toBeInstanceOf(Uint8Array)
    expect([...buf!]).toEqual([104, 105])
  })

  test.runIf(hasProc)(
    "an error a thread's timer throws after its function returned fails the run, which is still running",
    async () => {
      const before = osThreads()
      const err = (await rejectionOf(
        pipe(numbers(3), threadStage(HOSTILE, { export: 'lateThrow', threads: 1 })).toArray(),
      )) as TaskException
      expect(err).toBeInstanceOf(TaskException)
      expect(err.stage).toBe('lateThrow')
      expect(err.item).toBeUndefined()
      expect((err.cause as Error).message).toBe('late')
      expect(await threadsBackTo(before)).toBe(before)
    },
  )

  test.runIf(hasProc)('an error a thread throws after the run stopped is a process warning', async () => {
    const before = osThreads()
    const warnings: Error[] = []
    const onWarning = (w: Error): void => {
      warnings.push(w)
    }
    process.on('warning', onWarning)
    try {
      const state = shared(1)
      const ac = new AbortController()
      const p = pipe(
        [{ n: 1, state }],
        threadStage(HOSTILE, { export: 'throwsAfterStop', threads: 1 }),
      ).toArray({ signal: ac.signal })
      await whenSet(state, 0)
      const reason = new Error('enough')
      ac.abort(reason)
      // the run's outcome is the stop's, whatever the thread did after it
      expect(await rejectionOf(p)).toBe(reason)
      expect(await threadsBackTo(before)).toBe(before)
      await flush(3)
      expect(warnings.map((w) => w.message)).toEqual([
        'stageline: a thread of threadStage "throwsAfterStop" failed after the stage had stopped (the run\'s outcome is unchanged): Error: late, after the stop',
      ])
    } finally {
      process.off('warning', onWarning)
    }
  })

  test.runIf(hasProc)('a thread that dies fails the run clearly, and its exit is waited for', async () => {
    const before = osThreads()
    const err = (await rejectionOf(
      pipe(numbers(10), threadStage(WORK, { export: 'exitsOnThree', batch: 1, threads: 2 })).toArray(),
    )) as TaskException
    expect(err.stage).toBe('exitsOnThree')
    expect((err.cause as Error).message).toBe(
      'threadStage "exitsOnThree": a batch of 1 items got no answer from its thread (it could not be sent, or the thread died): Error: worker exited with code: 3',
    )
    expect(await threadsBackTo(before)).toBe(before)
  })

  test.each([
    ['message', 'Error (describing it threw)'],
    ['name', 'HostileError (describing it threw)'],
    ['proxy', 'a value that could not be described'],
    ['toString', '[object Object]'],
    ['bare', '[object Object]'],
  ])(
    'a thrown value that cannot be read (%s) is described as describeCause would, on its item',
    async (kind, text) => {
      const items = numbers(3).map((n) => ({ n, kind }))
      const err = (await rejectionOf(
        pipe(items, threadStage(HOSTILE, { export: 'throwsHostile', threads: 1 })).toArray(),
      )) as TaskException
      expect(err).toBeInstanceOf(TaskException)
      expect(err.item).toBe(items[1])
      expect(err.cause).toBe(text)
      expect(err.message).toBe(`The task "throwsHostile-0" raised ${text}`)
    },
  )

  test('an error whose stack, cause and properties throw when read keeps what can be read', async () => {
    const items = numbers(3).map((n) => ({ n, kind: 'parts' }))
    const err = (await rejectionOf(
      pipe(items, threadStage(HOSTILE, { export: 'throwsHostile', threads: 1 })).toArray(),
    )) as TaskException
    expect(err.item).toBe(items[1])
    const cause = err.cause as RangeError
    expect(cause).toBeInstanceOf(RangeError)
    expect(cause.message).toBe('readable message')
    expect(cause.cause).toBeUndefined()
    expect(Object.keys(cause)).not.toContain('code')
  })

  test('a module that throws an unreadable error while loading fails the run with a message that says so', async () => {
    const href = new URL('hostile-load.js', FIXTURES).href
    const err = (await rejectionOf(
      pipe([1], threadStage(new URL('hostile-load.js', FIXTURES))).toArray(),
    )) as TaskException
    expect((err.cause as Error).message).toBe(
      `threadStage "hostile-load": could not load its module ${href}: Error (describing it threw)`,
    )
    expect((err.cause as Error).cause).toBe('Error (describing it threw)')
  })

  test.each([
    ['returnsFunction', 4, /: result is a function \(anonymous\); only primitives/],
    ['returnsClass', 5, /: result is an instance of Point; only primitives/],
    ['returnsSymbol', 1, /: result is a symbol \(Symbol\(one\)\); only primitives/],
    ['returnsNested', 6, /: result\.f is a function f; only primitives/],
    ['returnsNestedClass', 3, /: result\.at\[0\] is an instance of Point; only primitives/],
    [
      'returnsPort',
      2,
      /^threadStage "returnsPort": its result could not be sent back from the thread \(structured clone\): TypeError: Object that needs transfer was found in message but not listed in transferList$/,
    ],
  ])('a result that cannot be cloned back fails clearly (%s)', async (name, item, message) => {
    const err = (await rejectionOf(
      pipe(numbers(8), threadStage(WORK, { export: name, batch: 1, ordered: true })).toArray(),
    )) as TaskException
    expect(err).toBeInstanceOf(TaskException)
    expect(err.stage).toBe(name)
    expect(err.item).toBe(item)
    expect((err.cause as Error).message).toMatch(message)
    if (name !== 'returnsPort') {
      expect((err.cause as Error).message).toMatch(
        new RegExp(`^threadStage "${name}": a result cannot be sent back from its thread: `),
      )
    }
  })
})

describe('cancellation and cleanup', () => {
  test.runIf(hasProc)('an early break leaves no thread running', async () => {
    const before = osThreads()
    const { source, spy } = spiedSyncSource(numbers(100_000))
    let during = 0
    let got = 0
    for await (const _ of pipe(source, threadStage(WORK, { threads: 2 }))) {
      if (++got === 10) {
        during = osThreads()
        break
      }
    }
    // the instrument sees the threads while they run (so its "after" is worth something)
    expect(during).toBeGreaterThanOrEqual(before + 2)
    expect(await threadsBackTo(before)).toBe(before)
    expect(spy.finalized).toBe(1)
    expect(spy.reads).toBeLessThan(100_000)
  })

  test.runIf(hasProc)('no thread is left after a run completes, or fails', async () => {
    const before = osThreads()
    await pipe(numbers(100), threadStage(WORK, { threads: 2 })).toArray()
    expect(await threadsBackTo(before)).toBe(before)
    await rejectionOf(pipe(numbers(100), threadStage(WORK, { export: 'failAt57', threads: 2 })).toArray())
    expect(await threadsBackTo(before)).toBe(before)
    await rejectionOf(pipe(numbers(8), threadStage(WORK, { export: 'returnsNested', threads: 2 })).toArray())
    expect(await threadsBackTo(before)).toBe(before)
    await rejectionOf(
      pipe(numbers(8), threadStage(new URL('missing.js', FIXTURES), { threads: 2 })).toArray(),
    )
    expect(await threadsBackTo(before)).toBe(before)
  })

  test.runIf(hasProc)('a later stage that stops reading stops the thread stage and its threads', async () => {
    const before = osThreads()
    const firstThree = stage(async function* firstThree(xs: AsyncIterable<number>) {
      let n = 0
      for await (const x of xs) {
        yield x
        if (++n === 3) return
      }
    })
    const { source, spy } = spiedSyncSource(numbers(100_000))
    const out = await pipe(source, threadStage<number, number>(WORK, { threads: 2 }), firstThree).toArray()
    expect(out).toHaveLength(3)
    expect(spy.finalized).toBe(1)
    expect(await eventually(() => osThreads() === before)).toBe(true)
  })

  test('a synchronous loop in a thread sees signal.aborted as soon as the run stops', async () => {
    const state = shared(2)
    const ac = new AbortController()
    const p = pipe([{ n: 1, state }], threadStage(WORK, { export: 'untilAborted' })).toArray({
      signal: ac.signal,
    })
    await whenSet(state, 0)
    ac.abort(new Error('enough'))
    expect(await rejectionOf(p)).toEqual(new Error('enough'))
    // the loop returned by itself (it was not terminated by the grace period)
    expect(Atomics.load(state, 1)).toBe(1)
    expect(abortListeners(ac.signal)).toBe(0)
  })

  test("an async function in a thread gets the 'abort' event with the run's reason", async () => {
    const state = shared(3)
    const text = new Uint8Array(new SharedArrayBuffer(128))
    const it = pipe(
      [{ n: 1, state, text }, 2],
      threadStage<unknown, number>(WORK, { export: 'awaitAbort', threads: 1 }),
    )[Symbol.asyncIterator]()
    const pending = it.next()
    await whenSet(state, 0)
    await it.return!()
    expect(Atomics.load(state, 1)).toBe(1)
    const reason = new TextDecoder().decode(text.slice(0, Atomics.load(state, 2)))
    expect(reason).toBe(`RunStopped: ${new RunStopped('the consumer stopped reading the results').message}`)
    expect((await pending).done).toBe(true)
  })

  test.each([
    [
      'an Error whose message getter throws',
      () =>
        Object.defineProperty(new Error('unreadable'), 'message', {
          get() {
            throw new Error('no message for you')
          },
        }),
      'Error: Error (describing it threw)',
    ],
    [
      'a revoked Proxy',
      () => {
        const { proxy, revoke } = Proxy.revocable({}, {})
        revoke()
        return proxy
      },
      'Error: a value that could not be described',
    ],
  ])(
    'a stop whose reason cannot be read (%s) still reaches the threads, described',
    async (_, reasonOf, text) => {
      const state = shared(3)
      const bytes = new Uint8Array(new SharedArrayBuffer(128))
      const ac = new AbortController()
      const p = pipe(
        [{ n: 1, state, text: bytes }],
        threadStage(WORK, { export: 'awaitAbort', threads: 1 }),
      ).toArray({ signal: ac.signal })
      await whenSet(state, 0)
      const reason = reasonOf()
      ac.abort(reason)
      // not through rejectionOf(): an async function returning a revoked Proxy would read its `then`
      let caught: unknown
      await p.catch((err: unknown) => {
        caught = err
      })
      expect(caught === reason).toBe(true)
      // the thread saw the stop: its 'abort' listener ran, with the reason as the stage described it
      expect(Atomics.load(state, 1)).toBe(1)
      expect(new TextDecoder().decode(bytes.slice(0, Atomics.load(state, 2)))).toBe(text)
    },
  )

  test.runIf(hasProc)('a thread that ignores its signal is terminated after the grace period', async () => {
    const before = osThreads()
    const state = shared(4)
    const ac = new AbortController()
    const p = pipe([{ n: 1, state }], threadStage(WORK, { export: 'ignoresSignal' })).toArray({
      signal: ac.signal,
    })
    await whenSet(state, 0)
    expect(osThreads()).toBe(before + 1)
    ac.abort(new Error('stop'))
    expect(await rejectionOf(p)).toEqual(new Error('stop'))
    // the function would spin for 30 s; the pool is destroyed instead
    expect(await eventually(() => osThreads() === before)).toBe(true)
    const spun = Atomics.load(state, 3)
    await flush(3)
    expect(Atomics.load(state, 3)).toBe(spun)
  })
})

describe('stats', () => {
  test('workers are the threads, bound 2 x threads x batch, busy the threads holding a batch; thread time adds up', async () => {
    // the run's time book reads this clock, and only the spec moves it: every state change below
    // happens at the time the spec set, so the totals are exact
    let now = 0
    const gate = shared(2)
    const input = feed<{ n: number; gate: Int32Array }>({ capacity: Number.POSITIVE_INFINITY })
    const s = threadStage<{ n: number; gate: Int32Array }, number>(WORK, {
      export: 'gated',
      threads: 2,
      batch: 8,
      qsize: 0,
    })
    const exec = new Execution(
      { source: input, stages: [s], names: ['gated'] },
      { clock: () => now, accounting: true },
    )
    const stats = () => snapshot(exec).stages[0]!
    const open = () => {
      Atomics.store(gate, 0, 1)
      Atomics.notify(gate, 0)
    }
    try {
      expect(stats()).toMatchObject({ workers: 2, bound: 2 * 2 * 8 })
      // one item, blocked in its thread: one thread holds a batch, the other has nothing to do
      void input.push({ n: 0, gate })
      await whenSet(gate, 1)
      now = 10
      expect(stats()).toMatchObject({ busy: 1, workingMs: 10, starvedMs: 10, blockedMs: 0 })
      // two more: both threads hold a batch (the third batch waits behind one of them)
      void input.push({ n: 1, gate })
      void input.push({ n: 2, gate })
      await eventually(() => Atomics.load(gate, 1) === 2)
      now = 20
      expect(stats()).toMatchObject({ busy: 2, workingMs: 30, starvedMs: 10, blockedMs: 0 })
      // the results find no room (qsize 0, nobody reads): the idle threads' loops wait downstream
      open()
      await eventually(() => exec.stages[0]!.emitted === 3)
      now = 40
      expect(stats()).toMatchObject({ busy: 0, workingMs: 30, starvedMs: 10, blockedMs: 40 })
      const out: number[] = []
      const done = drain(exec, (x) => {
        out.push(x as number)
      })
      input.end()
      await done
      expect(sorted(out)).toEqual([0, 1, 2])
      // the stage has ended: its threads count no more time, whatever the clock does
      now = 1000
      const end = stats()
      expect(end).toMatchObject({ busy: 0, workingMs: 30, starvedMs: 10, blockedMs: 40, in: 3, out: 3 })
      expect(end.workingMs + end.starvedMs + end.blockedMs).toBe(2 * 40)
    } finally {
      open()
      input.end()
      exec.stop(new RunStopped('the spec ended'), false)
    }
  })
})

describe('options', () => {
  test('refuses bad options, naming the option, the value and what is allowed', () => {
    expect(() => threadStage(WORK, { threads: 0 })).toThrow(
      new RangeError('threadStage(): expected `threads` to be an integer from 1 to 1024, got 0 (number)'),
    )
    expect(() => threadStage(WORK, { threads: '2' as any })).toThrow(TypeError)
    expect(() => threadStage(WORK, { batch: 1.5 })).toThrow(
      new RangeError('threadStage(): expected `batch` to be an integer from 1 to 1000000, got 1.5 (number)'),
    )
    expect(() => threadStage(WORK, { export: '' })).toThrow(
      new TypeError(
        'threadStage(): expected `export` to be the non-empty name of an export, got "" (string)',
      ),
    )
    expect(() => threadStage(WORK, { transfer: 5 as any })).toThrow(
      new TypeError('threadStage(): expected `transfer` to be a function, got 5 (number)'),
    )
    expect(() => threadStage(WORK, { workers: 4 } as any)).toThrow(
      new TypeError(
        'threadStage(): `workers` is not an option of a thread stage, got 4 (number); use `threads` for the number of threads',
      ),
    )
    expect(() => threadStage(WORK, { thread: 2 } as any)).toThrow(
      /unknown option `thread`; the options are .*`threads`/,
    )
    expect(() => threadStage(WORK, null as any)).toThrow(TypeError)
    expect(() => threadStage('relative/work.js')).toThrow(
      new TypeError(
        'threadStage(): expected `module` to be a file URL or an absolute path, got "relative/work.js" (string); for a file next to yours, write new URL(\'./file.js\', import.meta.url)',
      ),
    )
    expect(() => threadStage(new URL('https://example.com/work.js'))).toThrow(
      'threadStage(): expected `module` to be a file: URL, got https://example.com/work.js (URL)',
    )
    expect(() => threadStage(42 as any)).toThrow(TypeError)
  })

  test('setup() changes threads and batch, and refuses workers; options.workers is threads', () => {
    const s = threadStage(WORK, { threads: 1, batch: 8 })
    expect(s.options.workers).toBe(1)
    const wider = s.setup({ threads: 3 })
    expect(wider.options.threads).toBe(3)
    expect(wider.options.workers).toBe(3)
    expect(wider.options.batch).toBe(8)
    expect(() => s.setup({ workers: 5 } as never)).toThrow(
      new TypeError(
        'threadStage().setup(): `workers` is not an option of a thread stage, got 5 (number); use `threads` for the number of threads',
      ),
    )
    expect(() => s.setup({ batch: 0 })).toThrow(RangeError)
  })

  test('defaults to the available cores minus one, at least one thread', async () => {
    const { availableParallelism } = await import('node:os')
    expect((threadStage(WORK).options as any).threads).toBe(Math.max(1, availableParallelism() - 1))
    expect((threadStage(WORK).options as any).batch).toBe(1024)
  })
})

describe('packaging', () => {
  let dir = ''
  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true })
  })

  test('importing stageline does not load piscina; the first thread-stage run does, from a built layout', async () => {
    // compile lib/ the way the build lays out dist/ (each .ts to a .js, the thread entry's included)
    const lib = fileURLToPath(new URL('../lib/', import.meta.url))
    dir = mkdtempSync(join(tmpdir(), 'stageline-threads-'))
    const out = join(dir, 'lib')
    const walk = (d: string): string[] =>
      readdirSync(d, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)],
      )
    for (const file of walk(lib)) {
      const target = join(out, relative(lib, file))
      mkdirSync(dirname(target), { recursive: true })
      if (file.endsWith('.ts')) {
        const js = ts.transpileModule(readFileSync(file, 'utf8'), {
          compilerOptions: {
            module: ts.ModuleKind.ESNext,
            target: ts.ScriptTarget.ES2022,
            verbatimModuleSyntax: true,
          },
        }).outputText
        writeFileSync(target.replace(/\.ts$/, '.js'), js)
      } else cpSync(file, target)
    }
    symlinkSync(fileURLToPath(new URL('../node_modules', import.meta.url)), join(dir, 'node_modules'))
    writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n')
    const child = join(dir, 'child.js')
    writeFileSync(
      child,
      `import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const piscinaLoaded = () => Object.keys(require.cache).some((k) => k.includes('/node_modules/piscina/'))
const sl = await import('./lib/index.js')
const before = piscinaLoaded()
const out = await sl.pipe([1, 2, 3], sl.threadStage(${JSON.stringify(WORK.href)}, { threads: 1, ordered: true })).toArray()
console.log(JSON.stringify({ before, after: piscinaLoaded(), out }))
`,
    )
    const r = spawnSync(process.execPath, [child], { encoding: 'utf8', timeout: 60_000 })
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({
      before: false,
      after: true,
      out: [1, 2, 3].map((n) => work.mix(n)),
    })

    // with no compiled entry next to pool.js nor in a build, the run fails with a message that says so
    rmSync(join(out, 'threads', 'entry.js'))
    const r2 = spawnSync(process.execPath, [child], { encoding: 'utf8', timeout: 60_000 })
    expect(r2.status).not.toBe(0)
    expect(r2.stderr).toContain(
      `its worker-thread entry is missing: neither ${pathToFileURL(join(out, 'threads', 'entry.js')).href} nor ${pathToFileURL(join(dir, 'dist', 'threads', 'entry.js')).href} exists; \`npm run build\` compiles lib/threads/entry.ts to dist/threads/entry.js`,
    )
  }, 60_000) // transpiling lib/ and two child processes: slow on a loaded machine
})

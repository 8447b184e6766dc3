/**
 * The wire protocol of a thread stage (lib/threads/protocol.ts), which both sides import: the
 * control block as the main thread and a thread each see it over the one shared buffer, how a
 * stop's reason crosses, and how `skip` and structured clone's refusals are recognised. The thread
 * specs run it across real threads; these run both sides in one thread, where the coverage sees them.
 */
import { readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import { skip } from '../lib/skip.js'
import {
  ControlBlock,
  decodeReason,
  encodeReason,
  H_STOPPED,
  isCloneFailure,
  isSkip,
  REASON_BYTES,
  S_RUNNING,
  S_THREAD,
  S_WORKER,
} from '../lib/threads/protocol.js'

/** The block as the main thread makes it, and as a thread sees it (another view of the same memory). */
function sides(slots: number): { main: ControlBlock; thread: ControlBlock } {
  const main = ControlBlock.create(slots)
  return { main, thread: new ControlBlock(main.buffer, main.slots) }
}

describe('the control block', () => {
  test('threads join in turn: each gets the next index and a free slot, which the main side frees when it exits', () => {
    const { main, thread } = sides(2)
    expect(thread.join(101)).toEqual({ worker: 0, slot: main.slot(0) })
    expect(thread.join(102)).toEqual({ worker: 1, slot: main.slot(1) })
    // every slot taken: a thread still gets an index, and no slot
    expect(thread.join(103)).toEqual({ worker: 2, slot: -1 })
    expect(main.flags[main.slot(1) + S_THREAD]).toBe(102)
    expect(main.flags[main.slot(1) + S_WORKER]).toBe(1)
    Atomics.store(thread.flags, main.slot(1) + S_RUNNING, 1)
    expect(main.anyRunning()).toBe(true)
    // the thread died inside a batch: its flags are lowered and its slot is free for the next one
    main.leave(102)
    expect(main.anyRunning()).toBe(false)
    expect(thread.join(104)).toEqual({ worker: 3, slot: main.slot(1) })
  })

  test("a stop reaches the threads with its reason's name and message", () => {
    const { main, thread } = sides(1)
    expect(thread.stopped()).toBe(false)
    main.stop(encodeReason(new RangeError('enough')))
    expect(thread.stopped()).toBe(true)
    expect(Atomics.load(thread.flags, H_STOPPED)).toBe(1)
    const reason = thread.stopReason()
    expect(reason).toBeInstanceOf(Error)
    expect([reason.name, reason.message]).toEqual(['RangeError', 'enough'])
  })

  test('a long reason is cut at REASON_BYTES', () => {
    const { main, thread } = sides(1)
    main.stop(encodeReason(new Error('x'.repeat(2 * REASON_BYTES))))
    expect(new TextEncoder().encode(`Error\n${thread.stopReason().message}`).length).toBe(REASON_BYTES)
  })
})

describe("a stop's reason", () => {
  test('an Error goes as its name and message, anything else as Error and its text', () => {
    expect(decodeReason(encodeReason(new TypeError('bad')))).toMatchObject({
      name: 'TypeError',
      message: 'bad',
    })
    expect(decodeReason(encodeReason('just text'))).toMatchObject({ name: 'Error', message: 'just text' })
    expect(decodeReason('no name line')).toMatchObject({ name: 'Error', message: 'no name line' })
  })

  test('a reason that cannot be read is described, never thrown', () => {
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    expect(encodeReason(proxy)).toBe('Error\na value that could not be described')
    const unreadable = Object.defineProperty(new Error('x'), 'message', {
      get() {
        throw new Error('no')
      },
    })
    expect(encodeReason(unreadable)).toBe('Error\nError (describing it threw)')
  })
})

describe('recognising', () => {
  test("stageline's skip, by identity: the registered symbol, not one that shares its description", () => {
    expect(isSkip(skip)).toBe(true)
    expect(isSkip(Symbol.for('stageline.skip'))).toBe(true)
    expect(isSkip(Symbol('stageline.skip'))).toBe(false)
    expect(isSkip('stageline.skip')).toBe(false)
  })

  test("structured clone's refusals, and nothing else", () => {
    let refusal: unknown
    try {
      structuredClone(() => 1)
    } catch (err) {
      refusal = err
    }
    expect(isCloneFailure(refusal)).toBe(true)
    const { port1, port2 } = new MessageChannel()
    try {
      port2.postMessage({ port: port1 })
    } catch (err) {
      refusal = err
    } finally {
      port1.close()
      port2.close()
    }
    expect(isCloneFailure(refusal)).toBe(true)
    expect(isCloneFailure(new TypeError('not a clone failure'))).toBe(false)
    expect(isCloneFailure('DataCloneError')).toBe(false)
    expect(isCloneFailure(null)).toBe(false)
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('no')
        },
      },
    )
    expect(isCloneFailure(hostile)).toBe(false)
  })
})

describe('the thread entry', () => {
  test('imports only small modules (the protocol, the error form, the sendable rule, skip, the error classes), never the index', () => {
    const lib = fileURLToPath(new URL('../lib/', import.meta.url))
    const seen = new Set<string>()
    const builtins = new Set<string>()
    const walk = (file: string): void => {
      if (seen.has(file)) return
      seen.add(file)
      const source = readFileSync(file, 'utf8')
      // what it loads when it runs: type-only imports are erased
      for (const m of source.matchAll(/^import (?!type )[^'"]*from '([^']+)'/gm)) {
        const spec = m[1]!
        if (spec.startsWith('node:')) builtins.add(spec)
        else walk(join(dirname(file), spec.replace(/\.js$/, '.ts')))
      }
    }
    walk(join(lib, 'threads', 'entry.ts'))
    expect([...seen].map((f) => relative(lib, f)).sort()).toEqual([
      'errors.ts',
      'skip.ts',
      'threads/entry.ts',
      'threads/protocol.ts',
      'wire/errors.ts',
      'wire/sendable.ts',
    ])
    expect([...builtins].sort()).toEqual(['node:util', 'node:worker_threads'])
  })
})

/**
 * The worker-thread side of a thread stage: piscina loads this module (compiled: a thread loads
 * modules with Node's own loader, which does not read .ts) in each thread of a run's pool and calls
 * its default export once per task. The tasks, the answers and the control block are defined once,
 * in protocol.ts, which the main side (pool.ts) imports too.
 *
 * It imports only small modules, so that a thread starts quickly: the protocol, the error form
 * (`toWire`), the sendable rule, `skip` and the error classes; never the library's index.
 *
 * - A batch (a `Task` that is an array, or a `BatchTask`): runs the function on each item and
 *   answers `{ worker, out, ms, skipped?, failed? }` (`failed` with `keepGoing`),
 *   `{ worker, at, error, timedOut? }` when item `at` failed (at -1: the module or its init failed),
 *   or `{ worker, stopped: true }` when the run stopped before the batch was done.
 * - An `EndTask` `{ end: n }`: ends the run in this thread: runs the module's `dispose` export, lets
 *   the thread's timers that are due run (one that throws kills the thread, and the task rejects
 *   with its error), then holds the thread until `n` threads have their end task, so that each
 *   thread gets exactly one; the answer is `{ worker }` or `{ worker, error }` (dispose threw).
 * - A `CheckTask`: loads the module, finds the export, runs the `init` export; answers
 *   `{ worker, dispose }` (whether the module exports `dispose`) or `{ worker, error }`.
 * @module
 */
import { MessagePort, threadId, workerData } from 'node:worker_threads'
import { describeCause, TimeoutError } from '../errors.js'
import { toWire, type WireError } from '../wire/errors.js'
import { SENDABLE_TO_THREADS, TO_THREADS, unsendable } from '../wire/sendable.js'
import {
  type Answer,
  type BatchTask,
  ControlBlock,
  type FailedItem,
  H_ARRIVED,
  H_STOPPED,
  isCloneFailure,
  isSkip,
  monotonicOffset,
  S_BATCH,
  S_DEADLINE,
  S_ITEM,
  S_RUNNING,
  type Task,
  type ThreadData,
} from './protocol.js'

/** A function of the worker module, as the thread calls it. */
type Fn = (...args: unknown[]) => unknown

/** `Atomics.waitAsync` (Node 16 and later), which TypeScript's ES2023 library does not declare. */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
      timeout?: number,
    ): { async: false; value: string } | { async: true; value: Promise<string> }
  }
).waitAsync.bind(Atomics)

const data = workerData as ThreadData
const { module: moduleHref, exportName, stage, slots, timeout, keepGoing } = data
const control = new ControlBlock(data.control, slots)
const flags = control.flags
/** This thread's 0-based index in its pool, in the order the threads started; where its slot starts (-1: none). */
const { worker, slot } = control.join(threadId)
/**
 * performance.now() is relative to this thread's start; the deadlines in the control block are on
 * the process's monotonic clock, which the main thread reads too.
 */
const clockOffset = monotonicOffset()
/** The batch being run, as the main thread numbered it (0: not watched). */
let batchId = 0

/**
 * Writes in this thread's slot that item `i` of the batch runs until `deadline`; the main thread
 * reads it to find a thread stuck past an item's deadline. One plain store and one or two atomic
 * ones per item: the deadline first, then the batch (on a batch's first item), then the item,
 * whose atomic store publishes the others. The reader (pool.ts watch()) loads them in the
 * opposite order, so that it sees a deadline at least as recent as the item it read: a deadline
 * it finds long past is that item's, and that item is still the thread's.
 */
function mark(i: number): void {
  if (slot < 0) return
  flags[slot + S_DEADLINE] = Math.ceil(deadline + clockOffset) | 0
  if (i === 0) Atomics.store(flags, slot + S_BATCH, batchId)
  Atomics.store(flags, slot + S_ITEM, i)
}

/** No item of this thread runs under a timeout any more. */
function unmark(): void {
  if (slot >= 0) Atomics.store(flags, slot + S_BATCH, 0)
}

const ctl = new AbortController()
const signal = ctl.signal
const abortedGetter = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted')!.get!
const isAborted = (s: AbortSignal): boolean => abortedGetter.call(s) as boolean

/** Aborts `signal` if the main thread raised the stop flag; says whether the run has stopped. */
function poll(): boolean {
  if (isAborted(signal)) return true
  if (Atomics.load(flags, H_STOPPED) === 0) return false
  ctl.abort(control.stopReason())
  return true
}

// `abort` listeners fire when the flag is raised, whenever this thread's event loop gets a turn
// (during an async task). A synchronous loop that reads `signal.aborted` or calls
// `throwIfAborted()` reads the flag itself, at once: both are shadowed on this one signal.
const waiting = waitAsync(flags, H_STOPPED, 0)
if (waiting.async) void waiting.value.then(poll)
Object.defineProperty(signal, 'aborted', {
  get() {
    return poll() || isAborted(signal)
  },
})
const throwIfAborted = AbortSignal.prototype.throwIfAborted
signal.throwIfAborted = () => {
  poll()
  throwIfAborted.call(signal)
}

// Per-item timeout (only with `timeout`): the item's deadline (performance.now() based; Infinity
// between items) and, once the function reads ctx.signal during the item, the item's own signal.
// It aborts with a TimeoutError once the deadline passes: `aborted` and `throwIfAborted()` compare
// the clock themselves (a synchronous loop cannot be interrupted, but it can look), and a timer
// fires `'abort'` listeners while an async function awaits. It also aborts when the run stops.
let deadline = Number.POSITIVE_INFINITY
let itemCtl: AbortController | undefined
/** Rejection reason of withDeadline(): the item's deadline passed while its promise was pending. */
const TIMED_OUT: unique symbol = Symbol('stageline.timed-out')

/** Whether the item signal of `c` is aborted, aborting it first if the run stopped or its deadline passed. */
function itemAborted(c: AbortController): boolean {
  const s = c.signal
  if (isAborted(s)) return true
  if (poll()) {
    if (!isAborted(s)) c.abort(signal.reason)
    return true
  }
  // the deadline is the current item's: a signal kept past its item does not time out later
  if (c === itemCtl && performance.now() >= deadline) {
    c.abort(new TimeoutError(stage, timeout!))
    return true
  }
  return false
}

function newItemCtl(): AbortController {
  const c = new AbortController()
  const s = c.signal
  Object.defineProperty(s, 'aborted', { get: () => itemAborted(c) })
  s.throwIfAborted = () => {
    itemAborted(c)
    throwIfAborted.call(s)
  }
  if (isAborted(signal)) c.abort(signal.reason)
  return c
}
if (timeout !== undefined) signal.addEventListener('abort', () => itemCtl?.abort(signal.reason))

/** `p`, or a rejection with TIMED_OUT once the item's deadline passes (aborting its signal). */
function withDeadline(p: PromiseLike<unknown>): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => {
        if (itemCtl !== undefined && !isAborted(itemCtl.signal))
          itemCtl.abort(new TimeoutError(stage, timeout!))
        reject(TIMED_OUT)
      },
      Math.max(0, deadline - performance.now()),
    )
    p.then(
      (v) => {
        clearTimeout(t)
        resolve(v)
      },
      (e: unknown) => {
        clearTimeout(t)
        reject(e)
      },
    )
  })
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return (
    x !== null && (typeof x === 'object' || typeof x === 'function') && typeof (x as any).then === 'function'
  )
}

/** What can be moved back with a batch's results. */
type Movable = ArrayBuffer | MessagePort

/** Buffers the function asked to move, not copy, with this batch's results. */
let transfers: Movable[] = []
/** What the module's `init` export returned in this thread (ctx.state). */
let state: unknown
/** The try of the items of the batch being run: 0 on the first, 1 on the first retry, ... */
let attempt = 0

/** The function's context: one per thread; `state`, `attempt` and, with a timeout, `signal` change. */
const ctx = Object.freeze(
  Object.create(Object.prototype, {
    stage: { value: stage, enumerable: true },
    worker: { value: worker, enumerable: true },
    signal: {
      enumerable: true,
      get:
        timeout === undefined
          ? () => signal
          : () => (deadline === Number.POSITIVE_INFINITY ? signal : (itemCtl ??= newItemCtl()).signal),
    },
    state: { enumerable: true, get: () => state },
    attempt: { enumerable: true, get: () => attempt },
    transfer: {
      value(...list: unknown[]) {
        for (let x of list) {
          if (ArrayBuffer.isView(x)) x = x.buffer
          if (!(x instanceof ArrayBuffer) && !(x instanceof MessagePort)) {
            throw new TypeError(
              `threadStage "${stage}": ctx.transfer() got ${x === null ? 'null' : typeof x === 'object' ? ((x as object).constructor?.name ?? 'an object') : typeof x}, which cannot be moved (an ArrayBuffer, a view of one, or a MessagePort can)`,
            )
          }
          transfers.push(x)
        }
      },
    },
  }),
)

let fn: Fn
/** The module's `dispose` export, if it has one. */
let disposeFn: Fn | undefined
/** Set once the module is loaded and its `init` has run in this thread. */
let prepared = false
let disposed = false

/** Loads the module and runs its `init`, once per thread; rejects with an error that says what is wrong. */
async function prepare(): Promise<void> {
  let ns: Record<string, unknown>
  try {
    ns = (await import(moduleHref)) as Record<string, unknown>
  } catch (err) {
    throw wrap(`could not load its module ${moduleHref}`, err)
  }
  const f = ns[exportName]
  if (typeof f !== 'function') {
    const names = Object.keys(ns)
    throw new TypeError(
      `threadStage "${stage}": the module ${moduleHref} has no function export \`${exportName}\`` +
        ` (${f === undefined ? 'no such export' : `it is ${typeof f}`}; its exports: ${names.length > 0 ? names.join(', ') : 'none'})`,
    )
  }
  for (const hook of ['init', 'dispose']) {
    const h = ns[hook]
    if (h !== undefined && typeof h !== 'function') {
      throw new TypeError(
        `threadStage "${stage}": the module ${moduleHref} exports \`${hook}\` as ${h === null ? 'null' : typeof h}; a thread stage calls it, so it must be a function (or not be exported)`,
      )
    }
  }
  fn = f as Fn
  disposeFn = ns.dispose as Fn | undefined
  // the error of a failing init goes to the run as it is, as with mapStage's init
  if (ns.init !== undefined) {
    let s = (ns.init as Fn)(ctx)
    if (isThenable(s)) s = await s
    state = s
  }
  prepared = true
}

function wrap(what: string, cause: unknown): Error {
  return new Error(`threadStage "${stage}": ${what}: ${describeCause(cause)}`, { cause })
}

/** The results of the batch being answered now, kept in case posting them fails (see below). */
let answered: unknown[] | undefined

/** Runs one task (piscina calls this in the thread for each task it hands the thread). */
export default async function run(task: Task): Promise<unknown> {
  answered = undefined
  let items: unknown[]
  if (Array.isArray(task)) items = task
  else if ('items' in task) items = task.items
  else if ('end' in task) return endTask(task.end)
  else {
    try {
      if (!prepared) await prepare()
      return { worker, dispose: disposeFn !== undefined } satisfies Answer
    } catch (err) {
      return { worker, error: toWire(err) } satisfies Answer
    }
  }
  // marked running before the stop flag is read: either this batch sees the stop, or the main
  // thread sees it running (and gives it the grace period instead of destroying the pool at once)
  if (slot >= 0) Atomics.store(flags, slot + S_RUNNING, 1)
  try {
    if (poll()) return { worker, stopped: true } satisfies Answer
    transfers = []
    if (!prepared) {
      try {
        await prepare()
      } catch (err) {
        return { worker, at: -1, error: toWire(err) } satisfies Answer
      }
    }
    if (items === task) attempt = 0
    else {
      attempt = (task as BatchTask).attempt
      batchId = (task as BatchTask).id
    }
    const answer = await (timeout === undefined && !keepGoing ? runBatch(items) : runPolicyBatch(items))
    // no item runs any more (what follows may await: loading piscina's move() below)
    if (timeout !== undefined) unmark()
    if (transfers.length === 0 || answer.out === undefined) return answer
    const list = [...new Set(transfers)]
    // piscina moves what a "movable" answer lists; its marker symbol is private, so ask its move()
    const { move, transferableSymbol, valueSymbol } = (await import('piscina')) as unknown as {
      move: (x: object) => unknown
      transferableSymbol: symbol
      valueSymbol: symbol
    }
    return move({ [transferableSymbol]: list, [valueSymbol]: answer })
  } finally {
    if (timeout !== undefined) unmark()
    if (slot >= 0) Atomics.store(flags, slot + S_RUNNING, 0)
  }
}

/** A batch with no policy: the first failure ends it. The hot path: keep it lean. */
async function runBatch(task: unknown[]): Promise<Answer> {
  const f = fn
  const n = task.length
  const out = new Array<unknown>(n)
  let skipped: number[] | undefined
  const start = performance.now()
  let i = 0
  try {
    for (; i < n; i++) {
      let y = f(task[i], ctx)
      // awaiting a plain value would cost a microtask per item
      if (
        y !== null &&
        (typeof y === 'object' || typeof y === 'function') &&
        typeof (y as any).then === 'function'
      ) {
        y = await y
      }
      if (isSkip(y)) {
        ;(skipped ??= []).push(i)
        y = undefined
      } else {
        // a primitive returns at once
        const refused = unsendable(y, 'result', TO_THREADS)
        if (refused !== undefined) return { worker, at: i, error: badResult(refused) }
      }
      out[i] = y
      // between items: a stop that came while this batch ran leaves the rest of it undone
      if (Atomics.load(flags, H_STOPPED) !== 0 && i + 1 < n && poll()) return { worker, stopped: true }
    }
  } catch (err) {
    return { worker, at: i, error: toWire(err) }
  }
  answered = out
  return { worker, out, ms: performance.now() - start, skipped }
}

/**
 * A batch under policies: each item has its own deadline (with `timeout`), and with `keepGoing` a
 * failed item is reported in `failed` and the batch goes on (the main thread retries or skips it).
 */
async function runPolicyBatch(task: unknown[]): Promise<Answer> {
  const f = fn
  const n = task.length
  const out = new Array<unknown>(n)
  let skipped: number[] | undefined
  let failed: FailedItem[] | undefined
  const start = performance.now()
  // with a timeout, one clock read per item: an item's end is the next one's start
  let now = start
  for (let i = 0; i < n; i++) {
    let y: unknown
    let err: unknown
    let threw = false
    let timedOut = false
    if (timeout !== undefined) {
      itemCtl = undefined
      deadline = now + timeout
      // the main thread ends this thread if it is still on this item some time past the deadline
      mark(i)
    }
    try {
      y = f(task[i], ctx)
      if (isThenable(y)) y = await (timeout === undefined ? y : withDeadline(y))
    } catch (e) {
      threw = true
      err = e
    }
    if (timeout !== undefined) {
      // a result or an error that came after the deadline is a timeout, as with mapStage (whose
      // timer would have failed the try first)
      now = performance.now()
      timedOut = err === TIMED_OUT || now >= deadline
      deadline = Number.POSITIVE_INFINITY
      itemCtl = undefined
    }
    // a stop while the item ran: its outcome (likely the stop's own error) is not the item's
    if (Atomics.load(flags, H_STOPPED) !== 0 && poll()) return { worker, stopped: true }
    let error: WireError | undefined
    if (timedOut) error = undefined
    else if (threw) error = toWire(err)
    else if (isSkip(y)) {
      ;(skipped ??= []).push(i)
      continue
    } else {
      const refused = unsendable(y, 'result', TO_THREADS)
      if (refused === undefined) {
        out[i] = y
        continue
      }
      error = badResult(refused)
    }
    if (!keepGoing) return timedOut ? { worker, at: i, timedOut } : { worker, at: i, error }
    ;(failed ??= []).push([i, error, timedOut])
  }
  answered = out
  return { worker, out, ms: performance.now() - start, skipped, failed }
}

/**
 * The end of the run, in this thread: runs `dispose` once (if the module exports it), lets this
 * thread's event loop turn, then waits (without blocking) until `n` threads have an end task.
 */
async function endTask(n: number): Promise<Answer> {
  // held until every thread has its task: piscina hands a task to any idle thread, and one that
  // answered at once could take a second task while another thread got none. Arrivals are
  // counted, not finished tasks, so that a dispose that does not return holds no other thread
  const seen = Atomics.add(flags, H_ARRIVED, 1) + 1
  Atomics.notify(flags, H_ARRIVED)
  let error: WireError | undefined
  if (prepared && disposeFn !== undefined && !disposed) {
    disposed = true
    try {
      const r = disposeFn(state, ctx)
      if (isThenable(r)) await r
    } catch (err) {
      error = toWire(err)
    }
  }
  // piscina blocks an idle thread (Atomics.wait) between tasks, so a timer the function set has
  // had no turn: give the timers that are due one now, so that one that throws ends this thread
  // with its error (the main thread fails the run with it) rather than vanish with the pool
  await new Promise((resolve) => setTimeout(resolve, 0))
  let arrived = Math.max(seen, Atomics.load(flags, H_ARRIVED))
  const until = performance.now() + END_BARRIER_MS
  while (arrived < n) {
    const left = until - performance.now()
    if (left <= 0) break
    const r = waitAsync(flags, H_ARRIVED, arrived, left)
    if (r.async) await r.value
    arrived = Atomics.load(flags, H_ARRIVED)
  }
  return error === undefined ? { worker } : { worker, error }
}
/** The longest a thread waits for the others at the end barrier (they are all idle by then). */
const END_BARRIER_MS = 5000

/** A result the sendable rule refused, as the error of its item. */
function badResult(refused: string): WireError {
  return toWire(
    new TypeError(
      `threadStage "${stage}": a result cannot be sent back from its thread: ${refused}; ${SENDABLE_TO_THREADS}`,
    ),
  )
}

// Piscina posts the answer after this module's function returned; if a result cannot be cloned
// (what the sendable rule cannot see: a detached buffer, a MessagePort the function did not list
// with ctx.transfer()), the post throws in a microtask, the thread dies and the main side gets an
// empty error. Name the result instead: the thread still dies (piscina's state for the task is
// gone), but with an error that says which result and why. Anything else uncaught is rethrown as it was.
process.on('uncaughtException', (err: unknown) => {
  if (isCloneFailure(err) && answered !== undefined) {
    for (let i = 0; i < answered.length; i++) {
      try {
        structuredClone(answered[i])
      } catch (cause) {
        const e = new Error(
          `threadStage "${stage}": its result could not be sent back from the thread (structured clone): ${describeCause(cause)}`,
        ) as Error & { resultIndex: number; worker: number }
        e.name = 'DataCloneError'
        e.resultIndex = i
        e.worker = worker
        throw e
      }
    }
  }
  throw err
})

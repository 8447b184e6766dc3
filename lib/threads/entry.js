/**
 * The worker-thread side of a thread stage: piscina loads this file in each thread of a run's pool
 * and calls its default export once per task. Plain JavaScript, not TypeScript, so that a thread
 * can load it both from lib/ (specs run the sources) and from dist/ (`npm run build` copies it):
 * a worker thread loads modules with Node's own loader, which does not read .ts.
 *
 * Protocol (the main side is lib/threads/pool.ts):
 * - workerData: `{ module, exportName, stage, control, slots, timeout, keepGoing }`; `control` is
 *   the control block (a SharedArrayBuffer; its layout is below, and in pool.ts). `timeout` is the
 *   per-item timeout in ms (undefined: none); `keepGoing` says a failed item does not end its batch
 *   (the stage retries or skips failures, on the main thread).
 * - a task that is an array is a batch of items on their first try; `{ items, attempt, id }` is a
 *   batch of items on try `attempt` + 1 (0: a first try; with `timeout`, every batch comes so),
 *   `id` the batch's id (not 0 with `timeout`: the thread writes it in its slot, with the item it
 *   runs). The answer is `{ worker, out, ms, skipped?, failed? }` (one result per item, `ms` the
 *   time spent on the batch, `skipped` the indexes of items whose function returned stageline's
 *   `skip`, `failed` `[index, error, timedOut]` per failed item with `keepGoing`),
 *   `{ worker, at, error, timedOut? }` when item `at` failed (at -1: the module or its init
 *   failed), or `{ worker, stopped: true }` when the run stopped before the batch was done.
 * - `{ end: n }` ends the run in this thread: runs the module's `dispose` export, lets the
 *   thread's timers that are due run (one that throws kills the thread, and the task rejects with
 *   its error), then holds the thread until `n` threads have their end task, so that each thread
 *   gets exactly one; the answer is `{ worker }` or `{ worker, error }` (dispose threw).
 * - any other task is a check: load the module, find the export, run the `init` export; answer
 *   `{ worker, dispose }` (whether the module exports `dispose`) or `{ worker, error }`.
 * @module
 */
import { MessagePort, threadId, workerData } from 'node:worker_threads'

const { module: moduleHref, exportName, stage, control, slots, timeout, keepGoing } = workerData

// The control block, shared with the main thread (pool.ts lays it out the same way: keep the two
// in step). Int32 header: [0] abort flag, [1] thread counter, [2] reason length, [3] threads
// arrived at the end barrier. Then `slots` slots of SLOT Int32 each: a thread claims a free one
// when it starts, and the main thread frees it when the thread exits. Then the abort reason's
// UTF-8 bytes.
const HEADER = 4
const SLOT = 6
/** In a slot: the threadId of the thread that holds it; 0 while it is free. */
const S_THREAD = 0
/** In a slot: 1 while its thread is inside a batch. */
const S_RUNNING = 1
/** In a slot: the id of the batch whose item runs under a timeout; 0 when none does. */
const S_BATCH = 2
/** In a slot: the index, within its batch, of that item. */
const S_ITEM = 3
/** In a slot: that item's deadline, in whole ms of the process's monotonic clock (wrapping Int32). */
const S_DEADLINE = 4
/** In a slot: the thread's index (ctx.worker). */
const S_WORKER = 5
const int32s = HEADER + SLOT * slots
const flags = new Int32Array(control, 0, int32s)
const reasonBytes = new Uint8Array(control, 4 * int32s)
/** This thread's 0-based index in its pool, in the order the threads started. */
const worker = Atomics.add(flags, 1, 1)
/** Where this thread's slot starts (-1 if none was free: only a run with many dead threads). */
let slot = -1
for (let k = 0; k < slots && slot < 0; k++) {
  if (Atomics.compareExchange(flags, HEADER + SLOT * k + S_THREAD, 0, threadId) === 0)
    slot = HEADER + SLOT * k
}
if (slot >= 0) Atomics.store(flags, slot + S_WORKER, worker)
/**
 * performance.now() is relative to this thread's start; the deadlines in the control block are
 * on the process's monotonic clock (process.hrtime, the one performance.now() reads), which the
 * main thread reads too. Both are read once first: the first call of each loads what it needs,
 * which would skew the offset by milliseconds.
 */
performance.now()
process.hrtime.bigint()
const clockOffset = Number(process.hrtime.bigint()) / 1e6 - performance.now()
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
function mark(i) {
  if (slot < 0) return
  flags[slot + S_DEADLINE] = Math.ceil(deadline + clockOffset) | 0
  if (i === 0) Atomics.store(flags, slot + S_BATCH, batchId)
  Atomics.store(flags, slot + S_ITEM, i)
}

/** No item of this thread runs under a timeout any more. */
function unmark() {
  if (slot >= 0) Atomics.store(flags, slot + S_BATCH, 0)
}

const ctl = new AbortController()
const signal = ctl.signal
const abortedGetter = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted').get

/** Aborts `signal` if the main thread raised the abort flag; says whether the run has stopped. */
function poll() {
  if (abortedGetter.call(signal)) return true
  if (Atomics.load(flags, 0) === 0) return false
  const text = new TextDecoder().decode(reasonBytes.slice(0, Atomics.load(flags, 2)))
  const cut = text.indexOf('\n')
  const reason = new Error(cut < 0 ? text : text.slice(cut + 1))
  if (cut >= 0) reason.name = text.slice(0, cut)
  ctl.abort(reason)
  return true
}

// `abort` listeners fire when the flag is raised, whenever this thread's event loop gets a turn
// (during an async task). A synchronous loop that reads `signal.aborted` or calls
// `throwIfAborted()` reads the flag itself, at once: both are shadowed on this one signal.
const waiting = Atomics.waitAsync(flags, 0, 0)
if (waiting.async) waiting.value.then(poll)
Object.defineProperty(signal, 'aborted', {
  get() {
    return poll() || abortedGetter.call(signal)
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
let itemCtl
/** Rejection reason of withDeadline(): the item's deadline passed while its promise was pending. */
const TIMED_OUT = Symbol('timed out')

function timeoutError() {
  const e = new Error(`stage "${stage}" took longer than ${timeout} ms on an item`)
  e.name = 'TimeoutError'
  e.stage = stage
  e.ms = timeout
  return e
}

/** Whether the item signal of `c` is aborted, aborting it first if the run stopped or its deadline passed. */
function itemAborted(c) {
  const s = c.signal
  if (abortedGetter.call(s)) return true
  if (poll()) {
    if (!abortedGetter.call(s)) c.abort(signal.reason)
    return true
  }
  // the deadline is the current item's: a signal kept past its item does not time out later
  if (c === itemCtl && performance.now() >= deadline) {
    c.abort(timeoutError())
    return true
  }
  return false
}

function newItemCtl() {
  const c = new AbortController()
  const s = c.signal
  Object.defineProperty(s, 'aborted', { get: () => itemAborted(c) })
  s.throwIfAborted = () => {
    itemAborted(c)
    throwIfAborted.call(s)
  }
  if (abortedGetter.call(signal)) c.abort(signal.reason)
  return c
}
if (timeout !== undefined) signal.addEventListener('abort', () => itemCtl?.abort(signal.reason))

/** `p`, or a rejection with TIMED_OUT once the item's deadline passes (aborting its signal). */
function withDeadline(p) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => {
        if (itemCtl !== undefined && !abortedGetter.call(itemCtl.signal)) itemCtl.abort(timeoutError())
        reject(TIMED_OUT)
      },
      Math.max(0, deadline - performance.now()),
    )
    p.then(
      (v) => {
        clearTimeout(t)
        resolve(v)
      },
      (e) => {
        clearTimeout(t)
        reject(e)
      },
    )
  })
}

/** Buffers the function asked to move, not copy, with this batch's results. */
let transfers = []
/** What the module's `init` export returned in this thread (ctx.state). */
let state
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
      value(...list) {
        for (let x of list) {
          if (ArrayBuffer.isView(x)) x = x.buffer
          if (!(x instanceof ArrayBuffer) && !(x instanceof MessagePort)) {
            throw new TypeError(
              `threadStage "${stage}": ctx.transfer() got ${x === null ? 'null' : typeof x === 'object' ? (x.constructor?.name ?? 'an object') : typeof x}, which cannot be moved (an ArrayBuffer, a view of one, or a MessagePort can)`,
            )
          }
          transfers.push(x)
        }
      },
    },
  }),
)

let fn
/** The module's `dispose` export, if it has one. */
let disposeFn
/** Set once the module is loaded and its `init` has run in this thread. */
let prepared = false
let disposed = false

/** Loads the module and runs its `init`, once per thread; rejects with an error that says what is wrong. */
async function prepare() {
  let ns
  try {
    ns = await import(moduleHref)
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
  fn = f
  disposeFn = ns.dispose
  // the error of a failing init goes to the run as it is, as with mapStage's init
  if (ns.init !== undefined) {
    let s = ns.init(ctx)
    if (s !== null && (typeof s === 'object' || typeof s === 'function') && typeof s.then === 'function') {
      s = await s
    }
    state = s
  }
  prepared = true
}

function wrap(what, cause) {
  return new Error(`threadStage "${stage}": ${what}: ${describeCause(cause)}`, { cause })
}

/** The results of the batch being answered now, kept in case posting them fails (see below). */
let answered

export default async function run(task) {
  answered = undefined
  let items = task
  if (!Array.isArray(task)) {
    if (task.items !== undefined) items = task.items
    else if (task.end !== undefined) return endTask(task.end)
    else {
      try {
        if (!prepared) await prepare()
        return { worker, dispose: disposeFn !== undefined }
      } catch (err) {
        return { worker, error: describe(err, 0) }
      }
    }
  }
  // marked running before the stop flag is read: either this batch sees the stop, or the main
  // thread sees it running (and gives it the grace period instead of destroying the pool at once)
  if (slot >= 0) Atomics.store(flags, slot + S_RUNNING, 1)
  try {
    if (poll()) return { worker, stopped: true }
    transfers = []
    if (!prepared) {
      try {
        await prepare()
      } catch (err) {
        return { worker, at: -1, error: describe(err, 0) }
      }
    }
    if (items === task) attempt = 0
    else {
      attempt = task.attempt
      batchId = task.id
    }
    const answer = await (timeout === undefined && !keepGoing ? runBatch(items) : runPolicyBatch(items))
    // no item runs any more (what follows may await: loading piscina's move() below)
    if (timeout !== undefined) unmark()
    if (transfers.length === 0 || answer.out === undefined) return answer
    const list = [...new Set(transfers)]
    // piscina moves what a "movable" answer lists; its marker symbol is private, so ask its move()
    const { move, transferableSymbol, valueSymbol } = await import('piscina')
    return move({ [transferableSymbol]: list, [valueSymbol]: answer })
  } finally {
    if (timeout !== undefined) unmark()
    if (slot >= 0) Atomics.store(flags, slot + S_RUNNING, 0)
  }
}

/** A batch with no policy: the first failure ends it. The hot path: keep it lean. */
async function runBatch(task) {
  const f = fn
  const n = task.length
  const out = new Array(n)
  let skipped
  const start = performance.now()
  let i = 0
  try {
    for (; i < n; i++) {
      let y = f(task[i], ctx)
      // awaiting a plain value would cost a microtask per item
      if (y !== null && (typeof y === 'object' || typeof y === 'function') && typeof y.then === 'function') {
        y = await y
      }
      const bad = unclonable(y)
      if (bad !== undefined) {
        if (!isSkip(y)) return { worker, at: i, error: badResult(bad) }
        ;(skipped ??= []).push(i)
        y = undefined
      }
      out[i] = y
      // between items: a stop that came while this batch ran leaves the rest of it undone
      if (Atomics.load(flags, 0) !== 0 && i + 1 < n && poll()) return { worker, stopped: true }
    }
  } catch (err) {
    return { worker, at: i, error: describe(err, 0) }
  }
  answered = out
  return { worker, out, ms: performance.now() - start, skipped }
}

/**
 * A batch under policies: each item has its own deadline (with `timeout`), and with `keepGoing` a
 * failed item is reported in `failed` and the batch goes on (the main thread retries or skips it).
 */
async function runPolicyBatch(task) {
  const f = fn
  const n = task.length
  const out = new Array(n)
  let skipped
  let failed
  const start = performance.now()
  // with a timeout, one clock read per item: an item's end is the next one's start
  let now = start
  for (let i = 0; i < n; i++) {
    let y
    let err
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
      if (y !== null && (typeof y === 'object' || typeof y === 'function') && typeof y.then === 'function') {
        y = await (timeout === undefined ? y : withDeadline(y))
      }
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
    if (Atomics.load(flags, 0) !== 0 && poll()) return { worker, stopped: true }
    let error
    if (timedOut) error = undefined
    else if (threw) error = describe(err, 0)
    else {
      const bad = unclonable(y)
      if (bad === undefined) {
        out[i] = y
        continue
      }
      if (isSkip(y)) {
        ;(skipped ??= []).push(i)
        continue
      }
      error = badResult(bad)
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
async function endTask(n) {
  // held until every thread has its task: piscina hands a task to any idle thread, and one that
  // answered at once could take a second task while another thread got none. Arrivals are
  // counted, not finished tasks, so that a dispose that does not return holds no other thread
  const seen = Atomics.add(flags, 3, 1) + 1
  Atomics.notify(flags, 3)
  let error
  if (prepared && disposeFn !== undefined && !disposed) {
    disposed = true
    try {
      const r = disposeFn(state, ctx)
      if (r !== null && (typeof r === 'object' || typeof r === 'function') && typeof r.then === 'function') {
        await r
      }
    } catch (err) {
      error = describe(err, 0)
    }
  }
  // piscina blocks an idle thread (Atomics.wait) between tasks, so a timer the function set has
  // had no turn: give the timers that are due one now, so that one that throws ends this thread
  // with its error (the main thread fails the run with it) rather than vanish with the pool
  await new Promise((resolve) => setTimeout(resolve, 0))
  let arrived = Math.max(seen, Atomics.load(flags, 3))
  const until = performance.now() + END_BARRIER_MS
  while (arrived < n) {
    const left = until - performance.now()
    if (left <= 0) break
    const r = Atomics.waitAsync(flags, 3, arrived, left)
    if (r.async) await r.value
    arrived = Atomics.load(flags, 3)
  }
  return error === undefined ? { worker } : { worker, error }
}
/** The longest a thread waits for the others at the end barrier (they are all idle by then). */
const END_BARRIER_MS = 5000

/** Whether `y` is stageline's `skip`: by its description, since the thread's copy of stageline has its own symbol. */
function isSkip(y) {
  return typeof y === 'symbol' && y.description === 'stageline.skip-item'
}

function badResult(bad) {
  return describe(new TypeError(`threadStage "${stage}": its result is ${bad}`), 0)
}

// Piscina posts the answer after this module's function returned; if a result cannot be cloned,
// the post throws in a microtask, the thread dies and the main side gets an empty error. Name the
// result instead: the thread still dies (piscina's state for the task is gone), but with an error
// that says which result and why. Anything else uncaught is rethrown as it was.
process.on('uncaughtException', (err) => {
  let cloneError = false
  try {
    cloneError = err?.name === 'DataCloneError'
  } catch {
    // a thrown value whose name cannot be read is rethrown as it is
  }
  if (cloneError && answered !== undefined) {
    for (let i = 0; i < answered.length; i++) {
      try {
        structuredClone(answered[i])
      } catch (cause) {
        const e = new Error(
          `threadStage "${stage}": its result could not be sent back from the thread (structured clone): ${cause.message}`,
        )
        e.name = 'DataCloneError'
        e.resultIndex = i
        e.worker = worker
        throw e
      }
    }
  }
  throw err
})

/**
 * Why structured clone would fail on, or silently change, `x` at its top level; undefined if it
 * will not. A class instance would arrive as a plain object without its methods, so it is refused.
 * Nested values are left to structured clone itself.
 */
function unclonable(x) {
  const t = typeof x
  if (t === 'function') return `a function (${x.name || 'anonymous'}), which cannot be cloned`
  if (t === 'symbol') return 'a symbol, which cannot be cloned'
  if (t !== 'object' || x === null) return undefined
  const p = Object.getPrototypeOf(x)
  if (p === Object.prototype || p === Array.prototype || p === null) return undefined
  if (ArrayBuffer.isView(x) || x instanceof Error) return undefined
  let ok = builtins.get(p)
  if (ok === undefined) builtins.set(p, (ok = isBuiltin(p)))
  if (ok) return undefined
  const name = typeof p.constructor === 'function' ? p.constructor.name : ''
  return `an instance of class ${name || '(anonymous)'}, which structured clone would turn into a plain object without its methods`
}
const builtins = new Map()
function isBuiltin(p) {
  const C = p.constructor
  if (typeof C !== 'function') return false
  if (C === globalThis.Blob) return true
  // Date, Map, Set, RegExp, ArrayBuffer, boxed primitives: classes the engine implements natively
  return /\{\s*\[native code\]\s*\}\s*$/.test(Function.prototype.toString.call(C))
}

/**
 * An error (or any thrown value) as plain data that survives structured clone. It never throws: a
 * thrown value is user code, and a getter, a Proxy trap or a toString that throws while the value
 * is read would otherwise reject the task, and the main thread would see a batch with no answer.
 * An error whose name or message cannot be read is described as its class, the way
 * describeCause() in lib/errors.ts describes it on the main thread (the wording is the same);
 * parts that cannot be read (stack, cause, a property) are left out.
 */
function describe(err, depth) {
  let isError
  try {
    isError = err instanceof Error || Object.prototype.toString.call(err) === '[object Error]'
  } catch {
    return { value: undescribable(err) }
  }
  if (!isError) {
    try {
      return { value: structuredClone(err) }
    } catch {
      return { value: describeCause(err) }
    }
  }
  let d
  try {
    d = { name: String(err.name), message: String(err.message), stack: undefined, props: undefined }
  } catch {
    return { value: undescribable(err) }
  }
  try {
    const stack = err.stack
    if (typeof stack === 'string') d.stack = stack
  } catch {
    // a stack that cannot be read is left out
  }
  const props = {}
  let any = false
  let keys = []
  try {
    keys = Object.keys(err)
  } catch {
    // keys that cannot be listed: no properties
  }
  for (const key of keys) {
    if (key === 'cause' || key === 'name' || key === 'message' || key === 'stack') continue
    try {
      props[key] = structuredClone(err[key])
      any = true
    } catch {
      // a property that cannot be read or cross threads is left out
    }
  }
  if (any) d.props = props
  if (depth < 8) {
    try {
      if ('cause' in err) d.cause = describe(err.cause, depth + 1)
    } catch {
      // a cause that cannot be read is left out
    }
  }
  return d
}

/**
 * A thrown value as text: `Name: message` for an Error, `String(value)` otherwise. Never throws.
 * The thread's copy of describeCause() in lib/errors.ts (a thread cannot load .ts): keep the two,
 * and their wording, in step.
 */
function describeCause(cause) {
  let isError
  try {
    isError = cause instanceof Error
  } catch {
    return undescribable(cause)
  }
  if (isError) {
    try {
      return `${String(cause.name)}: ${String(cause.message)}`
    } catch {
      return undescribable(cause)
    }
  }
  try {
    return String(cause)
  } catch {
    // an object whose toString() throws: its tag, `[object Object]`
  }
  try {
    return Object.prototype.toString.call(cause)
  } catch {
    return undescribable(cause)
  }
}

/** What describeCause says of a value it could not read: its class's name, read without calling a getter. */
function undescribable(cause) {
  try {
    const proto = Object.getPrototypeOf(cause)
    const C =
      proto === null || proto === undefined
        ? undefined
        : Object.getOwnPropertyDescriptor(proto, 'constructor')?.value
    const name = typeof C === 'function' ? Object.getOwnPropertyDescriptor(C, 'name')?.value : undefined
    if (typeof name === 'string' && name !== '') return `${name} (describing it threw)`
  } catch {
    // a Proxy whose traps throw: nothing about it can be read
  }
  return 'a value that could not be described'
}

/**
 * The worker-thread side of a thread stage: piscina loads this file in each thread of a run's pool
 * and calls its default export once per task. Plain JavaScript, not TypeScript, so that a thread
 * can load it both from lib/ (specs run the sources) and from dist/ (`npm run build` copies it):
 * a worker thread loads modules with Node's own loader, which does not read .ts.
 *
 * Protocol (the main side is lib/threads/pool.ts):
 * - workerData: `{ module, exportName, stage, control, slots }`; `control` is a SharedArrayBuffer
 *   laid out as Int32 [0] abort flag, [1] thread counter, [2] reason length, [3] unused, then
 *   `slots` pairs (threadId, 1 while inside a batch) by thread index, then the reason's UTF-8 bytes.
 * - a task that is an array is a batch of items; the answer is `{ worker, out, ms }` (one result
 *   per item, `ms` the time spent on the batch), `{ worker, at, error }` when item `at` threw, or
 *   `{ worker, stopped: true }` when the run stopped before the batch was done.
 * - any other task is a check: load the module, find the export, answer `{ worker }` or
 *   `{ worker, error }`.
 * @module
 */
import { MessagePort, threadId, workerData } from 'node:worker_threads'

const { module: moduleHref, exportName, stage, control, slots } = workerData
const flags = new Int32Array(control, 0, 4 + 2 * slots)
const reasonBytes = new Uint8Array(control, 4 * (4 + 2 * slots))
/** This thread's 0-based index in its pool, in the order the threads started. */
const worker = Atomics.add(flags, 1, 1)
/** Where this thread says it is inside a batch (-1 past the slots: only a run with many dead threads). */
const running = worker < slots ? 4 + 2 * worker + 1 : -1
if (running >= 0) Atomics.store(flags, running - 1, threadId)

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

/** Buffers the function asked to move, not copy, with this batch's results. */
let transfers = []
const ctx = Object.freeze({
  stage,
  worker,
  signal,
  transfer(...list) {
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
})

let fn
/** The loaded function, or a rejection with an error that says what is wrong with the module. */
async function load() {
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
  fn = f
  return f
}

function wrap(what, cause) {
  const name = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)
  return new Error(`threadStage "${stage}": ${what}: ${name}`, { cause })
}

/** The results of the batch being answered now, kept in case posting them fails (see below). */
let answered

export default async function run(task) {
  answered = undefined
  if (!Array.isArray(task)) {
    try {
      if (fn === undefined) await load()
      return { worker }
    } catch (err) {
      return { worker, error: describe(err, 0) }
    }
  }
  // marked running before the stop flag is read: either this batch sees the stop, or the main
  // thread sees it running (and gives it the grace period instead of destroying the pool at once)
  if (running >= 0) Atomics.store(flags, running, 1)
  try {
    if (poll()) return { worker, stopped: true }
    return await runBatch(task)
  } finally {
    if (running >= 0) Atomics.store(flags, running, 0)
  }
}

async function runBatch(task) {
  transfers = []
  let f = fn
  if (f === undefined) {
    try {
      f = await load()
    } catch (err) {
      return { worker, at: -1, error: describe(err, 0) }
    }
  }
  const n = task.length
  const out = new Array(n)
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
        return {
          worker,
          at: i,
          error: describe(new TypeError(`threadStage "${stage}": its result is ${bad}`), 0),
        }
      }
      out[i] = y
      // between items: a stop that came while this batch ran leaves the rest of it undone
      if (Atomics.load(flags, 0) !== 0 && i + 1 < n && poll()) return { worker, stopped: true }
    }
  } catch (err) {
    return { worker, at: i, error: describe(err, 0) }
  }
  const answer = { worker, out, ms: performance.now() - start }
  answered = out
  if (transfers.length === 0) return answer
  const list = [...new Set(transfers)]
  // piscina moves what a "movable" answer lists; its marker symbol is private, so ask its move()
  const { move, transferableSymbol, valueSymbol } = await import('piscina')
  return move({ [transferableSymbol]: list, [valueSymbol]: answer })
}

// Piscina posts the answer after this module's function returned; if a result cannot be cloned,
// the post throws in a microtask, the thread dies and the main side gets an empty error. Name the
// result instead: the thread still dies (piscina's state for the task is gone), but with an error
// that says which result and why. Anything else uncaught is rethrown as it was.
process.on('uncaughtException', (err) => {
  if (err?.name === 'DataCloneError' && answered !== undefined) {
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

/** An error (or any thrown value) as plain data that survives structured clone. */
function describe(err, depth) {
  if (!(err instanceof Error) && Object.prototype.toString.call(err) !== '[object Error]') {
    try {
      return { value: structuredClone(err) }
    } catch {
      return { value: String(err) }
    }
  }
  const d = { name: String(err.name), message: String(err.message), stack: err.stack, props: undefined }
  const props = {}
  let any = false
  for (const key of Object.keys(err)) {
    if (key === 'cause' || key === 'name' || key === 'message' || key === 'stack') continue
    try {
      props[key] = structuredClone(err[key])
      any = true
    } catch {
      // a property that cannot cross threads is left out
    }
  }
  if (any) d.props = props
  if ('cause' in err && depth < 8) d.cause = describe(err.cause, depth + 1)
  return d
}

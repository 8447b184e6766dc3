/**
 * The wire protocol of a thread stage, imported by both of its sides: the run on the main thread
 * (pool.ts) and the entry every thread loads (entry.ts). It holds what crosses between them, and
 * nothing that runs: the data a thread is started with, the tasks and their answers, the layout of
 * the shared-memory control block with its small accessors, how a stop's reason crosses, the clock
 * the deadlines are on, and how stageline's `skip` is recognised.
 *
 * It imports only small modules, since every thread loads it: the error form, `skip`, and
 * `describeCause`.
 *
 * Tasks (piscina hands each to one idle thread; the answer is what the thread's function returns):
 * - a batch of items on their first try, with no `timeout`: the array of items itself (the plain
 *   path: nothing else crosses);
 * - a `BatchTask`: items on try `attempt` + 1, numbered `id` under a `timeout` (the thread writes
 *   the id in its slot, with the item it runs and that item's deadline, for the watchdog);
 * - an `EndTask`: the end of the run in a thread (see entry.ts);
 * - a `CheckTask`: load the module, find the export, run `init`.
 * @module
 */
import { describeCause } from '../errors.js'
import { skip } from '../skip.js'
import type { WireError } from '../wire/errors.js'

/** What every thread of a run is started with (piscina's `workerData`). */
export interface ThreadData {
  /** The worker module, as a file URL. */
  readonly module: string
  /** The export to run. */
  readonly exportName: string
  /** The stage's name (for messages, and `ctx.stage`). */
  readonly stage: string
  /** The control block (see ControlBlock). */
  readonly control: SharedArrayBuffer
  /** How many slots the control block has. */
  readonly slots: number
  /** The per-item timeout in ms; undefined: none. */
  readonly timeout: number | undefined
  /** A failed item does not end its batch: the main thread retries or skips it. */
  readonly keepGoing: boolean
}

/** Items on try `attempt` + 1 (0: a first try), numbered `id` under a timeout (0 otherwise). */
export interface BatchTask {
  readonly items: unknown[]
  readonly attempt: number
  readonly id: number
}

/** The end of the run in a thread, for each of `end` threads: `dispose`, and a turn for due timers. */
export interface EndTask {
  readonly end: number
}

/** Load the module, find the export, run `init`. */
export interface CheckTask {
  readonly check: true
}

/** A task, as a thread receives it: a plain batch is the array of its items. */
export type Task = unknown[] | BatchTask | EndTask | CheckTask

/** The one check task (tasks are cloned on their way: it can be shared). */
export const CHECK: CheckTask = Object.freeze({ check: true })

/**
 * An item that failed its try, when the batch went on (`keepGoing`): its index in the task, its
 * error (undefined for a timeout), whether it timed out, and the thread that ran it where that is
 * not the answer's (an item whose thread was ended).
 */
export type FailedItem = [at: number, error: WireError | undefined, timedOut: boolean, worker?: number]

/** A thread's answer to a task. */
export interface Answer {
  /** The answering thread's index (its `ctx.worker`). */
  worker: number
  /** A batch done: one result per item (whatever is at a skipped or failed item's place). */
  out?: unknown[]
  /** The thread's time on the batch, in ms. */
  ms?: number
  /** Item `at` failed and ended the batch (at -1: the module or its `init` failed). */
  at?: number
  /** Why item `at` failed, or why a check or an end task failed. */
  error?: WireError
  /** Item `at` failed by its timeout. */
  timedOut?: boolean
  /** The run stopped before the batch was done. */
  stopped?: boolean
  /** The indexes of the items whose function returned `skip`. */
  skipped?: number[]
  /** The items that failed, when the batch went on. */
  failed?: FailedItem[]
  /** A check's answer: the module exports `dispose`. */
  dispose?: boolean
}

/**
 * Whether a function's result is stageline's `skip`. `skip` is a registered symbol
 * (`Symbol.for('stageline.skip')`): the copy of stageline a worker module imports in its thread has
 * the very symbol this thread's copy has, so it is recognised by identity. (A symbol cannot cross
 * threads: a thread sends the index of a skipped item instead.)
 */
export function isSkip(y: unknown): boolean {
  return y === skip
}

/**
 * Whether `err` is structured clone refusing what a message holds as it is posted: a
 * DataCloneError, or the TypeError Node throws for a MessagePort that the transfer list does not
 * name. These are what the sendable rule cannot see (a detached buffer, a port not listed). Never
 * throws: `err` may be anything a thread threw.
 */
export function isCloneFailure(err: unknown): boolean {
  try {
    const e = err as { name?: unknown; message?: unknown } | null
    if (e === null || typeof e !== 'object') return false
    if (e.name === 'DataCloneError') return true
    return e.name === 'TypeError' && typeof e.message === 'string' && e.message.includes('transferList')
  } catch {
    return false
  }
}

/** Int32s before the slots: [0] the stop flag, [1] thread counter, [2] reason length, [3] end arrivals. */
export const HEADER = 4
/** The stop flag: 1 once the run has stopped (then the reason's bytes are written). */
export const H_STOPPED = 0
/** Incremented by each thread as it starts: the previous value is its `ctx.worker`. */
export const H_THREADS = 1
/** The stop reason's length in bytes. */
export const H_REASON = 2
/** Threads arrived at the end barrier (see entry.ts endTask()). */
export const H_ARRIVED = 3
/** Int32s per slot; a thread claims a free slot when it starts, and the main thread frees it when the thread exits. */
export const SLOT = 6
/** In a slot: the threadId of the thread that holds it; 0 while it is free. */
export const S_THREAD = 0
/** In a slot: 1 while its thread is inside a batch. */
export const S_RUNNING = 1
/** In a slot: the id of the batch whose item runs under a timeout; 0 when none does. */
export const S_BATCH = 2
/** In a slot: the index, within its batch, of that item. */
export const S_ITEM = 3
/** In a slot: that item's deadline, in whole ms of `sharedNow()`'s clock (a wrapping Int32). */
export const S_DEADLINE = 4
/** In a slot: the thread's index (`ctx.worker`). */
export const S_WORKER = 5
/** The most bytes of a stop's reason that cross. */
export const REASON_BYTES = 1024

/**
 * The control block shared by a run and its threads (a SharedArrayBuffer): the Int32 header, then
 * `slots` slots of SLOT Int32s each, then the stop reason's UTF-8 bytes. Both sides build one of
 * these over the same buffer; the offsets above are the layout.
 */
export class ControlBlock {
  /** The header and the slots. */
  readonly flags: Int32Array
  /** Where the stop reason's bytes go. */
  readonly reason: Uint8Array

  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly slots: number,
  ) {
    const int32s = HEADER + SLOT * slots
    this.flags = new Int32Array(buffer, 0, int32s)
    this.reason = new Uint8Array(buffer, 4 * int32s)
  }

  /** A new block with `slots` slots. */
  static create(slots: number): ControlBlock {
    return new ControlBlock(new SharedArrayBuffer(4 * (HEADER + SLOT * slots) + REASON_BYTES), slots)
  }

  /** Where slot `k` starts in `flags`. */
  slot(k: number): number {
    return HEADER + SLOT * k
  }

  /** Whether the run has stopped. */
  stopped(): boolean {
    return Atomics.load(this.flags, H_STOPPED) !== 0
  }

  /** The main thread: the run stops, for `reason` (see encodeReason); wakes the threads that wait on the flag. */
  stop(reason: string): void {
    const bytes = new TextEncoder().encode(reason).subarray(0, REASON_BYTES)
    this.reason.set(bytes)
    Atomics.store(this.flags, H_REASON, bytes.length)
    Atomics.store(this.flags, H_STOPPED, 1)
    Atomics.notify(this.flags, H_STOPPED)
  }

  /** A thread: the stop's reason, as the main thread wrote it (read once the flag is up). */
  stopReason(): Error {
    return decodeReason(new TextDecoder().decode(this.reason.slice(0, Atomics.load(this.flags, H_REASON))))
  }

  /** A thread, as it starts: its index, and the slot it claims (-1 if none is free: only a run with many dead threads). */
  join(threadId: number): { worker: number; slot: number } {
    const worker = Atomics.add(this.flags, H_THREADS, 1)
    for (let k = 0; k < this.slots; k++) {
      const b = this.slot(k)
      if (Atomics.compareExchange(this.flags, b + S_THREAD, 0, threadId) === 0) {
        Atomics.store(this.flags, b + S_WORKER, worker)
        return { worker, slot: b }
      }
    }
    return { worker, slot: -1 }
  }

  /** The main thread, once thread `threadId` has exited: frees its slot and lowers its flags. */
  leave(threadId: number): void {
    const flags = this.flags
    for (let k = 0; k < this.slots; k++) {
      const b = this.slot(k)
      if (Atomics.load(flags, b + S_THREAD) !== threadId) continue
      Atomics.store(flags, b + S_BATCH, 0)
      Atomics.store(flags, b + S_RUNNING, 0)
      Atomics.store(flags, b + S_THREAD, 0)
    }
  }

  /** Whether any thread is inside a batch. */
  anyRunning(): boolean {
    for (let k = 0; k < this.slots; k++) {
      if (Atomics.load(this.flags, this.slot(k) + S_RUNNING) !== 0) return true
    }
    return false
  }
}

/**
 * A stop's reason as it crosses: `name` and `message` of an Error, or `Error` and the value as
 * text. It never throws: the reason may be a caller's signal reason (any value), read in an abort
 * listener, where a throw would be an uncaught exception and leave the threads unaware of the stop.
 * What cannot be read is described as describeCause() describes it.
 */
export function encodeReason(reason: unknown): string {
  let name = 'Error'
  let message: string
  try {
    if (reason instanceof Error) {
      name = String(reason.name)
      message = String(reason.message)
    } else message = String(reason)
  } catch {
    name = 'Error'
    message = describeCause(reason)
  }
  return `${name}\n${message}`
}

/** The reason `encodeReason` wrote, as an Error with its name and message. */
export function decodeReason(text: string): Error {
  const cut = text.indexOf('\n')
  const reason = new Error(cut < 0 ? text : text.slice(cut + 1))
  if (cut >= 0) reason.name = text.slice(0, cut)
  return reason
}

/**
 * The offset from this thread's `performance.now()` to the process's monotonic clock
 * (`process.hrtime`), which every thread reads alike: the deadlines in the control block are on it.
 * Each thread's `performance.now()` counts from its own start. Both clocks are read once first: the
 * first call of each loads what it needs, which would skew the offset by milliseconds.
 */
export function monotonicOffset(): number {
  performance.now()
  process.hrtime.bigint()
  return Number(process.hrtime.bigint()) / 1e6 - performance.now()
}

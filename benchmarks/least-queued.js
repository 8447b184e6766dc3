/**
 * The least any design with a bounded queue between generator steps can cost: each generator
 * driven by a pump that puts what it yields into a 64-slot ring read by the next one, a `then()`
 * per item, lazy hand-over to a parked reader, and nothing else (no stats, no errors, no stop, one
 * worker). benchmarks/floors.js times it beside stageline; benchmarks/clean.js judges the generator
 * target against it. Loads nothing, so a child that imports it stays as small as one that does not.
 * @module
 */

const END = Object.freeze({ value: undefined, done: true })

/**
 * Readers handed an item but not woken yet (lazy hand-over, as stageline's `offerLazy()`): woken
 * when a reader parks, or at the next turn of the event loop. One worker a step, so one list does.
 */
const handed = []
let turnBooked = false
function wakeHanded() {
  for (let i = 0; i < handed.length; i += 2) handed[i](handed[i + 1])
  handed.length = 0
}
function onTurn() {
  turnBooked = false
  wakeHanded()
}

/**
 * One queue between two generator steps, as little as it can be: a ring of 64 items, at most one
 * parked reader and one parked pump. Nothing of stageline's: no counters, no errors, no stop.
 */
class MinimalQueue {
  constructor() {
    this.ring = new Array(64)
    this.head = 0
    this.length = 0
    this.closed = false
    this.reader = undefined // resolves a parked next()
    this.pump = undefined // resumes a pump parked on a full queue
  }

  [Symbol.asyncIterator]() {
    return this
  }

  next() {
    if (this.length > 0) {
      const x = this.ring[this.head]
      this.head = (this.head + 1) & 63
      this.length--
      if (this.pump !== undefined && this.length <= 32) {
        const resume = this.pump
        this.pump = undefined
        resume()
      }
      return Promise.resolve({ value: x, done: false })
    }
    if (this.closed) return Promise.resolve(END)
    if (handed.length > 0) wakeHanded()
    return new Promise((resolve) => {
      this.reader = resolve
    })
  }
}

/**
 * Drives the generator `it` into `q` with a `then()` per item (cheaper than an await), handing an
 * item to a parked reader lazily.
 */
function minimalPump(it, q) {
  const onResult = (r) => {
    if (r.done) {
      q.closed = true
      if (q.reader !== undefined) q.reader(END)
      return
    }
    if (q.reader !== undefined) {
      handed.push(q.reader, { value: r.value, done: false })
      q.reader = undefined
      if (!turnBooked) {
        turnBooked = true
        setImmediate(onTurn)
      }
    } else {
      q.ring[(q.head + q.length) & 63] = r.value
      q.length++
    }
    if (q.length === 64) {
      if (handed.length > 0) wakeHanded()
      q.pump = go
    } else go()
  }
  const go = () => {
    it.next().then(onResult)
  }
  go()
}

/**
 * The 3 generator steps, each behind its own pump and queue, read with `for await`. The first
 * step reads the source through one resolved promise per item, as stageline's input view does
 * (a `for await` straight over a sync iterator costs more: the bare chain pays that).
 */
export function minimalQueued(steps, src) {
  const it = src[Symbol.iterator]()
  let input = {
    [Symbol.asyncIterator]() {
      return this
    },
    next: () => Promise.resolve(it.next()),
  }
  for (const step of steps) {
    const q = new MinimalQueue()
    minimalPump(step(input), q)
    input = q
  }
  return input
}

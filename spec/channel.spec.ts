import { describe, expect, test } from 'vitest'
import { Channel } from '../lib/channel/bounded.js'
import { Fifo } from '../lib/channel/fifo.js'
import { Handed, HandoverTurn } from '../lib/channel/handover.js'
import { DONE, EMPTY, SKIP } from '../lib/channel/inlet.js'
import { OrderedChannel } from '../lib/channel/reorder.js'
import { Waiter } from '../lib/channel/waiter.js'

/** A waiter for a worker that sends its results on with `offerLazy()`. */
function senderWaiter(): Waiter {
  const w = new Waiter()
  w.handed = new Handed(new HandoverTurn())
  return w
}

import { flush, numbers, Peak, recordUnhandledRejections, sorted, ticks } from './helpers/instruments.js'

recordUnhandledRejections()

/** Takes one item the way a worker does: poll, else park and read the hand-over. */
async function take<T>(
  ch: { poll(w: Waiter): unknown; wait(w: Waiter): Promise<void> },
  w = new Waiter(),
): Promise<T | typeof DONE> {
  const x = ch.poll(w)
  if (x !== EMPTY) return x as T | typeof DONE
  await ch.wait(w)
  const y = w.item
  w.item = undefined
  return y as T | typeof DONE
}

describe('Fifo', () => {
  test('keeps FIFO order across growth and wrap-around', () => {
    const f = new Fifo<number>(2)
    const out: number[] = []
    let next = 0
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < round % 7; i++) f.push(next++)
      for (let i = 0; i < round % 5 && f.length > 0; i++) out.push(f.shift())
    }
    while (f.length > 0) out.push(f.shift())
    expect(out).toEqual(numbers(next))
  })

  test('clear() empties it and remove() takes out one element keeping the order of the rest', () => {
    const f = new Fifo<number>()
    for (const x of [1, 2, 3, 4]) f.push(x)
    f.shift()
    f.push(5)
    expect(f.remove(3)).toBe(true)
    expect(f.remove(42)).toBe(false)
    const out: number[] = []
    while (f.length > 0) out.push(f.shift())
    expect(out).toEqual([2, 4, 5])
    f.push(9)
    f.clear()
    expect(f.length).toBe(0)
    f.push(10)
    expect(f.shift()).toBe(10)
  })
})

describe('park', () => {
  test('parks a waiter until its wake() is called, reusing the waiter', async () => {
    const w = new Waiter()
    let woken = 0
    for (let i = 0; i < 3; i++) {
      const p = w.park().then(() => woken++)
      await flush(1)
      expect(woken).toBe(i)
      w.wake()
      await p
      expect(woken).toBe(i + 1)
    }
  })
})

describe('Channel', () => {
  test('offer accepts up to capacity, poll returns items in FIFO order, then EMPTY', () => {
    const ch = new Channel<number>(3)
    expect([ch.offer(1), ch.offer(2), ch.offer(3), ch.offer(4)]).toEqual([true, true, true, false])
    expect(ch.length).toBe(3)
    const w = new Waiter()
    expect([ch.poll(w), ch.poll(w), ch.poll(w), ch.poll(w)]).toEqual([1, 2, 3, EMPTY])
  })

  test('a parked taker gets the next offered item directly, with its sequence number', async () => {
    const ch = new Channel<string>(0)
    const a = new Waiter()
    const b = new Waiter()
    const pa = take<string>(ch, a)
    const pb = take<string>(ch, b)
    expect(ch.offer('x')).toBe(true)
    expect(ch.offer('y')).toBe(true)
    expect(ch.offer('z')).toBe(false) // no taker left, no room
    expect(await pa).toBe('x')
    expect(await pb).toBe('y')
    expect([a.seq, b.seq]).toEqual([0, 1])
  })

  test('offerLazy() hands the item to a parked taker but wakes it only when the sender parks', async () => {
    const ch = new Channel<string>(4)
    const sender = senderWaiter()
    let got: unknown = 'nothing yet'
    const p = take<string>(ch).then((x) => {
      got = x
    })
    expect(ch.offerLazy('a', sender)).toBe(true)
    expect(ch.offerLazy('b', sender)).toBe(true) // the taker holds 'a' already: 'b' is buffered
    expect(ch.length).toBe(1)
    await ticks(20)
    expect(got).toBe('nothing yet') // handed over, not woken: it will take 'b' without parking
    void new Channel<number>(1).wait(new Waiter()) // another party parking changes nothing
    await ticks(20)
    expect(got).toBe('nothing yet')
    void new Channel<number>(1).wait(sender) // the sender parking wakes what it handed over
    await p
    expect(got).toBe('a')
    expect(ch.poll(new Waiter())).toBe('b')
  })

  test('offerLazy() wakes its taker by the next turn of the event loop when the sender does not park', async () => {
    const ch = new Channel<number>(4)
    let got: unknown = 'nothing yet'
    const p = take<number>(ch).then((x) => {
      got = x
    })
    expect(ch.offerLazy(7, senderWaiter())).toBe(true)
    await ticks(20)
    expect(got).toBe('nothing yet')
    await new Promise<void>((resolve) => setImmediate(resolve))
    await p
    expect(got).toBe(7)
  })

  test('offerLazy() from a party that only takes wakes the taker at once', async () => {
    const ch = new Channel<number>(4)
    const p = take<number>(ch)
    expect(ch.offerLazy(3, new Waiter())).toBe(true)
    expect(await p).toBe(3)
  })

  test('offerLazy() buffers when no taker is parked and says false when full, as offer() does', () => {
    const ch = new Channel<number>(2)
    const sender = senderWaiter()
    expect([ch.offerLazy(1, sender), ch.offerLazy(2, sender), ch.offerLazy(3, sender)]).toEqual([
      true,
      true,
      false,
    ])
    const w = new Waiter()
    expect([ch.poll(w), ch.poll(w), ch.poll(w)]).toEqual([1, 2, EMPTY])
  })

  test('capacity 0 is a hand-off: a producer parks until a taker takes its item', async () => {
    const ch = new Channel<number>(0)
    const producer = new Waiter()
    expect(ch.offer(1)).toBe(false)
    let accepted = false
    const put = ch.put(producer, 1).then(() => {
      accepted = true
    })
    await flush(1)
    expect(accepted).toBe(false)
    expect(ch.length).toBe(0)
    expect(ch.poll(new Waiter())).toBe(1)
    await put
    expect(accepted).toBe(true)
  })

  test('parked producers are let in once the buffer drains to half, one per item taken', async () => {
    const ch = new Channel<number>(4)
    for (let i = 0; i < 4; i++) ch.offer(i)
    const producers = [4, 5, 6].map((x) => {
      const w = new Waiter()
      const r = { done: false }
      void ch.put(w, x).then(() => {
        r.done = true
      })
      return r
    })
    const w = new Waiter()
    expect(ch.poll(w)).toBe(0)
    await flush(1)
    expect(producers.map((p) => p.done)).toEqual([false, false, false]) // 3 left, above half
    expect(ch.poll(w)).toBe(1)
    await flush(1)
    // down to half: one producer is let in (and woken), the others stay parked, not woken to find
    // the buffer full again
    expect(producers.map((p) => p.done)).toEqual([true, false, false])
    expect(ch.length).toBe(3)
    expect(ch.poll(w)).toBe(2)
    await flush(1)
    expect(producers.map((p) => p.done)).toEqual([true, true, false])
    const rest: unknown[] = []
    for (let x = ch.poll(w); x !== EMPTY; x = ch.poll(w)) rest.push(x)
    expect(rest).toEqual([3, 4, 5, 6]) // input order kept
    await flush(1)
    expect(producers[2]!.done).toBe(true)
  })

  test('a producer that defers does not overtake parked producers: it queues behind them', async () => {
    const ch = new Channel<number>(4)
    for (let i = 0; i < 4; i++) ch.offer(i)
    const parked = new Waiter()
    let admitted = false
    void ch.put(parked, 4).then(() => {
      admitted = true
    })
    const w = new Waiter()
    expect(ch.poll(w)).toBe(0) // room for one, above half: the parked producer still waits
    // a producer that overtakes takes the room (fast stages: it spares them a park)...
    const fast = senderWaiter()
    expect(ch.offerLazy(10, fast)).toBe(true)
    expect(ch.poll(w)).toBe(1)
    // ...one that defers says false, so that it parks behind the parked one
    const slow = senderWaiter()
    slow.defers = true
    expect(ch.offerLazy(11, slow)).toBe(false)
    let slowIn = false
    void ch.put(slow, 11).then(() => {
      slowIn = true
    })
    const rest: unknown[] = []
    for (let x = ch.poll(w); x !== EMPTY; x = ch.poll(w)) {
      rest.push(x)
      await flush(1)
    }
    // the parked producer's item comes before the one that came after it
    expect(rest).toEqual([2, 3, 10, 4, 11])
    expect([admitted, slowIn]).toEqual([true, true])
    // with nobody parked, a producer that defers goes straight in
    expect(ch.offerLazy(12, slow)).toBe(true)
  })

  test('close() delivers what is buffered, then DONE to every taker, parked or not', async () => {
    const ch = new Channel<number>(2)
    ch.offer(1)
    ch.close()
    const w = new Waiter()
    expect(ch.poll(w)).toBe(1)
    expect(ch.poll(w)).toBe(DONE)
    const empty = new Channel<number>(2)
    const parked = [take(empty), take(empty), take(empty)]
    empty.close()
    empty.close() // idempotent
    expect(await Promise.all(parked)).toEqual([DONE, DONE, DONE])
    expect(await take(empty)).toBe(DONE)
  })

  test('abort() drops buffered items and wakes parked takers and producers', async () => {
    const ch = new Channel<number>(1)
    ch.offer(1)
    let producerWoke = false
    void ch.put(new Waiter(), 2).then(() => {
      producerWoke = true
    })
    ch.abort()
    await flush(1)
    expect(producerWoke).toBe(true)
    expect(ch.poll(new Waiter())).toBe(DONE)
    expect(ch.offer(3)).toBe(true) // accepted and dropped: a late producer never parks
    expect(ch.length).toBe(0)
    const other = new Channel<number>(1)
    const parked = take(other)
    other.abort()
    other.abort()
    expect(await parked).toBe(DONE)
  })

  test('many producers and consumers move every item exactly once through a small channel', async () => {
    const ch = new Channel<number>(2)
    const got: number[] = []
    const peak = new Peak()
    const producers = numbers(4).map(async (p) => {
      const w = new Waiter()
      for (let i = p; i < 400; i += 4) {
        await ticks(i % 3)
        if (!ch.offer(i)) await ch.put(w, i)
      }
    })
    const consumers = numbers(3).map(async (c) => {
      const w = new Waiter()
      for (;;) {
        const x = await take<number>(ch, w)
        if (x === DONE) return
        peak.enter()
        await ticks((x + c) % 4)
        peak.leave()
        got.push(x)
      }
    })
    await Promise.all(producers)
    ch.close()
    await Promise.all(consumers)
    expect(sorted(got)).toEqual(numbers(400))
    expect(peak.max).toBe(3)
  })
})

describe('OrderedChannel', () => {
  test('releases filled slots strictly in input order', async () => {
    const ch = new OrderedChannel<string>(4)
    const w = new Waiter()
    for (let i = 0; i < 3; i++) expect(ch.tryAcquire()).toBe(true)
    ch.fill(2, 'c')
    ch.fill(1, 'b')
    expect(ch.poll(w)).toBe(EMPTY)
    const first = take<string>(ch)
    ch.fill(0, 'a')
    expect(await first).toBe('a')
    expect([ch.poll(w), ch.poll(w), ch.poll(w)]).toEqual(['b', 'c', EMPTY])
  })

  test('holds at most capacity slots; a reserver parks until the consumer takes the head', async () => {
    const ch = new OrderedChannel<number>(2)
    expect([ch.tryAcquire(), ch.tryAcquire(), ch.tryAcquire()]).toEqual([true, true, false])
    expect(ch.length).toBe(2)
    let reserved = false
    void ch.acquire(new Waiter()).then(() => {
      reserved = true
    })
    ch.fill(1, 1)
    ch.fill(0, 0)
    await flush(1)
    expect(reserved).toBe(false) // both slots hold finished items nobody took
    expect(ch.poll(new Waiter())).toBe(0)
    await flush(1)
    expect(reserved).toBe(true)
    expect(ch.length).toBe(2)
  })

  test('release() gives a slot back, and close() with nothing held says DONE', async () => {
    const ch = new OrderedChannel<number>(1)
    expect(ch.tryAcquire()).toBe(true)
    const parked = take(ch)
    ch.release()
    ch.close()
    expect(await parked).toBe(DONE)
    expect(ch.poll(new Waiter())).toBe(DONE)
  })

  test('SKIP slots are passed over without being delivered', async () => {
    const ch = new OrderedChannel<number>(8)
    for (let i = 0; i < 4; i++) ch.tryAcquire()
    ch.fill(0, SKIP)
    ch.fill(1, 10)
    ch.fill(2, SKIP)
    ch.fill(3, SKIP)
    ch.close()
    const w = new Waiter()
    expect(ch.poll(w)).toBe(10)
    expect(ch.poll(w)).toBe(DONE)
  })

  test('abort() wakes takers with DONE and reservers, then ignores fills', async () => {
    const ch = new OrderedChannel<number>(1)
    ch.tryAcquire()
    const taker = take(ch)
    let reserverWoke = false
    void ch.acquire(new Waiter()).then(() => {
      reserverWoke = true
    })
    ch.abort()
    expect(await taker).toBe(DONE)
    await flush(1)
    expect(reserverWoke).toBe(true)
    expect(ch.tryAcquire()).toBe(true)
    ch.fill(0, 1)
    expect(ch.poll(new Waiter())).toBe(DONE)
  })

  test('an unbounded window grows past its initial ring and keeps order', () => {
    const ch = new OrderedChannel<number>(Number.POSITIVE_INFINITY)
    const n = 5000
    for (let i = 0; i < n; i++) expect(ch.tryAcquire()).toBe(true)
    for (let i = n - 1; i >= 0; i--) ch.fill(i, i)
    const w = new Waiter()
    const out: number[] = []
    for (let x = ch.poll(w); x !== EMPTY; x = ch.poll(w)) out.push(x as number)
    expect(out).toEqual(numbers(n))
  })

  test('concurrent workers filling in random order give every item once, in order', async () => {
    const input = new Channel<number>(Number.POSITIVE_INFINITY)
    for (let i = 0; i < 300; i++) input.offer(i)
    input.close()
    const out = new OrderedChannel<number>(5)
    const peak = new Peak()
    const workers = numbers(3).map(async () => {
      const w = new Waiter()
      for (;;) {
        if (!out.tryAcquire()) await out.acquire(w)
        const x = await take<number>(input, w)
        if (x === DONE) {
          out.release()
          return
        }
        const seq = w.seq
        peak.enter()
        await ticks((x * 7) % 5)
        peak.leave()
        out.fill(seq, x * 2)
      }
    })
    const got: number[] = []
    const consumer = (async () => {
      for (;;) {
        const x = await take<number>(out)
        if (x === DONE) return
        expect(out.length).toBeLessThanOrEqual(5)
        got.push(x)
      }
    })()
    await Promise.all(workers)
    out.close()
    await consumer
    expect(got).toEqual(numbers(300).map((n) => n * 2))
    expect(peak.max).toBe(3)
  })
})

/**
 * Facts about it-pushable that docs/design.md relies on to explain why stageline's channels are
 * its own. If an upgrade changes one of these, this file fails and the design note must be revisited.
 */
import { pushable } from 'it-pushable'
import { expect, test } from 'vitest'
import { Channel } from '../lib/channel/bounded.js'
import { DONE } from '../lib/channel/inlet.js'
import { Waiter } from '../lib/channel/waiter.js'
import { flush } from './helpers/instruments.js'

test('it-pushable: of several concurrent next() calls only the last is answered; the others wait forever', async () => {
  const p = pushable<number>({ objectMode: true })
  const answered: string[] = []
  const calls = { a: p.next(), b: p.next(), c: p.next() }
  for (const [name, call] of Object.entries(calls)) void call.then(() => answered.push(name))
  p.push(1)
  p.push(2)
  p.push(3)
  await flush(3)
  expect(answered).toEqual(['c'])
  expect(p.readableLength).toBe(2) // two items sit in the buffer while two callers still wait
  p.end()
})

test('it-pushable: push() never waits, so its buffer grows with whatever is pushed', () => {
  const p = pushable<number>({ objectMode: true })
  for (let i = 0; i < 100_000; i++) p.push(i)
  expect(p.readableLength).toBe(100_000)
  p.end()
})

test('it-pushable: onEmpty() without a signal resolves while an item is still buffered', async () => {
  const p = pushable<number>({ objectMode: true })
  p.push(1)
  let resolved = false
  void p.onEmpty().then(() => {
    resolved = true
  })
  await flush(2)
  expect(resolved).toBe(true)
  expect(p.readableLength).toBe(1)
  p.end()
})

test('stageline Channel: every concurrent taker is answered, and offer() refuses past capacity', async () => {
  const ch = new Channel<number>(2)
  const takers = [new Waiter(), new Waiter(), new Waiter()]
  const parked = takers.map((w) => ch.wait(w))
  expect(ch.offer(1) && ch.offer(2) && ch.offer(3)).toBe(true) // handed straight to the three takers
  await Promise.all(parked)
  expect(takers.map((w) => w.item)).toEqual([1, 2, 3])
  expect(ch.offer(4) && ch.offer(5)).toBe(true)
  expect(ch.offer(6)).toBe(false) // full: the producer must wait
  ch.close()
  const w = new Waiter()
  expect([ch.poll(w), ch.poll(w), ch.poll(w)]).toEqual([4, 5, DONE])
})

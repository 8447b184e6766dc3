/**
 * The per-item path, measured by what it allocates rather than by the clock: promises created per
 * item (benchmarks/promises.js counts them with an async hook). A change that adds a promise to
 * the path of every item fails here, on any machine, however noisy.
 */
import { expect, test } from 'vitest'
import { promiseCases, promisesPerItem } from '../benchmarks/promises.js'
import * as sl from '../lib/index.js'

const N = 20_000
const counts = new Map<string, number>()

async function perItem(label: string): Promise<number> {
  const known = counts.get(label)
  if (known !== undefined) return known
  const c = promiseCases(sl).find((x) => x.label === label)
  if (c === undefined) throw new Error(`no promise case labelled ${label}`)
  const v = await promisesPerItem(() => c.job(N), N)
  counts.set(label, v)
  return v
}

test('synchronous map stages create no promise per item when nothing awaits them', async () => {
  // three stages: the few promises left are the parks and wakes of whole runs of items
  expect(await perItem('mapStage() x3 sync, workers 1, toArray()')).toBeLessThan(0.25)
  expect(await perItem('mapStage() x3 sync, workers 4, toArray()')).toBeLessThan(0.5)
})

test('behind `for await`, synchronous stages add almost nothing to the consumer own promises', async () => {
  const consumer = await perItem('for await over a sync iterable (no stages)')
  expect(consumer).toBeLessThanOrEqual(2.01)
  expect((await perItem('mapStage() x3 sync, workers 1, for await')) - consumer).toBeLessThan(0.3)
  expect((await perItem('mapStage() x3 sync, workers 4, for await')) - consumer).toBeLessThan(0.75)
})

test('async map stages cost the promises of the function and of awaiting it, and about no more', async () => {
  const bare = await perItem('bare async-generator chain, async x + 1')
  const stages = await perItem('mapStage() x3 async, workers 1, for await')
  // the function's promise and the await of it: 2 per stage; the consumer: 2
  expect(stages).toBeLessThan(8.5)
  expect(stages).toBeLessThan(bare / 2)
  // 8.4-9.1 when every hand-over woke its taker at once
  expect(await perItem('mapStage() x3 async, workers 4, toArray()')).toBeLessThan(7)
})

test('a generator stage adds at most two promises per item to the generator it runs', async () => {
  const bare = await perItem('bare async-generator chain, generators')
  // the worker's then() on the generator and the read of its input; the input parks once per run
  // of items, not per item (lazy hand-over, lib/queue.ts: 6.0 with 1 worker and 7.3 with 4 when a
  // taker was woken at once, or when any party's park woke every taker)
  expect((await perItem('stage() x3, workers 1, for await')) - bare).toBeLessThan(5.5)
  expect((await perItem('stage() x3, workers 4, for await')) - bare).toBeLessThan(5.5)
})

test('synchronous map stages after a generator stage add no promise per item (fused into its worker)', async () => {
  const alone = await perItem('stage() alone, toArray()')
  // without fusion, the first map stage's worker parks and is woken for every item: +2 per item
  expect((await perItem('stage() then mapStage() x2 sync, workers 2, toArray()')) - alone).toBeLessThan(0.1)
})

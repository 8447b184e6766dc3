/** Behaviours ported from paipa's and pipeframe's test suites, where those libraries hung or lost errors. */
import { expect, test } from 'vitest'
import { mapStage, pipe, type TaskException } from '../lib/index.js'
import { numbers, recordUnhandledRejections, rejectionOf, spiedSyncSource } from './helpers/instruments.js'

recordUnhandledRejections()

test('a crashing step over an endless source rejects instead of hanging', async () => {
  let n = 0
  const endless = {
    *[Symbol.iterator]() {
      for (;;) yield n++
    },
  }
  const err = await rejectionOf(
    pipe(
      endless,
      mapStage(async (x: number) => x, { workers: 4 }),
      mapStage(function crash(x: number) {
        if (x === 3) throw new Error('crash')
        return x
      }),
    ).toArray(),
  )
  expect((err as TaskException).stage).toBe('crash')
})

test('a step crashing after 1000 of 1,000,000 items stops reading the source right there', async () => {
  const { source, spy } = spiedSyncSource(numbers(1_000_000))
  const err = await rejectionOf(
    pipe(
      source,
      mapStage((x: number) => x, { workers: 2, qsize: 8 }),
      mapStage(
        (x: number) => {
          if (x === 1000) throw new Error('late crash')
          return x
        },
        { qsize: 8 },
      ),
    ).execute(),
  )
  expect((err as TaskException).item).toBe(1000)
  // what was read beyond the failing item is bounded by the queues, not by the input size
  expect(spy.reads).toBeLessThan(1000 + 2 + 8 + 1 + 8 + 2)
  expect(spy.returns).toBe(1)
})

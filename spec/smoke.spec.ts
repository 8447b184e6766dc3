import { expect, test } from 'vitest'
import { mapStage, pipe } from '../lib/index.js'

test('maps every item through two stages', async () => {
  const out = await pipe(
    [1, 2, 3],
    mapStage((n: number) => n + 1),
    mapStage(async (n: number) => n * 2),
  ).toArray()
  expect(out.sort()).toEqual([4, 6, 8])
})

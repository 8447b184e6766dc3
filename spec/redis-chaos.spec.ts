/**
 * stageline/redis under chaos, the short version of benchmarks/chaos.js: 20,000 items through a
 * redisStage served by 4 worker processes while a seeded chaos loop kills a worker, stops one past
 * visibilityTimeout, restarts redis-server (append-only file, fsync always) and blocks the
 * pipeline's event loop. Every item's result must come exactly once, no key of the run may stay,
 * and the workers' heaps stay flat. Needs the build (dist/): `npm test` builds first.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { describe, expect, test } from 'vitest'
import { FAULTS, runChaos } from '../benchmarks/chaos.js'
import { reportUnavailable } from './helpers/redis-server.js'

const BINARY = process.env.REDIS_SERVER ?? 'redis-server'
const probe = spawnSync(BINARY, ['--version'], { encoding: 'utf8' })
const built = existsSync(new URL('../dist/redis/index.js', import.meta.url))
const unavailable =
  probe.error !== undefined
    ? `${BINARY}: ${probe.error.message}`
    : built
      ? undefined
      : 'no build in dist/ (run `npm run build`)'
if (unavailable !== undefined) reportUnavailable('spec/redis-chaos.spec.ts', unavailable)

describe.runIf(unavailable === undefined)('stageline/redis under chaos', () => {
  test('every item exactly once through kills, stops, restarts and pauses; nothing left; heaps flat', async () => {
    const log: string[] = []
    const r = await runChaos({
      items: 20_000,
      msPerItem: 25,
      visibilityTimeout: 2000,
      every: [1500, 3000],
      // past visibilityTimeout; the soak's own pauses pass a renewal of the run's keys (10 s)
      pause: [2500, 3000],
      maxFaults: 5,
      seed: 3,
      log: (line) => log.push(line),
    })
    expect(r.results).toBe(20_000)
    expect(r.duplicates).toBe(0)
    expect(r.missing).toBe(0)
    expect(r.sumOk).toBe(true)
    expect(r.keysLeft).toEqual([])
    // each kind once first (seeded order), then one seeded choice
    for (const kind of FAULTS) expect(r.faults[kind].count, log.join('\n')).toBeGreaterThanOrEqual(1)
    expect(log.length).toBe(5)
    for (const h of r.heaps) expect(h.endMB - h.startMB).toBeLessThan(16)
    expect(r.heaps.length).toBeGreaterThanOrEqual(3)
  }, 60_000)
})

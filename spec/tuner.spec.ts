/**
 * The controller behind `workers: 'auto'`, as a pure function of what a stage measured: fed
 * windows from a model of a service, never the clock.
 */
import { describe, expect, test } from 'vitest'
import { type TuneDecision, Tuner, type TuneWindow } from '../lib/engine/tuner.js'

/**
 * A service with a capacity knee: `n` requests at once take `L * max(1, n / K) ** 1.5` ms each, so
 * throughput grows with `n` up to `K` and falls past it. One window of 100 ms at `n` workers.
 */
function knee(K: number, L = 5) {
  return (n: number, extra: Partial<TuneWindow> = {}): TuneWindow => {
    const itemMs = L * Math.max(1, n / K) ** 1.5
    return {
      ms: 100,
      workers: n,
      done: Math.round((n * 100) / itemMs),
      itemMs,
      starved: 0,
      blocked: 0,
      failures: 0,
      ...extra,
    }
  }
}

/** Runs the tuner for `windows` windows from `start` workers; returns the worker count after each. */
function drive(t: Tuner, model: (n: number) => TuneWindow, start: number, windows: number) {
  let n = start
  const counts: number[] = []
  const reasons: string[] = []
  for (let i = 0; i < windows; i++) {
    const d: TuneDecision | undefined = t.next(model(n))
    if (d !== undefined) {
      n = d.workers
      reasons.push(d.reason)
    }
    counts.push(n)
  }
  return { counts, reasons, n }
}

describe('Tuner', () => {
  test('from its minimum it doubles while throughput grows, and settles near the knee', () => {
    const { counts, reasons } = drive(new Tuner(1, 256), knee(16), 1, 120)
    expect(reasons[0]).toBe('throughput grows with workers: doubling')
    // up in a few doublings, not one worker at a time, each judged by the window right after it
    expect(counts.slice(0, 6).some((n) => n >= 16)).toBe(true)
    // the second half stays within 25% of the knee
    const late = counts.slice(60)
    for (const n of late) expect(Math.abs(n - 16)).toBeLessThanOrEqual(4)
  })

  test('a knee that moves down is followed down at once, and one that moves up is found again', () => {
    const t = new Tuner(1, 256)
    let r = drive(t, knee(16), 1, 60)
    r = drive(t, knee(4), r.n, 60)
    expect(r.reasons.some((x) => x.startsWith('time per item rose'))).toBe(true)
    for (const n of r.counts.slice(30)) expect(Math.abs(n - 4)).toBeLessThanOrEqual(1)
    r = drive(t, knee(32), r.n, 120)
    for (const n of r.counts.slice(80)) expect(Math.abs(n - 32)).toBeLessThanOrEqual(8)
  })

  test('a growth step into saturation is undone, so the stage does not creep past the knee', () => {
    const t = new Tuner(1, 256)
    let r = drive(t, knee(16), 1, 60)
    r = drive(t, knee(4), r.n, 200)
    expect(r.reasons).toContain('5 workers saturated the service: back to 4')
    // over the last 100 windows: at the knee, but for the probes' windows
    const late = r.counts.slice(100)
    expect(late.filter((n) => n === 4).length).toBeGreaterThanOrEqual(85)
    expect(Math.max(...late)).toBeLessThanOrEqual(5)
  })

  test('a knee that moves up long after is found in a few doublings, not judged by what counts measured before', () => {
    const t = new Tuner(1, 256)
    let r = drive(t, knee(16), 1, 60)
    r = drive(t, knee(4), r.n, 200)
    r = drive(t, knee(32), r.n, 60)
    // within 10 windows (the probe's wait included) it is past three quarters of the new knee: it
    // doubles again, once a step past where the old service was saturated pays
    expect(r.counts.slice(0, 10).some((n) => n >= 24)).toBe(true)
  })

  test('a stage that cannot use more workers (a synchronous one) gives them back, and tries again less and less often', () => {
    const t = new Tuner(1, 256)
    // throughput the same whatever the workers, time per item too
    const flat = (n: number): TuneWindow => ({
      ms: 100,
      workers: n,
      done: 1000,
      itemMs: 0.1,
      starved: 0,
      blocked: 0,
      failures: 0,
    })
    const { counts, reasons } = drive(t, flat, 1, 200)
    expect(
      reasons.filter((r) => r.startsWith('1 more workers') || r.includes('back to 1')).length,
    ).toBeGreaterThan(0)
    // it spent almost all its windows at one worker, and never went far
    expect(counts.filter((n) => n === 1).length).toBeGreaterThan(160)
    expect(Math.max(...counts)).toBeLessThanOrEqual(2)
  })

  test('a starved or blocked stage is never grown, and is shrunk to what its work needs', () => {
    const t = new Tuner(1, 256)
    const starved = t.next(knee(1000)(40, { starved: 0.9 }))
    expect(starved).toEqual({
      workers: 7,
      reason: '90% of worker time waiting for input (upstream is the limit): 7 workers are enough',
    })
    const blocked = t.next(knee(1000)(40, { blocked: 0.5 }))
    expect(blocked?.workers).toBe(31)
    expect(blocked?.reason).toMatch(/waiting for room downstream/)
    expect(t.next(knee(1000)(3, { starved: 0.5 }))).toBeUndefined()
  })

  test('failures and timeouts back the stage off by a quarter', () => {
    const t = new Tuner(1, 256)
    expect(t.next(knee(1000)(20, { failures: 40 }))).toEqual({
      workers: 15,
      reason: '40 of 400 items failed or timed out: backing off',
    })
    // a few failures among many items are not congestion
    expect(t.next(knee(1000)(20, { failures: 5 }))).toBeUndefined()
  })

  test('it stays within its bounds', () => {
    const grow = drive(new Tuner(3, 10), knee(64), 3, 50)
    expect(Math.min(...grow.counts)).toBeGreaterThanOrEqual(3)
    expect(Math.max(...grow.counts)).toBe(10)
    // a starved stage of 20 needs 3 workers: it goes to its minimum, 5
    const shrink = new Tuner(5, 50).next(knee(1000)(20, { starved: 0.95 }))
    expect(shrink?.workers).toBe(5)
  })

  test('windows with too few items are merged into the next one before they are judged', () => {
    const t = new Tuner(1, 256)
    const small: TuneWindow = { ms: 10, workers: 1, done: 3, itemMs: 5, starved: 0, blocked: 0, failures: 0 }
    expect(t.next(small)).toBeUndefined()
    expect(t.next(small)).toBeUndefined()
    // judged with 10 items: the stage's first window, which is partly its start, says nothing yet
    expect(t.next({ ...small, done: 4 })).toBeUndefined()
    expect(t.next({ ...small, done: 8 })).toEqual({
      workers: 2,
      reason: 'throughput grows with workers: doubling',
    })
  })
})

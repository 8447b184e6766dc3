/**
 * The report page and the live page, opened as a person would: in a real headless chromium (see
 * spec/helpers/browser.ts). Each loads with no console error and no request beyond its own origin;
 * the report's charts hold the series its data says, read back from the page, and its sentence
 * names the stage that was slow; the live page updates while a run goes on and shows the final
 * state after it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type Dashboard, dashboard } from '../lib/dashboard/index.js'
import { drain } from '../lib/engine/consumer.js'
import { Execution } from '../lib/engine/execution.js'
import { feed, mapStage, pipe } from '../lib/index.js'
import type { RunReport } from '../lib/report/format.js'
import { recordRun } from '../lib/report/recorder.js'
import { renderReport } from '../lib/report/render.js'
import { type Browser, reportUnavailable, startBrowser, watchedPage } from './helpers/browser.js'
import { defer, numbers, rejectionOf } from './helpers/instruments.js'
import { VirtualTime } from './helpers/virtual-time.js'

const started = await startBrowser()
if (!started.ok) reportUnavailable('spec/browser.spec.ts', started.reason)

const dir = mkdtempSync(join(tmpdir(), 'stageline-browser-'))
let browser: Browser | undefined
beforeAll(() => {
  if (started.ok) browser = started.browser
})
afterAll(async () => {
  await browser?.close()
  rmSync(dir, { recursive: true, force: true })
})

/** A run of fetch, parse (the slow one) and store in virtual time, recorded for its report. */
async function slowParseReport(): Promise<RunReport> {
  const c = new VirtualTime()
  const step = (name: string, ms: number) =>
    mapStage(
      async (n: number) => {
        await c.sleep(ms)
        return n
      },
      { name, qsize: 4, ...(name === 'fetch' ? { workers: 2 } : {}) },
    )
  const p = pipe(numbers(300), step('fetch', 1), step('parse', 10), step('store', 1))
  const exec = new Execution(p.plan, { clock: c.read, accounting: true })
  const rec = recordRun(exec, p.plan, {
    path: join(dir, 'unused.json'),
    items: true,
    clock: c.read,
    t0: c.now,
    manual: true,
  })
  await drain(exec, () => rec.sample())
  await rec.written
  return rec.report()
}

/** The values a chart series holds on the page. */
function values(attr: string | null): number[] {
  return (attr ?? '').split(',').map(Number)
}

describe.runIf(started.ok)('the HTML report in a browser', () => {
  test('opens from disk with no error and no request, names the slow stage, and its charts hold the series of the data', async () => {
    const report = await slowParseReport()
    const path = join(dir, 'slow-parse.html')
    writeFileSync(path, renderReport(report))
    const url = pathToFileURL(path).href
    const { page, errors, requests } = await watchedPage(browser!)
    await page.goto(url)
    expect(errors).toEqual([])
    expect(requests).toEqual([url])
    const verdict = page.locator('#verdict')
    expect(await verdict.getAttribute('data-stage')).toBe('parse')
    expect(await verdict.textContent()).toMatch(
      /^parse is the bottleneck: its workers were busy (9\d|100)% of the time, while fetch waited for room \d+% and store waited for input \d+%$/,
    )
    expect(await page.locator('.stage.bottleneck').getAttribute('data-stage')).toBe('parse')
    expect(await page.locator('#stages tr.bottleneck td').first().textContent()).toBe('parse')
    // the data embedded in the page is the report
    const embedded = JSON.parse((await page.locator('#stageline-report').textContent())!) as RunReport
    expect(embedded.runId).toBe(report.runId)
    const t = report.samples.t
    for (const [i, name] of ['fetch', 'parse', 'store'].entries()) {
      const stage = page.locator(`.stage[data-stage="${name}"]`)
      const charts = await stage
        .locator('figure.chart')
        .evaluateAll((fs) =>
          fs.map((f) => [
            f.getAttribute('data-chart'),
            [...f.querySelectorAll('path[data-series]')].map((p) => p.getAttribute('data-series')),
          ]),
        )
      expect(charts).toEqual([
        ['rate', ['out-per-second']],
        ['queue', ['queued', 'capacity']],
        ['time', ['working', 'starved', 'blocked']],
        ['workers', ['workers']],
        ['failures', ['failed', 'retried']],
      ])
      const s = report.samples.stages[i]!
      const rate = values(await stage.locator('[data-series="out-per-second"]').getAttribute('data-values'))
      expect(rate).toHaveLength(t.length)
      for (let k = 1; k < t.length; k++) {
        const expected = t[k]! > t[k - 1]! ? ((s.out[k]! - s.out[k - 1]!) * 1000) / (t[k]! - t[k - 1]!) : 0
        expect(rate[k]).toBeCloseTo(expected, 2)
      }
      expect(values(await stage.locator('[data-series="queued"]').getAttribute('data-values'))).toEqual(
        s.queued,
      )
      expect(values(await stage.locator('[data-series="workers"]').getAttribute('data-values'))).toEqual(
        s.workers,
      )
      // the shares of each stretch are those of the data, and add up to 1 where the workers' time grew
      const w = values(await stage.locator('[data-series="working"]').getAttribute('data-values'))
      const st = values(await stage.locator('[data-series="starved"]').getAttribute('data-values'))
      const b = values(await stage.locator('[data-series="blocked"]').getAttribute('data-values'))
      for (let k = 1; k < t.length; k++) {
        const dw = s.workingMs[k]! - s.workingMs[k - 1]!
        const all = dw + s.starvedMs[k]! - s.starvedMs[k - 1]! + s.blockedMs[k]! - s.blockedMs[k - 1]!
        if (all > 0) {
          expect(w[k]).toBeCloseTo(dw / all, 2)
          expect(w[k]! + st[k]! + b[k]!).toBeCloseTo(1, 2)
        } else expect(w[k]! + st[k]! + b[k]!).toBe(0)
      }
      const mid = Math.floor(t.length / 2)
      if (name === 'parse') expect(w[mid]).toBeGreaterThan(0.9)
      if (name === 'fetch') expect(b[mid]).toBeGreaterThan(0.5)
      if (name === 'store') expect(st[mid]).toBeGreaterThan(0.5)
    }
    // it draws: every series has a shape on screen
    const boxes = await page.locator('.stage[data-stage="parse"] [data-series="working"]').boundingBox()
    expect(boxes?.width).toBeGreaterThan(100)
    await page.close()
  })

  test("a failed run's report shows its state, the error, the stage and the item", async () => {
    const path = join(dir, 'failed.html')
    const check = mapStage(
      (n: number) => {
        if (n === 7) throw new Error('seven is not allowed')
        return n
      },
      { name: 'check' },
    )
    await rejectionOf(pipe(numbers(10), check).toArray({ report: path }))
    const url = pathToFileURL(path).href
    const { page, errors, requests } = await watchedPage(browser!)
    await page.goto(url)
    expect(errors).toEqual([])
    expect(requests).toEqual([url])
    expect(await page.locator('#state').textContent()).toBe('failed')
    const error = await page.locator('#error').textContent()
    expect(error).toContain(
      'TaskException in stage check, worker 0: The task "check-0" raised Error: seven is not allowed',
    )
    expect(await page.locator('#error code.item').textContent()).toBe('7')
    await page.close()
  })
})

describe.runIf(started.ok)('the live page in a browser', () => {
  let live: Dashboard
  beforeAll(async () => {
    live = await dashboard({ interval: 20 })
  })
  afterAll(() => live.close())

  test('shows a run as it goes, the held stage as the bottleneck, and its final state after it', async () => {
    const { page, errors, requests } = await watchedPage(browser!)
    await page.goto(live.url)
    // locators, not waitForFunction: the page's CSP forbids the eval a string condition needs
    await page.locator('#status', { hasText: /^No run yet/ }).waitFor({ timeout: 15_000 })
    const gates = numbers(12).map(() => defer())
    const input = feed<number>({ capacity: 12 })
    const fetchStage = mapStage((n: number) => n, { name: 'fetch', qsize: 2 })
    const parse = mapStage(
      async (n: number) => {
        await gates[n]!.promise
        return n
      },
      { name: 'parse', qsize: 2 },
    )
    const store = mapStage((n: number) => n, { name: 'store', qsize: 2 })
    const run = pipe(input, fetchStage, parse, store).start({ dashboard: live })
    const id = run.stats().runId
    await input.pushAll(numbers(12))
    const section = `section.run[data-run="${id}"]`
    await page.waitForSelector(`${section}[data-state="running"]`, { timeout: 15_000 })
    // parse holds item 0: its box is highlighted, fetch waits for room, store for input
    await page.waitForSelector(`${section} .box.bottleneck[data-stage="parse"]`, { timeout: 15_000 })
    expect(await page.locator(`${section} .verdict`).getAttribute('data-stage')).toBe('parse')
    expect(await page.locator(`${section} .box[data-stage="store"]`).getAttribute('data-out')).toBe('0')
    // it updates while the run goes on
    for (const g of gates.slice(0, 3)) g.resolve()
    await page.waitForSelector(`${section} .box[data-stage="store"][data-out="3"]`, { timeout: 15_000 })
    expect(await page.locator(`${section}`).getAttribute('data-state')).toBe('running')
    for (const g of gates) g.resolve()
    await run.stop()
    await page.waitForSelector(`${section}[data-state="done"]`, { timeout: 15_000 })
    for (const name of ['fetch', 'parse', 'store']) {
      expect(await page.locator(`${section} .box[data-stage="${name}"]`).getAttribute('data-out')).toBe('12')
    }
    expect(await page.locator(`${section} .meta`).textContent()).toMatch(/^12 out · /)
    // an ended run stays, next to a new one
    await pipe(
      [1, 2],
      mapStage((n: number) => n, { name: 'again' }),
    ).toArray({ dashboard: live })
    await page.locator('section.run[data-state="done"]').nth(1).waitFor({ timeout: 15_000 })
    expect(await page.locator('section.run[data-state="done"]').count()).toBe(2)
    expect(await page.locator(section).count()).toBe(1)
    expect(errors).toEqual([])
    const origin = new URL(live.url).origin
    expect(requests.filter((r) => new URL(r).origin !== origin)).toEqual([])
    expect(requests).toContain(`${origin}/events`)
    await page.close()
  })
})

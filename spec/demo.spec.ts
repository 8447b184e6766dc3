import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, test } from 'vitest'
import { decodeEntities, pickMostCommon } from '../examples/demo/crawl.js'
import {
  DEFAULTS,
  type DemoIO,
  main,
  parseFlags,
  REPORT_FILE,
  runDemo,
  USAGE,
} from '../examples/demo/main.js'
import { pageHtml, pageLatency, pageTitle, startPageServer } from '../examples/demo/server.js'
import type { ProgressStream } from '../lib/progress/index.js'
import { recordUnhandledRejections } from './helpers/instruments.js'

recordUnhandledRejections()

/** The demo's reports go here, never into the project. */
const dir = mkdtempSync(join(tmpdir(), 'stageline-demo-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let reports = 0
const reportPath = (): string => join(dir, `report-${++reports}.html`)

class Capture implements ProgressStream {
  text = ''
  readonly isTTY = false
  write(chunk: string): boolean {
    this.text += chunk
    return true
  }
}

function io(extra: Pick<DemoIO, 'onInterrupt'> = {}): DemoIO & { stdout: Capture; stderr: Capture } {
  return { stdout: new Capture(), stderr: new Capture(), progressInterval: 20, ...extra }
}

/** The most common title of the first `pages` pages, computed from the site's definition. */
function expectedMostCommon(pages: number): { title: string; count: number; titles: number } {
  const counts = new Map<string, number>()
  let titles = 0
  for (let i = 0; i < pages; i++) {
    const t = pageTitle(i)
    if (t === undefined) continue
    const title = decodeEntities(t)
    counts.set(title, (counts.get(title) ?? 0) + 1)
    titles++
  }
  const [title, count] = pickMostCommon(counts)!
  return { title, count, titles }
}

describe('the demo', () => {
  test('main() crawls a tiny site and prints the most common title, the stats and the speed-up', async () => {
    const out = io()
    const report = reportPath()
    const code = await main(
      ['--pages', '60', '--latency', '1', '--workers', '4', '--baseline', '10', '--report', report],
      out,
    )
    expect(out.stderr.text).not.toContain('demo failed')
    expect(code).toBe(0)
    const expected = expectedMostCommon(60)
    expect(out.stdout.text).toContain('stageline demo: 60 pages on http://127.0.0.1:')
    expect(out.stdout.text).toContain(
      `most common title: "${expected.title}" (${expected.count} of ${expected.titles} titles)`,
    )
    expect(out.stdout.text).toMatch(/fetchPage\s+4\s+60\s+60\s+0\s+0\s+0/)
    expect(out.stdout.text).toMatch(/titles\s+2\s+60\s+\d+/)
    expect(out.stdout.text).toMatch(
      /speed-up over workers: 1: \d+\.\dx \(4 workers: .*; 1 worker took .* for 10 pages/,
    )
    // the progress reporter wrote plain lines (the stream is not a TTY), ending with the final state
    expect(out.stderr.text).toMatch(/\[stageline [^\]]+\] done, 1 out \| fetchPage in 60 out 60/)
    // the report is written, and the demo says where
    expect(out.stdout.text).toContain(`report: ${report}\n`)
    expect(readFileSync(report, 'utf8')).toMatch(/^<!doctype html>[\s\S]*id="verdict"/)
  })

  test('--dashboard shows the run on the live page and keeps it up until Ctrl-C', async () => {
    let interrupt: (() => void) | undefined
    const out = io({
      onInterrupt: (handler) => {
        interrupt = handler
        return () => {
          interrupt = undefined
        }
      },
    })
    const code = main(
      ['--pages', '30', '--latency', '0', '--baseline', '0', '--dashboard', '--report', reportPath()],
      out,
    )
    while (!out.stdout.text.includes('press Ctrl-C to end')) await new Promise((r) => setImmediate(r))
    const url = /live page: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out.stdout.text)![1]!
    const runs = (await (await fetch(`${url}runs.json`)).json()) as { state: string; itemsOut: number }[]
    expect(runs).toEqual([expect.objectContaining({ state: 'done', itemsOut: 1 })])
    interrupt!()
    expect(await code).toBe(0)
    await expect(fetch(url)).rejects.toThrow()
  })

  test('runDemo() resolves to its findings, with stats that add up', async () => {
    const result = await runDemo(
      { ...DEFAULTS, pages: 50, workers: 3, latency: 0, baseline: 0, report: reportPath(), dashboard: false },
      io(),
    )
    const expected = expectedMostCommon(50)
    expect(result.mostCommon).toEqual(expected)
    expect(result.interrupted).toBe(false)
    expect(result.speedUp).toBeUndefined()
    const [fetch, titles, most] = result.stats.stages
    expect(fetch).toMatchObject({ name: 'fetchPage', workers: 3, in: 50, out: 50, failed: 0 })
    expect(titles).toMatchObject({ name: 'titles', workers: 2, in: 50, out: expected.titles })
    expect(most).toMatchObject({ name: 'mostCommon', in: expected.titles, out: 1 })
    expect(result.stats.state).toBe('done')
  })

  test('--help explains every flag and exits 0', async () => {
    const out = io()
    expect(await main(['--help'], out)).toBe(0)
    expect(out.stdout.text).toBe(USAGE)
    for (const flag of [
      '--pages',
      '--workers',
      '--latency',
      '--baseline',
      '--report',
      '--dashboard',
      '--help',
      'Ctrl-C',
    ]) {
      expect(USAGE).toContain(flag)
    }
    expect(await main(['-h'], io())).toBe(0)
  })

  test('a bad flag or value exits 2 with a message naming it', async () => {
    const unknown = io()
    expect(await main(['--pagez', '3'], unknown)).toBe(2)
    expect(unknown.stderr.text).toContain("Unknown option '--pagez'")
    expect(unknown.stderr.text).toContain('Run with --help to see the options.')
    expect(unknown.stdout.text).toBe('')

    const zero = io()
    expect(await main(['--workers', '0'], zero)).toBe(2)
    expect(zero.stderr.text).toContain('--workers expects an integer from 1 and up, got "0"')

    expect(() => parseFlags(['--latency', 'fast'])).toThrow(/--latency expects a number of milliseconds/)
    expect(() => parseFlags(['--pages', '1.5'])).toThrow(
      /--pages expects an integer from 1 and up, got "1.5"/,
    )
    expect(() => parseFlags(['extra'])).toThrow(/Unexpected argument 'extra'/)
    expect(() => parseFlags(['--report', 'out.txt'])).toThrow(
      '--report expects a file name ending in .html or .json, got "out.txt"',
    )
    expect(parseFlags(['--latency', '2.5', '--baseline', '0'])).toEqual({
      help: false,
      config: { ...DEFAULTS, latency: 2.5, baseline: 0 },
    })
  })

  test("by default the fetch stage's workers tune themselves, and the closing line compares them with fixed counts", async () => {
    expect(DEFAULTS.workers).toBe('auto')
    expect(parseFlags(['--workers', 'auto', '--capacity', '6', '--compare', '20'])).toMatchObject({
      config: { workers: 'auto', capacity: 6, compare: 20 },
    })
    const out = io()
    const result = await runDemo(
      { ...DEFAULTS, pages: 300, latency: 2, capacity: 6, compare: 30, baseline: 0, report: reportPath() },
      out,
    )
    expect(out.stdout.text).toContain(
      "pipe(urls, fetchPage (workers: 'auto'), titles (2 workers), mostCommon)",
    )
    expect(out.stdout.text).toMatch(
      /workers: 'auto' settled at \d+ workers and fetched \d+ pages\/s; the best fixed count measured, \d+ workers, fetched \d+ pages\/s on a sample: auto reached \d+% of it/,
    )
    expect(result.auto?.fixed?.map((f) => f.workers)).toEqual([3, 6, 12, 24])
    expect(result.stats.stages[0]).toMatchObject({ name: 'fetchPage', tuning: 'auto', in: 300, out: 300 })
  })

  test('Ctrl-C stops gracefully: pages in flight are finished, the results so far printed, exit 130', async () => {
    let interrupt: (() => void) | undefined
    const out = io({
      onInterrupt: (handler) => {
        interrupt = handler
        return () => {
          interrupt = undefined
        }
      },
    })
    // a site large and slow enough that the run is still going when the interrupt comes
    const running = runDemo(
      {
        ...DEFAULTS,
        pages: 400,
        workers: 4,
        latency: 20,
        baseline: 20,
        report: reportPath(),
        dashboard: false,
      },
      out,
    )
    await new Promise((resolve) => setImmediate(resolve))
    while (interrupt === undefined) await new Promise((resolve) => setImmediate(resolve))
    interrupt()
    const result = await running
    expect(result.interrupted).toBe(true)
    expect(result.speedUp).toBeUndefined()
    const fetch = result.stats.stages[0]!
    expect(fetch.in).toBeLessThan(400)
    expect(fetch.in).toBe(fetch.out) // every page taken in was finished
    expect(result.mostCommon?.titles).toBe(result.stats.stages[1]!.out)
    expect(out.stderr.text).toContain('Ctrl-C: stopping')
    expect(out.stdout.text).toContain(`interrupted: ${fetch.out} of 400 pages fetched`)
    expect(interrupt).toBeUndefined() // the handler was removed
  })

  test('a second Ctrl-C aborts at once, and main() exits 130', async () => {
    let interrupt: (() => void) | undefined
    const out = io({
      onInterrupt: (handler) => {
        interrupt = handler
        return () => {}
      },
    })
    // every page takes at least 500 ms, so the graceful stop is still waiting when the abort comes
    const code = main(
      ['--pages', '100', '--workers', '4', '--latency', '1000', '--report', reportPath()],
      out,
    )
    while (interrupt === undefined) await new Promise((resolve) => setImmediate(resolve))
    interrupt()
    interrupt()
    expect(await code).toBe(130)
    expect(out.stdout.text).toContain('aborted: no result')
    expect(out.stdout.text).toMatch(/stopped after \d+ ms/)
  })
})

describe('the demo site', () => {
  test('serves its pages with titles, some repeated, some missing, and 404 elsewhere', async () => {
    const server = await startPageServer({ pages: 5, latency: 0 })
    try {
      expect(server.urls).toHaveLength(5)
      const res = await fetch(server.urls[3]!)
      expect(res.status).toBe(200)
      expect(await res.text()).toBe(pageHtml(3))
      expect((await fetch(`${server.url}/page/5`)).status).toBe(404)
      expect((await fetch(`${server.url}/other`)).status).toBe(404)
      expect(server.served).toBe(1)
    } finally {
      await server.close()
    }
    const titles = Array.from({ length: 1000 }, (_, i) => pageTitle(i))
    const missing = titles.filter((t) => t === undefined).length
    expect(missing).toBeGreaterThan(0)
    expect(missing).toBeLessThan(100)
    expect(new Set(titles).size).toBeLessThan(40)
    expect(pageHtml(0)).toContain(`<title>${pageTitle(0)}</title>`)
  })

  test('latencies average near the mean, with a tail', () => {
    const ls = Array.from({ length: 5000 }, (_, i) => pageLatency(i, 40))
    const mean = ls.reduce((a, b) => a + b, 0) / ls.length
    expect(mean).toBeGreaterThan(36)
    expect(mean).toBeLessThan(44)
    expect(Math.min(...ls)).toBeGreaterThanOrEqual(20)
    expect(Math.max(...ls)).toBeGreaterThan(100)
    expect(Math.max(...ls)).toBeLessThanOrEqual(240)
    expect(pageLatency(7, 0)).toBe(0)
  })

  test('a request the client gives up on is dropped, and close() ends those still waiting', async () => {
    const server = await startPageServer({ pages: 5, latency: 60_000 })
    const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
    const ac = new AbortController()
    const given = fetch(server.urls[0]!, { signal: ac.signal }).catch((err: unknown) => err)
    while (server.waiting < 1) await turn()
    ac.abort()
    expect(await given).toBeInstanceOf(Error)
    while (server.waiting > 0) await turn()
    const stuck = fetch(server.urls[1]!).catch((err: unknown) => err)
    while (server.waiting < 1) await turn()
    await server.close()
    expect(await stuck).toBeInstanceOf(Error)
    expect(server.waiting).toBe(0)
    expect(server.served).toBe(0)
  })
})

const built = fileURLToPath(new URL('../build/examples/demo/main.js', import.meta.url))

describe('the demo as a process (needs `npm run build`)', () => {
  test('a real SIGINT stops it gracefully and it exits by itself with code 130', async () => {
    expect(existsSync(built), `${built} is missing: run \`npm run build\` first`).toBe(true)
    // run from the spec's folder: the demo writes its report to the working directory
    const child = spawn(process.execPath, [built, '--pages', '2000', '--latency', '20', '--workers', '4'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: dir,
    })
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => {
      stderr += d
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d
        if (stdout.includes('pipe(urls,')) resolve()
      })
    })
    child.kill('SIGINT')
    expect(await exited, stderr).toBe(130)
    expect(stdout).toContain('interrupted:')
    expect(stdout).toMatch(/fetchPage\s+4\s+\d+/)
    expect(stderr).toContain('Ctrl-C: stopping')
    expect(stdout).toContain(`report: ${join(dir, REPORT_FILE)}`)
    expect(existsSync(join(dir, REPORT_FILE))).toBe(true)
  })
})

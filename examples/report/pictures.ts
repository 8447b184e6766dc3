/**
 * `npm run docs:pictures`: makes the picture of a run report that docs/stats-and-progress.md
 * shows, from the real page: runs a small pipeline whose middle stage is the slow one, writes its
 * report, opens it in headless Chromium and saves a screenshot of its top to
 * docs/pictures/run-report.png. Not run by `npm test`; the picture is committed.
 *
 * Needs Chromium (Debian: `apt-get install chromium`; set CHROMIUM to use another binary).
 * @module
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { chromium } from 'playwright-core'
import { mapStage, pipe } from 'stageline'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const out = join(root, 'docs', 'pictures', 'run-report.png')

/** fetch (8 workers) -> parse (2 workers, the slow one) -> store: 600 items, about 2 seconds. */
async function writeReport(path: string): Promise<void> {
  const fetchPage = mapStage(
    async (id: number) => {
      await sleep(4) // a request
      return { id, body: `<p>${id}</p>` }
    },
    { name: 'fetch', workers: 8, qsize: 16 },
  )
  const parse = mapStage(
    async (page: { id: number; body: string }) => {
      await sleep(6) // a slower service
      return { id: page.id, length: page.body.length }
    },
    { name: 'parse', workers: 2, qsize: 16 },
  )
  const store = mapStage(
    async (row: { id: number; length: number }) => {
      await sleep(1)
      return row.id
    },
    { name: 'store', workers: 1, qsize: 16 },
  )
  const ids = Array.from({ length: 600 }, (_, i) => i)
  await pipe(ids, fetchPage, parse, store).execute({ report: path })
}

const dir = mkdtempSync(join(tmpdir(), 'stageline-pictures-'))
try {
  const report = join(dir, 'run.html')
  await writeReport(report)
  const context = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1320, height: 900 },
    deviceScaleFactor: 1,
  })
  try {
    const page = await context.newPage()
    await page.goto(pathToFileURL(report).href)
    // the summary, the sentence, the table and the first two stages
    const second = await page.locator('.stage').nth(1).boundingBox()
    const height = Math.ceil((second?.y ?? 860) + (second?.height ?? 0) + 16)
    mkdirSync(dirname(out), { recursive: true })
    await page.screenshot({ path: out, clip: { x: 0, y: 0, width: 1320, height } })
  } finally {
    await context.close()
  }
  console.log(`wrote ${out}`)
} finally {
  rmSync(dir, { recursive: true, force: true })
}

/**
 * A real headless browser for the specs that open what a person would: Debian's `chromium`
 * driven by playwright-core, with a fresh profile in a temporary folder and nothing that reaches
 * out (no background networking, no component updates, no sync).
 *
 * When the browser cannot start, `startBrowser()` resolves to the reason instead of throwing, and
 * `reportUnavailable()` says so loudly: a console warning, plus a test named "NOT RUN: ..." that is
 * skipped on a developer's machine and FAILS under CI (CI=true), where `.ci/run` installs chromium
 * and a missing one is a broken setup, not something to skip.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page, type Request } from 'playwright-core'
import { test } from 'vitest'

/** The browser's binary: Debian's chromium unless CHROMIUM names another. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'

export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export interface Browser {
  readonly context: BrowserContext
  close(): Promise<void>
}

export type Started = { ok: true; browser: Browser } | { ok: false; reason: string }

/** Starts chromium with a fresh profile; resolves to the reason when it cannot. */
export async function startBrowser(): Promise<Started> {
  const profile = mkdtempSync(join(tmpdir(), 'stageline-chromium-'))
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    })
    return {
      ok: true,
      browser: {
        context,
        async close() {
          await context.close()
          rmSync(profile, { recursive: true, force: true })
        },
      },
    }
  } catch (err) {
    rmSync(profile, { recursive: true, force: true })
    return { ok: false, reason: (err as Error).message.split('\n')[0]! }
  }
}

/** What a page did that a person would notice: console errors, page errors, and every request it made. */
export interface Watched {
  readonly errors: string[]
  readonly requests: string[]
}

/** Opens a new page that records its console errors, uncaught errors and requests. */
export async function watchedPage(browser: Browser): Promise<{ page: Page } & Watched> {
  const page = await browser.context.newPage()
  const errors: string[] = []
  const requests: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text())
  })
  page.on('pageerror', (e) => errors.push(e.message))
  page.on('request', (r: Request) => requests.push(r.url()))
  return { page, errors, requests }
}

/** Says loudly that a spec file's browser tests did not run (see the module comment). */
export function reportUnavailable(file: string, reason: string): void {
  const line = '*'.repeat(100)
  console.warn(
    `\n${line}\n${file}: the browser specs DID NOT RUN: ${reason}\n` +
      `Install chromium (Debian: apt-get install chromium) or set CHROMIUM to its path.\n${line}\n`,
  )
  const name = `NOT RUN: chromium unavailable (${reason})`
  if (process.env.CI) {
    test(name, () => {
      throw new Error(`chromium is required under CI (.ci/run installs it): ${reason}`)
    })
  } else test.skip(name, () => {})
}

/**
 * The demo's local web site: an HTTP server on 127.0.0.1 serving `pages` HTML pages, each after a
 * latency drawn from a skewed distribution (most pages come back near the typical latency, a few
 * take several times longer, as real servers do). Titles follow a Zipf-like distribution, so some
 * repeat a lot; a few pages have no title at all. Everything is derived from the page number, so a
 * given configuration always serves the same site and its most common title is known in advance.
 * @module
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Options of {@link startPageServer}. */
export interface PageServerOptions {
  /** How many pages the site has: `/page/0` to `/page/<pages - 1>`. */
  pages: number
  /** The mean latency of a page in ms (0 answers at once). */
  latency: number
  /**
   * Requests the site answers at once without slowing down: past this many in flight, each request
   * takes `(inFlight / capacity) ** 1.5` times longer, and the site's throughput falls (a knee).
   * @default no knee
   */
  capacity?: number
}

/** A running page server. */
export interface PageServer {
  /** The site's base URL, `http://127.0.0.1:<port>`. */
  readonly url: string
  /** The URL of every page, in page order. */
  readonly urls: readonly string[]
  /** Requests answered so far. */
  readonly served: number
  /** Requests waiting for their answer right now. */
  readonly waiting: number
  /** Stops the server and closes every open connection. */
  close(): Promise<void>
}

const TITLES = [
  'Home | Example Shop',
  'Products | Example Shop',
  'Sign in | Example Shop',
  'Cart | Example Shop',
  'Search results | Example Shop',
  'Help &amp; Support | Example Shop',
  'Blue running shoes | Example Shop',
  'Red running shoes | Example Shop',
  'Trail shoes | Example Shop',
  'Socks | Example Shop',
  'Water bottles | Example Shop',
  'Headlamps | Example Shop',
  'Rain jackets | Example Shop',
  'Gift cards | Example Shop',
  'Shipping &amp; returns | Example Shop',
  'About us | Example Shop',
  'Careers | Example Shop',
  'Store locator | Example Shop',
  'Size guide | Example Shop',
  'Privacy policy | Example Shop',
  'Terms of use | Example Shop',
  'Blog: choosing trail shoes | Example Shop',
  'Blog: winter running | Example Shop',
  'Blog: &quot;my first marathon&quot; | Example Shop',
  'Press | Example Shop',
]

/** Page `i`'s share of pages without a title, in percent. */
const UNTITLED_PERCENT = 4

/** A well-mixed 32-bit hash of a page number and a salt (splitmix-style), as a number in [0, 1). */
function unit(i: number, salt: number): number {
  let h = (i * 0x9e3779b1 + salt * 0x85ebca6b) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x21f0aaad) >>> 0
  h = Math.imul(h ^ (h >>> 15), 0x735a2d97) >>> 0
  h = (h ^ (h >>> 15)) >>> 0
  return h / 0x1_0000_0000
}

const WEIGHTS = TITLES.map((_, k) => 1 / (k + 1))
const TOTAL_WEIGHT = WEIGHTS.reduce((a, b) => a + b, 0)

/** The raw title of page `i` (with HTML entities as served), or undefined for a page without one. */
export function pageTitle(i: number): string | undefined {
  if (unit(i, 1) * 100 < UNTITLED_PERCENT) return undefined
  let r = unit(i, 2) * TOTAL_WEIGHT
  for (let k = 0; k < TITLES.length; k++) {
    r -= WEIGHTS[k]!
    if (r < 0) return TITLES[k]
  }
  return TITLES[TITLES.length - 1]
}

/**
 * Page `i`'s latency in ms for a mean of `mean`: half the mean plus an exponential tail with the
 * other half, capped at six times the mean.
 */
export function pageLatency(i: number, mean: number): number {
  if (mean <= 0) return 0
  const tail = -Math.log(1 - unit(i, 3)) * (mean / 2)
  return Math.min(mean * 6, mean / 2 + tail)
}

const FILLER =
  'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. '

/** The HTML of page `i`: a few kilobytes, with a `<title>` unless the page has none. */
export function pageHtml(i: number): string {
  const title = pageTitle(i)
  const head =
    title === undefined ? '<meta charset="utf-8">' : `<meta charset="utf-8">\n<title>${title}</title>`
  const paragraphs = 4 + Math.floor(unit(i, 4) * 12)
  let body = ''
  for (let p = 0; p < paragraphs; p++) body += `<p>${FILLER.repeat(2 + (p % 3))}</p>\n`
  return `<!doctype html>\n<html lang="en">\n<head>\n${head}\n</head>\n<body>\n<h1>Page ${i}</h1>\n${body}<a href="/page/${(i + 1) % 1000}">next</a>\n</body>\n</html>\n`
}

/** Starts the site on 127.0.0.1, on a free port. */
export async function startPageServer(options: PageServerOptions): Promise<PageServer> {
  const { pages, latency } = options
  const capacity = options.capacity ?? Number.POSITIVE_INFINITY
  let served = 0
  let inFlight = 0
  const timers = new Set<ReturnType<typeof setTimeout>>()
  const server: Server = createServer((req, res) => {
    const m = /^\/page\/(\d+)$/.exec(req.url ?? '')
    const i = m === null ? -1 : Number(m[1])
    if (i < 0 || i >= pages) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      return
    }
    const load = Math.max(1, ++inFlight / capacity) ** 1.5
    const reply = (): void => {
      timers.delete(timer)
      served++
      inFlight--
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(pageHtml(i))
    }
    const timer = setTimeout(reply, pageLatency(i, latency) * load)
    timers.add(timer)
    // a client that gives up (an aborted fetch) gets no answer
    res.on('close', () => {
      if (!res.writableEnded) {
        clearTimeout(timer)
        timers.delete(timer)
        inFlight--
      }
    })
  })
  server.keepAliveTimeout = 2000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}`
  return {
    url,
    urls: Array.from({ length: pages }, (_, i) => `${url}/page/${i}`),
    get served() {
      return served
    },
    get waiting() {
      return timers.size
    },
    close(): Promise<void> {
      for (const t of timers) clearTimeout(t)
      timers.clear()
      return new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
    },
  }
}

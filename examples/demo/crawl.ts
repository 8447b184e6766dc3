/**
 * The demo's pipeline, parallelpipe's README example in stageline: fetch pages with many workers,
 * extract their titles with two, and find the most common title with one.
 * @module
 */
import { mapStage, type Pipeline, pipe, stage, type WorkersOption } from 'stageline'

/** What the last stage yields: the most common title and how often it came up. */
export interface MostCommon {
  readonly title: string
  readonly count: number
  /** Titles seen in all (pages without a title are not counted). */
  readonly titles: number
}

/** Fetches a page's HTML; a status other than 2xx fails the item. */
export const fetchPage = mapStage(
  async function fetchPage(url: string, { signal }) {
    const res = await fetch(url, { signal })
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`)
    return res.text()
  },
  { qsize: 32 },
)

const TITLE = /<title>([^<]*)<\/title>/i
const ENTITIES: Record<string, string> = {
  '&amp;': '&',
  '&lt;': '<',
  '&gt;': '>',
  '&quot;': '"',
  '&#39;': "'",
}

/** Decodes the few HTML entities a title commonly holds. */
export function decodeEntities(text: string): string {
  return text.replace(/&(?:amp|lt|gt|quot|#39);/g, (e) => ENTITIES[e]!)
}

/** Yields the title of each page that has one (not an exact map: pages without a title yield nothing). */
export const titles = stage(
  async function* titles(pages: AsyncIterable<string>) {
    for await (const html of pages) {
      const m = TITLE.exec(html)
      if (m !== null) yield decodeEntities(m[1]!.trim())
    }
  },
  { workers: 2 },
)

/** Counts every title and yields the most common one at the end (ties go to the first in sort order). */
export const mostCommon = stage(async function* mostCommon(all: AsyncIterable<string>) {
  const counts = new Map<string, number>()
  let seen = 0
  for await (const t of all) {
    counts.set(t, (counts.get(t) ?? 0) + 1)
    seen++
  }
  const best = pickMostCommon(counts)
  if (best !== undefined) yield { title: best[0], count: best[1], titles: seen } satisfies MostCommon
})

/** The entry with the highest count; among equal counts, the title first in sort order. */
export function pickMostCommon(counts: ReadonlyMap<string, number>): [string, number] | undefined {
  let best: [string, number] | undefined
  for (const [title, n] of counts) {
    if (best === undefined || n > best[1] || (n === best[1] && title < best[0])) best = [title, n]
  }
  return best
}

/** pipe(urls, fetchPage with `workers` workers (or 'auto'), titles with 2, mostCommon). */
export function crawl(urls: Iterable<string>, workers: WorkersOption): Pipeline<MostCommon> {
  return pipe(urls, fetchPage.setup({ workers }), titles, mostCommon)
}

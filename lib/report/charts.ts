/**
 * The report's charts: small inline SVG line and area charts over a run's time, drawn when the
 * page is written (the page runs no script). Each series carries its plotted values in a
 * `data-values` attribute, so what a chart shows can be read back from the page.
 * @module
 */

/** One series of a chart. */
export interface ChartSeries {
  /** Its name, as `data-series`: `out-per-second`, `queued`, `working`... */
  readonly name: string
  /** Its label in the chart's legend. */
  readonly label: string
  /** A CSS class that colours it. */
  readonly cls: string
  /** One value per time in the chart's `t`. */
  readonly values: readonly number[]
  /** Drawn as a line (default), or as a band stacked on the series before it. */
  readonly stacked?: boolean
  /** Drawn dashed (a limit, as a queue's capacity). */
  readonly dashed?: boolean
}

/** A chart: its name (`data-chart`), caption, times (ms since the start) and series. */
export interface Chart {
  readonly name: string
  readonly caption: string
  readonly t: readonly number[]
  readonly series: readonly ChartSeries[]
  /** The top of the y axis; the largest value when unset. */
  readonly max?: number
  /** How the y axis's top is labelled. */
  readonly format: (y: number) => string
}

const W = 208
const H = 110
const PAD_L = 6
const PAD_R = 6
const PAD_T = 8
const PAD_B = 16

/** Escapes text for HTML and XML. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function num(x: number): string {
  return Number.isFinite(x) ? String(Math.round(x * 10) / 10) : '0'
}

function valuesAttr(values: readonly number[]): string {
  return values.map((v) => (Number.isFinite(v) ? String(Math.round(v * 1000) / 1000) : '0')).join(',')
}

/** Draws `chart` as an SVG inside a figure with its caption and legend. */
export function renderChart(chart: Chart, elapsedLabel: string): string {
  const { t, series } = chart
  const tEnd = t.length > 0 ? t[t.length - 1]! : 0
  let top = chart.max ?? 0
  if (chart.max === undefined) {
    for (const s of series) for (const v of s.values) if (Number.isFinite(v) && v > top) top = v
  }
  if (!(top > 0)) top = 1
  const x = (ms: number): number => PAD_L + (tEnd > 0 ? (ms / tEnd) * (W - PAD_L - PAD_R) : 0)
  const y = (v: number): number =>
    PAD_T + (1 - Math.min(1, Math.max(0, (Number.isFinite(v) ? v : 0) / top))) * (H - PAD_T - PAD_B)
  const base = new Array<number>(t.length).fill(0)
  const shapes: string[] = []
  for (const s of series) {
    let d: string
    if (s.stacked === true) {
      const upper = s.values.map((v, i) => base[i]! + (Number.isFinite(v) ? v : 0))
      const forward = t.map((ms, i) => `${i === 0 ? 'M' : 'L'}${num(x(ms))},${num(y(upper[i]!))}`).join('')
      const back = t
        .map((_, k) => t.length - 1 - k)
        .map((i) => `L${num(x(t[i]!))},${num(y(base[i]!))}`)
        .join('')
      d = t.length === 0 ? '' : `${forward}${back}Z`
      for (let i = 0; i < t.length; i++) base[i] = upper[i]!
    } else {
      d = t.map((ms, i) => `${i === 0 ? 'M' : 'L'}${num(x(ms))},${num(y(s.values[i] ?? 0))}`).join('')
    }
    shapes.push(
      `<path class="${s.cls}${s.stacked === true ? ' band' : ' line'}${s.dashed === true ? ' dashed' : ''}" data-series="${esc(s.name)}" data-values="${valuesAttr(s.values)}" d="${d}"><title>${esc(s.label)}</title></path>`,
    )
  }
  const legend = series
    .map((s) => `<span class="key"><i class="swatch ${s.cls}"></i>${esc(s.label)}</span>`)
    .join(' ')
  return `<figure class="chart" data-chart="${esc(chart.name)}">
<figcaption>${esc(chart.caption)}</figcaption>
<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(chart.caption)}">
<line class="axis" x1="${PAD_L}" y1="${H - PAD_B}" x2="${W - PAD_R}" y2="${H - PAD_B}"/>
<line class="grid" x1="${PAD_L}" y1="${PAD_T}" x2="${W - PAD_R}" y2="${PAD_T}"/>
${shapes.join('\n')}
<text class="tick" x="${W - PAD_R}" y="${PAD_T + 9}" text-anchor="end">${esc(chart.format(top))}</text>
<text class="tick" x="${PAD_L}" y="${H - 3}">0</text>
<text class="tick" x="${W - PAD_R}" y="${H - 3}" text-anchor="end">${esc(elapsedLabel)}</text>
</svg>
<div class="legend">${legend}</div>
</figure>`
}

/**
 * The chart of a result file, as an SVG written by hand (no dependency): one panel per throughput
 * workload with a horizontal bar per implementation, its length the ratio to the workload's
 * baseline on a log scale (1x marked, stageline's target dashed), then the memory panel with
 * peak RSS per implementation at each size on a linear scale.
 * @module
 */
import { fmtCount, fmtMB, fmtRatio } from './report.js'

const W = 980
const LABEL_W = 330
const BAR_X = LABEL_W + 10
const BAR_W = W - BAR_X - 90
const ROW_H = 18
const BAR_H = 12
const COLORS = {
  stageline: '#d9480f',
  baseline: '#495057',
  peer: '#1c7ed6',
  reference: '#adb5bd',
  control: '#adb5bd',
  failed: '#fa5252',
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** Labels longer than the label column are cut (the full label is in the JSON and the tables). */
function clip(s, max = 52) {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s
}

function text(x, y, s, attrs = '') {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`
}

/** Renders `result` (the JSON the runner writes) as an SVG document. */
export function renderChart(result) {
  const parts = []
  let y = 30
  const ratios = result.throughput.filter((r) => r.ratio !== null).map((r) => r.ratio)
  // a log axis over whole decades covering every ratio (and 1x)
  const lo = 10 ** Math.floor(Math.log10(Math.min(1, ...ratios)))
  const hi = 10 ** Math.ceil(Math.log10(Math.max(1.0001, ...ratios)))
  const sx = (v) => BAR_X + ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * BAR_W
  parts.push(text(10, y, `stageline benchmarks: ratio to each workload's baseline (log scale)`, 'class="h1"'))
  y += 16
  parts.push(
    text(10, y, `${result.meta.date} | ${result.meta.machine} | ${result.meta.command}`, 'class="small"'),
  )
  y += 14

  const groups = new Map()
  for (const r of result.throughput) {
    if (!groups.has(r.workload)) groups.set(r.workload, [])
    groups.get(r.workload).push(r)
  }
  for (const rows of groups.values()) {
    y += 22
    parts.push(text(10, y, rows[0].title, 'class="h2"'))
    y += 6
    const top = y
    const bottom = top + rows.length * ROW_H + 4
    for (let d = lo; d <= hi * 1.0001; d *= 10) {
      const x = sx(d)
      parts.push(
        `<line x1="${x.toFixed(1)}" y1="${top}" x2="${x.toFixed(1)}" y2="${bottom}" class="${d === 1 ? 'one' : 'grid'}"/>`,
      )
      parts.push(text(x, bottom + 11, fmtRatio(d), 'class="tick"'))
    }
    const target = rows[0].target
    if (target !== undefined && target !== null && target.min >= lo && target.min <= hi) {
      const x = sx(target.min)
      parts.push(
        `<line x1="${x.toFixed(1)}" y1="${top}" x2="${x.toFixed(1)}" y2="${bottom}" class="target"/>`,
      )
      parts.push(text(x + 3, top - 1, `target ${fmtRatio(target.min)}`, 'class="tick target-label"'))
    }
    rows.forEach((r, i) => {
      const ry = top + 4 + i * ROW_H
      const label = `${r.label}${r.reduced ? ` (${fmtCount(r.n)} items)` : ''}`
      parts.push(
        text(LABEL_W, ry + BAR_H - 2, clip(label), `class="label${r.role === 'stageline' ? ' sl' : ''}"`),
      )
      if (r.ratio === null) {
        parts.push(text(BAR_X + 4, ry + BAR_H - 2, `failed: ${r.error}`, 'class="label failed"'))
        return
      }
      const x0 = sx(lo)
      const x1 = Math.max(x0 + 1, sx(Math.max(lo, r.ratio)))
      parts.push(
        `<rect x="${x0.toFixed(1)}" y="${ry}" width="${(x1 - x0).toFixed(1)}" height="${BAR_H}" fill="${COLORS[r.role] ?? COLORS.peer}"/>`,
      )
      parts.push(text(x1 + 4, ry + BAR_H - 2, fmtRatio(r.ratio), 'class="value"'))
    })
    y = bottom + 14
  }

  if (result.memory.length > 0) {
    y += 30
    parts.push(
      text(10, y, 'memory: peak RSS of a child process, items of 1 KB through 2 steps', 'class="h2"'),
    )
    y += 6
    const all = result.memory.flatMap((r) => r.points.map((p) => p.maxRssMB)).filter((v) => v !== null)
    const max = Math.max(1, ...all)
    const step = 10 ** Math.floor(Math.log10(max)) / (max / 10 ** Math.floor(Math.log10(max)) < 3 ? 2 : 1)
    const mx = (v) => BAR_X + (v / (Math.ceil(max / step) * step)) * BAR_W
    const rowsH = result.memory.reduce((h, r) => h + r.points.length * (BAR_H + 2) + 8, 0)
    const top = y
    const bottom = top + rowsH + 4
    for (let v = 0; v <= max + step * 0.999; v += step) {
      const x = mx(v)
      parts.push(`<line x1="${x.toFixed(1)}" y1="${top}" x2="${x.toFixed(1)}" y2="${bottom}" class="grid"/>`)
      parts.push(text(x, bottom + 11, fmtMB(v), 'class="tick"'))
    }
    let ry = top + 4
    for (const r of result.memory) {
      parts.push(
        text(LABEL_W, ry + BAR_H - 2, clip(r.label), `class="label${r.role === 'stageline' ? ' sl' : ''}"`),
      )
      r.points.forEach((p, i) => {
        const color = COLORS[r.role] ?? COLORS.peer
        const opacity = r.points.length > 1 ? 0.45 + (0.55 * i) / (r.points.length - 1) : 1
        if (p.maxRssMB === null) {
          parts.push(
            text(BAR_X + 4, ry + BAR_H - 2, `${fmtCount(p.n)}: failed or skipped`, 'class="label failed"'),
          )
        } else {
          const w = Math.max(1, mx(p.maxRssMB) - BAR_X)
          parts.push(
            `<rect x="${BAR_X}" y="${ry}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${color}" fill-opacity="${opacity.toFixed(2)}"/>`,
          )
          parts.push(
            text(BAR_X + w + 4, ry + BAR_H - 2, `${fmtMB(p.maxRssMB)} at ${fmtCount(p.n)}`, 'class="value"'),
          )
        }
        ry += BAR_H + 2
      })
      ry += 8
    }
    y = bottom + 14
  }

  y += 20
  parts.push(
    text(
      10,
      y,
      'orange: stageline; grey: the baseline; blue: peers; light grey: reference ceiling or unbounded control. * = run on fewer items.',
      'class="small"',
    ),
  )
  const h = y + 14
  const style = [
    'text{font-family:Helvetica,Arial,sans-serif;fill:#212529}',
    '.h1{font-size:16px;font-weight:bold}',
    '.h2{font-size:13px;font-weight:bold}',
    '.small{font-size:10px;fill:#868e96}',
    '.label{font-size:11px;text-anchor:end}',
    '.label.failed{text-anchor:start;fill:#e03131}',
    '.sl{font-weight:bold}',
    '.value{font-size:10px}',
    '.tick{font-size:9px;text-anchor:middle;fill:#868e96}',
    '.target-label{text-anchor:start;fill:#e03131}',
    '.grid{stroke:#e9ecef;stroke-width:1}',
    '.one{stroke:#495057;stroke-width:1}',
    '.target{stroke:#e03131;stroke-width:1;stroke-dasharray:4 3}',
  ].join('')
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" role="img" aria-labelledby="title">`,
    `<title id="title">${esc(`stageline benchmarks, ${result.meta.date}: throughput ratios to each workload's baseline, and peak RSS`)}</title>`,
    `<style>${style}</style>`,
    `<rect width="${W}" height="${h}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n')
}

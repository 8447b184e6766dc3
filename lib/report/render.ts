/**
 * Turning a run report into one self-contained HTML page: inline styles and SVG charts, no script
 * to run and nothing fetched from anywhere (its Content-Security-Policy allows no request at all),
 * so it opens offline from disk. The report's data is embedded in it as JSON.
 * @module
 */
import { formatCount, formatDuration, formatMs, formatRate } from '../progress/format.js'
import { percent } from './bottleneck.js'
import { type Chart, esc, renderChart } from './charts.js'
import { REPORT_VERSION, type ReportStage, type RunReport, type StageSeries } from './format.js'

/** Per interval ending at each sample: the change of `xs` (per second when `perSecond`). */
function deltas(t: readonly number[], xs: readonly number[], perSecond: boolean): number[] {
  const out = t.map((ms, i) => {
    if (i === 0) return 0
    const dx = xs[i]! - xs[i - 1]!
    if (!perSecond) return dx
    const dt = ms - t[i - 1]!
    return dt > 0 ? (dx * 1000) / dt : 0
  })
  if (out.length > 1) out[0] = out[1]!
  return out
}

/** The working, starved and blocked shares of each interval (0 where no time passed). */
function shareSeries(
  t: readonly number[],
  s: StageSeries,
): { working: number[]; starved: number[]; blocked: number[] } {
  const w = deltas(t, s.workingMs, false)
  const st = deltas(t, s.starvedMs, false)
  const b = deltas(t, s.blockedMs, false)
  const share = (x: number[]): number[] =>
    x.map((v, i) => {
      const all = w[i]! + st[i]! + b[i]!
      return all > 0 ? Math.max(0, v) / all : 0
    })
  return { working: share(w), starved: share(st), blocked: share(b) }
}

/** A stage's charts: items out per second, queue fill, where its time went, workers, failures and retries. */
export function stageCharts(report: RunReport, index: number): Chart[] {
  const t = report.samples.t
  const s = report.samples.stages[index]!
  const stage = report.stages[index]!
  const shares = shareSeries(t, s)
  const count = (y: number): string => formatCount(y)
  const capacity = stage.capacity
  return [
    {
      name: 'rate',
      caption: 'items out per second',
      t,
      series: [{ name: 'out-per-second', label: 'out/s', cls: 's-out', values: deltas(t, s.out, true) }],
      format: (y) => formatRate(y),
    },
    {
      name: 'queue',
      caption: capacity === null ? 'output queue (unbounded)' : `output queue, of ${formatCount(capacity)}`,
      t,
      series: [
        { name: 'queued', label: 'queued', cls: 's-queue', values: s.queued },
        ...(capacity === null
          ? []
          : [
              {
                name: 'capacity',
                label: 'capacity',
                cls: 's-capacity',
                values: t.map(() => capacity),
                dashed: true,
              },
            ]),
      ],
      ...(capacity === null || capacity === 0 ? {} : { max: capacity }),
      format: count,
    },
    {
      name: 'time',
      caption: 'where the workers’ time went',
      t,
      series: [
        { name: 'working', label: 'working', cls: 's-working', values: shares.working, stacked: true },
        {
          name: 'starved',
          label: 'waiting for input',
          cls: 's-starved',
          values: shares.starved,
          stacked: true,
        },
        {
          name: 'blocked',
          label: 'waiting for room',
          cls: 's-blocked',
          values: shares.blocked,
          stacked: true,
        },
      ],
      max: 1,
      format: (y) => percent(y),
    },
    {
      name: 'workers',
      caption: 'workers',
      t,
      series: [{ name: 'workers', label: 'workers', cls: 's-workers', values: s.workers }],
      format: count,
    },
    {
      name: 'failures',
      caption: 'failures and retries, per sample',
      t,
      series: [
        { name: 'failed', label: 'failed', cls: 's-failed', values: deltas(t, s.failed, false) },
        { name: 'retried', label: 'retried', cls: 's-retried', values: deltas(t, s.retried, false) },
      ],
      format: count,
    },
  ]
}

const STYLE = `
:root{--fg:#1d2430;--muted:#5c6675;--line:#d8dde5;--bg:#fff;--panel:#f6f8fa;--working:#2f9e44;--starved:#a5b4c8;--blocked:#e8590c;--out:#1c7ed6;--queue:#7048e8;--failed:#e03131;--retried:#f08c00;--hot:#fff4e6}
*{box-sizing:border-box}body{margin:0;padding:24px 32px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 8px}h2 small{font-weight:normal;color:var(--muted)}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace}
.summary{color:var(--muted);margin:0 0 12px}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;vertical-align:middle;background:var(--panel);border:1px solid var(--line)}
.state-done{background:#ebfbee;border-color:#8ce99a}.state-failed{background:#fff5f5;border-color:#ffa8a8}.state-stopped,.state-running{background:#fff9db;border-color:#ffe066}
.verdict{font-size:16px;margin:8px 0 4px;padding:10px 14px;border-left:4px solid var(--blocked);background:var(--hot)}
.verdict.none{border-left-color:var(--starved);background:var(--panel)}
.advice{margin:0 0 16px;padding:0 18px;color:var(--fg)}
.error{border:1px solid #ffa8a8;background:#fff5f5;padding:10px 14px;margin:0 0 16px;border-radius:6px}
.error pre{white-space:pre-wrap;margin:6px 0 0;max-height:240px;overflow:auto}
.note{color:var(--muted)}
table{border-collapse:collapse;margin:0 0 20px}th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}tr.bottleneck td{background:var(--hot);font-weight:600}
.bar{display:inline-flex;width:140px;height:10px;vertical-align:middle;border-radius:2px;overflow:hidden;background:var(--line)}
.bar i{display:block;height:100%}
.s-working{fill:var(--working);background:var(--working)}.s-starved{fill:var(--starved);background:var(--starved)}.s-blocked{fill:var(--blocked);background:var(--blocked)}
.s-out{stroke:var(--out);background:var(--out)}.s-queue{stroke:var(--queue);background:var(--queue)}.s-capacity{stroke:var(--muted);background:var(--muted)}
.s-workers{stroke:var(--fg);background:var(--fg)}.s-failed{stroke:var(--failed);background:var(--failed)}.s-retried{stroke:var(--retried);background:var(--retried)}
.stage{border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:0 0 14px}
.stage.bottleneck{border-color:var(--blocked);box-shadow:0 0 0 2px var(--hot)}
.charts{display:flex;flex-wrap:wrap;gap:8px}
.chart{margin:0;padding:6px 8px;background:var(--panel);border-radius:6px;width:226px}
.chart figcaption{font-size:12px;color:var(--muted);margin:0 0 2px}
.chart svg{display:block}
.chart .line{fill:none;stroke-width:1.5}.chart .band{stroke:none;opacity:.9}.chart .dashed{stroke-dasharray:4 3}
.chart .axis{stroke:var(--muted);stroke-width:1}.chart .grid{stroke:var(--line);stroke-width:1}
.chart .tick{font-size:10px;fill:var(--muted)}
.legend{font-size:11px;color:var(--muted)}.key{margin-right:8px}.swatch{display:inline-block;width:9px;height:9px;margin-right:3px;border-radius:2px;vertical-align:middle}
footer{color:var(--muted);font-size:12px;margin-top:24px}
`

function stateBadge(state: RunReport['state']): string {
  return `<span class="state state-${esc(state)}" id="state">${esc(state)}</span>`
}

function shareBar(s: ReportStage): string {
  const total = s.workingMs + s.starvedMs + s.blockedMs
  const w = (x: number): string => (total > 0 ? ((x / total) * 100).toFixed(1) : '0')
  const title =
    total > 0
      ? `working ${percent(s.workingMs / total)}, waiting for input ${percent(s.starvedMs / total)}, waiting for room ${percent(s.blockedMs / total)}`
      : 'no time recorded'
  return `<span class="bar" title="${esc(title)}"><i class="s-working" style="width:${w(s.workingMs)}%"></i><i class="s-starved" style="width:${w(s.starvedMs)}%"></i><i class="s-blocked" style="width:${w(s.blockedMs)}%"></i></span>`
}

function stageTable(report: RunReport): string {
  const rows = report.stages.map((s) => {
    const hot = report.bottleneck?.index === s.index
    const total = s.workingMs + s.starvedMs + s.blockedMs
    const busy = total > 0 ? percent(s.workingMs / total) : '-'
    const rate = report.elapsedMs > 0 ? formatRate((s.out * 1000) / report.elapsedMs) : '-'
    return `<tr data-stage="${esc(s.name)}"${hot ? ' class="bottleneck"' : ''}><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${formatCount(s.workers)}</td><td>${formatCount(s.in)}</td><td>${formatCount(s.out)}</td><td>${formatCount(s.failed)}</td><td>${formatCount(s.skipped)}</td><td>${formatCount(s.retried)}</td><td>${formatMs(s.meanMs ?? undefined)}</td><td>${formatMs(s.p95Ms ?? undefined)}</td><td>${rate}</td><td>${busy}</td><td>${shareBar(s)}</td></tr>`
  })
  return `<table id="stages"><thead><tr><th>stage</th><th>kind</th><th>workers</th><th>in</th><th>out</th><th>failed</th><th>skipped</th><th>retried</th><th>mean</th><th>p95</th><th>out/s</th><th>busy</th><th>working · waiting for input · for room</th></tr></thead><tbody>${rows.join('')}</tbody></table>`
}

function errorSection(report: RunReport): string {
  const e = report.error
  if (e === null) return ''
  const where = e.stage === null ? '' : ` in stage <code>${esc(e.stage)}</code>, worker ${e.worker ?? 0}`
  const item =
    e.item !== undefined
      ? `<div>item: <code class="item">${esc(e.item)}</code></div>`
      : report.itemsIncluded
        ? ''
        : '<div class="note">the item is left out of this report</div>'
  const stack =
    e.stack === null ? '' : `<details><summary>stack</summary><pre>${esc(e.stack)}</pre></details>`
  return `<section class="error" id="error"><strong>${esc(e.name)}</strong>${where}: ${esc(e.message)}${item}${stack}</section>`
}

function eventsSection(report: RunReport): string {
  if (report.events.length === 0) return ''
  const rows = report.events.map(
    (e) =>
      `<li data-stage="${esc(e.stage)}">${esc(formatDuration(e.at))}: <strong>${esc(e.stage)}</strong> ${esc(e.kind)}: ${esc(e.detail)}</li>`,
  )
  return `<section id="events"><h2>Events</h2><ul>${rows.join('')}</ul></section>`
}

function stageSection(report: RunReport, s: ReportStage): string {
  const hot = report.bottleneck?.index === s.index
  const elapsed = formatDuration(report.elapsedMs)
  const charts = stageCharts(report, s.index)
    .map((c) => renderChart(c, elapsed))
    .join('\n')
  const unit = s.kind === 'threadStage' ? 'thread' : s.kind === 'redisStage' ? 'slot' : 'worker'
  const units = `${formatCount(s.workers)} ${unit}${s.workers === 1 ? '' : 's'}`
  return `<section class="stage${hot ? ' bottleneck' : ''}" data-stage="${esc(s.name)}" data-index="${s.index}">
<h2>${s.index + 1}. ${esc(s.name)} <small>${esc(s.kind)} · ${units}${hot ? ' · the bottleneck' : ''}</small></h2>
<div class="charts">
${charts}
</div>
</section>`
}

/** Checks that `value` is a run report this build can read; throws a TypeError saying what is wrong. */
export function checkReport(value: unknown): RunReport {
  const r = value as Partial<RunReport> | null
  if (r === null || typeof r !== 'object' || r.format !== 'stageline-report') {
    throw new TypeError(
      'renderReport(): expected a stageline run report (an object whose `format` is "stageline-report")',
    )
  }
  if (r.version !== REPORT_VERSION) {
    throw new TypeError(
      typeof r.version === 'number' && r.version > REPORT_VERSION
        ? `renderReport(): the report is of format version ${r.version}, written by a newer stageline; this one reads version ${REPORT_VERSION}`
        : `renderReport(): expected a report of format version ${REPORT_VERSION}, got ${JSON.stringify(r.version)}`,
    )
  }
  const s = r.samples
  if (
    !Array.isArray(r.stages) ||
    s === undefined ||
    !Array.isArray(s.t) ||
    !Array.isArray(s.stages) ||
    s.stages.length !== r.stages.length
  ) {
    throw new TypeError(
      'renderReport(): the report is incomplete: it needs `stages` and `samples` with one series per stage',
    )
  }
  return r as RunReport
}

/**
 * Renders a run report (the data of a `.json` report, or its text) as one self-contained HTML page:
 * the run's summary, the bottleneck sentence and advice, the error of a failed run, a table of the
 * stages' totals, and per stage, over time: items out per second, queue fill against capacity, the
 * working / waiting-for-input / waiting-for-room shares, workers, failures and retries. The page
 * fetches nothing and runs no script; it embeds the report's data as JSON.
 *
 * @example
 * ```ts
 * import { readFile, writeFile } from 'node:fs/promises'
 * import { join } from 'node:path'
 * import { tmpdir } from 'node:os'
 * import { mapStage, pipe } from 'stageline'
 * import { renderReport } from 'stageline/report'
 * const json = join(tmpdir(), `run-${process.pid}.json`)
 * await pipe([1, 2, 3], mapStage((n: number) => n + 1, { name: 'inc' })).execute({ report: json })
 * const html = renderReport(await readFile(json, 'utf8'))
 * await writeFile(json.replace(/\.json$/, '.html'), html)
 * console.log(html.startsWith('<!doctype html>'), html.includes('inc')) // true true
 * ```
 */
export function renderReport(report: RunReport | string): string {
  let data: unknown = report
  if (typeof report === 'string') {
    try {
      data = JSON.parse(report)
    } catch (err) {
      throw new TypeError(`renderReport(): the text is not JSON: ${(err as Error).message}`)
    }
  }
  const r = checkReport(data)
  const verdictStage = r.bottleneck === null ? '' : r.bottleneck.stage
  const advice = r.advice === null ? '' : `<p class="advice" id="advice">${esc(r.advice)}</p>`
  const hidden = r.itemsIncluded
    ? ''
    : '<p class="note" id="items-note">Items are left out of this report (<code>reportItems: false</code>).</p>'
  const started = Number.isNaN(Date.parse(r.startedAt))
    ? ''
    : ` · started ${esc(r.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC'))}`
  // `<` escaped, so that the data cannot close the script element it sits in
  const embedded = JSON.stringify(r).replace(/</g, '\\u003c')
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stageline run ${esc(r.runId)}: ${esc(r.state)}</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>Run <code>${esc(r.runId)}</code> ${stateBadge(r.state)}</h1>
<p class="summary" id="summary">${formatCount(r.itemsOut)} ${r.itemsOut === 1 ? 'item' : 'items'} out in ${esc(formatDuration(r.elapsedMs))} · ${r.stages.length} ${r.stages.length === 1 ? 'stage' : 'stages'}${started}</p>
<p class="verdict${r.bottleneck === null ? ' none' : ''}" id="verdict" data-stage="${esc(verdictStage)}">${esc(r.verdict)}</p>
${advice}
${errorSection(r)}
${hidden}
</header>
<main>
${stageTable(r)}
${eventsSection(r)}
${r.stages.map((s) => stageSection(r, s)).join('\n')}
</main>
<footer>Written by stageline at ${esc(r.writtenAt)} · report format version ${r.version} · ${r.samples.t.length} samples, ${formatDuration(r.samples.intervalMs)} apart at the end.</footer>
<script type="application/json" id="stageline-report">${embedded}</script>
</body>
</html>
`
}

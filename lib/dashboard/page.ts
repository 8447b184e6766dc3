/**
 * The live page: one HTML document with its style and script inline (no build step, nothing
 * fetched but its own server's event stream). It listens to `events` (server-sent events) and
 * draws every run as a chain of boxes, one per stage, the bottleneck highlighted.
 * @module
 */

const STYLE = `
:root{--fg:#1d2430;--muted:#5c6675;--line:#d8dde5;--panel:#f6f8fa;--working:#2f9e44;--starved:#a5b4c8;--blocked:#e8590c;--hot:#fff4e6}
*{box-sizing:border-box}body{margin:0;padding:20px 28px;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg)}
h1{font-size:18px;margin:0 0 4px}#status{color:var(--muted);margin:0 0 16px}
.run{border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:0 0 16px}
.run header{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}
.run h2{font-size:16px;margin:0}.run h2 code{font:14px ui-monospace,SFMono-Regular,Menlo,monospace}
.state{padding:1px 8px;border-radius:10px;font-size:12px;border:1px solid var(--line);background:var(--panel)}
.state.done{background:#ebfbee;border-color:#8ce99a}.state.failed{background:#fff5f5;border-color:#ffa8a8}.state.running,.state.stopped{background:#fff9db;border-color:#ffe066}
.meta{color:var(--muted)}.verdict{margin:8px 0;padding:6px 10px;background:var(--panel);border-left:4px solid var(--starved)}
.verdict.hot{background:var(--hot);border-left-color:var(--blocked)}.error{color:#c92a2a;margin:4px 0}
.chain{display:flex;align-items:stretch;gap:6px;flex-wrap:wrap}
.arrow{align-self:center;color:var(--muted);font-size:18px}
.box{border:1px solid var(--line);border-radius:6px;padding:8px 10px;min-width:170px;background:#fff}
.box.bottleneck{border:2px solid var(--blocked);background:var(--hot)}
.box .name{font-weight:600}.box .kind{color:var(--muted);font-size:12px}
.row{display:flex;justify-content:space-between;gap:8px;font-size:13px}
.bar{display:flex;height:8px;border-radius:2px;overflow:hidden;background:var(--line);margin:3px 0}
.bar i{display:block;height:100%}.w{background:var(--working)}.s{background:var(--starved)}.b{background:var(--blocked)}.q{background:#7048e8}
.legend{font-size:12px;color:var(--muted);margin:0 0 12px}.legend i{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 3px 0 8px}
`

const SCRIPT = `
const runs = new Map()
const status = document.getElementById('status')
const list = document.getElementById('runs')
const pct = (x) => Math.round(x * 100) + '%'
const count = (n) => n.toLocaleString('en-US')
const rate = (r) => (r >= 100 ? Math.round(r) : Math.round(r * 10) / 10) + '/s'
const ms = (t) => (t < 1000 ? Math.round(t) + ' ms' : (t / 1000).toFixed(t < 10000 ? 2 : 1) + ' s')
function el(tag, cls, text) {
  const e = document.createElement(tag)
  if (cls) e.className = cls
  if (text !== undefined) e.textContent = text
  return e
}
function bar(parts) {
  const b = el('div', 'bar')
  for (const [cls, share] of parts) {
    const i = el('i', cls)
    i.style.width = (Math.max(0, Math.min(1, share)) * 100).toFixed(1) + '%'
    b.append(i)
  }
  return b
}
function row(label, value, cls) {
  const r = el('div', 'row')
  r.append(el('span', '', label), el('span', cls, value))
  return r
}
function box(run, s, i) {
  const b = el('div', 'box')
  const hot = run.bottleneck !== null && run.bottleneck.index === i
  if (hot) b.classList.add('bottleneck')
  b.dataset.stage = s.name
  b.dataset.out = String(s.out)
  b.dataset.in = String(s.in)
  b.dataset.workers = String(s.workers)
  b.append(el('div', 'name', s.name), el('div', 'kind', s.kind))
  b.append(row('workers', s.busy + '/' + s.workers + ' busy', 'workers'))
  const fill = s.capacity === null ? 0 : s.capacity === 0 ? (s.queued > 0 ? 1 : 0) : s.queued / s.capacity
  b.append(row('queue', count(s.queued) + '/' + (s.capacity === null ? '∞' : count(s.capacity)), 'queue'), bar([['q', fill]]))
  b.append(row('in / out', count(s.in) + ' / ' + count(s.out), 'counts'))
  if (s.failed > 0 || s.retried > 0) b.append(row('failed / retried', count(s.failed) + ' / ' + count(s.retried), 'failures'))
  b.append(row('rate', rate(s.perSecond), 'rate'))
  b.append(bar([['w', s.working], ['s', s.starved], ['b', s.blocked]]))
  b.append(row('work · input · room', pct(s.working) + ' · ' + pct(s.starved) + ' · ' + pct(s.blocked), 'shares'))
  return b
}
function section(run) {
  const sec = el('section', 'run')
  sec.dataset.run = run.runId
  sec.dataset.state = run.state
  const head = el('header')
  const h = el('h2')
  h.append('Run ', el('code', '', run.runId))
  head.append(h, el('span', 'state ' + run.state, run.state))
  head.append(el('span', 'meta', count(run.itemsOut) + ' out · ' + ms(run.elapsedMs) + ' · started ' + new Date(run.startedAt).toLocaleTimeString()))
  sec.append(head)
  const v = el('p', 'verdict' + (run.bottleneck ? ' hot' : ''), run.verdict)
  v.dataset.stage = run.bottleneck ? run.bottleneck.stage : ''
  sec.append(v)
  if (run.error) sec.append(el('p', 'error', run.error))
  const chain = el('div', 'chain')
  run.stages.forEach((s, i) => {
    if (i > 0) chain.append(el('span', 'arrow', '→'))
    chain.append(box(run, s, i))
  })
  sec.append(chain)
  return sec
}
function render() {
  const ordered = [...runs.values()].sort((a, b) =>
    (a.state === 'running') !== (b.state === 'running') ? (a.state === 'running' ? -1 : 1) : b.startedAt.localeCompare(a.startedAt))
  list.replaceChildren(...ordered.map(section))
  status.textContent = ordered.length === 0 ? 'No run yet: give a run the option dashboard to see it here.' : ordered.length + (ordered.length === 1 ? ' run' : ' runs')
}
const events = new EventSource('events')
events.addEventListener('runs', (e) => {
  runs.clear()
  for (const r of JSON.parse(e.data)) runs.set(r.runId, r)
  render()
})
events.addEventListener('run', (e) => {
  const r = JSON.parse(e.data)
  runs.set(r.runId, r)
  render()
})
events.addEventListener('forget', (e) => {
  runs.delete(JSON.parse(e.data))
  render()
})
events.onerror = () => {
  if (events.readyState === EventSource.CLOSED) status.textContent = 'The dashboard has closed.'
}
`

/** The page's Content-Security-Policy: its own inline style and script, and its own origin's events. */
export const PAGE_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:"

/** The live page. */
export function livePage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stageline: live runs</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<h1>stageline: live runs</h1>
<p id="status">Connecting…</p>
<p class="legend">worker time:<i class="w"></i>working<i class="s"></i>waiting for input<i class="b"></i>waiting for room<i class="q"></i>queue fill</p>
<main id="runs"></main>
<script>${SCRIPT}</script>
</body>
</html>
`
}

/**
 * Turning measurements into what a reader sees: the printed tables, the target verdicts and the
 * markdown table for docs/benchmarks.md. No timing here.
 * @module
 */

/** stageline's targets that this suite checks itself (the cpu ones belong to cpu.js). */
export function evaluateTargets(rows, memoryRows) {
  const out = []
  for (const row of rows) {
    if (row.target == null || row.impl !== row.target.impl) continue
    const ok = row.ratio !== null
    out.push({
      workload: row.workload,
      text: `${row.workload}: ${row.target.text}`,
      value: ok
        ? `${fmtRatio(row.ratio)} (runs ${fmtRatio(row.ratioMin)}..${fmtRatio(row.ratioMax)})`
        : row.error,
      pass: ok && row.ratio >= row.target.min,
    })
  }
  const sl = memoryRows.find((r) => r.impl === 'stageline')
  const pm = memoryRows.find((r) => r.impl === 'p-map')
  if (sl !== undefined && sl.points.length >= 2) {
    const first = sl.points[0]
    const last = sl.points[sl.points.length - 1]
    out.push({
      workload: 'memory',
      text: `memory: stageline peak RSS at ${fmtCount(last.n)} items within 10 MB of that at ${fmtCount(first.n)}`,
      value:
        sl.growthMB === null
          ? (sl.error ?? sl.skipped)
          : `${fmtMB(first.maxRssMB)} -> ${fmtMB(last.maxRssMB)} (${signed(sl.growthMB)} MB)`,
      pass: sl.growthMB !== null && sl.growthMB <= 10,
    })
    const pmLast = pm?.points.find((p) => p.n === last.n)
    if (pmLast !== undefined) {
      const ok = last.maxRssMB !== null && pmLast.maxRssMB !== null
      out.push({
        workload: 'memory',
        text: `memory: stageline peak RSS at ${fmtCount(last.n)} items no more than p-map's`,
        value: ok
          ? `${fmtPeak(last)} vs p-map ${fmtPeak(pmLast)}`
          : (sl.error ?? pm.error ?? pm.skipped ?? sl.skipped ?? 'not measured'),
        pass: ok && last.maxRssMB <= pmLast.maxRssMB,
      })
    }
  }
  return out
}

/**
 * The verdicts measured in the benchmark process on a workload that was also measured alone in a
 * child process (benchmarks/clean.js) become `info`: with every peer's library loaded, the bare
 * chain slows by 1.06x to 1.9x from run to run with no change to either side (docs/dev/engine-notes.md,
 * "The baseline moves with the young generation"), so a target judged there flips between met and
 * missed. The row measured alone decides; a clean row that failed decides nothing, and the
 * in-process verdict stands.
 */
export function deferToClean(inProcess, cleanResults) {
  const decided = new Set(cleanResults.filter((r) => r.error === undefined).map((r) => r.workload))
  return inProcess.map((t) =>
    decided.has(t.workload)
      ? {
          ...t,
          text: `${t.text} (in the benchmark process: decided by the rows alone in their process)`,
          info: true,
        }
      : t,
  )
}

export function fmtRatio(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '-'
  return x >= 10 ? `${x.toFixed(1)}x` : x >= 0.1 ? `${x.toFixed(2)}x` : `${x.toFixed(3)}x`
}

export function fmtRate(x) {
  if (x === null || x === undefined) return '-'
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M/s`
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k/s`
  return `${x.toFixed(0)}/s`
}

export function fmtCount(n) {
  if (n >= 1e6 && n % 1e5 === 0) return `${n / 1e6}M`
  if (n >= 1e3 && n % 100 === 0) return `${n / 1e3}k`
  return String(n)
}

/** A memory point's peak: the median, with the range and count of runs when there were several. */
export function fmtPeak(p) {
  const runs = p.rssRuns
  if (p.maxRssMB === null || runs === undefined || runs.length < 2) return fmtMB(p.maxRssMB)
  const lo = Math.min(...runs)
  const hi = Math.max(...runs)
  return `${fmtMB(p.maxRssMB)} (${lo.toFixed(0)}..${hi.toFixed(0)}, median of ${runs.length})`
}

export function fmtMB(x) {
  return x === null || x === undefined ? '-' : `${x.toFixed(0)} MB`
}

function signed(x) {
  return x >= 0 ? `+${x.toFixed(1)}` : x.toFixed(1)
}

function pad(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

/** The throughput table of one workload, as printed. */
export function throughputTable(rows) {
  const head = [
    'implementation',
    'items',
    'items/s',
    `ratio to ${rows[0]?.baseline}`,
    'runs',
    'peak reorder',
    '',
  ]
  const body = rows.map((r) => [
    r.label,
    fmtCount(r.n) + (r.reduced ? '*' : ''),
    fmtRate(r.itemsPerSec),
    r.ratio === null ? '-' : `${fmtRatio(r.ratio)} [${fmtRatio(r.ratioMin)}..${fmtRatio(r.ratioMax)}]`,
    r.runs,
    r.peakReorder ?? '',
    r.error === null ? '' : `FAILED: ${r.error}`,
  ])
  return pad([head, ...body])
}

/** The memory table, as printed. */
export function memoryTable(rows) {
  const sizes = [
    ...new Set(rows.filter((r) => r.role !== 'control').flatMap((r) => r.points.map((p) => p.n))),
  ]
  const head = [
    'implementation',
    ...sizes.map((n) => `peak RSS ${fmtCount(n)}`),
    'growth',
    'items/s (largest)',
    '',
  ]
  const body = rows.map((r) => {
    const at = (n, i) => {
      const p = r.role === 'control' ? r.points[i] : r.points.find((q) => q.n === n)
      if (p === undefined) return '-'
      return r.role === 'control' ? `${fmtMB(p.maxRssMB)} (${fmtCount(p.n)})` : fmtPeak(p)
    }
    const last = r.points[r.points.length - 1]
    return [
      r.label,
      ...sizes.map(at),
      r.growthMB === null ? '-' : `${signed(r.growthMB)} MB`,
      fmtRate(last?.itemsPerSec ?? null),
      [r.error === null ? '' : `FAILED: ${r.error}`, r.skipped ?? ''].join(' ').trim(),
    ]
  })
  return pad([head, ...body])
}

/** Markdown tables of a whole result file, for docs/benchmarks.md. */
export function markdown(result) {
  const lines = []
  const byWorkload = new Map()
  for (const r of result.throughput) {
    if (!byWorkload.has(r.workload)) byWorkload.set(r.workload, [])
    byWorkload.get(r.workload).push(r)
  }
  for (const [id, rows] of byWorkload) {
    lines.push(`### ${rows[0].title}`, '')
    lines.push(
      `| implementation | items | items/s | ratio to ${rows[0].baseline} (min..max) | peak reorder |`,
    )
    lines.push('| --- | ---: | ---: | ---: | ---: |')
    for (const r of rows) {
      const ratio =
        r.ratio === null
          ? `failed: ${r.error}`
          : `${fmtRatio(r.ratio)} (${fmtRatio(r.ratioMin)}..${fmtRatio(r.ratioMax)})`
      const name = r.role === 'stageline' ? `**${r.label}**` : r.label
      lines.push(
        `| ${name} | ${fmtCount(r.n)}${r.reduced ? '*' : ''} | ${fmtRate(r.itemsPerSec)} | ${ratio} | ${r.peakReorder ?? ''} |`,
      )
    }
    lines.push('')
    void id
  }
  if ((result.clean ?? []).length > 0) {
    lines.push('### overhead targets, stageline alone in its process (benchmarks/clean.js)', '')
    lines.push(
      '| row | young generation | bare chain, ns/item | least queued design, ns/item | stageline, ns/item | stageline against the target (min..max) | stageline / the bare chain |',
    )
    lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
    for (const r of result.clean) {
      const young = r.youngMB == null ? "V8's default" : `${r.youngMB} MB`
      const name = r.row ?? r.workload
      const against = r.against === 'least-queued' ? ' the least queued design' : ' the bare chain'
      lines.push(
        r.error === undefined
          ? `| ${name} | ${young} | ${r.bareNs.toFixed(0)} | ${r.againstNs === undefined ? '' : r.againstNs.toFixed(0)} | ${r.stagelineNs.toFixed(0)} | ${fmtRatio(r.ratio)}${against} (${fmtRatio(r.ratioMin)}..${fmtRatio(r.ratioMax)}) | ${fmtRatio(r.ratioBare ?? r.ratio)} |`
          : `| ${name} | ${young} | | | | failed: ${r.error} | |`,
      )
    }
    if (result.cleanImport != null) {
      const m = result.cleanImport
      lines.push(
        `| import | V8's default | | | | ${m.median.toFixed(1)} ms to import stageline in a fresh process (${m.min.toFixed(1)}..${m.max.toFixed(1)}) | |`,
      )
    }
    lines.push('')
  }
  if (result.memory.length > 0) {
    const sizes = [
      ...new Set(result.memory.filter((r) => r.role !== 'control').flatMap((r) => r.points.map((p) => p.n))),
    ]
    lines.push('### memory: items of 1 KB through 2 steps, consumer yielding every 100 items', '')
    lines.push(
      `| implementation | ${sizes.map((n) => `peak RSS, ${fmtCount(n)} items`).join(' | ')} | growth | items/s |`,
    )
    lines.push(`| --- | ${sizes.map(() => '---:').join(' | ')} | ---: | ---: |`)
    for (const r of result.memory) {
      const cells = sizes.map((n, i) => {
        const p = r.role === 'control' ? r.points[i] : r.points.find((q) => q.n === n)
        if (p === undefined) return '-'
        return r.role === 'control' ? `${fmtMB(p.maxRssMB)} (${fmtCount(p.n)} items)` : fmtPeak(p)
      })
      const last = r.points[r.points.length - 1]
      const name = r.role === 'stageline' ? `**${r.label}**` : r.label
      const growth = r.growthMB === null ? (r.error ?? r.skipped ?? '-') : `${signed(r.growthMB)} MB`
      lines.push(`| ${name} | ${cells.join(' | ')} | ${growth} | ${fmtRate(last?.itemsPerSec ?? null)} |`)
    }
    lines.push('')
  }
  if (result.targets.length > 0) {
    lines.push('### stageline targets', '', '| target | measured | |', '| --- | --- | --- |')
    for (const t of result.targets) {
      lines.push(`| ${t.text} | ${t.value} | ${t.info ? 'for information' : t.pass ? 'met' : '**missed**'} |`)
    }
    lines.push('')
  }
  return lines.join('\n')
}

/**
 * JSON as the project's formatter (Biome) writes it, so that result files pass `biome check`:
 * objects one key per line, arrays of plain values on one line when they fit in 110 columns, else
 * numbers filled line by line and anything else one per line.
 */
export function toJson(value, indent = '', prefix = 0) {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  const inner = `${indent}  `
  if (Array.isArray(value)) {
    const line = flat(value)
    // `prefix` is what precedes the value on its line (indent, key); +1 for a trailing comma
    if (line !== undefined && prefix + line.length + 1 <= 110) return line
    if (value.every((v) => typeof v === 'number')) return fillNumbers(value, indent)
    return `[\n${value.map((v) => inner + toJson(v, inner, inner.length)).join(',\n')}\n${indent}]`
  }
  const entries = Object.entries(value).filter(([, v]) => v !== undefined && typeof v !== 'function')
  if (entries.length === 0) return '{}'
  const line = ([k, v]) => {
    const key = `${inner}${JSON.stringify(k)}: `
    return key + toJson(v, inner, key.length)
  }
  return `{\n${entries.map(line).join(',\n')}\n${indent}}`
}

/** The one-line form of a value, or undefined if it holds an object with keys (those stay expanded). */
function flat(value) {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) {
    const parts = value.map(flat)
    return parts.includes(undefined) ? undefined : `[${parts.join(', ')}]`
  }
  return Object.keys(value).length === 0 ? '{}' : undefined
}

function fillNumbers(xs, indent) {
  const inner = `${indent}  `
  const lines = []
  let line = ''
  for (const x of xs) {
    const item = JSON.stringify(x)
    if (line !== '' && inner.length + line.length + 2 + item.length + 1 > 110) {
      lines.push(`${inner}${line},`)
      line = item
    } else line = line === '' ? item : `${line}, ${item}`
  }
  lines.push(inner + line)
  return `[\n${lines.join('\n')}\n${indent}]`
}

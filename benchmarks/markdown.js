/**
 * `node benchmarks/markdown.js [results/bench.json]`: prints a result file's tables as markdown,
 * for docs/benchmarks.md, then the run's load averages, for the log in docs/dev/measurements.md.
 * @module
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { markdown } from './report.js'

const file = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), 'results', 'bench.json')
const result = JSON.parse(readFileSync(file, 'utf8'))
const m = result.meta
console.log(
  `Run ${m.date} on ${m.machine}, node ${m.node}, commit ${m.commit ?? 'unknown'}: \`${m.command}\``,
)
console.log(`(${m.rounds} rounds per cell, ${m.seconds} s in all)\n`)
console.log(markdown(result))
console.log(
  `For docs/dev/measurements.md: load average ${m.loadavgStart.join(' ')} at the start, ${m.loadavgEnd.join(' ')} at the end`,
)

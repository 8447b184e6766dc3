#!/usr/bin/env node
/**
 * `stageline-report`: turns a `.json` run report into its HTML page, from a shell:
 * `npx stageline-report run.json -o run.html`.
 * @module
 */
import { realpathSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { describeCause } from '../errors.js'
import { renderReport } from './render.js'

/** What `stageline-report --help` prints. */
export const CLI_USAGE = `Usage: stageline-report <report.json> [-o <page.html>]

Renders a run report written as JSON (the run option report: 'run.json') as
one self-contained HTML page, the same page a run writes for report: 'run.html'.

Options:
  -o, --output FILE   where to write the page (default: the report's path with .html)
  -h, --help          show this help
`

/** Where the command writes. */
export interface CliIO {
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown }
}

/** Runs the command with `argv` (without node and the script); resolves to the exit code. */
export async function cli(argv: readonly string[], io: CliIO): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; strict: true; allowPositionals: true }>>
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: true })
  } catch (err) {
    io.stderr.write(`stageline-report: ${(err as Error).message}\nRun with --help to see the options.\n`)
    return 2
  }
  if (parsed.values.help === true) {
    io.stdout.write(CLI_USAGE)
    return 0
  }
  if (parsed.positionals.length !== 1) {
    io.stderr.write(
      `stageline-report: expected one report file, got ${parsed.positionals.length}\nRun with --help to see the options.\n`,
    )
    return 2
  }
  const input = parsed.positionals[0]!
  const output = parsed.values.output ?? `${input.replace(/\.json$/i, '')}.html`
  if (output === input) {
    io.stderr.write(`stageline-report: the page would overwrite the report ${input}: name another with -o\n`)
    return 2
  }
  let text: string
  try {
    text = await readFile(input, 'utf8')
  } catch (err) {
    io.stderr.write(`stageline-report: cannot read ${input}: ${describeCause(err)}\n`)
    return 1
  }
  let html: string
  try {
    html = renderReport(text)
  } catch (err) {
    io.stderr.write(
      `stageline-report: ${input}: ${(err as Error).message.replace(/^renderReport\(\): /, '')}\n`,
    )
    return 1
  }
  try {
    await writeFile(output, html)
  } catch (err) {
    io.stderr.write(`stageline-report: cannot write ${output}: ${describeCause(err)}\n`)
    return 1
  }
  io.stdout.write(`wrote ${output}\n`)
  return 0
}

const OPTIONS = {
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const

function isEntryPoint(): boolean {
  const script = process.argv[1]
  if (script === undefined) return false
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  process.exitCode = await cli(process.argv.slice(2), process)
}

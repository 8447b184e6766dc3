/**
 * The run option `report`: a file path ending in `.html` or `.json`, checked when the run starts
 * (before any item is read) so that a report that cannot be written is refused then, not found out
 * when the run is over. Synchronous, a few system calls, and only for runs that ask for a report.
 * @module
 */
import { createRequire } from 'node:module'
import { dirname, extname, resolve } from 'node:path'
import { got } from './check.js'

/**
 * node:fs, loaded only when a report's path is checked, and as CommonJS: its ESM namespace
 * evaluates `fs.promises`, which loads fs/promises, streams and readline, about 0.5 MB of RSS in
 * every program that imports stageline, reports or not.
 */
let fs: typeof import('node:fs') | undefined
function loadFs(): typeof import('node:fs') {
  fs ??= createRequire(import.meta.url)('node:fs') as typeof import('node:fs')
  return fs
}

/** The formats a report is written in, by the path's extension. */
export type ReportFormat = 'html' | 'json'

/** A checker for the `report` option: a path ending in `.html` or `.json`. */
export function reportPath(where: string, option: string, value: unknown): string {
  if (typeof value !== 'string' || value === '' || reportFormat(value) === undefined) {
    throw new TypeError(
      `${where}: expected \`${option}\` to be the path of a file ending in .html (a page) or .json (the data), got ${got(value)}`,
    )
  }
  return value
}

/** The format `path` asks for, by its extension; undefined when it is neither. */
export function reportFormat(path: string): ReportFormat | undefined {
  const ext = extname(path).toLowerCase()
  return ext === '.html' || ext === '.htm' ? 'html' : ext === '.json' ? 'json' : undefined
}

/**
 * Checks that a report can be written at `path`: its directory exists and can be written to, and
 * the path is not a directory (nor a file that cannot be written). Throws an Error naming the path
 * and what is wrong; returns the absolute path.
 */
export function checkReportTarget(where: string, path: string): string {
  const { accessSync, constants, statSync } = loadFs()
  const abs = resolve(path)
  const dir = dirname(abs)
  const refuse = (why: string, cause?: unknown): never => {
    throw new Error(`${where}: cannot write the run report to ${abs}: ${why}`, { cause })
  }
  let dirStat: ReturnType<typeof statSync>
  try {
    dirStat = statSync(dir)
  } catch (err) {
    return refuse(`the directory ${dir} does not exist`, err)
  }
  if (!dirStat.isDirectory()) refuse(`${dir} is not a directory`)
  try {
    accessSync(dir, constants.W_OK)
  } catch (err) {
    refuse(`the directory ${dir} cannot be written to`, err)
  }
  let target: ReturnType<typeof statSync> | undefined
  try {
    target = statSync(abs)
  } catch {
    target = undefined // not there yet: it will be made
  }
  if (target?.isDirectory()) refuse('it is a directory')
  if (target !== undefined) {
    try {
      accessSync(abs, constants.W_OK)
    } catch (err) {
      refuse('the file exists and cannot be written to', err)
    }
  }
  return abs
}

/**
 * `stageline-report`: a JSON run report turned into its page from a shell, in process (cli()) and
 * as the command package.json's `bin` names, from the built package.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, test } from 'vitest'
import { mapStage, pipe } from '../lib/index.js'
import { CLI_USAGE, cli } from '../lib/report/cli.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'stageline-cli-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function io() {
  const out = { stdout: '', stderr: '' }
  return {
    out,
    io: {
      stdout: { write: (t: string) => (out.stdout += t) },
      stderr: { write: (t: string) => (out.stderr += t) },
    },
  }
}

describe('stageline-report', () => {
  test('renders a JSON report as the page, next to it or where -o says', async () => {
    const json = join(dir, 'run.json')
    await pipe(
      [1, 2, 3],
      mapStage((n: number) => n, { name: 'copy' }),
    ).toArray({ report: json })
    const a = io()
    expect(await cli([json], a.io)).toBe(0)
    expect(a.out.stdout).toBe(`wrote ${join(dir, 'run.html')}\n`)
    expect(readFileSync(join(dir, 'run.html'), 'utf8')).toMatch(/^<!doctype html>[\s\S]*copy/)
    const b = io()
    expect(await cli([json, '-o', join(dir, 'other.html')], b.io)).toBe(0)
    expect(readFileSync(join(dir, 'other.html'), 'utf8')).toContain('id="verdict"')
  })

  test('says what is wrong: no file, two files, an unknown flag, a file that is not a report', async () => {
    const none = io()
    expect(await cli([], none.io)).toBe(2)
    expect(none.out.stderr).toContain('expected one report file, got 0')
    const flag = io()
    expect(await cli(['--colour'], flag.io)).toBe(2)
    expect(flag.out.stderr).toContain("Unknown option '--colour'")
    const missing = io()
    expect(await cli([join(dir, 'nope.json')], missing.io)).toBe(1)
    expect(missing.out.stderr).toMatch(/cannot read .*nope\.json: Error: ENOENT/)
    const bad = join(dir, 'bad.json')
    writeFileSync(bad, '{"format":"other"}')
    const wrong = io()
    expect(await cli([bad], wrong.io)).toBe(1)
    expect(wrong.out.stderr).toBe(
      `stageline-report: ${bad}: expected a stageline run report (an object whose \`format\` is "stageline-report")\n`,
    )
    const same = io()
    expect(await cli([bad, '-o', bad], same.io)).toBe(2)
    expect(same.out.stderr).toContain('would overwrite the report')
    const unwritable = io()
    const json = join(dir, 'ok.json')
    await pipe([1]).toArray({ report: json })
    expect(await cli([json, '-o', join(dir, 'no', 'such', 'dir.html')], unwritable.io)).toBe(1)
    expect(unwritable.out.stderr).toMatch(/cannot write .*dir\.html/)
    const help = io()
    expect(await cli(['--help'], help.io)).toBe(0)
    expect(help.out.stdout).toBe(CLI_USAGE)
  })

  test('the built command, as package.json bin names it, runs from a shell', async () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      bin: Record<string, string>
    }
    const bin = join(root, pkg.bin['stageline-report']!)
    expect(readFileSync(bin, 'utf8').split('\n', 1)[0]).toBe('#!/usr/bin/env node')
    const json = join(dir, 'shell.json')
    await pipe([1, 2]).toArray({ report: json })
    const out = execFileSync(process.execPath, [bin, json, '-o', join(dir, 'shell.html')], {
      encoding: 'utf8',
    })
    expect(out).toBe(`wrote ${join(dir, 'shell.html')}\n`)
    const failed = spawnSync(process.execPath, [bin], { encoding: 'utf8' })
    expect(failed.status).toBe(2)
  })
})

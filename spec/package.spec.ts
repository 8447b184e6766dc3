/**
 * The built package, imported by its name as a user would: Node resolves a package's own name
 * through its package.json "exports", which point at dist/. `npm test` builds dist/ before the
 * specs run; when this spec runs alone and dist/ is missing, it builds it first.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, test } from 'vitest'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  name: string
  type: string
  exports: Record<string, { types: string; default: string } | string>
  scripts: Record<string, string>
}
type Api = typeof import('../lib/index.js')

/** Builds dist/ when it is missing; fails with a message that says what to run otherwise. */
function ensureBuilt(): void {
  const entry = join(root, (pkg.exports['.'] as { default: string }).default)
  if (existsSync(entry)) return
  const tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc')
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'pipe' })
  } catch (err) {
    const out = (err as { stdout?: Buffer }).stdout?.toString() ?? ''
    throw new Error(
      `dist/ is missing and \`npx tsc -p tsconfig.build.json\` failed; run \`npm run build\`:\n${out}`,
    )
  }
  if (!existsSync(entry)) {
    throw new Error(
      `the build did not produce ${entry}, which package.json "exports" names: run \`npm run build\``,
    )
  }
}

/** Runs an ES module in a fresh Node process from the package root, and returns its stdout. */
function runNode(code: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: root, encoding: 'utf8' })
}

beforeAll(ensureBuilt, 180_000)

describe('the built package', () => {
  test('package.json describes an ES module package whose "." export points at built files', () => {
    expect(pkg.name).toBe('stageline')
    expect(pkg.type).toBe('module')
    const main = pkg.exports['.'] as { types: string; default: string }
    expect(main.default).toMatch(/^\.\/dist\//)
    expect(existsSync(join(root, main.default))).toBe(true)
    expect(existsSync(join(root, main.types))).toBe(true)
  })

  test("import('stageline') gives the public API, and it runs a pipeline", async () => {
    const name = 'stageline' // not a literal import: the type check must not need dist/
    const api = (await import(name)) as Api
    for (const key of ['pipe', 'stage', 'mapStage', 'Stage', 'Pipeline', 'TaskException'] as const) {
      expect(api[key], key).toBeTypeOf('function')
    }
    const { pipe, mapStage, stage, TaskException } = api
    const sum = stage(async function* sum(xs: AsyncIterable<number>) {
      let t = 0
      for await (const x of xs) t += x
      yield t
    })
    expect(
      await pipe(
        [1, 2, 3],
        mapStage(async (n: number) => n * 2, { workers: 2 }),
        sum,
      ).execute(),
    ).toBe(12)
    const err = await pipe(
      [1],
      mapStage(function bad(): number {
        throw new Error('x')
      }),
    )
      .execute()
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TaskException)
  })

  test('a plain Node process resolves the package by its name, as a dependent package would', () => {
    const out = runNode(`
      import { pipe, mapStage, TaskException } from 'stageline'
      const out = await pipe([3, 1, 2], mapStage(async (n) => n * 10, { workers: 2, ordered: true })).toArray()
      const err = await pipe([1], mapStage(function boom() { throw new Error('b') })).execute().catch((e) => e)
      console.log(JSON.stringify({ out, failed: err instanceof TaskException, message: err.message }))
    `)
    expect(JSON.parse(out.trim())).toEqual({
      out: [30, 10, 20],
      failed: true,
      message: 'The task "boom-0" raised Error: b',
    })
  })

  test('the type declarations are shipped next to the entry point', () => {
    const types = readFileSync(join(root, (pkg.exports['.'] as { types: string }).types), 'utf8')
    for (const name of ['pipe', 'stage', 'mapStage', 'Stage', 'Pipeline', 'TaskException']) {
      expect(types).toMatch(new RegExp(`\\b${name}\\b`))
    }
  })

  test('the thread entry is the compiled TypeScript: dist/threads/entry.js is shipped, built from lib/threads/entry.ts', () => {
    const entry = join(root, 'dist', 'threads', 'entry.js')
    expect(existsSync(entry)).toBe(true)
    // its source map points at the TypeScript it was compiled from
    const map = JSON.parse(readFileSync(`${entry}.map`, 'utf8')) as { sources: string[] }
    expect(map.sources.map((s) => resolve(dirname(entry), s))).toEqual([
      join(root, 'lib', 'threads', 'entry.ts'),
    ])
    // no hand-written JavaScript copy beside the sources, and no build step that copies one
    expect(existsSync(join(root, 'lib', 'threads', 'entry.js'))).toBe(false)
    expect(pkg.scripts.build).toBe('tsc -p tsconfig.build.json')
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
    const packed = JSON.parse(
      execFileSync(npm, ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8', stdio: 'pipe' }),
    ) as { files: { path: string }[] }[]
    const files = packed[0]!.files.map((f) => f.path)
    expect(files).toContain('dist/threads/entry.js')
    expect(files).toContain('dist/threads/protocol.js')
    expect(files.filter((f) => f.startsWith('lib/'))).toEqual([])
  })

  test('a thread stage runs from the built package, resolved by its name', () => {
    const work = new URL('./fixtures/threads/work.js', import.meta.url).href
    const out = runNode(`
      import { pipe, threadStage } from 'stageline'
      const s = threadStage(${JSON.stringify(work)}, { export: 'failAt57', threads: 1, ordered: true })
      console.log(JSON.stringify({ workers: s.options.workers, out: await pipe([1, 2, 3], s).toArray() }))
    `)
    expect(JSON.parse(out.trim())).toEqual({ workers: 1, out: [2, 4, 6] })
  })
})

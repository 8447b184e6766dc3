/**
 * The built package, imported by its name as a user would: Node resolves a package's own name
 * through its package.json "exports", which point at dist/. `npm test` builds dist/ before the
 * specs run; when this spec runs alone and dist/ is missing, it builds it first.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
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
    expect(pkg.scripts.build).not.toMatch(/entry\.js|cpSync/)
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

/**
 * Lays the built package out as a dependent project would have it, in a temporary folder:
 * `node_modules/stageline` (package.json and dist/) and nothing else, so that an optional peer
 * dependency is missing there. Returns the project folder.
 */
function installedAlone(): string {
  const project = mkdtempSync(join(tmpdir(), 'stageline-alone-'))
  const at = join(project, 'node_modules', 'stageline')
  mkdirSync(at, { recursive: true })
  cpSync(join(root, 'package.json'), join(at, 'package.json'))
  cpSync(join(root, 'dist'), join(at, 'dist'), { recursive: true })
  return project
}

function runIn(dir: string, code: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: dir, encoding: 'utf8' })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('what the package needs and ships', () => {
  test('the core runs with none of the optional peer dependencies installed; stageline/progress and stageline/otel name the one they lack', () => {
    const project = installedAlone()
    try {
      const core = runIn(
        project,
        `import { pipe, mapStage } from 'stageline'
         console.log(JSON.stringify(await pipe([1, 2], mapStage((n) => n + 1)).toArray()))`,
      )
      expect(core.stderr).toBe('')
      expect(core.stdout.trim()).toBe('[2,3]')
      const progress = runIn(project, `await import('stageline/progress')`)
      expect(progress.status).not.toBe(0)
      expect(progress.stderr).toContain(
        'stageline/progress needs the package `log-update` (the live table redrawn in place on a terminal), an optional peer dependency of stageline, and it is not installed: install it next to stageline with `npm install log-update`',
      )
      const otel = runIn(project, `await import('stageline/otel')`)
      expect(otel.status).not.toBe(0)
      expect(otel.stderr).toContain(
        'stageline/otel needs the package `@opentelemetry/api` (the OpenTelemetry API the metrics are recorded through), an optional peer dependency of stageline, and it is not installed: install it next to stageline with `npm install @opentelemetry/api`',
      )
      // the report and the live page need nothing more than the core
      const report = runIn(
        project,
        `import { pipe, mapStage } from 'stageline'
         import { dashboard } from 'stageline/dashboard'
         import { renderReport } from 'stageline/report'
         const live = await dashboard()
         await pipe([1, 2], mapStage((n) => n)).toArray({ report: 'run.json', dashboard: live })
         await live.close()
         const { readFileSync } = await import('node:fs')
         console.log(renderReport(readFileSync('run.json', 'utf8')).startsWith('<!doctype html>'))`,
      )
      expect(report.stderr).toBe('')
      expect(report.stdout.trim()).toBe('true')
    } finally {
      rmSync(project, { recursive: true, force: true })
    }
  })

  test('the optional parts are optional peer dependencies, and only piscina is a dependency', () => {
    const full = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
    expect(Object.keys(full.dependencies)).toEqual(['piscina'])
    for (const name of ['redis', 'msgpackr', 'log-update', '@opentelemetry/api']) {
      expect(full.peerDependencies[name], name).toBeTypeOf('string')
      expect(full.peerDependenciesMeta[name], name).toEqual({ optional: true })
    }
  })

  test('a bundler keeps what a user file that imports only mapStage needs, and the bundle runs', async () => {
    // "sideEffects": false lets a bundler drop every module whose exports are unused: nothing that
    // mapStage or its transform needs may rely on another module having been imported for its effect
    const { build } = await import('esbuild')
    const dir = mkdtempSync(join(tmpdir(), 'stageline-bundle-'))
    try {
      const entry = join(dir, 'user.mjs')
      writeFileSync(
        entry,
        `import { mapStage } from 'stageline'
         const double = mapStage((n) => n * 2, { workers: 2, ordered: true })
         const out = []
         for await (const n of double.transform([1, 2, 3])) out.push(n)
         console.log(JSON.stringify(out))`,
      )
      const outfile = join(dir, 'bundle.mjs')
      await build({
        entryPoints: [entry],
        bundle: true,
        platform: 'node',
        format: 'esm',
        outfile,
        nodePaths: [join(root, '..')],
        alias: { stageline: join(root, 'dist', 'index.js') },
        logLevel: 'silent',
      })
      const bundle = readFileSync(outfile, 'utf8')
      // tree-shaken: the Redis transport, the progress reporter, the dashboard and telemetry are
      // not in it, and the report's recorder and renderer only behind the import a run with a
      // report makes
      expect(bundle).not.toMatch(/redisStage|progressReporter|livePage|otelMetrics/)
      expect(bundle).not.toMatch(/function renderReport/)
      expect(execFileSync(process.execPath, [outfile], { encoding: 'utf8' }).trim()).toBe('[2,4,6]')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('importing the core loads no streams, readline or fs/promises', () => {
    // node:fs's ESM namespace evaluates fs.promises, which pulls in streams and readline: about
    // 0.5 MB of RSS in every program, so the report's path check loads node:fs only when asked
    const dir = mkdtempSync(join(tmpdir(), 'stageline-import-'))
    try {
      const probe = join(dir, 'probe.mjs')
      writeFileSync(
        probe,
        `const before = new Set(process.moduleLoadList)
         await import(${JSON.stringify(join(root, 'dist', 'index.js'))})
         const added = process.moduleLoadList.filter((m) => !before.has(m))
         process.stdout.write(JSON.stringify(added))`,
      )
      const added: string[] = JSON.parse(execFileSync(process.execPath, [probe], { encoding: 'utf8' }))
      expect(added).toContain('NativeModule perf_hooks')
      expect(
        added.filter((m) =>
          /^NativeModule (stream|readline|fs\/promises|internal\/(streams|readline))/.test(m),
        ),
      ).toEqual([])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('the report renderer is loaded only when a run asks for a report: a bundle keeps it in a chunk of its own', async () => {
    const { build } = await import('esbuild')
    const dir = mkdtempSync(join(tmpdir(), 'stageline-bundle-'))
    try {
      const entry = join(dir, 'user.mjs')
      writeFileSync(
        entry,
        `import { mapStage, pipe } from 'stageline'
         const p = pipe([1, 2, 3], mapStage((n) => n * 2))
         console.log(JSON.stringify(await p.toArray()))
         if (process.argv[2]) console.log(JSON.stringify(await p.toArray({ report: process.argv[2] })))`,
      )
      const outdir = join(dir, 'out')
      await build({
        entryPoints: [entry],
        bundle: true,
        splitting: true,
        platform: 'node',
        format: 'esm',
        outdir,
        alias: { stageline: join(root, 'dist', 'index.js') },
        logLevel: 'silent',
      })
      const main = readFileSync(join(outdir, 'user.js'), 'utf8')
      expect(main).not.toMatch(/function renderReport|stageline-report/)
      const chunks = readdirSync(outdir).filter((f) => f !== 'user.js')
      expect(
        chunks.some((f) => readFileSync(join(outdir, f), 'utf8').includes('function renderReport')),
      ).toBe(true)
      const report = join(dir, 'run.json')
      const out = execFileSync(process.execPath, [join(outdir, 'user.js'), report], { encoding: 'utf8' })
      expect(out.trim().split('\n')).toEqual(['[2,4,6]', '[2,4,6]'])
      expect(JSON.parse(readFileSync(report, 'utf8')).itemsOut).toBe(3)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('@internal members are not in the declarations, and source maps come with their sources', () => {
    const d = readFileSync(join(root, 'dist', 'stage.d.ts'), 'utf8')
    expect(d).toMatch(/class Stage/)
    expect(d).not.toMatch(/\bplan\(name/)
    expect(d).not.toMatch(/\[KIND\]/)
    const maps = readdirSync(join(root, 'dist'), { recursive: true, encoding: 'utf8' }).filter((f) =>
      f.endsWith('.js.map'),
    )
    expect(maps.length).toBeGreaterThan(10)
    for (const f of maps) {
      const map = JSON.parse(readFileSync(join(root, 'dist', f), 'utf8')) as {
        sources: string[]
        sourcesContent?: string[]
      }
      expect(map.sourcesContent?.length, f).toBe(map.sources.length)
    }
  })
})

describe('stageline/redis without its optional peer dependencies', () => {
  /**
   * The built package laid out in a fresh folder as a dependent project's node_modules/stageline,
   * with `packages` (from this project's node_modules) next to it and nothing else; runs `code`
   * there as an ES module and returns what it printed.
   */
  function inProject(packages: string[], code: string): string {
    const project = mkdtempSync(join(tmpdir(), 'stageline-peer-'))
    try {
      const modules = join(project, 'node_modules')
      const installed = join(modules, 'stageline')
      mkdirSync(installed, { recursive: true })
      cpSync(join(root, 'dist'), join(installed, 'dist'), { recursive: true })
      cpSync(join(root, 'package.json'), join(installed, 'package.json'))
      for (const name of packages) symlinkSync(join(root, 'node_modules', name), join(modules, name), 'dir')
      // nothing else is found from there: the test is void if a stray install answers
      const from = createRequire(join(installed, 'package.json'))
      for (const name of ['redis', 'msgpackr']) {
        if (!packages.includes(name)) expect(() => from.resolve(name)).toThrow(/Cannot find module/)
      }
      return execFileSync(process.execPath, ['--input-type=module', '-e', code], {
        cwd: project,
        encoding: 'utf8',
      })
    } finally {
      rmSync(project, { recursive: true, force: true })
    }
  }

  const probe = `
    const core = await import('stageline')
    const out = await core.pipe([1, 2], core.mapStage((n) => n * 2)).toArray()
    const failed = await import('stageline/redis').then(() => undefined, (e) => ({ message: e.message, cause: e.cause?.code }))
    console.log(JSON.stringify({ out, failed }))
  `

  test('the core imports and runs; stageline/redis fails at import, naming the missing package and the command that installs it', () => {
    expect(JSON.parse(inProject([], probe).trim())).toEqual({
      out: [2, 4],
      failed: {
        message:
          'stageline/redis needs the package `redis` (node-redis, the Redis client), an optional peer dependency of stageline, and it is not installed: install it next to stageline with `npm install redis msgpackr`',
        cause: 'ERR_MODULE_NOT_FOUND',
      },
    })
  })

  test('with redis installed and msgpackr missing, the error names msgpackr', () => {
    expect(JSON.parse(inProject(['redis'], probe).trim()).failed).toEqual({
      message:
        'stageline/redis needs the package `msgpackr` (the serializer of items and results), an optional peer dependency of stageline, and it is not installed: install it next to stageline with `npm install redis msgpackr`',
      cause: 'ERR_MODULE_NOT_FOUND',
    })
  })

  test('with both installed, stageline/redis imports', () => {
    const out = inProject(
      ['redis', 'msgpackr'],
      "const r = await import('stageline/redis'); console.log(typeof r.redisStage, typeof r.serveStage)",
    )
    expect(out.trim()).toBe('function function')
  })
})

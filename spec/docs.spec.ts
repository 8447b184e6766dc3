/**
 * The docs cannot drift from the code: every ```ts block of README.md and docs/*.md, and every
 * ```ts block in the TSDoc comments of lib/, is written out as a module in a temporary directory
 * inside the project (so `import ... from 'stageline'` resolves to this package by its own name,
 * through package.json `exports` and dist/, as it would for a user), type-checked with the
 * project's compiler options, compiled, and run with node.
 *
 * Two marks, each an HTML comment on the line before a block:
 * - `<!-- no-run -->` (or `<!-- no-run: reason -->`) before a ```ts block: type-checked only, for
 *   the rare example that needs a Redis server or the network.
 * - `<!-- output -->` before the block that follows a ```ts block: what the example must print
 *   (compared line by line, trailing blanks ignored).
 *
 * A block whose first line is `// file: name.ts` is a module the other blocks of the same page can
 * import as `./name.js` (a worker module for a thread stage, say): it is type-checked, not run.
 * Each page's blocks are written to a directory of their own and run from it.
 *
 * Needs dist/: `npm test` builds before the specs; alone, run `npm run build` first.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
/** How long one example may run. */
const RUN_TIMEOUT_MS = 15_000
/** Examples run at once (each is a node process). */
const PARALLEL = 4

interface Example {
  /** `docs/concepts.md:42`: the file and the line of the opening fence. */
  readonly where: string
  /** The file name it is written to (without extension). */
  readonly file: string
  readonly code: string
  readonly run: boolean
  /** What it must print, if the docs say. */
  readonly output: string | undefined
}

interface Block {
  line: number
  code: string
  run: boolean
  output: string | undefined
}

const FENCE = /^\s*```(\S*)\s*$/
const NO_RUN = /^\s*<!--\s*no-run\b.*-->\s*$/
const OUTPUT = /^\s*<!--\s*output\s*-->\s*$/

/** The ```ts blocks of `lines`, with their 1-based line, their no-run mark and their expected output. */
function blocks(lines: readonly string[]): Block[] {
  const closing = (from: number): number => {
    let j = from
    while (j < lines.length && !FENCE.test(lines[j]!)) j++
    return j
  }
  const skipBlank = (from: number): number => {
    let n = from
    while (n < lines.length && lines[n]!.trim() === '') n++
    return n
  }
  const found: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!)
    if (open === null) continue
    const j = closing(i + 1)
    if (open[1] === 'ts' || open[1] === 'typescript') {
      let k = i - 1
      while (k >= 0 && lines[k]!.trim() === '') k--
      let output: string | undefined
      let n = skipBlank(j + 1)
      if (n < lines.length && OUTPUT.test(lines[n]!)) {
        n = skipBlank(n + 1)
        if (n < lines.length && FENCE.test(lines[n]!)) output = lines.slice(n + 1, closing(n + 1)).join('\n')
      }
      found.push({
        line: i + 1,
        code: lines.slice(i + 1, j).join('\n'),
        run: !(k >= 0 && NO_RUN.test(lines[k]!)),
        output,
      })
    }
    i = j
  }
  return found
}

const NAMED = /^\/\/ file: ([\w.-]+)\.ts\s*$/

/** Where a page's block is written: `<page>/L<line>`, or `<page>/<name>` for a `// file: name.ts` block. */
function example(path: string, b: Block): Example {
  const page = path.replace(/[^A-Za-z0-9]+/g, '_')
  const named = NAMED.exec(b.code.split('\n', 1)[0]!)
  return {
    ...b,
    where: `${path}:${b.line}`,
    file: `${page}/${named === null ? `L${b.line}` : named[1]}`,
    run: b.run && named === null,
  }
}

function markdownExamples(path: string): Example[] {
  const lines = readFileSync(join(root, path), 'utf8').split('\n')
  return blocks(lines).map((b) => example(path, { ...b, line: b.line }))
}

/** The ```ts blocks inside the /** comments of a source file, with the comment's ` * ` taken off. */
function tsdocExamples(path: string): Example[] {
  const text = readFileSync(join(root, path), 'utf8')
  const out: Example[] = []
  for (const m of text.matchAll(/\/\*\*[\s\S]*?\*\//g)) {
    const firstLine = text.slice(0, m.index).split('\n').length
    const lines = m[0].split('\n').map((l) =>
      l
        .replace(/^\s*\/\*\*\s?/, '')
        .replace(/\s*\*\/\s*$/, '')
        .replace(/^\s*\* ?/, ''),
    )
    for (const b of blocks(lines)) out.push(example(path, { ...b, line: firstLine + b.line - 1 }))
  }
  return out
}

function filesUnder(dir: string, ext: string): string[] {
  const abs = join(root, dir)
  if (!existsSync(abs)) return []
  return readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith(ext))
    .map((f) => join(dir, f))
    .sort()
}

const markdown = [
  'README.md',
  ...filesUnder('docs', '.md').filter((f) => !f.startsWith(`${join('docs', 'api')}/`)),
]
const examples: Example[] = [
  ...markdown.flatMap(markdownExamples),
  ...filesUnder('lib', '.ts').flatMap(tsdocExamples),
]

interface RunResult {
  code: number
  stdout: string
  /** stdout and stderr, for failure messages. */
  output: string
  timedOut: boolean
}

let dir = ''
const diagnostics = new Map<string, string[]>()
const runs = new Map<string, Promise<RunResult>>()

function runExample(ex: Example): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(dir, 'out', `${ex.file}.js`)],
      {
        cwd: join(dir, 'out', dirname(ex.file)),
        timeout: RUN_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: 16 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; killed?: boolean }) | null
        resolve({
          code: e === null ? 0 : typeof e.code === 'number' ? e.code : 1,
          stdout,
          output: `${stdout}${stderr}${e !== null && typeof e.code !== 'number' ? `\n${e.message}` : ''}`,
          timedOut: e?.killed === true,
        })
      },
    )
  })
}

/** Runs `jobs` at most `limit` at a time; returns one promise per job. */
function pooled<T>(jobs: (() => Promise<T>)[], limit: number): Promise<T>[] {
  let active = 0
  const waiting: (() => void)[] = []
  const slot = (): Promise<void> => {
    if (active < limit) {
      active++
      return Promise.resolve()
    }
    return new Promise((resolve) => waiting.push(resolve))
  }
  const release = (): void => {
    const next = waiting.shift()
    if (next === undefined) active--
    else next()
  }
  return jobs.map(async (job) => {
    await slot()
    try {
      return await job()
    } finally {
      release()
    }
  })
}

beforeAll(() => {
  if (!existsSync(join(root, 'dist', 'index.js'))) {
    throw new Error('dist/ is missing: run `npm run build` first (npm test does it before the specs)')
  }
  dir = mkdtempSync(join(root, '.docs-check-'))
  for (const ex of examples) {
    const file = join(dir, 'src', `${ex.file}.ts`)
    mkdirSync(dirname(file), { recursive: true })
    // `export {}` makes every block a module: top-level await works and blocks do not clash
    writeFileSync(file, `${ex.code}\nexport {}\n`)
  }
  const config = ts.getParsedCommandLineOfConfigFile(
    join(root, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'))
      },
    },
  )!
  const program = ts.createProgram(
    examples.map((ex) => join(dir, 'src', `${ex.file}.ts`)),
    {
      ...config.options,
      noEmit: false,
      rootDir: join(dir, 'src'),
      outDir: join(dir, 'out'),
      declaration: false,
      sourceMap: false,
    },
  )
  program.emit()
  for (const ex of examples) {
    const sf = program.getSourceFile(join(dir, 'src', `${ex.file}.ts`))!
    const found = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]
    diagnostics.set(
      ex.file,
      found.map((d) => {
        const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0)
        return `line ${line + 1} of the block: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
      }),
    )
  }
  // start every run now, a few at a time; each test awaits its own
  const runnable = examples.filter((ex) => ex.run && diagnostics.get(ex.file)!.length === 0)
  const results = pooled(
    runnable.map((ex) => () => runExample(ex)),
    PARALLEL,
  )
  runnable.forEach((ex, i) => {
    runs.set(ex.file, results[i]!)
  })
}, 300_000)

afterAll(async () => {
  await Promise.allSettled(runs.values())
  if (dir !== '') rmSync(dir, { recursive: true, force: true })
})

test('the docs and the TSDoc hold examples to check, and no-run marks stay rare', () => {
  expect(markdown).toContain('README.md')
  expect(examples.filter((e) => e.where.startsWith('docs/')).length).toBeGreaterThan(20)
  expect(examples.filter((e) => e.where.startsWith('lib/')).length).toBeGreaterThan(20)
  const files = examples.map((e) => e.file)
  expect(
    files.filter((f, i) => files.indexOf(f) !== i),
    'two `// file:` blocks of a page share a name',
  ).toEqual([])
  expect(examples.filter((e) => !e.run && !NAMED.test(e.code.split('\n', 1)[0]!)).length).toBeLessThanOrEqual(
    Math.ceil(examples.length / 10),
  )
})

describe.each(examples.map((ex) => [ex.where, ex] as const))('%s', (_where, ex) => {
  test('type-checks', () => {
    const found = diagnostics.get(ex.file)
    expect(found, `${ex.where}:\n${found?.join('\n')}\n\n${ex.code}`).toEqual([])
  })

  test.runIf(ex.run)(
    'runs',
    async () => {
      const result = await runs.get(ex.file)
      expect(result, `${ex.where} was not run: it does not type-check`).toBeDefined()
      const { code, output, timedOut, stdout } = result!
      expect(timedOut, `${ex.where} still ran after ${RUN_TIMEOUT_MS} ms\n${output}`).toBe(false)
      expect(code, `${ex.where} exited with ${code}:\n${output}\n\n${ex.code}`).toBe(0)
      if (ex.output !== undefined) {
        const tidy = (text: string): string =>
          text
            .split('\n')
            .map((l) => l.trimEnd())
            .join('\n')
            .trim()
        expect(tidy(stdout), `what ${ex.where} prints`).toBe(tidy(ex.output))
      }
    },
    // a run waits for its turn behind the others (PARALLEL at a time); each is killed after RUN_TIMEOUT_MS
    300_000,
  )
})

describe('links', () => {
  const pages = markdown.filter((f) => f === 'README.md' || dirname(f) === 'docs')
  test.each(pages)('the relative links of %s lead to files that exist', (page) => {
    const text = readFileSync(join(root, page), 'utf8').replace(/```[\s\S]*?```/g, '')
    const missing: string[] = []
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!.split('#')[0]!
      if (target === '' || /^[a-z]+:/i.test(target)) continue
      // the API reference is generated by `npm run docs`, so it is not in a fresh clone
      if (relative(root, join(root, dirname(page), target)).startsWith(join('docs', 'api'))) continue
      if (!existsSync(join(root, dirname(page), target))) missing.push(m[1]!)
    }
    expect(missing, `${page} links to files that do not exist`).toEqual([])
  })
})

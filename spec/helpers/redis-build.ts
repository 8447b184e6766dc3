/**
 * Builds what worker child processes import: lib/redis/index.ts and the lib files it imports,
 * transpiled (no type check) into a private directory under node_modules/.cache, so that the Redis
 * specs run the current sources whether or not dist/ was built, and never race another spec or
 * `npm run build` writing dist/ at the same time. The directory sits inside the project so the
 * built files resolve `redis` and `msgpackr` from its node_modules.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const LIB = join(ROOT, 'lib')

export interface Build {
  /** Absolute path of the built entry (lib/redis/index.ts as JavaScript). */
  readonly entry: string
  remove(): void
}

/** Transpiles the Redis entry and everything it imports relatively, in a fresh directory. */
export function buildRedisEntry(): Build {
  const cache = join(ROOT, 'node_modules', '.cache', 'stageline-redis-spec')
  // builds left by spec runs that were killed before cleaning up
  try {
    for (const old of readdirSync(cache)) {
      const path = join(cache, old)
      if (Date.now() - statSync(path).mtimeMs > 3_600_000) rmSync(path, { recursive: true, force: true })
    }
  } catch {
    // no cache yet
  }
  const out = join(cache, `${process.pid}-${Date.now()}`)
  const seen = new Set<string>()
  const todo = [join(LIB, 'redis', 'index.ts')]
  while (todo.length > 0) {
    const file = todo.pop()!
    if (seen.has(file)) continue
    seen.add(file)
    const source = readFileSync(file, 'utf8')
    for (const ref of ts.preProcessFile(source, true, true).importedFiles) {
      if (ref.fileName.startsWith('.'))
        todo.push(resolve(dirname(file), ref.fileName.replace(/\.js$/, '.ts')))
    }
    const js = ts.transpileModule(source, {
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
      },
      fileName: file,
    }).outputText
    const target = join(out, relative(LIB, file)).replace(/\.ts$/, '.js')
    mkdirSync(dirname(target), { recursive: true })
    writeFileSync(target, js)
  }
  return {
    entry: join(out, 'redis', 'index.js'),
    remove: () => rmSync(out, { recursive: true, force: true }),
  }
}

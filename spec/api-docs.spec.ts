/**
 * Every public export of the package's entry points carries TSDoc with an `@example`
 * (spec/docs.spec.ts then type-checks and runs those examples). Read with the TypeScript compiler
 * from the sources the entry points re-export, so an export added without docs fails here.
 */
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, test } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
const ENTRIES = [
  'lib/index.ts',
  'lib/redis/index.ts',
  'lib/progress/index.ts',
  'lib/report/index.ts',
  'lib/dashboard/index.ts',
  'lib/otel/index.ts',
]

const program = ts.createProgram(
  ENTRIES.map((e) => `${root}${e}`),
  {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
  },
)
const checker = program.getTypeChecker()

/** The exports of an entry point, with whether each has TSDoc and an `@example` in it. */
function exportsOf(entry: string): { name: string; doc: boolean; example: boolean }[] {
  const file = program.getSourceFile(`${root}${entry}`)
  if (file === undefined) throw new Error(`cannot read ${entry}`)
  const moduleSymbol = checker.getSymbolAtLocation(file)
  if (moduleSymbol === undefined) throw new Error(`${entry} is not a module`)
  return checker.getExportsOfModule(moduleSymbol).map((s) => {
    const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s
    const decls = target.getDeclarations() ?? []
    const tags = decls.flatMap((d) => ts.getJSDocTags(d))
    const comments = decls.flatMap((d) => ts.getJSDocCommentsAndTags(d))
    return {
      name: s.getName(),
      doc: comments.length > 0,
      example: tags.some((t) => t.tagName.text === 'example'),
    }
  })
}

describe.each(ENTRIES)('%s', (entry) => {
  const all = exportsOf(entry)

  test('exports something', () => {
    expect(all.length).toBeGreaterThan(0)
  })

  test('every export has TSDoc with an @example', () => {
    const missing = all
      .filter((e) => !e.doc || !e.example)
      .map((e) => `${e.name}${e.doc ? ' (no @example)' : ' (no TSDoc)'}`)
    expect(missing).toEqual([])
  })
})

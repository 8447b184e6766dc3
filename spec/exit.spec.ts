import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { beforeAll, expect, test } from 'vitest'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const child = fileURLToPath(new URL('./fixtures/exit/child.mjs', import.meta.url))

beforeAll(async () => {
  // the child imports the built package, as a user's program would
  if (!existsSync(`${root}dist/index.js`))
    await run('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root })
}, 120_000)

test('a process whose main module returns still finishes a started run and writes every output', async () => {
  const { stdout } = await run(process.execPath, [child], { timeout: 30_000 })
  const got = stdout.trim().split('\n').map(Number)
  expect(got.sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
})

test('a daemon run lets the process exit early, dropping what was in flight', async () => {
  const { stdout } = await run(process.execPath, [child, 'daemon'], { timeout: 30_000 })
  expect(stdout.trim()).toBe('')
})

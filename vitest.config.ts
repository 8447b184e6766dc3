import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['spec/**/*.spec.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    coverage: {
      provider: 'v8',
      include: ['lib/**/*.ts'],
      // the thread entry runs only in worker threads, from its compiled copy in dist/, where the
      // coverage (taken in each spec's own thread) does not reach; the thread specs run it end to
      // end, and spec/threads-protocol.spec.ts and spec/wire-errors.spec.ts what it imports
      exclude: ['lib/threads/entry.ts'],
      reporter: ['text-summary', 'json-summary'],
      // lib is the product: the bar is high, and the report names what a change left untested
      thresholds: { lines: 90, functions: 90, branches: 85, statements: 90 },
    },
  },
})

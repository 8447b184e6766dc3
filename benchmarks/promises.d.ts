import type { JobResult } from './types.js'

export interface PromiseCase {
  label: string
  job(n: number): Promise<JobResult>
}
export declare function countsPerItem(
  job: () => Promise<{ count: number }>,
  n: number,
): Promise<{ promises: number; jobs: number }>
export declare function promisesPerItem(job: () => Promise<{ count: number }>, n: number): Promise<number>
/** `sl` is the stageline module under test: `import * as sl from '../lib/index.js'` or dist/. */
export declare function promiseCases(sl: typeof import('../lib/index.js')): PromiseCase[]

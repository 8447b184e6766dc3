import type { Impl, JobResult, Workload } from './types.js'

export interface Sizes {
  overhead: number
  reduced: number
  io: number
  ordered: number
}
export declare const SIZES: { full: Sizes; quick: Sizes; tiny: Sizes }
export declare function orderedDelay(x: number): number
/** `sl` is the stageline module under test: `import * as sl from '../lib/index.js'` or dist/. */
export declare function defineWorkloads(sl: typeof import('../lib/index.js'), sizes: Sizes): Workload[]
export declare function checkResult(
  workload: Workload,
  impl: Impl,
  n: number,
  result: JobResult | unknown,
): string | undefined

import type { Impl, JobResult, Row, Workload } from './types.js'

export declare const RUN_TIMEOUT_MS: number
export declare function median(xs: number[]): number
export declare function timeOnce(
  workload: Workload,
  impl: Impl,
  n: number,
  timeoutMs?: number,
): Promise<{ ms: number; result: JobResult | undefined; error: string | undefined }>
export interface MeasureOptions {
  rounds?: number
  warmupN?: number
  reduceBelow?: number
  log?: (line: string) => void
  timeoutMs?: number
}
export declare function measureWorkload(workload: Workload, options?: MeasureOptions): Promise<Row[]>

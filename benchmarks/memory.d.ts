import type { JobResult, MemoryRow, Role } from './types.js'

export declare const ITEM_BYTES: number
export declare const YIELD_EVERY: number
export declare const MEMORY_WORKERS: number
export declare const CONTROL_SCALE: number
export declare function kilobytes(n: number): Generator<{ id: number; mark: number; line: string }>
export declare function memoryExpect(n: number): { count: number; sum: number }
export interface MemoryImpl {
  name: string
  label: string
  role: Role
  required?: boolean
  run(n: number, sl?: typeof import('../lib/index.js')): Promise<JobResult>
}
export declare const MEMORY_IMPLS: MemoryImpl[]
export type ChildResult =
  | { impl: string; n: number; count: number; sum: number; maxRssMB: number; ms: number; error?: undefined }
  | { error: string }
export declare function runChild(name: string, n: number, timeoutMs?: number): Promise<ChildResult>
export declare function measureMemory(options: {
  sizes: number[]
  parallel?: number
  log?: (line: string) => void
  only?: (name: string) => boolean
  maxSeconds?: number
  repeats?: number
  /** Starts one child; `runChild` by default. */
  run?: (name: string, n: number) => Promise<ChildResult>
}): Promise<MemoryRow[]>

// Declarations for cpu.js (written by the thread-stage engineer), for the smoke spec.
import type { Row, TargetVerdict, Workload } from './types.js'

export declare const SPIN_ROUNDS: number
export declare function spin(n: number): number
export declare function tiny(n: number): number
export declare function tinyRecord(r: { id: number; at: { x: number } }): { id: number; h: number }
export interface CpuSizes {
  spin: number
  tiny: number
  tinyReduced: number
}
export declare const SIZES: { full: CpuSizes; quick: CpuSizes; tiny: CpuSizes }
export declare function defineCpuWorkloads(
  sl: typeof import('../lib/index.js'),
  Piscina: typeof import('piscina').Piscina,
  sizes: CpuSizes,
): Workload[]
export declare function evaluate(rows: Row[]): TargetVerdict[]
export default function cpu(options?: {
  quick?: boolean
  rounds?: number
  log?: (line: string) => void
  sl?: typeof import('../lib/index.js')
  sizes?: CpuSizes
}): Promise<{ machine: string; rows: Row[]; targets: TargetVerdict[] }>

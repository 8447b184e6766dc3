import type { MemoryPoint, MemoryRow, Row, TargetVerdict } from './types.js'

export declare function evaluateTargets(rows: Row[], memoryRows: MemoryRow[]): TargetVerdict[]
/** In-process verdicts on workloads measured alone without error (clean.js results) become `info`. */
export declare function deferToClean(
  inProcess: TargetVerdict[],
  cleanResults: { workload: string; error?: string }[],
): TargetVerdict[]
export declare function fmtRatio(x: number | null | undefined): string
export declare function fmtRate(x: number | null | undefined): string
export declare function fmtCount(n: number): string
export declare function fmtMB(x: number | null | undefined): string
export declare function fmtPeak(p: MemoryPoint): string
export declare function throughputTable(rows: Row[]): string
export declare function memoryTable(rows: MemoryRow[]): string
export declare function markdown(result: {
  throughput: Row[]
  memory: MemoryRow[]
  targets: TargetVerdict[]
}): string
export declare function toJson(value: unknown, indent?: string, prefix?: number): string

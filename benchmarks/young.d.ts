export interface YoungCase {
  label: string
  flags: string[]
  setup: string
}
export declare const YOUNG_CASES: YoungCase[]
export interface YoungResult {
  label: string
  bareNs: number
  stagelineNs: number
  newSpaceMB: number
  heapMB: number
  held: number
  error?: string
}
export declare function runYoungCase(c: YoungCase, n: number, rounds: number): Promise<YoungResult>

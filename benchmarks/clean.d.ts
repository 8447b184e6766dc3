export interface CleanCase {
  kind: 'async' | 'sync' | 'gen'
  workers: number
  min: number
}
export declare const CLEAN_CASES: CleanCase[]
/** The young-generation sizes each case runs with, in MB a semi-space; null is V8's default. */
export declare const YOUNG_SETTINGS: (number | null)[]
export type CleanResult =
  | {
      workload: string
      ratio: number
      ratioMin: number
      ratioMax: number
      bareNs: number
      stagelineNs: number
      /** The young generation the child ran with (null: V8's default); absent from measureClean(). */
      youngMB?: number | null
      error?: undefined
    }
  | { workload: string; youngMB: number | null; error: string }
export declare function measureClean(
  sl: typeof import('../lib/index.js'),
  c: { kind: CleanCase['kind']; workers: number; n: number; rounds: number },
): Promise<Extract<CleanResult, { error?: undefined }>>
export declare function cleanCheck(options: {
  n: number
  rounds: number
  log?: (line: string) => void
}): Promise<{
  results: CleanResult[]
  targets: { workload: string; text: string; value: string; pass: boolean }[]
}>

export interface CleanCase {
  kind: 'async' | 'sync' | 'gen'
  workers: number
  min: number
}
export declare const CLEAN_CASES: CleanCase[]
export type CleanResult =
  | {
      workload: string
      ratio: number
      ratioMin: number
      ratioMax: number
      bareNs: number
      stagelineNs: number
      error?: undefined
    }
  | { workload: string; error: string }
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

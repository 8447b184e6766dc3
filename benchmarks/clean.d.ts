export interface CleanCase {
  kind: 'async' | 'sync' | 'gen'
  workers: number
  /** How the results are read: a `for await` loop or `toArray()`. */
  consumer: 'for-await' | 'toArray'
  /** What the target is against: the bare async-generator chain or the least queued design. */
  against: 'bare' | 'least-queued'
  /** The least ratio that meets the target with V8's default young generation. */
  min: number
  /** The same with the young generation at 16 MB. */
  minYoung: number
}
export declare const CLEAN_CASES: CleanCase[]
/** A row's id: `overhead-sync/w1`, `overhead-sync/w1 toArray`. */
export declare function rowId(c: Pick<CleanCase, 'kind' | 'workers' | 'consumer'>): string
/** The command that reruns one row alone. */
export declare function rowCommand(c: CleanCase, youngMB: number | null): string
/** The young-generation sizes each case runs with, in MB a semi-space; null is V8's default. */
export declare const YOUNG_SETTINGS: (number | null)[]
export type CleanResult =
  | {
      row: string
      workload: string
      against: CleanCase['against']
      /** stageline's speed over that of what the target is against (median of the rounds). */
      ratio: number
      ratioMin: number
      ratioMax: number
      /** stageline's speed over the bare chain's. */
      ratioBare: number
      bareNs: number
      stagelineNs: number
      /** ns per item of the least queued design (generator rows). */
      againstNs?: number
      /** ns per item of a plain loop building the same array (toArray() rows). */
      arrayNs?: number
      /** The young generation the child ran with (null: V8's default); absent from measureClean(). */
      youngMB?: number | null
      error?: undefined
    }
  | { row: string; workload: string; youngMB: number | null; error: string }
export declare function measureClean(
  sl: typeof import('../lib/index.js'),
  c: {
    kind: CleanCase['kind']
    workers: number
    consumer?: CleanCase['consumer']
    against?: CleanCase['against']
    n: number
    rounds: number
  },
): Promise<Extract<CleanResult, { error?: undefined }>>
export declare function measureImport(times?: number): Promise<{ median: number; min: number; max: number }>
export declare function cleanCheck(options: {
  n: number
  rounds: number
  log?: (line: string) => void
  cases?: CleanCase[]
  young?: (number | null)[]
}): Promise<{
  results: CleanResult[]
  targets: { workload: string; text: string; value: string; pass: boolean }[]
}>

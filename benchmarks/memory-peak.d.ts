export declare const PEAK_IMPLS: string[]
export interface PeakRun {
  impl: string
  n: number
  ms: number
  peakRssMB: number
  rssAtStartMB: number
  rssMB: number
  heapUsedMB: number
  heapCommittedMB: number
  newSpaceMB: number
  oldSpaceMB: number
  externalMB: number
  scavenges?: number
  markCompacts?: number
  error?: undefined
}
export declare function runPeakChild(
  impl: string,
  n: number,
  options?: { trace?: boolean; flags?: string[] },
): Promise<PeakRun | { impl: string; error: string }>
export type PeakRow =
  | {
      impl: string
      error: undefined
      runs: number
      peakRssMB: number
      peakRssMin: number
      peakRssMax: number
      rssAtStartMB: number
      heapCommittedMB: number
      heapUsedMB: number
      newSpaceMB: number
      oldSpaceMB: number
      itemsPerSec: number
    }
  | { impl: string; error: string }
export declare function measurePeak(options?: {
  n?: number
  runs?: number
  impls?: string[]
  trace?: boolean
  log?: (line: string) => void
}): Promise<{ rows: PeakRow[]; targets: { workload: string; text: string; value: string; pass: boolean }[] }>
export declare function peakTable(rows: PeakRow[]): string

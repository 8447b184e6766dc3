export interface HttpImpl {
  name: string
  label: string
  role: 'stageline' | 'peer' | 'build-b'
}
export declare const HTTP_IMPLS: HttpImpl[]
export declare const HTTP_STEPS: {
  first: { ms: number; workers: number }
  last: { ms: number; workers: number }
}
export declare const READ_AHEAD: number
export interface Spread {
  median: number
  min: number
  max: number
}
export type HttpRow = HttpImpl &
  (
    | { error: undefined; runs: number; itemsPerSec: Spread; p50: Spread; p99: Spread; peakWaiting: number }
    | { error: string }
  )
export interface HttpTarget {
  workload: string
  text: string
  value: string
  pass: boolean
}
export interface HttpRun {
  impl: string
  n: number
  ms: number
  itemsPerSec: number
  p50: number
  p99: number
  peakWaiting: number
  cpuUsPerItem: number
  parts: [number, number][]
  error?: undefined
}
export declare function startServer(): Promise<{ port: number; close(): Promise<void> }>
export declare function runHttpChild(
  name: string,
  n: number,
  port: number,
): Promise<HttpRun | { impl: string; error: string }>
export declare function measureHttp(options?: {
  n?: number
  rounds?: number
  only?: string[]
  parts?: boolean
  log?: (line: string) => void
}): Promise<{ rows: HttpRow[]; targets: HttpTarget[] }>
export declare function httpTargets(rows: HttpRow[]): HttpTarget[]
export declare function httpTable(rows: HttpRow[]): string

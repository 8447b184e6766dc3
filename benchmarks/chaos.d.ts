export interface ChaosOptions {
  items?: number
  msPerItem?: number
  workers?: number
  concurrency?: number
  capacity?: number
  batch?: number
  visibilityTimeout?: number
  connectTimeout?: number
  seed?: number
  every?: [number, number]
  pause?: [number, number]
  down?: [number, number]
  maxFaults?: number
  log?: (line: string) => void
}
export type FaultKind = 'kill' | 'stop' | 'restart' | 'pause'
export interface ChaosReport {
  items: number
  results: number
  duplicates: number
  missing: number
  sumOk: boolean
  keysLeft: string[]
  bellsLeft: number
  seconds: number
  faults: Record<FaultKind, { count: number; recoveryMs: { median: number; max: number } }>
  heaps: { startMB: number; endMB: number }[]
}
export declare const CHAOS_DEFAULTS: Required<ChaosOptions>
export declare const FAULTS: FaultKind[]
export declare function random(seed: number): () => number
export declare function runChaos(options?: ChaosOptions): Promise<ChaosReport>
export declare function goneForGood(options?: {
  connectTimeout?: number
  items?: number
}): Promise<{ error: unknown; ms: number }>
export declare function stalledForever(options?: {
  visibilityTimeout?: number
  items?: number
}): Promise<{ heldMs: number[]; bound: number }>

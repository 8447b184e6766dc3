/** Shapes shared by the benchmark modules' declarations (the modules are plain JavaScript). */

/** What every implementation's job resolves to. */
export interface JobResult {
  count: number
  sum: number
  /** Items smaller than the one before them: 0 wherever input order is promised. */
  inversions: number
  /** Ordered workload: peak items finished ahead of the oldest unfinished one. */
  peakAhead?: number
}

export type Role = 'stageline' | 'baseline' | 'peer' | 'reference' | 'control'

export interface Impl {
  name: string
  label: string
  role: Role
  /** True where the implementation promises input order (checked: no inversions). */
  ordered?: boolean
  /** Always run on the workload's reduced size (a peer whose cost per item grows with the input). */
  reduced?: boolean
  run(n: number): Promise<JobResult>
}

export interface Target {
  impl: string
  min: number
  text: string
}

export interface Workload {
  id: string
  group: string
  title: string
  n: number
  /** The size slow peers run on (see measureWorkload's reduceBelow). */
  reducedN?: number
  /** The name of the implementation every ratio is taken against. */
  baseline: string
  expect(n: number): { count: number; sum: number }
  target: Target | undefined
  impls: Impl[]
}

/** One cell of the throughput table: an implementation of a workload, measured. */
export interface Row {
  workload: string
  group: string
  title: string
  impl: string
  label: string
  role: Role
  ordered: boolean | undefined
  baseline: string
  n: number
  reduced: boolean
  runs: number
  itemsPerSec: number | null
  ratio: number | null
  ratioMin: number | null
  ratioMax: number | null
  target: Target | undefined
  peakReorder: number | null
  error: string | null
}

export interface MemoryPoint {
  n: number
  /** The median over `rssRuns` when the implementation ran more than once at this size. */
  maxRssMB: number | null
  itemsPerSec: number | null
  /** Every run's peak RSS, when there was more than one (measureMemory's `repeats`). */
  rssRuns?: number[]
}

export interface MemoryRow {
  workload: 'memory'
  impl: string
  label: string
  role: Role
  points: MemoryPoint[]
  growthMB: number | null
  error: string | null
  skipped: string | null
}

export interface TargetVerdict {
  workload: string
  text: string
  value: string
  pass: boolean
  /** Reported for information, neither met nor missed (cpu.js's machine control). */
  info?: boolean
}

/** The JSON file the runner writes. */
export interface BenchResult {
  meta: { date: string; machine: string; command: string; [key: string]: unknown }
  throughput: Row[]
  memory: MemoryRow[]
  extra: unknown[]
  targets: TargetVerdict[]
}

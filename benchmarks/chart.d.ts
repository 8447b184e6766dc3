import type { BenchResult } from './types.js'

export declare function renderChart(result: BenchResult): string

/**
 * stageline: parallel data pipelines of stages joined by bounded queues.
 * @module stageline
 */

export type { WorkersEvent } from './engine/execution.js'
export type { RunObserver } from './engine/observe.js'
export type { Source, SourceItem } from './engine/source.js'
export type { RunStats, StageStats } from './engine/stats.js'
export { describeCause, RunStopped, TaskException, TimeoutError } from './errors.js'
export { DEFAULT_FEED_CAPACITY, Feed, FeedClosedError, type FeedOptions, feed } from './feed.js'
export { type BatchOptions, batch, type ResolvedBatchOptions } from './kinds/batch.js'
export { filter } from './kinds/filter.js'
export { type FlatMapOptions, flatMap } from './kinds/flat-map.js'
export { stage } from './kinds/generator.js'
export type { StageContext } from './kinds/kind.js'
export {
  type Limiter,
  type MapContext,
  type MapOutput,
  type MapStageOptions,
  mapStage,
  type PolicyOptions,
  type ResolvedMapStageOptions,
  type Step,
} from './kinds/map.js'
export { RateLimit, rateLimit } from './kinds/rate-limit.js'
export { merge } from './merge.js'
export {
  DEFAULT_QSIZE,
  MAX_CAPACITY,
  MAX_TIMER_MS,
  MAX_WORKERS,
  SETTLE_GRACE_MS,
} from './options/limits.js'
export type { ResolvedStageOptions, StageOptions, Tuning, WorkersOption } from './options/stage.js'
export { Pipeline, pipe, type RunOptions } from './pipeline.js'
export type { Run, StartOptions } from './run.js'
export { skip } from './skip.js'
export { type AnyStage, Stage } from './stage.js'
export {
  type ResolvedThreadStageOptions,
  type ThreadContext,
  type ThreadStageOptions,
  threadStage,
} from './threads/stage.js'

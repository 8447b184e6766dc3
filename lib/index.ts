/**
 * stageline: parallel data pipelines of stages joined by bounded queues.
 * @module stageline
 */
export type { Run, StartOptions } from './background.js'
export { type BatchOptions, batch, filter, flatMap, merge } from './combinators.js'
export { describeCause, RunStopped, TaskException, TimeoutError } from './errors.js'
export { DEFAULT_FEED_CAPACITY, Feed, FeedClosedError, type FeedOptions, feed } from './feed.js'
export type { StageContext } from './group.js'
export {
  DEFAULT_QSIZE,
  MAX_CAPACITY,
  MAX_TIMER_MS,
  MAX_WORKERS,
  type ResolvedStageOptions,
  SETTLE_GRACE_MS,
  type StageOptions,
} from './options.js'
export { Pipeline, pipe, type RunOptions } from './pipeline.js'
export {
  type Limiter,
  type MapContext,
  type PolicyOptions,
  RateLimit,
  rateLimit,
  type Step,
  skip,
} from './policies.js'
export type { Source, SourceItem } from './source.js'
export { type MapOutput, type MapStageOptions, mapStage, Stage, stage } from './stage.js'
export type { RunStats, StageStats } from './stats.js'
export { type ThreadContext, type ThreadStageOptions, threadStage } from './threads/stage.js'

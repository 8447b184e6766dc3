/**
 * `stageline/redis`: stages whose workers run in other processes and on other hosts, with Redis
 * Streams carrying the items. The pipeline's process uses {@link redisStage}; worker processes run
 * {@link serveStage}. See docs/distributed.md for the guarantees and what is not promised.
 *
 * It needs the packages `redis` and `msgpackr`, optional peer dependencies of stageline
 * (`npm install redis msgpackr`): without them, importing it fails with an Error that says so.
 * @module
 */
export {
  DeliveryLimitError,
  RedisConnectionError,
  RemoteError,
  type RemoteErrorInfo,
  RunStateLostError,
} from './errors.js'
export type {
  RedisClientConfig,
  RedisClusterConfig,
  RedisConnectionOptions,
  RedisStageOptions,
  ResolvedRedisStageOptions,
  ServeOptions,
} from './options.js'
export { type StageWorker, serveStage, type WorkerContext } from './serve.js'
export { redisStage } from './stage.js'

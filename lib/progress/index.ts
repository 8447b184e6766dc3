/**
 * `stageline/progress`: seeing a run work. A terminal reporter for a run's `onProgress` option
 * (a live per-stage table on a TTY, plain periodic lines in CI logs) and a text table of a run's
 * final stats. A separate entry point, so that the core import does not load log-update.
 * @module stageline/progress
 */
export { formatCount, formatDuration, formatStats } from './format.js'
export {
  type ProgressReporter,
  type ProgressReporterOptions,
  type ProgressStream,
  progressReporter,
} from './reporter.js'

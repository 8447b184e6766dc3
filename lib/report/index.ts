/**
 * `stageline/report`: run reports. A run given the option `report: 'run.html'` (or `.json`) writes
 * one when it settles; this entry point renders the data of a `.json` report as the page, and the
 * command `stageline-report run.json -o run.html` does the same from a shell. A separate entry
 * point, so that the core import does not load the renderer.
 * @module stageline/report
 */
export type {
  Bottleneck,
  ReportError,
  ReportEvent,
  ReportSamples,
  ReportStage,
  RunReport,
  StageSeries,
} from './format.js'
export { REPORT_VERSION } from './format.js'
export { renderReport } from './render.js'

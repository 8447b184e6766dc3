/**
 * `stageline/otel`: runs recorded as OpenTelemetry metrics, through `@opentelemetry/api`, an
 * optional peer dependency of stageline (`npm install @opentelemetry/api`): without it, importing
 * this entry point fails with an Error that says so.
 * @module stageline/otel
 */
export { type OtelMetricsOptions, otelMetrics, type Telemetry } from './metrics.js'

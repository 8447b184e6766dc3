/**
 * `@opentelemetry/api`, the optional peer dependency `stageline/otel` records through, loaded once
 * when `stageline/otel` is imported.
 * @module
 */
import { loadOptional } from '../optional.js'

/** The OpenTelemetry API. */
export const otel: typeof import('@opentelemetry/api') = await loadOptional({
  name: '@opentelemetry/api',
  what: 'the OpenTelemetry API the metrics are recorded through',
  entry: 'stageline/otel',
  install: 'npm install @opentelemetry/api',
  load: () => import('@opentelemetry/api'),
})

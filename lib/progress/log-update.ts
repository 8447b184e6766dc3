/**
 * log-update, the optional peer dependency the live progress table draws with, loaded once when
 * `stageline/progress` is imported.
 * @module
 */
import { loadOptional } from '../optional.js'

const logUpdate = await loadOptional<typeof import('log-update')>(
  'log-update',
  'stageline/progress',
  'npm install log-update',
)

export const createLogUpdate = logUpdate.createLogUpdate

/**
 * log-update, the optional peer dependency the live progress table draws with, loaded once when
 * `stageline/progress` is imported.
 * @module
 */
import { loadOptional } from '../optional.js'

const logUpdate = await loadOptional({
  name: 'log-update',
  what: 'the live table redrawn in place on a terminal',
  entry: 'stageline/progress',
  install: 'npm install log-update',
  load: () => import('log-update'),
})

export const createLogUpdate = logUpdate.createLogUpdate

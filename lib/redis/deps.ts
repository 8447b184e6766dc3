/**
 * The packages `stageline/redis` needs and the core does not: node-redis (`redis`) and `msgpackr`,
 * optional peer dependencies of stageline. They are loaded here, once, with `import()`, and every
 * module of lib/redis takes them from here rather than importing them itself: a static import of a
 * package that is not installed fails while the modules are linked, with Node's own "Cannot find
 * package" and nothing about what to do, whereas this module's top-level await fails the import of
 * `stageline/redis` with an error that names the package and the command that installs it. The core
 * `stageline` import never reaches this module.
 * @module
 */
import { loadOptional } from '../optional.js'

/** The command that installs what `stageline/redis` needs. */
export const INSTALL = 'npm install redis msgpackr'

/** node-redis: the client. */
export const redis: typeof import('redis') = await loadOptional({
  name: 'redis',
  what: 'node-redis, the Redis client',
  entry: 'stageline/redis',
  install: INSTALL,
  load: () => import('redis'),
})

/** msgpackr: the serializer of items, results and errors. */
export const msgpackr: typeof import('msgpackr') = await loadOptional({
  name: 'msgpackr',
  what: 'the serializer of items and results',
  entry: 'stageline/redis',
  install: INSTALL,
  load: () => import('msgpackr'),
})

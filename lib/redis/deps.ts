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
import { describeCause } from '../errors.js'

/** The command that installs what `stageline/redis` needs. */
export const INSTALL = 'npm install redis msgpackr'

/**
 * Loads one optional peer dependency, or throws an Error that names it, says what stageline/redis
 * needs it for and how to install it, with the loader's error as `cause`.
 */
async function load<T>(name: string, what: string, loader: () => Promise<T>): Promise<T> {
  try {
    return await loader()
  } catch (err) {
    // Node says "Cannot find package 'redis' imported from ...": a package the named one needs
    // that is missing is a broken install of it, not a missing one
    const described = describeCause(err)
    const missing =
      (err as { code?: unknown } | null)?.code === 'ERR_MODULE_NOT_FOUND' && described.includes(`'${name}'`)
    throw new Error(
      `stageline/redis needs the package \`${name}\` (${what}), an optional peer dependency of stageline, ` +
        `and it ${missing ? 'is not installed' : `could not be loaded (${described})`}: ` +
        `install it next to stageline with \`${INSTALL}\``,
      { cause: err },
    )
  }
}

/** node-redis: the client. */
export const redis: typeof import('redis') = await load(
  'redis',
  'node-redis, the Redis client',
  () => import('redis'),
)

/** msgpackr: the serializer of items, results and errors. */
export const msgpackr: typeof import('msgpackr') = await load(
  'msgpackr',
  'the serializer of items and results',
  () => import('msgpackr'),
)

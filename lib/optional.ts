/**
 * Loading an optional peer dependency: the parts of stageline that need a package the core does not
 * (`stageline/redis` needs `redis` and `msgpackr`, `stageline/progress` needs `log-update`) load it
 * here, once, with `import()` at the top level of a module of theirs. A static import of a package
 * that is not installed fails while the modules are linked, with Node's own "Cannot find package"
 * and nothing about what to do; this fails the import of the entry point with an error that names
 * the package, what it is for, and the command that installs it. The core never reaches it.
 * @module
 */
import { describeCause } from './errors.js'

/** Where an optional package is needed, and how to install what that entry point needs. */
export interface OptionalPackage<T> {
  /** The package's name, as imported. */
  readonly name: string
  /** What it is for, in a few words. */
  readonly what: string
  /** The entry point of stageline that needs it: `stageline/redis`. */
  readonly entry: string
  /** The command that installs what the entry point needs. */
  readonly install: string
  /** Imports it (a literal `import('name')`, so that bundlers see it). */
  readonly load: () => Promise<T>
}

/**
 * Loads an optional peer dependency, or throws an Error that names it, says what the entry point
 * needs it for and how to install it, with the loader's error as `cause`.
 */
export async function loadOptional<T>(p: OptionalPackage<T>): Promise<T> {
  try {
    return await p.load()
  } catch (err) {
    // Node says "Cannot find package 'redis' imported from ...": a package the named one needs
    // that is missing is a broken install of it, not a missing one
    const described = describeCause(err)
    const missing =
      (err as { code?: unknown } | null)?.code === 'ERR_MODULE_NOT_FOUND' && described.includes(`'${p.name}'`)
    throw new Error(
      `${p.entry} needs the package \`${p.name}\` (${p.what}), an optional peer dependency of stageline, ` +
        `and it ${missing ? 'is not installed' : `could not be loaded (${described})`}: ` +
        `install it next to stageline with \`${p.install}\``,
      { cause: err },
    )
  }
}

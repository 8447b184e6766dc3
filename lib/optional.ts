/**
 * Loading an optional peer dependency: the parts of stageline that need a package the core does not
 * (`stageline/redis` needs `redis` and `msgpackr`, `stageline/progress` needs `log-update`) load it
 * with this, so that a user who has not installed it gets an error that names the package and the
 * command that installs it, instead of Node's bare "Cannot find package".
 * @module
 */

/**
 * Imports `pkg` for `entry` (the stageline entry point that needs it). Rethrows anything but the
 * package's absence as it is.
 */
export async function loadOptional<T>(pkg: string, entry: string, install: string): Promise<T> {
  try {
    return (await import(pkg)) as T
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code
    const message = String((err as { message?: unknown } | null)?.message ?? '')
    if (code === 'ERR_MODULE_NOT_FOUND' && message.includes(`'${pkg}'`)) {
      throw new Error(
        `${entry} needs the package \`${pkg}\`, an optional peer dependency of stageline that is not installed: run \`${install}\``,
        { cause: err },
      )
    }
    throw err
  }
}

/**
 * Items and errors as a report shows them: rendered with bounded depth and length, whatever they
 * are. A BigInt, a cycle, a Symbol, a getter that throws or a revoked Proxy never breaks a report:
 * the worst it gets is a short description.
 * @module
 */
import { inspect } from 'node:util'
import { describeCause, TaskException } from '../errors.js'
import type { ReportError } from './format.js'

/** How deep a rendered item goes. */
export const PREVIEW_DEPTH = 3
/** The most characters of a rendered item. */
export const PREVIEW_LENGTH = 2000
/** The most characters of a stack. */
const STACK_LENGTH = 4000

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}

/** Renders any value, bounded in depth and length; never throws. */
export function preview(value: unknown): string {
  let text: string
  try {
    text = inspect(value, {
      depth: PREVIEW_DEPTH,
      maxArrayLength: 20,
      maxStringLength: 400,
      breakLength: 100,
      getters: false,
      customInspect: false,
      showProxy: true,
    })
  } catch {
    text = describeCause(value)
  }
  return cut(text, PREVIEW_LENGTH)
}

function read<T>(f: () => T, fallback: T): T {
  try {
    return f()
  } catch {
    return fallback
  }
}

/** Renders why a run failed or stopped; `items` false leaves the failed item out. Never throws. */
export function reportError(err: unknown, items: boolean): ReportError {
  const isTask = read(() => err instanceof TaskException, false)
  const isError = read(() => err instanceof Error, false)
  const name = isError ? read(() => String((err as Error).name), 'Error') : typeof err
  const message = isError ? read(() => String((err as Error).message), '') : describeCause(err)
  const cause = isTask
    ? (err as TaskException).cause
    : isError
      ? read(() => (err as Error).cause, undefined)
      : undefined
  const stackOf = (e: unknown): string | null =>
    read(() => {
      const s = e instanceof Error ? e.stack : undefined
      return typeof s === 'string' ? cut(s, STACK_LENGTH) : null
    }, null)
  const out: {
    -readonly [K in keyof ReportError]: ReportError[K]
  } = {
    name: cut(name, 200),
    message: cut(message, PREVIEW_LENGTH),
    stage: isTask ? (err as TaskException).stage : null,
    worker: isTask ? (err as TaskException).worker : null,
    cause: cause === undefined ? null : cut(describeCause(cause), PREVIEW_LENGTH),
    stack: stackOf(cause ?? err),
  }
  if (items && isTask && (err as TaskException).item !== undefined)
    out.item = preview((err as TaskException).item)
  return out
}

/**
 * The one option validator: an options object is checked against a schema (one checker per
 * option), so that an unknown key (a misspelt option) is refused everywhere the same way, and every
 * message names the option, the value, its type and what is allowed.
 * @module
 */
import { MAX_TIMER_MS } from './limits.js'

function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  return typeof value
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`
  try {
    return String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

/** Names a bad value the way every message here does: `<value> (<type>)`. */
export function got(value: unknown): string {
  return `${show(value)} (${typeName(value)})`
}

function range(min: number, max: number | undefined, allowInfinity: boolean): string {
  const top = max === undefined ? `from ${min} and up` : `from ${min} to ${max}`
  return `an integer ${top}${allowInfinity ? ' or `Infinity`' : ''}`
}

/** Validates an integer option from `min` to `max` (no upper bound when undefined), optionally allowing `Infinity`. */
export function checkInteger(
  where: string,
  option: string,
  value: unknown,
  min: number,
  allowInfinity: boolean,
  max?: number,
): number {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(
      `${where}: expected \`${option}\` to be ${range(min, max, allowInfinity)}, got ${got(value)}`,
    )
  }
  if (value === Number.POSITIVE_INFINITY && allowInfinity) return value
  if (!Number.isInteger(value) || value < min || (max !== undefined && value > max)) {
    throw new RangeError(
      `${where}: expected \`${option}\` to be ${range(min, max, allowInfinity)}, got ${got(value)}`,
    )
  }
  return value
}

/** What `checkMs` allows besides a finite number of milliseconds from 0 to MAX_TIMER_MS. */
export interface MsRule {
  /** `Infinity` is accepted (the option can mean "never"). */
  infinity?: boolean
  /** The least value allowed (0 when unset). */
  min?: number
  /** 0 is refused (the least value is above 0). */
  above0?: boolean
}

/**
 * Validates a number of milliseconds: from 0 (or `rule.min`) to MAX_TIMER_MS, and `Infinity`
 * where the rule allows it. The message names the option, the range and what was given.
 */
export function checkMs(where: string, option: string, value: unknown, rule: MsRule = {}): number {
  const min = rule.min ?? 0
  const low = rule.above0 === true ? `above ${min} and at most` : `from ${min} to`
  const allowed = `a number of milliseconds ${low} ${MAX_TIMER_MS} (about 24.8 days, the longest a timer can wait)${rule.infinity === true ? ' or `Infinity`' : ''}`
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`${where}: expected \`${option}\` to be ${allowed}, got ${got(value)}`)
  }
  if (value === Number.POSITIVE_INFINITY && rule.infinity === true) return value
  if (
    !Number.isFinite(value) ||
    value < min ||
    (rule.above0 === true && value <= min) ||
    value > MAX_TIMER_MS
  ) {
    throw new RangeError(`${where}: expected \`${option}\` to be ${allowed}, got ${got(value)}`)
  }
  return value
}

export function checkBoolean(where: string, option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') {
    throw new TypeError(`${where}: expected \`${option}\` to be true or false, got ${got(value)}`)
  }
  return value
}

export function checkFunction(where: string, option: string, value: unknown): void {
  if (typeof value !== 'function') {
    throw new TypeError(`${where}: expected \`${option}\` to be a function, got ${got(value)}`)
  }
}

export function checkObject(where: string, option: string, value: unknown): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`${where}: expected \`${option}\` to be an options object, got ${got(value)}`)
  }
}

/** Checks one option's value and returns it as the stage keeps it; throws naming what is wrong. */
export type Checker = (where: string, option: string, value: unknown) => unknown

/** One checker per option a function accepts. */
export type Schema = Readonly<Record<string, Checker>>

/**
 * Validates an options object against `schema`: `undefined` is no options; anything else must be a
 * plain object whose every key is in the schema, and each value present (not undefined) passes its
 * checker. Returns the checked values of the keys that were given.
 */
export function validateOptions(
  where: string,
  options: unknown,
  schema: Schema,
  name = 'options',
): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (options === undefined) return out
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    const what = name === 'options' ? 'an options object' : `\`${name}\` to be an options object`
    throw new TypeError(`${where}: expected ${what}, got ${got(options)}`)
  }
  const o = options as Record<string, unknown>
  for (const key of Object.keys(o)) {
    const check = Object.hasOwn(schema, key) ? schema[key] : undefined
    if (check === undefined) {
      const allowed = Object.keys(schema)
        .map((k) => `\`${k}\``)
        .join(', ')
      throw new TypeError(`${where}: unknown option \`${key}\`; the options are ${allowed}`)
    }
    const value = o[key]
    if (value !== undefined) out[key] = check(where, key, value)
  }
  return out
}

/** A checker for an integer from `min` to `max`, and `Infinity` if `infinity`. */
export function integer(min: number, max?: number, infinity = false): Checker {
  return (where, option, value) => checkInteger(where, option, value, min, infinity, max)
}

/** A checker for a number of milliseconds (see checkMs). */
export function ms(rule: MsRule = {}): Checker {
  return (where, option, value) => checkMs(where, option, value, rule)
}

/** A checker for true or false. */
export const boolean: Checker = checkBoolean

/** A checker for a function. */
export const fn: Checker = (where, option, value) => {
  checkFunction(where, option, value)
  return value
}

/** A checker for a non-empty string. */
export const nonEmptyString: Checker = (where, option, value) => {
  if (typeof value !== 'string' || value === '') {
    throw new TypeError(`${where}: expected \`${option}\` to be a non-empty string, got ${got(value)}`)
  }
  return value
}

/** A checker for one of the given strings. */
export function oneOf(...allowed: string[]): Checker {
  return (where, option, value) => {
    if (typeof value !== 'string' || !allowed.includes(value)) {
      throw new TypeError(
        `${where}: expected \`${option}\` to be ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${got(value)}`,
      )
    }
    return value
  }
}

/** A checker for an AbortSignal. */
export const abortSignal: Checker = (where, option, value) => {
  const s = value as AbortSignal | null
  if (
    s === null ||
    typeof s !== 'object' ||
    typeof s.aborted !== 'boolean' ||
    typeof s.addEventListener !== 'function'
  ) {
    throw new TypeError(`${where}: expected \`${option}\` to be an AbortSignal, got ${got(value)}`)
  }
  return value
}

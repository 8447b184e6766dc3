/**
 * How items, results and errors are serialized: msgpackr with `structuredClone: true`, so Date,
 * Map, Set, typed arrays, BigInt, RegExp and cyclic references arrive as they left (msgpackr's
 * default would turn a Map into a plain object). What may be sent is checked before packing (see
 * lib/wire/sendable.ts); the packer is also set never to change a value silently on its own: it
 * calls no `toJSON()` of a value, and throws on a function rather than write `undefined` for it.
 * @module
 */
import { Packr } from 'msgpackr'
import { describeCause } from '../errors.js'
import type { RemoteErrorInfo } from './errors.js'

/** One packer for the process: stateless between calls (record structures travel in each message). */
export const codec = new Packr({
  structuredClone: true,
  useToJSON: false,
  writeFunction: () => {
    throw new TypeError('a function cannot be sent to another process')
  },
})

/** Serializes one value. Throws on a function or a symbol (check values with unsendable() first). */
export function pack(value: unknown): Buffer {
  return codec.pack(value)
}

export function unpack(buf: Buffer): unknown {
  return codec.unpack(buf)
}

/** Items packed one by one into a single Buffer (the form an entry carries them in). */
export class PackedBatch {
  private parts: Buffer[] = []
  private size = 0
  private offsets: number[] = []

  get count(): number {
    return this.parts.length
  }

  /** Packs `value` (throws on what cannot be sent, as pack() does). */
  add(value: unknown): void {
    const b = codec.pack(value)
    this.parts.push(b)
    this.size += b.length
    this.offsets.push(this.size)
  }

  /** The items back to back, and each one's end offset as 4 bytes big-endian; empties the batch. */
  take(): { items: Buffer; ends: Buffer; count: number } {
    const count = this.parts.length
    const items = Buffer.concat(this.parts, this.size)
    const ends = Buffer.allocUnsafe(4 * count)
    for (let i = 0; i < count; i++) ends.writeUInt32BE(this.offsets[i]!, 4 * i)
    this.parts = []
    this.offsets = []
    this.size = 0
    return { items, ends, count }
  }
}

/** Decodes an entry's items: their values, and each item's end offset (for sending one back). */
export function unpackItems(items: Buffer): { values: unknown[]; ends: number[] } {
  const values: unknown[] = []
  const ends: number[] = []
  codec.unpackMultiple(items, (value: unknown, _start?: number, end?: number) => {
    values.push(value)
    ends.push(end!)
  })
  return { values, ends }
}

/** What a worker sends for a failed item: the error plus who failed on which delivery. */
export interface ErrorRecord extends RemoteErrorInfo {
  consumer: string
  attempt: number
}

/**
 * Serializes a thrown value as an error record. Never throws, whatever was thrown: an error whose
 * `name`, `message`, `stack` or `code` getter throws, a Proxy whose prototype cannot be read (a
 * revoked one), an object whose `toString()` throws.
 */
export function packError(thrown: unknown, consumer: string, attempt: number): Buffer {
  const record: ErrorRecord = { ...errorInfo(thrown), consumer, attempt }
  try {
    return codec.pack(record)
  } catch (err) {
    // strings and numbers only: a message too large for a msgpack string, say
    return codec.pack({
      name: 'Error',
      message: `the error thrown could not be serialized (${describeCause(err)})`,
      consumer,
      attempt,
    })
  }
}

/** What is sent of a thrown value: its name, message, stack and code, where they can be read. */
function errorInfo(thrown: unknown): RemoteErrorInfo {
  let isError: boolean
  try {
    isError = thrown instanceof Error
  } catch (err) {
    // a Proxy whose prototype lookup throws (a revoked one): nothing about it can be relied on
    return {
      name: 'Error',
      message: `a value was thrown that could not be looked at (${describeCause(err)})`,
    }
  }
  if (!isError) return { name: 'Error', message: `a non-Error value was thrown: ${describeCause(thrown)}` }
  const e = thrown as Error
  const name = read(e, 'name')
  const message = read(e, 'message')
  const stack = read(e, 'stack')
  const code = read(e, 'code')
  return {
    name: typeof name.value === 'string' ? name.value : (constructorName(e) ?? 'Error'),
    message:
      message.error !== undefined
        ? `an Error was thrown whose message could not be read (reading it threw ${describeCause(message.error.thrown)})`
        : typeof message.value === 'string'
          ? message.value
          : describeCause(message.value),
    stack: typeof stack.value === 'string' ? stack.value : undefined,
    code: typeof code.value === 'string' || typeof code.value === 'number' ? code.value : undefined,
  }
}

/** A property of a thrown value, or what reading it threw. */
function read(o: object, key: string): { value?: unknown; error?: { thrown: unknown } } {
  try {
    return { value: (o as Record<string, unknown>)[key] }
  } catch (thrown) {
    return { error: { thrown } }
  }
}

/** The name of the class of an Error whose own `name` cannot be read (`TypeError`), if it has one. */
function constructorName(e: object): string | undefined {
  try {
    const C = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(e), 'constructor')?.value
    const name = typeof C === 'function' ? Object.getOwnPropertyDescriptor(C, 'name')?.value : undefined
    return typeof name === 'string' && name !== '' ? name : undefined
  } catch {
    return undefined
  }
}

export function unpackError(buf: Buffer): ErrorRecord {
  const r = codec.unpack(buf) as Partial<ErrorRecord> | null
  return {
    name: typeof r?.name === 'string' ? r.name : 'Error',
    message: typeof r?.message === 'string' ? r.message : '',
    stack: typeof r?.stack === 'string' ? r.stack : undefined,
    code: r?.code,
    consumer: typeof r?.consumer === 'string' ? r.consumer : 'unknown',
    attempt: typeof r?.attempt === 'number' ? r.attempt : 0,
  }
}

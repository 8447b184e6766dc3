/**
 * How items, results and errors are serialized: msgpackr with `structuredClone: true`, so Date,
 * Map, Set, typed arrays, BigInt, RegExp and cyclic references arrive as they left (msgpackr's
 * default would turn a Map into a plain object).
 * @module
 */
import { Packr } from 'msgpackr'
import type { RemoteErrorInfo } from './errors.js'

/** One packer for the process: stateless between calls (record structures travel in each message). */
export const codec = new Packr({ structuredClone: true })

/** Serializes one value. Throws on what cannot be sent (a Symbol); functions become undefined. */
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

/** Serializes a thrown value as an error record (never throws). */
export function packError(thrown: unknown, consumer: string, attempt: number): Buffer {
  let info: RemoteErrorInfo
  if (thrown instanceof Error) {
    const code = (thrown as { code?: unknown }).code
    info = {
      name: typeof thrown.name === 'string' ? thrown.name : 'Error',
      message: typeof thrown.message === 'string' ? thrown.message : String(thrown.message),
      stack: typeof thrown.stack === 'string' ? thrown.stack : undefined,
      code: typeof code === 'string' || typeof code === 'number' ? code : undefined,
    }
  } else {
    let message: string
    try {
      message = String(thrown)
    } catch {
      message = Object.prototype.toString.call(thrown)
    }
    info = { name: 'Error', message: `a non-Error value was thrown: ${message}` }
  }
  const record: ErrorRecord = { ...info, consumer, attempt }
  return codec.pack(record)
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

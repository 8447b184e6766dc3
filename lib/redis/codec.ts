/**
 * How items, results and errors are serialized: msgpackr with `structuredClone: true`, so Date,
 * Map, Set, typed arrays, BigInt, RegExp and cyclic references arrive as they left (msgpackr's
 * default would turn a Map into a plain object). What may be sent is checked before packing (see
 * lib/wire/sendable.ts); the packer is also set never to change a value silently on its own: it
 * calls no `toJSON()` of a value, and throws on a function rather than write `undefined` for it.
 * A worker's errors travel in stageline's one error form (lib/wire/errors.ts).
 * @module
 */
import { describeCause } from '../errors.js'
import { fromWire, toWire, type WireError } from '../wire/errors.js'
import { msgpackr } from './deps.js'
import { RemoteError, type RemoteErrorInfo } from './errors.js'

/** One packer for the process: stateless between calls (record structures travel in each message). */
export const codec = new msgpackr.Packr({
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

/**
 * What a worker sends for a failed item: the thrown value in stageline's one error form (`wire`),
 * who failed on which delivery, and the error's name, message, stack and code read from that form,
 * as records carried them before the form existed, so that a collector of an earlier release still
 * reads a newer worker's errors.
 */
export interface ErrorRecord extends RemoteErrorInfo {
  consumer: string
  /** The delivery of the item's entry the failure happened on; 0 for a failure that is no item's. */
  attempt: number
  /** The thrown value (toWire); absent in the records of workers of earlier releases. */
  wire?: WireError
}

/**
 * Serializes a thrown value as an error record. Never throws, whatever was thrown: toWire() reads
 * it warily (a getter that throws, a revoked Proxy, a `toString()` that throws), and a record that
 * still cannot be packed (a message too long for msgpack) is replaced by one that says so.
 */
export function packError(thrown: unknown, consumer: string, attempt: number): Buffer {
  const wire = toWire(thrown)
  const record: ErrorRecord = { ...infoOf(wire, thrown), consumer, attempt, wire }
  try {
    return codec.pack(record)
  } catch (err) {
    // strings and numbers only
    return codec.pack({
      name: 'Error',
      message: `the error thrown could not be serialized (${describeCause(err)})`,
      consumer,
      attempt,
    })
  }
}

/**
 * The name, message, stack and code of a thrown value, read from its error form. A value the form
 * keeps as a value (anything but an Error, or an Error whose name or message could not be read) is
 * described, saying which of these it was.
 */
function infoOf(w: WireError, thrown: unknown): RemoteErrorInfo {
  if (typeof w.name === 'string') {
    return { name: w.name, message: w.message ?? '', stack: w.stack, code: codeOf(w.props?.code) }
  }
  let what: string
  try {
    what =
      thrown instanceof Error || Object.prototype.toString.call(thrown) === '[object Error]'
        ? 'an Error was thrown whose name or message could not be read'
        : 'a non-Error value was thrown'
  } catch {
    // a Proxy whose traps throw
    what = 'a value was thrown that could not be looked at'
  }
  return { name: 'Error', message: `${what}: ${describeCause(w.value)}` }
}

/** A remote error's `code`, when it is a string or a number (`'ENOENT'`, 404). */
function codeOf(code: unknown): string | number | undefined {
  return typeof code === 'string' || typeof code === 'number' ? code : undefined
}

/** A RemoteError's own fields, which the remote error's properties do not overwrite. */
const OWN_FIELDS = new Set(['name', 'message', 'stack', 'code', 'consumer', 'attempt', 'seq'])

/**
 * The RemoteError an error record describes, for item `seq` of the run (-1: no item's). From a
 * record's error form, the remote error is rebuilt as the core rebuilds any (fromWire): its
 * properties and its cause come along; from a record of an earlier worker (no error form), or of a
 * value that is no Error, its name, message, stack and code.
 */
export function unpackError(buf: Buffer, seq: number): RemoteError {
  const r = codec.unpack(buf) as Partial<ErrorRecord> | null
  const consumer = typeof r?.consumer === 'string' ? r.consumer : 'unknown'
  const attempt = typeof r?.attempt === 'number' ? r.attempt : 0
  const w = r?.wire
  if (w !== null && typeof w === 'object' && typeof w.name === 'string') {
    let props: Record<string, unknown> | undefined
    let code: string | number | undefined
    if (w.props !== null && typeof w.props === 'object') {
      code = codeOf(w.props.code)
      props = {}
      for (const key of Object.keys(w.props)) if (!OWN_FIELDS.has(key)) props[key] = w.props[key]
    }
    const info: RemoteErrorInfo = {
      name: w.name,
      message: typeof w.message === 'string' ? w.message : '',
      stack: typeof w.stack === 'string' ? w.stack : undefined,
      code,
    }
    return fromWire({ ...w, props }, () => new RemoteError(info, consumer, attempt, seq)) as RemoteError
  }
  return new RemoteError(
    {
      name: typeof r?.name === 'string' ? r.name : 'Error',
      message: typeof r?.message === 'string' ? r.message : '',
      stack: typeof r?.stack === 'string' ? r.stack : undefined,
      code: codeOf(r?.code),
    },
    consumer,
    attempt,
    seq,
  )
}

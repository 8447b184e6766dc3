/** stageline/redis: option validation. Needs no Redis server: every case throws before connecting. */
import { describe, expect, test } from 'vitest'
import { Stage } from '../lib/index.js'
import { packError, unpack, unpackError } from '../lib/redis/codec.js'
import { DeliveryLimitError, RemoteError, redisStage, serveStage } from '../lib/redis/index.js'
import { toWire } from '../lib/wire/errors.js'

describe('redisStage() options', () => {
  test('returns a Stage named after the Redis stage, with its options', () => {
    const s = redisStage<number, number>('resize', {
      url: 'redis://127.0.0.1:6390',
      capacity: 10,
      ordered: true,
    })
    expect(s).toBeInstanceOf(Stage)
    expect(s.name).toBe('resize')
    // a Redis stage's concurrency units are its in-flight slots: `workers` is `capacity`
    expect(s.options).toMatchObject({ name: 'resize', capacity: 10, ordered: true, workers: 10 })
    const wider = s.setup({ capacity: 20, qsize: 5 })
    expect(wider.options).toMatchObject({ capacity: 20, qsize: 5, ordered: true, workers: 20 })
    expect(s.options).toMatchObject({ capacity: 10 })
  })

  test('takes a cluster instead of a url, and refuses both', () => {
    const cluster = { rootNodes: [{ url: 'redis://127.0.0.1:7000' }], defaults: { password: 'p' } }
    expect(redisStage('c', { cluster }).options.cluster).toBe(cluster)
    expect(() => redisStage('c', { cluster, url: 'redis://127.0.0.1:7000' })).toThrow(
      "redisStage(): give either `cluster` or `url`, not both: a cluster's nodes are its `rootNodes`",
    )
    expect(() => redisStage('c', { cluster: { rootNodes: [{ url: 'http://x' }] } })).toThrow(
      'redisStage(): expected `cluster.rootNodes[].url` to be a redis:// or rediss:// URL string, got "http://x" (string)',
    )
  })

  test.each([
    [undefined, TypeError, /expected `name` to be a non-empty string, got undefined \(undefined\)/],
    ['', TypeError, /expected `name` to be a non-empty string, got "" \(string\)/],
    [
      'a{b}',
      RangeError,
      /no `\{` or `\}` \(it is the Redis Cluster hash tag of the stage's keys\), got "a\{b\}" \(string\)/,
    ],
  ])('refuses the name %s', (name, type, message) => {
    expect(() => redisStage(name as string)).toThrow(type)
    expect(() => redisStage(name as string)).toThrow(message)
  })

  test.each([
    [
      { capacity: 0 },
      RangeError,
      'expected `capacity` to be an integer from 1 to 2147483647, got 0 (number)',
    ],
    [
      { capacity: Number.POSITIVE_INFINITY },
      RangeError,
      'expected `capacity` to be an integer from 1 to 2147483647, got Infinity',
    ],
    [
      { capacity: 2 ** 31 },
      RangeError,
      'expected `capacity` to be an integer from 1 to 2147483647, got 2147483648 (number)',
    ],
    [
      { capacity: '5' },
      TypeError,
      'expected `capacity` to be an integer from 1 to 2147483647, got "5" (string)',
    ],
    [{ batch: 1001 }, RangeError, 'expected `batch` to be an integer from 1 to 1000, got 1001 (number)'],
    [{ batch: 1.5 }, RangeError, 'expected `batch` to be an integer from 1 and up, got 1.5 (number)'],
    [
      { maxWait: -1 },
      RangeError,
      'expected `maxWait` to be a number of milliseconds from 0 to 2147483647 (about 24.8 days, the longest a timer can wait) or `Infinity`, got -1 (number)',
    ],
    [
      { maxWait: 2 ** 31 },
      RangeError,
      'expected `maxWait` to be a number of milliseconds from 0 to 2147483647 (about 24.8 days, the longest a timer can wait) or `Infinity`, got 2147483648 (number)',
    ],
    [
      { visibilityTimeout: 10 },
      RangeError,
      'expected `visibilityTimeout` to be a number of milliseconds from 30 to 2147483647 (about 24.8 days, the longest a timer can wait), got 10 (number)',
    ],
    [
      { visibilityTimeout: 2 ** 31 },
      RangeError,
      'expected `visibilityTimeout` to be a number of milliseconds from 30 to 2147483647 (about 24.8 days, the longest a timer can wait), got 2147483648 (number)',
    ],
    [
      { visibilityTimeout: Number.POSITIVE_INFINITY },
      RangeError,
      'expected `visibilityTimeout` to be a number of milliseconds from 30 to 2147483647 (about 24.8 days, the longest a timer can wait), got Infinity (number)',
    ],
    [
      { maxDeliveries: 0 },
      RangeError,
      'expected `maxDeliveries` to be an integer from 1 and up, got 0 (number)',
    ],
    [{ deadLetter: 'yes' }, TypeError, 'expected `deadLetter` to be true or false, got "yes" (string)'],
    [
      { connectTimeout: 0 },
      RangeError,
      'expected `connectTimeout` to be a number of milliseconds from 1 to 2147483647 (about 24.8 days, the longest a timer can wait), got 0 (number)',
    ],
    [
      { connectTimeout: 2 ** 31 },
      RangeError,
      'expected `connectTimeout` to be a number of milliseconds from 1 to 2147483647 (about 24.8 days, the longest a timer can wait), got 2147483648 (number)',
    ],
    [{ url: 42 }, TypeError, 'expected `url` to be a redis:// or rediss:// URL string, got 42 (number)'],
    [
      { url: 'http://h:1' },
      TypeError,
      'expected `url` to be a redis:// or rediss:// URL string, got "http://h:1"',
    ],
    [{ client: 'x' }, TypeError, 'expected `client` to be an options object, got "x" (string)'],
    [{ client: { url: 'redis://h' } }, TypeError, 'give the server as the `url` option, not as `client.url`'],
    [
      { workers: 4 },
      TypeError,
      '`workers` does not apply to a Redis stage (got 4 (number)): its workers are the serveStage() processes (set `concurrency` there), and its concurrency here is `capacity`',
    ],
    [
      { worker: 4 },
      TypeError,
      'redisStage(): unknown option `worker`; the options are `url`, `client`, `cluster`, `connectTimeout`, `capacity`, `batch`, `maxWait`, `visibilityTimeout`, `maxDeliveries`, `deadLetter`, `ordered`, `qsize`, `name`',
    ],
    [
      { name: 'other' },
      TypeError,
      'redisStage(): the stage is named by its first argument ("s"), and its options name it "other"',
    ],
    [
      { qsize: -1 },
      RangeError,
      'expected `qsize` to be an integer from 0 to 2147483647 or `Infinity`, got -1 (number)',
    ],
  ])('refuses %o with a %s naming the option and the value', (options, type, message) => {
    const make = (): unknown => redisStage('s', options as object)
    expect(make).toThrow(type)
    expect(make).toThrow(message)
  })

  test('the longest finite values are taken, and maxWait takes Infinity (an entry waits until it is full)', () => {
    const s = redisStage('s', {
      capacity: 2 ** 31 - 1,
      maxWait: Number.POSITIVE_INFINITY,
      visibilityTimeout: 2 ** 31 - 1,
      connectTimeout: 2 ** 31 - 1,
    })
    expect(s.options).toMatchObject({
      capacity: 2147483647,
      maxWait: Number.POSITIVE_INFINITY,
      visibilityTimeout: 2147483647,
      connectTimeout: 2147483647,
    })
    expect(s.setup({ maxWait: 2 ** 31 - 1 }).options).toMatchObject({ maxWait: 2147483647 })
  })

  test('a bad URL is shown without its password', () => {
    const make = (): unknown => redisStage('s', { url: 'http://user:pa55word@host:1' })
    expect(make).toThrow('got "http://user:***@host:1" (string)')
  })

  test('setup() validates what it changes', () => {
    const s = redisStage('s')
    expect(() => s.setup({ batch: 0 })).toThrow(RangeError)
    // @ts-expect-error workers is not an option of a Redis stage
    expect(() => s.setup({ workers: 2 })).toThrow('`workers` does not apply to a Redis stage')
    expect(() => s.setup({ name: 'x}' })).toThrow(RangeError)
    // the name given to setup() is the one the stage is served under
    expect(s.setup({ name: 'other' }).options).toMatchObject({ name: 'other' })
  })
})

describe('serveStage() options', () => {
  const fn = (x: unknown): unknown => x
  test.each([
    [
      { concurrency: 0 },
      RangeError,
      'serveStage(): expected `concurrency` to be an integer from 1 to 10000, got 0 (number)',
    ],
    [
      { concurrency: 10_001 },
      RangeError,
      'serveStage(): expected `concurrency` to be an integer from 1 to 10000, got 10001 (number)',
    ],
    [
      { concurrency: 'many' },
      TypeError,
      'expected `concurrency` to be an integer from 1 to 10000, got "many" (string)',
    ],
    [
      { connectTimeout: 2 ** 31 },
      RangeError,
      'serveStage(): expected `connectTimeout` to be a number of milliseconds from 1 to 2147483647 (about 24.8 days, the longest a timer can wait), got 2147483648 (number)',
    ],
    [
      { capacity: 3 },
      TypeError,
      'serveStage(): unknown option `capacity`; the options are `url`, `client`, `cluster`, `connectTimeout`, `concurrency`',
    ],
    [{ url: 'ftp://x' }, TypeError, 'expected `url` to be a redis:// or rediss:// URL string'],
    ['fast', TypeError, 'serveStage(): expected `options` to be an options object, got "fast" (string)'],
    [
      { cluster: { rootNodes: [] } },
      TypeError,
      "serveStage(): expected `cluster.rootNodes` to be a non-empty array of node options ({ url: 'redis://host:port' }), got an empty array",
    ],
    [
      { cluster: { rootNodes: [{ url: 'redis://127.0.0.1:7000' }] }, client: { password: 'p' } },
      TypeError,
      'serveStage(): give either `cluster` or `client`, not both',
    ],
  ])('refuses %o', async (options, type, message) => {
    const p = serveStage('s', options as object, fn)
    await expect(p).rejects.toThrow(type)
    await expect(p).rejects.toThrow(message)
  })

  test('refuses a function that is not one, and a bad name', async () => {
    await expect(serveStage('s', {}, 'f' as never)).rejects.toThrow(
      'serveStage(): expected `fn` to be a function, got "f" (string)',
    )
    await expect(serveStage('{s}', {}, fn)).rejects.toThrow(RangeError)
  })
})

describe('error classes', () => {
  test('RemoteError keeps the remote name, message, stack and code', () => {
    const e = new RemoteError(
      { name: 'TypeError', message: 'bad', stack: 'TypeError: bad\n    at f (w.js:1:1)', code: 'E1' },
      'h:1:ab',
      2,
      9,
    )
    expect(e).toBeInstanceOf(Error)
    expect([e.name, e.message, e.stack, e.code, e.consumer, e.attempt, e.seq]).toEqual([
      'TypeError',
      'bad',
      'TypeError: bad\n    at f (w.js:1:1)',
      'E1',
      'h:1:ab',
      2,
      9,
    ])
    expect(new RemoteError({ name: 'E', message: 'm' }, 'c', 1, 0).stack).toBe('E: m')
  })

  test("a worker's error record carries the error form, and the fields earlier collectors read", () => {
    const thrown = Object.assign(new TypeError('bad', { cause: new Error('why') }), { code: 'E1', status: 4 })
    const record = unpack(packError(thrown, 'h:1:ab', 3)) as Record<string, unknown>
    // what a collector of an earlier release reads: name, message, stack, code, consumer, attempt
    expect(record).toMatchObject({
      name: 'TypeError',
      message: 'bad',
      stack: thrown.stack,
      code: 'E1',
      consumer: 'h:1:ab',
      attempt: 3,
    })
    // and the one error form, which keeps the rest
    expect(record.wire).toEqual(toWire(thrown))
    expect(record.wire).toMatchObject({
      props: { code: 'E1', status: 4 },
      cause: { name: 'Error', message: 'why' },
    })
    const e = unpackError(packError(thrown, 'h:1:ab', 3), 7)
    expect(e).toBeInstanceOf(RemoteError)
    expect([e.name, e.message, e.stack, e.code, e.consumer, e.attempt, e.seq]).toEqual([
      'TypeError',
      'bad',
      thrown.stack,
      'E1',
      'h:1:ab',
      3,
      7,
    ])
    expect((e as RemoteError & { status: unknown }).status).toBe(4)
    expect(e.cause).toBeInstanceOf(Error)
  })

  test('DeliveryLimitError names the items of the entry', () => {
    expect(new DeliveryLimitError('resize', 12, 3, 4, 3).message).toBe(
      'stage "resize": the entry holding items 12..14 was delivered 4 times (maxDeliveries: 3)',
    )
  })
})

/** Small tools the Redis specs share: a raw client to look at Redis, and waiting on conditions. */
import { createClient } from 'redis'

export type Raw = ReturnType<typeof createClient>

/** A plain node-redis client for inspecting the server the specs run against. */
export async function rawClient(url: string): Promise<Raw> {
  const c = createClient({ url, socket: { reconnectStrategy: false } }) as Raw
  c.on('error', () => {})
  await c.connect()
  return c
}

/**
 * Every key of a stage's runs (`stageline:{name}:...`), leaving out its workers' doorbells
 * (`stageline:{name}:w:<consumer>`, which live as long as their worker): see {@link bellsOf}.
 */
export async function keysOf(raw: Raw, stage: string): Promise<string[]> {
  const bell = `stageline:{${stage}}:w:`
  return (await allKeysOf(raw, stage)).filter((k) => !k.startsWith(bell))
}

/** The doorbells of a stage's live workers. */
export async function bellsOf(raw: Raw, stage: string): Promise<string[]> {
  const bell = `stageline:{${stage}}:w:`
  return (await allKeysOf(raw, stage)).filter((k) => k.startsWith(bell))
}

/** Every key of a stage, doorbells included. */
export async function allKeysOf(raw: Raw, stage: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = (await raw.sendCommand([
      'SCAN',
      cursor,
      'MATCH',
      `stageline:{${stage}}:*`,
      'COUNT',
      '1000',
    ])) as [string, string[]]
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys.sort()
}

/** The ids of a stage's live runs. */
export async function runsOf(raw: Raw, stage: string): Promise<string[]> {
  return (await raw.sendCommand(['ZRANGE', `stageline:{${stage}}:runs`, '0', '-1'])) as string[]
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `check` every few ms until it returns true (or a truthy value); fails after `ms` with `what`. */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  ms = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

export const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i)

/**
 * stageline/redis over TLS, as a user whose ACL is exactly the rule docs/distributed.md documents,
 * against a redis-server started with a certificate this spec makes (openssl). A certificate the
 * client does not trust and a wrong password fail at once, without showing the password.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { type AddressInfo, connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { createClient } from 'redis'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { pipe, TaskException } from '../lib/index.js'
import { RedisConnectionError, redisStage, serveStage } from '../lib/redis/index.js'
import {
  type RedisServer,
  reportUnavailable,
  type Started,
  startRedisServer,
} from './helpers/redis-server.js'
import { keysOf, range, sleep } from './helpers/redis-util.js'

const dir = mkdtempSync(join(tmpdir(), 'stageline-tls-'))
const run = (args: string[]): string | undefined => {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
  if (r.error !== undefined) return `openssl: ${r.error.message}`
  return r.status === 0 ? undefined : `openssl ${args[0]}: ${r.stderr.trim()}`
}

/** A CA, a server certificate it signs (for 127.0.0.1), and a second CA that signed nothing. */
function makeCertificates(): string | undefined {
  writeFileSync(join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  const steps: string[][] = []
  for (const ca of ['ca', 'other-ca']) {
    steps.push(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${ca}.key`])
    steps.push([
      'req',
      '-x509',
      '-new',
      '-key',
      `${ca}.key`,
      '-subj',
      `/CN=${ca}`,
      '-days',
      '1',
      '-out',
      `${ca}.crt`,
    ])
  }
  steps.push(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key'])
  steps.push(['req', '-new', '-key', 'server.key', '-subj', '/CN=localhost', '-out', 'server.csr'])
  steps.push(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
      '-days',
      '1',
      '-extfile',
      'ext',
      '-out',
      'server.crt',
    ]),
  )
  for (const step of steps) {
    const failed = run(step)
    if (failed !== undefined) return failed
  }
  return undefined
}

const made = makeCertificates()
const started: Started =
  made !== undefined
    ? { ok: false, reason: `could not make certificates: ${made}` }
    : await startRedisServer({
        tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), ca: join(dir, 'ca.crt') },
      })
if (!started.ok) {
  rmSync(dir, { recursive: true, force: true })
  reportUnavailable('spec/redis-security.spec.ts', started.reason)
}

/** The ACL rule of docs/distributed.md (the code block after its `acl-rule` marker). */
function documentedRule(): string {
  const doc = readFileSync(new URL('../docs/distributed.md', import.meta.url), 'utf8')
  const m = /<!-- acl-rule -->\n```text\n(ACL SETUSER [^\n]+)\n```/.exec(doc)
  if (m === null) throw new Error('docs/distributed.md has no ACL rule after <!-- acl-rule -->')
  return m[1]!
}

describe.runIf(started.ok)('stageline/redis over TLS, with the least ACL', () => {
  let server: RedisServer
  let ca: Buffer
  let admin: ReturnType<typeof createClient>
  const user = 'stage-user'
  const password = 'pw-8d1f0c3a77'
  const stage = 'secure'
  const tls = (which = 'ca.crt', more: object = {}) => ({
    url: `rediss://127.0.0.1:${server.port}`,
    connectTimeout: 60_000,
    client: {
      username: user,
      password,
      socket: { tls: true as const, ca: readFileSync(join(dir, which)) },
      ...more,
    },
  })

  beforeAll(async () => {
    server = (started as { ok: true; server: RedisServer }).server
    ca = readFileSync(join(dir, 'ca.crt'))
    admin = createClient({ url: server.url, socket: { tls: true, ca, reconnectStrategy: false } })
    admin.on('error', () => {})
    await admin.connect()
    const rule = documentedRule().replaceAll('<user>', user).replaceAll('<password>', password)
    const args = rule.replaceAll('<stage>', stage).split(' ')
    expect(await admin.sendCommand(args)).toBe('OK')
    await admin.sendCommand(['ACL', 'LOG', 'RESET'])
  })
  afterAll(async () => {
    await admin?.close()
    await server?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a run and its workers need no more than the documented rule', async () => {
    const workers = await Promise.all([
      serveStage(stage, { ...tls(), concurrency: 4 }, async (x: number) => {
        // a few slow items, so that entries are renewed while held
        if (x % 100 === 0) await sleep(120)
        return x * 3
      }),
      serveStage(stage, { ...tls(), concurrency: 2 }, (x: number) => x * 3),
    ])
    const out = await pipe(
      range(600),
      redisStage<number, number>(stage, { ...tls(), batch: 10, capacity: 100, visibilityTimeout: 300 }),
    ).toArray()
    expect(out.sort((a, b) => a - b)).toEqual(range(600).map((x) => x * 3))
    await Promise.all(workers.map((w) => w.close()))
    // nothing the stage sent was refused
    expect(await admin.sendCommand(['ACL', 'LOG'])).toEqual([])
    expect(await keysOf(admin as never, stage)).toEqual([])
  })

  test('every command the rule allows is one that stageline/redis sends', () => {
    const sources = readdirSync(new URL('../lib/redis/', import.meta.url))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => readFileSync(new URL(`../lib/redis/${f}`, import.meta.url), 'utf8').toLowerCase())
      .join('\n')
    const allowed = documentedRule()
      .split(' ')
      .filter((t) => t.startsWith('+'))
      .map((t) => t.slice(1))
    const unsent = allowed.filter(
      (c) => !c.split('|').every((part) => sources.includes(`'${part}'`) || sources.includes(`.${part}(`)),
    )
    expect(unsent).toEqual([])
    expect(allowed.length).toBeGreaterThan(20)
  })

  test("the stage's user is refused another stage's keys and channel", async () => {
    const c = createClient({
      ...tls().client,
      url: tls().url,
      socket: { tls: true, ca, reconnectStrategy: false },
    })
    c.on('error', () => {})
    await c.connect()
    try {
      await expect(c.sendCommand(['XADD', 'stageline:{other}:x:in', '*', 'a', '1'])).rejects.toThrow(
        /^NOPERM/,
      )
      await expect(c.sendCommand(['PUBLISH', 'stageline:{other}:events', '+x'])).rejects.toThrow(/^NOPERM/)
      await expect(c.sendCommand(['CLIENT', 'UNBLOCK', '1'])).rejects.toThrow(/^NOPERM/)
      expect(await c.sendCommand(['XADD', `stageline:{${stage}}:probe`, '*', 'a', '1'])).toBeTypeOf('string')
      await c.sendCommand(['DEL', `stageline:{${stage}}:probe`])
    } finally {
      await c.close()
    }
  })

  /** Connections the server accepted so far. */
  const accepted = async (): Promise<number> =>
    Number(/total_connections_received:(\d+)/.exec(String(await admin.sendCommand(['INFO', 'stats'])))![1])

  test('an untrusted certificate fails at once, naming the TLS failure', async () => {
    // a TLS handshake that fails is no connection the server counts: count them on a relay
    let attempts = 0
    const relay = createServer((sock) => {
      attempts++
      const up = connect(server.port, '127.0.0.1')
      sock.pipe(up).pipe(sock)
      const drop = (): void => {
        sock.destroy()
        up.destroy()
      }
      for (const s of [sock, up]) s.on('error', drop)
    })
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r))
    const port = (relay.address() as AddressInfo).port
    const untrusted = { ...tls('other-ca.crt'), url: `rediss://127.0.0.1:${port}` }
    const run = pipe(range(3), redisStage<number, number>(stage, untrusted)).toArray()
    const failed = await run.catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(TaskException)
    const err = (failed as TaskException).cause
    // one attempt, no retry (connectTimeout is a minute)
    expect(attempts).toBe(1)
    await new Promise((r) => relay.close(r))
    expect(err).toBeInstanceOf(RedisConnectionError)
    expect((err as Error).message).toMatch(
      /could not connect to Redis at rediss:\/\/127\.0\.0\.1:\d+: the TLS handshake failed \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY): /,
    )
    const served = await serveStage(stage, tls('other-ca.crt'), (x: number) => x).catch((e: unknown) => e)
    expect(served).toBeInstanceOf(RedisConnectionError)
    expect((served as Error).message).toMatch(/the TLS handshake failed/)
  }, 15_000)

  test('a wrong password fails at once, and no error shows it', async () => {
    const wrong = 'pw-wrong-5e2b9c'
    const options = { ...tls(), client: { ...tls().client, password: wrong } }
    const before = await accepted()
    const failed = await pipe(range(3), redisStage<number, number>(stage, options))
      .toArray()
      .catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(TaskException)
    expect(inspect(failed, { depth: 8 })).not.toContain(wrong)
    const served = await serveStage(stage, options, (x: number) => x).catch((e: unknown) => e)
    // one attempt each, no retry
    expect((await accepted()) - before).toBe(2)
    for (const e of [(failed as TaskException).cause, served]) {
      expect(e).toBeInstanceOf(RedisConnectionError)
      expect((e as Error).message).toMatch(/the server refused the credentials \(WRONGPASS/)
      const shown = inspect(e, { depth: 8 })
      expect(shown).not.toContain(wrong)
      expect(shown).not.toContain(password)
    }
  }, 15_000)
})

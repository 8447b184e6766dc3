/**
 * Starts a private redis-server for a spec file: loopback only, a free port, no persistence, and
 * stops it afterwards. It never uses a Redis the machine may already run on 6379.
 *
 * When no redis-server can be found or started, `startRedisServer()` resolves to the reason
 * instead of throwing, and `reportUnavailable()` says so loudly: a console warning, plus a test
 * named "NOT RUN: ..." that is skipped on a developer's machine and FAILS under CI (CI=true), where
 * `.ci/run` installs redis-server and a missing one is a broken setup, not something to skip.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { connect as connectTls } from 'node:tls'
import { test } from 'vitest'

export interface RedisServer {
  /** `redis://127.0.0.1:<port>` (with the password, if one was set). */
  readonly url: string
  readonly port: number
  stop(): Promise<void>
}

export type Started = { ok: true; server: RedisServer } | { ok: false; reason: string }

/** A server that speaks TLS only: its certificate and key files, and the CA file that signed it. */
export interface TlsFiles {
  cert: string
  key: string
  ca: string
}

export interface StartOptions {
  password?: string
  /** Serve TLS only (`--port 0 --tls-port <port>`, clients need no certificate). */
  tls?: TlsFiles
  /** More redis-server arguments (`['--appendonly', 'yes']`). */
  args?: string[]
}

const BINARY = process.env.REDIS_SERVER ?? 'redis-server'

/**
 * Runs the server under a watchdog shell that kills it once our end of its stdin closes: when
 * stop() closes it, and when this process dies in any way (a killed test worker must not leave a
 * server behind). The shell exits with the server's status.
 */
const WATCHDOG = 'exec 3<&0; "$0" "$@" & rs=$!; (read _ <&3; kill $rs 2>/dev/null) & wait $rs'

/** A TCP port free on the loopback right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/** Sends PING (after AUTH when a password is set) over a raw socket; resolves true on +PONG. */
export function ping(port: number, password?: string, tls?: TlsFiles): Promise<boolean> {
  return new Promise((resolve) => {
    const sock: Socket =
      tls === undefined
        ? connect({ port, host: '127.0.0.1' })
        : connectTls({ port, host: '127.0.0.1', ca: readFileSync(tls.ca), servername: 'localhost' })
    let data = ''
    const done = (ok: boolean): void => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(500, () => done(false))
    sock.once('error', () => done(false))
    sock.on('data', (chunk) => {
      data += chunk.toString()
      if (data.includes('+PONG')) done(true)
      else if (data.includes('-')) done(false)
    })
    sock.once(tls === undefined ? 'connect' : 'secureConnect', () => {
      sock.write(password === undefined ? 'PING\r\n' : `AUTH ${password}\r\nPING\r\n`)
    })
  })
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000)
      child.once('exit', () => {
        clearTimeout(kill)
        resolve()
      })
      child.stdin!.end() // the watchdog kills the server, then the shell exits
    })
}

async function attempt(options: StartOptions): Promise<Started> {
  const { password, tls } = options
  const port = await freePort()
  const args =
    tls === undefined
      ? ['--port', String(port)]
      : ['--port', '0', '--tls-port', String(port), '--tls-cert-file', tls.cert, '--tls-key-file', tls.key]
  if (tls !== undefined) args.push('--tls-ca-cert-file', tls.ca, '--tls-auth-clients', 'no')
  args.push('--bind', '127.0.0.1', '--save', '', '--appendonly', 'no')
  args.push('--daemonize', 'no', '--loglevel', 'warning', '--protected-mode', 'yes')
  if (password !== undefined) args.push('--requirepass', password)
  args.push(...(options.args ?? []))
  const probe = spawnSync(BINARY, ['--version'], { encoding: 'utf8' })
  if (probe.error !== undefined) {
    const code = (probe.error as NodeJS.ErrnoException).code
    return {
      ok: false,
      reason: code === 'ENOENT' ? `no ${BINARY} binary on PATH` : `${BINARY}: ${probe.error.message}`,
    }
  }
  let child: ChildProcess
  try {
    child = spawn('sh', ['-c', WATCHDOG, BINARY, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (err) {
    return { ok: false, reason: `could not start ${BINARY}: ${(err as Error).message}` }
  }
  let output = ''
  child.stdout!.on('data', (c) => (output += c))
  child.stderr!.on('data', (c) => (output += c))
  const spawnError = new Promise<string>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      resolve(err.code === 'ENOENT' ? `no ${BINARY} binary on PATH` : `${BINARY}: ${err.message}`),
    )
    child.once('exit', (code, signal) => resolve(`${BINARY} exited (${code ?? signal}): ${output.trim()}`))
  })
  let failed: string | undefined
  void spawnError.then((reason) => (failed = reason))
  // the watchdog's pipe must not keep this process alive, nor its end be closed before we exit
  ;(child.stdin as unknown as { unref?: () => void }).unref?.()
  child.unref()
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (failed !== undefined) return { ok: false, reason: failed }
    if (await ping(port, password, tls)) {
      const url = `${tls === undefined ? 'redis' : 'rediss'}://${password === undefined ? '' : `:${password}@`}127.0.0.1:${port}`
      return { ok: true, server: { url, port, stop: stopper(child) } }
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  await stopper(child)()
  return { ok: false, reason: `${BINARY} did not answer PING within 10 s: ${output.trim()}` }
}

/** Starts a redis-server (a few tries, in case another process took the free port first). */
export async function startRedisServer(options: StartOptions = {}): Promise<Started> {
  let last: Started = { ok: false, reason: 'not started' }
  for (let i = 0; i < 3; i++) {
    last = await attempt(options)
    if (last.ok || last.reason.startsWith('no ')) return last
  }
  return last
}

/** Says loudly that a spec file's Redis tests did not run (see the module comment). */
export function reportUnavailable(file: string, reason: string): void {
  const line = '*'.repeat(100)
  console.warn(
    `\n${line}\n${file}: the Redis transport specs DID NOT RUN: ${reason}\n` +
      `Install redis-server (Debian: apt-get install redis-server) or set REDIS_SERVER to its path.\n${line}\n`,
  )
  const name = `NOT RUN: redis-server unavailable (${reason})`
  if (process.env.CI) {
    test(name, () => {
      throw new Error(`redis-server is required under CI (.ci/run installs it): ${reason}`)
    })
  } else test.skip(name, () => {})
}

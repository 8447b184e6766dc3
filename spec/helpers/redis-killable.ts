/**
 * A redis-server a spec can SIGKILL and start again on the same port (a restart), under the same
 * watchdog as helpers/redis-server.ts (whose servers cannot be killed from outside): the watchdog
 * also prints the server's pid.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { freePort, ping } from './redis-server.js'

const BINARY = process.env.REDIS_SERVER ?? 'redis-server'
/** helpers/redis-server.ts's watchdog, also printing the server's pid so that a test can SIGKILL it. */
const WATCHDOG = 'exec 3<&0; "$0" "$@" & rs=$!; echo "pid=$rs"; (read _ <&3; kill $rs 2>/dev/null) & wait $rs'

export interface Server {
  readonly url: string
  readonly port: number
  /** SIGKILL: no shutdown; only what the server had written to disk (with persistence) survives. */
  kill(): Promise<void>
  stop(): Promise<void>
}

/**
 * Starts a redis-server on `port`: empty and without persistence, unless `more` arguments say
 * otherwise (`['--appendonly', 'yes', '--dir', dir]`, which come after the defaults and win).
 * Rejects saying why it could not.
 */
export async function redisAt(port: number, more: string[] = []): Promise<Server> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  args.push('--daemonize', 'no', '--loglevel', 'warning', '--protected-mode', 'yes', ...more)
  const child: ChildProcess = spawn('sh', ['-c', WATCHDOG, BINARY, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (c) => (output += c))
  child.stderr!.on('data', (c) => (output += c))
  ;(child.stdin as unknown as { unref?: () => void }).unref?.()
  child.unref()
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + 10_000
  while (!(await ping(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.stdin!.end()
      throw new Error(`${BINARY} did not start on port ${port}: ${output.trim() || 'no output'}`)
    }
    await new Promise((r) => setTimeout(r, 5))
  }
  const pid = Number(/pid=(\d+)/.exec(output)?.[1])
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill: async () => {
      process.kill(pid, 'SIGKILL')
      await exited
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin!.end()
        await exited
      }
    },
  }
}

/** A fresh server on a free port (a few tries, in case another process takes the port first). */
export async function freshRedis(more: string[] = []): Promise<Server> {
  let last: unknown
  for (let i = 0; i < 3; i++) {
    try {
      return await redisAt(await freePort(), more)
    } catch (err) {
      last = err
    }
  }
  throw last
}

/**
 * The dashboard: a small HTTP server (on 127.0.0.1 unless told otherwise) that serves the live
 * page and a stream of server-sent events, one per update of a run it watches. A run shows on it
 * when given the run option `dashboard`. Nothing it does can fail a run: each run's updates are
 * built inside a guard (a failure is one process warning and the run is no longer shown), and a
 * client that goes away or falls behind is dropped.
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type Execution, RUNNING, type RunPlan } from '../engine/execution.js'
import { OBSERVE, type RunObserver } from '../engine/observe.js'
import { describeCause } from '../errors.js'
import { integer, nonEmptyString, type Schema, validateOptions } from '../options/check.js'
import { MAX_TIMER_MS } from '../options/limits.js'
import { type LiveRun, LiveView } from './live.js'
import { livePage, PAGE_CSP } from './page.js'

/**
 * Options of {@link dashboard}.
 *
 * @example
 * ```ts
 * import { dashboard, type DashboardOptions } from 'stageline/dashboard'
 * const options: DashboardOptions = { port: 0, interval: 250 } // a free port, 4 updates a second
 * const live = await dashboard(options)
 * console.log(live.url.startsWith('http://127.0.0.1:')) // true
 * await live.close()
 * ```
 */
export interface DashboardOptions {
  /**
   * The TCP port to listen on; 0 picks a free one (`url` says which).
   * @default 0
   */
  port?: number
  /**
   * The address to listen on. Anyone who can reach it sees the runs (stage names, counts, error
   * messages): keep the loopback unless the network is yours.
   * @default '127.0.0.1'
   */
  host?: string
  /**
   * Milliseconds between two updates of a run on the page.
   * @default 500
   */
  interval?: number
  /**
   * How many ended runs the page keeps showing (the oldest go first); running runs always show.
   * @default 20
   */
  keep?: number
}

/**
 * A live page of runs, made by {@link dashboard}: give it to runs as the option `dashboard`.
 *
 * @example
 * ```ts
 * import { mapStage, pipe } from 'stageline'
 * import { dashboard } from 'stageline/dashboard'
 * const live = await dashboard()
 * console.error(`watch the run at ${live.url}`)
 * await pipe([1, 2, 3], mapStage(async (n: number) => n * 2, { workers: 2 })).toArray({ dashboard: live })
 * await live.close()
 * ```
 */
export interface Dashboard extends RunObserver {
  /** The page's address: `http://127.0.0.1:<port>/`. */
  readonly url: string
  /** Stops serving: open pages are told the dashboard closed; runs still going are no longer shown. Idempotent. */
  close(): Promise<void>
}

const SCHEMA: Schema = {
  port: integer(0, 65535),
  host: nonEmptyString,
  interval: integer(10, MAX_TIMER_MS),
  keep: integer(1, 10_000),
}

/** A client that has fallen this far behind (bytes not yet sent) is dropped. */
const BEHIND = 4 * 1024 * 1024
/** A comment sent this often keeps idle connections open through proxies. */
const HEARTBEAT_MS = 15_000

interface Watched {
  view: LiveView
  last: LiveRun
  unwatch: () => void
}

class LiveServer implements Dashboard {
  readonly observes = 'dashboard' as const
  url = ''
  private readonly runs = new Map<string, Watched>()
  private readonly clients = new Set<ServerResponse>()
  private closed = false
  private closing: Promise<void> | undefined
  private readonly heartbeat: ReturnType<typeof setInterval>

  constructor(
    private readonly server: Server,
    private readonly interval: number,
    private readonly keep: number,
  ) {
    server.on('request', (req, res) => this.serve(req, res))
    this.heartbeat = setInterval(() => this.send(': alive\n\n'), HEARTBEAT_MS)
    this.heartbeat.unref()
  }

  [OBSERVE](run: Execution, plan: RunPlan): void {
    if (this.closed) return
    const view = new LiveView(run, plan)
    const w: Watched = { view, last: view.update(), unwatch: () => {} }
    this.runs.set(run.id, w)
    this.publish(w.last)
    let failed = false
    w.unwatch = run.watch((r) => {
      if (failed || this.closed) return
      try {
        w.last = view.update()
        this.publish(w.last)
        if (r.state !== RUNNING) this.forgetOld()
      } catch (err) {
        failed = true
        this.runs.delete(run.id)
        this.send(`event: forget\ndata: ${JSON.stringify(run.id)}\n\n`)
        process.emitWarning(`stageline: the dashboard stopped showing run ${run.id}: ${describeCause(err)}`)
      }
    }, this.interval)
  }

  /** What the page shows now, every run: for scripts (`/runs.json`) and new pages. */
  private all(): LiveRun[] {
    return [...this.runs.values()].map((w) => w.last)
  }

  private forgetOld(): void {
    const ended = [...this.runs.entries()].filter(([, w]) => w.last.state !== 'running')
    for (const [id] of ended.slice(0, Math.max(0, ended.length - this.keep))) {
      this.runs.delete(id)
      this.send(`event: forget\ndata: ${JSON.stringify(id)}\n\n`)
    }
  }

  private publish(run: LiveRun): void {
    this.send(`event: run\ndata: ${JSON.stringify(run)}\n\n`)
  }

  private send(text: string): void {
    for (const res of this.clients) {
      if (res.writableLength > BEHIND) {
        this.clients.delete(res)
        res.destroy()
        continue
      }
      res.write(text)
    }
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]
    res.on('error', () => this.clients.delete(res))
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/') {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': PAGE_CSP,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      })
      res.end(livePage())
    } else if (path === '/runs.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify(this.all()))
    } else if (path === '/events') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      })
      res.write(`retry: 2000\nevent: runs\ndata: ${JSON.stringify(this.all())}\n\n`)
      this.clients.add(res)
      req.on('close', () => this.clients.delete(res))
    } else {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n')
    }
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.closed = true
      clearInterval(this.heartbeat)
      for (const w of this.runs.values()) w.unwatch()
      for (const res of this.clients) res.end()
      this.clients.clear()
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
    return this.closing
  }
}

/**
 * Starts a live page of runs: an HTTP server on 127.0.0.1 (unless `host` says otherwise) serving a
 * page that shows every run given the option `dashboard` (each by its run id) as a chain of stage
 * boxes: workers, queue fill, output rate, the working / waiting-for-input / waiting-for-room
 * shares over the last few seconds, and the current bottleneck highlighted. A run that ended stays
 * with its final state. The page updates through server-sent events; it needs no build step and
 * fetches nothing else. Resolves once the server listens; rejects if it cannot.
 *
 * @example
 * ```ts
 * import { feed, mapStage, pipe } from 'stageline'
 * import { dashboard } from 'stageline/dashboard'
 * const live = await dashboard({ port: 0 })
 * const input = feed<number>()
 * const run = pipe(input, mapStage(async (n: number) => n + 1, { name: 'inc' })).start({ dashboard: live })
 * await input.pushAll([1, 2, 3])
 * await run.stop()
 * const shown = (await (await fetch(`${live.url}runs.json`)).json()) as { state: string }[]
 * console.log(shown[0]?.state) // done
 * await live.close()
 * ```
 */
export async function dashboard(options?: DashboardOptions): Promise<Dashboard> {
  const o = validateOptions('dashboard()', options, SCHEMA) as DashboardOptions
  const host = o.host ?? '127.0.0.1'
  const port = o.port ?? 0
  const server = createServer()
  const live = new LiveServer(server, o.interval ?? 500, o.keep ?? 20)
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error): void => {
      reject(
        new Error(`dashboard(): cannot listen on ${host}:${port}: ${describeCause(err)}`, { cause: err }),
      )
    }
    server.once('error', failed)
    server.listen(port, host, () => {
      server.off('error', failed)
      resolve()
    })
  })
  // the server and its connections (an open page) never keep the process alive by themselves: runs
  // do, and a program that wants to keep showing its ended runs keeps itself alive
  server.unref()
  server.on('connection', (socket) => socket.unref())
  server.on('error', () => {})
  const address = server.address() as AddressInfo
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address
  live.url = `http://${shown}:${address.port}/`
  return live
}

/**
 * stageline/dashboard without a browser: the server, its options, what it serves, and that nothing
 * it does can fail a run. spec/browser.spec.ts opens the page itself.
 */
import { request } from 'node:http'
import { describe, expect, test } from 'vitest'
import { dashboard } from '../lib/dashboard/index.js'
import type { LiveRun } from '../lib/dashboard/live.js'
import { OBSERVE } from '../lib/engine/observe.js'
import { mapStage, pipe } from '../lib/index.js'
import { numbers, recordUnhandledRejections } from './helpers/instruments.js'

recordUnhandledRejections()

async function get(
  url: string,
  method = 'GET',
): Promise<{ status: number; type: string; csp: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          type: String(res.headers['content-type'] ?? ''),
          csp: String(res.headers['content-security-policy'] ?? ''),
          body,
        }),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

/** Reads the event stream until `until` says enough; resolves to the events seen. */
function events(
  url: string,
  until: (seen: { event: string; data: unknown }[]) => boolean,
): Promise<{ event: string; data: unknown }[]> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}events`, (res) => {
      const seen: { event: string; data: unknown }[] = []
      let buf = ''
      res.on('data', (c: Buffer) => {
        buf += c.toString()
        let at = buf.indexOf('\n\n')
        while (at >= 0) {
          const chunk = buf.slice(0, at)
          buf = buf.slice(at + 2)
          const event = /^event: (.*)$/m.exec(chunk)?.[1]
          const data = /^data: (.*)$/m.exec(chunk)?.[1]
          if (event !== undefined && data !== undefined) seen.push({ event, data: JSON.parse(data) })
          at = buf.indexOf('\n\n')
        }
        if (until(seen)) {
          req.destroy()
          resolve(seen)
        }
      })
    })
    req.on('error', reject)
    req.end()
  })
}

describe('dashboard()', () => {
  test('serves the page on 127.0.0.1 with a strict policy, the runs as JSON, and 404 elsewhere', async () => {
    const live = await dashboard()
    try {
      expect(live.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
      const page = await get(live.url)
      expect(page.status).toBe(200)
      expect(page.type).toBe('text/html; charset=utf-8')
      expect(page.csp).toContain("default-src 'none'")
      expect(page.csp).toContain("connect-src 'self'")
      expect(page.body).toContain("new EventSource('events')")
      expect(page.body).not.toMatch(/(src|href)="https?:/)
      expect((await get(`${live.url}runs.json`)).body).toBe('[]')
      expect((await get(`${live.url}nothing`)).status).toBe(404)
      expect((await get(live.url, 'POST')).status).toBe(405)
    } finally {
      await live.close()
    }
  })

  test('a run shows on it, and stays with its final state; the event stream says so', async () => {
    const live = await dashboard({ interval: 10 })
    try {
      await pipe(
        numbers(20),
        mapStage((n: number) => n, { name: 'inc' }),
      ).toArray({ dashboard: live })
      const runs = JSON.parse((await get(`${live.url}runs.json`)).body) as LiveRun[]
      expect(runs).toHaveLength(1)
      expect(runs[0]).toMatchObject({ state: 'done', itemsOut: 20 })
      expect(runs[0]!.stages[0]).toMatchObject({ name: 'inc', kind: 'mapStage', in: 20, out: 20, workers: 1 })
      const seen = await events(live.url, (s) => s.length >= 1)
      expect(seen[0]!.event).toBe('runs')
      expect((seen[0]!.data as LiveRun[])[0]!.runId).toBe(runs[0]!.runId)
    } finally {
      await live.close()
    }
  })

  test('keeps the last `keep` ended runs', async () => {
    const live = await dashboard({ keep: 2 })
    try {
      for (let i = 0; i < 4; i++)
        await pipe(
          [i],
          mapStage((n: number) => n),
        ).toArray({ dashboard: live })
      const runs = JSON.parse((await get(`${live.url}runs.json`)).body) as LiveRun[]
      expect(runs).toHaveLength(2)
    } finally {
      await live.close()
    }
  })

  test('bad options are refused; a port in use rejects naming the address', async () => {
    await expect(dashboard({ port: -1 })).rejects.toThrow(
      'dashboard(): expected `port` to be an integer from 0 to 65535, got -1 (number)',
    )
    await expect(dashboard({ host: '' })).rejects.toThrow(
      'dashboard(): expected `host` to be a non-empty string',
    )
    await expect(dashboard({ interval: 1 })).rejects.toThrow(/`interval` to be an integer from 10/)
    await expect(dashboard({ colour: 'red' } as never)).rejects.toThrow(
      'dashboard(): unknown option `colour`',
    )
    const live = await dashboard()
    const port = Number(new URL(live.url).port)
    try {
      await expect(dashboard({ port })).rejects.toThrow(
        `dashboard(): cannot listen on 127.0.0.1:${port}: Error: listen EADDRINUSE`,
      )
    } finally {
      await live.close()
    }
  })

  test('nothing it does fails a run: a closed dashboard, or one whose update throws', async () => {
    const live = await dashboard()
    await live.close()
    await live.close() // idempotent
    expect(
      await pipe(
        [1, 2],
        mapStage((n: number) => n),
      ).toArray({ dashboard: live }),
    ).toEqual([1, 2])

    const other = await dashboard({ interval: 10 })
    const seen: string[] = []
    const on = (w: Error): void => {
      seen.push(w.message)
    }
    process.on('warning', on)
    try {
      // a stage whose name cannot be read throws in the update, after the run started
      const p = pipe(
        [1, 2, 3],
        mapStage((n: number) => n, { name: 'ok' }),
      )
      const hostile = {
        observes: 'dashboard' as const,
        [OBSERVE]: (
          run: Parameters<(typeof other)[typeof OBSERVE]>[0],
          plan: Parameters<(typeof other)[typeof OBSERVE]>[1],
        ) => {
          other[OBSERVE](run, plan)
          Object.defineProperty(run.stages[0]!, 'name', {
            get() {
              throw new Error('no name')
            },
          })
        },
      }
      expect(await p.toArray({ dashboard: hostile as never })).toEqual([1, 2, 3])
      await new Promise((r) => setImmediate(r))
    } finally {
      process.off('warning', on)
      await other.close()
    }
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatch(/^stageline: the dashboard stopped showing run [0-9a-f]{8}: Error: no name$/)
  })

  test('an observer that throws while attaching is a warning, not a failure', async () => {
    const seen: string[] = []
    const on = (w: Error): void => {
      seen.push(w.message)
    }
    process.on('warning', on)
    try {
      const bad = {
        observes: 'telemetry' as const,
        [OBSERVE]: () => {
          throw new Error('cannot attach')
        },
      }
      expect(
        await pipe(
          [1],
          mapStage((n: number) => n),
        ).toArray({ telemetry: bad as never }),
      ).toEqual([1])
      await new Promise((r) => setImmediate(r))
    } finally {
      process.off('warning', on)
    }
    expect(seen).toEqual([
      expect.stringMatching(
        /^stageline: the telemetry could not watch run [0-9a-f]{8}: Error: cannot attach$/,
      ),
    ])
  })

  test('a dashboard given as telemetry is refused, naming both', async () => {
    const live = await dashboard()
    try {
      await expect(pipe([1]).toArray({ telemetry: live })).rejects.toThrow(
        'toArray(): expected `telemetry` to be telemetry made by `otelMetrics()` of stageline/otel, got a dashboard made by `dashboard()` of stageline/dashboard',
      )
    } finally {
      await live.close()
    }
  })
})

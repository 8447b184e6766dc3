/**
 * Counting this process's OS threads, for the specs that check no worker thread outlives a run
 * (on Node 20 `process.getActiveResourcesInfo()` does not list worker threads).
 */
import { existsSync, readFileSync } from 'node:fs'

/** The OS threads of this process, from /proc. */
export function osThreads(): number {
  return Number(/^Threads:\s+(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1])
}

/** Whether /proc is there to count threads (Linux). */
export const hasProc = existsSync('/proc/self/status')

/**
 * The OS thread count once it is back to `before`, or what it is after 3 s. A run settles once
 * its pool is destroyed or, at the latest, after the run's grace period (100 ms); on a loaded
 * machine a terminated thread can take longer than that to leave the process, so the count is
 * polled rather than read once. A thread that never exits still fails the check.
 */
export async function threadsBackTo(before: number): Promise<number> {
  const end = Date.now() + 3000
  while (osThreads() !== before && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  return osThreads()
}

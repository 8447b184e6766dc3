/**
 * Virtual time for specs of where a run's time goes: stage functions, sources and consumers
 * "take" time by awaiting `sleep(ms)` on a clock that only this helper moves. Time moves only when
 * the process has nothing else to do (every pending callback has run): then the clock jumps to the
 * earliest sleep that is due and wakes it. Work in flight overlaps as it would in real time (a stage
 * waiting on a sleep is working while the others park), yet every run is the same, whatever the
 * machine's speed.
 */

interface Sleeper {
  readonly at: number
  readonly seq: number
  readonly wake: () => void
}

export class VirtualTime {
  now = 1000
  private sleepers: Sleeper[] = []
  private seq = 0
  private pending = false

  /** The clock, for a run's `clock` option. */
  readonly read = (): number => this.now

  /** Resolves once `ms` of virtual time has passed. */
  sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      this.sleepers.push({ at: this.now + ms, seq: this.seq++, wake })
      this.idle()
    })
  }

  /** Moves the clock once nothing else is left to run: two turns of the event loop, so that what a turn queued runs first. */
  private idle(): void {
    if (this.pending) return
    this.pending = true
    setImmediate(() =>
      setImmediate(() => {
        this.pending = false
        this.advance()
      }),
    )
  }

  private advance(): void {
    if (this.sleepers.length === 0) return
    let at = Number.POSITIVE_INFINITY
    for (const s of this.sleepers) if (s.at < at) at = s.at
    const due = this.sleepers.filter((s) => s.at === at).sort((a, b) => a.seq - b.seq)
    this.sleepers = this.sleepers.filter((s) => s.at !== at)
    this.now = at
    for (const s of due) s.wake()
    this.idle()
  }
}

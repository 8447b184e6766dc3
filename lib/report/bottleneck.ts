/**
 * The bottleneck rule: which stage held a run back, in one sentence, and what to change. It reads
 * only where each stage's worker time went (working, starved, blocked), so the same rule serves a
 * finished run's report (over the whole run) and the live page (over the last few seconds).
 *
 * A stage is the bottleneck when
 * - its workers were mostly working: at least {@link BUSY} of their time;
 * - the stage before it was mostly blocked on it: it waited for room at least {@link WAITED} of its
 *   time. The source is read on demand, so its waiting cannot be seen; for the first stage, the
 *   source counts as blocked on it when the stage seldom waited for input (at most {@link KEPT_UP});
 * - the stage after it was mostly starved: it waited for input at least {@link WAITED} of its time.
 *   For the last stage, the consumer counts as starved when the stage seldom waited for room (at
 *   most {@link KEPT_UP}).
 * When no stage is, the run was held back by the source (the first stage waited for input most of
 * the time), by the consumer (the last stage waited for room most of the time, its queue full), or
 * by no one part: the stages are balanced.
 * @module
 */
import type { Bottleneck } from './format.js'

/** A stage is mostly working from this share of its worker time on (ramp-up and the run's tail leave a busy stage under 100%). */
export const BUSY = 0.7
/** A neighbour is mostly blocked (or starved) from this share of its worker time on. */
export const WAITED = 0.5
/** The source (or the consumer) kept up when the end stage waited for it at most this share of its time. */
export const KEPT_UP = 0.2
/** The event loop busy this share of the time or more means the main thread's CPU is the limit. */
export const CPU_BOUND = 0.8

/** Where one stage's worker time went over the stretch judged, and what the advice needs to know of it. */
export interface StageTime {
  readonly name: string
  /** The factory that made it (`mapStage`, `threadStage`, ...). */
  readonly kind: string
  readonly workers: number
  readonly rateLimited: boolean
  readonly limited: boolean
  readonly workingMs: number
  readonly starvedMs: number
  readonly blockedMs: number
  /** The output queue's mean fill (0..1) over the stretch, or null when it has no bound. */
  readonly queueFill: number | null
}

/** What the rule found. */
export interface Finding {
  readonly bottleneck: Bottleneck | null
  /** The one sentence shown on top: the bottleneck's reason, or why there is none. */
  readonly verdict: string
  readonly advice: string | null
}

/** What the advice needs to know of the process. */
export interface RunContext {
  /** The share of the stretch the event loop was busy, or null when unknown. */
  readonly eventLoopBusy: number | null
  readonly cores: number
}

interface Shares {
  readonly working: number
  readonly starved: number
  readonly blocked: number
  readonly total: number
}

function shares(s: StageTime): Shares {
  const total = s.workingMs + s.starvedMs + s.blockedMs
  if (!(total > 0)) return { working: 0, starved: 0, blocked: 0, total: 0 }
  return { working: s.workingMs / total, starved: s.starvedMs / total, blocked: s.blockedMs / total, total }
}

/** `0.974` as `97%`. */
export function percent(x: number): string {
  return `${Math.round(x * 100)}%`
}

/** Applies the bottleneck rule to `stages` (in pipeline order). */
export function findBottleneck(stages: readonly StageTime[], context: RunContext): Finding {
  if (stages.length === 0) {
    return {
      bottleneck: null,
      verdict: 'The pipeline has no stages: the items of the source went straight to the consumer.',
      advice: null,
    }
  }
  const sh = stages.map(shares)
  if (sh.every((s) => s.total === 0)) {
    return { bottleneck: null, verdict: 'No worker time was recorded yet: too soon to judge.', advice: null }
  }
  const last = stages.length - 1
  let best = -1
  for (let i = 0; i <= last; i++) {
    const s = sh[i]!
    if (s.total === 0 || s.working < BUSY) continue
    const fed = i === 0 ? s.starved <= KEPT_UP : sh[i - 1]!.blocked >= WAITED
    const drained = i === last ? s.blocked <= KEPT_UP : sh[i + 1]!.starved >= WAITED
    if (fed && drained && (best < 0 || s.working > sh[best]!.working)) best = i
  }
  if (best >= 0) {
    const s = stages[best]!
    const upstream =
      best === 0
        ? `the source kept it fed (it waited for input ${percent(sh[0]!.starved)})`
        : `${stages[best - 1]!.name} waited for room ${percent(sh[best - 1]!.blocked)}`
    const downstream =
      best === last
        ? `the consumer kept up (it waited for room ${percent(sh[last]!.blocked)})`
        : `${stages[best + 1]!.name} waited for input ${percent(sh[best + 1]!.starved)}`
    const reason = `${s.name} is the bottleneck: its workers were busy ${percent(sh[best]!.working)} of the time, while ${upstream} and ${downstream}`
    return { bottleneck: { stage: s.name, index: best, reason }, verdict: reason, advice: advise(s, context) }
  }
  const first = sh[0]!
  const end = sh[last]!
  if (first.starved >= WAITED && first.starved >= end.blocked) {
    return {
      bottleneck: null,
      verdict: `The source is the limit: ${stages[0]!.name} waited for input ${percent(first.starved)} of the time, and no stage held the run back`,
      advice:
        'Make the source faster: read bigger pages or batches per request, or read several sources at once and merge() them; more workers downstream would only wait longer.',
    }
  }
  if (end.blocked >= WAITED) {
    const fill = stages[last]!.queueFill
    const queue =
      fill === null
        ? ''
        : fill >= 0.5
          ? ` and its output queue stayed full (${percent(fill)} on average)`
          : ` (its output queue ${percent(fill)} full on average)`
    return {
      bottleneck: null,
      verdict: `The consumer is the limit: ${stages[last]!.name} waited for room ${percent(end.blocked)} of the time${queue}, so the code reading the results holds the run back`,
      advice:
        'Make the code that reads the results faster, or move its slow part into a stage of its own with workers of its own.',
    }
  }
  let busiest = 0
  for (let i = 1; i <= last; i++) if (sh[i]!.working > sh[busiest]!.working) busiest = i
  return {
    bottleneck: null,
    verdict: `No stage holds the run back: the stages are balanced (the busiest, ${stages[busiest]!.name}, was busy ${percent(sh[busiest]!.working)} of the time)`,
    advice: null,
  }
}

/** What to change about the bottleneck stage `s`, fitted to what it is. */
export function advise(s: StageTime, context: RunContext): string {
  const units = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`
  if (s.rateLimited) {
    return `Nothing to add to ${s.name}: its rate limit sets the pace, and more workers would only wait for their turn; raise the rate if the service behind it allows.`
  }
  if (s.limited) {
    return `Nothing to add to ${s.name}: its shared \`limit\` caps how many items run at once, and more workers would only wait for a slot; raise the limit if what it protects allows.`
  }
  if (s.kind === 'threadStage') {
    return s.workers < context.cores
      ? `${s.name} runs on ${units(s.workers, 'thread', 'threads')} and this machine has ${context.cores} cores: give it more threads.`
      : `${s.name} already has a thread per core (${s.workers}): make each item cheaper, or spread the work over more machines with stageline/redis.`
  }
  if (s.kind === 'redisStage') {
    return `${s.name} is served by other processes: start more of them, or raise its \`capacity\` (now ${s.workers}).`
  }
  const busy = context.eventLoopBusy
  if (busy !== null && busy >= CPU_BOUND) {
    return `The event loop was busy ${percent(busy)} of the time, so the work of ${s.name} is CPU on the main thread: move it to a thread stage (threadStage); more workers would take turns on the same thread.`
  }
  return `The workers of ${s.name} spend their time waiting on I/O (the event loop was ${busy === null ? 'not measured' : `busy only ${percent(busy)} of the time`}): give it more workers than its ${s.workers}.`
}

/**
 * `merge()`: one source made of several, read concurrently and on demand.
 * @module
 */
import {
  closeQuietly,
  isAsyncIterable,
  isIterable,
  isThenable,
  iteratorResult,
  openIterator,
} from './_utils.js'
import { Channel } from './channel/bounded.js'
import { DONE, EMPTY } from './channel/inlet.js'
import { Waiter } from './channel/waiter.js'
import { got } from './options/check.js'

/**
 * One source made of several, read concurrently and on demand (pypeln's concat): items come out
 * as each source yields them. Ends when all have ended; fails as soon as one fails, closing the
 * others; closing the merged iterator closes them all.
 *
 * @example
 * ```ts
 * import { merge, mapStage, pipe } from 'stageline'
 * async function* remote() { yield 'r1'; yield 'r2' }
 * await pipe(merge(['l1', 'l2'], remote()), mapStage((s: string) => s.toUpperCase())).toArray()
 * // the four items, interleaved
 * ```
 */
export function merge<T>(...sources: (Iterable<T> | AsyncIterable<T>)[]): AsyncIterable<T> {
  for (let i = 0; i < sources.length; i++) {
    if (!isIterable(sources[i]) && !isAsyncIterable(sources[i])) {
      throw new TypeError(
        `merge(): expected source ${i + 1} to be an Iterable or AsyncIterable, got ${got(sources[i])}`,
      )
    }
  }
  return { [Symbol.asyncIterator]: () => new MergeIterator<T>(sources) }
}

class MergeIterator<T> implements AsyncIterator<T> {
  private readonly ch = new Channel<T>(0)
  private readonly w = new Waiter()
  private readonly its: (Iterator<T> | AsyncIterator<T>)[] = []
  private started = false
  private stopped = false
  private live = 0
  private error: { err: unknown } | undefined

  constructor(private readonly sources: (Iterable<T> | AsyncIterable<T>)[]) {}

  async next(): Promise<IteratorResult<T>> {
    if (!this.started) this.start()
    let x = this.ch.poll(this.w)
    if (x === EMPTY) {
      await this.ch.wait(this.w)
      x = this.w.item as T | typeof DONE
      this.w.item = undefined
    }
    if (x === DONE) {
      if (this.error !== undefined) {
        const { err } = this.error
        this.error = undefined
        throw err
      }
      return { value: undefined, done: true }
    }
    return { value: x as T, done: false }
  }

  async return(): Promise<IteratorResult<T>> {
    this.stop()
    return { value: undefined, done: true }
  }

  private start(): void {
    this.started = true
    this.live = this.sources.length
    if (this.live === 0) this.ch.close()
    for (let i = 0; i < this.sources.length; i++) {
      const { it } = openIterator(this.sources[i]!, `merge()'s source ${i + 1}: its`)
      this.its.push(it as Iterator<T> | AsyncIterator<T>)
      void this.pump(it as Iterator<T> | AsyncIterator<T>)
    }
  }

  private stop(): void {
    if (this.stopped) return
    this.stopped = true
    this.ch.abort()
    for (const it of this.its) closeQuietly(it)
  }

  private async pump(it: Iterator<T> | AsyncIterator<T>): Promise<void> {
    const w = new Waiter()
    try {
      for (;;) {
        let r = it.next()
        if (isThenable(r)) r = await r
        if (this.stopped) return
        if (iteratorResult(r).done) break
        if (!this.ch.offer(r.value)) {
          await this.ch.put(w, r.value)
          if (this.stopped) return
        }
      }
    } catch (err) {
      if (this.stopped) return
      this.error = { err }
      this.stopped = true
      for (const other of this.its) if (other !== it) closeQuietly(other)
      this.ch.abort()
      return
    }
    if (--this.live === 0) this.ch.close()
  }
}

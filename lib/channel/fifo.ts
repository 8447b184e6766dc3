/**
 * A FIFO ring buffer that grows by doubling: the storage of every channel and of its parked parties.
 * @module
 */
export class Fifo<T> {
  private buf: (T | undefined)[]
  private head = 0
  private mask: number
  length = 0

  constructor(initial = 16) {
    let size = 16
    while (size < initial) size *= 2
    this.buf = new Array(size)
    this.mask = size - 1
  }

  push(x: T): void {
    if (this.length === this.buf.length) this.grow()
    this.buf[(this.head + this.length) & this.mask] = x
    this.length++
  }

  shift(): T {
    const x = this.buf[this.head] as T
    this.buf[this.head] = undefined
    this.head = (this.head + 1) & this.mask
    this.length--
    return x
  }

  /** The first item, without removing it (undefined when empty). */
  peek(): T | undefined {
    return this.length > 0 ? this.buf[this.head] : undefined
  }

  /** Removes `x` if present (a linear scan: for the rare cancel of a parked waiter). */
  remove(x: T): boolean {
    for (let i = 0; i < this.length; i++) {
      if (this.buf[(this.head + i) & this.mask] === x) {
        for (let j = i; j < this.length - 1; j++) {
          this.buf[(this.head + j) & this.mask] = this.buf[(this.head + j + 1) & this.mask]
        }
        this.buf[(this.head + this.length - 1) & this.mask] = undefined
        this.length--
        return true
      }
    }
    return false
  }

  clear(): void {
    this.buf.fill(undefined)
    this.head = 0
    this.length = 0
  }

  private grow(): void {
    const old = this.buf
    const next = new Array<T | undefined>(old.length * 2)
    for (let i = 0; i < this.length; i++) next[i] = old[(this.head + i) & this.mask]
    this.buf = next
    this.head = 0
    this.mask = next.length - 1
  }
}

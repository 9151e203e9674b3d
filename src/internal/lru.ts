/**
 * A bounded map that forgets its least recently written entries: the one
 * bounded LRU of the library (the departed set, the newest generation
 * remembered of departed peers). Writing a key moves it to the newest end;
 * reading does not. Plain data, no effects.
 * @internal
 */

export class BoundedLru<K, V> {
  readonly #entries = new Map<K, V>()
  readonly capacity: number

  constructor(capacity: number) {
    this.capacity = capacity
  }

  get size(): number {
    return this.#entries.size
  }

  get(key: K): V | undefined {
    return this.#entries.get(key)
  }

  has(key: K): boolean {
    return this.#entries.has(key)
  }

  /** Writes `key` as the newest entry, then forgets the oldest ones above the capacity. */
  set(key: K, value: V): void {
    this.#entries.delete(key)
    this.#entries.set(key, value)
    while (this.#entries.size > this.capacity) this.#entries.delete(this.#entries.keys().next().value as K)
  }

  delete(key: K): boolean {
    return this.#entries.delete(key)
  }

  keys(): IterableIterator<K> {
    return this.#entries.keys()
  }
}

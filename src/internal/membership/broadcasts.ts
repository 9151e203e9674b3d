/**
 * The queue of membership changes waiting to be gossiped, with a bounded
 * number of retransmissions each (memberlist's `TransmitLimitedQueue`).
 *
 * Every change is keyed by the member it is about: queueing a newer change
 * of a member replaces the older one, which is never sent again (memberlist's
 * `NamedBroadcast`: the caller says what supersedes what, the queue does not
 * look inside). Each `take` picks the changes sent the fewest times first
 * (the newest among equals), as many as fit in the byte budget, and counts
 * one transmission for each; a change is dropped once it has been sent
 * `limit(n)` times, `multiplier × ⌈log10(n + 1)⌉` for a cluster of `n`
 * members (memberlist's `retransmitLimit`), so that the traffic a change
 * causes grows with the logarithm of the cluster, not with its size.
 *
 * Pure and deterministic: no clock, no randomness.
 * @internal
 */

/** How many times a change is sent in a cluster of `members` nodes: `multiplier × ⌈log10(members + 1)⌉`. */
export const retransmitLimit = (multiplier: number, members: number): number =>
  multiplier * Math.max(1, Math.ceil(Math.log10(members + 1)))

interface Item<A> {
  readonly key: string
  readonly value: A
  readonly size: number
  /** Insertion order: among changes sent equally often, the newest goes first. */
  readonly order: number
  transmits: number
}

/** A queue of changes, each sent at most `retransmitLimit` times. */
export interface Broadcasts<A> {
  /** Queues `value` about `key`, replacing a queued change about the same key; `size` is its encoded size. */
  readonly queue: (key: string, value: A, size: number) => void
  /**
   * The changes for one frame: the least sent first, while their sizes fit in `budget` (at least one is
   * taken when any is queued); `members` is the cluster's size, for the retransmission limit.
   */
  readonly take: (budget: number, members: number) => Array<A>
  /** Drops the queued change about `key`, if any. */
  readonly drop: (key: string) => void
  /** How many changes are queued. */
  readonly size: () => number
}

/** An empty queue; `multiplier` is memberlist's `RetransmitMult` (4 there). */
export const make = <A>(multiplier: number): Broadcasts<A> => {
  const items = new Map<string, Item<A>>()
  let order = 0
  return {
    queue: (key, value, size) => {
      items.set(key, { key, value, size, order: order++, transmits: 0 })
    },
    take: (budget, members) => {
      if (items.size === 0) return []
      const limit = retransmitLimit(multiplier, members)
      const sorted = [...items.values()].sort((a, b) => a.transmits - b.transmits || b.order - a.order)
      const out: Array<A> = []
      let used = 0
      for (const item of sorted) {
        if (out.length > 0 && used + item.size > budget) continue
        used += item.size
        out.push(item.value)
        item.transmits++
        if (item.transmits >= limit) items.delete(item.key)
      }
      return out
    },
    drop: (key) => {
      items.delete(key)
    },
    size: () => items.size
  }
}

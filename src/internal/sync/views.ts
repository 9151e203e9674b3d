/**
 * The view map a node publishes for one state, copied only when it must be:
 * until the published map has been given out (to a query function, a
 * snapshot, a subscriber, an observer), the next publication edits it in
 * place; once given out, the next edit works on a copy. Alongside, the
 * freshness summary that makes a bounded query's fast path O(1): the oldest
 * `syncedAt` of a peer's view and how many views wait for an announced
 * generation. Plain data, no effects.
 * @internal
 */
import type { NodeId } from "../../NodeId.ts"
import type { StateView, ViewMap } from "../../StateView.ts"

export class Views<V> {
  #map: Map<NodeId, StateView<V>>
  /** Whether the current map may be held outside the core (the next edit then copies it). */
  handedOut: boolean
  /** Once the map's changes are subscribed to, every published map is given out. */
  subscribed: boolean
  /** The oldest `syncedAt` among peers' views (`+Infinity` without peers). */
  oldestPeerSync = Number.POSITIVE_INFINITY
  /** Peers' views with a change-feed generation not pulled yet. */
  pendingPeers = 0
  readonly #self: NodeId

  constructor(self: NodeId, local: StateView<V>, given: boolean) {
    this.#self = self
    this.#map = new Map([[self, local]])
    this.handedOut = given
    this.subscribed = given
  }

  /** The current map, for reading inside the core (not to be kept). */
  get current(): ViewMap<V> {
    return this.#map
  }

  /** The current map, given out: it will never change. */
  handOut(): ViewMap<V> {
    this.handedOut = true
    return this.#map
  }

  get(node: NodeId): StateView<V> | undefined {
    return this.#map.get(node)
  }

  has(node: NodeId): boolean {
    return this.#map.has(node)
  }

  /** The map to edit for the next publication (a copy when the current one was given out). */
  #editable(): Map<NodeId, StateView<V>> {
    if (this.handedOut) {
      this.#map = new Map(this.#map)
      this.handedOut = false
    }
    return this.#map
  }

  set(node: NodeId, entry: StateView<V>): void {
    this.#editable().set(node, entry)
  }

  delete(node: NodeId): boolean {
    if (!this.#map.has(node)) return false
    this.#editable().delete(node)
    return true
  }

  /** Recomputes the freshness summary after peers' entries changed. */
  summarize(): void {
    let oldest = Number.POSITIVE_INFINITY
    let pending = 0
    for (const entry of this.#map.values()) {
      if (entry.source === this.#self) continue
      if (entry.syncedAt < oldest) oldest = entry.syncedAt
      if (entry.pendingRemote !== undefined) pending++
    }
    this.oldestPeerSync = oldest
    this.pendingPeers = pending
  }

  /** Marks the current map as published: subscribers then hold it. */
  published(): ViewMap<V> {
    const map = this.#map
    this.handedOut = this.subscribed
    return map
  }

  /** Peers' views older than `maxStaleness` at `now`, or waiting for an announced generation. */
  staleAt(now: number, maxStaleness: number): Array<StateView<V>> {
    const stale: Array<StateView<V>> = []
    for (const entry of this.#map.values()) {
      if (entry.source === this.#self) continue
      if (entry.pendingRemote !== undefined || now - entry.syncedAt > maxStaleness) stale.push(entry)
    }
    return stale
  }
}

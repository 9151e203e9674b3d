/**
 * The view map a node publishes for one state, copied only when it must be:
 * until the published map has been given out (to a query function, a
 * snapshot, a subscriber, an observer), the next publication edits it in
 * place; once given out, the next edit works on a copy. Alongside, the
 * freshness summary of a bounded query's fast path: the oldest `syncedAt`
 * of a peer's view and how many views wait for an announced generation,
 * computed when read after a change (a change costs O(1) in a cluster of any
 * size; a query after changes pays one pass). Plain data, no effects.
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
  #oldestPeerSync = Number.POSITIVE_INFINITY
  #pendingPeers = 0
  /** Whether entries changed since the summary was computed. */
  #stale = false
  /** Owners whose entry was added since `takeAdded` last ran. */
  #added: Array<NodeId> = []
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
    const map = this.#editable()
    if (!map.has(node)) this.#added.push(node)
    map.set(node, entry)
    this.#stale = true
  }

  delete(node: NodeId): boolean {
    if (!this.#map.has(node)) return false
    this.#editable().delete(node)
    this.#stale = true
    return true
  }

  /** The owners whose entry was added since the last call (each once per addition). */
  takeAdded(): ReadonlyArray<NodeId> {
    const added = this.#added
    if (added.length > 0) this.#added = []
    return added
  }

  /** The oldest `syncedAt` among peers' views (`+Infinity` without peers). */
  get oldestPeerSync(): number {
    if (this.#stale) this.#summarize()
    return this.#oldestPeerSync
  }

  /** Peers' views with a change-feed generation not pulled yet. */
  get pendingPeers(): number {
    if (this.#stale) this.#summarize()
    return this.#pendingPeers
  }

  #summarize(): void {
    let oldest = Number.POSITIVE_INFINITY
    let pending = 0
    for (const entry of this.#map.values()) {
      if (entry.source === this.#self) continue
      if (entry.syncedAt < oldest) oldest = entry.syncedAt
      if (entry.pendingRemote !== undefined) pending++
    }
    this.#oldestPeerSync = oldest
    this.#pendingPeers = pending
    this.#stale = false
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

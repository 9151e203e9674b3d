/**
 * Sync status of the peers of one state: gaps, consecutive failures, the
 * last sync and attempt, the last error and pull latency, and when a
 * snapshot request or a stale hint last went out (both rate-limited to one
 * per pull timeout). Only a peer that had anything but accepted messages has
 * an entry: a peer whose every message was accepted is described by its
 * view's `syncedAt`, which saves an object per replicated view. Plain data.
 * @internal
 */
import type { PeerSyncStatus } from "../../Diagnostics.ts"
import type { Generation } from "../../Generation.ts"
import type { NodeId } from "../../NodeId.ts"
import type { StateView } from "../../StateView.ts"
import type { Views } from "./views.ts"

export interface PeerStatus {
  gapCount: number
  consecutiveFailures: number
  lastSyncAt: number | undefined
  lastAttemptAt: number | undefined
  lastError: string | undefined
  lastSyncLatencyMillis: number | undefined
  lastSnapshotRequestAt: number | undefined
  lastHintAt: number | undefined
}

/** The status a peer without an entry has: everything it sent was accepted, last at its view's `syncedAt`. */
export const derived = (held: StateView<unknown> | undefined): PeerStatus => ({
  gapCount: 0,
  consecutiveFailures: 0,
  lastSyncAt: held?.syncedAt,
  lastAttemptAt: held?.syncedAt,
  lastError: undefined,
  lastSyncLatencyMillis: undefined,
  lastSnapshotRequestAt: undefined,
  lastHintAt: undefined
})

export class Peers<V> {
  readonly #entries = new Map<NodeId, PeerStatus>()
  readonly #views: Views<V>

  constructor(views: Views<V>) {
    this.#views = views
  }

  /** A peer's entry, created from its view's times when it has none yet. */
  status(node: NodeId): PeerStatus {
    let status = this.#entries.get(node)
    if (status === undefined) {
      status = derived(this.#views.get(node))
      this.#entries.set(node, status)
    }
    return status
  }

  /** The entry, if the peer has one. */
  entry(node: NodeId): PeerStatus | undefined {
    return this.#entries.get(node)
  }

  forget(node: NodeId): void {
    this.#entries.delete(node)
  }

  /** An attempt that did not end in an accepted view. */
  attempted(node: NodeId, now: number): PeerStatus {
    const status = this.status(node)
    status.lastAttemptAt = now
    return status
  }

  /** An accepted message: an entry is kept current; without one the view's `syncedAt` says it all. */
  synced(node: NodeId, now: number, clearRequest: boolean): void {
    const status = this.#entries.get(node)
    if (status === undefined) return
    status.lastAttemptAt = now
    status.lastSyncAt = now
    status.consecutiveFailures = 0
    if (clearRequest) status.lastSnapshotRequestAt = undefined
  }

  failed(node: NodeId, message: string): void {
    const status = this.status(node)
    status.consecutiveFailures++
    status.lastError = message
  }

  /** Whether a snapshot request to `node` may go out at `now` (one per `interval`); records it when so. */
  mayRequest(node: NodeId, now: number, interval: number): boolean {
    const status = this.status(node)
    if (status.lastSnapshotRequestAt !== undefined && now - status.lastSnapshotRequestAt < interval) return false
    status.lastSnapshotRequestAt = now
    return true
  }

  /** Whether a stale hint to `node` may go out at `now` (one per `interval`); records it when so. */
  mayHint(node: NodeId, now: number, interval: number): boolean {
    const status = this.status(node)
    if (status.lastHintAt !== undefined && now - status.lastHintAt < interval) return false
    status.lastHintAt = now
    return true
  }

  /** The public status of every peer whose view is held. */
  report(localGeneration: Generation, self: NodeId): Array<PeerSyncStatus> {
    const map = this.#views.current
    const out: Array<PeerSyncStatus> = []
    for (const [node, held] of map) {
      if (node === self) continue
      const status = this.#entries.get(node) ?? derived(held)
      out.push({
        node,
        localAge: localGeneration.age,
        remoteAge: held.generation.age,
        remoteIncarnation: held.generation.incarnation,
        gapCount: status.gapCount,
        consecutiveFailures: status.consecutiveFailures,
        lastSyncAt: status.lastSyncAt,
        lastAttemptAt: status.lastAttemptAt,
        lastError: status.lastError,
        lastSyncLatencyMillis: status.lastSyncLatencyMillis
      })
    }
    return out
  }
}

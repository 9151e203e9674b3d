/**
 * Diagnostics of replication: per-peer sync status, per-state counters and
 * the health of every registered state.
 *
 * @since 0.1.0
 */
import type { NodeId } from "./NodeId.ts"
import type { ViewMap } from "./StateView.ts"

/**
 * How replication from one peer is going, as seen by this node.
 *
 * @category models
 * @since 0.1.0
 */
export interface PeerSyncStatus {
  readonly node: NodeId
  /** This node's own age for the state. */
  readonly localAge: number
  /** The age of the peer's view held here (`undefined` before the first sync). */
  readonly remoteAge: number | undefined
  /** The incarnation of the peer's view held here. */
  readonly remoteIncarnation: number | undefined
  /** Gaps detected in the peer's delta stream. */
  readonly gapCount: number
  /** Failed syncs (pulls, undecodable payloads) since the last success. */
  readonly consecutiveFailures: number
  /** Monotonic ms of the last successful sync. */
  readonly lastSyncAt: number | undefined
  /** Monotonic ms of the last sync attempt (inbound message or pull). */
  readonly lastAttemptAt: number | undefined
  /** The last error, rendered. */
  readonly lastError: string | undefined
  /** Milliseconds the last pull took. */
  readonly lastSyncLatencyMillis: number | undefined
}

/**
 * Counters of one state on one node.
 *
 * @category models
 * @since 0.1.0
 */
export interface StateSyncMetrics {
  readonly mutations: number
  readonly snapshotsSent: number
  readonly snapshotsReceived: number
  readonly deltasSent: number
  readonly deltasReceived: number
  readonly snapshotRequestsSent: number
  readonly snapshotRequestsReceived: number
  /** Inbound snapshots or deltas at or below the generation held (duplicates and stale copies). */
  readonly staleDiscarded: number
  readonly gapsDetected: number
  /** Messages from a departed incarnation, ignored. */
  readonly departedIgnored: number
  /** Payloads that did not decode against the state's schemas. */
  readonly malformedReceived: number
  /** Payloads in a wire version this node cannot read. */
  readonly unsupportedVersion: number
  /** Inbound messages dropped because the shard's mailbox was full. */
  readonly mailboxDropped: number
  /** Change-feed notices that marked a view as pending. */
  readonly noticesReceived: number
  /** Pulls started by queries (concurrent queries share one). */
  readonly pulls: number
  /** Failed pulls, undecodable or unsupported payloads. */
  readonly syncFailures: number
  /** Mutations whose urgency was `Suppress`. */
  readonly suppressed: number
  /** Mutations whose urgency was `Immediate`. */
  readonly immediate: number
  /** Mutations whose urgency was `Delayed`. */
  readonly delayed: number
  /** Periodic full syncs that sent a snapshot (ticks with no change send nothing and are not counted). */
  readonly periodicSyncs: number
  /** Mutations not committed because the save covering them failed. */
  readonly persistenceFailures: number
}

/**
 * Counters of frames that reached this node but no state: rejected frames by
 * reason, and messages for states not registered here.
 *
 * @category models
 * @since 0.1.0
 */
export interface InboundMetrics {
  readonly framesReceived: number
  readonly framesRejected: number
  readonly malformed: number
  readonly tooLarge: number
  /** Messages or change-feed notices naming a state not registered here. */
  readonly unknownState: number
  readonly feedBatchesSent: number
  readonly feedNoticesSent: number
  readonly feedBatchesReceived: number
}

/**
 * @category models
 * @since 0.1.0
 */
export type HealthStatus = "Healthy" | "Degraded" | "Unhealthy"

/**
 * The health of one state on this node.
 *
 * @category models
 * @since 0.1.0
 */
export interface StateHealth {
  readonly stateName: string
  readonly status: HealthStatus
  readonly peers: number
  readonly freshPeers: number
  readonly stalePeers: number
  readonly failingPeers: number
}

/**
 * The health of every registered state; `status` is the worst of them.
 *
 * @category models
 * @since 0.1.0
 */
export interface SystemHealth {
  readonly status: HealthStatus
  readonly states: ReadonlyArray<StateHealth>
}

/**
 * The size of a state's departed set and of the generations remembered of
 * departed peers, with the bound of both (`departedCapacity`).
 *
 * @category testing
 * @since 0.1.0
 */
export interface DepartedSizes {
  readonly departed: number
  readonly remembered: number
  readonly capacity: number
}

/**
 * Sees every published view map and every rejected inbound frame of a node,
 * synchronously, from inside the state actors (simulation checkers; see
 * `StateRegistry.Observer`). Not for application use.
 *
 * @category testing
 * @since 0.1.0
 */
export interface Observer {
  readonly onViews: (stateName: string, node: NodeId, views: ViewMap<unknown>) => void
  readonly onRejectedFrame: (node: NodeId, from: NodeId, error: { readonly _tag: string; readonly message: string }) => void
  /** After the departed set (and the newest generation remembered per departed peer) changed, with their cap. */
  readonly onDeparted?: ((stateName: string, node: NodeId, sizes: DepartedSizes) => void) | undefined
}

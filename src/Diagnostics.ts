/**
 * Diagnostics of replication: per-peer sync status, per-state counters, the
 * health of every registered state, and what operations endpoints report:
 * liveness (every state actor answers), readiness (the initial exchange is
 * done and the store accepts saves) and the status of each state (views
 * held, staleness, sync status, counters).
 *
 * @since 0.1.0
 */
import type { Generation } from "./Generation.ts"
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
  /** Acknowledgement requests sent for awaited mutations, one per awaited peer. */
  readonly ackRequestsSent: number
  /** Acknowledgements sent to owners (one per owner per turn, covering every generation up to it). */
  readonly acksSent: number
  /** Acknowledgements received from peers of this node's state. */
  readonly acksReceived: number
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
 * Whether one state on this node is ready: no member's view is awaited (the
 * join exchange with every current member of the state is done) and its last
 * save did not fail.
 *
 * @category models
 * @since 0.1.0
 */
export interface StateReadiness {
  readonly stateName: string
  /** Members of the state whose view has not arrived yet (sorted). */
  readonly awaiting: ReadonlyArray<NodeId>
  /** The error of the last save, while the last save failed (cleared by the next successful one). */
  readonly lastSaveFailure: string | undefined
}

/**
 * Whether this node is ready to serve: it is not shutting down, at least one
 * state is registered, and every state is ready (see `StateReadiness`).
 * `reasons` says what is missing, one line each, empty when ready.
 *
 * @category models
 * @since 0.1.0
 */
export interface Readiness {
  readonly ready: boolean
  readonly reasons: ReadonlyArray<string>
  readonly states: ReadonlyArray<StateReadiness>
}

/**
 * Whether this node's machinery runs: the registry is not shutting down and
 * every state actor handled a probe in time. `failing` names the states
 * whose actor did not (stopped, or busy past the timeout).
 *
 * @category models
 * @since 0.1.0
 */
export interface Liveness {
  readonly alive: boolean
  readonly shuttingDown: boolean
  readonly failing: ReadonlyArray<string>
}

/**
 * One view a node holds of a state, as an operator sees it.
 *
 * @category models
 * @since 0.1.0
 */
export interface ViewStatus {
  /** The owner of the view. */
  readonly node: NodeId
  /** The owner's generation held here. */
  readonly generation: Generation
  /** The wire version the view arrived in. */
  readonly wireVersion: number
  /** Milliseconds since the view was last synced (0 for this node's own view). */
  readonly stalenessMillis: number
  /** A newer generation announced by the change feed and not pulled yet. */
  readonly pendingRemote: Generation | undefined
  /**
   * Since when (this node's wall-clock ms) the owner is unreachable (`StateView.unreachableSince`).
   * @since 0.2.0
   */
  readonly unreachableSince?: number | undefined
}

/**
 * Everything one node reports of one state: its own generation, the views it
 * holds, the members awaited, per-peer sync status and the counters.
 *
 * @category models
 * @since 0.1.0
 */
export interface StateStatus {
  readonly stateName: string
  /** This node's own generation of the state. */
  readonly generation: Generation
  /** Every view held, this node's own included, sorted by owner. */
  readonly views: ReadonlyArray<ViewStatus>
  /** Members whose view has not arrived yet. */
  readonly awaiting: ReadonlyArray<NodeId>
  readonly syncStatus: ReadonlyArray<PeerSyncStatus>
  readonly metrics: StateSyncMetrics
  /** The error of the last save, while the last save failed. */
  readonly lastSaveFailure: string | undefined
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

/**
 * Every metric dstate reports, as Effect `Metric`s: the counters of each
 * state, of the registry's inbound door and of the TCP transport, gauges
 * for mailbox depth, outbound queue bytes per peer and members, the
 * WebSocket endpoint's counters and open connections (`dstate/web`), and
 * histograms for save latency and mutate-to-publish time. Series carry the
 * labels `state`, `node` and `peer` where they apply. They live in the
 * fiber's `Metric.MetricRegistry`, so any Effect metrics exporter (for
 * example `PrometheusMetrics` of `effect/observability`) sees them;
 * `handle.metrics`, `StateRegistry.inboundMetrics` and `TcpTransport.stats`
 * read the same series.
 *
 * Counters and gauges are registered series whose value dstate keeps
 * (`Metric.registerUnsafe`): an increment on a hot path is one addition, and
 * a state or node that stops removes its series. A node that restarts in the
 * same process starts its series again from zero.
 *
 * @since 0.1.0
 */
import { Metric } from "effect"

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

/**
 * The counters of one state on one node (labels `state`, `node`), as
 * `StateSyncMetrics` reads them.
 *
 * @category metrics
 * @since 0.1.0
 */
export const state = {
  mutations: counter("dstate_mutations", "Mutations committed (persisted when the state persists)."),
  snapshotsSent: counter("dstate_snapshots_sent", "Snapshots sent, one per receiving peer."),
  snapshotsReceived: counter("dstate_snapshots_received", "Snapshots accepted from peers."),
  deltasSent: counter("dstate_deltas_sent", "Deltas sent, one per receiving peer."),
  deltasReceived: counter("dstate_deltas_received", "Deltas applied from peers."),
  snapshotRequestsSent: counter("dstate_snapshot_requests_sent", "Snapshot requests sent: join exchange, gaps, stale hints, resyncs."),
  snapshotRequestsReceived: counter("dstate_snapshot_requests_received", "Snapshot requests answered."),
  staleDiscarded: counter("dstate_stale_discarded", "Inbound snapshots or deltas at or below the generation held (duplicates and stale copies)."),
  gapsDetected: counter("dstate_gaps_detected", "Deltas that did not follow the view held (a snapshot was requested)."),
  departedIgnored: counter("dstate_departed_ignored", "Messages from a departed incarnation, ignored."),
  malformedReceived: counter("dstate_malformed_received", "Payloads that did not decode against the state's schemas."),
  unsupportedVersion: counter("dstate_unsupported_version", "Payloads in a wire version this node cannot read."),
  mailboxDropped: counter("dstate_mailbox_dropped", "Inbound messages dropped because the shard's mailbox was full."),
  noticesReceived: counter("dstate_notices_received", "Change-feed notices that marked a view as pending."),
  pulls: counter("dstate_pulls", "Pulls started by queries (concurrent queries share one)."),
  syncFailures: counter("dstate_sync_failures", "Failed pulls, undecodable or unsupported payloads."),
  suppressed: counter("dstate_suppressed", "Mutations whose urgency was Suppress."),
  immediate: counter("dstate_immediate", "Mutations whose urgency was Immediate."),
  delayed: counter("dstate_delayed", "Mutations whose urgency was Delayed."),
  periodicSyncs: counter("dstate_periodic_syncs", "Periodic full syncs that sent a snapshot (ticks with no change send nothing and are not counted)."),
  persistenceFailures: counter("dstate_persistence_failures", "Mutations not committed because the save covering them failed."),
  ackRequestsSent: counter("dstate_ack_requests_sent", "Acknowledgement requests sent for awaited mutations, one per awaited peer."),
  acksSent: counter("dstate_acks_sent", "Acknowledgements sent to owners (one per owner per turn, covering every generation up to it)."),
  acksReceived: counter("dstate_acks_received", "Acknowledgements received from peers of this node's state.")
}

/**
 * The counters of the registry's door for inbound frames (label `node`), as
 * `InboundMetrics` reads them.
 *
 * @category metrics
 * @since 0.1.0
 */
export const inbound = {
  framesReceived: counter("dstate_inbound_frames_received", "Inbound frames handed to the registry (messages, requests, pull replies)."),
  framesRejected: counter("dstate_inbound_frames_rejected", "Inbound frames rejected before reaching a state (malformed or too large)."),
  malformed: counter("dstate_inbound_malformed", "Inbound frames rejected as malformed (length, version, checksum, encoding, claimed source)."),
  tooLarge: counter("dstate_inbound_too_large", "Inbound frames rejected as larger than the frame limit."),
  unknownState: counter("dstate_inbound_unknown_state", "Messages or change-feed notices naming a state not registered here."),
  feedBatchesSent: counter("dstate_inbound_feed_batches_sent", "Change-feed batches sent."),
  feedNoticesSent: counter("dstate_inbound_feed_notices_sent", "Change-feed notices sent (in batches)."),
  feedBatchesReceived: counter("dstate_inbound_feed_batches_received", "Change-feed batches received from peers.")
}

/**
 * The counters of the TCP transport of `dstate/node` (label `node`), as
 * `TcpTransport.stats` reads them.
 *
 * @category metrics
 * @since 0.1.0
 */
export const transport = {
  connectionsAccepted: counter("dstate_transport_connections_accepted", "Connections accepted by the listener."),
  connectionsDialed: counter("dstate_transport_connections_dialed", "Connections dialed."),
  dialFailures: counter("dstate_transport_dial_failures", "Dials that failed to connect."),
  handshakesCompleted: counter("dstate_transport_handshakes_completed", "Handshakes completed (both sides authenticated)."),
  authFailures: counter("dstate_transport_auth_failures", "Handshakes whose HMAC proof did not verify, on the side that could not verify it and on a dialer whose proof was refused."),
  handshakeTimeouts: counter("dstate_transport_handshake_timeouts", "Handshakes that did not complete within handshakeTimeout."),
  handshakeIdleTimeouts: counter("dstate_transport_handshake_idle_timeouts", "Accepted connections closed because no complete first frame arrived within handshakeIdleTimeout."),
  rejectedUnauthenticated: counter("dstate_transport_rejected_unauthenticated", "Well-formed frames of a type not allowed at that point: out of handshake order before authentication, or a handshake message after it."),
  rejectedTooLarge: counter("dstate_transport_rejected_too_large", "Frames whose length prefix exceeded the limit (rejected before their body was read)."),
  rejectedMalformed: counter("dstate_transport_rejected_malformed", "Frames with a bad protocol byte, checksum or encoding."),
  rejectedPendingHandshakes: counter("dstate_transport_rejected_pending_handshakes", "Accepted connections refused because too many handshakes were already in progress (dialed ones never count)."),
  rejectedAddressLimit: counter("dstate_transport_rejected_address_limit", "Accepted connections refused because their source address already had its limit of handshakes in progress."),
  rejectedOwnId: counter("dstate_transport_rejected_own_id", "Hello frames from another process that claimed this node's own id (a duplicate id or a forgery)."),
  rejectedReplies: counter("dstate_transport_rejected_replies", "Replies whose correlation id was unknown or belonged to a request sent to another node."),
  duplicateConnections: counter("dstate_transport_duplicate_connections", "Connections closed by the one-connection-per-peer tie-break."),
  framesReceived: counter("dstate_transport_frames_received", "Frames received on authenticated connections."),
  bytesReceived: counter("dstate_transport_bytes_received", "Bytes received on authenticated connections."),
  undelivered: counter("dstate_transport_undelivered", "One-way frames that arrived while no handler was installed."),
  oversizedSends: counter("dstate_transport_oversized_sends", "Frames that could not be sent because they exceed the frame limit."),
  backpressureWaits: counter("dstate_transport_backpressure_waits", "Broadcasts of a state's delta that waited because a peer that was keeping up had its outbound queue at the backpressure mark."),
  backpressureStalls: counter("dstate_transport_backpressure_stalls", "Such waits that ended because the peer wrote nothing for stallTimeout (it is left to the queue caps and repairs its gaps with a snapshot)."),
  heartbeatsSent: counter("dstate_transport_heartbeats_sent", "Heartbeats sent."),
  heartbeatsReceived: counter("dstate_transport_heartbeats_received", "Heartbeats received."),
  nodesJoined: counter("dstate_transport_nodes_joined", "Nodes that joined (NodeJoined)."),
  nodesLeft: counter("dstate_transport_nodes_left", "Nodes that left (NodeLeft)."),
  failuresDetected: counter("dstate_transport_failures_detected", "Nodes declared down by this node after downAfter of unreachability."),
  nodesUnreachable: counter("dstate_transport_nodes_unreachable", "Members the failure detector found silent (NodeUnreachable)."),
  nodesReachable: counter("dstate_transport_nodes_reachable", "Unreachable members heard again before downAfter (NodeReachable)."),
  membershipBytesSent: counter("dstate_transport_membership_bytes_sent", "Bytes of membership frames sent: heartbeats, gossip, digests and deltas, leaves, group and member lists."),
  leavesReceived: counter("dstate_transport_leaves_received", "Graceful Leave frames received."),
  requestsSent: counter("dstate_transport_requests_sent", "Requests sent."),
  requestTimeouts: counter("dstate_transport_request_timeouts", "Requests that timed out.")
}

/**
 * The counters of the WebSocket endpoint of `dstate/web` (label `node`), as
 * `WebReplicas.stats` reads them: connections, each reason a connection was
 * refused for (before any view was sent), the browsers' messages, and what
 * the per-connection queues wrote, superseded and dropped.
 *
 * @category metrics
 * @since 0.2.0
 */
export const web = {
  connectionsAccepted: counter("dstate_web_connections_accepted", "WebSocket connections whose token was accepted."),
  connectionsClosed: counter("dstate_web_connections_closed", "Accepted WebSocket connections that ended (either side)."),
  refusedMalformed: counter("dstate_web_refused_malformed", "Connections refused: the token was not a token of this format."),
  refusedBadSignature: counter("dstate_web_refused_bad_signature", "Connections refused: the token was not signed with the endpoint's key."),
  refusedExpired: counter("dstate_web_refused_expired", "Connections refused: the token had expired."),
  refusedOutOfScope: counter("dstate_web_refused_out_of_scope", "Connections refused: the token did not allow a state asked for (or one not served), or the status."),
  refusedTooManyConnections: counter("dstate_web_refused_too_many_connections", "Connections refused at maxConnections."),
  refusedHelloTimeout: counter("dstate_web_refused_hello_timeout", "Connections closed because no hello arrived within helloTimeout."),
  refusedBadHello: counter("dstate_web_refused_bad_hello", "Connections refused: the first message was not a hello."),
  tokensExpired: counter("dstate_web_tokens_expired", "Accepted connections closed when their token expired."),
  clientMessagesRejected: counter("dstate_web_client_messages_rejected", "Browser messages after the hello that were binary, too large or undecodable (the connection is closed)."),
  pulls: counter("dstate_web_pulls", "Pulls asked by browser queries."),
  snapshotRequests: counter("dstate_web_snapshot_requests", "Snapshots asked again by browsers (gaps)."),
  framesSent: counter("dstate_web_frames_sent", "Frames written to browsers."),
  bytesSent: counter("dstate_web_bytes_sent", "Bytes written to browsers."),
  superseded: counter("dstate_web_superseded", "Queued frames dropped for a newer one of the same view (or status) before a slow browser read them (counted when its connection ends)."),
  droppedOldest: counter("dstate_web_dropped_oldest", "Queued frames dropped from the head of a browser's queue at its caps (counted when its connection ends).")
}

/**
 * The names of the WebSocket endpoint's counters.
 *
 * @category models
 * @since 0.2.0
 */
export type WebCounter = keyof typeof web

/**
 * Open WebSocket connections of browsers whose token was accepted (label
 * `node`).
 *
 * @category metrics
 * @since 0.2.0
 */
export const webConnections = Metric.gauge("dstate_web_connections", {
  description: "Open WebSocket connections of browsers whose token was accepted."
})

/**
 * The names of a state's counters.
 *
 * @category models
 * @since 0.1.0
 */
export type StateCounter = keyof typeof state

/**
 * The names of the inbound door's counters.
 *
 * @category models
 * @since 0.1.0
 */
export type InboundCounter = keyof typeof inbound

/**
 * The names of the transport's counters.
 *
 * @category models
 * @since 0.1.0
 */
export type TransportCounter = keyof typeof transport

/**
 * Data messages (mutations, inbound sync messages) waiting in a state's
 * mailbox (labels `state`, `node`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const mailboxDepth = Metric.gauge("dstate_mailbox_depth", {
  description: "Data messages (mutations, inbound sync messages) waiting in a state's mailbox."
})

/**
 * Bytes queued for one peer and not yet written (labels `node`, `peer`; TCP
 * transport).
 *
 * @category metrics
 * @since 0.1.0
 */
export const outboundQueueBytes = Metric.gauge("dstate_outbound_queue_bytes", {
  description: "Bytes queued for one peer and not yet written."
})

/**
 * Members of the cluster as this node sees them, itself included (label
 * `node`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const members = Metric.gauge("dstate_members", {
  description: "Members of the cluster as this node sees them, itself included."
})

/**
 * This node's local health score over TCP (0 healthy, up to `heartbeat.localHealth.max`; always 0 with
 * local health awareness off): its failure detector's timeouts and `downAfter` are multiplied by
 * `1 + score` (label `node`).
 *
 * @category metrics
 * @since 0.2.0
 */
export const localHealth = Metric.gauge("dstate_transport_local_health", {
  description: "Local health score: the failure detector's timeouts are multiplied by 1 + score."
})

/**
 * Bucket boundaries in milliseconds of the latency histograms: 0.05 ms to
 * about 1.6 s, doubling.
 *
 * @category metrics
 * @since 0.1.0
 */
export const latencyBoundaries: ReadonlyArray<number> = Metric.exponentialBoundaries({ start: 0.05, factor: 2, count: 16 })

/**
 * Milliseconds one save of a state took, from the call to the store until it
 * reported the record durable (labels `state`, `node`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const saveLatency = Metric.histogram("dstate_save_latency_ms", {
  description: "Milliseconds one save of a state took, until the store reported it durable.",
  boundaries: latencyBoundaries
})

/**
 * Milliseconds from a `mutate` call until its change was published locally
 * (after its save, when the state persists; labels `state`, `node`). A
 * mutation run at once in the caller's fiber without persistence is
 * published within the call and recorded as 0.
 *
 * @category metrics
 * @since 0.1.0
 */
export const mutateToPublish = Metric.histogram("dstate_mutate_to_publish_ms", {
  description: "Milliseconds from a mutate call until its change was published locally.",
  boundaries: latencyBoundaries
})

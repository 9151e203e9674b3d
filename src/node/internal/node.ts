/**
 * What the mechanisms of the TCP transport share: the settings with every
 * default applied, this node's identity and advertised address, the table of
 * peers (each with its connections, outbound queue, groups and failure
 * detector), the node-wide counters, and the failure a connection ends with.
 * The transport builds one `Node`; the handshake, membership, heartbeat,
 * dialer, connection and routing modules read and update it.
 * @internal
 */
import { Clock, type Context, type Deferred, type Duration, Effect, Result, type FiberSet, type Metric, type Redacted, type Schedule, type Scope } from "effect"
import type * as Socket from "effect/socket/Socket"
import { Buffer } from "node:buffer"
import type { makeSource } from "../../ClusterEvents.ts"
import type { TransportCounter } from "../../Metrics.ts"
import type { NodeId } from "../../NodeId.ts"
import type { Address, Limits } from "../TcpRuntime.ts"
import type * as Detector from "./detector.ts"
import type * as Outbound from "./outbound.ts"
import * as Protocol from "./protocol.ts"

export type { Address } from "../TcpRuntime.ts"

// ---- configuration ------------------------------------------------------------------------------

export interface TlsSettings {
  readonly cert: string | Uint8Array
  readonly key: Redacted.Redacted<string | Uint8Array>
  readonly ca: string | Uint8Array | undefined
  readonly mutual: boolean
  readonly verifyHostname: boolean
  readonly servername: string | undefined
}

/** Options with every default applied (the limits as `TcpRuntime.Limits` names them). */
export interface Settings extends Limits {
  readonly nodeId: NodeId
  readonly host: string
  readonly port: number
  readonly advertiseHost: string
  readonly seeds: ReadonlyArray<Address>
  /** The bytes of the cluster secrets, the current one first (replaced by `TcpTransport.setSecret`). */
  readonly keys: { current: ReadonlyArray<Uint8Array> }
  readonly tls: TlsSettings | undefined
  readonly heartbeatInterval: Duration.Duration
  readonly detectorCheckInterval: Duration.Duration
  readonly detector: Detector.DetectorSettings
  /** How long a member stays unreachable before this node declares it down. */
  readonly downAfter: Duration.Duration
  /** The bound of the local health score (Lifeguard), or `undefined` when local health awareness is off. */
  readonly localHealthMax: number | undefined
  readonly stallTimeout: Duration.Duration
  readonly handshakeTimeout: Duration.Duration
  readonly handshakeIdleTimeout: Duration.Duration
  readonly rejectionLogInterval: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly leaveTimeout: Duration.Duration
  readonly reconnect: Schedule.Schedule<unknown, unknown>
  readonly seedRetryPause: Duration.Duration
  /** The highest sync frame protocol this node speaks (announced in its node info). */
  readonly syncProtocol: number
}

// ---- diagnostics --------------------------------------------------------------------------------

/** Node-wide counters of the transport (`Metrics.transport`), incremented in place. */
export type Counters = { [K in TransportCounter]: number }

// ---- connections and peers ----------------------------------------------------------------------

export type Role = "dialer" | "acceptor"

export type FailureReason =
  | "closed"
  | "too-large"
  | "malformed"
  | "unauthenticated"
  | "auth-failed"
  | "timeout"
  | "self"
  | "busy"
  | "left"
  | "shutdown"
  | "not-member"
  | "own-id"
  | "idle"
  | "address-limit"

/** Why a connection ended (or never became one). */
export class ConnectionFailed {
  readonly _tag = "ConnectionFailed"
  readonly reason: FailureReason
  readonly detail: string
  constructor(reason: FailureReason, detail: string) {
    this.reason = reason
    this.detail = detail
  }
}

export const fail = (reason: FailureReason, detail: string) => Effect.fail(new ConnectionFailed(reason, detail))

/** One authenticated connection. */
export interface Conn {
  readonly id: number
  readonly node: NodeId
  readonly session: string
  readonly dialer: NodeId
  readonly writer: Socket.Writer
  /** Resolved to stop this connection's writer (duplicate being retired, or shutdown). */
  readonly retire: Deferred.Deferred<void>
  /** Resolved to end the connection. */
  readonly close: Deferred.Deferred<void>
  /** Resolved once the connection has ended. */
  readonly ended: Deferred.Deferred<void>
  readonly scope: Scope.Scope
  readonly writerScope: Scope.Closeable
}

/** A member: one session of a node, from its first authenticated connection until it is declared down. */
export interface Peer {
  readonly node: NodeId
  readonly session: string
  address: Address
  active: Conn | undefined
  readonly conns: Set<Conn>
  readonly outbound: Outbound.Outbound
  groups: ReadonlySet<string>
  groupsVersion: number
  /** Whether the peer reads Delivers with a trace context (it listed the feature in its node info). */
  traceContext: boolean
  /** Whether the peer reads registry frames as Delivers without a transport header (`bareDeliver`). */
  bareDeliver: boolean
  /** The highest sync frame protocol both this node and the peer speak (negotiated from its node info). */
  syncProtocol: number
  readonly detector: Detector.Detector
  /** Whether the peer speaks gossip membership (`Protocol.gossipMembershipFeature`): it is sent pulses, gossip and digests. */
  gossip: boolean
  /** Whether this node's detector finds the peer silent (NodeUnreachable published, NodeReachable not yet). */
  unreachable: boolean
  /** The series of `Metrics.outboundQueueBytes` for this peer. */
  readonly queueGauge: Metric.Registration
}

/** Membership events as published to `ClusterEvents`. */
export type EventSource = Effect.Success<typeof makeSource>

// ---- the node -----------------------------------------------------------------------------------

export interface Node {
  readonly self: NodeId
  /** This process lifetime's identifier. */
  readonly session: string
  readonly settings: Settings
  /** Where peers dial this node (with the port actually bound). */
  readonly address: Address
  /** The largest transport frame: a registry frame of `maxFrameBytes` and its envelope. */
  readonly frameLimit: number
  readonly counters: Counters
  /** The context of the node's metric series (its registry, labelled with the node). */
  readonly metricContext: Context.Context<never>
  readonly peers: Map<NodeId, Peer>
  /** Where to dial nodes learned from gossip (kept while down, so they can be redialed). */
  readonly addresses: Map<NodeId, Address>
  readonly events: EventSource
  /** Background work of the node (request handlers, local deliveries). */
  readonly tasks: FiberSet.FiberSet
  readonly annotate: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Set once the graceful leave has begun: nothing new is dialed or accepted. */
  closing: boolean
}

export const make = (options: {
  readonly settings: Settings
  readonly session: string
  readonly address: Address
  readonly events: EventSource
  readonly tasks: FiberSet.FiberSet
  readonly counters: Counters
  readonly metricContext: Context.Context<never>
}): Node => ({
  self: options.settings.nodeId,
  session: options.session,
  settings: options.settings,
  address: options.address,
  frameLimit: options.settings.maxFrameBytes + Protocol.envelopeOverhead,
  counters: options.counters,
  metricContext: options.metricContext,

  peers: new Map(),
  addresses: new Map(),
  events: options.events,
  tasks: options.tasks,
  annotate: Effect.annotateLogs({ node: options.settings.nodeId }),
  closing: false
})

// ---- helpers ------------------------------------------------------------------------------------

/** Encodes a transport message (by default within the node's frame limit). */
export const encode = (node: Node, message: Protocol.TransportMessage, limit = node.frameLimit) =>
  Protocol.encode(message, limit)

/** Enqueues a control message to every peer (connected or reconnecting). */
export const offerAll = (node: Node, message: Protocol.TransportMessage, except?: NodeId) => {
  const frame = encode(node, message)
  if (Result.isFailure(frame)) return
  for (const peer of node.peers.values()) {
    if (peer.node !== except) peer.outbound.offer(frame.success)
  }
}

/** Whether this node dials `other` (the smaller id dials). */
export const isDialerOf = (node: Node, other: NodeId) => node.self < other

export const addressKey = (a: Address) => `${a.host}:${a.port}`

export const monotonicMillis = Effect.map(Clock.monotonicTimeNanos, (n) => Number(n / 1_000_000n))

export const pem = (value: string | Uint8Array): string | Buffer =>
  typeof value === "string" ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)

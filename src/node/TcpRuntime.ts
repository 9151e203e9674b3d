/**
 * The TCP runtime: `ActorRuntime` and `ClusterEvents` for nodes that run in
 * separate OS processes (or machines) and talk over TCP, optionally TLS.
 *
 * Each node listens on one port, dials its seeds, and learns the rest of the
 * cluster from the handshake and from gossip of membership changes, with a
 * periodic digest exchange that repairs what gossip missed (see "Membership"
 * in the README). Every connection is authenticated both ways with an
 * HMAC-SHA256 challenge/response over a shared cluster secret before any of
 * its frames is applied, and every frame is bound to the node id that
 * authenticated. A silent peer is found by heartbeats and a failure detector
 * (fixed timeout or phi accrual) and is unreachable, then down after
 * `downAfter`; a graceful shutdown tells peers at once.
 * Each peer has a capped outbound queue in which newer snapshots supersede
 * older ones, so a slow peer costs bounded memory.
 *
 * @example
 * ```ts
 * import { Layer, Redacted } from "effect"
 * import { StateRegistry } from "dstate"
 * import { TcpRuntime } from "dstate/node"
 *
 * const node = StateRegistry.layer.pipe(
 *   Layer.provideMerge(TcpRuntime.layer({
 *     nodeId: "node-a",
 *     port: 7001,
 *     seeds: ["127.0.0.1:7002"],
 *     secret: Redacted.make("a long random cluster secret")
 *   }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Layer, Redacted, Schedule, type Stream } from "effect"
import { ActorRuntime, type MailboxCapacity } from "../ActorRuntime.ts"
import { ClusterEvents } from "../ClusterEvents.ts"
import { InvalidOptions, ListenFailed } from "../DStateError.ts"
import type * as Metrics from "../Metrics.ts"
import * as NodeId from "../NodeId.ts"
import { MaxFrameBytes } from "../SyncMessage.ts"
import { resolve, secretKeys } from "./internal/settings.ts"
import * as Transport from "./internal/transport.ts"

/**
 * A `host:port` address.
 *
 * @category models
 * @since 0.1.0
 */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * How a node decides that a silent peer is down.
 *
 * @category models
 * @since 0.1.0
 */
export type FailureDetector =
  | {
    readonly _tag: "FixedTimeout"
    /** A peer is down once nothing was heard from it for this long. */
    readonly timeout: Duration.Input
  }
  | {
    readonly _tag: "PhiAccrual"
    /** Suspicion level above which a peer is down (default 8: ~1 false positive in 10^8 intervals). */
    readonly threshold: number
    /** Floor of the interval standard deviation, so that very regular heartbeats do not make it jumpy (default 100 ms). */
    readonly minStdDeviation: Duration.Input
    /** Extra silence tolerated on top of the mean heartbeat interval, e.g. for GC pauses (default 0). */
    readonly acceptableHeartbeatPause: Duration.Input
    /** How many heartbeat intervals are remembered (default 200). */
    readonly maxSampleSize: number
    /** Hard bound: a peer silent this long is down whatever its history (default 10 seconds). */
    readonly maxSilence: Duration.Input
  }

/**
 * A fixed-timeout detector: a peer is down once nothing was heard from it for
 * `timeout`. The bound is exact: NodeLeft is published at most `timeout` plus
 * one detector check interval after the peer's last frame.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fixedTimeout = (timeout: Duration.Input): FailureDetector => ({ _tag: "FixedTimeout", timeout })

/**
 * A phi-accrual detector (Hayashibara et al., as in Akka and Cassandra). It
 * adapts to the observed heartbeat intervals; `maxSilence` keeps a hard bound.
 *
 * @category constructors
 * @since 0.1.0
 */
export const phiAccrual = (options?: {
  readonly threshold?: number | undefined
  readonly minStdDeviation?: Duration.Input | undefined
  readonly acceptableHeartbeatPause?: Duration.Input | undefined
  readonly maxSampleSize?: number | undefined
  readonly maxSilence?: Duration.Input | undefined
}): FailureDetector => ({
  _tag: "PhiAccrual",
  threshold: options?.threshold ?? 8,
  minStdDeviation: options?.minStdDeviation ?? "100 millis",
  acceptableHeartbeatPause: options?.acceptableHeartbeatPause ?? 0,
  maxSampleSize: options?.maxSampleSize ?? 200,
  maxSilence: options?.maxSilence ?? "10 seconds"
})

/**
 * TLS settings. With TLS every connection is encrypted and the server is
 * verified against `ca`; with `mutual` (default when `ca` is given) clients
 * must present a certificate signed by `ca` too. The HMAC handshake runs
 * inside TLS as well.
 *
 * @category models
 * @since 0.1.0
 */
export interface TlsOptions {
  /** This node's certificate chain (PEM). */
  readonly cert: string | Uint8Array
  /** This node's private key (PEM). */
  readonly key: Redacted.Redacted<string | Uint8Array>
  /** The CA that signs the cluster's certificates (PEM); default: the system's trust store. */
  readonly ca?: string | Uint8Array | undefined
  /** Require and verify client certificates (default: `true` when `ca` is given). */
  readonly mutual?: boolean | undefined
  /** Check that a peer's certificate names the host dialed (default `true`). */
  readonly verifyHostname?: boolean | undefined
  /** The name to verify instead of the dialed host (SNI). */
  readonly servername?: string | undefined
}

/**
 * Limits of one node.
 *
 * @category models
 * @since 0.1.0
 */
export interface Limits {
  /**
   * The largest registry frame sent or accepted (default: `SyncMessage.MaxFrameBytes`, 16 MiB).
   * The layer also provides this value as `MaxFrameBytes`, so a registry built on top uses the same.
   */
  readonly maxFrameBytes: number
  /** The largest frame accepted before authentication completes (default 64 KiB). */
  readonly handshakeFrameBytes: number
  /** Cap of each peer's outbound queue in bytes (default 32 MiB; at least `maxFrameBytes` + 1 KiB). */
  readonly maxQueuedBytes: number
  /** Cap of each peer's outbound queue in frames (default 10,000). */
  readonly maxQueuedFrames: number
  /**
   * Frames queued for a peer at which a broadcast of a state's delta waits for that peer, while it keeps
   * writing, until its queue is back under half of this (default: half of `maxQueuedFrames`; 1 to
   * `maxQueuedFrames`). The owner's mutations are slowed to what its peers take instead of deltas being
   * dropped at the cap; see `stallTimeout`.
   */
  readonly backpressureFrames: number
  /** The same in queued bytes (default: half of `maxQueuedBytes`; 1 to `maxQueuedBytes`). */
  readonly backpressureBytes: number
  /**
   * Accepted connections allowed to be in their handshake at once (default 64). Connections this node dials
   * never count against it.
   */
  readonly maxPendingHandshakes: number
  /** Accepted connections from one source address allowed to be in their handshake at once (default 8). */
  readonly maxPendingHandshakesPerAddress: number
  /**
   * Handshake slots beyond `maxPendingHandshakes` kept for connections from the addresses of known members and
   * seeds (default 16), so that a flood from other addresses cannot keep them out.
   */
  readonly reservedHandshakes: number
  /** Mailbox of actors spawned without an explicit capacity (default `"unbounded"`). */
  readonly mailbox: MailboxCapacity
}

/**
 * Heartbeat and failure-detector settings.
 *
 * @category models
 * @since 0.1.0
 */
export interface HeartbeatOptions {
  /** Spacing of heartbeats to every connected peer (default 1 second). */
  readonly interval?: Duration.Input | undefined
  /** How silence is judged (default `fixedTimeout("5 seconds")`). */
  readonly detector?: FailureDetector | undefined
  /** How often the detector is consulted (default: half the heartbeat interval). */
  readonly checkInterval?: Duration.Input | undefined
  /**
   * Local health awareness (Lifeguard; default off): a node that is itself in trouble judges others more
   * slowly. Its score (0 to `max`, default 8) rises by one each time its own detector check runs more than
   * half a check interval late and each heartbeat interval in which fewer than half its connected members were
   * heard, and falls by one each interval in which every one was; the detector's timeouts and `downAfter` are
   * multiplied by `1 + score`. `true` is `{ max: 8 }`.
   *
   * @since 0.2.0
   */
  readonly localHealth?: boolean | { readonly max?: number | undefined } | undefined
}

/**
 * Options of `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** This node's id, unique in the cluster and stable across restarts (persistence is keyed by it). */
  readonly nodeId: string | NodeId.NodeId
  /** Interface to listen on (default `"127.0.0.1"`). */
  readonly host?: string | undefined
  /** Port to listen on (default 0: chosen by the OS; see `TcpTransport.address`). */
  readonly port?: number | undefined
  /** Host peers should dial to reach this node (default: `host`, or 127.0.0.1 when listening on all interfaces). */
  readonly advertiseHost?: string | undefined
  /** Addresses of nodes to join through, as `"host:port"` or `{ host, port }`; may include this node's own. */
  readonly seeds?: ReadonlyArray<string | Address> | undefined
  /**
   * The shared cluster secret (at least 16 bytes), or the secrets of a rotation: `[current, ...previous]`.
   * A node proves itself with the current one and accepts the proof of a peer made with any listed one;
   * `TcpTransport.setSecret` changes them while the node runs (see "Secret rotation" in the README).
   */
  readonly secret: Secrets
  /** TLS for every connection (default: plain TCP). */
  readonly tls?: TlsOptions | undefined
  readonly limits?: Partial<Limits> | undefined
  readonly heartbeat?: HeartbeatOptions | undefined
  /**
   * How long a member may stay unreachable before this node declares it down (default 30 seconds; 0: at
   * once). The failure detector (`heartbeat.detector`) decides when a silent member is *unreachable*
   * (`NodeUnreachable`: its views stay, marked); one heard again within `downAfter` is `NodeReachable` with its
   * views intact. After `downAfter` without a word it is *down*: `NodeLeft`, its views dropped, and the down
   * gossiped to the others. A graceful leave is immediate.
   *
   * @since 0.2.0
   */
  readonly downAfter?: Duration.Input | undefined
  /** Time allowed for authentication of a new connection (default 5 seconds). */
  readonly handshakeTimeout?: Duration.Input | undefined
  /**
   * How long a peer may write nothing, with frames waiting for it, before a broadcast stops waiting for it
   * (default 1 second): a peer that stopped reading is not waited for; its queue stays at its caps and it
   * repairs the gaps with a snapshot once it reads again.
   */
  readonly stallTimeout?: Duration.Input | undefined
  /** Time an accepted connection has to send its first complete frame (`Hello`; default 1 second). */
  readonly handshakeIdleTimeout?: Duration.Input | undefined
  /**
   * How often refused connections are summed up in the log (default 10 seconds): the first of each reason is
   * logged in full, the rest of the interval's in one line; the counters always carry the exact numbers.
   */
  readonly rejectionLogInterval?: Duration.Input | undefined
  /** Time allowed for a TCP (and TLS) connect (default 5 seconds). */
  readonly connectTimeout?: Duration.Input | undefined
  /** Time the graceful leave may take on shutdown (default 1 second). */
  readonly leaveTimeout?: Duration.Input | undefined
  /**
   * Delays between reconnection attempts to a peer or seed (default: exponential from 100 ms, at most 5 s apart,
   * for 2 minutes). When it ends, a peer's address is forgotten (gossip brings it back if it returns); seeds are
   * retried forever, pausing 5 seconds between runs of the schedule.
   */
  readonly reconnect?: Schedule.Schedule<unknown, unknown> | undefined
  /**
   * The highest sync frame protocol this node speaks: `2` (the default,
   * `SyncMessage.ackProtocolVersion`) or `1`, the protocol before write
   * acknowledgements. The handshake settles on the highest both sides speak;
   * a peer of protocol 1 is never asked for an acknowledgement (see
   * `StateRegistry.AwaitOptions`). Set `1` to run a node as one of the older
   * version during a rolling upgrade.
   */
  readonly syncProtocol?: 1 | 2 | undefined
}

/**
 * A bad option: the layer fails with it before listening. The same class as
 * `DStateError.InvalidOptions` (`module` is `"TcpRuntime"`).
 *
 * @category errors
 * @since 0.1.0
 */
export { InvalidOptions } from "../DStateError.ts"

/**
 * The node could not listen on its address; `cause` is the socket's error.
 * The same class as `DStateError.ListenFailed`.
 *
 * @category errors
 * @since 0.1.0
 */
export { ListenFailed } from "../DStateError.ts"

/**
 * Node-wide counters of the transport: the series of `Metrics.transport`
 * (see there what each counts).
 *
 * @category models
 * @since 0.1.0
 */
export type TransportStats = { readonly [K in Metrics.TransportCounter]: number }

/**
 * What a node knows of one peer, including its outbound queue.
 *
 * @category models
 * @since 0.1.0
 */
export interface PeerDiagnostics {
  readonly node: NodeId.NodeId
  /** The peer's process lifetime identifier. */
  readonly session: string
  /** Where the peer accepts connections. */
  readonly address: Address
  /** Whether a connection is currently carrying frames to it. */
  readonly connected: boolean
  /** Open connections (more than one only while a duplicate is being retired). */
  readonly connections: number
  readonly groups: ReadonlyArray<string>
  /** Milliseconds since the last frame from the peer. */
  readonly silenceMillis: number
  /** Current suspicion level of the failure detector. */
  readonly phi: number
  /**
   * Whether the failure detector finds the peer silent (`NodeUnreachable` published, not yet reachable again).
   *
   * @since 0.2.0
   */
  readonly unreachable: boolean
  readonly outbound: OutboundStats
}

/**
 * Counters of one peer's outbound queue.
 *
 * @category models
 * @since 0.1.0
 */
export interface OutboundStats {
  /** Bytes of the frames waiting in the queue (tombstones excluded). */
  readonly queuedBytes: number
  /** Frames waiting in the queue (tombstones excluded). */
  readonly queuedFrames: number
  /** Bytes handed to the socket and not yet acknowledged by its drain. */
  readonly inFlightBytes: number
  /** The largest `queuedBytes` ever reached. */
  readonly peakQueuedBytes: number
  readonly framesEnqueued: number
  readonly framesWritten: number
  readonly bytesWritten: number
  /** Frames dropped by a later frame with the same supersede key that replaces them. */
  readonly superseded: number
  /** Frames dropped from the head of the queue because a cap was reached. */
  readonly droppedOldest: number
  /**
   * Frames dropped at a cap because a newer frame of the same supersede key took their place at the tail
   * of the queue (a frame that does not replace, arriving while the queue is full and the newest queued
   * frame of its key is still waiting). The receiver sees a gap there and asks for a snapshot.
   */
  readonly replacedAtCap: number
}

/**
 * Diagnostics of the TCP transport of this node.
 *
 * @category services
 * @since 0.1.0
 */
/**
 * One cluster secret (at least 16 bytes: a string's UTF-8 bytes, or the bytes themselves).
 *
 * @category models
 * @since 0.1.0
 */
export type Secret = Redacted.Redacted<string | Uint8Array>

/**
 * The cluster secret, or the secrets of a rotation: `[current, ...previous]`.
 * The current one proves this node to its peers; a peer's proof is accepted
 * when it was made with any listed one.
 *
 * **Example** (a rolling rotation: each step on every node before the next)
 *
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { TcpRuntime } from "dstate/node"
 *
 * const old = Redacted.make(process.env.DSTATE_SECRET_OLD!)
 * const next = Redacted.make(process.env.DSTATE_SECRET_NEW!)
 * const rotate = Effect.gen(function*() {
 *   const transport = yield* TcpRuntime.TcpTransport
 *   yield* transport.setSecret([old, next]) // 1. accept the new one everywhere
 *   // ... once every node accepts it:
 *   yield* transport.setSecret([next, old]) // 2. prove with it everywhere
 *   // ... once every node proves with it:
 *   yield* transport.setSecret(next) // 3. drop the old one
 * })
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Secrets = Secret | readonly [Secret, ...Array<Secret>]

export { defaultReconnect, parseAddress } from "./internal/settings.ts"

export class TcpTransport extends Context.Service<TcpTransport, {
  /** This node's id. */
  readonly nodeId: NodeId.NodeId
  /** This process lifetime's session id (peers see a restart as a new session). */
  readonly session: string
  /** The address peers dial (with the port actually bound). */
  readonly address: Address
  /** Node-wide counters. */
  readonly stats: Effect.Effect<TransportStats>
  /** Every current member, with its connection and outbound queue. */
  readonly peers: Effect.Effect<ReadonlyArray<PeerDiagnostics>>
  /**
   * Replaces the cluster secrets (`Secrets`: the current one first) for every handshake from now on;
   * connections already authenticated stay up. Fails with `InvalidOptions` (option `secret`, no value in
   * it) and changes nothing when a secret is not valid.
   */
  readonly setSecret: (secret: Secrets) => Effect.Effect<void, InvalidOptions>
}>()("dstate/node/TcpTransport") {}

/**
 * Membership decided outside the transport, by a cluster's runner registry
 * for example (the Effect cluster runtime of `dstate/cluster` provides it
 * from `RunnerStorage`).
 *
 * **Details**
 *
 * Each element of the stream is the complete set of nodes, with their
 * addresses, that may be members now. When provided, seeds and gossiped
 * member lists are ignored, every listed node is dialed, connections from
 * unlisted nodes are refused during the handshake, and a node that drops out
 * of the set is declared down at once. Absent (the default), membership is
 * gossiped.
 *
 * **Example**
 *
 * ```ts
 * import { Layer, Redacted, Stream } from "effect"
 * import { NodeId } from "dstate"
 * import { TcpRuntime } from "dstate/node"
 *
 * const members = Stream.make(new Map([[NodeId.make("node-b"), { host: "10.0.0.8", port: 7001 }]]))
 * const node = TcpRuntime.layer({ nodeId: "node-a", port: 7001, secret: Redacted.make("a long random cluster secret") })
 *   .pipe(Layer.provide(Layer.succeed(TcpRuntime.ExternalMembership, members)))
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export const ExternalMembership = Context.Reference<Stream.Stream<ReadonlyMap<NodeId.NodeId, Address>> | undefined>(
  "dstate/node/ExternalMembership",
  { defaultValue: () => undefined }
)

/**
 * The TCP runtime of one node: listens, joins the cluster through its seeds,
 * and provides `ActorRuntime`, `ClusterEvents` and the `TcpTransport`
 * diagnostics (plus `MaxFrameBytes`, so that a registry on top uses the same
 * frame limit). Closing the layer's scope is a graceful leave: every peer is
 * sent a `Leave` frame and publishes NodeLeft at once.
 *
 * **Gotchas**
 *
 * - Node ids must be unique: two live processes with the same id take turns
 *   being the member (each connection from a new session replaces the other).
 * - Without `tls`, frames travel in clear text and, after the handshake, are
 *   protected by CRC32 only: the HMAC handshake keeps out nodes that do not
 *   know the secret, not an attacker who can rewrite traffic on the path. Use
 *   `tls` on networks you do not control.
 * - Bad options fail the layer with `InvalidOptions` before anything listens:
 *   sizes, counts and `maxSampleSize` must be positive integers, `port` 0 to
 *   65535, `maxQueuedBytes` at least `maxFrameBytes` + 1 KiB, `threshold` a
 *   positive number, durations finite and positive (`leaveTimeout` and
 *   `acceptableHeartbeatPause` may be 0). A port that cannot be bound fails
 *   it with `ListenFailed`, whose `cause` is the socket's error.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<ActorRuntime | ClusterEvents | TcpTransport, InvalidOptions | ListenFailed> =>
  Layer.effectContext(Effect.gen(function*() {
    const settings = yield* resolve(options, yield* MaxFrameBytes)
    const node = yield* Transport.make(settings, yield* ExternalMembership).pipe(
      Effect.mapError((cause) => new ListenFailed({ host: settings.host, port: settings.port, cause }))
    )
    return Context.make(ActorRuntime, node.runtime).pipe(
      Context.add(ClusterEvents, node.events),
      Context.add(
        TcpTransport,
        TcpTransport.of({
          ...node.transport,
          setSecret: (secret) =>
            Effect.map(secretKeys(secret, "secret"), (keys) => {
              settings.keys.current = keys
            })
        })
      ),
      Context.add(MaxFrameBytes, settings.maxFrameBytes)
    )
  }))

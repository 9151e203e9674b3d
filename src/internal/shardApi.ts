/**
 * The contract of a StateShard (`shard.ts`): its options and environment,
 * the messages its actor handles, and the handle the registry gets.
 * @internal
 */
import type { Deferred, Duration, Effect, Option, Result, Stream, Tracer } from "effect"
import type { ActorRuntime, MailboxCapacity, TraceContext } from "../ActorRuntime.ts"
import type { Observer, PeerSyncStatus, StateHealth, StateReadiness, StateStatus, StateSyncMetrics } from "../Diagnostics.ts"
import type * as DistributedState from "../DistributedState.ts"
import type {
  AckTimeout,
  AckUnsatisfiable,
  ActorStopped,
  InvalidOptions,
  MailboxFull,
  PersistenceFailed,
  StalePeer
} from "../DStateError.ts"
import type * as Generation from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import type { VersionMismatchPolicy } from "../StateRegistry.ts"
import type { StatePersistence } from "../StatePersistence.ts"
import type { StateView, ViewDiff, ViewMap } from "../StateView.ts"
import type {
  Acknowledge,
  AckRequest,
  ChangeNotice,
  DeltaUpdate,
  FullSnapshot,
  RequestSnapshot,
  SyncMessage
} from "../SyncMessage.ts"
import type { SyncStrategy } from "../SyncStrategy.ts"
import type * as Awaits from "./awaits.ts"
import type { Acknowledged, AwaitSpec, Committed } from "./awaits.ts"

export type { Acknowledged, AwaitSpec, Committed }

export interface ShardOptions {
  readonly strategy: SyncStrategy
  readonly persist: boolean
  readonly pullTimeout: Duration.Duration
  readonly versionMismatchPolicy: VersionMismatchPolicy
  readonly mailbox: MailboxCapacity
}

export interface ShardEnv {
  readonly runtime: ActorRuntime["Service"]
  /** The node's change-feed aggregator. */
  readonly notify: (notice: ChangeNotice) => void
  readonly persistence: StatePersistence["Service"] | undefined
  readonly maxFrameBytes: number
  readonly departedCapacity: number
  readonly observer: Observer | undefined
  /** The node's one door for inbound frames: decodes a frame from `from`, counting and reporting a rejected one. */
  readonly decodeInbound: (from: NodeId, frame: Uint8Array) => Effect.Effect<Result.Result<SyncMessage, unknown>>
}

export interface QueryOptions {
  readonly maxStaleness?: Duration.Input | undefined
}

export type Inbound = FullSnapshot | DeltaUpdate | RequestSnapshot | AckRequest | Acknowledge

export type Apply<S, C> = (state: S) => { readonly state: S; readonly change: C | undefined }

export type Message<S, C> =
  | {
    readonly _tag: "Mutate"
    readonly apply: Apply<S, C>
    readonly done: Deferred.Deferred<Committed<S>, PersistenceFailed>
    /** Monotonic ms of the `mutate` call. */
    readonly startedAt: number
    readonly span: Tracer.AnySpan | undefined
  }
  /** Saves and commits the staged persisted mutations (`groupCommit.ts`). */
  | { readonly _tag: "Flush" }
  | {
    readonly _tag: "Inbound"
    readonly from: NodeId
    readonly message: Inbound
    readonly done?: Deferred.Deferred<void>
    readonly trace?: TraceContext | undefined
  }
  | { readonly _tag: "PeerJoined"; readonly node: NodeId }
  | { readonly _tag: "AwaitView"; readonly node: NodeId }
  | { readonly _tag: "PeerLeft"; readonly node: NodeId }
  | { readonly _tag: "PeerUnreachable"; readonly node: NodeId; readonly since: number }
  | { readonly _tag: "PeerReachable"; readonly node: NodeId }
  | { readonly _tag: "Notice"; readonly source: NodeId; readonly generation: Generation.Generation }
  | { readonly _tag: "DelayDue" }
  | { readonly _tag: "Probe"; readonly done: Deferred.Deferred<void> }
  | { readonly _tag: "PushDue" }
  | { readonly _tag: "PeriodicDue" }
  | Awaits.Message

export interface Shard<S, V, C> {
  readonly name: string
  readonly definition: DistributedState.DistributedState<S, V, any, C>
  readonly group: string
  /** Routes a decoded one-way message to the actor. */
  readonly deliver: (from: NodeId, message: Inbound, trace?: TraceContext) => Effect.Effect<void>
  /** Answers a pull with the current snapshot frame. */
  readonly reply: (from: NodeId, message: RequestSnapshot) => Effect.Effect<Uint8Array>
  readonly peerJoined: (node: NodeId) => Effect.Effect<void>
  readonly peerLeft: (node: NodeId) => Effect.Effect<void>
  /** A member went silent at `since` (wall-clock ms): its view stays, marked. */
  readonly peerUnreachable: (node: NodeId, since: number) => Effect.Effect<void>
  /** An unreachable member answers again. */
  readonly peerReachable: (node: NodeId) => Effect.Effect<void>
  /** A change-feed notice: `source`'s view reached `generation`. */
  readonly markStale: (source: NodeId, generation: Generation.Generation) => Effect.Effect<void>
  readonly mutate: (apply: Apply<S, C>) => Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull | ActorStopped>
  /** A mutation whose caller waits until `spec.peers` peers hold it (or newer), or the timeout passes. */
  readonly mutateAwait: (
    apply: Apply<S, C>,
    spec: AwaitSpec
  ) => Effect.Effect<Acknowledged<S>, PersistenceFailed | MailboxFull | ActorStopped | AckTimeout | AckUnsatisfiable>
  readonly query: <A>(options: QueryOptions, f: (views: ViewMap<V>) => A) => Effect.Effect<A, StalePeer | InvalidOptions>
  readonly snapshot: Effect.Effect<ViewMap<V>>
  readonly changes: Stream.Stream<ViewMap<V>>
  readonly changesOf: (owner: NodeId) => Stream.Stream<Option.Option<StateView<V>>>
  readonly diffs: Stream.Stream<ViewDiff<V>>
  readonly state: Effect.Effect<S>
  readonly local: Effect.Effect<StateView<V>>
  readonly syncStatus: Effect.Effect<ReadonlyArray<PeerSyncStatus>>
  readonly metrics: Effect.Effect<StateSyncMetrics>
  readonly health: (staleAfterMillis: number) => Effect.Effect<StateHealth>
  /** Completes once the actor has handled a probe sent now (it waits behind every message already queued). */
  readonly probe: Effect.Effect<void, ActorStopped | MailboxFull>
  /** Whether the initial exchange is done (no member's view awaited) and the last save succeeded. */
  readonly readiness: Effect.Effect<StateReadiness>
  /** What `/status` reports of this state: views held, staleness, sync status, counters. */
  readonly status: Effect.Effect<StateStatus>
}


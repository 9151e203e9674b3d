/**
 * The vocabulary of the sync core: its configuration, the pure functions it
 * is given (decoders and the definition's own functions), what it is told
 * (`Input`) and what it asks the shell to do (`Command`). Plain data and
 * types only: nothing here runs an effect or reads a clock.
 * @internal
 */
import type { Result } from "effect"
import type { Generation } from "../../Generation.ts"
import type { DepartedSizes } from "../../Diagnostics.ts"
import type { StateCounter } from "../../Metrics.ts"
import type { NodeId } from "../../NodeId.ts"
import type { VersionMismatchPolicy } from "../../StateRegistry.ts"
import type { StateView } from "../../StateView.ts"
import type { Acknowledge, AckRequest, DeltaUpdate, FullSnapshot, RequestSnapshot } from "../../SyncMessage.ts"
import type { PushMode } from "../../SyncStrategy.ts"

export type { DepartedSizes, PushMode, VersionMismatchPolicy }

/** The owner's state: what the shell persists and the core projects and sends. */
export interface Owner<S, V> {
  readonly generation: Generation
  readonly state: S
  readonly view: V
  readonly createdAt: number
  readonly modifiedAt: number
}

/** An inbound payload that could not be used (the codec's and the core's errors alike). */
export type DecodeError =
  | { readonly _tag: "MalformedMessage"; readonly message: string; readonly reason: string }
  | { readonly _tag: "UnsupportedWireVersion"; readonly message: string; readonly wireVersion: number }

/** When a committed change is sent (`SyncUrgency` with its delay in milliseconds). */
export type Urgency =
  | { readonly _tag: "Default" }
  | { readonly _tag: "Immediate" }
  | { readonly _tag: "Suppress" }
  | { readonly _tag: "Delayed"; readonly millis: number }

export interface Config {
  readonly self: NodeId
  readonly stateName: string
  /** The state's wire version (of the local view). */
  readonly wireVersion: number
  /** `true` for a delta-aware state. */
  readonly delta: boolean
  readonly pushMode: PushMode
  /** Whether periodic full sync is configured. */
  readonly periodic: boolean
  readonly pullTimeoutMillis: number
  readonly versionMismatchPolicy: VersionMismatchPolicy
  /** Bound of the departed set and of the generations remembered of departed peers. */
  readonly departedCapacity: number
  /** Whether the shell can hand a push to the actor once the committing fiber yields (coalesced push). */
  readonly coalescePush: boolean
}

/**
 * Pure functions the core calls: the state's codecs and the definition's own functions, each returning
 * a `Result` (a definition's function that throws is a `Failure` with what it threw).
 */
export interface Ports<V, D, C> {
  readonly decodeView: (payload: Uint8Array, wireVersion: number, from: NodeId) => Result.Result<V, DecodeError>
  readonly decodeDelta: (payload: Uint8Array, wireVersion: number, from: NodeId) => Result.Result<D, DecodeError>
  /** The definition's `applyDelta` (delta states). */
  readonly applyDelta: ((view: V, delta: D) => Result.Result<V, unknown>) | undefined
  /** The definition's `projectDelta` (delta states). */
  readonly projectDelta: ((change: C) => Result.Result<D, unknown>) | undefined
  /** The definition's `syncUrgency`, when it has one. */
  readonly syncUrgency: ((oldView: V, newView: V, delta: D) => Result.Result<Urgency, unknown>) | undefined
  /** A `MalformedMessage` for a payload the core refuses. */
  readonly malformed: (from: NodeId, reason: string) => DecodeError
  /** Counts an event of this state (the metrics module's counters). */
  readonly count: (key: CounterKey, by?: number) => void
  /** Told after the departed set or the remembered generations changed (simulation checkers). */
  readonly onDeparted: ((sizes: DepartedSizes) => void) | undefined
}

/** The counters of one state (`StateSyncMetrics`). */
export type CounterKey = StateCounter

/** How many peers an awaited mutation needs: a count, a majority of the group's members (the owner counted), or all. */
export type AwaitPeers = number | "majority" | "all"

/** How an awaited mutation's wait ended. */
export type AwaitOutcome = "Acknowledged" | "TimedOut" | "Unsatisfiable"

/** What the shell tells the core. `now` (monotonic milliseconds) comes with every step. */
export type Input<S, V, C> =
  /** The state registered: `others` are the group's members besides this node. */
  | { readonly _tag: "Started"; readonly others: ReadonlyArray<NodeId> }
  /** A mutation is durable (or needs no persistence): `owner` is the new state, made from the current one. */
  | { readonly _tag: "Committed"; readonly owner: Owner<S, V>; readonly change: C | undefined }
  | { readonly _tag: "Snapshot"; readonly from: NodeId; readonly message: FullSnapshot }
  | { readonly _tag: "Delta"; readonly from: NodeId; readonly message: DeltaUpdate }
  | { readonly _tag: "Request"; readonly from: NodeId; readonly message: RequestSnapshot }
  /** A change-feed notice: `source`'s view reached `generation`. */
  | { readonly _tag: "Notice"; readonly source: NodeId; readonly generation: Generation }
  /** `member`: whether the node is (still) in this state's group. */
  | { readonly _tag: "PeerJoined"; readonly node: NodeId; readonly member: boolean }
  | { readonly _tag: "AwaitViewDue"; readonly node: NodeId; readonly member: boolean }
  | { readonly _tag: "PeerLeft"; readonly node: NodeId }
  /** A member went silent at `since` (wall-clock ms): its view stays, marked, and is stale for bounded queries. */
  | { readonly _tag: "PeerUnreachable"; readonly node: NodeId; readonly since: number }
  /** An unreachable member answers again: the mark goes, the view stays, no join exchange. */
  | { readonly _tag: "PeerReachable"; readonly node: NodeId }
  | { readonly _tag: "PushDue" }
  | { readonly _tag: "DelayDue" }
  | { readonly _tag: "PeriodicDue" }
  /** The owner moved to a new incarnation (`owner`, persisted), or could not persist it (`owner` undefined). */
  | { readonly _tag: "Reincarnated"; readonly owner: Owner<S, V> | undefined; readonly requester: NodeId }
  /** Messages from `from` were dropped, or replies to `to` were not sent, on a full mailbox. */
  | { readonly _tag: "Resync"; readonly to: ReadonlyArray<NodeId>; readonly from: ReadonlyArray<NodeId> }
  /**
   * A committed mutation at `generation` awaits acknowledgements: `eligible` are the group's other members
   * that speak the acknowledgement's wire version, `unsupported` those that do not.
   */
  | {
    readonly _tag: "Await"
    readonly id: number
    readonly generation: Generation
    readonly peers: AwaitPeers
    readonly eligible: ReadonlyArray<NodeId>
    readonly unsupported: ReadonlyArray<NodeId>
    readonly timeoutMillis: number
  }
  /** The timeout of await `id` passed. */
  | { readonly _tag: "AwaitDue"; readonly id: number }
  /** Time to ask again the peers that have not acknowledged await `id`. */
  | { readonly _tag: "AwaitRetryDue"; readonly id: number }
  /** The owner `from` asks for an acknowledgement of its state at `message.generation` or newer. */
  | { readonly _tag: "AckRequest"; readonly from: NodeId; readonly message: AckRequest }
  /** Peer `from` holds this node's state at `message.generation`. */
  | { readonly _tag: "Ack"; readonly from: NodeId; readonly message: Acknowledge }
  /** The acknowledgements due in this turn may go out (handed over by `ScheduleAck`). */
  | { readonly _tag: "AckDue" }

/** What the core asks the shell to do, in order. */
export type Command<D> =
  /** Publish the view map as it now is. */
  | { readonly _tag: "Publish" }
  /** Send the current snapshot to `to`, or to every peer of the group when `to` is undefined. */
  | { readonly _tag: "SendSnapshot"; readonly to: NodeId | undefined }
  | { readonly _tag: "BroadcastDelta"; readonly generation: Generation; readonly modifiedAt: number; readonly delta: D }
  /** Ask `to` (every peer when undefined) for its snapshot, saying which generation of it is held. */
  | { readonly _tag: "SendRequest"; readonly to: NodeId | undefined; readonly held: Generation | undefined }
  /** Leave a notice in the node's change feed. */
  | { readonly _tag: "Notify"; readonly generation: Generation }
  /** Hand a `PushDue` to the actor once the committing fiber yields. */
  | { readonly _tag: "SchedulePush" }
  /** Tell `DelayDue` after `millis`, replacing any earlier such timer. */
  | { readonly _tag: "StartDelay"; readonly millis: number }
  | { readonly _tag: "CancelDelay" }
  /** Tell `AwaitViewDue` for `node` after the pull timeout. */
  | { readonly _tag: "AwaitView"; readonly node: NodeId }
  /** A peer holds `seen`, newer than our own generation: move to a newer incarnation, persist it, report. */
  | { readonly _tag: "Reincarnate"; readonly seen: Generation; readonly requester: NodeId }
  | { readonly _tag: "Log"; readonly level: "Debug" | "Warning" | "Error"; readonly message: string; readonly annotations: Readonly<Record<string, unknown>> }
  /** Ask `to` to acknowledge this node's state once it holds `generation` or newer. */
  | { readonly _tag: "SendAckRequest"; readonly to: NodeId; readonly generation: Generation }
  /**
   * Tell `AckDue` once this turn ends: at once when no message waits for the actor, else after the
   * messages already waiting (the acknowledgements they make due are coalesced with these).
   */
  | { readonly _tag: "ScheduleAck" }
  /** Tell owner `to` that its state is held here at `generation`. */
  | { readonly _tag: "SendAck"; readonly to: NodeId; readonly generation: Generation }
  /** Tell `AwaitDue` for await `id` after `millis`. */
  | { readonly _tag: "StartAwaitTimer"; readonly id: number; readonly millis: number }
  /** Tell `AwaitRetryDue` for await `id` after `millis`. */
  | { readonly _tag: "StartAwaitRetry"; readonly id: number; readonly millis: number }
  /**
   * The wait of await `id` ended: `acknowledged` are the peers that hold its generation (or newer),
   * `missing` the awaited members that do not, `required` how many were needed.
   */
  | {
    readonly _tag: "ResolveAwait"
    readonly id: number
    readonly outcome: AwaitOutcome
    readonly acknowledged: ReadonlyArray<NodeId>
    readonly missing: ReadonlyArray<NodeId>
    readonly required: number
    readonly eligible: ReadonlyArray<NodeId>
    readonly unsupported: ReadonlyArray<NodeId>
  }

/** The local entry of the view map for an owner state. */
export const localEntry = <S, V>(
  self: NodeId,
  wireVersion: number,
  owner: Owner<S, V>,
  syncedAt: number
): StateView<V> => ({
  source: self,
  generation: owner.generation,
  wireVersion,
  value: owner.view,
  createdAt: owner.createdAt,
  modifiedAt: owner.modifiedAt,
  syncedAt,
  pendingRemote: undefined,
  unreachableSince: undefined
})

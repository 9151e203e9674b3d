/**
 * The typed handle of a registered state, as `StateRegistry.register` and
 * `StateRegistry.lookup` give it: mutations (optionally awaiting peers'
 * acknowledgements), bounded-staleness queries, the view map and its
 * streams (`changes`, `changesOf`, `diffs`), and the state's diagnostics.
 * `StateRegistry` re-exports every type of this module.
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Option, Stream } from "effect"
import type { PeerSyncStatus, StateSyncMetrics } from "./Diagnostics.ts"
import type * as DistributedState from "./DistributedState.ts"
import type {
  AckTimeout,
  AckUnsatisfiable,
  ActorStopped,
  InvalidOptions,
  MailboxFull,
  PersistenceFailed,
  StalePeer
} from "./DStateError.ts"
import type { Generation } from "./Generation.ts"
import type { NodeId } from "./NodeId.ts"
import type { StateView, ViewDiff, ViewMap } from "./StateView.ts"

/**
 * Options of a `query`.
 *
 * @category models
 * @since 0.1.0
 */
export interface QueryOptions {
  /**
   * The oldest a peer's view may be (measured from its last sync). Views that
   * are older, or announced as changed by a change feed, are pulled first;
   * omitted = no freshness requirement.
   */
  readonly maxStaleness?: Duration.Input | undefined
  /**
   * What a bounded query (one with `maxStaleness`) does with the views of
   * unreachable owners (`StateView.unreachableSince` set): `"fail"` (the
   * default) fails it with `StalePeer` for such an owner at once, without a
   * pull; `"skip"` leaves those owners out of the map `f` sees (the local
   * view is always in it) and checks the others as usual. An unreachable
   * owner is never pulled. Without `maxStaleness` every view is given, marked.
   * @since 0.2.0
   */
  readonly unreachable?: "fail" | "skip" | undefined
}

/**
 * A committed mutation: the generation it reached and the owner's new state.
 *
 * @category models
 * @since 0.1.0
 */
export interface Committed<S> {
  readonly generation: Generation
  readonly state: S
}

/**
 * How many peers must hold a mutation before `mutate` returns, and for how
 * long to wait.
 *
 * **Details**
 *
 * - `peers`: a number of peers (a positive integer), `"majority"` (a
 *   majority of the state's group counting the owner: `floor(N / 2)` peers
 *   in a group of `N` members, so 2 of 4 peers in a 5-node cluster, 1 of 2
 *   in a 3-node one), or `"all"` (every member at the time of the call that
 *   is still a member).
 * - `timeout`: a finite positive duration.
 *
 * **Gotchas**
 *
 * An acknowledgement is about visibility: the peer applied and published a
 * view at the mutation's generation or newer. It says nothing about
 * surviving the owner's store: the owner stays the only writer, and peers
 * hold read-only views in memory.
 *
 * @category models
 * @since 0.2.0
 */
export interface AwaitOptions {
  readonly peers: number | "majority" | "all"
  readonly timeout: Duration.Input
}

/**
 * The consistency of one mutation: `await` makes the call wait for
 * acknowledgements (by default a mutation returns once committed locally).
 *
 * @category models
 * @since 0.2.0
 */
export interface MutateOptions {
  readonly await: AwaitOptions
}

/**
 * A committed mutation that enough peers acknowledged: `acknowledged` peers
 * (`acknowledgedBy`) held its generation or a newer one when the call
 * returned; `required` were needed.
 *
 * @category models
 * @since 0.2.0
 */
export interface Acknowledged<S> extends Committed<S> {
  readonly acknowledged: number
  readonly acknowledgedBy: ReadonlyArray<NodeId>
  readonly required: number
}

/**
 * The errors of an awaited mutation besides those of `mutate`: the options
 * were invalid (nothing was committed), or the acknowledgements did not come
 * (`AckTimeout`) or cannot come (`AckUnsatisfiable`); in those two cases the
 * mutation is committed and published all the same.
 *
 * @category models
 * @since 0.2.0
 */
export type AwaitError = AckTimeout | AckUnsatisfiable | InvalidOptions

/**
 * What every state handle offers.
 *
 * @category models
 * @since 0.1.0
 */
export interface StateHandle<S, V> {
  /** The state's name. */
  readonly name: string
  /** This node's id. */
  readonly nodeId: NodeId
  /**
   * Runs `f` over the view map once every peer's view is at most
   * `maxStaleness` old, pulling stale ones first (concurrently, one pull per
   * peer however many queries wait). Fails with `StalePeer` when a peer cannot
   * be brought up to date or is unreachable (see `QueryOptions.unreachable`),
   * and with `InvalidOptions` when `maxStaleness` is not a non-negative
   * duration or `unreachable` is neither `"fail"` nor `"skip"`. The fast path reads an immutable map and
   * does not touch the state's actor.
   */
  readonly query: <A>(options: QueryOptions, f: (views: ViewMap<V>) => A) => Effect.Effect<A, StalePeer | InvalidOptions>
  /** The current view map, without any freshness check. */
  readonly snapshot: Effect.Effect<ViewMap<V>>
  /** The view map now and after every change. */
  readonly changes: Stream.Stream<ViewMap<V>>
  /**
   * One owner's view now (`None` while none is held) and after each change: a new generation, its
   * arrival or its removal (a refreshed `syncedAt` alone is not a change). Latest value only: a
   * consumer slower than the changes gets the newest view, never a backlog.
   */
  readonly changesOf: (owner: NodeId) => Stream.Stream<Option.Option<StateView<V>>>
  /**
   * Every owner's changes as `Added` / `Updated` / `Removed` events, each with the previous and the
   * current view, starting with an `Added` for every view held at subscription (this node's own
   * included). `Updated` means a new generation (a refreshed `syncedAt` or a change-feed marker alone
   * is not a change). Events come in the order the view map changed. A consumer slower than the changes gets
   * them conflated: at most one pending event per owner, from the view it last saw to the one held
   * now (an add and a removal in between cancel out), in the order of each owner's first pending change.
   */
  readonly diffs: Stream.Stream<ViewDiff<V>>
  /** This node's own view. */
  readonly local: Effect.Effect<StateView<V>>
  /** This node's private state (owner only). */
  readonly state: Effect.Effect<S>
  /** Per-peer sync status. */
  readonly syncStatus: Effect.Effect<ReadonlyArray<PeerSyncStatus>>
  /** Counters of this state on this node. */
  readonly metrics: Effect.Effect<StateSyncMetrics>
}

/**
 * The handle of a simple state.
 *
 * @category models
 * @since 0.1.0
 */
export interface SimpleHandle<S> extends StateHandle<S, S> {
  readonly _tag: "Simple"
  /**
   * Applies `f` to the owner's state. The new state is persisted first; only
   * when that succeeded does it become visible locally and get pushed to
   * peers. On `PersistenceFailed` nothing changed and nothing was sent.
   *
   * With `options.await`, the call returns once that many current members
   * hold the mutation's generation or a newer one (see `AwaitOptions`), with
   * how many acknowledged; it fails with `AckTimeout` when the timeout passes
   * first and with `AckUnsatisfiable` when the members cannot give that many.
   */
  readonly mutate: {
    (f: (state: S) => S): Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull | ActorStopped>
    (
      f: (state: S) => S,
      options: MutateOptions
    ): Effect.Effect<Acknowledged<S>, PersistenceFailed | MailboxFull | ActorStopped | AwaitError>
  }
}

/**
 * The handle of a delta-aware state.
 *
 * @category models
 * @since 0.1.0
 */
export interface DeltaHandle<S, V, C> extends StateHandle<S, V> {
  readonly _tag: "Delta"
  /**
   * Applies `f`, which returns the next state and the change it made. Persist
   * before publish as for `mutate`; peers receive `projectDelta(change)`.
   * `options.await` waits for acknowledgements as for `mutate`.
   */
  readonly mutateWithDelta: {
    (
      f: (state: S) => { readonly state: S; readonly change: C }
    ): Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull | ActorStopped>
    (
      f: (state: S) => { readonly state: S; readonly change: C },
      options: MutateOptions
    ): Effect.Effect<Acknowledged<S>, PersistenceFailed | MailboxFull | ActorStopped | AwaitError>
  }
}

/**
 * The handle type of a definition.
 *
 * @category models
 * @since 0.1.0
 */
export type HandleOf<T> = T extends DistributedState.Delta<infer S, infer V, any, infer C> ? DeltaHandle<S, V, C>
  : T extends DistributedState.Simple<infer S> ? SimpleHandle<S>
  : never

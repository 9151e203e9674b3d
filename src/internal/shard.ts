/**
 * The StateShard: one actor per registered state on a node. It owns the
 * state, applies inbound snapshots and deltas by the acceptance rules,
 * publishes an immutable view map for lock-free reads, and pushes changes
 * according to the sync strategy.
 * @internal
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, PubSub, Result, Scope, Stream, SubscriptionRef } from "effect"
import type { ActorRef, ActorRuntime, MailboxCapacity } from "../ActorRuntime.ts"
import type { PeerSyncStatus, StateHealth, StateSyncMetrics } from "../Diagnostics.ts"
import type * as DistributedState from "../DistributedState.ts"
import {
  type ActorStopped,
  MailboxFull,
  MalformedMessage,
  type MessageTooLarge,
  MigrationFailed,
  PersistenceFailed,
  StalePeer,
  type UnsupportedWireVersion
} from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import type { StatePersistence, StoredState } from "../StatePersistence.ts"
import type { StateView, ViewMap } from "../StateView.ts"
import { type ChangeNotice, DeltaUpdate, FullSnapshot, RequestSnapshot } from "../SyncMessage.ts"
import type * as SyncUrgency from "../SyncUrgency.ts"
import type { SyncStrategy } from "../SyncStrategy.ts"
import * as Acceptance from "./acceptance.ts"
import { isSucceeded } from "./actor.ts"
import * as Counters from "./counters.ts"
import { decodeFrame, encodeFrame, makeStateCodec, type StateCodec } from "./codec.ts"

/** What a version mismatch does to the view held of that peer. */
export type VersionMismatchPolicy = "KeepStale" | "DropAndWait"

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
}

/** Sees every published view map and every rejected inbound frame of a node, synchronously (simulation checkers). */
export interface Observer {
  readonly onViews: (stateName: string, node: NodeId, views: ViewMap<unknown>) => void
  readonly onRejectedFrame: (node: NodeId, from: NodeId, error: { readonly _tag: string; readonly message: string }) => void
  /** After the departed set (and the newest generation remembered per departed peer) changed, with their cap. */
  readonly onDeparted?: ((stateName: string, node: NodeId, sizes: DepartedSizes) => void) | undefined
}

export interface DepartedSizes {
  readonly departed: number
  readonly remembered: number
  readonly capacity: number
}

export interface QueryOptions {
  readonly maxStaleness?: Duration.Input | undefined
}

export interface Committed<S> {
  readonly generation: Generation.Generation
  readonly state: S
}

type Inbound = FullSnapshot | DeltaUpdate | RequestSnapshot

type Message<S, C> =
  | {
    readonly _tag: "Mutate"
    readonly apply: (state: S) => { readonly state: S; readonly change: C | undefined }
    readonly done: Deferred.Deferred<Committed<S>, PersistenceFailed>
  }
  | { readonly _tag: "Inbound"; readonly from: NodeId; readonly message: Inbound; readonly done?: Deferred.Deferred<void> }
  | { readonly _tag: "PeerJoined"; readonly node: NodeId }
  | { readonly _tag: "AwaitView"; readonly node: NodeId }
  | { readonly _tag: "PeerLeft"; readonly node: NodeId }
  | { readonly _tag: "MarkStale"; readonly source: NodeId; readonly generation: Generation.Generation }
  | { readonly _tag: "FlushDelayed" }
  | { readonly _tag: "Push" }
  | { readonly _tag: "PeriodicSync" }

interface Owner<S, V> {
  readonly generation: Generation.Generation
  readonly state: S
  readonly view: V
  readonly createdAt: number
  readonly modifiedAt: number
}

interface PeerStatusMut {
  gapCount: number
  consecutiveFailures: number
  lastSyncAt: number | undefined
  lastAttemptAt: number | undefined
  lastError: string | undefined
  lastSyncLatencyMillis: number | undefined
  lastSnapshotRequestAt: number | undefined
  lastHintAt: number | undefined
}

const metricKeys: ReadonlyArray<keyof StateSyncMetrics> = [
  "mutations",
  "snapshotsSent",
  "snapshotsReceived",
  "deltasSent",
  "deltasReceived",
  "snapshotRequestsSent",
  "snapshotRequestsReceived",
  "staleDiscarded",
  "gapsDetected",
  "departedIgnored",
  "malformedReceived",
  "unsupportedVersion",
  "mailboxDropped",
  "noticesReceived",
  "pulls",
  "syncFailures",
  "suppressed",
  "immediate",
  "delayed",
  "periodicSyncs",
  "persistenceFailures"
]

export interface Shard<S, V, C> {
  readonly name: string
  readonly definition: DistributedState.DistributedState<S, V, any, C>
  readonly group: string
  /** Routes a decoded one-way message to the actor. */
  readonly deliver: (from: NodeId, message: Inbound) => Effect.Effect<void>
  /** Answers a pull with the current snapshot frame. */
  readonly reply: (from: NodeId, message: RequestSnapshot) => Effect.Effect<Uint8Array>
  readonly peerJoined: (node: NodeId) => Effect.Effect<void>
  readonly peerLeft: (node: NodeId) => Effect.Effect<void>
  /** A change-feed notice: `source`'s view reached `generation`. */
  readonly markStale: (source: NodeId, generation: Generation.Generation) => Effect.Effect<void>
  readonly mutate: (
    apply: (state: S) => { readonly state: S; readonly change: C | undefined }
  ) => Effect.Effect<Committed<S>, PersistenceFailed | MailboxFull | ActorStopped>
  readonly query: <A>(options: QueryOptions, f: (views: ViewMap<V>) => A) => Effect.Effect<A, StalePeer>
  readonly snapshot: Effect.Effect<ViewMap<V>>
  readonly changes: Stream.Stream<ViewMap<V>>
  readonly state: Effect.Effect<S>
  readonly local: Effect.Effect<StateView<V>>
  readonly syncStatus: Effect.Effect<ReadonlyArray<PeerSyncStatus>>
  readonly metrics: Effect.Effect<StateSyncMetrics>
  readonly health: (staleAfterMillis: number) => Effect.Effect<StateHealth>
}

const defaultUrgency: SyncUrgency.SyncUrgency = { _tag: "Default" }

/** Duration inputs to milliseconds, remembering the last few (queries pass the same literal again and again). */
const memoMillis = () => {
  const cache = new Map<Duration.Input, number>()
  let lastInput: Duration.Input | undefined
  let lastMillis = 0
  return (input: Duration.Input): number => {
    if (input === lastInput) return lastMillis
    let millis = cache.get(input)
    if (millis === undefined) {
      millis = Duration.toMillis(Duration.fromInputUnsafe(input))
      if (typeof input === "object") return millis
      if (cache.size >= 64) cache.clear()
      cache.set(input, millis)
    }
    lastInput = input
    lastMillis = millis
    return millis
  }
}

const monotonicMillis = Effect.clockWith((clock) => Effect.sync(() => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000))

/** Starts a shard in the current scope: loads or creates the owner state, spawns the actor, announces itself. */
export const make = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  options: ShardOptions,
  env: ShardEnv
): Effect.Effect<Shard<S, V, C>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = definition.name
    const self = env.runtime.nodeId
    const shardScope = yield* Scope.Scope
    // The shard's own clock: freshness is judged on the clock that stamped `syncedAt`.
    const clock = yield* Clock.Clock
    const monotonicNow = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
    const group = `dstate/state/${name}`
    const codec = makeStateCodec(definition)
    const persistence = options.persist ? env.persistence : undefined
    const counters = Counters.make("dstate", metricKeys, { state: name, node: self }, yield* Effect.context<never>())
    const count = counters.inc
    /**
     * Sync status of peers that had anything but accepted messages (a gap, a failure, a stale or duplicate
     * delta, a request, a pull). A peer whose every message was accepted has no entry: its last sync and
     * last attempt are its view's `syncedAt` (see `peerStatus`), which saves an object per replicated view.
     */
    const peers = new Map<NodeId, PeerStatusMut>()
    const departed = new Map<NodeId, number>()
    /**
     * The newest generation accepted from peers whose view was removed (departure, `DropAndWait`), bounded
     * like `departed`. While a view is held its generation is that newest one, so it is recorded on removal.
     */
    const lastSeen = new Map<NodeId, Generation.Generation>()
    const annotate = Effect.annotateLogs({ state: name, node: self })
    const project = (state: S): V => DistributedState_projectView(definition, state)

    // ---- startup: load, migrate or start fresh -------------------------------------------------
    const wallNow = yield* Clock.currentTimeMillis
    const loaded = persistence === undefined
      ? { owner: undefined, floor: undefined }
      : yield* loadOwner(definition, persistence, codec).pipe(annotate)
    let owner: Owner<S, V>
    if (loaded.owner !== undefined) {
      owner = { ...loaded.owner, view: project(loaded.owner.state) }
      if (loaded.migrated) yield* saveQuietly(owner)
    } else {
      const state = definition.initial()
      const incarnation = Generation.nextIncarnation(wallNow, loaded.floor)
      owner = { generation: Generation.initial(incarnation), state, view: project(state), createdAt: wallNow, modifiedAt: wallNow }
      yield* saveQuietly(owner)
    }

    function saveQuietly(o: Owner<S, V>) {
      if (persistence === undefined) return Effect.void
      return toRecord(o).pipe(
        Effect.flatMap((record) => persistence.save(name, record)),
        Effect.catch((error) =>
          Effect.logWarning("could not persist the state at startup").pipe(
            Effect.annotateLogs({ error: error.message }),
            annotate
          )
        )
      )
    }

    function toRecord(o: Owner<S, V>): Effect.Effect<StoredState, PersistenceFailed> {
      const encoded = codec.encodeState(o.state)
      if (Result.isFailure(encoded)) {
        return Effect.fail(new PersistenceFailed({ stateName: name, operation: "save", reason: encoded.failure.reason }))
      }
      return Effect.succeed({
        generation: o.generation,
        storageVersion: definition.storageVersion,
        value: encoded.success as StoredState["value"],
        createdAt: o.createdAt,
        modifiedAt: o.modifiedAt
      })
    }

    // ---- the published view map ----------------------------------------------------------------
    const localEntry = (o: Owner<S, V>, syncedAt: number): StateView<V> => ({
      source: self,
      generation: o.generation,
      wireVersion: definition.wireVersion,
      value: o.view,
      createdAt: o.createdAt,
      modifiedAt: o.modifiedAt,
      syncedAt,
      pendingRemote: undefined
    })
    const views = yield* SubscriptionRef.make<ViewMap<V>>(new Map([[self, localEntry(owner, yield* monotonicMillis)]]))
    // Freshness summary of the published map, so that the query fast path is O(1).
    let oldestPeerSync = Number.POSITIVE_INFINITY
    let pendingPeers = 0
    /** Members of this state whose view never arrived (a lost join exchange): stale for every bounded query. */
    const awaited = new Set<NodeId>()
    /**
     * Whether the published map may be held outside the actor (given to a query function, a snapshot, a
     * subscriber or the observer): the next publication then edits a copy, else the map itself. Once the
     * map's changes were subscribed to, every published map is given out.
     */
    let handedOut = env.observer !== undefined
    let subscribed = env.observer !== undefined
    const handOut = (): ViewMap<V> => {
      handedOut = true
      return views.value
    }
    const editable = (): Map<NodeId, StateView<V>> =>
      handedOut ? new Map(views.value) : views.value as Map<NodeId, StateView<V>>
    /** Publishes a new view map (actor only): `update` edits the map to publish (see `editable`). */
    const publishNow = (update: (map: Map<NodeId, StateView<V>>) => void): void => {
      const next = editable()
      update(next)
      let oldest = Number.POSITIVE_INFINITY
      let pending = 0
      for (const entry of next.values()) {
        if (entry.source === self) continue
        if (entry.syncedAt < oldest) oldest = entry.syncedAt
        if (entry.pendingRemote !== undefined) pending++
      }
      oldestPeerSync = oldest
      pendingPeers = pending
      if (awaited.size > 0) for (const node of awaited) if (next.has(node)) awaited.delete(node)
      env.observer?.onViews(name, self, next)
      // Only the actor writes: set and notify subscribers in place, without the ref's semaphore.
      views.value = next
      PubSub.publishUnsafe(views.pubsub, next)
      handedOut = subscribed
    }
    const publish = (update: (map: Map<NodeId, StateView<V>>) => void) => Effect.sync(() => publishNow(update))
    /** Publishes a new local view (actor only): peers' entries are unchanged, and so is their freshness summary. */
    const publishLocal = (entry: StateView<V>): void => {
      const next = editable()
      next.set(self, entry)
      env.observer?.onViews(name, self, next)
      views.value = next
      PubSub.publishUnsafe(views.pubsub, next)
      handedOut = subscribed
    }

    // ---- outbound ------------------------------------------------------------------------------
    let snapshotCache: { readonly generation: Generation.Generation; readonly frame: Uint8Array } | undefined
    /** The current snapshot frame, encoded once per generation. */
    const snapshotFrameNow = (): Result.Result<Uint8Array, MalformedMessage | MessageTooLarge> => {
      const o = owner
      if (snapshotCache !== undefined && Generation.equals(snapshotCache.generation, o.generation)) {
        return Result.succeed(snapshotCache.frame)
      }
      const payload = codec.encodeViewShared(o.view) // copied into the frame at once
      if (Result.isFailure(payload)) return payload
      // A plain envelope: every field comes from this shard, so the message class's checks are skipped.
      const frame = encodeFrame({
        _tag: "FullSnapshot",
        stateName: name,
        source: self,
        generation: o.generation,
        wireVersion: definition.wireVersion,
        createdAt: o.createdAt,
        modifiedAt: o.modifiedAt,
        payload: payload.success
      }, env.maxFrameBytes)
      if (Result.isSuccess(frame)) snapshotCache = { generation: o.generation, frame: frame.success }
      return frame
    }
    const snapshotFrame = Effect.suspend((): Effect.Effect<Uint8Array | undefined> => {
      const frame = snapshotFrameNow()
      return Result.isSuccess(frame) ? Effect.succeed(frame.success) : logSendFailure(frame.failure)
    })
    const logSendFailure = (error: { readonly message: string }) =>
      Effect.logError("cannot send the view").pipe(
        Effect.annotateLogs({ error: error.message, generation: Generation.format(owner.generation) }),
        annotate,
        Effect.as(undefined)
      )

    /** A snapshot makes this state's queued snapshots and deltas useless; a delta is kept, until a snapshot follows. */
    const snapshotSupersede = { key: name, replaces: true } as const
    const deltaSupersede = { key: name, replaces: false } as const

    const peersIn = (members: ReadonlyArray<NodeId>) => {
      let peers = 0
      for (const member of members) if (member !== self) peers++
      return peers
    }
    const peerCount = Effect.map(env.runtime.members(group), peersIn)

    const broadcastSnapshot: Effect.Effect<void> = Effect.flatMap(env.runtime.members(group), (members) => {
      const peers = peersIn(members)
      if (peers === 0) return Effect.void // nobody to tell: skip the encoding
      const frame = snapshotFrameNow()
      if (Result.isFailure(frame)) return logSendFailure(frame.failure)
      count("snapshotsSent", peers)
      return env.runtime.broadcast(group, frame.success, snapshotSupersede)
    })

    const sendSnapshot = (to: NodeId) =>
      Effect.gen(function*() {
        const frame = yield* snapshotFrame
        if (frame === undefined) return
        count("snapshotsSent")
        yield* env.runtime.send(to, frame, snapshotSupersede).pipe(Effect.ignore)
      })

    const requestFrame = (to: NodeId | undefined) => {
      const held = to === undefined ? undefined : SubscriptionRef.getUnsafe(views).get(to)?.generation ?? lastSeen.get(to)
      const frame = encodeFrame(
        new RequestSnapshot({
          stateName: name,
          source: self,
          wireVersion: definition.wireVersion,
          ...(held === undefined ? {} : { generation: held })
        }),
        env.maxFrameBytes
      )
      return Result.getOrThrow(frame)
    }

    const requestSnapshot = (to: NodeId, now: number) =>
      Effect.suspend(() => {
        const status = peerStatus(to)
        if (status.lastSnapshotRequestAt !== undefined && now - status.lastSnapshotRequestAt < Duration.toMillis(options.pullTimeout)) {
          return Effect.void
        }
        status.lastSnapshotRequestAt = now
        count("snapshotRequestsSent")
        return env.runtime.send(to, requestFrame(to)).pipe(Effect.ignore)
      })

    const broadcastDelta = (generation: Generation.Generation, modifiedAt: number, delta: D): Effect.Effect<void> =>
      Effect.flatMap(peerCount, (peers) => {
        if (peers === 0) return Effect.void
        const payload = codec.encodeDeltaShared(delta) // copied into the frame at once
        if (Result.isFailure(payload)) return logSendFailure(payload.failure)
        const frame = encodeFrame(
          { _tag: "DeltaUpdate", stateName: name, source: self, generation, wireVersion: definition.wireVersion, modifiedAt, payload: payload.success },
          env.maxFrameBytes
        )
        if (Result.isFailure(frame)) {
          // Too large as a delta: peers will see a gap and ask for the snapshot.
          return logSendFailure(frame.failure)
        }
        count("deltasSent", peers)
        return env.runtime.broadcast(group, frame.success, deltaSupersede)
      })

    // ---- peer bookkeeping ----------------------------------------------------------------------
    /** A peer's status entry, created from its view's times when it has none yet (see `peers`). */
    function peerStatus(node: NodeId): PeerStatusMut {
      let status = peers.get(node)
      if (status === undefined) {
        status = derivedStatus(SubscriptionRef.getUnsafe(views).get(node))
        peers.set(node, status)
      }
      return status
    }

    function derivedStatus(held: StateView<V> | undefined): PeerStatusMut {
      return {
        gapCount: 0,
        consecutiveFailures: 0,
        lastSyncAt: held?.syncedAt,
        lastAttemptAt: held?.syncedAt,
        lastError: undefined,
        lastSyncLatencyMillis: undefined,
        lastSnapshotRequestAt: undefined,
        lastHintAt: undefined
      }
    }

    const isDeparted = (node: NodeId, generation: Generation.Generation) => {
      const incarnation = departed.get(node)
      return incarnation !== undefined && generation.incarnation <= incarnation
    }

    const reportDeparted = () =>
      env.observer?.onDeparted?.(name, self, {
        departed: departed.size,
        remembered: lastSeen.size,
        capacity: env.departedCapacity
      })

    const remember = (node: NodeId, generation: Generation.Generation) => {
      lastSeen.delete(node)
      lastSeen.set(node, generation)
      while (lastSeen.size > env.departedCapacity) lastSeen.delete(lastSeen.keys().next().value as NodeId)
      reportDeparted()
    }

    const markDeparted = (node: NodeId, incarnation: number) => {
      departed.delete(node)
      departed.set(node, incarnation)
      while (departed.size > env.departedCapacity) {
        const oldest = departed.keys().next().value as NodeId
        departed.delete(oldest)
      }
      reportDeparted()
    }

    const recordFailure = (node: NodeId, error: { readonly message: string }) => {
      const status = peerStatus(node)
      status.consecutiveFailures++
      status.lastError = error.message
      count("syncFailures")
    }

    const onDecodeFailure = (from: NodeId, error: MalformedMessage | UnsupportedWireVersion) =>
      Effect.gen(function*() {
        recordFailure(from, error)
        if (error._tag === "MalformedMessage") {
          count("malformedReceived")
          return yield* Effect.logWarning("rejected a malformed payload").pipe(
            Effect.annotateLogs({ peer: from, error: error.reason }),
            annotate
          )
        }
        count("unsupportedVersion")
        yield* Effect.logWarning("peer sent an unsupported wire version").pipe(
          Effect.annotateLogs({ peer: from, wireVersion: error.wireVersion, policy: options.versionMismatchPolicy }),
          annotate
        )
        if (options.versionMismatchPolicy === "DropAndWait") {
          const held = SubscriptionRef.getUnsafe(views).get(from)
          if (held !== undefined) remember(from, held.generation)
          yield* publish((map) => map.delete(from))
        }
      })

    /** A peer holds a newer generation of ours than we do: our clock stepped back or an older state was restored. */
    const reincarnate = (seen: Generation.Generation) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const incarnation = Generation.nextIncarnation(now, Math.max(seen.incarnation, owner.generation.incarnation))
        const next: Owner<S, V> = { ...owner, generation: Generation.initial(incarnation), modifiedAt: now }
        yield* Effect.logWarning("a peer holds a newer generation of this node's state; moving to a new incarnation").pipe(
          Effect.annotateLogs({ seen: Generation.format(seen), held: Generation.format(owner.generation), incarnation }),
          annotate
        )
        if (persistence !== undefined) {
          const saved = yield* toRecord(next).pipe(Effect.flatMap((r) => persistence.save(name, r)), Effect.result)
          if (Result.isFailure(saved)) {
            count("persistenceFailures")
            return false
          }
        }
        owner = next
        const syncedAt = yield* monotonicMillis
        publishLocal(localEntry(next, syncedAt))
        yield* broadcastSnapshot
        return true
      })

    // ---- inbound -------------------------------------------------------------------------------
    const hintStale = (from: NodeId, now: number) =>
      Effect.suspend(() => {
        // The owner sent something older than what we hold: tell it what we hold (rate-limited), so
        // an owner that went back in time moves to a newer incarnation.
        const status = peerStatus(from)
        if (status.lastHintAt !== undefined && now - status.lastHintAt < Duration.toMillis(options.pullTimeout)) {
          return Effect.void
        }
        status.lastHintAt = now
        count("snapshotRequestsSent")
        return env.runtime.send(from, requestFrame(from)).pipe(Effect.ignore)
      })

    /** An attempt that did not end in an accepted view: recorded in the peer's status entry. */
    const attempted = (from: NodeId, now: number): PeerStatusMut => {
      const status = peerStatus(from)
      status.lastAttemptAt = now
      return status
    }

    /** An accepted message: a status entry is kept current; without one the view's `syncedAt` says it all. */
    const synced = (from: NodeId, now: number, clearRequest: boolean) => {
      const status = peers.get(from)
      if (status === undefined) return
      status.lastAttemptAt = now
      status.lastSyncAt = now
      status.consecutiveFailures = 0
      if (clearRequest) status.lastSnapshotRequestAt = undefined
    }

    /**
     * Publishes the view an accepted snapshot or delta makes. A change-feed marker outlives it only when
     * it announced a newer generation.
     */
    const publishAccepted = (
      from: NodeId,
      m: FullSnapshot | DeltaUpdate,
      value: V,
      createdAt: number,
      pending: Generation.Generation | undefined,
      now: number
    ) =>
      publishNow((map) =>
        map.set(from, {
          source: from,
          generation: m.generation,
          wireVersion: m.wireVersion,
          value,
          createdAt,
          modifiedAt: m.modifiedAt,
          syncedAt: now,
          pendingRemote: pending !== undefined && Generation.isNewer(pending, m.generation) ? pending : undefined
        })
      )

    const onSnapshot = (from: NodeId, m: FullSnapshot): Effect.Effect<void> => {
      const now = monotonicNow()
      const held = SubscriptionRef.getUnsafe(views).get(from)
      // Without a view (the peer left and came back), the newest generation ever seen from it still
      // bounds what may be accepted: an owner that restarted with an older generation is told so.
      const seen = held?.generation ?? lastSeen.get(from)
      const verdict = held === undefined && seen !== undefined && Generation.equals(seen, m.generation)
        ? { _tag: "Accept" as const }
        : Acceptance.snapshot(seen, m.generation)
      switch (verdict._tag) {
        case "Duplicate": {
          count("staleDiscarded")
          synced(from, now, false)
          const pending = held!.pendingRemote
          const clearPending = pending !== undefined && !Generation.isNewer(pending, m.generation)
          publishNow((map) =>
            map.set(from, { ...held!, syncedAt: now, pendingRemote: clearPending ? undefined : pending })
          )
          return Effect.void
        }
        case "Stale": {
          count("staleDiscarded")
          attempted(from, now)
          return hintStale(from, now)
        }
        default: {
          const value = codec.decodeView(m.payload, m.wireVersion, from)
          if (Result.isFailure(value)) {
            attempted(from, now)
            return onDecodeFailure(from, value.failure)
          }
          count("snapshotsReceived")
          synced(from, now, true)
          publishAccepted(from, m, value.success, m.createdAt, held?.pendingRemote, now)
          return Effect.void
        }
      }
    }

    const onDelta = (from: NodeId, m: DeltaUpdate): Effect.Effect<void> => {
      const now = monotonicNow()
      const held = SubscriptionRef.getUnsafe(views).get(from)
      const verdict = Acceptance.delta(held?.generation, m.generation)
      switch (verdict._tag) {
        case "Duplicate":
        case "Stale": {
          count("staleDiscarded")
          attempted(from, now)
          return verdict._tag === "Stale" ? hintStale(from, now) : Effect.void
        }
        case "Gap": {
          count("gapsDetected")
          attempted(from, now).gapCount++
          return Effect.logDebug("gap in deltas; requesting a snapshot").pipe(
            Effect.annotateLogs({
              peer: from,
              reason: verdict.reason,
              held: held === undefined ? "none" : Generation.format(held.generation),
              received: Generation.format(m.generation)
            }),
            annotate,
            Effect.andThen(requestSnapshot(from, now))
          )
        }
        case "Accept": {
          if (definition._tag !== "Delta") {
            attempted(from, now)
            return onDecodeFailure(from, new MalformedMessage({ node: from, stateName: name, reason: "delta for a simple state" }))
          }
          const delta = codec.decodeDelta(m.payload, m.wireVersion, from)
          if (Result.isFailure(delta)) {
            attempted(from, now)
            return onDecodeFailure(from, delta.failure)
          }
          const applied = Result.try({
            try: () => definition.applyDelta(held!.value, delta.success),
            catch: (cause) => new MalformedMessage({ node: from, stateName: name, reason: `applyDelta threw: ${String(cause)}` })
          })
          if (Result.isFailure(applied)) {
            attempted(from, now)
            return Effect.andThen(onDecodeFailure(from, applied.failure), requestSnapshot(from, now))
          }
          count("deltasReceived")
          synced(from, now, false)
          publishAccepted(from, m, applied.success, held!.createdAt, held!.pendingRemote, now)
          return Effect.void
        }
      }
    }

    const onRequest = (from: NodeId, m: RequestSnapshot) =>
      Effect.gen(function*() {
        count("snapshotRequestsReceived")
        if (m.generation !== undefined && Generation.isNewer(m.generation, owner.generation)) {
          const moved = yield* reincarnate(m.generation)
          if (moved) return // the broadcast reached the requester too
        }
        yield* sendSnapshot(from)
      })

    /** The synchronous part of a mutation: the next owner state, or the defect `apply` or `project` threw. */
    const prepareMutation = (
      apply: (state: S) => { readonly state: S; readonly change: C | undefined }
    ): Result.Result<{ readonly before: Owner<S, V>; readonly next: Owner<S, V>; readonly change: C | undefined }, unknown> => {
      const before = owner
      const result = Result.try({ try: () => apply(before.state), catch: (cause) => cause })
      if (Result.isFailure(result)) return Result.fail(result.failure)
      const now = clock.currentTimeMillisUnsafe()
      // Project before persisting: a projection that throws must not leave a persisted generation behind.
      const view = Result.try({ try: () => project(result.success.state), catch: (cause) => cause })
      if (Result.isFailure(view)) return Result.fail(view.failure)
      const next: Owner<S, V> = {
        generation: Generation.next(before.generation),
        state: result.success.state,
        view: view.success,
        createdAt: before.createdAt,
        modifiedAt: now
      }
      return Result.succeed({ before, next, change: result.success.change })
    }

    const onMutate = (
      apply: (state: S) => { readonly state: S; readonly change: C | undefined },
      done: Deferred.Deferred<Committed<S>, PersistenceFailed>
    ): Effect.Effect<void> => {
      const prepared = prepareMutation(apply)
      if (Result.isFailure(prepared)) return Deferred.die(done, prepared.failure)
      const { before, next, change } = prepared.success
      if (persistence === undefined) return commit(before, next, change, done)
      return toRecord(next).pipe(
        Effect.flatMap((record) => {
          if (codec.encodeChange === undefined || change === undefined) return persistence.save(name, record)
          const encoded = codec.encodeChange(change)
          return Result.isSuccess(encoded)
            ? persistence.save(name, record, { generation: next.generation, value: encoded.success as StoredState["value"] })
            : Effect.fail(new PersistenceFailed({ stateName: name, operation: "save", reason: encoded.failure.reason }))
        }),
        Effect.matchEffect({
          onFailure: (error) => {
            count("persistenceFailures")
            return Effect.logWarning("mutation not committed: persistence failed").pipe(
              Effect.annotateLogs({ error: error.message, age: before.generation.age }),
              annotate,
              Effect.andThen(Deferred.fail(done, error))
            )
          },
          onSuccess: () => commit(before, next, change, done)
        })
      )
    }

    /** Makes a persisted (or unpersisted) mutation visible, acknowledges it, and hands it to the sync engine. */
    const commit = (
      before: Owner<S, V>,
      committed: Owner<S, V>,
      change: C | undefined,
      done: Deferred.Deferred<Committed<S>, PersistenceFailed> | undefined
    ): Effect.Effect<void> => {
      owner = committed
      count("mutations")
      const syncedAt = monotonicNow()
      publishLocal(localEntry(committed, syncedAt))
      if (done !== undefined) Deferred.doneUnsafe(done, Effect.succeed({ generation: committed.generation, state: committed.state }))
      return dispatch(before.view, committed, change)
    }

    /**
     * A mutation without persistence on an idle actor: handled at once in the caller's fiber, without a
     * message or a reply (`undefined` when the actor is busy or paused: the caller goes through the mailbox).
     */
    const mutateNow = (
      apply: (state: S) => { readonly state: S; readonly change: C | undefined }
    ): Effect.Effect<Committed<S>> | undefined => {
      const runIfIdle = actor.runIfIdleUnsafe
      if (persistence !== undefined || runIfIdle === undefined) return undefined
      let outcome: Result.Result<Committed<S>, unknown> | undefined
      const rest = runIfIdle(() => {
        const prepared = prepareMutation(apply)
        if (Result.isFailure(prepared)) {
          outcome = Result.fail(prepared.failure)
          return Effect.void
        }
        const { before, next, change } = prepared.success
        outcome = Result.succeed({ generation: next.generation, state: next.state })
        const sent = commit(before, next, change, undefined)
        if (resyncTo.size === 0 && resyncFrom.size === 0) return sent
        return Effect.andThen(sent, resync)
      })
      if (rest === undefined || outcome === undefined) return undefined
      if (Result.isFailure(outcome)) return Effect.die(outcome.failure)
      return isSucceeded(rest) ? Effect.succeed(outcome.success) : Effect.as(rest, outcome.success)
    }

    // ---- the sync engine: what a committed change sends, and when --------------------------------
    /** The generation peers last received by push (delta or snapshot). */
    let lastPushed: Generation.Generation = owner.generation
    /** The delta of the newest mutation, while it is the only change not yet pushed. */
    let unsentDelta: { readonly generation: Generation.Generation; readonly delta: D } | undefined
    let delayedSend: { readonly deadline: number; readonly fiber: Fiber.Fiber<void> } | undefined
    let lastPeriodic: Generation.Generation | undefined

    const cancelDelayed = Effect.suspend(() => {
      const pending = delayedSend
      delayedSend = undefined
      return pending === undefined ? Effect.void : Fiber.interrupt(pending.fiber)
    })

    /** Sends whatever peers have not received yet: the single pending delta when it follows what they hold, else a snapshot. */
    const pushNow: Effect.Effect<void> = Effect.suspend(() =>
      delayedSend === undefined ? pushCurrent() : Effect.andThen(cancelDelayed, Effect.suspend(pushCurrent))
    )
    const pushCurrent = (): Effect.Effect<void> => {
      const current = owner
      if (Generation.equals(lastPushed, current.generation)) return Effect.void
      const followsPushed = lastPushed.incarnation === current.generation.incarnation &&
        lastPushed.age + 1 === current.generation.age
      const pending = unsentDelta
      // Recorded before sending: nothing else runs on this actor meanwhile, and a send never fails.
      lastPushed = current.generation
      unsentDelta = undefined
      return definition._tag === "Delta" && followsPushed && pending !== undefined &&
          Generation.equals(pending.generation, current.generation)
        ? broadcastDelta(current.generation, current.modifiedAt, pending.delta)
        : broadcastSnapshot
    }

    /**
     * Active push of snapshots, coalesced: the first commit since the last push schedules one, which
     * runs on this actor as soon as the committing fiber yields and sends the newest generation. Commits
     * made before then (a burst of mutations in one turn) go out in one snapshot: its frames could not
     * have left sooner, since nothing reaches a peer before the committing fiber yields.
     */
    let pushScheduled = false
    const pushMessage: Message<S, C> = { _tag: "Push" }
    /** Schedules the push (at once, when called: the send is a side effect of building the dispatch). */
    const schedulePushUnsafe = (): Effect.Effect<void> => {
      if (!pushScheduled) pushScheduled = actor.tellLaterUnsafe!(pushMessage)
      return Effect.void
    }

    const urgencyOf = (oldView: V, committed: Owner<S, V>, delta: D | undefined): SyncUrgency.SyncUrgency =>
      definition._tag === "Delta" && definition.syncUrgency !== undefined && delta !== undefined
        ? definition.syncUrgency(oldView, committed.view, delta)
        : defaultUrgency

    const dispatch = (oldView: V, committed: Owner<S, V>, change: C | undefined): Effect.Effect<void> => {
      let logged: Effect.Effect<void> | undefined
      let delta: D | undefined
      if (definition._tag === "Delta" && change !== undefined) {
        const projected = Result.try({ try: () => definition.projectDelta(change), catch: (cause) => cause })
        if (Result.isSuccess(projected)) delta = projected.success
        else {
          logged = Effect.logError("projectDelta threw; peers will get a snapshot").pipe(
            Effect.annotateLogs({ error: String(projected.failure) })
          )
        }
      }
      // A delta is only worth keeping when it is the one change peers miss.
      const followsPushed = lastPushed.incarnation === committed.generation.incarnation &&
        lastPushed.age + 1 === committed.generation.age
      unsentDelta = delta !== undefined && followsPushed ? { generation: committed.generation, delta } : undefined
      let urgency: SyncUrgency.SyncUrgency = defaultUrgency
      if (definition._tag === "Delta" && definition.syncUrgency !== undefined && delta !== undefined) {
        const chosen = Result.try({ try: () => urgencyOf(oldView, committed, delta), catch: (cause) => cause })
        if (Result.isSuccess(chosen)) urgency = chosen.success
        else {
          const log = Effect.logError("syncUrgency threw; following the strategy").pipe(
            Effect.annotateLogs({ error: String(chosen.failure) })
          )
          logged = logged === undefined ? log : Effect.andThen(logged, log)
        }
      }
      const send = sendFor(urgency, committed)
      return logged === undefined ? send : Effect.andThen(logged, send)
    }

    const sendFor = (urgency: SyncUrgency.SyncUrgency, committed: Owner<S, V>): Effect.Effect<void> => {
      switch (urgency._tag) {
        case "Immediate": {
          count("immediate")
          return pushNow
        }
        case "Suppress": {
          count("suppressed")
          return Effect.void
        }
        case "Delayed": {
          count("delayed")
          const deadline = clock.currentTimeMillisUnsafe() + Duration.toMillis(urgency.duration)
          if (delayedSend !== undefined && delayedSend.deadline <= deadline) return Effect.void
          return Effect.gen(function*() {
            yield* cancelDelayed
            const fiber = yield* env.runtime.after(urgency.duration, tellControl({ _tag: "FlushDelayed" })).pipe(
              Scope.provide(shardScope)
            )
            delayedSend = { deadline, fiber }
          })
        }
        case "Default": {
          switch (options.strategy.pushMode) {
            case "ActivePush":
              // Deltas go one by one (a burst of them must not become a snapshot); snapshots are coalesced.
              return definition._tag === "Delta" || actor.tellLaterUnsafe === undefined ? pushNow : schedulePushUnsafe()
            case "FeedLazyPull":
              env.notify({ stateName: name, source: self, generation: committed.generation })
              return Effect.void
            case "None":
              return Effect.void
          }
        }
      }
    }

    const onMarkStale = (source: NodeId, generation: Generation.Generation) =>
      Effect.gen(function*() {
        if (isDeparted(source, generation)) return count("departedIgnored")
        const held = SubscriptionRef.getUnsafe(views).get(source)
        if (held === undefined) {
          // We never got this peer's view (a lost join snapshot): ask for it.
          return yield* requestSnapshot(source, yield* monotonicMillis)
        }
        if (!Generation.isNewer(generation, held.generation)) return
        if (held.pendingRemote !== undefined && !Generation.isNewer(generation, held.pendingRemote)) return
        count("noticesReceived")
        yield* publish((map) => map.set(source, { ...held, pendingRemote: generation }))
      })

    const onPeriodicSync = Effect.gen(function*() {
      const current = owner.generation
      if (lastPeriodic !== undefined && Generation.equals(lastPeriodic, current)) return
      yield* cancelDelayed
      count("periodicSyncs")
      yield* broadcastSnapshot
      lastPeriodic = current
      lastPushed = current
      unsentDelta = undefined
    })

    const onPeerJoined = (node: NodeId) =>
      Effect.gen(function*() {
        departed.delete(node)
        const members = yield* env.runtime.members(group)
        if (!members.includes(node)) return
        yield* sendSnapshot(node)
        count("snapshotRequestsSent")
        yield* env.runtime.send(node, requestFrame(node)).pipe(Effect.ignore)
        if (!SubscriptionRef.getUnsafe(views).has(node)) awaited.add(node)
        yield* awaitView(node)
      })

    /** The join exchange can be lost: until a member's view arrives, ask again every `pullTimeout`. */
    const awaitView = (node: NodeId) =>
      env.runtime.after(options.pullTimeout, tellControl({ _tag: "AwaitView", node })).pipe(
        Scope.provide(shardScope),
        Effect.asVoid
      )

    const onAwaitView = (node: NodeId) =>
      Effect.gen(function*() {
        if (departed.has(node) || SubscriptionRef.getUnsafe(views).has(node)) return
        const members = yield* env.runtime.members(group)
        if (!members.includes(node)) return void awaited.delete(node)
        yield* requestSnapshot(node, yield* monotonicMillis)
        yield* awaitView(node)
      })

    const onPeerLeft = (node: NodeId) =>
      Effect.gen(function*() {
        const held = SubscriptionRef.getUnsafe(views).get(node)
        // Without a view we do not know its incarnation: ignore all until it rejoins.
        markDeparted(node, held === undefined ? Number.MAX_SAFE_INTEGER : held.generation.incarnation)
        awaited.delete(node)
        peers.delete(node)
        if (held !== undefined) {
          remember(node, held.generation)
          yield* publish((map) => map.delete(node))
        }
      })

    const receive = (message: Message<S, C>): Effect.Effect<void> => {
      switch (message._tag) {
        case "Mutate":
          return onMutate(message.apply, message.done)
        case "PeerJoined":
          return onPeerJoined(message.node)
        case "AwaitView":
          return onAwaitView(message.node)
        case "PeerLeft":
          return onPeerLeft(message.node)
        case "MarkStale":
          return onMarkStale(message.source, message.generation)
        case "FlushDelayed":
          return Effect.suspend(() => {
            delayedSend = undefined
            return pushNow
          })
        case "Push":
          return Effect.suspend(() => {
            pushScheduled = false
            return pushNow
          })
        case "PeriodicSync":
          return onPeriodicSync
        case "Inbound": {
          const { from, message: m } = message
          const handled = m._tag === "RequestSnapshot"
            ? onRequest(from, m)
            : isDeparted(from, m.generation)
            ? Effect.sync(() => {
              count("departedIgnored")
            })
            : m._tag === "FullSnapshot"
            ? onSnapshot(from, m)
            : onDelta(from, m)
          return message.done === undefined ? handled : Effect.ensuring(handled, Deferred.succeed(message.done, undefined))
        }
      }
    }

    // The bound applies to data (mutations and inbound sync messages). Control messages (membership,
    // timers, feed markers) are never dropped: losing a leave would leave a ghost view behind.
    const capacity = options.mailbox === "unbounded" ? Number.POSITIVE_INFINITY : options.mailbox
    if (!(capacity >= 1)) return yield* Effect.die(new Error(`mailbox capacity must be >= 1, got ${capacity}`))
    let pendingData = 0
    const full = new MailboxFull({ actor: `state/${name}`, capacity })
    /** Peers whose messages were dropped on a full mailbox: resynced once the mailbox drains. */
    const resyncFrom = new Set<NodeId>()
    const resyncTo = new Set<NodeId>()
    const isData = (m: Message<S, C>) => m._tag === "Mutate" || m._tag === "Inbound"

    const resync = Effect.suspend(() => {
      if (pendingData > 0 || (resyncFrom.size === 0 && resyncTo.size === 0)) return Effect.void
      const from = [...resyncFrom]
      const to = [...resyncTo]
      resyncFrom.clear()
      resyncTo.clear()
      return Effect.gen(function*() {
        for (const node of to) yield* sendSnapshot(node)
        for (const node of from) {
          count("snapshotRequestsSent")
          yield* env.runtime.send(node, requestFrame(node)).pipe(Effect.ignore)
        }
      })
    })

    const actor: ActorRef<Message<S, C>> = yield* env.runtime.spawn<Message<S, C>, never>({
      name: `state/${name}`,
      mailbox: "unbounded",
      receive: (m) => {
        if (!isData(m)) return receive(m)
        // Taken out of the mailbox: the bound counts waiting messages, as a queue's would.
        pendingData--
        const handled = receive(m)
        if (!Exit.isExit(handled as Effect.Effect<void>)) return Effect.andThen(handled, resync)
        return resyncTo.size === 0 && resyncFrom.size === 0 ? handled : Effect.andThen(handled, resync)
      },
      onDefect: (m, defect) =>
        m._tag === "Mutate"
          ? Deferred.die(m.done, defect).pipe(Effect.asVoid)
          : m._tag === "Inbound" && m.done !== undefined
          ? Deferred.succeed(m.done, undefined).pipe(Effect.asVoid)
          : Effect.void
    }).pipe(annotate) // the actor's fiber inherits the annotations: every log of a handler names state and node

    /** Hands a data message to the actor through `send`, within the state's mailbox bound. */
    const dataVia = (send: (message: Message<S, C>) => Effect.Effect<void, MailboxFull | ActorStopped>) =>
    (message: Message<S, C>): Effect.Effect<void, MailboxFull | ActorStopped> =>
      Effect.suspend(() => {
        if (pendingData >= capacity) return Effect.fail(full)
        pendingData++
        return send(message).pipe(Effect.tapError(untold))
      })
    const untold = () =>
      Effect.sync(() => {
        pendingData--
      })
    const tellData = dataVia(actor.tell)
    /** A mutation: handled at once in the caller's fiber when the actor is idle (see `ActorRef.tellOrRun`). */
    const runData = actor.tellOrRun === undefined ? tellData : dataVia(actor.tellOrRun)

    const tellControl = (message: Message<S, C>): Effect.Effect<void> => Effect.ignore(actor.tell(message))

    /** Delivers an inbound sync message, or drops it (counted) and remembers to resync with its sender. */
    const deliverInbound = (from: NodeId, message: Inbound) =>
      tellData({ _tag: "Inbound", from, message }).pipe(
        Effect.catch(() =>
          Effect.sync(() => {
            count("mailboxDropped")
            if (message._tag === "RequestSnapshot") resyncTo.add(from)
            else resyncFrom.add(from)
          })
        )
      )

    // ---- pulls ---------------------------------------------------------------------------------
    const inFlightPulls = new Map<NodeId, Deferred.Deferred<void, StalePeer>>()
    const stalePeer = (node: NodeId) =>
      new StalePeer({ stateName: name, node, lastSyncedAt: SubscriptionRef.getUnsafe(views).get(node)?.syncedAt ?? 0 })

    const runPull = (node: NodeId) =>
      Effect.gen(function*() {
        count("pulls")
        const started = yield* monotonicMillis
        peerStatus(node).lastAttemptAt = started
        const reply = yield* env.runtime.request(node, requestFrame(node), options.pullTimeout).pipe(Effect.result)
        if (Result.isFailure(reply)) {
          recordFailure(node, reply.failure)
          return yield* Effect.fail(stalePeer(node))
        }
        const decoded = decodeFrame(reply.success, env.maxFrameBytes, node)
        if (Result.isFailure(decoded) || decoded.success._tag !== "FullSnapshot" || decoded.success.stateName !== name) {
          const error = Result.isFailure(decoded)
            ? decoded.failure
            : new MalformedMessage({ node, stateName: name, reason: `unexpected reply ${decoded.success._tag}` })
          recordFailure(node, error)
          count("malformedReceived")
          if (Result.isFailure(decoded)) env.observer?.onRejectedFrame(self, node, decoded.failure)
          return yield* Effect.fail(stalePeer(node))
        }
        const applied = yield* Deferred.make<void>()
        const told = yield* tellData({ _tag: "Inbound", from: node, message: decoded.success, done: applied }).pipe(
          Effect.result
        )
        if (Result.isFailure(told)) {
          recordFailure(node, told.failure)
          return yield* Effect.fail(stalePeer(node))
        }
        yield* Deferred.await(applied)
        peerStatus(node).lastSyncLatencyMillis = (yield* monotonicMillis) - started
      })

    const pull = (node: NodeId): Effect.Effect<void, StalePeer> =>
      Effect.suspend(() => {
        const existing = inFlightPulls.get(node)
        if (existing !== undefined) return Deferred.await(existing)
        return Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const deferred = yield* Deferred.make<void, StalePeer>()
            inFlightPulls.set(node, deferred)
            const exit = yield* Effect.exit(restore(runPull(node)))
            inFlightPulls.delete(node)
            yield* Deferred.done(deferred, exit)
            return yield* exit
          })
        )
      })

    const staleEntries = (map: ViewMap<V>, now: number, maxStaleness: number): Array<StateView<V>> => {
      const stale: Array<StateView<V>> = []
      for (const entry of map.values()) {
        if (entry.source === self) continue
        if (entry.pendingRemote !== undefined || now - entry.syncedAt > maxStaleness) stale.push(entry)
      }
      return stale
    }

    const toMillis = memoMillis()
    /** The last query's effect: a hot loop that queries with the same function and bound allocates nothing. */
    let lastQuery: { readonly f: unknown; readonly input: Duration.Input; readonly effect: Effect.Effect<unknown, StalePeer> } | undefined
    const query = <A>(queryOptions: QueryOptions, f: (views: ViewMap<V>) => A): Effect.Effect<A, StalePeer> => {
      const input = queryOptions.maxStaleness
      if (input === undefined) return Effect.sync(() => f(handOut()))
      if (lastQuery !== undefined && lastQuery.f === f && lastQuery.input === input) {
        return lastQuery.effect as Effect.Effect<A, StalePeer> // made by this function for this very `f`
      }
      const maxStaleness = toMillis(input)
      const effect = Effect.suspend(() => {
        const now = Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
        if (pendingPeers === 0 && awaited.size === 0 && now - oldestPeerSync <= maxStaleness) return Exit.succeed(f(handOut()))
        return slowQuery(maxStaleness, now, f)
      })
      if (typeof input !== "object") lastQuery = { f, input, effect }
      return effect
    }

    const slowQuery = <A>(maxStaleness: number, now: number, f: (views: ViewMap<V>) => A): Effect.Effect<A, StalePeer> =>
      Effect.gen(function*() {
        const map = SubscriptionRef.getUnsafe(views)
        // Stale views, and members whose view never arrived.
        const stale = [...staleEntries(map, now, maxStaleness).map((entry) => entry.source), ...awaited]
        if (stale.length === 0) return f(handOut())
        if (!options.strategy.pullOnQuery) return yield* Effect.fail(stalePeer(stale[0]))
        yield* Effect.forEach(stale, pull, { concurrency: "unbounded", discard: true })
        const after = SubscriptionRef.getUnsafe(views)
        const stillStale = staleEntries(after, yield* monotonicMillis, maxStaleness)
        if (stillStale.length > 0) return yield* Effect.fail(stalePeer(stillStale[0].source))
        if (awaited.size > 0) return yield* Effect.fail(stalePeer([...awaited][0]))
        return f(handOut())
      })

    // ---- announce ------------------------------------------------------------------------------
    yield* env.runtime.joinGroup(group)
    yield* Effect.addFinalizer(() => env.runtime.leaveGroup(group))
    yield* broadcastSnapshot
    const members = yield* env.runtime.members(group)
    const others = members.filter((m) => m !== self)
    count("snapshotRequestsSent", others.length)
    if (others.length > 0) yield* env.runtime.broadcast(group, requestFrame(undefined))
    for (const other of others) {
      awaited.add(other)
      yield* awaitView(other)
    }
    lastPushed = owner.generation

    const periodic = options.strategy.periodicFullSync
    if (periodic !== undefined) {
      yield* env.runtime.every(periodic, tellControl({ _tag: "PeriodicSync" }))
    }
    if (
      definition._tag === "Delta" && definition.syncUrgency !== undefined && periodic === undefined &&
      !options.strategy.pullOnQuery
    ) {
      yield* Effect.logWarning(
        "this state's syncUrgency may suppress changes and the strategy has neither periodic sync nor pull on query: a suppressed change reaches peers only with the next sent update"
      ).pipe(annotate)
    }

    const statusOf = (node: NodeId, status: PeerSyncStatus | PeerStatusMut, map: ViewMap<V>): PeerSyncStatus => {
      const held = map.get(node)
      return {
        node,
        localAge: owner.generation.age,
        remoteAge: held?.generation.age,
        remoteIncarnation: held?.generation.incarnation,
        gapCount: status.gapCount,
        consecutiveFailures: status.consecutiveFailures,
        lastSyncAt: status.lastSyncAt,
        lastAttemptAt: status.lastAttemptAt,
        lastError: status.lastError,
        lastSyncLatencyMillis: status.lastSyncLatencyMillis
      }
    }

    return {
      name,
      definition,
      group,
      deliver: deliverInbound,
      reply: (from, message) =>
        Effect.gen(function*() {
          if (message.generation !== undefined && Generation.isNewer(message.generation, owner.generation)) {
            // Let the actor move to a newer incarnation; the pull gets the current snapshot meanwhile.
            yield* deliverInbound(from, message)
          } else {
            count("snapshotRequestsReceived")
          }
          count("snapshotsSent")
          const frame = yield* snapshotFrame
          return frame ?? new Uint8Array(0)
        }),
      peerJoined: (node) => tellControl({ _tag: "PeerJoined", node }),
      peerLeft: (node) => tellControl({ _tag: "PeerLeft", node }),
      markStale: (source, generation) => tellControl({ _tag: "MarkStale", source, generation }),
      mutate: (apply) =>
        Effect.suspend(() => {
          const now = mutateNow(apply)
          if (now !== undefined) return now
          const done = Deferred.makeUnsafe<Committed<S>, PersistenceFailed>()
          const handled = Effect.andThen(runData({ _tag: "Mutate", apply, done }), Deferred.await(done))
          // The reply resumes this fiber inside the actor's turn: without persistence, let the actor finish
          // it first, so that the caller's next mutation finds it idle instead of queueing behind it.
          return persistence === undefined ? Effect.tap(handled, () => Effect.yieldNow) : handled
        }),
      query,
      snapshot: Effect.sync(handOut),
      changes: Stream.unwrap(Effect.sync(() => {
        subscribed = true
        handedOut = true
        return SubscriptionRef.changes(views)
      })),
      state: Effect.sync(() => owner.state),
      local: Effect.sync(() => SubscriptionRef.getUnsafe(views).get(self)!),
      syncStatus: Effect.sync(() => {
        const map = SubscriptionRef.getUnsafe(views)
        const out: Array<PeerSyncStatus> = []
        for (const node of map.keys()) {
          if (node !== self) out.push(statusOf(node, peers.get(node) ?? derivedStatus(map.get(node)), map))
        }
        return out
      }),
      metrics: Effect.sync(() => ({ ...counters.values })),
      health: (staleAfterMillis) =>
        Effect.gen(function*() {
          const now = yield* monotonicMillis
          const map = SubscriptionRef.getUnsafe(views)
          let fresh = 0
          let stale = 0
          let failing = 0
          for (const entry of map.values()) {
            if (entry.source === self) continue
            const status = peers.get(entry.source)
            if (status !== undefined && status.consecutiveFailures > 0) failing++
            else if (entry.pendingRemote !== undefined || now - entry.syncedAt > staleAfterMillis) stale++
            else fresh++
          }
          const total = fresh + stale + failing
          return {
            stateName: name,
            status: failing > 0 && failing * 2 >= total ? "Unhealthy" : failing > 0 || stale > 0 ? "Degraded" : "Healthy",
            peers: total,
            freshPeers: fresh,
            stalePeers: stale,
            failingPeers: failing
          } satisfies StateHealth
        })
    }
  })

const DistributedState_projectView = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  state: S
): V => definition._tag === "Simple" ? state as unknown as V : definition.projectView(state)

interface Loaded<S> {
  readonly owner:
    | { readonly generation: Generation.Generation; readonly state: S; readonly createdAt: number; readonly modifiedAt: number }
    | undefined
  readonly migrated?: boolean
  readonly floor: number | undefined
}

const loadOwner = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  persistence: StatePersistence["Service"],
  codec: StateCodec<S, V, D>
): Effect.Effect<Loaded<S>> =>
  Effect.gen(function*() {
    const name = definition.name
    const loaded = yield* persistence.load(name).pipe(Effect.result)
    if (Result.isFailure(loaded)) {
      yield* Effect.logWarning("could not load the persisted state; starting fresh with a new incarnation").pipe(
        Effect.annotateLogs({ error: loaded.failure.message })
      )
      return { owner: undefined, floor: undefined }
    }
    const record = loaded.success
    if (record === undefined) return { owner: undefined, floor: undefined }
    const changes = record.changes ?? []
    const lastGeneration = changes.length > 0 ? changes[changes.length - 1].generation : record.generation
    const floor = Math.max(record.generation.incarnation, lastGeneration.incarnation)
    const fromRecord = (state: S) => ({
      generation: record.generation,
      state,
      createdAt: record.createdAt,
      modifiedAt: record.modifiedAt
    })
    /** Replays the logged changes on the snapshot's state. */
    const replay = (loaded: ReturnType<typeof fromRecord>): Result.Result<ReturnType<typeof fromRecord>, string> => {
      if (changes.length === 0) return Result.succeed(loaded)
      if (definition._tag !== "Delta" || definition.applyChange === undefined || codec.decodeChange === undefined) {
        return Result.fail("the store logged changes but the definition has no change schema and applyChange")
      }
      let state = loaded.state
      let generation = loaded.generation
      for (const change of changes) {
        if (change.generation.incarnation !== generation.incarnation || change.generation.age !== generation.age + 1) {
          return Result.fail(`change log skips from ${Generation.format(generation)} to ${Generation.format(change.generation)}`)
        }
        const decoded = codec.decodeChange(change.value)
        if (Result.isFailure(decoded)) return Result.fail(decoded.failure.reason)
        const applied = Result.try(() => definition.applyChange!(state, decoded.success as C))
        if (Result.isFailure(applied)) return Result.fail(`applyChange threw: ${String(applied.failure)}`)
        state = applied.success
        generation = change.generation
      }
      return Result.succeed({ ...loaded, state, generation })
    }
    const replayed = (loaded: ReturnType<typeof fromRecord>) =>
      Effect.gen(function*() {
        const r = replay(loaded)
        if (Result.isSuccess(r)) return r.success
        yield* Effect.logWarning("could not replay the change log; starting fresh with a new incarnation").pipe(
          Effect.annotateLogs({ error: r.failure })
        )
        return undefined
      })
    if (record.storageVersion === definition.storageVersion) {
      const state = codec.decodeState(record.value)
      if (Result.isSuccess(state)) return { owner: yield* replayed(fromRecord(state.success)), floor }
      yield* Effect.logWarning("persisted state does not decode; starting fresh with a new incarnation").pipe(
        Effect.annotateLogs({ error: state.failure.reason })
      )
      return { owner: undefined, floor }
    }
    const migrated = record.storageVersion < definition.storageVersion && definition.migrateState !== undefined
      ? yield* definition.migrateState(record.value, record.storageVersion).pipe(
        Effect.catchDefect((defect) =>
          Effect.fail(
            new MigrationFailed({
              stateName: name,
              fromVersion: record.storageVersion,
              toVersion: definition.storageVersion,
              reason: String(defect)
            })
          )
        ),
        Effect.result
      )
      : Result.fail(
        new MigrationFailed({
          stateName: name,
          fromVersion: record.storageVersion,
          toVersion: definition.storageVersion,
          reason: record.storageVersion > definition.storageVersion
            ? "stored by a newer version of this state"
            : "no migrateState for older storage versions"
        })
      )
    if (Result.isSuccess(migrated)) {
      yield* Effect.logInfo("migrated the persisted state").pipe(
        Effect.annotateLogs({ fromVersion: record.storageVersion, toVersion: definition.storageVersion })
      )
      const owner = yield* replayed(fromRecord(migrated.success))
      return owner === undefined ? { owner, floor } : { owner, migrated: true, floor }
    }
    yield* Effect.logWarning("could not migrate the persisted state; starting fresh with a new incarnation").pipe(
      Effect.annotateLogs({ error: migrated.failure.message })
    )
    return { owner: undefined, floor }
  })

export const causeMessage = (cause: Cause.Cause<unknown>): string => Cause.pretty(cause)

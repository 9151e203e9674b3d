/**
 * The browser side of `dstate/web`: a read replica of states served by a
 * node's `WebReplicas` endpoint, over one WebSocket. It offers the read API
 * of a state handle: the view map (`snapshot`), `changes`, `changesOf`,
 * `diffs`, and `query({ maxStaleness })`, which pulls over the socket when a
 * view is older than allowed (the node runs the same query, pulling its own
 * stale peers, then confirms). Values are decoded with the definition's
 * `Schema`s; a state asked for by name only gives its encoded bytes.
 *
 * Frames are checked as a node checks them (length, protocol byte, CRC32,
 * envelope) and accepted by the same rules: a stale or duplicate generation
 * is discarded, a delta that does not follow the view held (a gap) asks for
 * the snapshot. `syncedAt` is this client's monotonic time at which the node
 * last vouched for a view, less how stale the view already was on the node.
 *
 * When the socket closes the client keeps its views (they age) and
 * reconnects with exponential backoff, fetching a fresh token each time when
 * `token` is an effect; a refused token (`WebTokenRefused`) ends the
 * reconnecting when the token is a fixed string.
 *
 * No Node API is used (no `node:*`, no `Buffer`): it runs in browsers as
 * bundled by `scripts/build-web.ts`, and in Node 24 with its global
 * `WebSocket`.
 *
 * @since 0.2.0
 */
import { Clock, Deferred, Duration, Effect, Exit, Option, Random, Result, Schema, Scope, Stream, SubscriptionRef } from "effect"
import { SchemaBinary } from "effect/encoding"
import { Socket } from "effect/socket"
import type * as DistributedState from "../DistributedState.ts"
import { type InvalidOptions, StalePeer, StateNotRegistered } from "../DStateError.ts"
import type { Generation } from "../Generation.ts"
import * as ChangeStreams from "../internal/changeStreams.ts"
import * as Check from "../internal/options.ts"
import * as Acceptance from "../internal/sync/acceptance.ts"
import type { NodeId } from "../NodeId.ts"
import type { QueryOptions } from "../StateHandle.ts"
import type { StateView, ViewDiff, ViewMap } from "../StateView.ts"
import * as Frames from "./internal/frames.ts"
import * as Protocol from "./internal/protocol.ts"
import { WebDisconnected, WebTokenRefused } from "./WebErrors.ts"

/**
 * Options of `make`.
 *
 * @category models
 * @since 0.2.0
 */
export interface Options {
  /** The endpoint, `ws://host:port/web` (`wss://` behind TLS). */
  readonly url: string
  /** The token, or an effect that fetches a fresh one before every connection (from the application's server). */
  readonly token: string | Effect.Effect<string, unknown>
  /**
   * The states to read: definitions (values decoded with their schemas) or names (values are the encoded
   * bytes), or `"*"`: every state the token allows, by name.
   */
  readonly states: ReadonlyArray<DistributedState.Any | string> | "*"
  /** Whether to receive the node's status too (members, reachability, counters; the token must allow it). */
  readonly status?: boolean | undefined
  /** How long `make` waits for the first connection (default 10 seconds). */
  readonly connectTimeout?: Duration.Input | undefined
  /** How long a query's pull may take (default 5 seconds). */
  readonly pullTimeout?: Duration.Input | undefined
  /** The first delay before reconnecting (default 100 ms); it doubles up to `reconnectMax`, with jitter. */
  readonly reconnectInitial?: Duration.Input | undefined
  /** The longest delay between reconnections (default 5 seconds). */
  readonly reconnectMax?: Duration.Input | undefined
  /** The largest frame accepted (default 16 MiB). */
  readonly maxFrameBytes?: number | undefined
}

/**
 * The state of the connection.
 *
 * @category models
 * @since 0.2.0
 */
export type ConnectionState =
  | { readonly _tag: "Connecting"; readonly attempt: number }
  | { readonly _tag: "Connected"; readonly node: NodeId }
  | { readonly _tag: "Disconnected"; readonly reason: string; readonly retryInMillis: number }
  | { readonly _tag: "Refused"; readonly error: WebTokenRefused }

/**
 * A node's status, as the dashboard shows it: its members and the
 * unreachable ones (since wall-clock `since`), and per state its own
 * mutations, what it received and its peers' sync status.
 *
 * @category models
 * @since 0.2.0
 */
export type Status = Protocol.StatusMessage

/**
 * What the client counted since it was made.
 *
 * @category models
 * @since 0.2.0
 */
export interface Stats {
  readonly framesReceived: number
  readonly bytesReceived: number
  readonly snapshotsAccepted: number
  readonly deltasAccepted: number
  /** Snapshots or deltas at or below the generation held (duplicates and stale copies). */
  readonly staleDiscarded: number
  readonly gapsDetected: number
  /** Frames or payloads that failed a check (length, checksum, envelope, schema). */
  readonly malformed: number
  readonly connections: number
}

/**
 * The read API of one state.
 *
 * @category models
 * @since 0.2.0
 */
export interface Replica<V> {
  readonly name: string
  /** The view map as held now. */
  readonly snapshot: Effect.Effect<ViewMap<V>>
  /** The view map now and after every change (a refreshed `syncedAt` included). */
  readonly changes: Stream.Stream<ViewMap<V>>
  /** One owner's view now and after each change, latest value only. */
  readonly changesOf: (owner: NodeId) => Stream.Stream<Option.Option<StateView<V>>>
  /** Every owner's changes as `Added` / `Updated` / `Removed`, conflated per owner for a slow consumer. */
  readonly diffs: Stream.Stream<ViewDiff<V>>
  /**
   * Runs `f` over the view map once every view is at most `maxStaleness` old, pulling over the socket
   * first when one is not. Fails with `StalePeer` when the node cannot bring a view up to date, the pull
   * takes longer than `pullTimeout`, or the client is not connected; with `InvalidOptions` when
   * `maxStaleness` is not a non-negative duration.
   */
  readonly query: <A>(options: QueryOptions, f: (views: ViewMap<V>) => A) => Effect.Effect<A, StalePeer | InvalidOptions>
}

/**
 * A connected client.
 *
 * @category models
 * @since 0.2.0
 */
export interface WebClient {
  /** The replica of a state given by definition. Fails with `StateNotRegistered` when it was not asked for. */
  readonly replica: <T extends DistributedState.Any>(
    definition: T
  ) => Effect.Effect<Replica<DistributedState.ViewOf<T>>, StateNotRegistered>
  /** The replica of a state by name, its values as the encoded bytes when no definition was given. */
  readonly raw: (name: string) => Effect.Effect<Replica<unknown>, StateNotRegistered>
  /** The states the node serves this client (from its latest welcome). */
  readonly states: Effect.Effect<ReadonlyArray<string>>
  /** The connection now and after every change. */
  readonly connection: Stream.Stream<ConnectionState>
  readonly connectionState: Effect.Effect<ConnectionState>
  /** The node's status now (`None` before the first) and after each one (with `status: true`). */
  readonly status: Stream.Stream<Option.Option<Status>>
  readonly stats: Effect.Effect<Stats>
}

interface ReplicaState {
  readonly name: string
  readonly decodeView: ((bytes: Uint8Array, wireVersion: number) => Result.Result<unknown, unknown>) | undefined
  readonly decodeDelta: ((bytes: Uint8Array, wireVersion: number) => Result.Result<unknown, unknown>) | undefined
  readonly applyDelta: ((view: unknown, delta: unknown) => unknown) | undefined
  views: Map<NodeId, StateView<unknown>>
  dirty: boolean
  readonly ref: SubscriptionRef.SubscriptionRef<ViewMap<unknown>>
  readonly replica: Replica<unknown>
}

type Decoder = (bytes: Uint8Array) => Result.Result<unknown, unknown>

const decoders = (current: number, schema: Schema.Codec<unknown, unknown>, older: ReadonlyArray<[number, Schema.Codec<unknown, unknown> | undefined]>) => {
  const map = new Map<number, Decoder>([[current, Schema.decodeUnknownResult(SchemaBinary.toCodec(schema)) as Decoder]])
  for (const [version, codec] of older) {
    if (codec !== undefined && version !== current) {
      map.set(version, Schema.decodeUnknownResult(SchemaBinary.toCodec(codec)) as Decoder)
    }
  }
  return (bytes: Uint8Array, wireVersion: number): Result.Result<unknown, unknown> => {
    const decode = map.get(wireVersion)
    return decode === undefined ? Result.fail(`unsupported wire version ${wireVersion}`) : decode(bytes)
  }
}

const checker = { module: "WebClient" }
const decodeServerMessage = Schema.decodeUnknownResult(Protocol.ServerMessage)
type ServerMessage = Protocol.ServerMessage

const newer = (a: Generation, b: Generation) => a.incarnation > b.incarnation || (a.incarnation === b.incarnation && a.age > b.age)

/**
 * Connects to a node's `WebReplicas` endpoint and keeps the replicas of the
 * states asked for until the scope closes. Succeeds once the node welcomed
 * the client (its first views may still be on their way); fails with
 * `WebTokenRefused` when the token is refused, `WebDisconnected` when no
 * connection succeeded within `connectTimeout`, and `InvalidOptions` for an
 * option out of range.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fixtures } from "dstate/testing"
 * import { WebClient } from "dstate/web"
 *
 * const program = Effect.gen(function*() {
 *   const client = yield* WebClient.make({ url: "ws://127.0.0.1:9464/web", token: "v1....", states: [Fixtures.Counter] })
 *   const counter = yield* client.replica(Fixtures.Counter)
 *   return yield* counter.query({ maxStaleness: "2 seconds" }, (views) => [...views.values()].map((v) => v.value.value))
 * }).pipe(Effect.scoped)
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const make = Effect.fn("WebClient.make")(function*(options: Options) {
  const url = options.url
  if (typeof url !== "string" || !/^wss?:\/\//.test(url)) {
    return yield* Check.invalid(checker, "url", url, "must be a ws:// or wss:// URL")
  }
  const connectTimeout = yield* Check.duration(checker, "connectTimeout", options.connectTimeout ?? "10 seconds", "positive")
  const pullTimeout = yield* Check.duration(checker, "pullTimeout", options.pullTimeout ?? "5 seconds", "positive")
  const reconnectInitial = Duration.toMillis(
    yield* Check.duration(checker, "reconnectInitial", options.reconnectInitial ?? "100 millis", "positive")
  )
  const reconnectMax = Duration.toMillis(yield* Check.duration(checker, "reconnectMax", options.reconnectMax ?? "5 seconds", "positive"))
  if (reconnectMax < reconnectInitial) {
    return yield* Check.invalid(checker, "reconnectMax", options.reconnectMax, "must be at least reconnectInitial")
  }
  const maxFrameBytes = yield* Check.integer(checker, "maxFrameBytes", options.maxFrameBytes ?? 16 * 1024 * 1024, 64)
  const asked = options.states
  if (asked !== "*" && (!Array.isArray(asked) || asked.length === 0)) {
    return yield* Check.invalid(checker, "states", asked, "must be \"*\" or a non-empty array of definitions or names")
  }
  const token = options.token
  const clock = yield* Clock.Clock
  const now = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
  const scope = yield* Scope.Scope

  const replicas = new Map<string, ReplicaState>()
  const makeReplica = (name: string, definition: DistributedState.Any | undefined): Effect.Effect<ReplicaState> =>
    Effect.gen(function*() {
      const ref = yield* SubscriptionRef.make<ViewMap<unknown>>(new Map())
      const older = definition?._tag === "Delta" ? Object.entries(definition.wireDecoders) : []
      const state: ReplicaState = {
        name,
        decodeView: definition === undefined
          ? undefined
          : decoders(definition.wireVersion, definition.view, older.map(([v, d]) => [Number(v), d.view])),
        decodeDelta: definition?._tag === "Delta"
          ? decoders(definition.wireVersion, definition.delta, older.map(([v, d]) => [Number(v), d.delta]))
          : undefined,
        applyDelta: definition?._tag === "Delta" ? definition.applyDelta : undefined,
        views: new Map(),
        dirty: false,
        ref,
        replica: undefined as unknown as Replica<unknown>
      }
      const changes = SubscriptionRef.changes(ref)
      ;(state as { replica: Replica<unknown> }).replica = {
        name,
        snapshot: SubscriptionRef.get(ref),
        changes,
        changesOf: (owner) => ChangeStreams.changesOf(changes, owner),
        diffs: ChangeStreams.diffs(changes),
        query: (queryOptions, f) => query(state, queryOptions, f)
      }
      replicas.set(name, state)
      return state
    })
  if (asked !== "*") {
    for (const entry of asked) {
      if (typeof entry === "string") yield* makeReplica(entry, undefined)
      else yield* makeReplica(entry.name, entry)
    }
  }

  const stats = { framesReceived: 0, bytesReceived: 0, snapshotsAccepted: 0, deltasAccepted: 0, staleDiscarded: 0, gapsDetected: 0, malformed: 0, connections: 0 }
  const connection = yield* SubscriptionRef.make<ConnectionState>({ _tag: "Connecting", attempt: 1 })
  const status = yield* SubscriptionRef.make<Option.Option<Status>>(Option.none())
  let served: ReadonlyArray<string> = []
  let writer: Socket.Writer | undefined
  let nextPull = 0
  const pulls = new Map<number, Deferred.Deferred<ServerMessage & { readonly t: "pulled" }, string>>()
  const welcomed = yield* Deferred.make<void, WebTokenRefused | WebDisconnected>()

  const send = (message: Protocol.ClientMessage): Effect.Effect<boolean> =>
    writer === undefined ? Effect.succeed(false) : writer.write(JSON.stringify(message)).pipe(Effect.as(true), Effect.orElseSucceed(() => false))

  const query = <A>(
    state: ReplicaState,
    queryOptions: QueryOptions,
    f: (views: ViewMap<any>) => A
  ): Effect.Effect<A, StalePeer | InvalidOptions> =>
    Effect.gen(function*() {
      if (queryOptions.maxStaleness === undefined) return f(yield* SubscriptionRef.get(state.ref))
      const maxMillis = Duration.toMillis(yield* Check.duration(checker, "maxStaleness", queryOptions.maxStaleness, "nonNegative"))
      const stalest = () => {
        const at = now()
        for (const view of state.views.values()) {
          if (view.pendingRemote !== undefined || at - view.syncedAt > maxMillis) return view
        }
        return undefined
      }
      const stale = stalest()
      if (stale === undefined) return f(yield* SubscriptionRef.get(state.ref))
      const id = nextPull++
      const reply = Deferred.makeUnsafe<ServerMessage & { readonly t: "pulled" }, string>()
      pulls.set(id, reply)
      const sent = yield* send({ t: "pull", id, state: state.name, maxStalenessMillis: maxMillis })
      const outcome = sent
        ? yield* Deferred.await(reply).pipe(Effect.timeoutOption(pullTimeout), Effect.result)
        : Result.fail("not connected")
      pulls.delete(id)
      const failed = (node: NodeId, lastSyncedAt: number) =>
        Effect.fail(new StalePeer({ stateName: state.name, node, lastSyncedAt }))
      if (Result.isFailure(outcome) || Option.isNone(outcome.success)) return yield* failed(stale.source, stale.syncedAt)
      const pulled = outcome.success.value
      if (pulled.stale !== undefined) {
        const held = state.views.get(pulled.stale.node as NodeId)
        return yield* failed(pulled.stale.node as NodeId, held?.syncedAt ?? now() - pulled.stale.lastSyncedAgoMillis)
      }
      return f(yield* SubscriptionRef.get(state.ref))
    })

  const decodeInto = (state: ReplicaState, bytes: Uint8Array, wireVersion: number, decode: typeof state.decodeView) => {
    if (decode === undefined) return Result.succeed<unknown>(bytes)
    return decode(bytes, wireVersion)
  }

  const onData = (message: Frames.DataMessage) => {
    const state = replicas.get(message.stateName)
    if (state === undefined) {
      stats.malformed++
      return
    }
    const held = state.views.get(message.source)
    if (message._tag === "FullSnapshot") {
      const verdict = Acceptance.snapshot(held?.generation, message.generation)
      if (verdict._tag === "Duplicate" && held !== undefined) {
        state.views.set(message.source, { ...held, syncedAt: now() })
        state.dirty = true
      }
      if (verdict._tag !== "Accept") {
        stats.staleDiscarded++
        return
      }
      const value = decodeInto(state, message.payload, message.wireVersion, state.decodeView)
      if (Result.isFailure(value)) {
        stats.malformed++
        return
      }
      stats.snapshotsAccepted++
      state.views.set(message.source, {
        source: message.source,
        generation: message.generation,
        wireVersion: message.wireVersion,
        value: value.success,
        createdAt: message.createdAt,
        modifiedAt: message.modifiedAt,
        syncedAt: now(),
        pendingRemote: undefined,
        // Reachability is the node's judgement: a browser reads it from the node's status, not from its views.
        unreachableSince: undefined
      })
      state.dirty = true
      return
    }
    const verdict = Acceptance.delta(held?.generation, message.generation)
    if (verdict._tag === "Gap" || (verdict._tag === "Accept" && state.applyDelta === undefined)) {
      stats.gapsDetected++
      return "gap"
    }
    if (verdict._tag !== "Accept" || held === undefined) {
      stats.staleDiscarded++
      return
    }
    const delta = decodeInto(state, message.payload, message.wireVersion, state.decodeDelta)
    if (Result.isFailure(delta)) {
      stats.malformed++
      return
    }
    stats.deltasAccepted++
    state.views.set(message.source, {
      ...held,
      generation: message.generation,
      wireVersion: message.wireVersion,
      value: state.applyDelta!(held.value, delta.success),
      modifiedAt: message.modifiedAt,
      syncedAt: now(),
      pendingRemote: undefined
    })
    state.dirty = true
  }

  const onSynced = (message: ServerMessage & { readonly t: "synced" }) => {
    const state = replicas.get(message.state)
    if (state === undefined) return
    const at = now()
    const listed = new Set<string>()
    for (const entry of message.views) {
      listed.add(entry.owner)
      const held = state.views.get(entry.owner as NodeId)
      if (held === undefined) continue
      const generation = { incarnation: entry.incarnation, age: entry.age }
      const same = held.generation.incarnation === entry.incarnation && held.generation.age === entry.age
      const pending = entry.pending !== undefined && newer(entry.pending, held.generation)
        ? entry.pending
        : newer(generation, held.generation)
        ? generation
        : undefined
      state.views.set(entry.owner as NodeId, {
        ...held,
        syncedAt: same ? Math.max(held.syncedAt, at - entry.stalenessMillis) : held.syncedAt,
        pendingRemote: pending
      })
      state.dirty = true
    }
    if (message.complete) {
      for (const owner of [...state.views.keys()]) {
        if (!listed.has(owner)) {
          state.views.delete(owner)
          state.dirty = true
        }
      }
    }
  }

  /**
   * Checks one frame and applies it when it is a view (synchronously: the hot path); returns the control
   * message to handle, or the snapshot request a gap calls for.
   */
  const readFrame = (raw: Uint8Array | string): Frames.Decoded | { readonly _tag: "Gap"; readonly state: string; readonly owner: NodeId } | undefined => {
    if (typeof raw === "string") {
      stats.malformed++
      return undefined
    }
    stats.framesReceived++
    stats.bytesReceived += raw.length
    const decoded = Frames.decode(raw, maxFrameBytes)
    if (decoded._tag === "Refused") {
      stats.malformed++
      return undefined
    }
    if (decoded._tag === "Data") {
      return onData(decoded.message) === "gap"
        ? { _tag: "Gap", state: decoded.message.stateName, owner: decoded.message.source }
        : undefined
    }
    return decoded
  }

  /** Handles one frame; a refusal ends the session with its error. */
  const onFrame = (raw: Uint8Array | string): Effect.Effect<void, WebTokenRefused> => {
    const decoded = readFrame(raw)
    if (decoded === undefined) return Effect.void
    if (decoded._tag === "Gap") return Effect.asVoid(send({ t: "snapshot", state: decoded.state, owner: decoded.owner }))
    if (decoded._tag !== "Control") return Effect.void
    return Effect.gen(function*() {
      const message = decodeServerMessage(decoded.json)
      if (Result.isFailure(message)) {
        stats.malformed++
        return
      }
      const m = message.success
      switch (m.t) {
        case "welcome": {
          served = m.states
          for (const name of m.states) if (!replicas.has(name)) yield* makeReplica(name, undefined)
          stats.connections++
          yield* SubscriptionRef.set(connection, { _tag: "Connected", node: m.node as NodeId })
          yield* Deferred.succeed(welcomed, undefined)
          return
        }
        case "refused":
          return yield* new WebTokenRefused({ reason: m.reason, detail: m.detail })
        case "synced":
          return onSynced(m)
        case "removed": {
          const state = replicas.get(m.state)
          if (state !== undefined && state.views.delete(m.owner as NodeId)) state.dirty = true
          return
        }
        case "pulled": {
          const reply = pulls.get(m.id)
          if (reply !== undefined) Deferred.doneUnsafe(reply, Exit.succeed(m))
          return
        }
        case "status":
          return yield* SubscriptionRef.set(status, Option.some(m))
        case "expired":
          return
      }
    })
  }

  const publish = Effect.suspend(() =>
    Effect.forEach([...replicas.values()], (state) => {
      if (!state.dirty) return Effect.void
      state.dirty = false
      return SubscriptionRef.set(state.ref, new Map(state.views))
    }, { discard: true })
  )

  /** One connection, from the dial to its end; fails with the refusal when the token is refused. */
  const session = Effect.gen(function*() {
    const tokenNow = typeof token === "string" ? token : yield* Effect.orElseSucceed(token, () => "")
    const socket = yield* Socket.makeWebSocket(url, { openTimeout: connectTimeout })
    const reader = yield* socket.reader
    writer = yield* socket.writer
    yield* writer.write(JSON.stringify({ t: "hello", token: tokenNow, states: asked === "*" ? "*" : [...replicas.keys()], status: options.status === true }))
    while (true) {
      const batch = yield* reader.pull
      for (const frame of batch) yield* onFrame(frame)
      yield* publish
    }
  }).pipe(
    Effect.provide(Socket.layerWebSocketConstructorGlobal),
    Effect.scoped,
    Effect.ensuring(Effect.sync(() => {
      writer = undefined
    }))
  )

  const run = Effect.gen(function*() {
    let delay = reconnectInitial
    let attempt = 1
    while (true) {
      const connectionsBefore = stats.connections
      const exit = yield* Effect.exit(session)
      for (const reply of pulls.values()) Deferred.doneUnsafe(reply, Exit.fail("disconnected"))
      pulls.clear()
      const refusal = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
      if (refusal instanceof WebTokenRefused && typeof token === "string") {
        yield* SubscriptionRef.set(connection, { _tag: "Refused", error: refusal })
        yield* Deferred.fail(welcomed, refusal)
        return
      }
      if (stats.connections > connectionsBefore) {
        delay = reconnectInitial
        attempt = 1
      }
      const jittered = Math.round(delay * (0.8 + 0.4 * (yield* Random.next)))
      yield* SubscriptionRef.set(connection, {
        _tag: "Disconnected",
        reason: refusal instanceof WebTokenRefused ? `refused: ${refusal.reason}` : "the connection closed",
        retryInMillis: jittered
      })
      yield* Effect.sleep(Duration.millis(jittered))
      delay = Math.min(reconnectMax, delay * 2)
      attempt++
      yield* SubscriptionRef.set(connection, { _tag: "Connecting", attempt })
    }
  })
  yield* Effect.forkIn(run, scope)

  yield* Deferred.await(welcomed).pipe(
    Effect.timeoutOrElse({
      duration: connectTimeout,
      orElse: () => Effect.fail(new WebDisconnected({ url, reason: `no connection within ${Duration.format(connectTimeout)}` }))
    })
  )

  const lookup = (name: string) =>
    Effect.suspend(() => {
      const state = replicas.get(name)
      return state === undefined ? Effect.fail(new StateNotRegistered({ stateName: name })) : Effect.succeed(state.replica)
    })

  const client: WebClient = {
    replica: (definition) => lookup(definition.name) as Effect.Effect<Replica<any>, StateNotRegistered>,
    raw: lookup,
    states: Effect.sync(() => served),
    connection: SubscriptionRef.changes(connection),
    connectionState: SubscriptionRef.get(connection),
    status: SubscriptionRef.changes(status),
    stats: Effect.sync(() => ({ ...stats }))
  }
  return client
})

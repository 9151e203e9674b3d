/**
 * The state registry: the node-level service that registers state types,
 * hands out typed handles, routes inbound frames to the right state, follows
 * membership, and reports health.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Layer, PubSub, Result, Schedule, Scope, Stream } from "effect"
import { ActorRuntime, type MailboxCapacity } from "./ActorRuntime.ts"
import { ClusterEvents } from "./ClusterEvents.ts"
import type {
  InboundMetrics,
  Liveness,
  Observer as ViewObserver,
  Readiness,
  StateHealth,
  StateStatus,
  SystemHealth
} from "./Diagnostics.ts"
import type * as DistributedState from "./DistributedState.ts"
import {
  DuplicateStateName,
  type MalformedMessage,
  type MessageTooLarge,
  type InvalidOptions,
  RequestRejected,
  StateNotRegistered
} from "./DStateError.ts"
import * as ChangeFeed from "./internal/changeFeed.ts"
import * as MetricSeries from "./internal/metricSeries.ts"
import { checkDefinition, checkOptions, checkSettings, makeHandle, worst } from "./internal/registration.ts"
import { decodeFrame } from "./internal/codec.ts"
import * as Shard from "./internal/shard.ts"
import * as Metrics from "./Metrics.ts"
import type { NodeId } from "./NodeId.ts"
import { StatePersistence } from "./StatePersistence.ts"
import { ackProtocolVersion, type BatchedChangeFeed, MaxFrameBytes, type SyncMessage } from "./SyncMessage.ts"
import type { HandleOf } from "./StateHandle.ts"
import * as SyncStrategy from "./SyncStrategy.ts"

/**
 * What a version mismatch does to the view held of that peer.
 *
 * - `KeepStale` (default): keep the last good view (it ages and queries see it as stale).
 * - `DropAndWait`: remove the peer's view until a decodable update arrives.
 *
 * @category models
 * @since 0.1.0
 */
export type VersionMismatchPolicy = "KeepStale" | "DropAndWait"

/**
 * Options of `register`.
 *
 * @category models
 * @since 0.1.0
 */
export interface RegisterOptions {
  /** How changes travel (default `SyncStrategy.activePush()`). */
  readonly strategy?: SyncStrategy.SyncStrategy | undefined
  /** Save through `StatePersistence` when a layer provides one (default `true`). */
  readonly persist?: boolean | undefined
  /** How long a query waits for a pulled snapshot (default 5 seconds). */
  readonly pullTimeout?: Duration.Input | undefined
  /** What an undecodable wire version does (default `"KeepStale"`). */
  readonly versionMismatchPolicy?: VersionMismatchPolicy | undefined
  /** The state actor's mailbox capacity (default 10,000; `"unbounded"` allowed). */
  readonly mailbox?: MailboxCapacity | undefined
}

export type {
  Acknowledged,
  AwaitError,
  AwaitOptions,
  Committed,
  DeltaHandle,
  HandleOf,
  MutateOptions,
  QueryOptions,
  SimpleHandle,
  StateHandle
} from "./StateHandle.ts"

/**
 * Node-level limits and timings of the registry.
 *
 * @category models
 * @since 0.1.0
 */
export interface Settings {
  /** Departed (node, incarnation) entries remembered per state (default 10,000; oldest forgotten first). */
  readonly departedCapacity: number
  /**
   * Views not synced for this long count as stale in `health` (default: off, since a quiet owner under
   * active push sends nothing and its view is still current; set it when the strategy refreshes
   * periodically, e.g. to twice the period). Views with a pending change-feed marker are always stale.
   */
  readonly healthStaleAfter: Duration.Input | undefined
  /** When the change feed flushes its batch (a `Schedule`, or a duration for a fixed spacing; default every second). */
  readonly changeFeedFlush: Schedule.Schedule<unknown, unknown, unknown> | Duration.Input
}

/**
 * The registry settings in force; provide them to change the defaults (or use
 * `layerWith`).
 *
 * @category services
 * @since 0.1.0
 */
export const Settings = Context.Reference<Settings>("dstate/StateRegistry/Settings", {
  defaultValue: () => ({ departedCapacity: 10_000, healthStaleAfter: undefined, changeFeedFlush: "1 second" })
})

/**
 * A synchronous observer of every node's view maps and rejected frames, for
 * simulation checkers (`dstate/testing`). Not for application use: it runs
 * inside the state actors.
 *
 * @category testing
 * @since 0.1.0
 */
export const Observer = Context.Reference<ViewObserver | undefined>("dstate/StateRegistry/Observer", {
  defaultValue: () => undefined
})

/**
 * The registry service.
 *
 * @category services
 * @since 0.1.0
 */
export class StateRegistry extends Context.Service<StateRegistry, {
  /** This node's id. */
  readonly nodeId: NodeId
  /**
   * Registers a state on this node and starts replicating it. Fails with `InvalidOptions`, registering
   * nothing, for a definition whose name is not 1 to 256 characters or that gives only one of `change`
   * and `applyChange`, and for options out of range (`mailbox` a positive integer or `"unbounded"`,
   * `pullTimeout` a finite positive duration).
   */
  register<T extends DistributedState.Any>(
    definition: T,
    options?: RegisterOptions
  ): Effect.Effect<HandleOf<T>, DuplicateStateName | InvalidOptions>
  /** The handle of a registered state. */
  lookup<T extends DistributedState.Any>(definition: T): Effect.Effect<HandleOf<T>, StateNotRegistered>
  /** The names of the registered states. */
  readonly states: Effect.Effect<ReadonlyArray<string>>
  /** Health of every registered state. */
  readonly health: Effect.Effect<SystemHealth>
  /** Counters of inbound frames that reached no state. */
  readonly inboundMetrics: Effect.Effect<InboundMetrics>
  /**
   * Whether the node's machinery runs: the registry is not shutting down, and every state actor handles
   * a probe (queued behind the messages already waiting) within `timeout`.
   */
  liveness(timeout: Duration.Input): Effect.Effect<Liveness>
  /**
   * Whether the node is ready to serve: not shutting down, at least one state registered, and for every
   * state the join exchange with each current member done (its view held) and the last save not failed.
   */
  readonly readiness: Effect.Effect<Readiness>
  /** The status of every registered state (views held, staleness, sync status, counters), by name. */
  readonly status: Effect.Effect<ReadonlyArray<StateStatus>>
}>()("dstate/StateRegistry")  {}

/**
 * The registry on top of an `ActorRuntime` and `ClusterEvents` (and a
 * `StatePersistence`, used when present).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<StateRegistry, InvalidOptions, ActorRuntime | ClusterEvents> = Layer.effect(
  StateRegistry,
  Effect.gen(function*() {
    const runtime = yield* ActorRuntime
    const syncProtocol = runtime.syncProtocol ?? ackProtocolVersion
    const events = yield* ClusterEvents
    const persistence = yield* Effect.serviceOption(StatePersistence)
    const { config, healthStaleAfterMillis, maxFrameBytes } = yield* checkSettings(yield* Settings, yield* MaxFrameBytes)
    const scope = yield* Scope.Scope
    const shards = new Map<string, Shard.Shard<any, any, any>>()
    const handles = new Map<string, { readonly definition: DistributedState.Any; readonly handle: unknown }>()
    const metricContext = MetricSeries.labelled(yield* Effect.context<never>(), { node: runtime.nodeId })
    const inbound = MetricSeries.counters(Metrics.inbound, metricContext)
    yield* Effect.addFinalizer(() => Effect.sync(inbound.remove))
    const count = inbound.inc
    const feed = ChangeFeed.make(runtime.nodeId, maxFrameBytes)
    const env: Shard.ShardEnv = {
      runtime,
      notify: feed.notify,
      persistence: persistence._tag === "Some" ? persistence.value : undefined,
      maxFrameBytes,
      departedCapacity: config.departedCapacity,
      observer: yield* Observer,
      decodeInbound: (from, frame) => decodeInbound(from, frame, true)
    }
    const annotate = Effect.annotateLogs({ node: runtime.nodeId })

    const reject = (from: NodeId, error: { readonly _tag: string; readonly message: string }) =>
      Effect.suspend(() => {
        env.observer?.onRejectedFrame(runtime.nodeId, from, error)
        count("framesRejected")
        count(error._tag === "MessageTooLarge" ? "tooLarge" : "malformed")
        return Effect.logWarning("rejected an inbound frame").pipe(
          Effect.annotateLogs({ peer: from, error: error.message }),
          annotate
        )
      })

    /**
     * The one door for inbound frames (messages, requests, pull replies): every frame is counted here, and
     * every rejected one is counted, reported and logged by `reject`.
     */
    const admit = (from: NodeId, frame: Uint8Array, copyPayload: boolean) => {
      count("framesReceived")
      return decodeFrame(frame, maxFrameBytes, from, copyPayload, syncProtocol)
    }
    function decodeInbound(from: NodeId, frame: Uint8Array, copyPayload: boolean) {
      return Effect.suspend((): Effect.Effect<Result.Result<SyncMessage, MalformedMessage | MessageTooLarge>> => {
        const decoded = admit(from, frame, copyPayload)
        return Result.isFailure(decoded) ? Effect.as(reject(from, decoded.failure), decoded) : Effect.succeed(decoded)
      })
    }

    yield* runtime.serve({
      onMessage: (from, frame, trace) =>
        Effect.suspend(() => {
          // Runtimes hand over fresh buffers they never reuse: the payload may stay a view into the frame.
          const decoded = admit(from, frame, false)
          if (Result.isFailure(decoded)) return reject(from, decoded.failure)
          const message = decoded.success
          if (message._tag === "BatchedChangeFeed") return routeFeed(message)
          const shard = shards.get(message.stateName)
          if (shard === undefined) {
            count("unknownState")
            return Effect.void
          }
          return shard.deliver(from, message, trace)
        }),
      onRequest: (from, frame) =>
        Effect.suspend(() => {
          const decoded = admit(from, frame, true)
          if (Result.isFailure(decoded)) {
            return reject(from, decoded.failure).pipe(
              Effect.andThen(Effect.fail(new RequestRejected({ node: runtime.nodeId, reason: decoded.failure.message })))
            )
          }
          const message = decoded.success
          if (message._tag !== "RequestSnapshot") {
            return Effect.fail(new RequestRejected({ node: runtime.nodeId, reason: `${message._tag} is not a request` }))
          }
          const shard = shards.get(message.stateName)
          if (shard === undefined) {
            count("unknownState")
            return Effect.fail(
              new RequestRejected({ node: runtime.nodeId, reason: `state "${message.stateName}" is not registered` })
            )
          }
          return shard.reply(from, message)
        })
    })

    // The change feed: one batch per interval for every state type, to every node.
    yield* runtime.joinGroup(FEED_GROUP)
    const flushSchedule = Schedule.isSchedule(config.changeFeedFlush)
      ? config.changeFeedFlush as Schedule.Schedule<unknown, unknown, unknown>
      : Schedule.spaced(config.changeFeedFlush as Duration.Input)
    yield* runtime.every(
      flushSchedule,
      ChangeFeed.flush(feed, (frame) => runtime.broadcast(FEED_GROUP, frame), (notices) => {
        count("feedBatchesSent")
        count("feedNoticesSent", notices)
      }).pipe(annotate)
    )

    function routeFeed(batch: BatchedChangeFeed) {
      return Effect.gen(function*() {
        if (batch.source === runtime.nodeId) return
        count("feedBatchesReceived")
        for (const notice of batch.notices) {
          if (notice.source === runtime.nodeId) continue
          const shard = shards.get(notice.stateName)
          if (shard === undefined) {
            count("unknownState")
            continue
          }
          yield* shard.markStale(notice.source, notice.generation)
        }
      })
    }

    // Membership: every state hears of joins, reachability changes and departures, in order.
    const subscription = yield* events.subscribe
    // Members as this node sees them (the gauge `dstate_members`), from the set at subscription on.
    const members = new Set(yield* events.members)
    // Unreachable members with since when: a state registered later starts with them marked.
    const unreachable = new Map(yield* events.unreachable)
    const membersGauge = MetricSeries.gauge(Metrics.members, metricContext, () => members.size + 1)
    yield* Effect.addFinalizer(() => Effect.sync(membersGauge.remove))
    yield* Effect.gen(function*() {
      while (true) {
        const event = yield* PubSub.take(subscription)
        switch (event._tag) {
          case "NodeJoined":
            members.add(event.node)
            unreachable.delete(event.node)
            for (const shard of shards.values()) yield* shard.peerJoined(event.node)
            break
          case "NodeLeft":
            members.delete(event.node)
            unreachable.delete(event.node)
            for (const shard of shards.values()) yield* shard.peerLeft(event.node)
            break
          case "NodeUnreachable":
            unreachable.set(event.node, event.since)
            for (const shard of shards.values()) yield* shard.peerUnreachable(event.node, event.since)
            break
          case "NodeReachable":
            unreachable.delete(event.node)
            for (const shard of shards.values()) yield* shard.peerReachable(event.node)
            break
        }
      }
    }).pipe(Effect.forkScoped)

    // A member that joined a state's group after it joined the cluster: a join of that state.
    if (runtime.groupJoins !== undefined) {
      yield* runtime.groupJoins.pipe(
        Stream.runForEach(({ group, node }) =>
          Effect.gen(function*() {
            if (node === runtime.nodeId) return
            for (const shard of shards.values()) {
              if (shard.group !== group) continue
              // Still there: a join heard after the node left must not undo its departure.
              if ((yield* runtime.members(group)).includes(node)) yield* shard.peerJoined(node)
            }
          })),
        Effect.forkScoped
      )
    }

    const register = Effect.fnUntraced(function*<T extends DistributedState.Any>(definition: T, options?: RegisterOptions) {
      const name = definition.name
      yield* checkDefinition(definition)
      const shardOptions = yield* checkOptions(name, options)
      if (handles.has(name)) return yield* new DuplicateStateName({ stateName: name })
      handles.set(name, { definition, handle: undefined })
      const shard = yield* Shard.make(
        definition as DistributedState.DistributedState<any, any, any, any>,
        shardOptions,
        env
      ).pipe(Scope.provide(scope), Effect.onInterrupt(() => Effect.sync(() => handles.delete(name))))
      shards.set(name, shard)
      for (const [node, since] of unreachable) yield* shard.peerUnreachable(node, since)
      const handle = makeHandle(shard, runtime.nodeId)
      handles.set(name, { definition, handle })
      yield* Effect.logDebug("registered state").pipe(
        Effect.annotateLogs({ state: name, strategy: (options?.strategy ?? SyncStrategy.activePush()).pushMode }),
        annotate
      )
      return handle as HandleOf<T>
    })

    // Added last, run first when the node stops: from then on readiness and liveness report the shutdown.
    let shuttingDown = false
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        shuttingDown = true
      })
    )
    const byName = () => [...shards.values()].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

    const liveness = Effect.fnUntraced(function*(timeout: Duration.Input) {
      const failing: Array<string> = []
      yield* Effect.forEach(byName(), (shard) =>
        shard.probe.pipe(
          Effect.timeout(timeout),
          Effect.catch(() => Effect.sync(() => failing.push(shard.name)))
        ), { concurrency: "unbounded", discard: true })
      failing.sort()
      return { alive: !shuttingDown && failing.length === 0, shuttingDown, failing } satisfies Liveness
    })

    const readiness = Effect.gen(function*() {
      const states = yield* Effect.forEach(byName(), (shard) => shard.readiness)
      const reasons: Array<string> = []
      if (shuttingDown) reasons.push("the node is shutting down")
      if (states.length === 0) reasons.push("no state is registered yet")
      for (const state of states) {
        if (state.awaiting.length > 0) {
          reasons.push(`state "${state.stateName}" awaits the view of ${state.awaiting.join(", ")}`)
        }
        // The store's error names the state ("save of state ... failed: ...").
        if (state.lastSaveFailure !== undefined) reasons.push(state.lastSaveFailure)
      }
      return { ready: reasons.length === 0, reasons, states } satisfies Readiness
    })

    return StateRegistry.of({
      nodeId: runtime.nodeId,
      register: register as StateRegistry["Service"]["register"],
      lookup: <T extends DistributedState.Any>(definition: T) =>
        Effect.suspend(() => {
          const entry = handles.get(definition.name)
          return entry === undefined || entry.handle === undefined
            ? Effect.fail(new StateNotRegistered({ stateName: definition.name }))
            : Effect.succeed(entry.handle as HandleOf<T>)
        }),
      states: Effect.sync(() => [...shards.keys()]),
      health: Effect.gen(function*() {
        const staleAfter = healthStaleAfterMillis
        const states: Array<StateHealth> = []
        for (const shard of shards.values()) states.push(yield* shard.health(staleAfter))
        return { status: worst(states.map((s) => s.status)), states }
      }),
      inboundMetrics: Effect.sync(() => ({ ...inbound.values })),
      liveness,
      readiness,
      status: Effect.suspend(() => Effect.forEach(byName(), (shard) => shard.status))
    })
  })
)

/**
 * The registry with some of its configuration changed.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerWith = (
  options: Partial<Settings> & { readonly maxFrameBytes?: number | undefined }
): Layer.Layer<StateRegistry, InvalidOptions, ActorRuntime | ClusterEvents> => {
  const { maxFrameBytes, ...config } = options
  return layer.pipe(
    Layer.provide(Layer.succeed(Settings, { ...Settings.defaultValue(), ...config })),
    maxFrameBytes === undefined ? (l) => l : Layer.provide(Layer.succeed(MaxFrameBytes, maxFrameBytes))
  )
}

const FEED_GROUP = "dstate/feed"

/**
 * Registers a state on this node (see `StateRegistry.register`).
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { DistributedState, StateRegistry, SyncStrategy } from "dstate"
 *
 * const Counter = DistributedState.make({
 *   name: "counter",
 *   schema: Schema.Struct({ value: Schema.Int }),
 *   initial: () => ({ value: 0 })
 * })
 *
 * const program = Effect.gen(function*() {
 *   const counter = yield* StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })
 *   yield* counter.mutate((s) => ({ value: s.value + 1 }))
 * })
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const register = Effect.fn("StateRegistry.register")(function*<T extends DistributedState.Any>(
  definition: T,
  options?: RegisterOptions
) {
  const registry = yield* StateRegistry
  return yield* registry.register(definition, options)
})

/**
 * The handle of a state registered on this node, or `StateNotRegistered`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const lookup = <T extends DistributedState.Any>(
  definition: T
): Effect.Effect<HandleOf<T>, StateNotRegistered, StateRegistry> =>
  Effect.flatMap(StateRegistry, (registry) => registry.lookup(definition))

/**
 * The health of every state registered on this node.
 *
 * @category combinators
 * @since 0.1.0
 */
export const health: Effect.Effect<SystemHealth, never, StateRegistry> = Effect.flatMap(
  StateRegistry,
  (registry) => registry.health
)

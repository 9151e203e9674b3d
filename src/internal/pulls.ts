/**
 * Bounded-staleness queries of one state and the pulls behind them. A query
 * is served from the published view map when every peer's view is fresh
 * enough (an O(1) check on the core's freshness summary); otherwise every
 * stale peer (and every member whose view never arrived) is pulled
 * concurrently, concurrent pulls of one peer are coalesced, and a peer that
 * does not answer within the pull timeout fails the query with `StalePeer`.
 * An unreachable member is never pulled: it fails a bounded query with
 * `StalePeer` at once, or, with `unreachable: "skip"`, is left out of the
 * map the query function sees.
 * A pull's reply goes through the node's one door for inbound frames, then
 * to the actor like any inbound snapshot. Also the health of a state.
 * @internal
 */
import { Deferred, Duration, Effect, Exit, Option, Result } from "effect"
import type { StateHealth, StateStatus } from "../Diagnostics.ts"
import { type ActorStopped, InvalidOptions, type MailboxFull, MalformedMessage, StalePeer } from "../DStateError.ts"
import type { NodeId } from "../NodeId.ts"
import type { ViewMap } from "../StateView.ts"
import type { FullSnapshot, SyncMessage } from "../SyncMessage.ts"
import type { SyncState } from "./sync/core.ts"
import type { CounterKey } from "./sync/types.ts"

export interface QueryOptions {
  readonly maxStaleness?: Duration.Input | undefined
  readonly unreachable?: "fail" | "skip" | undefined
}

export interface PullEnv<V> {
  readonly stateName: string
  readonly self: NodeId
  readonly core: SyncState<any, V, any, any>
  readonly pullOnQuery: boolean
  readonly pullTimeout: Duration.Duration
  readonly monotonicNow: () => number
  readonly count: (key: CounterKey, by?: number) => void
  readonly syncFailed: (node: NodeId, message: string) => void
  /** Asks `node` for its snapshot and waits for the reply frame. */
  readonly request: (node: NodeId) => Effect.Effect<Uint8Array, { readonly message: string }>
  /** The node's one door for inbound frames. */
  readonly decode: (node: NodeId, frame: Uint8Array) => Effect.Effect<Result.Result<SyncMessage, unknown>>
  /** Hands the decoded snapshot to the actor; `done` completes once it was handled. */
  readonly apply: (node: NodeId, message: FullSnapshot, done: Deferred.Deferred<void>) => Effect.Effect<void, MailboxFull | ActorStopped>
}

export interface Queries<V> {
  readonly query: <A>(options: QueryOptions, f: (views: ViewMap<V>) => A) => Effect.Effect<A, StalePeer | InvalidOptions>
}

/**
 * Duration inputs to milliseconds, remembering the last few (queries pass the
 * same literal again and again); `undefined` for an input that is not a
 * non-negative duration (an infinite one means any staleness will do).
 */
const memoMillis = () => {
  const cache = new Map<Duration.Input, number | undefined>()
  let lastInput: Duration.Input | undefined
  let lastMillis: number | undefined = 0
  return (input: Duration.Input): number | undefined => {
    if (input === lastInput) return lastMillis
    let millis = cache.get(input)
    if (millis === undefined && !cache.has(input)) {
      const parsed = typeof input === "number" && Number.isNaN(input) ? Option.none() : Duration.fromInput(input)
      millis = Option.isSome(parsed) && Duration.toMillis(parsed.value) >= 0 ? Duration.toMillis(parsed.value) : undefined
      if (typeof input === "object") return millis
      if (cache.size >= 64) cache.clear()
      cache.set(input, millis)
    }
    lastInput = input
    lastMillis = millis
    return millis
  }
}

export const make = <V>(env: PullEnv<V>): Queries<V> => {
  const { core, stateName } = env
  const views = core.views
  const inFlight = new Map<NodeId, Deferred.Deferred<void, StalePeer>>()
  const stalePeer = (node: NodeId) =>
    new StalePeer({ stateName, node, lastSyncedAt: views.get(node)?.syncedAt ?? 0 })

  const runPull = Effect.fnUntraced(function*(node: NodeId) {
    env.count("pulls")
    const started = env.monotonicNow()
    core.peers.status(node).lastAttemptAt = started
    const reply = yield* Effect.result(env.request(node))
    if (Result.isFailure(reply)) {
      env.syncFailed(node, reply.failure.message)
      return yield* stalePeer(node)
    }
    const decoded = yield* env.decode(node, reply.success)
    if (Result.isFailure(decoded) || decoded.success._tag !== "FullSnapshot" || decoded.success.stateName !== stateName) {
      const error = Result.isFailure(decoded)
        ? decoded.failure as { readonly message: string }
        : new MalformedMessage({ node, stateName, reason: `unexpected reply ${decoded.success._tag}` })
      env.syncFailed(node, error.message)
      env.count("malformedReceived")
      return yield* stalePeer(node)
    }
    const applied = Deferred.makeUnsafe<void>()
    const told = yield* Effect.result(env.apply(node, decoded.success, applied))
    if (Result.isFailure(told)) {
      env.syncFailed(node, told.failure.message)
      return yield* stalePeer(node)
    }
    yield* Deferred.await(applied)
    core.peers.status(node).lastSyncLatencyMillis = env.monotonicNow() - started
  })

  const pull = (node: NodeId): Effect.Effect<void, StalePeer> =>
    Effect.suspend(() => {
      const existing = inFlight.get(node)
      if (existing !== undefined) return Deferred.await(existing)
      return Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const deferred = Deferred.makeUnsafe<void, StalePeer>()
          inFlight.set(node, deferred)
          const exit = yield* Effect.exit(restore(runPull(node)))
          inFlight.delete(node)
          yield* Deferred.done(deferred, exit)
          return yield* exit
        })
      )
    })

  /** The map without the unreachable members' views (the map itself when none is held). */
  const reachableViews = (): ViewMap<V> => {
    const map = views.handOut()
    let held = false
    for (const node of core.unreachable.keys()) if (map.has(node)) held = true
    if (!held) return map
    const out = new Map(map)
    for (const node of core.unreachable.keys()) out.delete(node)
    return out
  }

  /** The first unreachable member of this state's group (its view held or awaited), if any. */
  const firstUnreachable = (): NodeId | undefined => {
    for (const node of core.unreachable.keys()) if (views.has(node) || core.awaited.has(node)) return node
    return undefined
  }

  const slowQuery = Effect.fnUntraced(function*<A>(maxStaleness: number, now: number, skip: boolean, f: (views: ViewMap<V>) => A): Effect.fn.Return<A, StalePeer> {
    const unreachable = core.unreachable
    // An unreachable member is never pulled: it fails the query, or is left out of it.
    const silent = skip ? undefined : firstUnreachable()
    if (silent !== undefined) return yield* stalePeer(silent)
    const reachable = (node: NodeId) => !unreachable.has(node)
    // Stale views, and members whose view never arrived.
    const stale = [...views.staleAt(now, maxStaleness).map((entry) => entry.source), ...core.awaited].filter(reachable)
    const answer = () => skip ? reachableViews() : views.handOut()
    if (stale.length === 0) return f(answer())
    if (!env.pullOnQuery) return yield* stalePeer(stale[0])
    yield* Effect.forEach(stale, pull, { concurrency: "unbounded", discard: true })
    // A member that went silent during the pulls fails the query unless skipped.
    const silentNow = skip ? undefined : firstUnreachable()
    if (silentNow !== undefined) return yield* stalePeer(silentNow)
    const stillStale = views.staleAt(env.monotonicNow(), maxStaleness).filter((entry) => reachable(entry.source))
    if (stillStale.length > 0) return yield* stalePeer(stillStale[0].source)
    for (const node of core.awaited) if (reachable(node)) return yield* stalePeer(node)
    return f(answer())
  })

  const toMillis = memoMillis()
  /** The last query's effect: a hot loop that queries with the same function and bound allocates nothing. */
  let lastQuery: {
    readonly f: unknown
    readonly input: Duration.Input
    readonly skip: boolean
    readonly effect: Effect.Effect<unknown, StalePeer | InvalidOptions>
  } | undefined
  const query = <A>(options: QueryOptions, f: (views: ViewMap<V>) => A): Effect.Effect<A, StalePeer | InvalidOptions> => {
    const input = options.maxStaleness
    const mode = options.unreachable
    if (mode !== undefined && mode !== "fail" && mode !== "skip") {
      return Effect.fail(
        new InvalidOptions({ module: "query", option: "unreachable", value: mode, reason: "must be \"fail\" or \"skip\"", stateName })
      )
    }
    const skip = mode === "skip"
    if (input === undefined) return Effect.sync(() => f(views.handOut()))
    if (lastQuery !== undefined && lastQuery.f === f && lastQuery.input === input && lastQuery.skip === skip) {
      return lastQuery.effect as Effect.Effect<A, StalePeer | InvalidOptions> // made by this function for this very `f`
    }
    const maxStaleness = toMillis(input)
    if (maxStaleness === undefined) {
      return Effect.fail(
        new InvalidOptions({
          module: "query",
          option: "maxStaleness",
          value: input,
          reason: "must be a non-negative duration",
          stateName
        })
      )
    }
    const effect = Effect.suspend(() => {
      const now = env.monotonicNow()
      if (
        views.pendingPeers === 0 && core.awaited.size === 0 && core.unreachable.size === 0 &&
        now - views.oldestPeerSync <= maxStaleness
      ) {
        return Exit.succeed(f(views.handOut()))
      }
      return slowQuery(maxStaleness, now, skip, f)
    })
    if (typeof input !== "object") lastQuery = { f, input, skip, effect }
    return effect
  }

  return { query }
}

/**
 * The health of a state: its peers' views fresh, stale (older than `staleAfterMillis`, announced newer, or of an
 * unreachable owner) or failing.
 */
export const health = (core: SyncState<any, any, any, any>, stateName: string, now: number, staleAfterMillis: number): StateHealth => {
  let fresh = 0
  let stale = 0
  let failing = 0
  for (const entry of core.views.current.values()) {
    if (entry.source === core.config.self) continue
    const status = core.peers.entry(entry.source)
    if (status !== undefined && status.consecutiveFailures > 0) failing++
    else if (entry.pendingRemote !== undefined || entry.unreachableSince !== undefined || now - entry.syncedAt > staleAfterMillis) {
      stale++
    } 
    else fresh++
  }
  const total = fresh + stale + failing
  return {
    stateName,
    status: failing > 0 && failing * 2 >= total ? "Unhealthy" : failing > 0 || stale > 0 ? "Degraded" : "Healthy",
    peers: total,
    freshPeers: fresh,
    stalePeers: stale,
    failingPeers: failing
  }
}

/** The status of a state as `/status` shows it: every view held, with its staleness, and the counters. */
export const status = (
  core: SyncState<any, any, any, any>,
  stateName: string,
  now: number,
  metrics: StateStatus["metrics"],
  lastSaveFailure: string | undefined
): StateStatus => {
  const self = core.config.self
  const views = [...core.views.current.values()].sort((a, b) => a.source < b.source ? -1 : a.source > b.source ? 1 : 0)
  return {
    stateName,
    generation: core.owner.generation,
    views: views.map((view) => ({
      node: view.source,
      generation: view.generation,
      wireVersion: view.wireVersion,
      stalenessMillis: view.source === self ? 0 : Math.max(0, now - view.syncedAt),
      pendingRemote: view.pendingRemote,
      ...(view.unreachableSince === undefined ? {} : { unreachableSince: view.unreachableSince })
    })),
    awaiting: [...core.awaited].sort(),
    syncStatus: core.peers.report(core.owner.generation, self),
    metrics,
    lastSaveFailure
  }
}

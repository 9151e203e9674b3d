/**
 * The node side of `dstate/web`: a WebSocket endpoint on the operations
 * server of `dstate/http` that serves read replicas of chosen states to
 * browsers (`WebClient`), and the dashboard page built on them.
 *
 * A browser is a read-only peer. It presents a token (`WebToken`), asks for
 * states, and receives every view this node holds of them (its own and its
 * peers'), as snapshot frames in the library's envelope (length, protocol
 * byte, CRC32, generation, wire version) that it accepts by the same rules a
 * node does; a `synced` message every `statusInterval` says how stale each
 * view is on this node. Its queries with `maxStaleness` pull over the
 * socket: this node runs the same query (pulling its stale peers), then
 * confirms. It never writes: the endpoint accepts no frame from a browser
 * but its hello, pulls and snapshot requests.
 *
 * Only the states given in `states` are served (opt-in per state). A
 * connection whose token is malformed, not signed with `key`, expired, or
 * does not allow a state it asks for is refused before any view is sent
 * (`WebTokenRefused` on the browser; counted in `Metrics.web`).
 *
 * Limits per connection, as for TCP peers: a queue capped in frames and
 * bytes in which a view's newer snapshot supersedes the queued one (a slow
 * tab gets the newest views, not a backlog), and a writer that waits while
 * the socket holds more than `socketHighWater` bytes unsent.
 *
 * @since 0.2.0
 */
import { NodeFileSystem } from "@effect/platform-node"
import { Clock, Context, Duration, Effect, FileSystem, Layer, Redacted, Schedule, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Socket } from "effect/socket"
import type * as Http from "node:http"
import { fileURLToPath } from "node:url"
import { ClusterEvents } from "../ClusterEvents.ts"
import type * as DistributedState from "../DistributedState.ts"
import type { InvalidOptions } from "../DStateError.ts"
import { HttpOperations } from "../http/index.ts"
import { makeStateCodec, type StateCodec } from "../internal/codec.ts"
import * as MetricSeries from "../internal/metricSeries.ts"
import * as Check from "../internal/options.ts"
import * as Metrics from "../Metrics.ts"
import type { StateHandle } from "../StateHandle.ts"
import { StateRegistry } from "../StateRegistry.ts"
import { MaxFrameBytes } from "../SyncMessage.ts"
import * as Connection from "./internal/connection.ts"
import { dashboardPage } from "./dashboard/page.ts"
import * as Feed from "./internal/feed.ts"
import { controlFrame } from "./internal/frames.ts"
import type { StateStatus } from "./internal/protocol.ts"
import * as WebToken from "./WebToken.ts"

/**
 * Options of `layer`.
 *
 * @category models
 * @since 0.2.0
 */
export interface Options {
  /**
   * The key tokens are signed with (at least 16 characters), or several: the first is the one
   * `WebReplicas.issue` signs with, every one verifies (to rotate a key without refusing live tokens).
   */
  readonly key: Redacted.Redacted<string> | ReadonlyArray<Redacted.Redacted<string>>
  /** The states browsers may read from this node (registered with `StateRegistry.register` as usual). */
  readonly states: ReadonlyArray<DistributedState.Any>
  /** The WebSocket endpoint's path (default `"/web"`). */
  readonly path?: string | undefined
  /** Whether `GET /` serves the dashboard (and `GET /dashboard.js` its script; default `true`). */
  readonly dashboard?: boolean | undefined
  /** The dashboard's script, built by `scripts/build-web.ts` (default `dist/web/dashboard.js` of this package). */
  readonly dashboardScript?: string | undefined
  /** Open connections at most; one more is refused with `TooManyConnections` (default 256). */
  readonly maxConnections?: number | undefined
  /** Frames queued per connection at most; the oldest are dropped beyond (default 1024). */
  readonly maxQueuedFrames?: number | undefined
  /** Bytes queued per connection at most; the oldest frames are dropped beyond (default 8 MiB). */
  readonly maxQueuedBytes?: number | undefined
  /** Bytes a connection's socket may hold unsent before its writer waits (default 256 KiB). */
  readonly socketHighWater?: number | undefined
  /** How long a new connection has to send its hello (default 5 seconds). */
  readonly helloTimeout?: Duration.Input | undefined
  /** The largest message a browser may send, in UTF-16 code units (default 8192, at least 256: a hello carries its token); a larger one closes the connection (or refuses it, for the hello). */
  readonly maxClientMessageBytes?: number | undefined
  /** Pulls in flight per connection at most; one more is answered at once as stale (default 8). */
  readonly maxPendingPulls?: number | undefined
  /** How often each connection gets `synced` (and, with the status, the status; default 1 second). */
  readonly statusInterval?: Duration.Input | undefined
}

/**
 * The counters of the endpoint (`Metrics.web`; `superseded` and `droppedOldest` include the open
 * connections'), its open connections and what their queues hold.
 *
 * @category models
 * @since 0.2.0
 */
export type Stats = { readonly [K in Metrics.WebCounter]: number } & {
  /** Open connections. */
  readonly connections: number
  /** Frames waiting in the open connections' queues. */
  readonly queuedFrames: number
  /** Bytes waiting in the open connections' queues. */
  readonly queuedBytes: number
}

/**
 * The running endpoint.
 *
 * @category services
 * @since 0.2.0
 */
export class WebReplicas extends Context.Service<WebReplicas, {
  /** The WebSocket endpoint's path. */
  readonly path: string
  /** The names of the states served. */
  readonly states: ReadonlyArray<string>
  /** Issues a token signed with the endpoint's first key (see `WebToken.issue`). */
  readonly issue: (options: WebToken.IssueOptions) => Effect.Effect<string, InvalidOptions>
  /** The counters and the open connections. */
  readonly stats: Effect.Effect<Stats>
}>()("dstate/web/WebReplicas") {}

const checker = { module: "WebReplicas" }

const defaultScript = fileURLToPath(new URL("../../dist/web/dashboard.js", import.meta.url))

/**
 * The endpoint, mounted on the operations server of `dstate/http`: provide
 * it to `HttpOperations.layer`. Fails with `InvalidOptions` for a key
 * shorter than 16 characters, no state or two states of one name, a path
 * that does not start with `/` (or collides with the operations endpoints),
 * or a limit out of range (the counts and sizes positive integers, the
 * durations finite and positive).
 *
 * @example
 * ```ts
 * import { Layer, Redacted } from "effect"
 * import { StateRegistry } from "dstate"
 * import { HttpOperations } from "dstate/http"
 * import { TcpRuntime } from "dstate/node"
 * import { Fixtures } from "dstate/testing"
 * import { WebReplicas } from "dstate/web"
 *
 * const node = StateRegistry.layer.pipe(
 *   Layer.provideMerge(TcpRuntime.layer({ nodeId: "node-1", port: 7100, secret: Redacted.make("a long random cluster secret") }))
 * )
 * const web = WebReplicas.layer({ key: Redacted.make("a long random web key"), states: [Fixtures.Counter] })
 * const served = HttpOperations.layer({ port: 9464 }).pipe(Layer.provideMerge(web), Layer.provideMerge(node))
 * ```
 *
 * @category layers
 * @since 0.2.0
 */
export const layer = (
  options: Options
): Layer.Layer<WebReplicas | HttpOperations.Mounts, InvalidOptions, StateRegistry | ClusterEvents> =>
  Layer.effectContext(Effect.map(make(options), ({ mounts, service }) =>
    Context.make(WebReplicas, service).pipe(Context.add(HttpOperations.Mounts, mounts))))

const make = Effect.fnUntraced(function*(options: Options) {
  const keys = Array.isArray(options.key) ? options.key as ReadonlyArray<Redacted.Redacted<string>> : [options.key as Redacted.Redacted<string>]
  if (keys.length === 0) return yield* Check.invalid(checker, "key", [], "must be a key or a non-empty array of keys")
  for (const key of keys) yield* WebToken.checkKey(key, "WebReplicas")
  const definitions = options.states
  if (!Array.isArray(definitions) || definitions.length === 0) {
    return yield* Check.invalid(checker, "states", definitions, "must name at least one state definition")
  }
  const names = definitions.map((definition) => definition.name)
  if (new Set(names).size !== names.length) return yield* Check.invalid(checker, "states", names, "must not name a state twice")
  const path = options.path ?? "/web"
  if (typeof path !== "string" || !/^\/[A-Za-z0-9._~\-/]*$/.test(path) || reserved.has(path)) {
    return yield* Check.invalid(checker, "path", path, "must be an absolute path of URL-safe characters other than /, /dashboard.js and the operations endpoints")
  }
  const limits: Connection.Limits = {
    maxConnections: yield* Check.integer(checker, "maxConnections", options.maxConnections ?? 256, 1),
    maxQueuedFrames: yield* Check.integer(checker, "maxQueuedFrames", options.maxQueuedFrames ?? 1024, 1),
    maxQueuedBytes: yield* Check.integer(checker, "maxQueuedBytes", options.maxQueuedBytes ?? 8 * 1024 * 1024, 1),
    socketHighWater: yield* Check.integer(checker, "socketHighWater", options.socketHighWater ?? 256 * 1024, 1),
    helloTimeout: yield* Check.duration(checker, "helloTimeout", options.helloTimeout ?? "5 seconds", "positive"),
    maxClientMessageBytes: yield* Check.integer(checker, "maxClientMessageBytes", options.maxClientMessageBytes ?? 8192, 256),
    maxPendingPulls: yield* Check.integer(checker, "maxPendingPulls", options.maxPendingPulls ?? 8, 1)
  }
  const statusInterval = yield* Check.duration(checker, "statusInterval", options.statusInterval ?? "1 second", "positive")
  const dashboard = options.dashboard ?? true
  const script = options.dashboardScript ?? defaultScript

  const registry = yield* StateRegistry
  const events = yield* ClusterEvents
  const clock = yield* Clock.Clock
  const maxFrameBytes = yield* MaxFrameBytes
  const self = registry.nodeId
  const monotonicNow = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
  const series = MetricSeries.counters(Metrics.web, MetricSeries.labelled(yield* Effect.context<never>(), { node: self }))
  const connections = new Set<Connection.Connection>()
  const gauge = MetricSeries.gauge(
    Metrics.webConnections,
    MetricSeries.labelled(yield* Effect.context<never>(), { node: self }),
    () => connections.size
  )
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      series.remove()
      gauge.remove()
    })
  )

  const logContext = yield* Effect.context<never>()
  const served = new Map<string, Connection.Served & { handleRef: StateHandle<unknown, unknown> | undefined }>()
  for (const definition of definitions) {
    const codec = makeStateCodec(definition) as StateCodec<unknown, unknown, unknown>
    const feed = Feed.make({
      definition,
      codec,
      self,
      maxFrameBytes,
      monotonicNow,
      onEncodeFailure: (owner, reason) =>
        Effect.runForkWith(logContext)(
          Effect.logWarning("a view cannot be sent to browsers").pipe(
            Effect.annotateLogs({ state: definition.name, owner, reason })
          )
        )
    })
    const entry = {
      feed,
      handleRef: undefined as StateHandle<unknown, unknown> | undefined,
      handle: () => entry.handleRef
    }
    served.set(definition.name, entry)
  }

  // Each served state: once it is registered here, its view map is followed and, every tick, reconciled
  // with a fresh snapshot and confirmed to the subscribers with `synced`.
  for (const definition of definitions) {
    const entry = served.get(definition.name)!
    const follow = Effect.gen(function*() {
      const handle = (yield* registry.lookup(definition).pipe(
        Effect.retry(Schedule.spaced("100 millis"))
      )) as unknown as StateHandle<unknown, unknown>
      entry.handleRef = handle
      const tick = Effect.gen(function*() {
        entry.feed.reconcile(yield* handle.snapshot)
        if (entry.feed.subscribers() === 0) return
        const frame = entry.feed.synced(true)
        for (const connection of connections) {
          if (connection.states.includes(definition.name)) connection.offerControl(frame, `synced:${definition.name}`)
        }
      })
      yield* Effect.forkScoped(Effect.repeat(tick, Schedule.spaced(statusInterval)))
      yield* handle.changes.pipe(Stream.runForEach((views) => Effect.sync(() => entry.feed.reconcile(views))))
    })
    yield* Effect.forkScoped(follow)
  }

  // The status, for connections whose token allows it: members, reachability and per-state counters.
  const statusTick = Effect.gen(function*() {
    let wanted = false
    for (const connection of connections) wanted ||= connection.status
    if (!wanted) return
    const members = [...(yield* events.members)].sort()
    const unreachable = [...(yield* events.unreachable)].map(([node, since]) => ({ node, since })).sort((a, b) =>
      a.node < b.node ? -1 : 1
    )
    const now = monotonicNow()
    const all = new Map<string, StateStatus>()
    for (const state of yield* registry.status) {
      if (!served.has(state.stateName)) continue
      all.set(state.stateName, {
        name: state.stateName,
        mutations: state.metrics.mutations,
        snapshotsReceived: state.metrics.snapshotsReceived,
        deltasReceived: state.metrics.deltasReceived,
        peers: state.syncStatus.map((peer) => ({
          node: peer.node,
          consecutiveFailures: peer.consecutiveFailures,
          gapCount: peer.gapCount,
          ...(peer.lastSyncAt === undefined ? {} : { lastSyncAgoMillis: Math.max(0, now - peer.lastSyncAt) }),
          ...(peer.lastError === undefined ? {} : { lastError: peer.lastError })
        }))
      })
    }
    const at = yield* Clock.currentTimeMillis
    const frames = new Map<string, Uint8Array>()
    for (const connection of connections) {
      if (!connection.status) continue
      const key = connection.states.join("\u0000")
      let frame = frames.get(key)
      if (frame === undefined) {
        const states = connection.states.flatMap((name) => all.get(name) ?? [])
        frame = controlFrame({ t: "status", node: self, at, members, unreachable, states })
        frames.set(key, frame)
      }
      connection.offerControl(frame, "status")
    }
  })
  yield* Effect.forkScoped(Effect.repeat(statusTick, Schedule.spaced(statusInterval)))

  const endpoint: Connection.Endpoint = {
    self,
    keys,
    limits,
    served,
    connections,
    count: series.inc,
    monotonicNow
  }

  let closing = false
  const upgrade = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.gen(function*() {
      const socket = yield* request.upgrade.pipe(Effect.option)
      if (socket._tag === "None") return HttpServerResponse.text("a WebSocket endpoint\n", { status: 426 })
      // A browser reconnecting while the node stops is closed at once (1001), so that the server can close.
      if (closing) {
        yield* Effect.scoped(Effect.gen(function*() {
          yield* socket.value.reader
          const writer = yield* socket.value.writer
          yield* writer.write(new Socket.CloseEvent(1001, "the node is stopping"))
        })).pipe(Effect.ignore)
        return HttpServerResponse.empty()
      }
      const tcp = (request.source as Http.IncomingMessage).socket
      yield* Effect.scoped(Connection.serve(endpoint, socket.value, tcp ?? undefined)).pipe(Effect.ignore)
      return HttpServerResponse.empty()
    })

  const fs = yield* FileSystem.FileSystem.pipe(Effect.provide(NodeFileSystem.layer))
  const scriptResponse = fs.readFile(script).pipe(
    Effect.map((bytes) =>
      HttpServerResponse.uint8Array(bytes, {
        contentType: "text/javascript; charset=utf-8",
        headers: { "cache-control": "no-cache" }
      })
    ),
    Effect.orElseSucceed(() =>
      HttpServerResponse.text(`the dashboard's script is not built (${script}): run node scripts/build-web.ts\n`, {
        status: 503
      })
    )
  )
  const page = HttpServerResponse.html(dashboardPage(path))
  const routes: Array<HttpRouter.Route<never, never>> = [HttpRouter.route("GET", path as HttpRouter.PathInput, upgrade)]
  if (dashboard) {
    routes.push(HttpRouter.route("GET", "/", Effect.succeed(page)))
    routes.push(HttpRouter.route("GET", "/dashboard.js", scriptResponse))
  }

  const service = WebReplicas.of({
    path,
    states: names,
    issue: (issueOptions) => WebToken.issue(keys[0], issueOptions),
    stats: Effect.sync(() => {
      // Superseded and dropped frames are counted when a connection ends: add those of the open ones.
      let superseded = series.values.superseded
      let droppedOldest = series.values.droppedOldest
      let queuedFrames = 0
      let queuedBytes = 0
      for (const connection of connections) {
        const queue = connection.queue()
        superseded += queue.superseded
        droppedOldest += queue.droppedOldest + queue.replacedAtCap
        queuedFrames += queue.queuedFrames
        queuedBytes += queue.queuedBytes
      }
      return { ...series.values, superseded, droppedOldest, connections: connections.size, queuedFrames, queuedBytes }
    })
  })
  // The node is stopping: every browser is told (1001) and its handler ends, so that the server can close.
  const close = Effect.gen(function*() {
    closing = true
    yield* Effect.forEach([...connections], (connection) => connection.close, { discard: true })
    yield* Effect.sleep("10 millis").pipe(
      Effect.repeat({ until: () => connections.size === 0 }),
      Effect.timeoutOption("2 seconds")
    )
  })
  return { service, mounts: HttpOperations.Mounts.of({ routes, close }) }
})

const reserved = new Set(["/", "/dashboard.js", "/healthz", "/readyz", "/metrics", "/status"])

/**
 * Operations endpoints of one dstate node over HTTP, for probes, scrapers and
 * operators: `GET /healthz` (liveness), `GET /readyz` (readiness),
 * `GET /metrics` (Prometheus text of every dstate metric) and `GET /status`
 * (members and, per state, the generation held of every owner, staleness,
 * sync status and counters). The server is effect's `HttpRouter` on the
 * Node HTTP server of `@effect/platform-node`, on a host and port of its
 * own, bound to 127.0.0.1 unless told otherwise; `/metrics` and `/status`
 * can require a bearer token. The JSON bodies are described by the Schemas
 * of this module (`Status`, `Health`, `Ready`), which the `dstate` CLI
 * decodes with. Other modules can serve routes on the same server through
 * `Mounts` (`dstate/web` serves its WebSocket endpoint and dashboard so).
 *
 * - `/healthz`: 200 while the registry is not shutting down and every state
 *   actor handles a probe within `livenessTimeout` (a probe waits behind the
 *   messages already queued, so a stuck or dead actor fails it); 503
 *   otherwise. A failing store does not fail liveness: restarting the
 *   process would not repair it.
 * - `/readyz`: 200 once at least one state is registered, at least
 *   `minPeers` other members are seen, every state holds the view of each
 *   current member (the join exchange is done) and no state's last save
 *   failed; 503 with the reasons before that, and from the start of the
 *   shutdown on (see `drainDelay`).
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Duration, Effect, Layer, Metric, Option, Redacted, Schema } from "effect"
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import * as Crypto from "node:crypto"
import * as Http from "node:http"
import type * as Net from "node:net"
import { ClusterEvents } from "../ClusterEvents.ts"
import { type InvalidOptions, ListenFailed } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import * as Check from "../internal/options.ts"
import * as Metrics from "../Metrics.ts"
import * as NodeId from "../NodeId.ts"
import { StateRegistry } from "../StateRegistry.ts"

// ---- the Schemas of the JSON bodies --------------------------------------------------------------

/**
 * One view a node holds, in `/status`: its owner, the generation held, the
 * wire version it arrived in, milliseconds since it was last synced (0 for
 * the node's own) and a newer generation announced by the change feed and
 * not pulled yet.
 *
 * @category schemas
 * @since 0.1.0
 */
export const ViewStatus = Schema.Struct({
  node: NodeId.NodeId,
  generation: Generation.Generation,
  wireVersion: Schema.Int,
  stalenessMillis: Schema.Finite,
  pendingRemote: Schema.optional(Generation.Generation),
  /** Since when (wall-clock ms) the owner is unreachable; absent while it is reachable. @since 0.2.0 */
  unreachableSince: Schema.optional(Schema.Finite)
})

/**
 * @category models
 * @since 0.1.0
 */
export type ViewStatus = typeof ViewStatus.Type

/**
 * How replication from one peer goes, in `/status` (`Diagnostics.PeerSyncStatus`;
 * the times are the node's monotonic milliseconds).
 *
 * @category schemas
 * @since 0.1.0
 */
export const PeerSyncStatus = Schema.Struct({
  node: NodeId.NodeId,
  localAge: Schema.Int,
  remoteAge: Schema.optional(Schema.Int),
  remoteIncarnation: Schema.optional(Schema.Int),
  gapCount: Schema.Int,
  consecutiveFailures: Schema.Int,
  lastSyncAt: Schema.optional(Schema.Finite),
  lastAttemptAt: Schema.optional(Schema.Finite),
  lastError: Schema.optional(Schema.String),
  lastSyncLatencyMillis: Schema.optional(Schema.Finite)
})

/**
 * @category models
 * @since 0.1.0
 */
export type PeerSyncStatus = typeof PeerSyncStatus.Type

const counterFields = Object.fromEntries(Object.keys(Metrics.state).map((key) => [key, Schema.Int])) as {
  readonly [K in Metrics.StateCounter]: typeof Schema.Int
}

/**
 * The counters of one state on one node, in `/status`: one integer per
 * field of `Diagnostics.StateSyncMetrics` (the series `Metrics.state`).
 *
 * @category schemas
 * @since 0.1.0
 */
export const Counters = Schema.Struct(counterFields)

/**
 * @category models
 * @since 0.1.0
 */
export type Counters = typeof Counters.Type

/**
 * One state in `/status`: its name, its health, this node's own generation,
 * every view held (sorted by owner), the members whose view is awaited, the
 * per-peer sync status, the counters, and the error of the last save while
 * the last save failed.
 *
 * @category schemas
 * @since 0.1.0
 */
export const StateStatus = Schema.Struct({
  name: Schema.String,
  health: Schema.Literals(["Healthy", "Degraded", "Unhealthy"]),
  generation: Generation.Generation,
  views: Schema.Array(ViewStatus),
  awaiting: Schema.Array(NodeId.NodeId),
  syncStatus: Schema.Array(PeerSyncStatus),
  counters: Counters,
  lastSaveFailure: Schema.optional(Schema.String)
})

/**
 * @category models
 * @since 0.1.0
 */
export type StateStatus = typeof StateStatus.Type

/**
 * The body of `GET /status`: the node, the other members it sees (sorted),
 * its readiness (with the reasons when not ready), whether it is draining,
 * and every registered state (sorted by name).
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { HttpOperations } from "dstate/http"
 *
 * const status = Effect.gen(function*() {
 *   const response = yield* Effect.promise(() => fetch("http://127.0.0.1:9464/status"))
 *   const json = yield* Effect.promise(() => response.json())
 *   return yield* Schema.decodeUnknownEffect(HttpOperations.Status)(json)
 * })
 * ```
 *
 * @category schemas
 * @since 0.1.0
 */
export const Status = Schema.Struct({
  node: NodeId.NodeId,
  members: Schema.Array(NodeId.NodeId),
  ready: Schema.Boolean,
  draining: Schema.Boolean,
  reasons: Schema.Array(Schema.String),
  states: Schema.Array(StateStatus)
})

/**
 * @category models
 * @since 0.1.0
 */
export type Status = typeof Status.Type

/**
 * The body of `GET /healthz`: whether the node is alive, whether its
 * registry is shutting down, and the states whose actor did not answer the
 * probe in time.
 *
 * @category schemas
 * @since 0.1.0
 */
export const Health = Schema.Struct({
  alive: Schema.Boolean,
  shuttingDown: Schema.Boolean,
  failing: Schema.Array(Schema.String)
})

/**
 * @category models
 * @since 0.1.0
 */
export type Health = typeof Health.Type

/**
 * The body of `GET /readyz`: whether the node is ready, whether it is
 * draining, and what is missing (one line each, empty when ready).
 *
 * @category schemas
 * @since 0.1.0
 */
export const Ready = Schema.Struct({
  ready: Schema.Boolean,
  draining: Schema.Boolean,
  reasons: Schema.Array(Schema.String)
})

/**
 * @category models
 * @since 0.1.0
 */
export type Ready = typeof Ready.Type

// ---- the service -------------------------------------------------------------------------------

/**
 * Options of `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Interface to listen on (default `"127.0.0.1"`: loopback only). Binding elsewhere, `"0.0.0.0"` for example, is a choice to make here. */
  readonly host?: string | undefined
  /** Port to listen on (default 0: chosen by the OS; see `HttpOperations.url`). */
  readonly port?: number | undefined
  /** When given, `/metrics` and `/status` answer 401 unless the request carries `Authorization: Bearer <token>`. */
  readonly token?: Redacted.Redacted<string> | undefined
  /** How long `/healthz` waits for every state actor to answer its probe (default 5 seconds). */
  readonly livenessTimeout?: Duration.Input | undefined
  /** Other members that must be seen before `/readyz` answers 200 (default 0; e.g. 1 for a node given seeds). */
  readonly minPeers?: number | undefined
  /**
   * How long the endpoints stay up after the node starts to stop, with `/readyz` answering 503 (draining),
   * before the node goes on with its shutdown (default 0). Give a load balancer time to notice: a few
   * readiness periods, say 5 seconds under Kubernetes.
   */
  readonly drainDelay?: Duration.Input | undefined
}

/**
 * The running endpoints of this node.
 *
 * @category services
 * @since 0.1.0
 */
export class HttpOperations extends Context.Service<HttpOperations, {
  /** The address the server listens on (with the port actually bound). */
  readonly address: { readonly host: string; readonly port: number }
  /** The server's base URL, `http://host:port`. */
  readonly url: string
  /** Turns `/readyz` to 503 (draining) from now on, as the shutdown does; for a node about to leave. */
  readonly drain: Effect.Effect<void>
  /** Whether the node is draining. */
  readonly draining: Effect.Effect<boolean>
}>()("dstate/http/HttpOperations") {}

/**
 * Routes another module serves on the same server, when a layer provides
 * them: `dstate/web` mounts its WebSocket endpoint and its dashboard this
 * way (`WebReplicas.layer`). Optional: without it the server has the four
 * endpoints above.
 *
 * @category services
 * @since 0.2.0
 */
export class Mounts extends Context.Service<Mounts, {
  readonly routes: ReadonlyArray<HttpRouter.Route<never, never>>
  /** Ends what the routes hold open (WebSockets), after the drain and before the server closes. */
  readonly close: Effect.Effect<void>
}>()("dstate/http/HttpOperations/Mounts") {}

/**
 * The operations endpoints of the node whose `StateRegistry` and
 * `ClusterEvents` are provided, listening until the layer's scope closes.
 * When the scope closes the endpoints first drain (`/readyz` answers 503)
 * for `drainDelay`, then the server closes, then the layers below stop.
 * Fails with `InvalidOptions` for an option out of range and `ListenFailed`
 * when the address cannot be bound.
 *
 * @example
 * ```ts
 * import { Layer, Redacted } from "effect"
 * import { StateRegistry } from "dstate"
 * import { HttpOperations } from "dstate/http"
 * import { TcpRuntime } from "dstate/node"
 *
 * const node = StateRegistry.layer.pipe(
 *   Layer.provideMerge(TcpRuntime.layer({ nodeId: "node-1", port: 7100, secret: Redacted.make("a long random cluster secret") }))
 * )
 * const withOperations = HttpOperations.layer({ port: 9464, minPeers: 1, drainDelay: "5 seconds" }).pipe(
 *   Layer.provideMerge(node)
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: Options
): Layer.Layer<HttpOperations, InvalidOptions | ListenFailed, StateRegistry | ClusterEvents> =>
  Layer.effect(HttpOperations, make(options ?? {}))

const checker = { module: "HttpOperations" }

const make = Effect.fnUntraced(function*(options: Options) {
  const host = options.host ?? "127.0.0.1"
  if (typeof host !== "string" || host.length === 0) {
    return yield* Check.invalid(checker, "host", host, "must be a non-empty host name or address")
  }
  const port = yield* Check.integer(checker, "port", options.port ?? 0, 0, 65535)
  const livenessTimeout = yield* Check.duration(checker, "livenessTimeout", options.livenessTimeout ?? "5 seconds", "positive")
  const drainDelay = yield* Check.duration(checker, "drainDelay", options.drainDelay ?? 0, "nonNegative")
  const minPeers = yield* Check.integer(checker, "minPeers", options.minPeers ?? 0, 0)
  const token = options.token
  if (token !== undefined && Redacted.value(token).length === 0) {
    return yield* Check.invalid(checker, "token", "<redacted>", "must not be empty")
  }

  const registry = yield* StateRegistry
  const events = yield* ClusterEvents
  const context = yield* Effect.context<never>()
  const nodeId = registry.nodeId
  let draining = false

  const members = Effect.map(events.members, (set) => [...set].sort())

  const ready = Effect.gen(function*() {
    const readiness = yield* registry.readiness
    const peers = yield* members
    const reasons = [...readiness.reasons]
    if (draining) reasons.unshift("the node is draining")
    if (peers.length < minPeers) reasons.push(`sees ${peers.length} of the ${minPeers} peers required`)
    return { ready: reasons.length === 0, draining, reasons }
  })

  const authorized = (request: HttpServerRequest.HttpServerRequest) =>
    token === undefined || bearerMatches(request.headers.authorization, Redacted.value(token))

  /** A JSON response of `body` as its schema encodes it (the bodies are plain data: encoding cannot fail). */
  const json = <A, I>(encode: (a: A) => I, body: A, status: number) =>
    Effect.sync(() => HttpServerResponse.jsonUnsafe(encode(body), { status }))

  const healthz = Effect.gen(function*() {
    const liveness = yield* registry.liveness(livenessTimeout)
    return yield* json(encodeHealth, { ...liveness }, liveness.alive ? 200 : 503)
  })

  const readyz = Effect.gen(function*() {
    const report = yield* ready
    return yield* json(encodeReady, report, report.ready ? 200 : 503)
  })

  const metrics = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.sync(() => {
      if (!authorized(request)) return unauthorized
      return HttpServerResponse.text(metricsOf(context, nodeId), { contentType: "text/plain; version=0.0.4; charset=utf-8" })
    })

  const status = Effect.fnUntraced(function*(request: HttpServerRequest.HttpServerRequest) {
    if (!authorized(request)) return unauthorized
    const report = yield* ready
    const health = new Map((yield* registry.health).states.map((state) => [state.stateName, state.status]))
    const states = yield* registry.status
    const body: Status = {
      node: nodeId,
      members: yield* members,
      ready: report.ready,
      draining,
      reasons: report.reasons,
      states: states.map((state) => ({
        name: state.stateName,
        health: health.get(state.stateName) ?? "Healthy",
        generation: state.generation,
        views: state.views,
        awaiting: state.awaiting,
        syncStatus: state.syncStatus,
        counters: state.metrics,
        lastSaveFailure: state.lastSaveFailure
      }))
    }
    return yield* json(encodeStatus, body, 200)
  })

  const mounts = yield* Effect.serviceOption(Mounts)
  const unused = new Set<Net.Socket>()
  const routes = HttpRouter.addAll([
    HttpRouter.route("GET", "/healthz", healthz),
    HttpRouter.route("GET", "/readyz", readyz),
    HttpRouter.route("GET", "/metrics", metrics),
    HttpRouter.route("GET", "/status", status),
    ...Option.match(mounts, { onNone: () => [], onSome: (mounted) => mounted.routes })
  ])
  const server = HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(() => trackUnused(Http.createServer(), unused), { host, port }))
  )
  const built = yield* Layer.build(server).pipe(
    Effect.mapError((cause) => new ListenFailed({ host, port, cause }))
  )
  const address = Context.get(built, HttpServer.HttpServer).address
  const boundPort = address._tag === "UnixPathAddress" ? port : address.port
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${boundPort}`

  // Finalizers run last-added first. Right before the server's close, which waits for every connection:
  // connections that never carried a request (a browser's preconnect) are closed.
  yield* Effect.addFinalizer(() => Effect.sync(() => unused.forEach((socket) => socket.destroy())))
  // Before that, after the drain: what the mounted routes hold open (WebSockets) is closed.
  if (Option.isSome(mounts)) yield* Effect.addFinalizer(() => mounts.value.close)
  // Added after the server: runs before it closes, so that probes see the node draining.
  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => {
      draining = true
      return Duration.toMillis(drainDelay) > 0 ? Effect.sleep(drainDelay) : Effect.void
    })
  )

  return HttpOperations.of({
    address: { host, port: boundPort },
    url,
    drain: Effect.sync(() => {
      draining = true
    }),
    draining: Effect.sync(() => draining)
  })
})

/** Keeps in `unused` the server's connections that have not carried a request yet. */
const trackUnused = (server: Http.Server, unused: Set<Net.Socket>): Http.Server => {
  server.on("connection", (socket: Net.Socket) => {
    unused.add(socket)
    socket.once("close", () => unused.delete(socket))
  })
  server.on("request", (request: Http.IncomingMessage) => unused.delete(request.socket))
  server.on("upgrade", (request: Http.IncomingMessage) => unused.delete(request.socket))
  return server
}

const encodeHealth = Schema.encodeSync(Health)
const encodeReady = Schema.encodeSync(Ready)
const encodeStatus = Schema.encodeSync(Status)

const unauthorized = HttpServerResponse.text("a bearer token is required\n", {
  status: 401,
  headers: { "www-authenticate": "Bearer" }
})

/**
 * Whether an `Authorization` header carries `Bearer <token>`. The comparison
 * is of SHA-256 digests with `timingSafeEqual`: its time depends on neither
 * the token's length nor where the first difference is.
 */
const bearerMatches = (header: string | undefined, token: string): boolean => {
  if (header === undefined) return false
  const match = /^Bearer[ ]+(.+)$/i.exec(header.trim())
  const given = match === null ? "" : match[1]
  const expected = Crypto.createHash("sha256").update(token).digest()
  const actual = Crypto.createHash("sha256").update(given).digest()
  return Crypto.timingSafeEqual(expected, actual) && match !== null
}

/**
 * The Prometheus text of the registry's series that belong to `node` (label
 * `node`) or to no node at all (the application's own metrics): several
 * nodes in one process share one registry, and each endpoint speaks for its
 * own node.
 */
const metricsOf = (context: Context.Context<never>, node: NodeId.NodeId): string => {
  const registry = Context.get(context, Metric.MetricRegistry)
  const own: Metric.MetricRegistry = new Map()
  for (const [key, metric] of registry) {
    const label = metric.attributes?.node
    if (label === undefined || label === node) own.set(key, metric)
  }
  return PrometheusMetrics.formatUnsafe(Context.add(context, Metric.MetricRegistry, own))
}

/**
 * The Effect cluster runtime: `ActorRuntime` and `ClusterEvents` for
 * applications that already run Effect's cluster (`effect/cluster`). The
 * nodes are the cluster's runners, and membership comes from the cluster's
 * own `RunnerStorage`, so no seeds are configured.
 *
 * - **Node ids** are derived from the runner address, `"host:port"` (see
 *   `nodeId`): stable for a runner across restarts, so persisted state is
 *   found again by the runner that wrote it.
 * - **Membership** is `RunnerStorage.getRunners` polled every `pollInterval`
 *   (default 1 second) and diffed. A runner is a member while the storage
 *   lists it as healthy; the healthy flag is maintained by the cluster itself
 *   (`RunnerHealth`: ping, Kubernetes, or noop), and `SqlRunnerStorage` also
 *   stops listing a runner whose heartbeats stopped. A runner that is not
 *   listed as healthy, this one included, is not a member: a runner that sees
 *   itself unlisted drops every peer until it is listed again. A listed
 *   runner whose dstate heartbeats stop is `NodeUnreachable` (its views stay)
 *   and `NodeReachable` when heard again; it is `NodeLeft` once unlisted (at
 *   once) or after `downAfter` (default 30 seconds) of unreachability.
 * - **Transport**: frames travel over dstate's TCP transport (the one of
 *   `dstate/node`: HMAC-authenticated connections, optional TLS, capped
 *   per-peer queues, heartbeats), on a port next to the runner's, `runner port
 *   + portOffset` (default 1000) on the runner's host. Only runners the
 *   storage lists are dialed or admitted.
 *
 * A peer is `NodeJoined` once it is listed and its connection is
 * authenticated; it is `NodeLeft` when the storage stops listing it (at the
 * next poll), when it leaves gracefully (its layer closed), or when the
 * transport's failure detector finds it silent, whichever comes first.
 *
 * @example
 * ```ts
 * import { NodeClusterSocket, NodeCrypto } from "@effect/platform-node"
 * import { PgClient } from "@effect/sql-pg"
 * import { Layer, Option, Redacted } from "effect"
 * import { RunnerAddress, ShardingConfig, SqlMessageStorage, SqlRunnerStorage } from "effect/cluster"
 * import { StateRegistry } from "dstate"
 * import { ClusterRuntime } from "dstate/cluster"
 *
 * const shardingConfig = { runnerAddress: Option.some(RunnerAddress.make("10.0.0.7", 34431)) }
 *
 * // The cluster's storage, shared by the runner and by dstate.
 * const Storage = Layer.mergeAll(SqlRunnerStorage.layer, SqlMessageStorage.layer).pipe(
 *   Layer.provide(NodeCrypto.layerDigest),
 *   Layer.provideMerge(ShardingConfig.layer(shardingConfig)),
 *   Layer.provide(PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL!) }))
 * )
 *
 * // The Effect cluster runner, and dstate on it: node id "10.0.0.7:34431", TCP on port 35431.
 * const Runner = StateRegistry.layer.pipe(
 *   Layer.provideMerge(ClusterRuntime.layer({ secret: Redacted.make(process.env.DSTATE_SECRET!) })),
 *   Layer.provideMerge(NodeClusterSocket.layer({ storage: "byo", shardingConfig })),
 *   Layer.provideMerge(Storage)
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Layer, Option, Stream } from "effect"
import { RunnerStorage, ShardingConfig } from "effect/cluster"
import type { RunnerAddress } from "effect/cluster"
import type { ActorRuntime } from "../ActorRuntime.ts"
import type { ClusterEvents } from "../ClusterEvents.ts"
import type { InvalidOptions, ListenFailed } from "../DStateError.ts"
import { NotARunner } from "../DStateError.ts"
import * as Check from "../internal/options.ts"
import * as NodeId from "../NodeId.ts"
import * as TcpRuntime from "../node/TcpRuntime.ts"

/**
 * Options of `layer`. Besides its own, it takes the TCP runtime's transport
 * options (secret, TLS, limits, heartbeats, timeouts, reconnection); the
 * addresses come from the cluster.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options extends Omit<TcpRuntime.Options, "nodeId" | "host" | "port" | "advertiseHost" | "seeds"> {
  /** How often `RunnerStorage.getRunners` is read (default 1 second): the bound on noticing a membership change. */
  readonly pollInterval?: Duration.Input | undefined
  /** A `getRunners` call that has not answered within this time counts as failed (default 5 seconds). */
  readonly pollTimeout?: Duration.Input | undefined
  /**
   * The dstate port of a runner is its cluster port plus this offset (default 1000), on the same host. Every
   * runner must use the same offset.
   */
  readonly portOffset?: number | undefined
  /** Interface to listen on (default: the host of `runnerListenAddress`, or of `runnerAddress`). */
  readonly listenHost?: string | undefined
}

/**
 * The `ShardingConfig` has no `runnerAddress`: this process is a cluster
 * client only, not a runner, so it cannot be a dstate node. The same class as
 * `DStateError.NotARunner`.
 *
 * @category errors
 * @since 0.1.0
 */
export { NotARunner } from "../DStateError.ts"

/**
 * The node id of the runner at `address`: `"host:port"`, the key under which
 * the cluster stores the runner too.
 *
 * @category constructors
 * @since 0.1.0
 */
export const nodeId = (address: RunnerAddress.RunnerAddress): NodeId.NodeId =>
  NodeId.make(`${address.host}:${address.port}`)

/**
 * Where the runner at `address` accepts dstate connections: the same host,
 * the runner's port plus `portOffset`; `undefined` when that is not a port.
 *
 * @category constructors
 * @since 0.1.0
 */
export const transportAddress = (
  address: RunnerAddress.RunnerAddress,
  portOffset = 1000
): TcpRuntime.Address | undefined => {
  const port = address.port + portOffset
  return Number.isInteger(port) && port >= 1 && port <= 65535 ? { host: address.host, port } : undefined
}

/**
 * The member set one reading of the storage gives, seen from `self`: the
 * healthy runners other than `self`, with their dstate addresses; empty when
 * `self` is not itself listed as healthy.
 */
const membersOf = (
  runners: ReadonlyArray<readonly [runner: { readonly address: RunnerAddress.RunnerAddress }, healthy: boolean]>,
  self: NodeId.NodeId,
  portOffset = 1000
): ReadonlyMap<NodeId.NodeId, TcpRuntime.Address> => {
  const members = new Map<NodeId.NodeId, TcpRuntime.Address>()
  let listed = false
  for (const [runner, healthy] of runners) {
    if (!healthy) continue
    const node = nodeId(runner.address)
    if (node === self) {
      listed = true
      continue
    }
    const address = transportAddress(runner.address, portOffset)
    if (address !== undefined) members.set(node, address)
  }
  return listed ? members : new Map()
}

/** Polls the storage; a failed or slow reading keeps the previous member set. */
const poll = (
  storage: RunnerStorage.RunnerStorage["Service"],
  self: NodeId.NodeId,
  settings: { readonly interval: Duration.Duration; readonly timeout: Duration.Duration; readonly portOffset: number }
): Stream.Stream<ReadonlyMap<NodeId.NodeId, TcpRuntime.Address>> => {
  let last: ReadonlyMap<NodeId.NodeId, TcpRuntime.Address> = new Map()
  const read = storage.getRunners.pipe(
    Effect.timeout(settings.timeout),
    Effect.map((runners) => {
      last = membersOf(runners, self, settings.portOffset)
      return last
    }),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.interrupt
        : Effect.logWarning("cannot read the cluster's runners; membership unchanged", cause).pipe(
          Effect.annotateLogs({ node: self }),
          Effect.as(last)
        )
    )
  )
  return Stream.tick(settings.interval).pipe(Stream.mapEffect(() => read))
}

/**
 * The dstate runtime of one Effect cluster runner: reads this runner's
 * address from `ShardingConfig`, listens for dstate connections on the
 * runner's port plus `portOffset`, takes membership from `RunnerStorage`, and
 * provides `ActorRuntime`, `ClusterEvents` and the `TcpTransport`
 * diagnostics (plus `MaxFrameBytes`, like the TCP runtime).
 *
 * **When to use**
 *
 * The application already runs Effect cluster runners (with `Sharding`,
 * `RunnerStorage` and `RunnerHealth`) and dstate should run on the same
 * processes and follow the same membership.
 *
 * **Gotchas**
 *
 * - Provide it the same `RunnerStorage` the cluster uses (a shared
 *   `RunnerStorage.layerMemory` in one process, `SqlRunnerStorage` across
 *   processes) and the runner's `ShardingConfig`.
 * - Membership follows the storage's healthy flag. How fast a crashed runner
 *   is flagged depends on the cluster: `SqlRunnerStorage` stops listing it
 *   once its heartbeats are older than `shardLockExpiration`, the ping health
 *   check runs every `runnerHealthCheckInterval`. dstate's own heartbeats
 *   usually find it unreachable first (default: 5 seconds of silence).
 * - Every runner needs the dstate port (runner port + `portOffset`) free and
 *   reachable, and every runner must use the same offset and secret.
 * - When the storage cannot be read, the last member set is kept (logged).
 * - Bad options fail the layer with `InvalidOptions`: `pollInterval` and
 *   `pollTimeout` must be finite positive durations, runner port +
 *   `portOffset` a TCP port; the transport options are checked as by
 *   `TcpRuntime.layer`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<
  ActorRuntime | ClusterEvents | TcpRuntime.TcpTransport,
  InvalidOptions | ListenFailed | NotARunner,
  RunnerStorage.RunnerStorage | ShardingConfig.ShardingConfig
> =>
  Layer.unwrap(Effect.gen(function*() {
    const { listenHost, pollInterval, pollTimeout, portOffset: offset, ...transportOptions } = options
    const checker = { module: "ClusterRuntime" }
    const config = yield* ShardingConfig.ShardingConfig
    const storage = yield* RunnerStorage.RunnerStorage
    if (Option.isNone(config.runnerAddress)) return yield* new NotARunner()
    const runner = config.runnerAddress.value
    const listen = Option.getOrElse(config.runnerListenAddress, () => runner)
    const portOffset = offset ?? 1000
    const own = transportAddress(runner, portOffset)
    const listenAddress = transportAddress(listen, portOffset)
    if (own === undefined || listenAddress === undefined) {
      return yield* Check.invalid(checker, "portOffset", portOffset, `runner port + ${portOffset} is not a TCP port`)
    }
    const interval = yield* Check.duration(checker, "pollInterval", pollInterval ?? "1 second", "positive")
    const timeout = yield* Check.duration(checker, "pollTimeout", pollTimeout ?? "5 seconds", "positive")
    const self = nodeId(runner)
    const members = poll(storage, self, {
      interval,
      timeout,
      portOffset
    })
    return TcpRuntime.layer({
      ...transportOptions,
      nodeId: self,
      host: listenHost ?? listenAddress.host,
      port: listenAddress.port,
      advertiseHost: own.host,
      seeds: []
    }).pipe(Layer.provide(Layer.succeed(TcpRuntime.ExternalMembership, members)))
  }))

/**
 * Helpers of the cluster scenario tests: typed access to a state on one node
 * of a `TestCluster` (handle, views, counters, sync status), a compact summary
 * of a view map for exact comparisons, the frames the simulated network
 * carried (decoded), hand-built frames to inject, and a logger that records
 * what the library logs.
 */
import { Effect, Logger, References, Result } from "effect"
import type { DistributedState, NodeId, StateView, SyncMessage } from "dstate"
import { StateRegistry } from "dstate"
import type { SimNetwork, TestCluster } from "dstate/testing"
import { decodeFrame, encodeFrame } from "../src/internal/codec.ts"

export type Cluster = TestCluster.TestCluster<any>
export type Node = TestCluster.TestNode

/** The handle of `definition` on `node` (dies when it is not registered there). */
export const handleOn = <T extends DistributedState.Any>(
  cluster: Cluster,
  node: Node,
  definition: T
): Effect.Effect<StateRegistry.HandleOf<T>> => cluster.run(node, StateRegistry.lookup(definition)).pipe(Effect.orDie)

/** The handle seen through what every kind of handle offers. */
export const commonOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.map(
    handleOn(cluster, node, definition),
    (h) => h as unknown as StateRegistry.StateHandle<DistributedState.StateOf<T>, DistributedState.ViewOf<T>>
  )

/** The view map of `definition` on `node`. */
export const viewsOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.flatMap(commonOn(cluster, node, definition), (h) => h.snapshot)

/** The counters of `definition` on `node`. */
export const metricsOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.flatMap(commonOn(cluster, node, definition), (h) => h.metrics)

/** The node's own view of `definition`. */
export const localOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.flatMap(commonOn(cluster, node, definition), (h) => h.local)

/** The sync status `node` keeps of `peer` for `definition` (dies when there is none). */
export const statusOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T, peer: Node) =>
  Effect.flatMap(commonOn(cluster, node, definition), (h) =>
    Effect.map(h.syncStatus, (all) => {
      const found = all.find((s) => s.node === peer.id)
      if (found === undefined) throw new Error(`no sync status of ${peer.id} on ${node.id}`)
      return found
    }))

/** The registry's counters of inbound frames on `node`. */
export const inboundOn = (cluster: Cluster, node: Node) =>
  cluster.run(node, Effect.flatMap(StateRegistry.StateRegistry, (registry) => registry.inboundMetrics))

/** The health of every state on `node`. */
export const healthOn = (cluster: Cluster, node: Node) => cluster.run(node, StateRegistry.health)

/** Mutates a simple state on `node`. */
export const mutateOn = <S>(
  cluster: Cluster,
  node: Node,
  definition: DistributedState.Simple<S>,
  f: (s: S) => S
) => Effect.flatMap(handleOn(cluster, node, definition), (h) => Effect.orDie(h.mutate(f)))

/** One entry of a view map reduced to what replication must preserve. */
export interface Entry<V> {
  readonly incarnation: number
  readonly age: number
  readonly value: V
}

/** A view map as a plain record `nodeId → { incarnation, age, value }`, for `deepStrictEqual`. */
export const summary = <V>(views: ReadonlyMap<NodeId.NodeId, StateView.StateView<V>>): Record<string, Entry<V>> => {
  const out: Record<string, Entry<V>> = {}
  for (const [node, view] of [...views].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
    out[node] = { incarnation: view.generation.incarnation, age: view.generation.age, value: view.value }
  }
  return out
}

/** A logged frame with its decoded message. */
export interface DecodedFrame extends SimNetwork.SentFrame {
  readonly message: SyncMessage.SyncMessage
}

export interface FrameFilter {
  readonly from?: NodeId.NodeId | undefined
  readonly to?: NodeId.NodeId | undefined
  readonly kind?: SimNetwork.SentFrame["kind"] | undefined
  readonly tag?: SyncMessage.SyncMessage["_tag"] | undefined
}

/** The frames of the network log (since the last `clearLog`) that decode and match `filter`. */
export const frames = (cluster: Cluster, filter: FrameFilter = {}): Array<DecodedFrame> => {
  const out: Array<DecodedFrame> = []
  for (const sent of cluster.network.log()) {
    if (filter.from !== undefined && sent.from !== filter.from) continue
    if (filter.to !== undefined && sent.to !== filter.to) continue
    if (filter.kind !== undefined && sent.kind !== filter.kind) continue
    const decoded = decodeFrame(sent.frame, Number.MAX_SAFE_INTEGER)
    if (Result.isFailure(decoded)) continue
    if (filter.tag !== undefined && decoded.success._tag !== filter.tag) continue
    out.push({ ...sent, message: decoded.success })
  }
  return out
}

/** `frames`, for tests that keep the list they read in a variable named `frames`. */
export const loggedFrames = frames

/** Frames sent on the network so far. */
export const sentFrames = (cluster: Cluster): number => cluster.network.stats().sent

/** The change-feed batches of the log. */
export const feedBatches = (cluster: Cluster, filter: Omit<FrameFilter, "tag"> = {}) =>
  frames(cluster, { ...filter, tag: "BatchedChangeFeed" }).map((f) => ({
    from: f.from,
    to: f.to,
    batch: f.message as SyncMessage.BatchedChangeFeed
  }))

/** Encodes a message as a frame (dies when it cannot). */
export const frameOf = (message: SyncMessage.SyncMessage): Uint8Array =>
  Result.getOrThrow(encodeFrame(message, Number.MAX_SAFE_INTEGER))

/** Yields until the log holds a frame matching `filter` (for a forked fiber whose frame must be on the wire). */
export const awaitFrame = (cluster: Cluster, filter: FrameFilter) =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      if (frames(cluster, filter).length > 0) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`no frame matching ${JSON.stringify(filter)} was sent`))
  })

/** One log line as recorded by `captureLogs`. */
export interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/**
 * Runs `effect` with a logger that records every line (and nothing else), and
 * returns the lines with the result.
 */
export const captureLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const lines: Array<LogLine> = []
    const logger = Logger.make((options) => {
      const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
      lines.push({
        level: options.logLevel,
        message,
        annotations: { ...options.fiber.getRef(References.CurrentLogAnnotations) }
      })
    })
    const result = yield* effect.pipe(
      Effect.provideService(Logger.CurrentLoggers, new Set([logger])),
      Effect.provideService(References.MinimumLogLevel, "All")
    )
    return { result, lines }
  })

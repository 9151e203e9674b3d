/**
 * Shared helpers of the cluster scenario tests: typed access to a state's
 * handle, views and counters on one node of a `TestCluster`, a compact
 * summary of a view map for exact comparisons, and access to the frames the
 * simulated network carried.
 */
import { Effect, Result } from "effect"
import type { DistributedState, NodeId, StateView, SyncMessage } from "dstate"
import { StateRegistry } from "dstate"
import type { SimNetwork, TestCluster } from "dstate/testing"
import { decodeFrame } from "../src/internal/codec.ts"

export type Cluster = TestCluster.TestCluster<any>
export type Node = TestCluster.TestNode

/** The handle of `definition` on `node` (dies when it is not registered there). */
export const handleOn = <T extends DistributedState.Any>(
  cluster: Cluster,
  node: Node,
  definition: T
): Effect.Effect<StateRegistry.HandleOf<T>> => cluster.run(node, StateRegistry.lookup(definition)).pipe(Effect.orDie)

/** A handle seen through the members every kind offers. */
const common = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.map(
    handleOn(cluster, node, definition),
    (h) => h as unknown as StateRegistry.StateHandle<DistributedState.StateOf<T>, DistributedState.ViewOf<T>>
  )

/** The view map of `definition` on `node`. */
export const viewsOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.flatMap(common(cluster, node, definition), (h) => h.snapshot)

/** The counters of `definition` on `node`. */
export const metricsOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.flatMap(common(cluster, node, definition), (h) => h.metrics)

/** The node's own view of `definition`. */
export const localOn = <T extends DistributedState.Any>(cluster: Cluster, node: Node, definition: T) =>
  Effect.flatMap(common(cluster, node, definition), (h) => h.local)

/** The registry's counters of inbound frames on `node`. */
export const inboundOn = (cluster: Cluster, node: Node) =>
  cluster.run(
    node,
    Effect.gen(function*() {
      const registry = yield* StateRegistry.StateRegistry
      return yield* registry.inboundMetrics
    })
  )

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

/** The frames of the network log that decode, optionally filtered. */
export const loggedFrames = (
  cluster: Cluster,
  filter: { readonly from?: NodeId.NodeId; readonly to?: NodeId.NodeId; readonly tag?: SyncMessage.SyncMessage["_tag"] } = {}
): Array<DecodedFrame> => {
  const out: Array<DecodedFrame> = []
  for (const sent of cluster.network.log()) {
    if (filter.from !== undefined && sent.from !== filter.from) continue
    if (filter.to !== undefined && sent.to !== filter.to) continue
    const decoded = decodeFrame(sent.frame, Number.MAX_SAFE_INTEGER)
    if (Result.isFailure(decoded)) continue
    if (filter.tag !== undefined && decoded.success._tag !== filter.tag) continue
    out.push({ ...sent, message: decoded.success })
  }
  return out
}

/**
 * Yields until the network log holds a frame matching `filter` (for a forked
 * fiber whose request must be on the wire before the test acts).
 */
export const awaitFrame = (
  cluster: Cluster,
  filter: { readonly from?: NodeId.NodeId; readonly to?: NodeId.NodeId; readonly tag?: SyncMessage.SyncMessage["_tag"] }
) =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      if (loggedFrames(cluster, filter).length > 0) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`no frame matching ${JSON.stringify(filter)} was sent`))
  })

/** Frames sent on the network so far. */
export const sentFrames = (cluster: Cluster): number => cluster.network.stats().sent

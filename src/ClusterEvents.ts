/**
 * Cluster membership as seen from one node: the current member set and a
 * stream of `NodeJoined` / `NodeUnreachable` / `NodeReachable` / `NodeLeft`
 * events. Each runtime provides it; the registry uses it to exchange
 * snapshots with joining nodes, to mark the views of unreachable ones, and to
 * drop the views of departed ones.
 *
 * A member's life: `NodeJoined`, then any number of `NodeUnreachable` /
 * `NodeReachable` pairs (it went silent, then answered again; it stays a
 * member and its views stay, marked), then `NodeLeft` (a graceful leave, or
 * it stayed unreachable for the runtime's `downAfter`). `NodeUnreachable` and
 * `NodeReachable` are only published for members, and alternate.
 *
 * @since 0.1.0
 */
import { Context, Effect, PubSub, Stream, type Scope } from "effect"
import type { NodeId } from "./NodeId.ts"

/**
 * A node became a member (or came back after it left).
 *
 * @category models
 * @since 0.1.0
 */
export interface NodeJoined {
  readonly _tag: "NodeJoined"
  readonly node: NodeId
}

/**
 * A node left the cluster: gracefully, or its failure was detected.
 *
 * @category models
 * @since 0.1.0
 */
export interface NodeLeft {
  readonly _tag: "NodeLeft"
  readonly node: NodeId
}

/**
 * A member went silent: it is still a member and its views are kept, marked
 * unreachable since `since` (this node's wall-clock milliseconds), until it
 * answers again (`NodeReachable`) or is declared down (`NodeLeft`).
 *
 * @category models
 * @since 0.2.0
 */
export interface NodeUnreachable {
  readonly _tag: "NodeUnreachable"
  readonly node: NodeId
  readonly since: number
}

/**
 * An unreachable member answered again before it was declared down.
 *
 * @category models
 * @since 0.2.0
 */
export interface NodeReachable {
  readonly _tag: "NodeReachable"
  readonly node: NodeId
}

/**
 * @category models
 * @since 0.1.0
 */
export type ClusterEvent = NodeJoined | NodeLeft | NodeUnreachable | NodeReachable

/**
 * @category constructors
 * @since 0.1.0
 */
export const NodeJoined = (node: NodeId): ClusterEvent => ({ _tag: "NodeJoined", node })

/**
 * @category constructors
 * @since 0.1.0
 */
export const NodeLeft = (node: NodeId): ClusterEvent => ({ _tag: "NodeLeft", node })

/**
 * @category constructors
 * @since 0.2.0
 */
export const NodeUnreachable = (node: NodeId, since: number): ClusterEvent => ({ _tag: "NodeUnreachable", node, since })

/**
 * @category constructors
 * @since 0.2.0
 */
export const NodeReachable = (node: NodeId): ClusterEvent => ({ _tag: "NodeReachable", node })

/**
 * The membership service.
 *
 * @category services
 * @since 0.1.0
 */
export class ClusterEvents extends Context.Service<ClusterEvents, {
  /** The other nodes currently known to be members (this node excluded; unreachable members included). */
  readonly members: Effect.Effect<ReadonlySet<NodeId>>
  /** The members currently unreachable, each with the wall-clock milliseconds since when. */
  readonly unreachable: Effect.Effect<ReadonlyMap<NodeId, number>>
  /** Subscribes to membership events; events published after the call are buffered for the subscriber. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<ClusterEvent>, never, Scope.Scope>
  /** Every membership event from now on. */
  readonly events: Stream.Stream<ClusterEvent>
}>()("dstate/ClusterEvents") {}

/**
 * A membership source a runtime can feed: it tracks the member set and the
 * unreachable members, and publishes an event only when either changes
 * (`unreachable` of a non-member or of one already unreachable, and
 * `reachable` of one that is not, publish nothing). `left` of an unreachable
 * member publishes `NodeLeft` alone.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeSource: Effect.Effect<
  {
    readonly service: ClusterEvents["Service"]
    readonly joined: (node: NodeId) => Effect.Effect<boolean>
    readonly left: (node: NodeId) => Effect.Effect<boolean>
    readonly unreachable: (node: NodeId, since: number) => Effect.Effect<boolean>
    readonly reachable: (node: NodeId) => Effect.Effect<boolean>
  },
  never,
  Scope.Scope
> = Effect.gen(function*() {
  const pubsub = yield* PubSub.unbounded<ClusterEvent>()
  yield* Effect.addFinalizer(() => PubSub.shutdown(pubsub))
  const members = new Set<NodeId>()
  const unreachable = new Map<NodeId, number>()
  return {
    service: ClusterEvents.of({
      members: Effect.sync(() => new Set(members) as ReadonlySet<NodeId>),
      unreachable: Effect.sync(() => new Map(unreachable) as ReadonlyMap<NodeId, number>),
      subscribe: PubSub.subscribe(pubsub),
      events: Stream.fromPubSub(pubsub)
    }),
    joined: (node) =>
      Effect.suspend(() => {
        if (members.has(node)) return Effect.succeed(false)
        members.add(node)
        return PubSub.publish(pubsub, NodeJoined(node)).pipe(Effect.as(true))
      }),
    left: (node) =>
      Effect.suspend(() => {
        if (!members.delete(node)) return Effect.succeed(false)
        unreachable.delete(node)
        return PubSub.publish(pubsub, NodeLeft(node)).pipe(Effect.as(true))
      }),
    unreachable: (node, since) =>
      Effect.suspend(() => {
        if (!members.has(node) || unreachable.has(node)) return Effect.succeed(false)
        unreachable.set(node, since)
        return PubSub.publish(pubsub, NodeUnreachable(node, since)).pipe(Effect.as(true))
      }),
    reachable: (node) =>
      Effect.suspend(() => {
        if (!unreachable.delete(node)) return Effect.succeed(false)
        return PubSub.publish(pubsub, NodeReachable(node)).pipe(Effect.as(true))
      })
  }
})

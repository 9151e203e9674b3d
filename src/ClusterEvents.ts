/**
 * Cluster membership as seen from one node: the current member set and a
 * stream of `NodeJoined` / `NodeLeft` events. Each runtime provides it; the
 * registry uses it to exchange snapshots with joining nodes and to drop the
 * views of departed ones.
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
 * @category models
 * @since 0.1.0
 */
export type ClusterEvent = NodeJoined | NodeLeft

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
 * The membership service.
 *
 * @category services
 * @since 0.1.0
 */
export class ClusterEvents extends Context.Service<ClusterEvents, {
  /** The other nodes currently known to be members (this node excluded). */
  readonly members: Effect.Effect<ReadonlySet<NodeId>>
  /** Subscribes to membership events; events published after the call are buffered for the subscriber. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<ClusterEvent>, never, Scope.Scope>
  /** Every membership event from now on. */
  readonly events: Stream.Stream<ClusterEvent>
}>()("dstate/ClusterEvents") {}

/**
 * A membership source a runtime can feed: it tracks the member set and
 * publishes an event only when the set changes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeSource: Effect.Effect<
  {
    readonly service: ClusterEvents["Service"]
    readonly joined: (node: NodeId) => Effect.Effect<boolean>
    readonly left: (node: NodeId) => Effect.Effect<boolean>
  },
  never,
  Scope.Scope
> = Effect.gen(function*() {
  const pubsub = yield* PubSub.unbounded<ClusterEvent>()
  yield* Effect.addFinalizer(() => PubSub.shutdown(pubsub))
  const members = new Set<NodeId>()
  return {
    service: ClusterEvents.of({
      members: Effect.sync(() => new Set(members) as ReadonlySet<NodeId>),
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
        return PubSub.publish(pubsub, NodeLeft(node)).pipe(Effect.as(true))
      })
  }
})

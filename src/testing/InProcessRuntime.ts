/**
 * The in-process runtime: `ActorRuntime` and `ClusterEvents` for a node that
 * lives in the same process as its peers, connected by a `SimNetwork`. Used by
 * `TestCluster` and by applications that want several nodes in one process.
 *
 * @since 0.1.0
 */
import { Clock, Context, Deferred, Effect, Layer } from "effect"
import { ActorRuntime, after, every, spawnActor } from "../ActorRuntime.ts"
import { ClusterEvents, makeSource } from "../ClusterEvents.ts"
import type { NodeId } from "../NodeId.ts"
import { ackProtocolVersion, protocolVersion } from "../SyncMessage.ts"
import type { Endpoint, SimNetwork } from "./SimNetwork.ts"

/**
 * A node attached to `network` as `nodeId` for as long as the layer lives.
 * Closing the layer's scope is a graceful leave (peers see `NodeLeft` at
 * once); `crash` in `TestCluster` marks the node dead first, so its frames in
 * flight are dropped (and, with the network's `SimDetector`, peers see it
 * unreachable, then down). The detector's `NodeUnreachable` / `NodeReachable`
 * events reach this node's `ClusterEvents`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  network: SimNetwork,
  nodeId: NodeId,
  options?: {
    readonly onEndpoint?: ((endpoint: Endpoint) => void) | undefined
    /**
     * The highest sync frame protocol the node speaks (default the current one,
     * `SyncMessage.ackProtocolVersion`): `1` makes a node of the version before acknowledgements,
     * which peers never ask for one and which rejects their frames.
     */
    readonly syncProtocol?: number | undefined
  }
): Layer.Layer<ActorRuntime | ClusterEvents> =>
  Layer.effectContext(Effect.gen(function*() {
    const source = yield* makeSource
    // The node's wall clock (offset in a `TestCluster`): `NodeUnreachable.since` is in this node's time.
    const clock = yield* Clock.Clock
    const own = options?.syncProtocol ?? ackProtocolVersion
    const endpoint: Endpoint = {
      nodeId,
      inbound: undefined,
      alive: true,
      busy: 0,
      paused: undefined,
      joined: source.joined,
      left: source.left,
      unreachable: (node) => Effect.suspend(() => source.unreachable(node, clock.currentTimeMillisUnsafe())),
      reachable: source.reachable,
      syncProtocol: own
    }
    options?.onEndpoint?.(endpoint)
    // A paused node's actors and timers wait here until it is resumed.
    const gate = Effect.suspend(() => endpoint.paused === undefined ? Effect.void : Deferred.await(endpoint.paused))
    const hooks = {
      onEnqueue: () => {
        endpoint.busy++
      },
      onDone: () => {
        endpoint.busy--
      },
      gate,
      isOpen: () => endpoint.paused === undefined
    }
    yield* network.attach(endpoint)
    yield* Effect.addFinalizer(() => network.detach(nodeId, !endpoint.alive))
    const runtime = ActorRuntime.of({
      nodeId,
      syncProtocol: own,
      // Negotiated from what each side announced when it attached: the highest both speak.
      peerProtocol: (node) => Math.min(own, network.syncProtocolOf(node) ?? protocolVersion),
      spawn: (spawnOptions) => spawnActor(spawnOptions, hooks),
      every: (schedule, effect) => every(schedule, Effect.andThen(gate, effect)),
      after: (delay, effect) => after(delay, Effect.andThen(gate, effect)),
      serve: (inbound) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            endpoint.inbound = inbound
          }),
          () =>
            Effect.sync(() => {
              endpoint.inbound = undefined
            })
        ),
      joinGroup: (group) => Effect.sync(() => network.joinGroup(group, nodeId)),
      leaveGroup: (group) => Effect.sync(() => network.leaveGroup(group, nodeId)),
      members: (group) => Effect.sync(() => network.members(group)),
      broadcast: (group, frame, _supersede, trace) =>
        Effect.forEach(
          network.members(group).filter((m) => m !== nodeId),
          (member) => Effect.ignore(network.send(nodeId, member, frame, trace)),
          { discard: true }
        ),
      send: (to, frame, _supersede, trace) => network.send(nodeId, to, frame, trace),
      request: (to, frame, timeout) => network.request(nodeId, to, frame, timeout)
    })
    return Context.make(ActorRuntime, runtime).pipe(Context.add(ClusterEvents, source.service))
  }))

/**
 * The simulated network of the in-process runtime: it carries frames between
 * the nodes of one process on simulated time, keeps the member list and the
 * named groups, and lets a test cut, heal and observe links. Every frame is a
 * real encoded frame; the network can inject raw bytes as if a node had sent
 * them.
 *
 * @since 0.1.0
 */
import { Clock, Deferred, Duration, Effect, Exit, Scope } from "effect"
import type { Inbound } from "../ActorRuntime.ts"
import { RequestRejected } from "../ActorRuntime.ts"
import { NodeUnreachable, RequestTimeout } from "../DStateError.ts"
import type { NodeId } from "../NodeId.ts"

/**
 * One node as the network knows it.
 *
 * @category models
 * @since 0.1.0
 */
export interface Endpoint {
  readonly nodeId: NodeId
  /** Installed by the node's registry. */
  inbound: Inbound | undefined
  /** Cleared when the node crashes: its in-flight frames are dropped. */
  alive: boolean
  /** Messages enqueued in the node's actors and not yet handled. */
  busy: number
  readonly joined: (node: NodeId) => Effect.Effect<boolean>
  readonly left: (node: NodeId) => Effect.Effect<boolean>
}

/**
 * Counters of the network.
 *
 * @category models
 * @since 0.1.0
 */
export interface NetworkStats {
  /** Frames handed to the network (messages, requests and replies). */
  readonly sent: number
  readonly delivered: number
  /** Frames dropped by a cut link, a missing or crashed node. */
  readonly dropped: number
}

/**
 * A frame the network carried, for tests that inspect or replay traffic.
 *
 * @category models
 * @since 0.1.0
 */
export interface SentFrame {
  readonly from: NodeId
  readonly to: NodeId
  readonly kind: "message" | "request" | "reply"
  readonly frame: Uint8Array
}

/**
 * The simulated network.
 *
 * @category models
 * @since 0.1.0
 */
export interface SimNetwork {
  /** Frames in flight plus messages waiting in any node's actors. */
  readonly pendingWork: () => number
  /** The earliest delivery time (ms, simulated) of a frame in flight. */
  readonly nextDeliveryAt: () => number | undefined
  /** Counters. */
  readonly stats: () => NetworkStats
  /** Every frame sent since the last `clearLog`, in order (recording is on by default). */
  readonly log: () => ReadonlyArray<SentFrame>
  readonly clearLog: () => void
  /** Sets the one-way delay of every link (default 0). */
  readonly setDelay: (delay: Duration.Input) => void
  /** Cuts every link between the two sides, both ways. */
  readonly partition: (side: ReadonlyArray<NodeId>, other: ReadonlyArray<NodeId>) => void
  /** Cuts the link from `from` to `to` only. */
  readonly cut: (from: NodeId, to: NodeId) => void
  /** Restores every link. */
  readonly heal: () => void
  /** Delivers raw bytes to `to` as a one-way frame from `from`, bypassing links. */
  readonly inject: (from: NodeId, to: NodeId, frame: Uint8Array) => Effect.Effect<void>
  /** The nodes currently attached. */
  readonly nodes: () => ReadonlyArray<NodeId>
  /** @internal */
  readonly attach: (endpoint: Endpoint) => Effect.Effect<void>
  /** @internal */
  readonly detach: (node: NodeId, crashed: boolean) => Effect.Effect<void>
  /** @internal */
  readonly send: (from: NodeId, to: NodeId, frame: Uint8Array) => Effect.Effect<void, NodeUnreachable>
  /** @internal */
  readonly request: (
    from: NodeId,
    to: NodeId,
    frame: Uint8Array,
    timeout: Duration.Input
  ) => Effect.Effect<Uint8Array, RequestTimeout | NodeUnreachable | RequestRejected>
  /** @internal */
  readonly joinGroup: (group: string, node: NodeId) => void
  /** @internal */
  readonly leaveGroup: (group: string, node: NodeId) => void
  /** @internal */
  readonly members: (group: string) => ReadonlyArray<NodeId>
}

/**
 * Creates a network whose delivery fibers live in the current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Effect.Effect<SimNetwork, never, Scope.Scope> = Effect.gen(function*() {
  const scope = yield* Scope.Scope
  const endpoints = new Map<NodeId, Endpoint>()
  const groups = new Map<string, Set<NodeId>>()
  const cuts = new Set<string>()
  const deliveries: Array<number> = [] // pending delivery times, unsorted
  let delayMillis = 0
  let inFlight = 0
  let sent = 0
  let delivered = 0
  let dropped = 0
  let log: Array<SentFrame> = []

  const linkKey = (from: NodeId, to: NodeId) => `${from}\u0000${to}`

  const transmit = (
    from: NodeId,
    to: NodeId,
    kind: SentFrame["kind"],
    frame: Uint8Array,
    deliver: (target: Endpoint) => Effect.Effect<void>
  ) =>
    Effect.gen(function*() {
      sent++
      log.push({ from, to, kind, frame })
      const source = endpoints.get(from)
      const target = endpoints.get(to)
      if (target === undefined || cuts.has(linkKey(from, to))) {
        dropped++
        return
      }
      const now = yield* Clock.currentTimeMillis
      const at = now + delayMillis
      inFlight++
      deliveries.push(at)
      yield* Effect.gen(function*() {
        if (delayMillis > 0) yield* Effect.sleep(delayMillis)
        // A crash drops what was in flight to or from the crashed node.
        if (endpoints.get(to) !== target || !target.alive || (source !== undefined && !source.alive)) {
          dropped++
          return
        }
        delivered++
        yield* deliver(target)
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          inFlight--
          const i = deliveries.indexOf(at)
          if (i >= 0) deliveries.splice(i, 1)
        })),
        Effect.forkIn(scope)
      )
    })

  const network: SimNetwork = {
    pendingWork: () => {
      let busy = inFlight
      for (const e of endpoints.values()) busy += e.busy
      return busy
    },
    nextDeliveryAt: () => deliveries.length === 0 ? undefined : Math.min(...deliveries),
    stats: () => ({ sent, delivered, dropped }),
    log: () => log,
    clearLog: () => {
      log = []
    },
    setDelay: (delay) => {
      delayMillis = Duration.toMillis(Duration.fromInputUnsafe(delay))
    },
    partition: (side, other) => {
      for (const a of side) {
        for (const b of other) {
          cuts.add(linkKey(a, b))
          cuts.add(linkKey(b, a))
        }
      }
    },
    cut: (from, to) => {
      cuts.add(linkKey(from, to))
    },
    heal: () => cuts.clear(),
    inject: (from, to, frame) =>
      Effect.suspend(() => {
        const target = endpoints.get(to)
        if (target === undefined || target.inbound === undefined) return Effect.void
        return target.inbound.onMessage(from, frame)
      }),
    nodes: () => [...endpoints.keys()],
    attach: (endpoint) =>
      Effect.gen(function*() {
        if (endpoints.has(endpoint.nodeId)) {
          return yield* Effect.die(new Error(`node ${endpoint.nodeId} is already attached`))
        }
        const others = [...endpoints.values()]
        endpoints.set(endpoint.nodeId, endpoint)
        for (const other of others) {
          yield* other.joined(endpoint.nodeId)
          yield* endpoint.joined(other.nodeId)
        }
      }),
    detach: (node, crashed) =>
      Effect.gen(function*() {
        const endpoint = endpoints.get(node)
        if (endpoint === undefined) return
        if (crashed) endpoint.alive = false
        endpoints.delete(node)
        for (const members of groups.values()) members.delete(node)
        for (const other of endpoints.values()) yield* other.left(node)
      }),
    send: (from, to, frame) =>
      Effect.suspend(() =>
        endpoints.has(to)
          ? transmit(from, to, "message", frame, (target) => target.inbound?.onMessage(from, frame) ?? Effect.void)
          : Effect.fail(new NodeUnreachable({ node: to }))
      ),
    request: (from, to, frame, timeout) =>
      Effect.gen(function*() {
        if (!endpoints.has(to)) return yield* new NodeUnreachable({ node: to })
        const reply = yield* Deferred.make<Uint8Array, RequestRejected>()
        yield* transmit(from, to, "request", frame, (target) =>
          Effect.gen(function*() {
            if (target.inbound === undefined) return
            const answer = yield* Effect.exit(target.inbound.onRequest(from, frame))
            const bytes = Exit.isSuccess(answer) ? answer.value : new Uint8Array(0)
            yield* transmit(to, from, "reply", bytes, () => Deferred.done(reply, answer).pipe(Effect.asVoid))
          }))
        const millis = Duration.toMillis(Duration.fromInputUnsafe(timeout))
        return yield* Deferred.await(reply).pipe(
          Effect.timeoutOrElse({
            duration: millis,
            orElse: () => Effect.fail(new RequestTimeout({ node: to, timeoutMillis: millis }))
          })
        )
      }),
    joinGroup: (group, node) => {
      let members = groups.get(group)
      if (members === undefined) {
        members = new Set()
        groups.set(group, members)
      }
      members.add(node)
    },
    leaveGroup: (group, node) => {
      groups.get(group)?.delete(node)
    },
    members: (group) => [...(groups.get(group) ?? [])]
  }
  return network
})

export { RequestRejected }

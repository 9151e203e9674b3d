/**
 * The simulated network of the in-process runtime: it carries frames between
 * the nodes of one process on simulated time, keeps the member list and the
 * named groups, and lets a test inject faults: per directed link loss,
 * duplication, delay (reordering follows), clogging, bounded capacity and
 * corruption of frames; partitions of any shape; paused nodes. Every random
 * choice comes from a seeded stream, so one seed reproduces a run exactly.
 * Every frame is a real encoded frame, and the network can inject raw bytes
 * as if a node had sent them. The network keeps its own time (the clock of
 * the fiber that created it), so nodes whose wall clocks are offset still
 * see frames delayed by exactly the link's delay; an optional trace hook
 * sees every frame sent, dropped and delivered. Membership is an oracle
 * (attach joins, detach leaves) unless a `SimDetector` is configured.
 *
 * @since 0.1.0
 */
import { Clock, Deferred, Duration, Effect, Exit, Scope } from "effect"
import { TestClock } from "effect/testing"
import type { Inbound, TraceContext } from "../ActorRuntime.ts"
import { NodeUnreachable, RequestRejected, RequestTimeout } from "../DStateError.ts"
import type { NodeId } from "../NodeId.ts"
import { ackProtocolVersion } from "../SyncMessage.ts"
import * as Prng from "./Prng.ts"
import * as SimDetector from "./SimDetector.ts"

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
  /** While set, the node's actors and timers do not run. */
  paused: Deferred.Deferred<void> | undefined
  readonly joined: (node: NodeId) => Effect.Effect<boolean>
  readonly left: (node: NodeId) => Effect.Effect<boolean>
  /** Publish `node` unreachable (since now) and reachable again on this node (`SimDetector`: crashes too). */
  readonly unreachable?: ((node: NodeId) => Effect.Effect<boolean>) | undefined
  readonly reachable?: ((node: NodeId) => Effect.Effect<boolean>) | undefined
  /** While set, the node's own failure detector hears its probes' answers too late (`SimDetector`). */
  overloaded?: boolean | undefined
  /**
   * The highest sync frame protocol the node speaks, announced when it attaches (its join): peers
   * send it only what both speak. Absent: the current one (`SyncMessage.ackProtocolVersion`).
   */
  readonly syncProtocol?: number | undefined
}

/**
 * Faults of one directed link (or the default of every link).
 *
 * @category models
 * @since 0.1.0
 */
export interface LinkFaults {
  /** Probability that a frame is lost. */
  readonly loss: number
  /** Probability that a frame is delivered twice. */
  readonly duplicate: number
  /** One-way delay in ms, drawn uniformly from [min, max] per frame (frames reorder when it varies). */
  readonly delay: { readonly min: number; readonly max: number }
  /** Probability that a frame is corrupted (one flipped bit, or truncated). */
  readonly corrupt: number
  /** Frames that may be in flight on the link at once; more are dropped. */
  readonly capacity: number
}

/**
 * A link without faults.
 *
 * @category constructors
 * @since 0.1.0
 */
export const perfectLink: LinkFaults = {
  loss: 0,
  duplicate: 0,
  delay: { min: 0, max: 0 },
  corrupt: 0,
  capacity: Number.POSITIVE_INFINITY
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
  /** Frames dropped by a cut link, loss, a full link, a missing or crashed node. */
  readonly dropped: number
}

/**
 * What the link faults did.
 *
 * @category models
 * @since 0.1.0
 */
export interface FaultStats {
  /** Frames lost to the loss probability (included in `dropped`). */
  readonly lost: number
  /** Extra deliveries made by duplication. */
  readonly duplicated: number
  /** Deliveries whose bytes were corrupted. */
  readonly corrupted: number
  /** Frames dropped because their link was at capacity (included in `dropped`). */
  readonly overflowed: number
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
  /** The network's random stream (derived from the seed given to `makeWith`). */
  readonly random: Prng.Prng
  /** Frames in flight plus messages waiting in the actors of nodes that are not paused. */
  readonly pendingWork: () => number
  /** Messages waiting in the actors of nodes that are not paused. */
  readonly busyActors: () => number
  /** The earliest delivery time (ms, simulated) of a frame in flight. */
  readonly nextDeliveryAt: () => number | undefined
  /** Counters. */
  readonly stats: () => NetworkStats
  /** What the link faults did. */
  readonly faultStats: () => FaultStats
  /** Every frame sent since the last `clearLog`, in order (off with `makeWith({ log: false })`). */
  readonly log: () => ReadonlyArray<SentFrame>
  readonly clearLog: () => void
  /** Sets the one-way delay of every link (default 0). */
  readonly setDelay: (delay: Duration.Input) => void
  /** Sets faults of every link that has no faults of its own. */
  readonly setDefaultLink: (faults: Partial<LinkFaults>) => void
  /** Sets faults of one directed link. */
  readonly setLink: (from: NodeId, to: NodeId, faults: Partial<LinkFaults>) => void
  /** Removes every link's own faults and resets the default to a perfect link. */
  readonly resetLinks: () => void
  /** Holds every frame sent on the link until `duration` from now has passed. */
  readonly clog: (from: NodeId, to: NodeId, duration: Duration.Input) => Effect.Effect<void>
  /** Cuts every link between the two sides, both ways. */
  readonly partition: (side: ReadonlyArray<NodeId>, other: ReadonlyArray<NodeId>) => void
  /** Cuts every link between different groups. */
  readonly partitionGroups: (groups: ReadonlyArray<ReadonlyArray<NodeId>>) => void
  /** Cuts every link to and from one node. */
  readonly isolate: (node: NodeId) => void
  /** Cuts the link from `from` to `to` only. */
  readonly cut: (from: NodeId, to: NodeId) => void
  /** Restores every cut link (faults set with `setLink` stay). */
  readonly heal: () => void
  /** Stops a node's actors and timers until `resume`; frames still reach its mailboxes. */
  readonly pause: (node: NodeId) => Effect.Effect<void>
  readonly resume: (node: NodeId) => Effect.Effect<void>
  /** The simulated failure detector, when `makeWith` was given one. */
  readonly detector: SimDetector.Control | undefined
  /** Delivers raw bytes to `to` as a one-way frame from `from`, bypassing links. */
  readonly inject: (from: NodeId, to: NodeId, frame: Uint8Array) => Effect.Effect<void>
  /** The nodes currently attached. */
  readonly nodes: () => ReadonlyArray<NodeId>
  /** @internal */
  readonly attach: (endpoint: Endpoint) => Effect.Effect<void>
  /** @internal */
  readonly detach: (node: NodeId, crashed: boolean) => Effect.Effect<void>
  /** @internal */
  readonly send: (from: NodeId, to: NodeId, frame: Uint8Array, trace?: TraceContext) => Effect.Effect<void, NodeUnreachable>
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
  /** @internal The sync frame protocol `node` announced when it attached (`undefined`: not attached). */
  readonly syncProtocolOf: (node: NodeId) => number | undefined
}

/**
 * Why the network dropped a frame: a cut link, the loss probability, a full
 * link, an unknown target, a crashed sender or target (frames in flight are
 * dropped), or a target that left while the frame was in flight.
 *
 * @category models
 * @since 0.1.0
 */
export type DropReason = "cut" | "loss" | "capacity" | "unknownNode" | "crashed" | "departed"

/**
 * One thing the network did with a frame, as seen by a trace hook. `at` is
 * the network's time (ms, simulated). A `Delivered` event is emitted just
 * before the target's handler runs; `corrupted` says whether its bytes were
 * altered by the corruption fault.
 *
 * @category models
 * @since 0.1.0
 */
export type TraceEvent =
  | { readonly _tag: "Sent"; readonly at: number; readonly frame: SentFrame }
  | { readonly _tag: "Dropped"; readonly at: number; readonly frame: SentFrame; readonly reason: DropReason }
  | {
    readonly _tag: "Delivered"
    readonly at: number
    readonly frame: SentFrame
    readonly bytes: Uint8Array
    readonly corrupted: boolean
  }

/**
 * Options of `makeWith`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Seed of every random choice of the network (default 1). */
  readonly seed?: number | undefined
  /** Keep a log of every frame (default `true`; turn off for long simulations). */
  readonly log?: boolean | undefined
  /** Called synchronously for every frame sent, dropped and delivered (simulation checkers, event logs). */
  readonly trace?: ((event: TraceEvent) => void) | undefined
  /** A simulated failure detector (`SimDetector.settings`); without one, membership is an oracle. */
  readonly detector?: SimDetector.Settings | undefined
}

/**
 * Creates a network (seed 1, perfect links) whose delivery fibers live in
 * the current scope.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: Effect.Effect<SimNetwork, never, Scope.Scope> = Effect.suspend(() => makeWith({}))

/**
 * Creates a network with a seed and options.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeWith = Effect.fnUntraced(function*(options: Options): Effect.fn.Return<SimNetwork, never, Scope.Scope> {
  const scope = yield* Scope.Scope
  // The network's own time: node clocks may be offset, link delays are not.
  const clock = yield* Clock.Clock
  const random = Prng.make(options.seed ?? 1)
  const keepLog = options.log ?? true
  const trace = options.trace
  const endpoints = new Map<NodeId, Endpoint>()
  const groups = new Map<string, Set<NodeId>>()
  const cuts = new Set<string>()
  const links = new Map<string, LinkFaults>()
  const clogs = new Map<string, number>()
  const deliveries = new Map<number, number>() // delivery time -> frames
  let defaultLink: LinkFaults = perfectLink
  let inFlight = 0
  const counts = { sent: 0, delivered: 0, dropped: 0, lost: 0, duplicated: 0, corrupted: 0, overflowed: 0 }
  let log: Array<SentFrame> = []
  const detector = options.detector === undefined ? undefined : yield* SimDetector.start(
    options.detector,
    random.derive("detector"),
    (node) => endpoints.get(node),
    (from, to) => !cuts.has(linkKey(from, to))
  )

  const linkKey = (from: NodeId, to: NodeId) => `${from}\u0000${to}`
  const faultsOf = (key: string) => links.get(key) ?? defaultLink

  const corrupt = (frame: Uint8Array): Uint8Array => {
    const copy = frame.slice()
    if (copy.length > 1 && random.chance(0.5)) return copy.subarray(0, random.int(0, copy.length - 1))
    const bit = random.int(0, copy.length * 8 - 1)
    copy[bit >>> 3] ^= 1 << (bit & 7)
    return copy
  }

  const track = (at: number, delta: number) => {
    const n = (deliveries.get(at) ?? 0) + delta
    if (n === 0) deliveries.delete(at)
    else deliveries.set(at, n)
  }

  /**
   * Frames due at the same simulated millisecond share one sleeper, which forks their deliveries in the
   * order they were sent: the clock keeps one sleep per distinct delivery time, not one per frame in
   * flight (thousands of them while a large cluster broadcasts).
   */
  const due = new Map<number, Array<{ readonly delivery: Effect.Effect<void>; readonly settle: () => void }>>()
  const later = (at: number, now: number, delivery: Effect.Effect<void>, settle: () => void): Effect.Effect<unknown> => {
    const waiting = due.get(at)
    if (waiting !== undefined) {
      waiting.push({ delivery, settle })
      return Effect.void
    }
    const batch = [{ delivery, settle }]
    due.set(at, batch)
    const release = Effect.suspend(() => {
      due.delete(at)
      return Effect.forEach(batch, (f) => Effect.forkIn(Effect.ensuring(f.delivery, Effect.sync(f.settle)), scope), {
        discard: true
      })
    })
    return clock.sleep(Duration.millis(at - now)).pipe(
      Effect.andThen(release),
      // Closing the network: the frames still waiting are settled as their own fibers would have been.
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          if (due.get(at) !== batch) return
          due.delete(at)
          for (const f of batch) f.settle()
        })
      ),
      Effect.forkIn(scope)
    )
  }

  /**
   * Requests expire the same way: the requests whose timeout ends at the same millisecond share one sleeper,
   * which fails those still unanswered (an answered request's expiry does nothing).
   */
  const expiring = new Map<number, Array<Effect.Effect<unknown>>>()
  const expireAfter = (millis: number, expire: Effect.Effect<unknown>): Effect.Effect<unknown> => {
    const at = clock.currentTimeMillisUnsafe() + millis
    const waiting = expiring.get(at)
    if (waiting !== undefined) {
      waiting.push(expire)
      return Effect.void
    }
    const batch = [expire]
    expiring.set(at, batch)
    return clock.sleep(Duration.millis(millis)).pipe(
      Effect.andThen(Effect.suspend(() => {
        expiring.delete(at)
        return Effect.forEach(batch, (e) => e, { discard: true })
      })),
      Effect.onInterrupt(() => Effect.sync(() => expiring.delete(at))),
      Effect.forkIn(scope)
    )
  }

  const dropped = (drop: (reason: DropReason) => void, reason: DropReason): Effect.Effect<void> => {
    drop(reason)
    return Effect.void
  }

  /** Per directed link: its key (computed once) and the frames in flight on it. */
  interface Link {
    readonly key: string
    inFlight: number
  }
  const linkTable = new Map<NodeId, Map<NodeId, Link>>()
  const linkOf = (from: NodeId, to: NodeId): Link => {
    let row = linkTable.get(from)
    if (row === undefined) {
      row = new Map()
      linkTable.set(from, row)
    }
    let link = row.get(to)
    if (link === undefined) {
      link = { key: linkKey(from, to), inFlight: 0 }
      row.set(to, link)
    }
    return link
  }

  const transmit = (
    from: NodeId,
    to: NodeId,
    kind: SentFrame["kind"],
    frame: Uint8Array,
    deliver: (target: Endpoint, bytes: Uint8Array) => Effect.Effect<void>
  ) =>
    // A generator on purpose: the sender's fiber takes as many run-loop steps per frame as it always
    // has (the scheduler yields a fiber after a fixed number of steps, and simulations pin histories).
    Effect.gen(function*() {
      counts.sent++
      const sent: SentFrame = { from, to, kind, frame }
      if (keepLog) log.push(sent)
      const now = clock.currentTimeMillisUnsafe()
      if (trace !== undefined) trace({ _tag: "Sent", at: now, frame: sent })
      const drop = (reason: DropReason): void => {
        counts.dropped++
        if (trace !== undefined) trace({ _tag: "Dropped", at: clock.currentTimeMillisUnsafe(), frame: sent, reason })
      }
      const source = endpoints.get(from)
      const target = endpoints.get(to)
      if (target === undefined) return drop("unknownNode")
      const link = linkOf(from, to)
      const key = link.key
      if (cuts.has(key)) return drop("cut")
      const faults = faultsOf(key)
      if (random.chance(faults.loss)) {
        counts.lost++
        return drop("loss")
      }
      if (link.inFlight >= faults.capacity) {
        counts.overflowed++
        return drop("capacity")
      }
      const copies = random.chance(faults.duplicate) ? 2 : 1
      counts.duplicated += copies - 1
      for (let copy = 0; copy < copies; copy++) {
        const delay = faults.delay.max > faults.delay.min
          ? random.int(faults.delay.min, faults.delay.max)
          : faults.delay.min
        const at = Math.max(now + delay, clogs.get(key) ?? 0)
        const bytes = random.chance(faults.corrupt) ? corrupt(frame) : frame
        const corrupted = bytes !== frame
        inFlight++
        link.inFlight++
        track(at, 1)
        const arrive = Effect.suspend(() => {
          // A crash drops what was in flight to or from the crashed node.
          if (!target.alive || (source !== undefined && !source.alive)) return dropped(drop, "crashed")
          if (endpoints.get(to) !== target) return dropped(drop, "departed")
          counts.delivered++
          if (corrupted) counts.corrupted++
          if (trace !== undefined) {
            trace({ _tag: "Delivered", at: clock.currentTimeMillisUnsafe(), frame: sent, bytes, corrupted })
          }
          return deliver(target, bytes)
        })
        // A paused node answers a request once resumed (one-way frames wait in its mailboxes).
        const awake = kind === "request"
          ? Effect.andThen(
            Effect.suspend(() => target.paused === undefined ? Effect.void : Deferred.await(target.paused)),
            arrive
          )
          : arrive
        const settle = () => {
          inFlight--
          link.inFlight--
          track(at, -1)
        }
        yield* at > now ? later(at, now, awake, settle) : Effect.forkIn(Effect.ensuring(awake, Effect.sync(settle)), scope)
      }
    })

  const busyActors = () => {
    let busy = 0
    for (const e of endpoints.values()) if (e.paused === undefined) busy += e.busy
    return busy
  }

  const network: SimNetwork = {
    random,
    pendingWork: () => inFlight + busyActors(),
    busyActors,
    nextDeliveryAt: () => {
      let min: number | undefined
      for (const at of deliveries.keys()) if (min === undefined || at < min) min = at
      return min
    },
    stats: () => ({ sent: counts.sent, delivered: counts.delivered, dropped: counts.dropped }),
    faultStats: () => ({
      lost: counts.lost,
      duplicated: counts.duplicated,
      corrupted: counts.corrupted,
      overflowed: counts.overflowed
    }),
    log: () => log,
    clearLog: () => {
      log = []
    },
    setDelay: (delay) => {
      const millis = Duration.toMillis(Duration.fromInputUnsafe(delay))
      defaultLink = { ...defaultLink, delay: { min: millis, max: millis } }
    },
    setDefaultLink: (faults) => {
      defaultLink = { ...defaultLink, ...faults }
    },
    setLink: (from, to, faults) => {
      const key = linkKey(from, to)
      links.set(key, { ...faultsOf(key), ...faults })
    },
    resetLinks: () => {
      links.clear()
      defaultLink = perfectLink
    },
    clog: (from, to, duration) =>
      Effect.sync(() => {
        const until = clock.currentTimeMillisUnsafe() + Duration.toMillis(Duration.fromInputUnsafe(duration))
        clogs.set(linkKey(from, to), until)
      }),
    partition: (side, other) => {
      for (const a of side) {
        for (const b of other) {
          cuts.add(linkKey(a, b))
          cuts.add(linkKey(b, a))
        }
      }
    },
    partitionGroups: (parts) => {
      for (let i = 0; i < parts.length; i++) {
        for (let j = i + 1; j < parts.length; j++) network.partition(parts[i], parts[j])
      }
    },
    isolate: (node) => {
      const others = [...endpoints.keys()].filter((n) => n !== node)
      network.partition([node], others)
    },
    cut: (from, to) => {
      cuts.add(linkKey(from, to))
    },
    heal: () => cuts.clear(),
    pause: Effect.fnUntraced(function*(node: NodeId) {
      const endpoint = endpoints.get(node)
      if (endpoint === undefined || endpoint.paused !== undefined) return
      endpoint.paused = yield* Deferred.make<void>()
    }),
    resume: (node) =>
      Effect.suspend(() => {
        const endpoint = endpoints.get(node)
        const paused = endpoint?.paused
        if (endpoint === undefined || paused === undefined) return Effect.void
        endpoint.paused = undefined
        return Deferred.succeed(paused, undefined).pipe(Effect.asVoid)
      }),
    detector,
    inject: (from, to, frame) =>
      Effect.suspend(() => {
        const target = endpoints.get(to)
        if (target === undefined || target.inbound === undefined) return Effect.void
        return target.inbound.onMessage(from, frame)
      }),
    nodes: () => [...endpoints.keys()],
    attach: Effect.fnUntraced(function*(endpoint: Endpoint) {
      if (endpoints.has(endpoint.nodeId)) {
        return yield* Effect.die(new Error(`node ${endpoint.nodeId} is already attached`))
      }
      const others = [...endpoints.values()]
      endpoints.set(endpoint.nodeId, endpoint)
      for (const other of others) {
        yield* other.joined(endpoint.nodeId)
        yield* endpoint.joined(other.nodeId)
      }
      if (detector !== undefined) yield* detector.attached(endpoint, others, clock.currentTimeMillisUnsafe())
    }),
    detach: Effect.fnUntraced(function*(node: NodeId, crashed: boolean) {
      const endpoint = endpoints.get(node)
      if (endpoint === undefined) return
      if (crashed) endpoint.alive = false
      endpoints.delete(node)
      for (const members of groups.values()) members.delete(node)
      detector?.detached(node, crashed)
      if (detector === undefined || !crashed) for (const other of endpoints.values()) yield* other.left(node)
      if (endpoint.paused !== undefined) yield* Deferred.succeed(endpoint.paused, undefined)
    }),
    send: (from, to, frame, trace) =>
      Effect.suspend(() =>
        endpoints.has(to)
          ? transmit(from, to, "message", frame, (target, bytes) => target.inbound?.onMessage(from, bytes, trace) ?? Effect.void)
          : Effect.fail(new NodeUnreachable({ node: to }))
      ),
    request: Effect.fnUntraced(function*(from: NodeId, to: NodeId, frame: Uint8Array, timeout: Duration.Input) {
      if (!endpoints.has(to)) return yield* new NodeUnreachable({ node: to })
      const reply = yield* Deferred.make<Uint8Array, RequestRejected | RequestTimeout>()
      yield* transmit(from, to, "request", frame, (target, bytes) =>
        Effect.gen(function*() {
          if (target.inbound === undefined) return
          const answer = yield* Effect.exit(target.inbound.onRequest(from, bytes))
          const replyBytes = Exit.isSuccess(answer) ? answer.value : new Uint8Array(0)
          yield* transmit(to, from, "reply", replyBytes, (_, received) =>
            Deferred.done(reply, Exit.isSuccess(answer) ? Exit.succeed(received) : answer).pipe(Effect.asVoid))
        }))
      const millis = Duration.toMillis(Duration.fromInputUnsafe(timeout))
      yield* expireAfter(
        millis,
        Effect.suspend(() =>
          Deferred.isDoneUnsafe(reply) ? Effect.void : Deferred.fail(reply, new RequestTimeout({ node: to, timeoutMillis: millis }))
        )
      )
      return yield* Deferred.await(reply)
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
    members: (group) => [...(groups.get(group) ?? [])],
    syncProtocolOf: (node) => {
      const endpoint = endpoints.get(node)
      return endpoint === undefined ? undefined : endpoint.syncProtocol ?? ackProtocolVersion
    }
  }
  return network
})

/**
 * Delivers every frame in flight and lets every actor go idle, moving the
 * `TestClock` only as far as the next delivery needs (never past it while an
 * actor is busy). The network counts as settled after eight quiet turns in a
 * row; after `maxSteps` turns with work left it dies, naming the work left.
 *
 * @category combinators
 * @since 0.1.0
 */
export const settle = (network: SimNetwork, maxSteps = 100_000): Effect.Effect<void> =>
  Effect.gen(function*() {
    let quiet = 0
    for (let step = 0; step < maxSteps; step++) {
      yield* Effect.yieldNow
      if (network.pendingWork() === 0) {
        if (++quiet >= 8) return
        continue
      }
      quiet = 0
      const next = network.nextDeliveryAt()
      const now = yield* Clock.currentTimeMillis
      if (network.busyActors() === 0 && next !== undefined && next > now) yield* TestClock.adjust(next - now)
    }
    return yield* Effect.die(
      new Error(`SimNetwork.settle: still ${network.pendingWork()} units of work after ${maxSteps} steps`)
    )
  })

/**
 * The error of a request the receiver could not answer (the same class as `DStateError.RequestRejected`).
 *
 * @category errors
 * @since 0.1.0
 */
export { RequestRejected }

/**
 * The simulated failure detector of the in-process runtime. Without it the
 * `SimNetwork`'s membership is an oracle (attach is `NodeJoined`, detach is
 * `NodeLeft`, cut links change nothing). With it, every node probes every
 * other node each `probeInterval` of simulated time: a probe is answered
 * when the links both ways are open and the target is attached, alive and
 * not paused. A member not heard for `detectAfter` is published
 * `NodeUnreachable` on the observer; heard again, `NodeReachable`; still
 * unreachable `downAfter` after it was marked, `NodeLeft` (and `NodeJoined`
 * again once it answers, a re-join). A graceful leave is `NodeLeft` at
 * once; a crash goes through unreachable and down. A paused node's detector
 * is paused with it.
 *
 * An overloaded node (`SimNetwork.overload`) hears its probes' answers too
 * late to count and its probe timer fires late: without local health
 * awareness it declares healthy peers unreachable, then down. With
 * `localHealth`, each late timer and each round in which most probes went
 * unanswered raises its health score, which multiplies its `detectAfter` and
 * `downAfter` (memberlist's Lifeguard awareness), so it waits longer before
 * judging others.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, type Scope } from "effect"
import type { InvalidOptions } from "../DStateError.ts"
import * as LocalHealth from "../internal/localHealth.ts"
import * as Check from "../internal/options.ts"
import type { NodeId } from "../NodeId.ts"
import * as Prng from "./Prng.ts"

/**
 * Options of the simulated failure detector (durations in simulated time).
 *
 * @category models
 * @since 0.2.0
 */
export interface Options {
  /** How often every node probes every other node (default 1 second; positive). */
  readonly probeInterval?: Duration.Input | undefined
  /** Silence after which a member is unreachable (default 5 seconds; positive). */
  readonly detectAfter?: Duration.Input | undefined
  /** Time unreachable after which a member is down (default 30 seconds; 0 = down when detected). */
  readonly downAfter?: Duration.Input | undefined
  /**
   * Local health awareness (default off): `true`, or the bound of the health score (an integer from 0,
   * default 8: timeouts grow up to 9-fold).
   */
  readonly localHealth?: boolean | { readonly max?: number | undefined } | undefined
}

/**
 * Checked options, in milliseconds (`localHealth`: the score bound, or `undefined` when off).
 *
 * @category models
 * @since 0.2.0
 */
export interface Settings {
  readonly probeIntervalMillis: number
  readonly detectAfterMillis: number
  readonly downAfterMillis: number
  readonly localHealth: number | undefined
}

/**
 * The defaults: probes every second, unreachable after 5 s of silence, down after 30 s unreachable.
 *
 * @category constructors
 * @since 0.2.0
 */
export const defaults = { probeInterval: "1 second", detectAfter: "5 seconds", downAfter: "30 seconds" } as const

/**
 * Checks options into settings, failing with `InvalidOptions` (module `SimDetector`).
 *
 * @category constructors
 * @since 0.2.0
 */
export const settings = Effect.fnUntraced(function*(options: Options): Effect.fn.Return<Settings, InvalidOptions> {
  const checker = { module: "SimDetector" }
  const probe = yield* Check.duration(checker, "probeInterval", options.probeInterval ?? defaults.probeInterval, "positive")
  const detect = yield* Check.duration(checker, "detectAfter", options.detectAfter ?? defaults.detectAfter, "positive")
  const down = yield* Check.duration(checker, "downAfter", options.downAfter ?? defaults.downAfter, "nonNegative")
  const health = options.localHealth
  const max = health === undefined || health === false
    ? undefined
    : health === true
    ? LocalHealth.defaultMax
    : yield* Check.integer(checker, "localHealth.max", health.max ?? LocalHealth.defaultMax, 0)
  return {
    probeIntervalMillis: Duration.toMillis(probe),
    detectAfterMillis: Duration.toMillis(detect),
    downAfterMillis: Duration.toMillis(down),
    localHealth: max
  }
})

/**
 * What the detector did, summed over every observer.
 *
 * @category models
 * @since 0.2.0
 */
export interface Stats {
  readonly unreachable: number
  readonly reachable: number
  readonly down: number
  readonly rejoined: number
  /**
   * False alarms: downs declared of a node that was attached, alive, not paused and connected both ways to
   * the observer (only the observer's own overload made it look silent).
   */
  readonly falseDown: number
  /** Unreachable marks of such a node. */
  readonly falseUnreachable: number
}

/**
 * The detector as a test drives it (`SimNetwork.detector`).
 *
 * @category models
 * @since 0.2.0
 */
export interface Control {
  /** What it did so far. */
  readonly stats: () => Stats
  /** A node's local health score (0 without local health awareness; `undefined` for a node not attached). */
  readonly healthOf: (node: NodeId) => number | undefined
  /** Overloads a node (its own detector hears answers too late and fires late), or ends it. */
  readonly overload: (node: NodeId, on: boolean) => void
}

/** A node as the detector sees it (the network's endpoint). */
interface Target {
  readonly nodeId: NodeId
  readonly alive: boolean
  readonly paused: unknown
  overloaded?: boolean | undefined
  readonly joined: (node: NodeId) => Effect.Effect<boolean>
  readonly left: (node: NodeId) => Effect.Effect<boolean>
  readonly unreachable?: ((node: NodeId) => Effect.Effect<boolean>) | undefined
  readonly reachable?: ((node: NodeId) => Effect.Effect<boolean>) | undefined
}

interface Peer {
  lastHeard: number
  /** Network time it was marked unreachable. */
  unreachableAt: number | undefined
}

interface Observer {
  readonly endpoint: Target
  readonly peers: Map<NodeId, Peer>
  health: LocalHealth.LocalHealth
  lastTickAt: number
}

/** @internal */
export interface Detector extends Control {
  /** `endpoint` attached at `now` (`others`: the endpoints attached before it, still members of it). */
  readonly attached: (endpoint: Target, others: ReadonlyArray<Target>, now: number) => Effect.Effect<void>
  /** `node` left gracefully (its peers were told) or crashed (its peers find out). */
  readonly detached: (node: NodeId, crashed: boolean) => void
  /** One probe round at network time `now`. */
  readonly tick: (now: number) => Effect.Effect<void>
}

/**
 * A detector whose probe rounds run every `probeInterval` of the current clock, in the current scope.
 * @internal
 */
export const start = Effect.fnUntraced(function*(
  config: Settings,
  random: Prng.Prng,
  endpoint: (node: NodeId) => Target | undefined,
  linkOpen: (from: NodeId, to: NodeId) => boolean
): Effect.fn.Return<Detector, never, Scope.Scope> {
  const detector = make(config, random, endpoint, linkOpen)
  const clock = yield* Clock.Clock
  yield* Effect.suspend(() => detector.tick(clock.currentTimeMillisUnsafe())).pipe(
    Effect.delay(Duration.millis(config.probeIntervalMillis)),
    Effect.forever,
    Effect.forkScoped
  )
  return detector
})

const make = (
  config: Settings,
  random: Prng.Prng,
  endpoint: (node: NodeId) => Target | undefined,
  linkOpen: (from: NodeId, to: NodeId) => boolean
): Detector => {
  const observers = new Map<NodeId, Observer>()
  const counts = { unreachable: 0, reachable: 0, down: 0, rejoined: 0, falseDown: 0, falseUnreachable: 0 }
  const interval = config.probeIntervalMillis
  const healthy = (target: Target | undefined) => target !== undefined && target.alive && target.paused === undefined
  /** Whether `o` judging `node` is a false alarm: it is healthy and the links both ways are open. */
  const falseAlarm = (o: NodeId, node: NodeId) => healthy(endpoint(node)) && linkOpen(o, node) && linkOpen(node, o)

  const answers = (o: Target, node: NodeId): boolean =>
    o.overloaded !== true && healthy(endpoint(node)) && linkOpen(o.nodeId, node) && linkOpen(node, o.nodeId)

  const observe = Effect.fnUntraced(function*(o: Observer, now: number) {
    const self = o.endpoint
    // An overloaded node's timer fires late (by up to two periods).
    const late = Math.max(0, now - o.lastTickAt - interval) + (self.overloaded === true ? random.int(0, 2 * interval) : 0)
    o.lastTickAt = now
    const aware = config.localHealth !== undefined
    if (aware) o.health = LocalHealth.timerFired(o.health, late, interval)
    // Candidates: the members, and attached nodes it declared down (a re-join once they answer).
    const candidates: Array<NodeId> = [...o.peers.keys()]
    for (const other of observers.keys()) if (other !== self.nodeId && !o.peers.has(other)) candidates.push(other)
    let answered = 0
    const heard = new Set<NodeId>()
    for (const node of candidates) {
      if (answers(self, node)) {
        answered++
        heard.add(node)
      }
    }
    if (aware) o.health = LocalHealth.probeRound(o.health, candidates.length, answered)
    const multiplier = aware ? LocalHealth.multiplier(o.health) : 1
    for (const node of candidates) {
      const peer = o.peers.get(node)
      if (heard.has(node)) {
        if (peer === undefined) {
          o.peers.set(node, { lastHeard: now, unreachableAt: undefined })
          counts.rejoined++
          yield* self.joined(node)
          continue
        }
        peer.lastHeard = now
        if (peer.unreachableAt !== undefined) {
          peer.unreachableAt = undefined
          counts.reachable++
          if (self.reachable !== undefined) yield* self.reachable(node)
        }
        continue
      }
      if (peer === undefined) continue
      if (peer.unreachableAt === undefined && now - peer.lastHeard >= config.detectAfterMillis * multiplier) {
        peer.unreachableAt = now
        counts.unreachable++
        if (falseAlarm(self.nodeId, node)) counts.falseUnreachable++
        if (self.unreachable !== undefined) yield* self.unreachable(node)
      }
      if (peer.unreachableAt !== undefined && now - peer.unreachableAt >= config.downAfterMillis * multiplier) {
        o.peers.delete(node)
        counts.down++
        if (falseAlarm(self.nodeId, node)) counts.falseDown++
        yield* self.left(node)
      }
    }
  })

  return {
    stats: () => ({ ...counts }),
    healthOf: (node) => observers.get(node)?.health.score,
    overload: (node, on) => {
      const target = endpoint(node)
      if (target !== undefined) target.overloaded = on
    },
    attached: Effect.fnUntraced(function*(target: Target, others: ReadonlyArray<Target>, now: number) {
      const fresh = new Map<NodeId, Peer>()
      for (const other of others) {
        fresh.set(other.nodeId, { lastHeard: now, unreachableAt: undefined })
        const o = observers.get(other.nodeId)
        if (o === undefined) continue
        // A node back after a crash answers at once: reachable again if it was marked.
        const peer = o.peers.get(target.nodeId)
        if (peer === undefined) o.peers.set(target.nodeId, { lastHeard: now, unreachableAt: undefined })
        else {
          peer.lastHeard = now
          if (peer.unreachableAt !== undefined) {
            peer.unreachableAt = undefined
            counts.reachable++
            if (other.reachable !== undefined) yield* other.reachable(target.nodeId)
          }
        }
      }
      observers.set(target.nodeId, {
        endpoint: target,
        peers: fresh,
        health: LocalHealth.make(config.localHealth ?? 0),
        lastTickAt: now
      })
    }),
    detached: (node, crashed) => {
      observers.delete(node)
      if (!crashed) for (const o of observers.values()) o.peers.delete(node)
    },
    tick: Effect.fnUntraced(function*(now: number) {
      for (const o of [...observers.values()]) {
        // A paused node's timers wait: its detector does not run.
        if (o.endpoint.paused !== undefined || !o.endpoint.alive || observers.get(o.endpoint.nodeId) !== o) continue
        yield* observe(o, now)
      }
    })
  }
}

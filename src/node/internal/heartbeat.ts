/**
 * Heartbeats and failure detection. Every heartbeat interval, each connected
 * peer is sent one small heartbeat (a `Pulse`; to a peer of before gossip
 * membership, a `Heartbeat` with this node's groups and an empty member
 * list), and a gossip round runs (`gossip.ts`). Every frame from a peer feeds
 * its failure detector, heartbeats also its interval history (`detector.ts`
 * holds the detectors themselves, as pure state machines); every check
 * interval, membership consults the detectors: a silent peer is unreachable,
 * and down once unreachable for `downAfter`.
 *
 * With local health awareness on (`heartbeat.localHealth`, Lifeguard), this
 * node's own health scales the detectors' timeouts and `downAfter`: a check
 * that runs more than half an interval late, or a heartbeat interval in
 * which fewer than half the connected members were heard, raises the score;
 * an interval in which every one was heard lowers it (`internal/localHealth.ts`).
 *
 * Lives here: the two loops, and what a received heartbeat does.
 * @internal
 */
import { Duration, Effect, Schedule, Scope } from "effect"
import * as LocalHealth from "../../internal/localHealth.ts"
import type { Gossip } from "./gossip.ts"
import type { Membership } from "./membership.ts"
import { monotonicMillis, type Node, type Peer } from "./node.ts"
import type * as Protocol from "./protocol.ts"

export interface Heartbeats {
  /** Starts sending heartbeats and checking the detectors, in the current scope. */
  readonly start: Effect.Effect<void, never, Scope.Scope>
  /** This node's local health score (0 when healthy, or when local health awareness is off). */
  readonly healthScore: () => number
  /** A heartbeat (`Heartbeat` or `Pulse`) from `peer`, received at `now` (its arrival as a frame is already recorded). */
  readonly received: (peer: Peer, message: typeof Protocol.Heartbeat.Type | typeof Protocol.Pulse.Type, now: number) => Effect.Effect<void>
}

export const make = (node: Node, membership: Membership, gossip: Gossip): Heartbeats => {
  const { counters, settings } = node
  const aware = settings.localHealthMax !== undefined
  let health = LocalHealth.make(settings.localHealthMax ?? 0)
  const heartbeatMillis = Duration.toMillis(settings.heartbeatInterval)
  const checkMillis = Duration.toMillis(settings.detectorCheckInterval)
  let lastCheck: number | undefined

  /** One heartbeat interval: how many of the connected members were heard within two intervals. */
  const probeRound = (now: number) => {
    let sent = 0
    let answered = 0
    for (const peer of node.peers.values()) {
      if (peer.active === undefined) continue
      sent++
      if (peer.detector.silence(now) <= 2 * heartbeatMillis) answered++
    }
    health = LocalHealth.probeRound(health, sent, answered)
  }

  const send = Effect.suspend(() => {
    membership.heartbeat()
    return gossip.round
  }).pipe(
    Effect.andThen(aware ? Effect.map(monotonicMillis, probeRound) : Effect.void)
  )

  const check = aware
    ? Effect.flatMap(monotonicMillis, (now) => {
      // The check's own timer firing late says this node is slow, not its peers.
      if (lastCheck !== undefined) health = LocalHealth.timerFired(health, now - lastCheck - checkMillis, checkMillis)
      lastCheck = now
      return membership.check(LocalHealth.multiplier(health))
    })
    : Effect.suspend(() => membership.check(1))

  return {
    start: Effect.gen(function*() {
      const scope = yield* Scope.Scope
      yield* send.pipe(Effect.repeat(Schedule.spaced(settings.heartbeatInterval)), Effect.forkIn(scope))
      yield* check.pipe(Effect.repeat(Schedule.spaced(settings.detectorCheckInterval)), Effect.forkIn(scope))
    }),
    healthScore: () => health.score,
    received: (peer, message, now) =>
      Effect.suspend(() => {
        counters.heartbeatsReceived++
        peer.detector.heartbeat(now)
        if (message._tag === "Pulse") return Effect.void
        membership.applyGroups(peer, message.groupsVersion, message.groups, true)
        return membership.learn(message.members)
      })
  }
}

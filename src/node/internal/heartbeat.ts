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
 * `localHealth` is where a local-health multiplier (Lifeguard) plugs in: it
 * scales the detectors' timeouts and `downAfter` (1: no scaling).
 *
 * Lives here: the two loops, and what a received heartbeat does.
 * @internal
 */
import { Effect, Schedule, Scope } from "effect"
import type { Gossip } from "./gossip.ts"
import type { Membership } from "./membership.ts"
import type { Node, Peer } from "./node.ts"
import type * as Protocol from "./protocol.ts"

export interface Heartbeats {
  /** Starts sending heartbeats and checking the detectors, in the current scope. */
  readonly start: Effect.Effect<void, never, Scope.Scope>
  /** A heartbeat (`Heartbeat` or `Pulse`) from `peer`, received at `now` (its arrival as a frame is already recorded). */
  readonly received: (peer: Peer, message: typeof Protocol.Heartbeat.Type | typeof Protocol.Pulse.Type, now: number) => Effect.Effect<void>
}

export const make = (
  node: Node,
  membership: Membership,
  gossip: Gossip,
  /** The local-health multiplier of the detectors' timeouts and of `downAfter` (1 when this node is healthy). */
  localHealth: () => number = () => 1
): Heartbeats => {
  const { counters, settings } = node

  const send = Effect.suspend(() => {
    membership.heartbeat()
    return gossip.round
  })

  const check = Effect.suspend(() => membership.check(localHealth()))

  return {
    start: Effect.gen(function*() {
      const scope = yield* Scope.Scope
      yield* send.pipe(Effect.repeat(Schedule.spaced(settings.heartbeatInterval)), Effect.forkIn(scope))
      yield* check.pipe(Effect.repeat(Schedule.spaced(settings.detectorCheckInterval)), Effect.forkIn(scope))
    }),
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

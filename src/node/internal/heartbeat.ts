/**
 * Heartbeats and failure detection. Every heartbeat interval, each connected
 * peer is sent one `Heartbeat` carrying this node's groups and member list
 * (so heartbeats are also the gossip that repairs what a lost `Groups` or
 * `Members` frame missed). Every frame from a peer feeds its failure
 * detector, heartbeats also its interval history (`detector.ts` holds the
 * detectors themselves, as pure state machines); every check interval, a
 * peer the detector gives up on is declared down.
 *
 * Lives here: the two loops, and what a received heartbeat does.
 * @internal
 */
import { Effect, Result, Schedule, Scope } from "effect"
import type { Membership } from "./membership.ts"
import { encode, monotonicMillis, type Node, type Peer } from "./node.ts"
import type * as Protocol from "./protocol.ts"

export interface Heartbeats {
  /** Starts sending heartbeats and checking the detectors, in the current scope. */
  readonly start: Effect.Effect<void, never, Scope.Scope>
  /** A heartbeat from `peer`, received at `now` (its arrival as a frame is already recorded). */
  readonly received: (peer: Peer, message: typeof Protocol.Heartbeat.Type, now: number) => Effect.Effect<void>
}

export const make = (node: Node, membership: Membership): Heartbeats => {
  const { counters, settings } = node

  const send = Effect.gen(function*() {
    const frame = encode(node, membership.heartbeat())
    if (Result.isFailure(frame)) return
    for (const peer of node.peers.values()) {
      if (peer.active === undefined) continue
      peer.outbound.offer(frame.success)
      counters.heartbeatsSent++
    }
  })

  const check = Effect.gen(function*() {
    const now = yield* monotonicMillis
    for (const peer of [...node.peers.values()]) {
      if (peer.detector.failed(now)) {
        yield* Effect.logWarning("failure detector: node is down").pipe(
          Effect.annotateLogs({ peer: peer.node, silenceMillis: peer.detector.silence(now) }),
          node.annotate
        )
        yield* membership.declareDown(peer, "failed")
      }
    }
  })

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
        membership.applyGroups(peer, message.groupsVersion, message.groups, true)
        return membership.learn(message.members)
      })
  }
}

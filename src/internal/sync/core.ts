/**
 * The sync core of one state: `step(state, input, now)` applies one input
 * (an inbound message, a local commit, a timer, a membership event, a
 * persistence outcome) to the core's state and returns the commands the
 * shell must carry out, in order (send, publish, schedule, log). No effect
 * runs, no clock is read and nothing is sent in here: time comes with every
 * input, decoding and the definition's functions come as `Ports`. The state
 * is updated in place; the returned array is reused by the next step, so the
 * shell reads it before stepping again. Each mechanism lives in its own
 * module: `inbound.ts` (the acceptance table at work), `push.ts` (urgency,
 * coalescing, delays, periodic sync), `membership.ts` (join exchange,
 * departures, resync), `acks.ts` (awaited mutations and acknowledgements),
 * `peers.ts`, `departed.ts`, `views.ts`.
 * @internal
 */
import * as Acks from "./acks.ts"
import * as Inbound from "./inbound.ts"
import * as Membership from "./membership.ts"
import * as Push from "./push.ts"
import { emit, publish, setOwner, snapshotToAll, type SyncState } from "./state.ts"
import type { Command, Input } from "./types.ts"

export { requiredOf, retryMillisOf } from "./acks.ts"
export { heldOf, make, type SyncState, syncFailed } from "./state.ts"
export type * from "./types.ts"

export const step = <S, V, D, C>(
  state: SyncState<S, V, D, C>,
  input: Input<S, V, C>,
  now: number
): ReadonlyArray<Command<D>> => {
  state.out.length = 0
  switch (input._tag) {
    case "Committed":
      Push.committed(state, input.owner, input.change, now)
      break
    case "Snapshot":
      Inbound.snapshot(state, input.from, input.message, now)
      if (state.ackWanted.size > 0) Acks.applied(state, input.from)
      break
    case "Delta":
      Inbound.delta(state, input.from, input.message, now)
      if (state.ackWanted.size > 0) Acks.applied(state, input.from)
      break
    case "Request":
      Inbound.request(state, input.from, input.message)
      break
    case "Notice":
      Inbound.notice(state, input.source, input.generation, now)
      break
    case "Started":
      Membership.started(state, input.others)
      break
    case "PeerJoined":
      Membership.peerJoined(state, input.node, input.member)
      break
    case "AwaitViewDue":
      Membership.awaitViewDue(state, input.node, input.member, now)
      break
    case "PeerLeft":
      Membership.peerLeft(state, input.node)
      Acks.peerLeft(state, input.node)
      break
    case "PeerUnreachable":
      Membership.peerUnreachable(state, input.node, input.since)
      Acks.peerUnreachable(state, input.node)
      break
    case "PeerReachable":
      Membership.peerReachable(state, input.node)
      break
    case "Resync":
      Membership.resync(state, input.to, input.from)
      break
    case "PushDue":
      Push.pushDue(state)
      break
    case "DelayDue":
      Push.delayDue(state)
      break
    case "PeriodicDue":
      Push.periodic(state)
      break
    case "Await":
      Acks.awaitAcks(state, input.id, input.generation, input.peers, input.eligible, input.unsupported, input.timeoutMillis)
      break
    case "AwaitDue":
      Acks.awaitDue(state, input.id)
      break
    case "AwaitRetryDue":
      Acks.retryDue(state, input.id)
      break
    case "AckRequest":
      Acks.requested(state, input.from, input.message, now)
      break
    case "Ack":
      Acks.acknowledged(state, input.from, input.message)
      break
    case "AckDue":
      Acks.ackDue(state)
      break
    case "Reincarnated": {
      if (input.owner === undefined) {
        state.ports.count("persistenceFailures")
        emit(state, { _tag: "SendSnapshot", to: input.requester })
        break
      }
      setOwner(state, input.owner, now)
      emit(state, publish)
      emit(state, snapshotToAll)
      break
    }
  }
  return state.out
}

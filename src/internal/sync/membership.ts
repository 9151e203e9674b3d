/**
 * The join exchange and departures. A state that starts (or a peer that
 * joins its group) sends its snapshot and asks for the other side's; until a
 * member's view arrives it is awaited (stale for every bounded query) and
 * asked again every pull timeout, since the exchange can be lost. A peer
 * that leaves has its view dropped and its incarnation departed: its later
 * messages are ignored until it joins again. A member that goes silent is
 * first unreachable: its view stays, marked with since when, it is not
 * asked for anything (a bounded query treats it as stale), and when it
 * answers again the mark goes and nothing else happens (no join exchange:
 * a change it made meanwhile is repaired by the gap rules, a pull or the
 * next periodic sync). Only `PeerLeft` drops the view.
 * @internal
 */
import type { NodeId } from "../../NodeId.ts"
import { everyIncarnation } from "./departed.ts"
import {
  emit,
  publishPeers,
  requestSnapshot,
  requestSnapshotNow,
  snapshotToAll,
  type SyncState
} from "./state.ts"

type AnyState = SyncState<any, any, any, any>

/** The state registered on this node; `others` are the members of its group besides this node. */
export const started = (state: AnyState, others: ReadonlyArray<NodeId>): void => {
  emit(state, snapshotToAll)
  state.ports.count("snapshotRequestsSent", others.length)
  if (others.length > 0) emit(state, { _tag: "SendRequest", to: undefined, held: undefined })
  for (const other of others) {
    state.awaited.add(other)
    emit(state, { _tag: "AwaitView", node: other })
  }
  state.lastPushed = state.owner.generation
}

export const peerJoined = (state: AnyState, node: NodeId, member: boolean): void => {
  state.departed.rejoined(node)
  if (state.unreachable.has(node)) peerReachable(state, node)
  if (!member) return
  emit(state, { _tag: "SendSnapshot", to: node })
  requestSnapshotNow(state, node)
  if (!state.views.has(node)) state.awaited.add(node)
  emit(state, { _tag: "AwaitView", node })
}

/** The join exchange can be lost: until a member's view arrives, ask again every pull timeout. */
export const awaitViewDue = (state: AnyState, node: NodeId, member: boolean, now: number): void => {
  if (state.departed.has(node) || state.views.has(node)) return
  if (!member) return void state.awaited.delete(node)
  // An unreachable member is not asked; it is asked again once it answers (or it is declared down).
  if (!state.unreachable.has(node)) requestSnapshot(state, node, now)
  emit(state, { _tag: "AwaitView", node })
}

/** A member went silent at `since`: the view stays, marked (published when the mark changed). */
export const peerUnreachable = (state: AnyState, node: NodeId, since: number): void => {
  if (state.departed.has(node) || state.unreachable.get(node) === since) return
  state.unreachable.set(node, since)
  const held = state.views.get(node)
  if (held === undefined) return
  state.views.set(node, { ...held, unreachableSince: since })
  publishPeers(state)
}

/** An unreachable member answers again: the mark goes, the view stays as it was. */
export const peerReachable = (state: AnyState, node: NodeId): void => {
  if (!state.unreachable.delete(node)) return
  const held = state.views.get(node)
  if (held === undefined || held.unreachableSince === undefined) return
  state.views.set(node, { ...held, unreachableSince: undefined })
  publishPeers(state)
}

export const peerLeft = (state: AnyState, node: NodeId): void => {
  state.unreachable.delete(node)
  const held = state.views.get(node)
  // Without a view we do not know its incarnation: ignore all until it rejoins.
  state.departed.left(node, held === undefined ? everyIncarnation : held.generation.incarnation)
  state.awaited.delete(node)
  state.peers.forget(node)
  if (held === undefined) return
  state.departed.remember(node, held.generation)
  state.views.delete(node)
  publishPeers(state)
}

/** Messages were dropped on a full mailbox: send snapshots to those we did not answer, ask those we did not hear. */
export const resync = (state: AnyState, to: ReadonlyArray<NodeId>, from: ReadonlyArray<NodeId>): void => {
  for (const node of to) emit(state, { _tag: "SendSnapshot", to: node })
  for (const node of from) requestSnapshotNow(state, node)
}

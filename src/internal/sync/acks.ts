/**
 * Write acknowledgements. On the owner, a mutation whose caller awaits
 * acknowledgements becomes a pending await: the owner makes sure the awaited
 * peers get the generation (a push now under active push, else a snapshot
 * to each of them), asks each for an acknowledgement, and resolves the await
 * once enough of them hold that generation or a newer one, when its timer
 * ends, or as soon as it cannot be met (more acknowledgements required than
 * members able to give them). Members that leave, or are unreachable at
 * the call or become so before they acknowledge, are not counted; for
 * `"all"` they are no longer required either. While it waits, the peers
 * that have not acknowledged get the snapshot and the request again every
 * `retryMillis` (the pull timeout, or a third of the await's timeout when
 * that is shorter), so that a wait outlasting a lost frame or a healed
 * partition still ends acknowledged.
 *
 * On a peer, an acknowledgement request is answered once the view held of
 * the owner reaches the requested generation (applied and published), at
 * once when it already does. The acknowledgements due in one turn (until
 * no message waits for the state's actor) are coalesced: one per owner,
 * carrying the newest generation held, which covers every generation up to
 * it. A request for a generation the peer
 * does not hold yet also asks the owner for its snapshot (at most once per
 * pull timeout), which repairs a lost push.
 * @internal
 */
import type { Generation } from "../../Generation.ts"
import type { NodeId } from "../../NodeId.ts"
import type { Acknowledge, AckRequest } from "../../SyncMessage.ts"
import * as G from "./generation.ts"
import { pushNow } from "./push.ts"
import { emit, type PendingAwait, requestSnapshot, type SyncState } from "./state.ts"
import type { AwaitOutcome, AwaitPeers } from "./types.ts"

type AnyState = SyncState<any, any, any, any>

/** How often an await asks again: every pull timeout, or a third of its timeout when that is shorter. */
export const retryMillisOf = (pullTimeoutMillis: number, timeoutMillis: number): number =>
  Math.min(pullTimeoutMillis, Math.max(1, Math.floor(timeoutMillis / 3)))

/** Acknowledgements `peers` stands for, with `members` other members in the group (the owner not counted). */
export const requiredOf = (peers: AwaitPeers, members: number): number =>
  peers === "all" ? members : peers === "majority" ? Math.floor((members + 1) / 2) : peers

/** A committed mutation at `generation` awaits acknowledgements. */
export const awaitAcks = (
  state: AnyState,
  id: number,
  generation: Generation,
  peers: AwaitPeers,
  eligible: ReadonlyArray<NodeId>,
  unsupported: ReadonlyArray<NodeId>,
  timeoutMillis: number
): void => {
  // An unreachable member cannot acknowledge: it counts towards a majority of the members, never for one.
  const reachable = eligible.filter((node) => !state.unreachable.has(node))
  const answering = unsupported.filter((node) => !state.unreachable.has(node))
  const pending: PendingAwait = {
    id,
    generation,
    all: peers === "all",
    required: peers === "all"
      ? reachable.length + answering.length
      : requiredOf(peers, eligible.length + unsupported.length),
    eligible: new Set(reachable),
    unsupported: new Set(answering),
    acknowledged: new Set(),
    retryMillis: retryMillisOf(state.config.pullTimeoutMillis, timeoutMillis)
  }
  for (const node of reachable) {
    const acked = state.acked.get(node)
    if (acked !== undefined && !G.isNewer(generation, acked)) pending.acknowledged.add(node)
  }
  if (settle(state, pending)) return
  state.awaits.set(id, pending)
  deliver(state, pending)
  for (const node of pending.eligible) {
    if (pending.acknowledged.has(node)) continue
    state.ports.count("ackRequestsSent")
    emit(state, { _tag: "SendAckRequest", to: node, generation })
  }
  emit(state, { _tag: "StartAwaitTimer", id, millis: timeoutMillis })
  emit(state, { _tag: "StartAwaitRetry", id, millis: pending.retryMillis })
}

/** Await `id` still waits: the peers that have not acknowledged get the snapshot and the request again. */
export const retryDue = (state: AnyState, id: number): void => {
  const pending = state.awaits.get(id)
  if (pending === undefined) return
  for (const node of pending.eligible) {
    if (pending.acknowledged.has(node)) continue
    emit(state, { _tag: "SendSnapshot", to: node })
    state.ports.count("ackRequestsSent")
    emit(state, { _tag: "SendAckRequest", to: node, generation: pending.generation })
  }
  emit(state, { _tag: "StartAwaitRetry", id, millis: pending.retryMillis })
}

/**
 * Makes sure the awaited peers get the owner's current generation: under active push, whatever peers
 * have not been sent yet goes now (a pending delay, a coalesced push or a suppressed change alike);
 * under the other strategies, each awaited peer that has not acknowledged gets the snapshot.
 */
const deliver = (state: AnyState, pending: PendingAwait): void => {
  if (state.config.pushMode === "ActivePush") return pushNow(state)
  for (const node of pending.eligible) {
    if (!pending.acknowledged.has(node)) emit(state, { _tag: "SendSnapshot", to: node })
  }
}

/** Resolves `pending` when it is met or cannot be met any more; `true` when it was resolved. */
const settle = (state: AnyState, pending: PendingAwait): boolean => {
  if (pending.acknowledged.size >= pending.required) {
    resolve(state, pending, "Acknowledged")
    return true
  }
  if (pending.required > pending.eligible.size) {
    resolve(state, pending, "Unsatisfiable")
    return true
  }
  return false
}

const resolve = (state: AnyState, pending: PendingAwait, outcome: AwaitOutcome): void => {
  state.awaits.delete(pending.id)
  const missing: Array<NodeId> = []
  for (const node of pending.eligible) if (!pending.acknowledged.has(node)) missing.push(node)
  emit(state, {
    _tag: "ResolveAwait",
    id: pending.id,
    outcome,
    acknowledged: [...pending.acknowledged].sort(),
    missing: missing.sort(),
    required: pending.required,
    eligible: [...pending.eligible].sort(),
    unsupported: [...pending.unsupported].sort()
  })
}

/** The timer of await `id` ended (an await already resolved ignores it). */
export const awaitDue = (state: AnyState, id: number): void => {
  const pending = state.awaits.get(id)
  if (pending !== undefined) resolve(state, pending, "TimedOut")
}

/** Owner side: `from` holds this node's state at `m.generation`. */
export const acknowledged = (state: AnyState, from: NodeId, m: Acknowledge): void => {
  const generation = m.generation
  // A generation this owner never reached: not an acknowledgement of anything it wrote.
  if (G.isNewer(generation, state.owner.generation)) return
  state.ports.count("acksReceived")
  const before = state.acked.get(from)
  if (before === undefined || G.isNewer(generation, before)) state.acked.set(from, generation)
  for (const pending of state.awaits.values()) {
    if (!pending.eligible.has(from) || G.isNewer(pending.generation, generation)) continue
    pending.acknowledged.add(from)
    settle(state, pending)
  }
}

/** Peer side: the owner `from` asks for an acknowledgement of `m.generation` or newer. */
export const requested = (state: AnyState, from: NodeId, m: AckRequest, now: number): void => {
  if (state.departed.ignores(from, m.generation)) return state.ports.count("departedIgnored")
  const held = state.views.get(from)
  if (held !== undefined && !G.isNewer(m.generation, held.generation)) return due(state, from, held.generation)
  const wanted = state.ackWanted.get(from)
  if (wanted === undefined || G.isNewer(m.generation, wanted)) state.ackWanted.set(from, m.generation)
  // The owner sends the generation before it asks: not holding it, the push was lost (or is late).
  requestSnapshot(state, from, now)
}

/** Peer side, after a message of `from` was handled: acknowledges once the view held reaches what was asked. */
export const applied = (state: AnyState, from: NodeId): void => {
  const wanted = state.ackWanted.get(from)
  if (wanted === undefined) return
  const held = state.views.get(from)
  if (held === undefined || G.isNewer(wanted, held.generation)) return
  state.ackWanted.delete(from)
  due(state, from, held.generation)
}

/** An acknowledgement to `to` of `generation` is due: coalesced with the others of this turn. */
const due = (state: AnyState, to: NodeId, generation: Generation): void => {
  const before = state.acksDue.get(to)
  if (before === undefined || G.isNewer(generation, before)) state.acksDue.set(to, generation)
  if (state.ackScheduled) return
  state.ackScheduled = true
  emit(state, { _tag: "ScheduleAck" })
}

/** The turn's acknowledgements go out: one per owner, with the newest generation held of it. */
export const ackDue = (state: AnyState): void => {
  state.ackScheduled = false
  for (const [to, generation] of state.acksDue) {
    // Acknowledge what is held when they go: a newer view applied since covers more.
    const held = state.views.get(to)?.generation
    state.ports.count("acksSent")
    emit(state, { _tag: "SendAck", to, generation: held !== undefined && G.isNewer(held, generation) ? held : generation })
  }
  state.acksDue.clear()
}

/** `node` became unreachable: the awaits it has not acknowledged yet no longer count it (nor, for `"all"`, require it). */
export const peerUnreachable = (state: AnyState, node: NodeId): void => {
  for (const pending of state.awaits.values()) {
    if (pending.acknowledged.has(node)) continue
    const wasEligible = pending.eligible.delete(node)
    const wasUnsupported = pending.unsupported.delete(node)
    if (!wasEligible && !wasUnsupported) continue
    if (pending.all) pending.required = pending.eligible.size + pending.unsupported.size
    settle(state, pending)
  }
}

/** `node` left: it is no longer awaited (nor, for `"all"`, required), and nothing is owed to it. */
export const peerLeft = (state: AnyState, node: NodeId): void => {
  state.ackWanted.delete(node)
  state.acksDue.delete(node)
  state.acked.delete(node)
  for (const pending of state.awaits.values()) {
    const wasEligible = pending.eligible.delete(node)
    const wasUnsupported = pending.unsupported.delete(node)
    if (!wasEligible && !wasUnsupported) continue
    pending.acknowledged.delete(node)
    if (pending.all) pending.required = pending.eligible.size + pending.unsupported.size
    settle(state, pending)
  }
}

/**
 * What an inbound snapshot, delta, snapshot request or change-feed notice
 * does to the view held of its sender, by the acceptance table
 * (`acceptance.ts`): accepted views are published; a duplicate only
 * refreshes `syncedAt`; a stale message draws a hint of what is held (so an
 * owner that went back in time moves on); a gap asks for a snapshot; an
 * undecodable payload is counted against its sender. Messages of a departed
 * incarnation are ignored and counted.
 * @internal
 */
import type { NodeId } from "../../NodeId.ts"
import type { DeltaUpdate, FullSnapshot, RequestSnapshot } from "../../SyncMessage.ts"
import * as Acceptance from "./acceptance.ts"
import * as G from "./generation.ts"
import { emit, heldOf, log, publishPeers, requestSnapshot, type SyncState, syncFailed } from "./state.ts"
import type { DecodeError } from "./types.ts"

type AnyState = SyncState<any, any, any, any>

const accept: Acceptance.Verdict = { _tag: "Accept" }

export const snapshot = <V>(state: SyncState<any, V, any, any>, from: NodeId, m: FullSnapshot, now: number): void => {
  const { peers, ports, views } = state
  if (state.departed.ignores(from, m.generation)) return ports.count("departedIgnored")
  const held = views.get(from)
  // Without a view (the peer left and came back), the newest generation ever seen from it still
  // bounds what may be accepted: an owner that restarted with an older generation is told so.
  const seen = held?.generation ?? state.departed.lastSeen(from)
  const verdict = held === undefined && seen !== undefined && G.equals(seen, m.generation)
    ? accept
    : Acceptance.snapshot(seen, m.generation)
  switch (verdict._tag) {
    case "Duplicate": {
      ports.count("staleDiscarded")
      peers.synced(from, now, false)
      const pending = held!.pendingRemote
      const clearPending = pending !== undefined && !G.isNewer(pending, m.generation)
      views.set(from, { ...held!, syncedAt: now, pendingRemote: clearPending ? undefined : pending })
      return publishPeers(state)
    }
    case "Stale": {
      ports.count("staleDiscarded")
      peers.attempted(from, now)
      return hintStale(state, from, now)
    }
    default: {
      const value = ports.decodeView(m.payload, m.wireVersion, from)
      if (value._tag === "Failure") {
        peers.attempted(from, now)
        return decodeFailed(state, from, value.failure)
      }
      ports.count("snapshotsReceived")
      peers.synced(from, now, true)
      return accepted(state, from, m, value.success, m.createdAt, held?.pendingRemote, now)
    }
  }
}

export const delta = <V>(state: SyncState<any, V, any, any>, from: NodeId, m: DeltaUpdate, now: number): void => {
  const { peers, ports, views } = state
  if (state.departed.ignores(from, m.generation)) return ports.count("departedIgnored")
  const held = views.get(from)
  const verdict = Acceptance.delta(held?.generation, m.generation)
  switch (verdict._tag) {
    case "Duplicate":
    case "Stale": {
      ports.count("staleDiscarded")
      peers.attempted(from, now)
      return verdict._tag === "Stale" ? hintStale(state, from, now) : undefined
    }
    case "Gap": {
      ports.count("gapsDetected")
      peers.attempted(from, now).gapCount++
      log(state, "Debug", "gap in deltas; requesting a snapshot", {
        peer: from,
        reason: verdict.reason,
        held: held === undefined ? "none" : G.format(held.generation),
        received: G.format(m.generation)
      })
      return requestSnapshot(state, from, now)
    }
    case "Accept": {
      if (!state.config.delta || ports.applyDelta === undefined) {
        peers.attempted(from, now)
        return decodeFailed(state, from, ports.malformed(from, "delta for a simple state"))
      }
      const decoded = ports.decodeDelta(m.payload, m.wireVersion, from)
      if (decoded._tag === "Failure") {
        peers.attempted(from, now)
        return decodeFailed(state, from, decoded.failure)
      }
      const applied = ports.applyDelta(held!.value, decoded.success)
      if (applied._tag === "Failure") {
        peers.attempted(from, now)
        decodeFailed(state, from, ports.malformed(from, `applyDelta threw: ${String(applied.failure)}`))
        return requestSnapshot(state, from, now)
      }
      ports.count("deltasReceived")
      peers.synced(from, now, false)
      return accepted(state, from, m, applied.success, held!.createdAt, held!.pendingRemote, now)
    }
  }
}

export const request = (state: AnyState, from: NodeId, m: RequestSnapshot): void => {
  state.ports.count("snapshotRequestsReceived")
  if (m.generation !== undefined && G.isNewer(m.generation, state.owner.generation)) {
    // A peer holds a newer generation of ours than we do: our clock stepped back or an older state was
    // restored. The new incarnation's snapshot, once persisted, reaches the requester too.
    return emit(state, { _tag: "Reincarnate", seen: m.generation, requester: from })
  }
  emit(state, { _tag: "SendSnapshot", to: from })
}

export const notice = (
  state: AnyState,
  source: NodeId,
  generation: FullSnapshot["generation"],
  now: number
): void => {
  const { ports, views } = state
  if (state.departed.ignores(source, generation)) return ports.count("departedIgnored")
  const held = views.get(source)
  // We never got this peer's view (a lost join snapshot): ask for it.
  if (held === undefined) return requestSnapshot(state, source, now)
  if (!G.isNewer(generation, held.generation)) return
  if (held.pendingRemote !== undefined && !G.isNewer(generation, held.pendingRemote)) return
  ports.count("noticesReceived")
  views.set(source, { ...held, pendingRemote: generation })
  publishPeers(state)
}

/**
 * Publishes the view an accepted snapshot or delta makes. A change-feed marker outlives it only when it
 * announced a newer generation.
 */
const accepted = <V>(
  state: SyncState<any, V, any, any>,
  from: NodeId,
  m: FullSnapshot | DeltaUpdate,
  value: V,
  createdAt: number,
  pending: FullSnapshot["generation"] | undefined,
  now: number
): void => {
  state.views.set(from, {
    source: from,
    generation: m.generation,
    wireVersion: m.wireVersion,
    value,
    createdAt,
    modifiedAt: m.modifiedAt,
    syncedAt: now,
    pendingRemote: pending !== undefined && G.isNewer(pending, m.generation) ? pending : undefined,
    unreachableSince: state.unreachable.size === 0 ? undefined : state.unreachable.get(from)
  })
  publishPeers(state)
}

/** The owner sent something older than what we hold: tell it what we hold (once per pull timeout). */
const hintStale = (state: AnyState, from: NodeId, now: number): void => {
  if (!state.peers.mayHint(from, now, state.config.pullTimeoutMillis)) return
  state.ports.count("snapshotRequestsSent")
  emit(state, { _tag: "SendRequest", to: from, held: heldOf(state, from) })
}

const decodeFailed = (state: AnyState, from: NodeId, error: DecodeError): void => {
  const { ports } = state
  syncFailed(state, from, error.message)
  if (error._tag === "MalformedMessage") {
    ports.count("malformedReceived")
    return log(state, "Warning", "rejected a malformed payload", { peer: from, error: error.reason })
  }
  ports.count("unsupportedVersion")
  const policy = state.config.versionMismatchPolicy
  log(state, "Warning", "peer sent an unsupported wire version", { peer: from, wireVersion: error.wireVersion, policy })
  if (policy === "DropAndWait") {
    const held = state.views.get(from)
    if (held !== undefined) state.departed.remember(from, held.generation)
    state.views.delete(from)
    publishPeers(state)
  }
}

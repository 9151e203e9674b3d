/**
 * The push engine: what a committed change sends, and when. The urgency of
 * a change (the definition's `syncUrgency`, else the strategy's push mode)
 * chooses between pushing now, a coalesced push once the committing fiber
 * yields (snapshots of simple states), a delayed push, a change-feed notice,
 * or nothing. A push sends the single pending delta when it follows what
 * peers last received, else a snapshot of the newest generation. Periodic
 * full sync sends a snapshot when the state changed since the last one.
 * @internal
 */
import * as G from "./generation.ts"
import { cancelDelay, emit, log, publish, schedulePush, setOwner, snapshotToAll, type SyncState } from "./state.ts"
import type { Owner, Urgency } from "./types.ts"

type AnyState = SyncState<any, any, any, any>

const defaultUrgency: Urgency = { _tag: "Default" }

/** A mutation is durable: publish the new local view and hand the change to the engine. */
export const committed = <S, V, D, C>(
  state: SyncState<S, V, D, C>,
  owner: Owner<S, V>,
  change: C | undefined,
  now: number
): void => {
  const { config, ports } = state
  const before = state.owner
  setOwner(state, owner, now)
  ports.count("mutations")
  emit(state, publish)

  let delta: D | undefined
  if (config.delta && change !== undefined && ports.projectDelta !== undefined) {
    const projected = ports.projectDelta(change)
    if (projected._tag === "Success") delta = projected.success
    else {
      log(state, "Error", "projectDelta threw; peers will get a snapshot", { error: String(projected.failure) })
    }
  }
  // A delta is only worth keeping when it is the one change peers miss.
  state.unsentDelta = delta !== undefined && G.follows(owner.generation, state.lastPushed)
    ? { generation: owner.generation, delta }
    : undefined
  let urgency: Urgency = defaultUrgency
  if (ports.syncUrgency !== undefined && delta !== undefined) {
    const chosen = ports.syncUrgency(before.view, owner.view, delta)
    if (chosen._tag === "Success") urgency = chosen.success
    else {
      log(state, "Error", "syncUrgency failed; following the strategy", { error: String(chosen.failure) })
    }
  }
  send(state, urgency, now)
}

const send = (state: AnyState, urgency: Urgency, now: number): void => {
  const { config, ports } = state
  switch (urgency._tag) {
    case "Immediate": {
      ports.count("immediate")
      return pushNow(state)
    }
    case "Suppress": {
      ports.count("suppressed")
      return
    }
    case "Delayed": {
      ports.count("delayed")
      const deadline = now + urgency.millis
      if (state.delayDeadline !== undefined && state.delayDeadline <= deadline) return
      state.delayDeadline = deadline
      return emit(state, { _tag: "StartDelay", millis: urgency.millis })
    }
    case "Default": {
      switch (config.pushMode) {
        case "ActivePush": {
          // Deltas go one by one (a burst of them must not become a snapshot); snapshots are coalesced.
          if (config.delta || !config.coalescePush) return pushNow(state)
          if (state.pushScheduled) return
          state.pushScheduled = true
          return emit(state, schedulePush)
        }
        case "FeedLazyPull":
          return emit(state, { _tag: "Notify", generation: state.owner.generation })
        case "None":
          return
      }
    }
  }
}

/** Sends whatever peers have not received yet, cancelling a delayed send. */
export const pushNow = (state: AnyState): void => {
  if (state.delayDeadline !== undefined) {
    state.delayDeadline = undefined
    emit(state, cancelDelay)
  }
  const current = state.owner
  if (G.equals(state.lastPushed, current.generation)) return
  const follows = G.follows(current.generation, state.lastPushed)
  const pending = state.unsentDelta
  state.lastPushed = current.generation
  state.unsentDelta = undefined
  if (state.config.delta && follows && pending !== undefined && G.equals(pending.generation, current.generation)) {
    return emit(state, {
      _tag: "BroadcastDelta",
      generation: current.generation,
      modifiedAt: current.modifiedAt,
      delta: pending.delta
    })
  }
  emit(state, snapshotToAll)
}

/** The coalesced push handed to the actor is due. */
export const pushDue = (state: AnyState): void => {
  state.pushScheduled = false
  pushNow(state)
}

/** The delayed send is due (its timer already ended). */
export const delayDue = (state: AnyState): void => {
  state.delayDeadline = undefined
  pushNow(state)
}

export const periodic = (state: AnyState): void => {
  const current = state.owner.generation
  if (state.lastPeriodic !== undefined && G.equals(state.lastPeriodic, current)) return
  if (state.delayDeadline !== undefined) {
    state.delayDeadline = undefined
    emit(state, cancelDelay)
  }
  state.ports.count("periodicSyncs")
  emit(state, snapshotToAll)
  state.lastPeriodic = current
  state.lastPushed = current
  state.unsentDelta = undefined
}

/**
 * The state of the sync core for one registered state on one node: the
 * owner's state, the published view map, peers' sync status, the departed
 * set, the members whose view is awaited, the unreachable members, and the push engine's
 * bookkeeping. Updated in place by `step` (as chitchat's `ClusterState`),
 * never by the shell; the shell reads it for queries and diagnostics.
 * @internal
 */
import type { Generation } from "../../Generation.ts"
import type { NodeId } from "../../NodeId.ts"
import { Departed } from "./departed.ts"
import { Peers } from "./peers.ts"
import { type Command, type Config, localEntry, type Owner, type Ports } from "./types.ts"
import { Views } from "./views.ts"

export interface SyncState<S, V, D, C> {
  readonly config: Config
  readonly ports: Ports<V, D, C>
  owner: Owner<S, V>
  readonly views: Views<V>
  readonly peers: Peers<V>
  readonly departed: Departed
  /** Members of this state whose view never arrived (a lost join exchange): stale for every bounded query. */
  readonly awaited: Set<NodeId>
  /** Members that went silent, with since when (wall-clock ms): never pulled, stale for every bounded query. */
  readonly unreachable: Map<NodeId, number>
  /** The generation peers last received by push (delta or snapshot). */
  lastPushed: Generation
  /** The delta of the newest mutation, while it is the only change not yet pushed. */
  unsentDelta: { readonly generation: Generation; readonly delta: D } | undefined
  /** When the delayed send is due (monotonic ms), while one is scheduled. */
  delayDeadline: number | undefined
  /** Whether a coalesced push has been handed to the actor and not run yet. */
  pushScheduled: boolean
  /** The generation the last periodic sync sent. */
  lastPeriodic: Generation | undefined
  /** Owner side: the newest generation of this node's state each peer acknowledged. */
  readonly acked: Map<NodeId, Generation>
  /** Owner side: the mutations whose callers wait for acknowledgements, by id. */
  readonly awaits: Map<number, PendingAwait>
  /** Peer side: owners that asked for an acknowledgement, with the generation asked for. */
  readonly ackWanted: Map<NodeId, Generation>
  /** Peer side: acknowledgements due in this turn (owner -> generation held), sent on `AckDue`. */
  readonly acksDue: Map<NodeId, Generation>
  /** Whether an `AckDue` has been handed to the actor and not run yet. */
  ackScheduled: boolean
  /** The commands of the current step (reused from step to step). */
  readonly out: Array<Command<D>>
}

/** A mutation whose caller waits for acknowledgements. */
export interface PendingAwait {
  readonly id: number
  readonly generation: Generation
  /** `"all"`: the required count follows the awaited members that are still members. */
  readonly all: boolean
  required: number
  /** Members at the call that speak acknowledgements and are still members. */
  readonly eligible: Set<NodeId>
  /** Members at the call that do not speak acknowledgements and are still members. */
  readonly unsupported: Set<NodeId>
  /** Eligible members that acknowledged the generation (or a newer one). */
  readonly acknowledged: Set<NodeId>
  /** How long after asking the peers that have not acknowledged are asked again. */
  readonly retryMillis: number
}

/**
 * A core for `owner` at monotonic time `now`. `given`: whether every published map is given out from the
 * start (an observer sees each one).
 */
export const make = <S, V, D, C>(
  config: Config,
  ports: Ports<V, D, C>,
  owner: Owner<S, V>,
  now: number,
  given: boolean
): SyncState<S, V, D, C> => {
  const views = new Views<V>(config.self, localEntry(config.self, config.wireVersion, owner, now), given)
  return {
    config,
    ports,
    owner,
    views,
    peers: new Peers(views),
    departed: new Departed(config.departedCapacity, ports.onDeparted),
    awaited: new Set(),
    unreachable: new Map(),
    lastPushed: owner.generation,
    unsentDelta: undefined,
    delayDeadline: undefined,
    pushScheduled: false,
    lastPeriodic: undefined,
    acked: new Map(),
    awaits: new Map(),
    ackWanted: new Map(),
    acksDue: new Map(),
    ackScheduled: false,
    out: []
  }
}

export const emit = <D>(state: SyncState<any, any, D, any>, command: Command<D>): void => {
  state.out.push(command)
}

/** Publishes after peers' entries changed: a member whose view arrived is no longer awaited. */
export const publishPeers = (state: SyncState<any, any, any, any>): void => {
  const { awaited, views } = state
  const added = views.takeAdded()
  if (awaited.size > 0) for (const node of added) if (views.has(node)) awaited.delete(node)
  state.out.push(publish)
}

/** The generation of `node` held here, or the newest remembered of it since its view was removed. */
export const heldOf = (state: SyncState<any, any, any, any>, node: NodeId): Generation | undefined =>
  state.views.get(node)?.generation ?? state.departed.lastSeen(node)

/** Asks `to` for its snapshot, at most once per pull timeout. */
export const requestSnapshot = (state: SyncState<any, any, any, any>, to: NodeId, now: number): void => {
  if (!state.peers.mayRequest(to, now, state.config.pullTimeoutMillis)) return
  state.ports.count("snapshotRequestsSent")
  state.out.push({ _tag: "SendRequest", to, held: heldOf(state, to) })
}

/** Asks `to` for its snapshot now, whatever was asked before (join exchange, resync). */
export const requestSnapshotNow = (state: SyncState<any, any, any, any>, to: NodeId): void => {
  state.ports.count("snapshotRequestsSent")
  state.out.push({ _tag: "SendRequest", to, held: heldOf(state, to) })
}

/** A failed sync with `node` (a pull, an undecodable payload). */
export const syncFailed = (state: SyncState<any, any, any, any>, node: NodeId, message: string): void => {
  state.peers.failed(node, message)
  state.ports.count("syncFailures")
}

/** Logs at `level`. */
export const log = (
  state: SyncState<any, any, any, any>,
  level: "Debug" | "Warning" | "Error",
  message: string,
  annotations: Readonly<Record<string, unknown>>
): void => {
  state.out.push({ _tag: "Log", level, message, annotations })
}

/** The owner's state becomes `owner`: the local entry of the view map follows (published by the caller). */
export const setOwner = <S, V>(state: SyncState<S, V, any, any>, owner: Owner<S, V>, now: number): void => {
  const { config } = state
  state.owner = owner
  state.views.set(config.self, localEntry(config.self, config.wireVersion, owner, now))
}

export const publish: Command<never> = { _tag: "Publish" }
export const snapshotToAll: Command<never> = { _tag: "SendSnapshot", to: undefined }
export const schedulePush: Command<never> = { _tag: "SchedulePush" }
export const cancelDelay: Command<never> = { _tag: "CancelDelay" }

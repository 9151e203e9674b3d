/**
 * The replica envelope: what a node holds of one owner's view, with the
 * owner's generation and timestamps and the local sync bookkeeping a query
 * needs to judge freshness.
 *
 * @since 0.1.0
 */
import type { Generation } from "./Generation.ts"
import type { NodeId } from "./NodeId.ts"

/**
 * One node's view of one owner's state.
 *
 * @category models
 * @since 0.1.0
 */
export interface StateView<V> {
  /** The owner of this view. */
  readonly source: NodeId
  /** The owner's generation this view reflects. */
  readonly generation: Generation
  /** The wire version the view arrived in (the local one for the local view). */
  readonly wireVersion: number
  /** The public view. */
  readonly value: V
  /** Owner's wall-clock time (ms) when this incarnation's state was created. */
  readonly createdAt: number
  /** Owner's wall-clock time (ms) of the last committed mutation. */
  readonly modifiedAt: number
  /** Local monotonic time (ms) of the last sync that confirmed this view (for the local view: of its last change). */
  readonly syncedAt: number
  /** A newer generation announced by a change feed but not pulled yet. */
  readonly pendingRemote: Generation | undefined
  /**
   * Since when (this node's wall-clock ms, as its runtime reported it) the
   * owner is unreachable: still a member, its view kept but stale for every
   * bounded query; `undefined` while it is reachable (always for the local view).
   * @since 0.2.0
   */
  readonly unreachableSince: number | undefined
}

/**
 * The views a node holds of one state, keyed by owner; always contains the
 * local node's own view.
 *
 * @category models
 * @since 0.1.0
 */
export type ViewMap<V> = ReadonlyMap<NodeId, StateView<V>>

/**
 * One owner's view changed in a view map (see `StateHandle.diffs`): it was
 * added (`previous` undefined), updated (both defined) or removed (`current`
 * undefined).
 *
 * @category models
 * @since 0.1.0
 */
export type ViewDiff<V> =
  | { readonly _tag: "Added"; readonly owner: NodeId; readonly previous: undefined; readonly current: StateView<V> }
  | { readonly _tag: "Updated"; readonly owner: NodeId; readonly previous: StateView<V>; readonly current: StateView<V> }
  | { readonly _tag: "Removed"; readonly owner: NodeId; readonly previous: StateView<V>; readonly current: undefined }

/**
 * A diff from what was held of `owner` to what is held now (`undefined`:
 * nothing), or `undefined` when both are nothing.
 *
 * @category constructors
 * @since 0.1.0
 */
export const diff = <V>(
  owner: NodeId,
  previous: StateView<V> | undefined,
  current: StateView<V> | undefined
): ViewDiff<V> | undefined =>
  previous === undefined
    ? current === undefined ? undefined : { _tag: "Added", owner, previous, current }
    : current === undefined
    ? { _tag: "Removed", owner, previous, current }
    : { _tag: "Updated", owner, previous, current }

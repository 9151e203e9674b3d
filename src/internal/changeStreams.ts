/**
 * The per-owner streams of a state's view map: `changesOf(owner)`, the
 * owner's view each time it changes (latest value only: a slow consumer
 * gets the newest, never a backlog), and `diffs`, every owner's changes as
 * `Added` / `Updated` / `Removed` events with the previous and the current
 * view. Both follow the published maps (the view map's `changes`), and keep
 * at most one pending value per owner: a slow consumer of `diffs` gets, for
 * each owner, one event from what it last saw to what is held now, in the
 * order of each owner's first pending change. A change is a new generation
 * (or wire version) of a view, its arrival or its removal, and its owner
 * becoming unreachable or reachable again: sync bookkeeping
 * alone (a duplicate that refreshes `syncedAt`, a change-feed marker) is not.
 * @internal
 */
import { Deferred, Effect, Option, Queue, Stream } from "effect"
import type { NodeId } from "../NodeId.ts"
import { diff, type StateView, type ViewDiff, type ViewMap } from "../StateView.ts"

/** Whether two views (or their absence) hold the same version of the owner's state. */
const same = <V>(a: StateView<V> | undefined, b: StateView<V> | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.wireVersion === b.wireVersion && a.generation.age === b.generation.age &&
    a.generation.incarnation === b.generation.incarnation && a.unreachableSince === b.unreachableSince)

/** The owner's view now (`None` when none is held) and after each change, latest value only. */
export const changesOf = <V>(maps: Stream.Stream<ViewMap<V>>, owner: NodeId): Stream.Stream<Option.Option<StateView<V>>> =>
  Stream.callback<Option.Option<StateView<V>>>(
    (queue) => {
      let last: StateView<V> | undefined | null = null // null: nothing emitted yet
      return Stream.runForEach(maps, (map) =>
        Effect.sync(() => {
          const current = map.get(owner)
          if (last !== null && same(current, last)) return
          last = current
          Queue.offerUnsafe(queue, Option.fromUndefinedOr(current))
        }))
    },
    { bufferSize: 1, strategy: "sliding" }
  )

/** Every owner's changes, from the map at subscription (each owner held then is `Added`) on. */
export const diffs = <V>(maps: Stream.Stream<ViewMap<V>>): Stream.Stream<ViewDiff<V>> =>
  Stream.unwrap(Effect.gen(function*() {
    /** From what the consumer last saw of each owner to what is held now. */
    const pending = new Map<NodeId, { readonly previous: StateView<V> | undefined; current: StateView<V> | undefined }>()
    let waiting: Deferred.Deferred<void> | undefined
    let seen: ViewMap<V> = new Map()
    const changed = (owner: NodeId, previous: StateView<V> | undefined, current: StateView<V> | undefined) => {
      const entry = pending.get(owner)
      if (entry === undefined) pending.set(owner, { previous, current })
      else if (same(entry.previous, current)) pending.delete(owner) // back to what the consumer saw
      else entry.current = current
    }
    yield* Stream.runForEach(maps, (map) =>
      Effect.sync(() => {
        if (map === seen) return
        for (const [owner, current] of map) {
          const previous = seen.get(owner)
          if (!same(previous, current)) changed(owner, previous, current)
        }
        for (const [owner, previous] of seen) if (!map.has(owner)) changed(owner, previous, undefined)
        seen = map
        if (pending.size > 0 && waiting !== undefined) {
          Deferred.doneUnsafe(waiting, Effect.void)
          waiting = undefined
        }
      })).pipe(Effect.forkScoped)
    const next: Effect.Effect<ViewDiff<V>> = Effect.suspend(() => {
      for (const [owner, { current, previous }] of pending) {
        pending.delete(owner)
        const event = diff(owner, previous, current)
        if (event !== undefined) return Effect.succeed(event)
      }
      waiting ??= Deferred.makeUnsafe<void>()
      return Effect.andThen(Deferred.await(waiting), next)
    })
    return Stream.fromEffectRepeat(next)
  }))

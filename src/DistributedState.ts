/**
 * State definitions. A definition is a plain value that names a state type and
 * gives the Effect `Schema`s its values are stored and sent with, its initial
 * value and, for delta-aware states, how the private state projects to a
 * public view and how changes project to view-level deltas. Serialization
 * comes from the schemas: there is no hand-written encoding.
 *
 * @since 0.1.0
 */
import type { Effect, Schema } from "effect"
import type { MigrationFailed } from "./DStateError.ts"
import type { SyncUrgency } from "./SyncUrgency.ts"

/**
 * Schemas that decode an older wire version of a delta-aware state's view and
 * delta into the current types.
 *
 * @category models
 * @since 0.1.0
 */
export interface WireDecoder<V, D> {
  readonly view: Schema.Codec<V, unknown>
  readonly delta?: Schema.Codec<D, unknown> | undefined
}

/**
 * Turns a persisted state written under an older storage version into the
 * current state. `encoded` is the JSON value that version stored.
 *
 * @category models
 * @since 0.1.0
 */
export type MigrateState<S> = (encoded: unknown, fromVersion: number) => Effect.Effect<S, MigrationFailed>

/**
 * What every definition has.
 *
 * @category models
 * @since 0.1.0
 */
export interface Common<S, V> {
  /**
   * Unique per cluster; names the state in every message and in storage. 1 to 256 characters
   * (`StateRegistry.register` refuses other names with `InvalidOptions`).
   */
  readonly name: string
  /** The owner's state, persisted on the owner only. */
  readonly state: Schema.Codec<S, unknown>
  /** The public view, sent in snapshots. */
  readonly view: Schema.Codec<V, unknown>
  /** A fresh state, used when nothing was persisted (or it could not be loaded). */
  readonly initial: () => S
  /** The wire version this code sends. */
  readonly wireVersion: number
  /** The storage version this code writes. */
  readonly storageVersion: number
  /** Migrates a state persisted under an older storage version. */
  readonly migrateState: MigrateState<S> | undefined
}

/**
 * A simple state: the whole state is public and every update is a full
 * snapshot.
 *
 * @category models
 * @since 0.1.0
 */
export interface Simple<S> extends Common<S, S> {
  readonly _tag: "Simple"
}

/**
 * A delta-aware state: private state, public view, view-level deltas and an
 * optional per-mutation urgency.
 *
 * @category models
 * @since 0.1.0
 */
export interface Delta<S, V, D, C> extends Common<S, V> {
  readonly _tag: "Delta"
  readonly delta: Schema.Codec<D, unknown>
  readonly projectView: (state: S) => V
  readonly projectDelta: (change: C) => D
  readonly applyDelta: (view: V, delta: D) => V
  readonly syncUrgency: ((oldView: V, newView: V, delta: D) => SyncUrgency) | undefined
  readonly wireDecoders: { readonly [version: number]: WireDecoder<V, D> }
  /**
   * The schema of a state-level change, for stores that log changes instead of rewriting the state.
   * Given with `applyChange` or not at all (`StateRegistry.register` refuses one without the other
   * with `InvalidOptions`).
   */
  readonly change: Schema.Codec<C, unknown> | undefined
  /** Replays a logged change on the state it was made from (needed with `change`). */
  readonly applyChange: ((state: S, change: C) => S) | undefined
}

/**
 * Any definition.
 *
 * @category models
 * @since 0.1.0
 */
export type DistributedState<S, V = S, D = never, C = never> = Simple<S> | Delta<S, V, D, C>

/**
 * Any definition, whatever its types.
 *
 * @category models
 * @since 0.1.0
 */
export type Any = Simple<any> | Delta<any, any, any, any>

/**
 * The view type of a definition.
 *
 * @category models
 * @since 0.1.0
 */
export type ViewOf<T extends Any> = T extends Delta<any, infer V, any, any> ? V : T extends Simple<infer S> ? S : never

/**
 * The state type of a definition.
 *
 * @category models
 * @since 0.1.0
 */
export type StateOf<T extends Any> = T extends Delta<infer S, any, any, any> ? S
  : T extends Simple<infer S> ? S
  : never

/**
 * Defines a simple state: the whole state is its public view.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { DistributedState } from "dstate"
 *
 * export const Counter = DistributedState.make({
 *   name: "counter",
 *   schema: Schema.Struct({ value: Schema.Int }),
 *   initial: () => ({ value: 0 }),
 *   wireVersion: 1,
 *   storageVersion: 1
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <S>(options: {
  readonly name: string
  readonly schema: Schema.Codec<S, unknown>
  readonly initial: () => S
  readonly wireVersion?: number | undefined
  readonly storageVersion?: number | undefined
  readonly migrateState?: MigrateState<S> | undefined
}): Simple<S> => {
  return {
    _tag: "Simple",
    name: options.name,
    state: options.schema,
    view: options.schema,
    initial: options.initial,
    wireVersion: options.wireVersion ?? 1,
    storageVersion: options.storageVersion ?? 1,
    migrateState: options.migrateState
  }
}

/**
 * Defines a delta-aware state.
 *
 * **Details**
 *
 * A mutation returns the next state and a `change` describing what it did.
 * The owner projects the new state to its view with `projectView` and the
 * change to a view-level delta with `projectDelta`; peers rebuild the view
 * with `applyDelta(view, delta)`. `applyDelta(projectView(s), projectDelta(c))`
 * must equal `projectView(s')` for every mutation from `s` to `s'` with
 * change `c`; `dstate/testing` has a helper to check it.
 *
 * **Gotchas**
 *
 * `applyDelta` must be pure and must not mutate its input: views are shared by
 * reference between the owner, the view map and readers.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeDelta = <S, V, D, C>(options: {
  readonly name: string
  readonly state: Schema.Codec<S, unknown>
  readonly view: Schema.Codec<V, unknown>
  readonly delta: Schema.Codec<D, unknown>
  readonly initial: () => S
  readonly projectView: (state: S) => V
  readonly projectDelta: (change: C) => D
  readonly applyDelta: (view: V, delta: D) => V
  readonly syncUrgency?: ((oldView: V, newView: V, delta: D) => SyncUrgency) | undefined
  readonly wireVersion?: number | undefined
  readonly wireDecoders?: { readonly [version: number]: WireDecoder<V, D> } | undefined
  readonly storageVersion?: number | undefined
  readonly migrateState?: MigrateState<S> | undefined
  readonly change?: Schema.Codec<C, unknown> | undefined
  readonly applyChange?: ((state: S, change: C) => S) | undefined
}): Delta<S, V, D, C> => {
  return {
    _tag: "Delta",
    name: options.name,
    state: options.state,
    view: options.view,
    delta: options.delta,
    initial: options.initial,
    projectView: options.projectView,
    projectDelta: options.projectDelta,
    applyDelta: options.applyDelta,
    syncUrgency: options.syncUrgency,
    wireVersion: options.wireVersion ?? 1,
    wireDecoders: options.wireDecoders ?? {},
    storageVersion: options.storageVersion ?? 1,
    migrateState: options.migrateState,
    change: options.change,
    applyChange: options.applyChange
  }
}

/**
 * The public view of a state, whichever its kind.
 *
 * @category combinators
 * @since 0.1.0
 */
export const projectView = <S, V, D, C>(self: DistributedState<S, V, D, C>, state: S): V =>
  self._tag === "Simple" ? state as unknown as V : self.projectView(state)

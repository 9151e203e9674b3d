/**
 * The owner's state in its store: loading at startup (decoding, migrating
 * older storage versions, replaying a logged change tail; anything unusable
 * starts fresh with a new incarnation, never older than what was stored),
 * the stored record of an owner state, and saving it.
 * @internal
 */
import { Clock, Effect, Result } from "effect"
import type * as DistributedState from "../DistributedState.ts"
import { MigrationFailed, PersistenceFailed } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import type { StatePersistence, StoredState } from "../StatePersistence.ts"
import type { StateCodec } from "./codec.ts"
import type { Owner } from "./sync/types.ts"

/** The stored record of an owner state (fails when the state does not encode). */
export const toRecord = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  codec: StateCodec<S, V, D>,
  owner: Owner<S, V>
): Result.Result<StoredState, PersistenceFailed> => {
  const encoded = codec.encodeState(owner.state)
  if (Result.isFailure(encoded)) {
    return Result.fail(
      new PersistenceFailed({ stateName: definition.name, operation: "save", reason: encoded.failure.reason, cause: encoded.failure })
    )
  }
  return Result.succeed({
    generation: owner.generation,
    storageVersion: definition.storageVersion,
    value: encoded.success as StoredState["value"],
    createdAt: owner.createdAt,
    modifiedAt: owner.modifiedAt
  })
}

export const projectView = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  state: S
): V => definition._tag === "Simple" ? state as unknown as V : definition.projectView(state)

export interface Loaded<S> {
  readonly owner:
    | { readonly generation: Generation.Generation; readonly state: S; readonly createdAt: number; readonly modifiedAt: number }
    | undefined
  readonly migrated?: boolean
  readonly floor: number | undefined
}

export const load = Effect.fnUntraced(function*<S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  persistence: StatePersistence["Service"],
  codec: StateCodec<S, V, D>
): Effect.fn.Return<Loaded<S>> {
  const name = definition.name
  const loaded = yield* persistence.load(name).pipe(Effect.result)
  if (Result.isFailure(loaded)) {
    yield* Effect.logWarning("could not load the persisted state; starting fresh with a new incarnation").pipe(
      Effect.annotateLogs({ error: loaded.failure.message })
    )
    return { owner: undefined, floor: undefined }
  }
  const record = loaded.success
  if (record === undefined) return { owner: undefined, floor: undefined }
  const changes = record.changes ?? []
  const lastGeneration = changes.length > 0 ? changes[changes.length - 1].generation : record.generation
  const floor = Math.max(record.generation.incarnation, lastGeneration.incarnation)
  const fromRecord = (state: S) => ({
    generation: record.generation,
    state,
    createdAt: record.createdAt,
    modifiedAt: record.modifiedAt
  })
  /** Replays the logged changes on the snapshot's state. */
  const replay = (loaded: ReturnType<typeof fromRecord>): Result.Result<ReturnType<typeof fromRecord>, string> => {
    if (changes.length === 0) return Result.succeed(loaded)
    if (definition._tag !== "Delta" || definition.applyChange === undefined || codec.decodeChange === undefined) {
      return Result.fail("the store logged changes but the definition has no change schema and applyChange")
    }
    let state = loaded.state
    let generation = loaded.generation
    for (const change of changes) {
      if (change.generation.incarnation !== generation.incarnation || change.generation.age !== generation.age + 1) {
        return Result.fail(`change log skips from ${Generation.format(generation)} to ${Generation.format(change.generation)}`)
      }
      const decoded = codec.decodeChange(change.value)
      if (Result.isFailure(decoded)) return Result.fail(decoded.failure.reason)
      const applied = Result.try(() => definition.applyChange!(state, decoded.success as C))
      if (Result.isFailure(applied)) return Result.fail(`applyChange threw: ${String(applied.failure)}`)
      state = applied.success
      generation = change.generation
    }
    return Result.succeed({ ...loaded, state, generation })
  }
  const replayed = Effect.fnUntraced(function*(loaded: ReturnType<typeof fromRecord>) {
    const r = replay(loaded)
    if (Result.isSuccess(r)) return r.success
    yield* Effect.logWarning("could not replay the change log; starting fresh with a new incarnation").pipe(
      Effect.annotateLogs({ error: r.failure })
    )
    return undefined
  })
  if (record.storageVersion === definition.storageVersion) {
    const state = codec.decodeState(record.value)
    if (Result.isSuccess(state)) return { owner: yield* replayed(fromRecord(state.success)), floor }
    yield* Effect.logWarning("persisted state does not decode; starting fresh with a new incarnation").pipe(
      Effect.annotateLogs({ error: state.failure.reason })
    )
    return { owner: undefined, floor }
  }
  const migrated = record.storageVersion < definition.storageVersion && definition.migrateState !== undefined
    ? yield* definition.migrateState(record.value, record.storageVersion).pipe(
      Effect.catchDefect((defect) =>
        Effect.fail(
          new MigrationFailed({
            stateName: name,
            fromVersion: record.storageVersion,
            toVersion: definition.storageVersion,
            reason: String(defect),
            cause: defect
          })
        )
      ),
      Effect.result
    )
    : Result.fail(
      new MigrationFailed({
        stateName: name,
        fromVersion: record.storageVersion,
        toVersion: definition.storageVersion,
        reason: record.storageVersion > definition.storageVersion
          ? "stored by a newer version of this state"
          : "no migrateState for older storage versions"
      })
    )
  if (Result.isSuccess(migrated)) {
    yield* Effect.logInfo("migrated the persisted state").pipe(
      Effect.annotateLogs({ fromVersion: record.storageVersion, toVersion: definition.storageVersion })
    )
    const owner = yield* replayed(fromRecord(migrated.success))
    return owner === undefined ? { owner, floor } : { owner, migrated: true, floor }
  }
  yield* Effect.logWarning("could not migrate the persisted state; starting fresh with a new incarnation").pipe(
    Effect.annotateLogs({ error: migrated.failure.message })
  )
  return { owner: undefined, floor }
})


/** Saves an owner state (and, for a logged state, the change that made it); nothing without persistence. */
export const saver = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  codec: StateCodec<S, V, D>,
  persistence: StatePersistence["Service"] | undefined
) =>
(owner: Owner<S, V>, change?: C | undefined): Effect.Effect<void, PersistenceFailed> =>
  Effect.suspend(() => {
    if (persistence === undefined) return Effect.void
    const name = definition.name
    const record = toRecord(definition, codec, owner)
    if (Result.isFailure(record)) return Effect.fail(record.failure)
    if (codec.encodeChange === undefined || change === undefined) return persistence.save(name, record.success)
    const encoded = codec.encodeChange(change)
    return Result.isSuccess(encoded)
      ? persistence.save(name, record.success, { generation: owner.generation, value: encoded.success as StoredState["value"] })
      : Effect.fail(
        new PersistenceFailed({ stateName: name, operation: "save", reason: encoded.failure.reason, cause: encoded.failure })
      )
  })

/**
 * The owner state a shard starts with: the loaded one (saved again when it was migrated), or a fresh
 * state in a new incarnation, never older than what the store held (saved at once).
 */
export const start = Effect.fnUntraced(function*<S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  codec: StateCodec<S, V, D>,
  persistence: StatePersistence["Service"] | undefined,
  save: (owner: Owner<S, V>) => Effect.Effect<void, PersistenceFailed>
) {
  const saveQuietly = (owner: Owner<S, V>) =>
    save(owner).pipe(
      Effect.catch((error) =>
        Effect.logWarning("could not persist the state at startup").pipe(Effect.annotateLogs({ error: error.message }))
      )
    )
  const wallNow = yield* Clock.currentTimeMillis
  const loaded = persistence === undefined ? { owner: undefined, floor: undefined } : yield* load(definition, persistence, codec)
  if (loaded.owner !== undefined) {
    const owner: Owner<S, V> = { ...loaded.owner, view: projectView(definition, loaded.owner.state) }
    if (loaded.migrated) yield* saveQuietly(owner)
    return owner
  }
  const state = definition.initial()
  const incarnation = Generation.nextIncarnation(wallNow, loaded.floor)
  const owner: Owner<S, V> = {
    generation: Generation.initial(incarnation),
    state,
    view: projectView(definition, state),
    createdAt: wallNow,
    modifiedAt: wallNow
  }
  yield* saveQuietly(owner)
  return owner
})

/** The synchronous part of a mutation: the next owner state after `apply`, or the defect `apply` or the projection threw. */
export const prepare = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>,
  apply: (state: S) => { readonly state: S; readonly change: C | undefined },
  before: Owner<S, V>,
  nowMillis: number
): Result.Result<{ readonly next: Owner<S, V>; readonly change: C | undefined }, unknown> => {
  const result = Result.try({ try: () => apply(before.state), catch: (cause) => cause })
  if (Result.isFailure(result)) return Result.fail(result.failure)
  // Project before persisting: a projection that throws must not leave a persisted generation behind.
  const view = Result.try({ try: () => projectView(definition, result.success.state), catch: (cause) => cause })
  if (Result.isFailure(view)) return Result.fail(view.failure)
  const next: Owner<S, V> = {
    generation: Generation.next(before.generation),
    state: result.success.state,
    view: view.success,
    createdAt: before.createdAt,
    modifiedAt: nowMillis
  }
  return Result.succeed({ next, change: result.success.change })
}

/**
 * Persistence of the owner's state. The owner saves its encoded state with its
 * generation before any change becomes visible (persist before publish), and
 * loads it back on start so that a restarted node keeps its incarnation and
 * age. The service is per node: one store holds the states of that node.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Schema } from "effect"
import { PersistenceFailed } from "./DStateError.ts"
import { Generation } from "./Generation.ts"

/**
 * One logged change of a delta-aware state that declares a `change` schema:
 * the generation it produced and the change encoded as JSON.
 *
 * @category models
 * @since 0.1.0
 */
export const StoredChange = Schema.Struct({
  generation: Generation,
  value: Schema.Json
})

/**
 * @category models
 * @since 0.1.0
 */
export type StoredChange = typeof StoredChange.Type

/**
 * What is stored for one state: the generation, the storage version the value
 * was written under, the state encoded as JSON by the definition's `state`
 * schema, and the owner's wall-clock timestamps.
 *
 * @category models
 * @since 0.1.0
 */
export const StoredState = Schema.Struct({
  generation: Generation,
  storageVersion: Schema.Int,
  value: Schema.Json,
  createdAt: Schema.Finite,
  modifiedAt: Schema.Finite,
  /**
   * Changes logged after this snapshot, oldest first (only from stores that
   * keep a change log). The owner replays them with the definition's
   * `applyChange`; `generation` above is the snapshot's.
   */
  changes: Schema.optionalKey(Schema.Array(StoredChange))
})

/**
 * @category models
 * @since 0.1.0
 */
export type StoredState = typeof StoredState.Type

/**
 * The persistence service.
 *
 * @category services
 * @since 0.1.0
 */
export class StatePersistence extends Context.Service<StatePersistence, {
  /** Loads a state's record, `undefined` when none was saved. */
  load(stateName: string): Effect.Effect<StoredState | undefined, PersistenceFailed>
  /**
   * Saves a state's record; returns once it is durable. `change` is the
   * mutation's change (present for delta-aware states with a `change` schema):
   * a store may append it to a log instead of rewriting the record, as long as
   * `load` then returns the last snapshot with the changes after it.
   */
  save(stateName: string, record: StoredState, change?: StoredChange): Effect.Effect<void, PersistenceFailed>
}>()("dstate/StatePersistence") {}

const encodeRecord = Schema.encodeUnknownResult(Schema.fromJsonString(StoredState))
const decodeRecord = Schema.decodeUnknownResult(Schema.fromJsonString(StoredState))

/**
 * A memory store over a given map (stateName → JSON text), so that a test can
 * keep the map across restarts of a node or inspect it.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeMemory = (records: Map<string, string>): StatePersistence["Service"] =>
  StatePersistence.of({
    load: (stateName) =>
      Effect.suspend(() => {
        const text = records.get(stateName)
        if (text === undefined) return Effect.succeed(undefined)
        const decoded = decodeRecord(text)
        return decoded._tag === "Success"
          ? Effect.succeed(decoded.success)
          : Effect.fail(
            new PersistenceFailed({
              stateName,
              operation: "load",
              reason: `corrupt record: ${decoded.failure.message}`,
              cause: decoded.failure
            })
          )
      }),
    save: (stateName, record) =>
      Effect.suspend(() => {
        const encoded = encodeRecord(record)
        if (encoded._tag === "Failure") {
          return Effect.fail(
            new PersistenceFailed({
              stateName,
              operation: "save",
              reason: `cannot encode: ${encoded.failure.message}`,
              cause: encoded.failure
            })
          )
        }
        records.set(stateName, encoded.success)
        return Effect.void
      })
  })

/**
 * A store in memory: records live as long as the layer. Records are kept as
 * JSON text, so a value that would not survive a real store fails here too.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory: Layer.Layer<StatePersistence> = Layer.sync(StatePersistence)(() => makeMemory(new Map()))

/**
 * `StatePersistence` on top of any Effect `KeyValueStore` (memory, a
 * directory, SQL, browser storage...): one key per state, holding the record
 * as JSON text behind a checksummed header.
 *
 * **Format**
 *
 * The value under a state's key is `dstate/1 crc32=<8 hex digits>` followed
 * by a newline and the record encoded as JSON. The checksum covers the exact
 * UTF-8 bytes of the JSON, so a value that was cut short, edited or mixed up
 * fails `load` with `PersistenceFailed`.
 *
 * **Gotchas**
 *
 * Every save rewrites the whole record (the store keeps no change log), and
 * a save is exactly as durable and atomic as the underlying store's `set`:
 * `KeyValueStore.layerFileSystem`, for instance, neither fsyncs nor renames
 * atomically. Use `FilePersistence` from `dstate/node` for a crash-safe disk
 * store.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Result } from "effect"
import { KeyValueStore } from "effect/persistence"
import * as Zlib from "node:zlib"
import { PersistenceFailed } from "./DStateError.ts"
import { decodeRecord, encodeRecord } from "./internal/storedJson.ts"
import { StatePersistence, type StoredChange, StoredState } from "./StatePersistence.ts"

const header = "dstate/1 crc32="
const headerLength = header.length + 8 + 1


const crc32 = (json: string) => (Zlib.crc32(json) >>> 0).toString(16).padStart(8, "0")

/** Why a record could not be encoded or a text decoded, and the schema error behind it when there is one. */
interface Problem {
  readonly reason: string
  readonly cause?: unknown
}

const encodeDetailed = (record: StoredState): Result.Result<string, Problem> => {
  const { changes: _, ...snapshot } = record
  const json = encodeRecord(snapshot)
  return Result.isSuccess(json)
    ? Result.succeed(`${header}${crc32(json.success)}\n${json.success}`)
    : Result.fail({ reason: `cannot encode the record: ${json.failure.message}`, cause: json.failure })
}

const decodeDetailed = (text: string): Result.Result<StoredState, Problem> => {
  if (!text.startsWith(header) || text.length < headerLength || text[headerLength - 1] !== "\n") {
    return Result.fail({ reason: "not a dstate record (bad header)" })
  }
  const stored = text.slice(header.length, header.length + 8)
  const json = text.slice(headerLength)
  const computed = crc32(json)
  if (stored !== computed) return Result.fail({ reason: `checksum mismatch: stored ${stored}, computed ${computed}` })
  const decoded = decodeRecord(json)
  return Result.isSuccess(decoded)
    ? Result.succeed(decoded.success)
    : Result.fail({
      reason: `record passes its checksum but does not decode: ${decoded.failure.message}`,
      cause: decoded.failure
    })
}

/**
 * The stored text of a record: checksummed header, newline, JSON.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encode = (record: StoredState): Result.Result<string, string> =>
  Result.mapError(encodeDetailed(record), (problem) => problem.reason)

/**
 * Reads a stored text back, verifying its header and checksum.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decode = (text: string): Result.Result<StoredState, string> =>
  Result.mapError(decodeDetailed(text), (problem) => problem.reason)

/**
 * `StatePersistence` over a `KeyValueStore`: the state's record is stored
 * under its name. `change` is ignored: every save writes the whole record.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (store: KeyValueStore.KeyValueStore): StatePersistence["Service"] =>
  StatePersistence.of({
    load: (stateName) =>
      store.get(stateName).pipe(
        Effect.mapError((error) => new PersistenceFailed({ stateName, operation: "load", reason: error.message, cause: error })),
        Effect.flatMap((text) => {
          if (text === undefined) return Effect.succeed(undefined)
          const decoded = decodeDetailed(text)
          return Result.isSuccess(decoded)
            ? Effect.succeed(decoded.success)
            : Effect.fail(new PersistenceFailed({ stateName, operation: "load", ...decoded.failure }))
        })
      ),
    save: (stateName, record, _change?: StoredChange) =>
      Effect.suspend(() => {
        const text = encodeDetailed(record)
        if (Result.isFailure(text)) {
          return Effect.fail(new PersistenceFailed({ stateName, operation: "save", ...text.failure }))
        }
        return store.set(stateName, text.success).pipe(
          Effect.mapError((error) =>
            new PersistenceFailed({ stateName, operation: "save", reason: error.message, cause: error })
          )
        )
      })
  })

/**
 * `StatePersistence` over the `KeyValueStore` in context, one key per state
 * (the state's name).
 *
 * **Example**
 *
 * ```ts
 * import { Layer } from "effect"
 * import { KeyValueStore } from "effect/persistence"
 * import { KeyValuePersistence } from "dstate"
 *
 * export const Persistence = KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(KeyValueStore.layerMemory))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerKeyValueStore: Layer.Layer<StatePersistence, never, KeyValueStore.KeyValueStore> = Layer.effect(
  StatePersistence,
  Effect.map(Effect.service(KeyValueStore.KeyValueStore), make)
)

/**
 * Like `layerKeyValueStore`, with every key prefixed by `prefix`: several
 * nodes (prefix = node id) or applications can share one store.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerKeyValueStoreWithPrefix = (
  prefix: string
): Layer.Layer<StatePersistence, never, KeyValueStore.KeyValueStore> =>
  Layer.effect(
    StatePersistence,
    Effect.map(Effect.service(KeyValueStore.KeyValueStore), (store) => make(KeyValueStore.prefix(store, prefix)))
  )

/**
 * The JSON text codecs of stored records and change-log entries, shared by
 * the stores that keep them as text.
 *
 * Encoding takes a fast path when the value is plainly JSON (finite numbers,
 * strings, booleans, null, arrays and plain objects without `undefined`
 * members) and the metadata are in range: `JSON.stringify` then writes the
 * same text the schema would. Anything else goes through the schema, which
 * refuses it with its `SchemaError` (or encodes it, when the schema accepts
 * what the fast path does not vouch for).
 * @internal
 */
import { Result, Schema } from "effect"
import { StoredChange, StoredState } from "../StatePersistence.ts"

const RecordJson = Schema.fromJsonString(StoredState)
const ChangeJson = Schema.fromJsonString(StoredChange)

const encodeRecordSchema = Schema.encodeUnknownResult(RecordJson)
const encodeChangeSchema = Schema.encodeUnknownResult(ChangeJson)
export const decodeRecord = Schema.decodeUnknownResult(RecordJson)
export const decodeChange = Schema.decodeUnknownResult(ChangeJson)

/** Whether `value` is JSON that `JSON.stringify` writes exactly as the `Schema.Json` codec would. */
const isPlainJson = (value: unknown, depth: number): boolean => {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true
    case "number":
      return Number.isFinite(value)
    case "object": {
      if (value === null) return true
      if (depth > 64) return false
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!isPlainJson(value[i], depth + 1)) return false
        return true
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) return false
      for (const key in value) {
        if (!Object.hasOwn(value, key)) return false
        if (!isPlainJson((value as Record<string, unknown>)[key], depth + 1)) return false
      }
      // Symbol keys and non-enumerable members are ignored by JSON.stringify but not by the schema.
      return Object.getOwnPropertySymbols(value).length === 0
    }
    default:
      return false
  }
}

const isCount = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0

const isGeneration = (g: StoredChange["generation"] | undefined) =>
  typeof g === "object" && g !== null && isCount(g.incarnation) && isCount(g.age) && Object.keys(g).length === 2

const isPlainRecord = (record: StoredState) =>
  isGeneration(record.generation) &&
  typeof record.storageVersion === "number" && Number.isSafeInteger(record.storageVersion) &&
  typeof record.createdAt === "number" && Number.isFinite(record.createdAt) &&
  typeof record.modifiedAt === "number" && Number.isFinite(record.modifiedAt) &&
  record.changes === undefined && Object.keys(record).length === 5 &&
  isPlainJson(record.value, 0)

const isPlainChange = (change: StoredChange) =>
  isGeneration(change.generation) && Object.keys(change).length === 2 && isPlainJson(change.value, 0)

export const encodeRecord = (record: StoredState): Result.Result<string, Schema.SchemaError> =>
  isPlainRecord(record)
    ? Result.succeed(JSON.stringify({
      generation: { incarnation: record.generation.incarnation, age: record.generation.age },
      storageVersion: record.storageVersion,
      value: record.value,
      createdAt: record.createdAt,
      modifiedAt: record.modifiedAt
    }))
    : encodeRecordSchema(record)

export const encodeChange = (change: StoredChange): Result.Result<string, Schema.SchemaError> =>
  isPlainChange(change)
    ? Result.succeed(JSON.stringify({
      generation: { incarnation: change.generation.incarnation, age: change.generation.age },
      value: change.value
    }))
    : encodeChangeSchema(change)

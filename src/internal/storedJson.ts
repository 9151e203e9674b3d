/**
 * The JSON text codecs of stored records and change-log entries, shared by
 * the stores that keep them as text.
 * @internal
 */
import { Schema } from "effect"
import { StoredChange, StoredState } from "../StatePersistence.ts"

const RecordJson = Schema.fromJsonString(StoredState)
const ChangeJson = Schema.fromJsonString(StoredChange)

export const encodeRecord = Schema.encodeUnknownResult(RecordJson)
export const decodeRecord = Schema.decodeUnknownResult(RecordJson)
export const encodeChange = Schema.encodeUnknownResult(ChangeJson)
export const decodeChange = Schema.decodeUnknownResult(ChangeJson)

/**
 * The node journal of the file store: one append-only file per store (node)
 * in which the saves of all its states are written in batches, one write and
 * one fsync per batch. This module is its byte format: encoding a batch of
 * entries into one buffer, and parsing a journal back (detecting a torn tail
 * by its checksums). The store itself (batching, compaction into per-state
 * snapshots, folding at startup) lives in `FilePersistence`.
 *
 * Format: `"dsj1"`, then entries, each
 * `u32 payload length | u32 CRC32 of the payload | u32 CRC32 of these 8 bytes | payload`,
 * the payload being `u8 kind (1 record, 2 change) | u32 name length | name (UTF-8) | JSON (UTF-8)`.
 * Integers are big-endian.
 * @internal
 */
import { Data, type Deferred, Result } from "effect"
import type { PersistenceFailed } from "../../DStateError.ts"
import * as Zlib from "node:zlib"
import type { StoredChange, StoredState } from "../../StatePersistence.ts"
import { decodeChange, decodeRecord } from "../../internal/storedJson.ts"
import type { Slot } from "./stateFiles.ts"

/** `dsj1`: the node journal, format 1. */
export const magic = 0x64736a31
export const headerBytes = 4
export const entryHeaderBytes = 12
const payloadHeaderBytes = 5

export const kindRecord = 1
export const kindChange = 2

/** CRC32 as an unsigned integer (the journal's and the state files' checksums). */
export const crc32 = (bytes: Uint8Array): number => Zlib.crc32(bytes) >>> 0
/** A checksum as it is printed in a damage report. */
export const hex32 = (n: number) => `0x${n.toString(16).padStart(8, "0")}`

/** The journal's 4-byte header. */
export const header = (): Buffer => {
  const out = Buffer.allocUnsafe(headerBytes)
  out.writeUInt32BE(magic, 0)
  return out
}

/** One entry to encode: its kind, the state's name and the JSON text. */
export interface Pending {
  readonly kind: typeof kindRecord | typeof kindChange
  readonly name: string
  readonly json: string
}

/** The bytes `entries` take in the journal. */
export const sizeOf = (entry: Pending): number =>
  entryHeaderBytes + payloadHeaderBytes + Buffer.byteLength(entry.name, "utf8") + Buffer.byteLength(entry.json, "utf8")

/** Encodes `entries` one after the other into `out` (exactly `sum(sizeOf)` bytes long). */
export const encodeInto = (entries: ReadonlyArray<Pending>, out: Buffer): void => {
  let offset = 0
  for (const entry of entries) {
    const payload = offset + entryHeaderBytes
    out.writeUInt8(entry.kind, payload)
    const nameBytes = out.write(entry.name, payload + payloadHeaderBytes, "utf8")
    out.writeUInt32BE(nameBytes, payload + 1)
    const jsonBytes = out.write(entry.json, payload + payloadHeaderBytes + nameBytes, "utf8")
    const length = payloadHeaderBytes + nameBytes + jsonBytes
    out.writeUInt32BE(length, offset)
    out.writeUInt32BE(crc32(out.subarray(payload, payload + length)), offset + 4)
    out.writeUInt32BE(crc32(out.subarray(offset, offset + 8)), offset + 8)
    offset = payload + length
  }
}

/** One entry read back. */
export type Entry =
  | { readonly kind: typeof kindRecord; readonly name: string; readonly record: StoredState }
  | { readonly kind: typeof kindChange; readonly name: string; readonly change: StoredChange }

export interface Parsed {
  readonly entries: ReadonlyArray<Entry>
  /** Bytes of the entries that hold the journal's valid content (header included). */
  readonly validBytes: number
  /** Bytes of a torn tail that were dropped (0 when none). */
  readonly tornBytes: number
}

const isZero = (buf: Buffer) => {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false
  return true
}

/**
 * Parses a journal. A damaged entry is a torn tail (dropped with everything
 * after it) when it is the last thing written: its header is incomplete, its
 * payload runs past the end, its payload checksum fails and it ends exactly
 * at the end of the file, or its header checksum fails and only zeros follow.
 * Any other damage, and an entry that passes its checksums but does not
 * decode, is corruption (`Result.fail` with the reason).
 */
export const parse = (bytes: Uint8Array): Result.Result<Parsed, string> => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buf.length < headerBytes) return Result.succeed({ entries: [], validBytes: 0, tornBytes: buf.length })
  const found = buf.readUInt32BE(0)
  if (found !== magic) return Result.fail(`not a dstate journal (magic ${hex32(found)})`)
  const entries: Array<Entry> = []
  let offset = headerBytes
  const torn = () => Result.succeed({ entries, validBytes: offset, tornBytes: buf.length - offset })
  while (offset < buf.length) {
    if (buf.length - offset < entryHeaderBytes) return torn()
    const length = buf.readUInt32BE(offset)
    const payloadCrc = buf.readUInt32BE(offset + 4)
    if (crc32(buf.subarray(offset, offset + 8)) !== buf.readUInt32BE(offset + 8)) {
      if (isZero(buf.subarray(offset))) return torn()
      return Result.fail(`journal entry ${entries.length + 1} at byte ${offset} has a corrupt header`)
    }
    const end = offset + entryHeaderBytes + length
    if (end > buf.length) return torn()
    const payload = buf.subarray(offset + entryHeaderBytes, end)
    if (crc32(payload) !== payloadCrc) {
      if (end === buf.length) return torn()
      return Result.fail(
        `journal entry ${entries.length + 1} at byte ${offset} fails its checksum and ${buf.length - end} bytes follow it`
      )
    }
    const entry = decodeEntry(payload)
    if (Result.isFailure(entry)) {
      return Result.fail(`journal entry ${entries.length + 1} at byte ${offset} passes its checksum but ${entry.failure}`)
    }
    entries.push(entry.success)
    offset = end
  }
  return Result.succeed({ entries, validBytes: offset, tornBytes: 0 })
}

const decodeEntry = (payload: Buffer): Result.Result<Entry, string> => {
  if (payload.length < payloadHeaderBytes) return Result.fail("is shorter than its kind and name length")
  const kind = payload.readUInt8(0)
  const nameBytes = payload.readUInt32BE(1)
  if (payloadHeaderBytes + nameBytes > payload.length) return Result.fail("has a name longer than the entry")
  const name = payload.toString("utf8", payloadHeaderBytes, payloadHeaderBytes + nameBytes)
  const json = payload.toString("utf8", payloadHeaderBytes + nameBytes)
  if (kind === kindRecord) {
    const record = decodeRecord(json)
    return Result.isSuccess(record)
      ? Result.succeed({ kind, name, record: record.success })
      : Result.fail(`does not decode: ${record.failure.message}`)
  }
  if (kind === kindChange) {
    const change = decodeChange(json)
    return Result.isSuccess(change)
      ? Result.succeed({ kind, name, change: change.success })
      : Result.fail(`does not decode: ${change.failure.message}`)
  }
  return Result.fail(`has an unknown kind ${kind}`)
}

/** The journal cannot be read back (damaged before its tail), or a folded record does not encode. */
export class JournalDamaged extends Data.TaggedError("JournalDamaged")<{ readonly reason: string }> {}

/** A record without its changes (what a snapshot holds). */
export const withoutChanges = (record: StoredState): StoredState => {
  const { changes: _, ...snapshot } = record
  return snapshot
}

/** A save waiting for the journal writer. */
export interface Queued {
  readonly slot: Slot
  readonly record: StoredState
  readonly change: StoredChange | undefined
  /**
   * The entry, encoded by the caller (while the journal writes the previous
   * batch): a change when the state's log had room at the call, else the
   * record. The writer encodes the record instead when the change no longer
   * fits (a full record came due, or a save failed meanwhile).
   */
  readonly entry: Pending
  readonly done: Deferred.Deferred<void, PersistenceFailed>
}

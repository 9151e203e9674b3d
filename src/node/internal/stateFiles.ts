/**
 * The state's own files of the file store: the formats of a snapshot file
 * (`dss1`: magic, length, CRC32, the record as JSON) and of a change log
 * (`dsl1`: entries with their own length and CRCs), reading them back with
 * every kind of damage named, and the operations on them: an atomic
 * snapshot (temporary file, fsync, rename, directory fsync), an appended
 * change, a save that picks one or the other, and a load. The node journal
 * (`journal.ts`) sits in front of them when it is on.
 * @internal
 */
import { Effect, Exit, type FileSystem, type PlatformError, Result, Scope, Semaphore } from "effect"
import { PersistenceFailed } from "../../DStateError.ts"
import * as Generation from "../../Generation.ts"
import { decodeChange, decodeRecord, encodeChange, encodeRecord } from "../../internal/storedJson.ts"
import type { StoredChange, StoredState } from "../../StatePersistence.ts"
import { crc32, hex32 } from "./journal.ts"

/** `dss1`: a snapshot file, format 1. */
const snapshotMagic = 0x64737331
/** `dsl1`: a change-log file, format 1. */
const logMagic = 0x64736c31
const snapshotHeaderBytes = 12
const logHeaderBytes = 4
const entryHeaderBytes = 12



/**
 * `magic | payload length | payload CRC32 | payload`, all integers big-endian
 * u32, the payload being `json` in UTF-8, encoded straight into a buffer of
 * the file's size from `buffer`.
 */
export const snapshotFile = (json: string, buffer: (size: number) => Buffer): Buffer => {
  const length = Buffer.byteLength(json, "utf8")
  const out = buffer(snapshotHeaderBytes + length)
  out.write(json, snapshotHeaderBytes, "utf8")
  out.writeUInt32BE(snapshotMagic, 0)
  out.writeUInt32BE(length, 4)
  out.writeUInt32BE(crc32(out.subarray(snapshotHeaderBytes)), 8)
  return out
}

/** `payload length | payload CRC32 | CRC32 of the previous 8 bytes | payload`, optionally after the log header. */
export const logEntry = (payload: Buffer, withLogHeader: boolean): Buffer => {
  const start = withLogHeader ? logHeaderBytes : 0
  const out = Buffer.allocUnsafe(start + entryHeaderBytes + payload.length)
  if (withLogHeader) out.writeUInt32BE(logMagic, 0)
  out.writeUInt32BE(payload.length, start)
  out.writeUInt32BE(crc32(payload), start + 4)
  out.writeUInt32BE(crc32(out.subarray(start, start + 8)), start + 8)
  payload.copy(out, start + entryHeaderBytes)
  return out
}

/** What is wrong with a file, and the schema error behind it when there is one. */
export interface Damage {
  readonly reason: string
  readonly cause?: unknown
}

export const damaged = (reason: string, cause?: unknown): Result.Result<never, Damage> =>
  Result.fail(cause === undefined ? { reason } : { reason, cause })

export const decodeSnapshot = (bytes: Uint8Array): Result.Result<StoredState, Damage> => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buf.length < snapshotHeaderBytes) {
    return damaged(`snapshot is truncated: ${buf.length} bytes, shorter than its ${snapshotHeaderBytes}-byte header`)
  }
  const magic = buf.readUInt32BE(0)
  if (magic !== snapshotMagic) return damaged(`not a dstate snapshot (magic ${hex32(magic)})`)
  const length = buf.readUInt32BE(4)
  if (length !== buf.length - snapshotHeaderBytes) {
    return damaged(
      `snapshot is ${length > buf.length - snapshotHeaderBytes ? "truncated" : "longer than its header says"}: ` +
        `header says ${length} payload bytes, file holds ${buf.length - snapshotHeaderBytes}`
    )
  }
  const payload = buf.subarray(snapshotHeaderBytes)
  const stored = buf.readUInt32BE(8)
  const computed = crc32(payload)
  if (stored !== computed) {
    return damaged(`snapshot checksum mismatch: stored ${hex32(stored)}, computed ${hex32(computed)}`)
  }
  const decoded = decodeRecord(payload.toString("utf8"))
  return Result.isSuccess(decoded)
    ? Result.succeed(decoded.success)
    : damaged(`snapshot passes its checksum but does not decode: ${decoded.failure.message}`, decoded.failure)
}

export interface ParsedLog {
  readonly changes: ReadonlyArray<StoredChange>
  /** Bytes of a torn or corrupt last entry that were dropped (0 when none). */
  readonly tornBytes: number
}

const isZero = (buf: Buffer) => {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false
  return true
}

/**
 * Parses a change log. A damaged entry is a torn tail (dropped) when nothing
 * follows it: its header is incomplete, its payload runs past the end of the
 * file, its payload checksum fails and it ends exactly at the end of the file,
 * or its header checksum fails and only zeros follow. Any other damage is
 * corruption.
 */
export const parseLog = (bytes: Uint8Array): Result.Result<ParsedLog, Damage> => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buf.length === 0) return Result.succeed({ changes: [], tornBytes: 0 })
  if (buf.length < logHeaderBytes) return Result.succeed({ changes: [], tornBytes: buf.length })
  const magic = buf.readUInt32BE(0)
  if (magic !== logMagic) return damaged(`not a dstate change log (magic ${hex32(magic)})`)
  const changes: Array<StoredChange> = []
  let offset = logHeaderBytes
  const torn = () => Result.succeed({ changes, tornBytes: buf.length - offset })
  while (offset < buf.length) {
    const left = buf.length - offset
    if (left < entryHeaderBytes) return torn()
    const length = buf.readUInt32BE(offset)
    const payloadCrc = buf.readUInt32BE(offset + 4)
    const headerCrc = buf.readUInt32BE(offset + 8)
    if (crc32(buf.subarray(offset, offset + 8)) !== headerCrc) {
      if (isZero(buf.subarray(offset))) return torn()
      return damaged(`change log entry ${changes.length + 1} at byte ${offset} has a corrupt header`)
    }
    const end = offset + entryHeaderBytes + length
    if (end > buf.length) return torn()
    const payload = buf.subarray(offset + entryHeaderBytes, end)
    if (crc32(payload) !== payloadCrc) {
      if (end === buf.length) return torn()
      return damaged(
        `change log entry ${changes.length + 1} at byte ${offset} fails its checksum and ${buf.length - end} bytes follow it`
      )
    }
    const decoded = decodeChange(payload.toString("utf8"))
    if (Result.isFailure(decoded)) {
      return damaged(
        `change log entry ${changes.length + 1} passes its checksum but does not decode: ${decoded.failure.message}`,
        decoded.failure
      )
    }
    changes.push(decoded.success)
    offset = end
  }
  return Result.succeed({ changes, tornBytes: 0 })
}

export interface Slot {
  readonly name: string
  readonly lock: Semaphore.Semaphore
  readonly snapshot: string
  readonly temp: string
  readonly log: string
  /** A change log being rewritten when the journal is folded at startup. */
  readonly logTemp: string
  /** The log, open for appending once this process appended to it. */
  logFile: { readonly file: FileSystem.File; readonly scope: Scope.Closeable } | undefined
  /**
   * Changes after the last full record (in the log, or in the journal), as
   * written by this process; `undefined` until this process wrote a full
   * record, and after a failed save: the next save then writes one.
   */
  logged: number | undefined
  /** The buffer the state's snapshots are encoded into (see `maxScratchBytes`). */
  scratch: Buffer | undefined
  /** Journal mode: the last record saved durably by this process (what `load` returns). */
  latest: StoredState | undefined
}

/**
 * Snapshots up to this size are encoded into a buffer kept with their state
 * and reused by the next snapshot: saving then allocates no memory outside
 * the JS heap, whose growth would make V8 collect the whole heap every few
 * dozen saves of a large state.
 */
export const maxScratchBytes = 1 << 20

/** A buffer of `size` bytes: the slot's scratch buffer (grown when needed) for small snapshots. */
export const bufferOf = (slot: Slot) => (size: number): Buffer => {
  if (size > maxScratchBytes) return Buffer.allocUnsafe(size)
  if (slot.scratch === undefined || slot.scratch.length < size) {
    slot.scratch = Buffer.allocUnsafe(Math.min(maxScratchBytes, Math.max(size, 2 * (slot.scratch?.length ?? 0))))
  }
  return slot.scratch.subarray(0, size)
}

/** A store operation failed on the file system. */
export const failed = (stateName: string, operation: "load" | "save") => (error: PlatformError.PlatformError) =>
  new PersistenceFailed({ stateName, operation, reason: error.message, cause: error })

/** A record or change of `stateName` does not encode. */
export const encodeFailed = (stateName: string, what: string, error: { readonly message: string }) =>
  new PersistenceFailed({ stateName, operation: "save", reason: `cannot encode the ${what}: ${error.message}`, cause: error })

/** A save on a closed store. */
export const closed = (stateName: string) => new PersistenceFailed({ stateName, operation: "save", reason: "the store is closed" })

/** A file of `stateName` is damaged. */
export const corrupt = (stateName: string, file: string, damage: Damage) =>
  new PersistenceFailed({
    stateName,
    operation: "load",
    reason: `${file}: ${damage.reason}`,
    ...(damage.cause === undefined ? {} : { cause: damage.cause })
  })

export interface Env {
  readonly fs: FileSystem.FileSystem
  /** The store's scope: change logs opened for appending are closed with it. */
  readonly scope: Scope.Scope
  /** Makes renames, creations and removals in the store's directory durable. */
  readonly syncDirectory: Effect.Effect<void, PlatformError.PlatformError>
  /** A full record after this many changes (`compactEvery`). */
  readonly compactEvery: number
}

/** The operations on the states' own files. */
export const make = (env: Env) => {
  const { compactEvery, fs, scope, syncDirectory } = env
  const readIfExists = (file: string) =>
    fs.readFile(file).pipe(
      Effect.catchTag("PlatformError", (error) =>
        error.reason._tag === "NotFound" ? Effect.succeed(undefined) : Effect.fail(error))
    )

  const closeLog = (slot: Slot) =>
    Effect.suspend(() => {
      const open = slot.logFile
      slot.logFile = undefined
      return open === undefined ? Effect.void : Scope.close(open.scope, Exit.void)
    })

  /** Writes `bytes` to `file` and fsyncs it (removing it again when that fails). */
  const writeDurably = (file: string, bytes: Uint8Array) =>
    Effect.scoped(Effect.gen(function*() {
      const handle = yield* fs.open(file, { flag: "w" })
      yield* handle.writeAll(bytes)
      yield* handle.sync
    })).pipe(Effect.onError(() => Effect.ignore(fs.remove(file, { force: true }))))

  /** Atomic snapshot: temp file, fsync, rename, fsync the directory; then empty the log. */
  const writeSnapshot = Effect.fnUntraced(function*(slot: Slot, bytes: Buffer) {
    yield* writeDurably(slot.temp, bytes)
    yield* fs.rename(slot.temp, slot.snapshot)
    yield* syncDirectory
    // Only now that the snapshot is durable may the changes it includes go.
    // Entries that survive a crash here are older than the snapshot and are skipped on load.
    if (slot.logFile !== undefined) {
      yield* slot.logFile.file.truncate(0)
      yield* slot.logFile.file.sync
    } else if (slot.logged === undefined) {
      yield* fs.remove(slot.log, { force: true })
    }
    slot.logged = 0
  })

  /** Appends one entry to the log (creating it after a snapshot) and fsyncs it. */
  const appendChange = Effect.fnUntraced(function*(slot: Slot, payload: Buffer, logged: number) {
    const entry = logEntry(payload, logged === 0)
    if (slot.logFile === undefined) {
      const fileScope = yield* Scope.fork(scope)
      const file = yield* fs.open(slot.log, { flag: "a" }).pipe(
        Scope.provide(fileScope),
        Effect.onError(() => Scope.close(fileScope, Exit.void))
      )
      slot.logFile = { file, scope: fileScope }
      // The log holds nothing newer than the snapshot (logged === 0): start it over.
      yield* file.truncate(0)
      yield* file.writeAll(entry)
      yield* file.sync
      yield* syncDirectory
    } else {
      yield* slot.logFile.file.writeAll(entry)
      yield* slot.logFile.file.sync
    }
    slot.logged = logged + 1
  })



  /** A save into the state's own files (journal off). */
  const saveToFiles = (slot: Slot, record: StoredState, change: StoredChange | undefined) =>
    Effect.suspend(() => {
      const stateName = slot.name
      const write = Effect.suspend((): Effect.Effect<void, PersistenceFailed | PlatformError.PlatformError> => {
        const logged = slot.logged
        if (change !== undefined && logged !== undefined && logged + 1 < compactEvery) {
          const encoded = encodeChange(change)
          if (Result.isFailure(encoded)) return Effect.fail(encodeFailed(stateName, "change", encoded.failure))
          return appendChange(slot, Buffer.from(encoded.success, "utf8"), logged)
        }
        const { changes: _, ...snapshot } = record
        const encoded = encodeRecord(snapshot)
        if (Result.isFailure(encoded)) return Effect.fail(encodeFailed(stateName, "record", encoded.failure))
        return writeSnapshot(slot, snapshotFile(encoded.success, bufferOf(slot)))
      })
      return write.pipe(
        // Once started, a save runs to its end: an interrupted one would leave a write in flight that
        // could land in the next save's file (and read from a buffer that save reuses).
        Effect.uninterruptible,
        Effect.catchTag("PlatformError", (error) =>
          // The files are in an unknown state: drop the log handle, and write a snapshot next time.
          Effect.andThen(
            Effect.suspend(() => {
              slot.logged = undefined
              return closeLog(slot)
            }),
            Effect.fail(failed(stateName, "save")(error))
          )),
        Semaphore.withPermits(slot.lock, 1)
      )
    })


  /** What the state's own files hold: the snapshot with the changes logged after it. */
  const loadFiles = (slot: Slot) =>
    Effect.gen(function*() {
      const stateName = slot.name
      const snapshotBytes = yield* readIfExists(slot.snapshot)
      const logBytes = yield* readIfExists(slot.log)
      if (snapshotBytes === undefined) {
        if (logBytes !== undefined && logBytes.length > 0) {
          return yield* corrupt(stateName, slot.log, { reason: "a change log exists but its snapshot is missing" })
        }
        return undefined
      }
      const record = decodeSnapshot(snapshotBytes)
      if (Result.isFailure(record)) return yield* corrupt(stateName, slot.snapshot, record.failure)
      if (logBytes === undefined || logBytes.length === 0) return record.success
      const parsed = parseLog(logBytes)
      if (Result.isFailure(parsed)) return yield* corrupt(stateName, slot.log, parsed.failure)
      if (parsed.success.tornBytes > 0) {
        yield* Effect.logWarning("dropped a torn entry at the end of the change log (a crash during an append)").pipe(
          Effect.annotateLogs({ state: stateName, file: slot.log, bytes: parsed.success.tornBytes })
        )
      }
      // Entries up to the snapshot's generation are left over from a crash during compaction.
      const base = record.success.generation
      const changes = parsed.success.changes.filter((c) => Generation.order(c.generation, base) > 0)
      return changes.length === 0 ? record.success : { ...record.success, changes }
    })

  return { appendChange, closeLog, loadFiles, readIfExists, saveToFiles, writeDurably, writeSnapshot }
}

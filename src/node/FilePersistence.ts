/**
 * A crash-safe file store for `StatePersistence`: the embedded default for a
 * node that keeps its state on a local disk.
 *
 * **Layout**
 *
 * Every state has up to three files in the store's directory, named after the
 * state (see `fileName`):
 *
 * - `<name>.snapshot`: the last full record, as a header (magic, length,
 *   CRC32) followed by the record encoded as JSON. It is replaced atomically:
 *   written to `<name>.snapshot.tmp`, fsynced, renamed over the target, and the
 *   directory fsynced. A crash leaves either the old or the new snapshot,
 *   never a mix.
 * - `<name>.log`: the changes saved since that snapshot (delta-aware states
 *   with a `change` schema), each a length-prefixed entry with a checksummed
 *   header and a checksummed payload, appended and fsynced before the save
 *   returns. Every `compactEvery` changes the store writes a snapshot instead
 *   and empties the log.
 * - `<name>.snapshot.tmp`: a snapshot being written; one left by a crash is
 *   ignored and overwritten by the next save.
 *
 * Nodes may share one directory when each passes its own `prefix` (the node
 * id is a good one): the files of a node are then `<prefix>.<name>.*`. A
 * separate directory per node works as well.
 *
 * **Recovery**
 *
 * `load` verifies every checksum. A snapshot that is truncated, too long or
 * corrupted fails with `PersistenceFailed` (operation `"load"`), and so does a
 * corrupted entry in the middle of the log: the owner then starts fresh with a
 * new incarnation. A torn or corrupt *last* log entry is what a crash during
 * an append leaves behind; it was never acknowledged, so it is dropped with a
 * warning and the load succeeds. The first save of a state after the store
 * starts (and the first save after any failed save) writes a full snapshot, so
 * the store never appends after a torn tail. A save that has started writing
 * is not interrupted: it runs to its end (or its error), so no write of an
 * abandoned save can land in a later one's files.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { Effect, Exit, FileSystem, Layer, Path, type PlatformError, Result, Scope, Semaphore } from "effect"
import { createHash } from "node:crypto"
import * as Zlib from "node:zlib"
import { type InvalidOptions, PersistenceFailed } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import * as Check from "../internal/options.ts"
import { decodeChange, decodeRecord, encodeChange, encodeRecord } from "../internal/storedJson.ts"
import { StatePersistence, StoredChange, StoredState } from "../StatePersistence.ts"

/**
 * Options of the file store.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** The directory of the store; created (with its parents) when missing. */
  readonly directory: string
  /**
   * Distinguishes the files of nodes that share `directory` (for example the
   * node id). Default: none, for a directory used by one node only.
   */
  readonly prefix?: string | undefined
  /**
   * A save that carries a change is appended to the state's log, except that
   * every `compactEvery`-th change since the last snapshot writes a full
   * snapshot and empties the log. `1` always writes snapshots. Default 64.
   */
  readonly compactEvery?: number | undefined
}

/**
 * The default of `Options.compactEvery`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultCompactEvery = 64

const maxEncodedName = 100

const isSafeByte = (b: number) => (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x5f

/**
 * The file-name stem of a state (or prefix) name.
 *
 * **Details**
 *
 * Lower-case ASCII letters, digits, `-` and `_` are kept; every other UTF-8
 * byte becomes `~xx` (two lower-case hex digits). The encoding is injective,
 * never yields `.`, `..` or a path separator, and distinguishes names that
 * differ only by case, so it is safe on case-insensitive file systems. A stem
 * longer than 100 characters is cut to 34 and completed with `~~` and the
 * SHA-256 of the name (a pattern no short stem contains).
 *
 * @category constructors
 * @since 0.1.0
 */
export const fileName = (name: string): string => {
  let out = ""
  for (const b of Buffer.from(name, "utf8")) {
    out += isSafeByte(b) ? String.fromCharCode(b) : `~${b.toString(16).padStart(2, "0")}`
  }
  if (out.length <= maxEncodedName) return out
  return `${out.slice(0, maxEncodedName - 66)}~~${createHash("sha256").update(name, "utf8").digest("hex")}`
}

// ---- on-disk formats --------------------------------------------------------------------------

/** `dss1`: a snapshot file, format 1. */
const snapshotMagic = 0x64737331
/** `dsl1`: a change-log file, format 1. */
const logMagic = 0x64736c31
const snapshotHeaderBytes = 12
const logHeaderBytes = 4
const entryHeaderBytes = 12

const crc32 = (bytes: Uint8Array): number => Zlib.crc32(bytes) >>> 0
const hex32 = (n: number) => `0x${n.toString(16).padStart(8, "0")}`


/**
 * `magic | payload length | payload CRC32 | payload`, all integers big-endian
 * u32, the payload being `json` in UTF-8, encoded straight into a buffer of
 * the file's size from `buffer`.
 */
const snapshotFile = (json: string, buffer: (size: number) => Buffer): Buffer => {
  const length = Buffer.byteLength(json, "utf8")
  const out = buffer(snapshotHeaderBytes + length)
  out.write(json, snapshotHeaderBytes, "utf8")
  out.writeUInt32BE(snapshotMagic, 0)
  out.writeUInt32BE(length, 4)
  out.writeUInt32BE(crc32(out.subarray(snapshotHeaderBytes)), 8)
  return out
}

/** `payload length | payload CRC32 | CRC32 of the previous 8 bytes | payload`, optionally after the log header. */
const logEntry = (payload: Buffer, withLogHeader: boolean): Buffer => {
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
interface Damage {
  readonly reason: string
  readonly cause?: unknown
}

const damaged = (reason: string, cause?: unknown): Result.Result<never, Damage> =>
  Result.fail(cause === undefined ? { reason } : { reason, cause })

const decodeSnapshot = (bytes: Uint8Array): Result.Result<StoredState, Damage> => {
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

interface ParsedLog {
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
const parseLog = (bytes: Uint8Array): Result.Result<ParsedLog, Damage> => {
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

// ---- the store --------------------------------------------------------------------------------

interface Slot {
  readonly lock: Semaphore.Semaphore
  readonly snapshot: string
  readonly temp: string
  readonly log: string
  /** The log, open for appending once this process appended to it. */
  logFile: { readonly file: FileSystem.File; readonly scope: Scope.Closeable } | undefined
  /**
   * Changes in the log after the snapshot, as written by this process;
   * `undefined` until this process wrote a snapshot, and after a failed save:
   * the next save then writes a snapshot.
   */
  logged: number | undefined
  /** The buffer the state's snapshots are encoded into (see `maxScratchBytes`). */
  scratch: Buffer | undefined
}

/**
 * Snapshots up to this size are encoded into a buffer kept with their state
 * and reused by the next snapshot: saving then allocates no memory outside
 * the JS heap, whose growth would make V8 collect the whole heap every few
 * dozen saves of a large state.
 */
const maxScratchBytes = 1 << 20

/** A buffer of `size` bytes: the slot's scratch buffer (grown when needed) for small snapshots. */
const bufferOf = (slot: Slot) => (size: number): Buffer => {
  if (size > maxScratchBytes) return Buffer.allocUnsafe(size)
  if (slot.scratch === undefined || slot.scratch.length < size) {
    slot.scratch = Buffer.allocUnsafe(Math.min(maxScratchBytes, Math.max(size, 2 * (slot.scratch?.length ?? 0))))
  }
  return slot.scratch.subarray(0, size)
}

/**
 * The file store over any `FileSystem`, in the current scope (open log files
 * are closed when it closes).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const scope = yield* Scope.Scope
  const compactEvery = yield* Check.integer(
    { module: "FilePersistence" },
    "compactEvery",
    options.compactEvery ?? defaultCompactEvery,
    1
  )
  const directory = options.directory
  const stemPrefix = options.prefix === undefined ? "" : `${fileName(options.prefix)}.`
  const fsyncDirectories = process.platform !== "win32"

  yield* fs.makeDirectory(directory, { recursive: true })
  /** Makes renames, creations and removals in the directory durable (through a handle open with the store). */
  const syncDirectory: Effect.Effect<void, PlatformError.PlatformError> = fsyncDirectories
    ? (yield* fs.open(directory, { flag: "r" })).sync
    : Effect.void
  yield* syncDirectory

  const slots = new Map<string, Slot>()
  const slotOf = (stateName: string): Slot => {
    let slot = slots.get(stateName)
    if (slot === undefined) {
      const stem = path.join(directory, stemPrefix + fileName(stateName))
      slot = {
        lock: Semaphore.makeUnsafe(1),
        snapshot: `${stem}.snapshot`,
        temp: `${stem}.snapshot.tmp`,
        log: `${stem}.log`,
        logFile: undefined,
        logged: undefined,
        scratch: undefined
      }
      slots.set(stateName, slot)
    }
    return slot
  }

  const failed = (stateName: string, operation: "load" | "save") => (error: PlatformError.PlatformError) =>
    new PersistenceFailed({ stateName, operation, reason: error.message, cause: error })

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

  /** Atomic snapshot: temp file, fsync, rename, fsync the directory; then empty the log. */
  const writeSnapshot = Effect.fnUntraced(function*(slot: Slot, bytes: Buffer) {
    yield* Effect.scoped(Effect.gen(function*() {
      const file = yield* fs.open(slot.temp, { flag: "w" })
      yield* file.writeAll(bytes)
      yield* file.sync
    })).pipe(Effect.onError(() => Effect.ignore(fs.remove(slot.temp, { force: true }))))
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

  const save = (stateName: string, record: StoredState, change?: StoredChange) =>
    Effect.suspend(() => {
      const slot = slotOf(stateName)
      const refuse = (reason: string, cause: unknown) =>
        Effect.fail(new PersistenceFailed({ stateName, operation: "save", reason, cause }))
      const write = Effect.suspend((): Effect.Effect<void, PersistenceFailed | PlatformError.PlatformError> => {
        const logged = slot.logged
        if (change !== undefined && logged !== undefined && logged + 1 < compactEvery) {
          const encoded = encodeChange(change)
          if (Result.isFailure(encoded)) return refuse(`cannot encode the change: ${encoded.failure.message}`, encoded.failure)
          return appendChange(slot, Buffer.from(encoded.success, "utf8"), logged)
        }
        const { changes: _, ...snapshot } = record
        const encoded = encodeRecord(snapshot)
        if (Result.isFailure(encoded)) return refuse(`cannot encode the record: ${encoded.failure.message}`, encoded.failure)
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

  const load = (stateName: string) =>
    Effect.suspend(() => {
      const slot = slotOf(stateName)
      const corrupt = (file: string, damage: Damage) =>
        Effect.fail(
          new PersistenceFailed({
            stateName,
            operation: "load",
            reason: `${file}: ${damage.reason}`,
            ...(damage.cause === undefined ? {} : { cause: damage.cause })
          })
        )
      return Effect.gen(function*() {
        const snapshotBytes = yield* readIfExists(slot.snapshot)
        const logBytes = yield* readIfExists(slot.log)
        if (snapshotBytes === undefined) {
          if (logBytes !== undefined && logBytes.length > 0) {
            return yield* corrupt(slot.log, { reason: "a change log exists but its snapshot is missing" })
          }
          return undefined
        }
        const record = decodeSnapshot(snapshotBytes)
        if (Result.isFailure(record)) return yield* corrupt(slot.snapshot, record.failure)
        if (logBytes === undefined || logBytes.length === 0) return record.success
        const parsed = parseLog(logBytes)
        if (Result.isFailure(parsed)) return yield* corrupt(slot.log, parsed.failure)
        if (parsed.success.tornBytes > 0) {
          yield* Effect.logWarning("dropped a torn entry at the end of the change log (a crash during an append)").pipe(
            Effect.annotateLogs({ state: stateName, file: slot.log, bytes: parsed.success.tornBytes })
          )
        }
        // Entries up to the snapshot's generation are left over from a crash during compaction.
        const base = record.success.generation
        const changes = parsed.success.changes.filter((c) => Generation.order(c.generation, base) > 0)
        return changes.length === 0 ? record.success : { ...record.success, changes }
      }).pipe(
        Effect.mapError((error) => error._tag === "PlatformError" ? failed(stateName, "load")(error) : error),
        Semaphore.withPermits(slot.lock, 1)
      )
    })

  return StatePersistence.of({ load, save })
})

/**
 * The file store as a layer over any `FileSystem` and `Path` (for example a
 * file system that injects faults in tests).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerFileSystem = (
  options: Options
): Layer.Layer<StatePersistence, PlatformError.PlatformError | InvalidOptions, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(StatePersistence, make(options))

/**
 * The file store on the local disk (Node's file system).
 *
 * **When to use**
 *
 * The default store of a node that keeps its state on local disk. Give each
 * node its own `directory`, or one directory with a `prefix` per node.
 *
 * **Details**
 *
 * A save returns once its data is on disk (fsync of the file and, for a new
 * snapshot, of the directory). States that log changes write a full snapshot
 * every `compactEvery` changes (default 64) and append only the change in
 * between.
 *
 * **Gotchas**
 *
 * A state must be saved by one node process at a time: two processes writing
 * the same files (same directory and prefix) corrupt each other's logs. The
 * layer fails with a `PlatformError` when the directory cannot be created,
 * and with `InvalidOptions` when `compactEvery` is not a positive integer.
 *
 * **Example**
 *
 * ```ts
 * import { Layer } from "effect"
 * import { StateRegistry } from "dstate"
 * import { FilePersistence } from "dstate/node"
 *
 * const Persistence = FilePersistence.layerFile({ directory: "/var/lib/my-app/dstate", prefix: "node-1" })
 * export const Registry = StateRegistry.layer.pipe(Layer.provide(Persistence))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerFile = (options: Options): Layer.Layer<StatePersistence, PlatformError.PlatformError | InvalidOptions> =>
  layerFileSystem(options).pipe(Layer.provide([NodeFileSystem.layer, NodePath.layer]))

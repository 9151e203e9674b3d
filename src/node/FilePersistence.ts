/**
 * A crash-safe file store for `StatePersistence`: the embedded default for a
 * node that keeps its state on a local disk.
 *
 * **The node journal** (`journal: true`, the default)
 *
 * Every save is an entry of one append-only file per store, `node.journal`
 * (`<prefix>.node.journal` with a prefix; format in `internal/journal.ts`):
 * the saves of all states that arrive while a write is in flight are
 * appended together by the next write (at most `maxBatchSaves`) and fsynced
 * once, and each save returns after that fsync. A failed write or fsync
 * fails every save of the batch; the journal is cut back to its durable end
 * before the next write. A save with a change is a change entry, except every
 * `compactEvery`-th change of a state (and the first save of a state, and the
 * first after a failure), which is a record entry. Once the journal passes
 * `journalBytes`, the newest record of every state in it is written as that
 * state's snapshot and the journal is emptied (compaction). The store keeps
 * the newest record it saved of each state in memory: compaction writes it,
 * and `load` returns it.
 *
 * **Per-state files**
 *
 * Every state has up to three files, named after the state (see `fileName`):
 *
 * - `<name>.snapshot`: the last full record, as a header (magic, length,
 *   CRC32) followed by the record encoded as JSON. It is replaced atomically:
 *   written to `<name>.snapshot.tmp`, fsynced, renamed over the target, and the
 *   directory fsynced. A crash leaves either the old or the new snapshot,
 *   never a mix.
 * - `<name>.log`: the changes saved since that snapshot, each a
 *   length-prefixed entry with a checksummed header and a checksummed payload.
 * - `<name>.snapshot.tmp` (and `<name>.log.tmp` while the journal is folded):
 *   a file being written; one left by a crash is ignored and overwritten.
 *
 * With `journal: false` every save goes to these files directly: a change is
 * appended to the log and fsynced, every `compactEvery`-th change (and any
 * save without one) writes a snapshot and empties the log.
 *
 * Nodes may share one directory when each passes its own `prefix` (the node
 * id is a good one): the files of a node are then `<prefix>.<name>.*`. A
 * separate directory per node works as well.
 *
 * **Recovery**
 *
 * The journal left by an earlier run is folded into the per-state files when
 * the store first loads or saves (each state's snapshot and log with the
 * journal's newer entries on top, written atomically, one directory fsync),
 * and only then emptied (or removed, with `journal: false`). A torn tail of
 * the journal is what a crash during a write leaves: it was never
 * acknowledged, so it is dropped with a warning; damage before the tail fails
 * every load and save of the store with `PersistenceFailed`. `load` verifies
 * every checksum of the per-state files. A snapshot that is truncated, too
 * long or corrupted fails with `PersistenceFailed` (operation `"load"`), and
 * so does a corrupted entry in the middle of a log: the owner then starts
 * fresh with a new incarnation. A torn or corrupt *last* log entry is dropped
 * with a warning and the load succeeds. The first save of a state after the
 * store starts (and the first save after any failed save) writes a full
 * record, so the store never appends after a torn tail. A save that has
 * started writing is not interrupted: it runs to its end (or its error), so
 * no write of an abandoned save can land in a later one's files.
 *
 * @since 0.1.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { Data, Deferred, Effect, Exit, FileSystem, Layer, Path, type PlatformError, Queue, Result, Scope, Semaphore } from "effect"
import { createHash } from "node:crypto"
import * as Zlib from "node:zlib"
import { type InvalidOptions, PersistenceFailed } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import * as Check from "../internal/options.ts"
import { closeQueue } from "../internal/closeQueue.ts"
import { decodeChange, decodeRecord, encodeChange, encodeRecord } from "../internal/storedJson.ts"
import { StatePersistence, StoredChange, StoredState } from "../StatePersistence.ts"
import * as Journal from "./internal/journal.ts"

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
  /**
   * Whether saves go through the node journal (one append-only file shared
   * by all states of the store, one fsync per batch of concurrent saves,
   * compacted into the per-state snapshots). `false` writes each save into
   * its state's own files, one fsync (or more) per save. Default `true`.
   */
  readonly journal?: boolean | undefined
  /** At most this many saves share one journal write and fsync. Default 512. */
  readonly maxBatchSaves?: number | undefined
  /**
   * Once the journal holds more than this many bytes after a batch, it is
   * compacted: the newest record of every state in it is written as that
   * state's snapshot, and the journal is emptied. Default 64 MiB.
   */
  readonly journalBytes?: number | undefined
}

/**
 * The default of `Options.compactEvery`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultCompactEvery = 64

/**
 * The default of `Options.maxBatchSaves`.
 *
 * @category constructors
 * @since 0.2.0
 */
export const defaultMaxBatchSaves = 512

/**
 * The default of `Options.journalBytes` (64 MiB).
 *
 * @category constructors
 * @since 0.2.0
 */
export const defaultJournalBytes = 64 * 1024 * 1024

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

/** The journal cannot be read back (damaged before its tail), or a folded record does not encode. */
class JournalDamaged extends Data.TaggedError("JournalDamaged")<{ readonly reason: string }> {}

const withoutChanges = (record: StoredState): StoredState => {
  const { changes: _, ...snapshot } = record
  return snapshot
}

// ---- the store --------------------------------------------------------------------------------

interface Slot {
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

/** A save waiting for the journal writer. */
interface Queued {
  readonly slot: Slot
  readonly record: StoredState
  readonly change: StoredChange | undefined
  /**
   * The entry, encoded by the caller (while the journal writes the previous
   * batch): a change when the state's log had room at the call, else the
   * record. The writer encodes the record instead when the change no longer
   * fits (a full record came due, or a save failed meanwhile).
   */
  readonly entry: Journal.Pending
  readonly done: Deferred.Deferred<void, PersistenceFailed>
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
 * The file store over any `FileSystem`, in the current scope (open files are
 * closed, and the journal writer stopped, when it closes).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const scope = yield* Scope.Scope
  const checker = { module: "FilePersistence" }
  const compactEvery = yield* Check.integer(checker, "compactEvery", options.compactEvery ?? defaultCompactEvery, 1)
  const maxBatchSaves = yield* Check.integer(checker, "maxBatchSaves", options.maxBatchSaves ?? defaultMaxBatchSaves, 1)
  const journalBytes = yield* Check.integer(checker, "journalBytes", options.journalBytes ?? defaultJournalBytes, 1)
  if (options.journal !== undefined && typeof options.journal !== "boolean") {
    return yield* Check.invalid(checker, "journal", options.journal, "must be a boolean")
  }
  const useJournal = options.journal ?? true
  const directory = options.directory
  const stemPrefix = options.prefix === undefined ? "" : `${fileName(options.prefix)}.`
  const journalPath = path.join(directory, `${stemPrefix}node.journal`)
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
        name: stateName,
        lock: Semaphore.makeUnsafe(1),
        snapshot: `${stem}.snapshot`,
        temp: `${stem}.snapshot.tmp`,
        log: `${stem}.log`,
        logTemp: `${stem}.log.tmp`,
        logFile: undefined,
        logged: undefined,
        scratch: undefined,
        latest: undefined
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

  const encodeFailed = (stateName: string, what: string, error: { readonly message: string }) =>
    new PersistenceFailed({ stateName, operation: "save", reason: `cannot encode the ${what}: ${error.message}`, cause: error })

  const closed = (stateName: string) => new PersistenceFailed({ stateName, operation: "save", reason: "the store is closed" })

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

  const corrupt = (stateName: string, file: string, damage: Damage) =>
    new PersistenceFailed({
      stateName,
      operation: "load",
      reason: `${file}: ${damage.reason}`,
      ...(damage.cause === undefined ? {} : { cause: damage.cause })
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

  /**
   * Folds the journal left by an earlier run into the states' files: for each
   * state in it, its files' snapshot and changes with the journal's newer
   * records and changes on top, written as a new snapshot and change log
   * (temporary files, fsync, rename, one directory fsync at the end). The
   * journal is not touched: a crash in the middle folds it again.
   */
  const foldJournal = Effect.gen(function*() {
    const bytes = yield* readIfExists(journalPath)
    if (bytes === undefined || bytes.length <= Journal.headerBytes) return
    const parsed = Journal.parse(bytes)
    if (Result.isFailure(parsed)) return yield* new JournalDamaged({ reason: `${journalPath}: ${parsed.failure}` })
    if (parsed.success.tornBytes > 0) {
      yield* Effect.logWarning("dropped a torn tail of the journal (a crash during a write)").pipe(
        Effect.annotateLogs({ file: journalPath, bytes: parsed.success.tornBytes })
      )
    }
    const byState = new Map<string, Array<Journal.Entry>>()
    for (const entry of parsed.success.entries) {
      const list = byState.get(entry.name)
      if (list === undefined) byState.set(entry.name, [entry])
      else list.push(entry)
    }
    let wrote = false
    for (const [name, entries] of byState) {
      const slot = slotOf(name)
      const files = yield* loadFiles(slot).pipe(
        Effect.catchTag("PersistenceFailed", (error) =>
          Effect.as(
            Effect.logWarning("the state's files are damaged; folding only the journal's records").pipe(
              Effect.annotateLogs({ state: name, error: error.message })
            ),
            undefined
          ))
      )
      let base: StoredState | undefined = files === undefined ? undefined : withoutChanges(files)
      let changes: Array<StoredChange> = files?.changes === undefined ? [] : [...files.changes]
      let newer = false
      for (const entry of entries) {
        if (entry.kind === Journal.kindRecord) {
          if (base === undefined || Generation.order(entry.record.generation, base.generation) > 0) {
            const after = entry.record.generation
            base = entry.record
            changes = changes.filter((c) => Generation.order(c.generation, after) > 0)
            newer = true
          }
        } else {
          const last = changes.length > 0 ? changes[changes.length - 1].generation : base?.generation
          if (last !== undefined && Generation.order(entry.change.generation, last) > 0) {
            changes.push(entry.change)
            newer = true
          }
        }
      }
      if (base === undefined) {
        yield* Effect.logWarning("the journal holds only changes of a state without a readable snapshot; they are dropped").pipe(
          Effect.annotateLogs({ state: name })
        )
        continue
      }
      if (!newer) continue
      const encoded = encodeRecord(base)
      if (Result.isFailure(encoded)) return yield* new JournalDamaged({ reason: `${journalPath}: ${encoded.failure.message}` })
      yield* writeDurably(slot.temp, snapshotFile(encoded.success, (size) => Buffer.allocUnsafe(size)))
      if (changes.length > 0) {
        const parts: Array<Buffer> = []
        for (const [i, change] of changes.entries()) {
          const json = encodeChange(change)
          if (Result.isFailure(json)) return yield* new JournalDamaged({ reason: `${journalPath}: ${json.failure.message}` })
          parts.push(logEntry(Buffer.from(json.success, "utf8"), i === 0))
        }
        yield* writeDurably(slot.logTemp, Buffer.concat(parts))
      }
      yield* fs.rename(slot.temp, slot.snapshot)
      if (changes.length > 0) yield* fs.rename(slot.logTemp, slot.log)
      else yield* fs.remove(slot.log, { force: true })
      wrote = true
    }
    if (wrote) yield* syncDirectory
  })

  if (!useJournal) {
    // The journal of an earlier run with the journal on is folded into the states' files first.
    let folded = false
    const ready = Effect.suspend(() =>
      folded ? Effect.void : foldJournal.pipe(
        // Folded: the journal goes, so that an older version reading these files misses nothing.
        Effect.andThen(fs.remove(journalPath, { force: true })),
        Effect.andThen(syncDirectory),
        Effect.andThen(Effect.sync(() => {
          folded = true
        }))
      )
    )
    const readyLock = Semaphore.makeUnsafe(1)
    const whenReady = (stateName: string, operation: "load" | "save") =>
      ready.pipe(
        Effect.uninterruptible,
        Semaphore.withPermits(readyLock, 1),
        Effect.mapError((error) =>
          error._tag === "PlatformError"
            ? failed(stateName, operation)(error)
            : new PersistenceFailed({ stateName, operation, reason: error.reason, ...(error.cause === undefined ? {} : { cause: error.cause }) })
        )
      )
    return StatePersistence.of({
      load: (stateName) =>
        Effect.andThen(
          whenReady(stateName, "load"),
          Effect.suspend(() => {
            const slot = slotOf(stateName)
            return loadFiles(slot).pipe(
              Effect.mapError((error) => error._tag === "PlatformError" ? failed(stateName, "load")(error) : error),
              Semaphore.withPermits(slot.lock, 1)
            )
          })
        ),
      save: (stateName, record, change) =>
        Effect.andThen(whenReady(stateName, "save"), Effect.suspend(() => saveToFiles(slotOf(stateName), record, change)))
    })
  }
  // ---- the journal ------------------------------------------------------------------------------
  const journalLock = Semaphore.makeUnsafe(1)
  /** Held by a load reading a state's files and by a compaction writing them. */
  const filesLock = Semaphore.makeUnsafe(1)
  /** The journal, open for appending, once folded and emptied by this process. */
  let journal: FileSystem.File | undefined
  /** Bytes of the journal that are durable (header included). */
  let journalLength = 0
  /** A write failed: bytes past `journalLength` may be on disk and must go before the next write. */
  let journalBroken = false
  /** The journal is compacted once it is longer than this (raised after a failed compaction). */
  let compactAt = journalBytes
  /** States with entries in the journal (their `latest` is what compaction writes). */
  const inJournal = new Set<Slot>()
  /** The buffer batches are encoded into, while they fit. */
  let batchScratch: Buffer | undefined

  /** Folds the journal left by an earlier run into the states' files, then starts it over, empty. */
  const openJournal = Effect.gen(function*() {
    yield* foldJournal
    const fileScope = yield* Scope.fork(scope)
    const file = yield* fs.open(journalPath, { flag: "a" }).pipe(Scope.provide(fileScope))
    yield* Effect.gen(function*() {
      yield* file.truncate(0)
      yield* file.writeAll(Journal.header())
      yield* file.sync
      yield* syncDirectory
    }).pipe(Effect.onError(() => Scope.close(fileScope, Exit.void)))
    journal = file
    journalLength = Journal.headerBytes
    journalBroken = false
  })

  const ready = Effect.suspend(() => journal !== undefined ? Effect.void : openJournal).pipe(
    Effect.uninterruptible,
    Semaphore.withPermits(journalLock, 1)
  )

  const notReady = (stateName: string, operation: "load" | "save") => (error: PlatformError.PlatformError | JournalDamaged) =>
    error._tag === "PlatformError"
      ? failed(stateName, operation)(error)
      : new PersistenceFailed({ stateName, operation, reason: error.reason })

  /** Drops what a failed write may have left past the durable end of the journal. */
  const repair = Effect.suspend(() => {
    const file = journal!
    return Effect.andThen(Effect.andThen(file.truncate(journalLength), file.sync), Effect.sync(() => (journalBroken = false)))
  })

  /** Writes the newest record of every state in the journal as its snapshot, then empties the journal. */
  const compact = Effect.gen(function*() {
    const dirty = [...inJournal]
    yield* Effect.forEach(dirty, (slot) =>
      Effect.suspend(() => {
        const encoded = encodeRecord(slot.latest!)
        return Result.isFailure(encoded)
          ? Effect.die(encoded.failure)
          : writeDurably(slot.temp, snapshotFile(encoded.success, bufferOf(slot)))
      }), { concurrency: 8, discard: true })
    for (const slot of dirty) yield* fs.rename(slot.temp, slot.snapshot)
    yield* syncDirectory
    // The snapshots are durable: the logs and the journal entries they include may go.
    for (const slot of dirty) {
      if (slot.logged === undefined || slot.logFile === undefined) yield* fs.remove(slot.log, { force: true })
    }
    yield* journal!.truncate(Journal.headerBytes)
    yield* journal!.sync
    journalLength = Journal.headerBytes
    for (const slot of dirty) slot.logged = 0
    inJournal.clear()
  }).pipe(Semaphore.withPermits(filesLock, 1))

  const failAll = (items: ReadonlyArray<Queued>, error: (stateName: string) => PersistenceFailed) => {
    for (const item of items) Deferred.doneUnsafe(item.done, Effect.fail(error(item.slot.name)))
  }

  /** Writes one batch of saves with one write and one fsync, then acknowledges them. */
  const writeBatch = (batch: ReadonlyArray<Queued>) =>
    Effect.gen(function*() {
      const opened = yield* Effect.result(ready)
      if (Result.isFailure(opened)) return failAll(batch, (name) => notReady(name, "save")(opened.failure))
      if (journalBroken) {
        const repaired = yield* Effect.result(repair)
        if (Result.isFailure(repaired)) return failAll(batch, (name) => failed(name, "save")(repaired.failure))
      }
      const entries: Array<Journal.Pending> = []
      const written: Array<Queued> = []
      let size = 0
      for (const item of batch) {
        const slot = item.slot
        const logged = slot.logged
        let entry = item.entry
        if (entry.kind === Journal.kindChange && logged !== undefined && logged + 1 < compactEvery) {
          slot.logged = logged + 1
        } else {
          if (entry.kind === Journal.kindChange) {
            const json = encodeRecord(withoutChanges(item.record))
            if (Result.isFailure(json)) {
              Deferred.doneUnsafe(item.done, Effect.fail(encodeFailed(slot.name, "record", json.failure)))
              continue
            }
            entry = { kind: Journal.kindRecord, name: slot.name, json: json.success }
          }
          slot.logged = 0
        }
        entries.push(entry)
        written.push(item)
        size += Journal.sizeOf(entry)
      }
      if (written.length === 0) return
      if (size <= maxScratchBytes && (batchScratch === undefined || batchScratch.length < size)) {
        batchScratch = Buffer.allocUnsafe(Math.min(maxScratchBytes, Math.max(size, 2 * (batchScratch?.length ?? 0))))
      }
      const bytes = size <= maxScratchBytes ? batchScratch!.subarray(0, size) : Buffer.allocUnsafe(size)
      Journal.encodeInto(entries, bytes)
      const file = journal!
      const result = yield* Effect.result(Effect.andThen(file.writeAll(bytes), file.sync))
      if (Result.isFailure(result)) {
        // Nothing of the batch is acknowledged, and the journal goes back to its durable end.
        journalBroken = true
        for (const item of written) item.slot.logged = undefined
        failAll(written, (name) => failed(name, "save")(result.failure))
        yield* Effect.ignore(repair)
        return
      }
      journalLength += size
      for (const item of written) {
        const slot = item.slot
        slot.latest = item.record.changes === undefined ? item.record : withoutChanges(item.record)
        inJournal.add(slot)
        Deferred.doneUnsafe(item.done, Effect.void)
      }
      if (journalLength > compactAt) {
        const compacted = yield* Effect.result(compact)
        if (Result.isFailure(compacted)) {
          compactAt = journalLength + journalBytes
          yield* Effect.logWarning("could not compact the journal; the states stay in it until the next attempt").pipe(
            Effect.annotateLogs({ file: journalPath, error: compacted.failure.message })
          )
        } else {
          compactAt = journalBytes
        }
      }
    }).pipe(Effect.uninterruptible)

  const queue = yield* Queue.unbounded<Queued>()
  yield* Effect.forkIn(Effect.forever(Effect.flatMap(Queue.takeBetween(queue, 1, maxBatchSaves), writeBatch)), scope)
  // Closing the store (after the writer's batch in flight): the saves still waiting fail, later ones too.
  yield* Scope.addFinalizer(scope, Effect.map(closeQueue(queue), (left) => failAll(left, closed)))

  const save = (stateName: string, record: StoredState, change?: StoredChange) =>
    Effect.suspend(() => {
      const slot = slotOf(stateName)
      const logged = slot.logged
      let entry: Journal.Pending
      if (change !== undefined && logged !== undefined && logged + 1 < compactEvery) {
        const json = encodeChange(change)
        if (Result.isFailure(json)) return Effect.fail(encodeFailed(stateName, "change", json.failure))
        entry = { kind: Journal.kindChange, name: stateName, json: json.success }
      } else {
        const json = encodeRecord(record.changes === undefined ? record : withoutChanges(record))
        if (Result.isFailure(json)) return Effect.fail(encodeFailed(stateName, "record", json.failure))
        entry = { kind: Journal.kindRecord, name: stateName, json: json.success }
      }
      const done = Deferred.makeUnsafe<void, PersistenceFailed>()
      if (!Queue.offerUnsafe(queue, { slot, record, change, entry, done })) return Effect.fail(closed(stateName))
      return Deferred.await(done)
    })

  const load = (stateName: string) =>
    Effect.suspend((): Effect.Effect<StoredState | undefined, PersistenceFailed> => {
      const slot = slotOf(stateName)
      if (slot.latest !== undefined) return Effect.succeed(slot.latest)
      return Effect.andThen(
        Effect.mapError(ready, notReady(stateName, "load")),
        loadFiles(slot).pipe(
          Effect.mapError((error) => error._tag === "PlatformError" ? failed(stateName, "load")(error) : error),
          Semaphore.withPermits(filesLock, 1)
        )
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
 * A save returns once its data is on disk. By default saves go to the
 * node journal: the saves of all states that wait together share one write
 * and fsync (at most `maxBatchSaves`, default 512), and the journal is
 * compacted into per-state snapshots once it passes `journalBytes` (default
 * 64 MiB). States that log changes write a full record every `compactEvery`
 * changes (default 64) and only the change in between. `journal: false`
 * writes each save into its state's own files (one fsync or more per save).
 *
 * **Gotchas**
 *
 * A state must be saved by one node process at a time: two processes writing
 * the same files (same directory and prefix) corrupt each other's logs. The
 * layer fails with a `PlatformError` when the directory cannot be created,
 * and with `InvalidOptions` when `compactEvery`, `maxBatchSaves` or
 * `journalBytes` is not a positive integer, or `journal` not a boolean. The
 * store keeps the newest record of every state it saved in memory.
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

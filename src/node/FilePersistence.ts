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
import { Deferred, Effect, Exit, FileSystem, Layer, Path, type PlatformError, Queue, Result, Scope, Semaphore } from "effect"
import { createHash } from "node:crypto"
import { type InvalidOptions, PersistenceFailed } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import * as Check from "../internal/options.ts"
import { closeQueue } from "../internal/closeQueue.ts"
import { encodeChange, encodeRecord } from "../internal/storedJson.ts"
import { StatePersistence, StoredChange, StoredState } from "../StatePersistence.ts"
import * as Journal from "./internal/journal.ts"
import { JournalDamaged, type Queued, withoutChanges } from "./internal/journal.ts"
import * as StateFiles from "./internal/stateFiles.ts"
import { bufferOf, closed, encodeFailed, failed, logEntry, maxScratchBytes, type Slot, snapshotFile } from "./internal/stateFiles.ts"

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

// ---- the store --------------------------------------------------------------------------------

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
  const { loadFiles, readIfExists, saveToFiles, writeDurably } = StateFiles.make({
    fs,
    scope,
    syncDirectory,
    compactEvery
  })

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

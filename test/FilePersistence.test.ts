import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, FileSystem, Layer, Logger, Path, PlatformError, References, Schema } from "effect"
import * as Zlib from "node:zlib"
import { TestClock } from "effect/testing"
import { DStateError, StatePersistence, StateRegistry } from "dstate"
import { FilePersistence } from "dstate/node"
import { suite } from "./conformance/PersistenceSuite.ts"
import { Ledger, ledgerPad, onNode, Tally, tallyLabels, tallyNext, type TallyState } from "./fixtures/persistenceNode.ts"

type StoredState = StatePersistence.StoredState
type StoredChange = StatePersistence.StoredChange
type Store = StatePersistence.StatePersistence["Service"]

const NodeLayers = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)

/** A file store in a fresh temporary directory, removed when the layer closes. */
const freshStore = (options?: Omit<FilePersistence.Options, "directory">) =>
  Layer.unwrap(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-file-" })
    return FilePersistence.layerFileSystem({ directory, ...options })
  })).pipe(Layer.provide(NodeLayers))

const denied = (method: string, path: string) =>
  PlatformError.systemError({
    _tag: "PermissionDenied",
    module: "FileSystem",
    method,
    pathOrDescriptor: path,
    description: "injected by the test"
  })

/** A file store whose directory exists but refuses every read and write of a file. */
const failingStore = (options?: Omit<FilePersistence.Options, "directory">) =>
  Layer.unwrap(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-file-failing-" })
    const broken = FileSystem.FileSystem.of({
      ...fs,
      readFile: (path) => Effect.fail(denied("readFile", path)),
      open: (path, options) => options?.flag === "r" ? fs.open(path, options) : Effect.fail(denied("open", path))
    })
    return FilePersistence.layerFileSystem({ directory, ...options }).pipe(
      Layer.provide(Layer.succeed(FileSystem.FileSystem, broken))
    )
  })).pipe(Layer.provide(NodeLayers))

for (
  const [name, options] of [
    ["file (compactEvery 64)", {}],
    ["file (compactEvery 2)", { compactEvery: 2 }],
    ["file (compactEvery 1, snapshots only)", { compactEvery: 1 }],
    ["file, journal off (compactEvery 64)", { journal: false }],
    ["file, journal off (compactEvery 2)", { journal: false, compactEvery: 2 }],
    ["file, journal with batches of 1 and compaction after every batch", { maxBatchSaves: 1, journalBytes: 1 }]
  ] as const
) {
  suite(name, freshStore(options), { failing: failingStore(options), failingCause: "PlatformError", timeout: 60_000 })
}

// ---- helpers ------------------------------------------------------------------------------------

const inc = 1_717_171_717_171

const record = (age: number, value: StoredState["value"] = { age }, incarnation = inc): StoredState => ({
  generation: { incarnation, age },
  storageVersion: 1,
  value,
  createdAt: 1_000,
  modifiedAt: 1_000 + age
})

const change = (age: number, incarnation = inc): StoredChange => ({
  generation: { incarnation, age },
  value: { add: 1, label: `#${age}` }
})

/** A temporary directory for one test, removed at its end. */
const tempDir = Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.makeTempDirectoryScoped({ prefix: "dstate-file-test-" }))

/**
 * Opens a store on `directory`, runs `f` with it, closes it (a node's process, start to stop). The
 * journal is off unless `options` turn it on: these tests look at the states' own files.
 */
const withStore = <A, E, R>(
  directory: string,
  f: (store: Store) => Effect.Effect<A, E, R>,
  options?: Omit<FilePersistence.Options, "directory">
) => Effect.scoped(Effect.flatMap(FilePersistence.make({ directory, journal: false, ...options }), f))

const listing = (directory: string) =>
  Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.readDirectory(directory)).pipe(Effect.map((names) => names.sort()))

const fileSize = (file: string) =>
  Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.stat(file)).pipe(Effect.map((info) => Number(info.size)))

const readBytes = (file: string) => Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.readFile(file))

const writeBytes = (file: string, bytes: Uint8Array) =>
  Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.writeFile(file, bytes))

/** Rewrites `file` through `f`. */
const damage = (file: string, f: (bytes: Uint8Array) => Uint8Array) =>
  Effect.flatMap(readBytes(file), (bytes) => writeBytes(file, f(new Uint8Array(bytes))))

const flipByte = (at: (length: number) => number) => (bytes: Uint8Array) => {
  const out = new Uint8Array(bytes)
  out[at(bytes.length)] ^= 0x5a
  return out
}

/** `fs`, with the `sync` of every file opened at a path ending in `suffix` replaced by `sync(path, its own sync)`. */
const replaceSync = (
  fs: FileSystem.FileSystem,
  suffix: string,
  sync: (
    path: string,
    original: Effect.Effect<void, PlatformError.PlatformError>
  ) => Effect.Effect<void, PlatformError.PlatformError>
) =>
  FileSystem.FileSystem.of({
    ...fs,
    open: (path, options) =>
      Effect.map(fs.open(path, options), (file) =>
        path.endsWith(suffix)
          ? new Proxy(file, {
            get: (target, key) => {
              if (key === "sync") return sync(path, target.sync)
              const value = Reflect.get(target, key, target)
              return typeof value === "function" ? value.bind(target) : value
            }
          })
          : file)
  })

const loadFailure = (store: Store, stateName: string) => Effect.flip(store.load(stateName))

const pathOf = (directory: string, stateName: string, suffix: string) =>
  Effect.map(Effect.service(Path.Path), (path) => path.join(directory, `${FilePersistence.fileName(stateName)}.${suffix}`))

/** Sizes of one log entry of `change(age)` and of the log header. */
const entryBytes = (age: number) => 12 + Buffer.byteLength(JSON.stringify(change(age)), "utf8")
const logHeader = 4

const provideNode = Effect.provide(NodeLayers)

describe("FilePersistence", () => {
  it("file names keep safe characters, escape the rest and hash long names", () => {
    assert.strictEqual(FilePersistence.fileName("node_resource-2"), "node_resource-2")
    assert.strictEqual(FilePersistence.fileName("Counter"), "~43ounter")
    assert.strictEqual(FilePersistence.fileName("../a/b.c"), "~2e~2e~2fa~2fb~2ec")
    assert.strictEqual(FilePersistence.fileName("a~b ä"), "a~7eb~20~c3~a4")
    const long1 = FilePersistence.fileName("x".repeat(200) + "1")
    const long2 = FilePersistence.fileName("x".repeat(200) + "2")
    assert.strictEqual(long1.length, 100)
    assert.strictEqual(long2.length, 100)
    assert.notStrictEqual(long1, long2)
    assert.isTrue(long1.startsWith("x".repeat(34) + "~~"))
    assert.strictEqual(FilePersistence.fileName("y".repeat(100)), "y".repeat(100))
  })

  it.effect("one directory holds many states of two nodes, each in its own files", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      yield* withStore(directory, (a) => a.save("counter", record(1, "a")), { prefix: "node-a" })
      yield* withStore(directory, (b) => b.save("counter", record(2, "b")), { prefix: "node-b" })
      yield* withStore(directory, (b) => b.save("Other/State", record(3, "b2")), { prefix: "node-b" })
      assert.deepStrictEqual(yield* listing(directory), [
        "node-a.counter.snapshot",
        "node-b.counter.snapshot",
        "node-b.~4fther~2f~53tate.snapshot"
      ])
      assert.deepStrictEqual(yield* withStore(directory, (a) => a.load("counter"), { prefix: "node-a" }), record(1, "a"))
      assert.deepStrictEqual(yield* withStore(directory, (b) => b.load("counter"), { prefix: "node-b" }), record(2, "b"))
      assert.isUndefined(yield* withStore(directory, (a) => a.load("Other/State"), { prefix: "node-a" }))
    }).pipe(provideNode))

  it.effect("nodes saving concurrently into one directory never see each other's states or changes", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      // Four nodes (one without a prefix), three states each: snapshot-only, logged changes, an odd name.
      const prefixes = [undefined, "node-1", "node-2", "Node-2"] as const
      const states = ["counter", "tally", "a.b/../C d"] as const
      const valueOf = (node: number, state: number, age: number) => ({ node, state, age })
      const incarnationOf = (node: number) => 1_000 + node
      yield* Effect.scoped(Effect.gen(function*() {
        const stores = yield* Effect.forEach(prefixes, (prefix) => FilePersistence.make({ directory, prefix, compactEvery: 4 }))
        for (let age = 0; age <= 9; age++) {
          yield* Effect.forEach(stores, (store, node) =>
            Effect.forEach(states, (state, i) => {
              const saved = record(age, valueOf(node, i, age), incarnationOf(node))
              return i === 0 || age === 0
                ? store.save(state, saved)
                : store.save(state, saved, { generation: saved.generation, value: valueOf(node, i, age) })
            }, { concurrency: "unbounded", discard: true }), { concurrency: "unbounded", discard: true })
        }
      }))
      // Reopened, every node loads exactly its own last records: snapshot-only states at age 9, logged
      // ones as the snapshot of age 8 (the 4th change since age 4) and the change of age 9.
      for (const [node, prefix] of prefixes.entries()) {
        const loaded = yield* withStore(directory, (store) => Effect.forEach(states, (state) => store.load(state)), { prefix })
        assert.deepStrictEqual(loaded, [
          record(9, valueOf(node, 0, 9), incarnationOf(node)),
          ...[1, 2].map((i) => ({
            ...record(8, valueOf(node, i, 8), incarnationOf(node)),
            changes: [{ generation: { incarnation: incarnationOf(node), age: 9 }, value: valueOf(node, i, 9) }]
          }))
        ], `node ${node}`)
      }
      // 4 nodes x 3 states: one snapshot each, and a log for each logged state.
      assert.strictEqual((yield* listing(directory)).filter((name) => name.endsWith(".snapshot")).length, 12)
      assert.strictEqual((yield* listing(directory)).filter((name) => name.endsWith(".log")).length, 8)
      assert.isUndefined(yield* withStore(directory, (store) => store.load("counter"), { prefix: "node-3" }))
    }).pipe(provideNode))

  it.effect("compactEvery must be a positive integer: 1 is accepted, 0 and 1.5 fail the layer with InvalidOptions", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      for (const compactEvery of [0, 1.5, -1, Number.NaN]) {
        const expected = new DStateError.InvalidOptions({
          module: "FilePersistence",
          option: "compactEvery",
          value: compactEvery,
          reason: "must be a positive integer"
        })
        assert.deepStrictEqual(yield* Effect.flip(FilePersistence.make({ directory, compactEvery })), expected)
        assert.deepStrictEqual(yield* Effect.flip(Layer.build(FilePersistence.layerFile({ directory, compactEvery }))), expected)
      }
      // Nothing was created by the refused stores.
      assert.deepStrictEqual(yield* listing(directory), [])
      const loaded = yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("counter", record(1))
          yield* store.save("counter", record(2), change(2))
          return yield* store.load("counter")
        }), { compactEvery: 1 })
      assert.deepStrictEqual(loaded, record(2))
    }).pipe(provideNode))

  it.effect("changes are appended to the log, and every compactEvery-th change writes a snapshot", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const log = yield* pathOf(directory, "tally", "log")
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          assert.deepStrictEqual(yield* listing(directory), ["tally.snapshot"])
          yield* store.save("tally", record(1), change(1))
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(0), changes: [change(1)] })
          assert.strictEqual(yield* fileSize(log), logHeader + entryBytes(1))
          yield* store.save("tally", record(2), change(2))
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(0), changes: [change(1), change(2)] })
          // The third change since the snapshot: a snapshot, and the log is emptied.
          yield* store.save("tally", record(3), change(3))
          assert.deepStrictEqual(yield* store.load("tally"), record(3))
          assert.strictEqual(yield* fileSize(log), 0)
          yield* store.save("tally", record(4), change(4))
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(3), changes: [change(4)] })
          assert.strictEqual(yield* fileSize(log), logHeader + entryBytes(4))
          // A save without a change is a snapshot too.
          yield* store.save("tally", record(5))
          assert.deepStrictEqual(yield* store.load("tally"), record(5))
          assert.strictEqual(yield* fileSize(log), 0)
        }), { compactEvery: 3 })
      assert.deepStrictEqual(yield* listing(directory), ["tally.log", "tally.snapshot"])
    }).pipe(provideNode))

  it.effect("a restarted store loads the snapshot with its log, and its first save writes a snapshot", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          for (let age = 1; age <= 5; age++) yield* store.save("tally", record(age), change(age))
        }))
      const expected = { ...record(0), changes: [1, 2, 3, 4, 5].map((age) => change(age)) }
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(yield* store.load("tally"), expected)
          yield* store.save("tally", record(6), change(6))
          assert.deepStrictEqual(yield* store.load("tally"), record(6))
          yield* store.save("tally", record(7), change(7))
        }))
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), { ...record(6), changes: [change(7)] })
    }).pipe(provideNode))

  it.effect("a damaged snapshot fails the load with PersistenceFailed naming the damage", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const snapshot = yield* pathOf(directory, "counter", "snapshot")
      const cases: ReadonlyArray<readonly [string, (bytes: Uint8Array) => Uint8Array, string]> = [
        ["flipped payload byte", flipByte((n) => n - 5), "snapshot checksum mismatch"],
        ["flipped checksum byte", flipByte(() => 9), "snapshot checksum mismatch"],
        ["flipped length byte", flipByte(() => 7), "header says"],
        ["flipped magic byte", flipByte(() => 0), "not a dstate snapshot"],
        ["truncated payload", (bytes) => bytes.subarray(0, bytes.length - 10), "snapshot is truncated"],
        ["truncated header", (bytes) => bytes.subarray(0, 7), "snapshot is truncated: 7 bytes"],
        ["empty file", () => new Uint8Array(0), "snapshot is truncated: 0 bytes"],
        ["trailing bytes", (bytes) => new Uint8Array([...bytes, 1, 2, 3]), "longer than its header says"]
      ]
      for (const [label, f, reason] of cases) {
        yield* withStore(directory, (store) => store.save("counter", record(7, { value: 7, label })))
        yield* damage(snapshot, f)
        const error = yield* withStore(directory, (store) => loadFailure(store, "counter"))
        assert.strictEqual(error._tag, "PersistenceFailed", label)
        assert.strictEqual(error.operation, "load", label)
        assert.strictEqual(error.stateName, "counter", label)
        assert.isTrue(error.reason.startsWith(`${snapshot}: `), `${label}: ${error.reason}`)
        assert.include(error.reason, reason, label)
        // A damaged frame has no error underneath it.
        assert.isUndefined(error.cause, label)
      }
    }).pipe(provideNode))

  it.effect("a snapshot that passes its checksum but does not decode fails the load with the schema error as cause", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const snapshot = yield* pathOf(directory, "counter", "snapshot")
      yield* withStore(directory, (store) => store.save("counter", record(7)))
      // Same format, a payload that is JSON but not a record: magic, payload length, payload CRC32, payload.
      const payload = Buffer.from("{\"age\":\"seven\"}", "utf8")
      const header = Buffer.alloc(12)
      header.writeUInt32BE(0x64737331, 0)
      header.writeUInt32BE(payload.length, 4)
      header.writeUInt32BE(Zlib.crc32(payload) >>> 0, 8)
      yield* writeBytes(snapshot, Buffer.concat([header, payload]))
      const error = yield* withStore(directory, (store) => loadFailure(store, "counter"))
      assert.strictEqual(error.operation, "load")
      assert.include(error.reason, "snapshot passes its checksum but does not decode: ")
      assert.instanceOf(error.cause, Schema.SchemaError)
    }).pipe(provideNode))

  it.effect("a torn last log entry is dropped and the entries before it load", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const log = yield* pathOf(directory, "tally", "log")
      const writeLog = withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          for (let age = 1; age <= 3; age++) yield* store.save("tally", record(age), change(age))
        }))
      const twoEntries = logHeader + entryBytes(1) + entryBytes(2)
      const cases: ReadonlyArray<readonly [string, (bytes: Uint8Array) => Uint8Array]> = [
        ["payload cut short", (bytes) => bytes.subarray(0, bytes.length - 3)],
        ["header cut short", (bytes) => bytes.subarray(0, twoEntries + 5)],
        ["only the length of the last entry written", (bytes) => bytes.subarray(0, twoEntries + 4)],
        ["last payload byte wrong", flipByte((n) => n - 1)],
        ["last entry zeroed", (bytes) => new Uint8Array([...bytes.subarray(0, twoEntries), ...new Uint8Array(bytes.length - twoEntries)])]
      ]
      for (const [label, f] of cases) {
        yield* writeLog
        assert.strictEqual(yield* fileSize(log), twoEntries + entryBytes(3), label)
        yield* damage(log, f)
        const loaded = yield* withStore(directory, (store) => store.load("tally"))
        assert.deepStrictEqual(loaded, { ...record(0), changes: [change(1), change(2)] }, label)
      }
      // Zeros after the last complete entry (a file extended by a crash) are a torn tail as well.
      yield* writeLog
      yield* damage(log, (bytes) => new Uint8Array([...bytes, ...new Uint8Array(40)]))
      assert.deepStrictEqual(
        yield* withStore(directory, (store) => store.load("tally")),
        { ...record(0), changes: [change(1), change(2), change(3)] }
      )
      // A log with a torn header only.
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          yield* store.save("tally", record(1), change(1))
        }))
      yield* damage(log, (bytes) => bytes.subarray(0, 2))
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), record(0))
    }).pipe(provideNode))

  it.effect("a damaged entry in the middle of the log fails the load", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const log = yield* pathOf(directory, "tally", "log")
      const first = logHeader
      const second = logHeader + entryBytes(1)
      const cases: ReadonlyArray<readonly [string, (bytes: Uint8Array) => Uint8Array, string]> = [
        [
          "payload byte of entry 1",
          flipByte(() => first + 12 + 3),
          `change log entry 1 at byte ${first} fails its checksum and ${entryBytes(2) + entryBytes(3)} bytes follow it`
        ],
        [
          "payload byte of entry 2",
          flipByte(() => second + 20),
          `change log entry 2 at byte ${second} fails its checksum and ${entryBytes(3)} bytes follow it`
        ],
        ["length byte of entry 2", flipByte(() => second + 3), `change log entry 2 at byte ${second} has a corrupt header`],
        ["checksum byte of entry 1", flipByte(() => first + 5), `change log entry 1 at byte ${first} has a corrupt header`],
        ["log magic", flipByte(() => 1), "not a dstate change log (magic 0x64296c31)"]
      ]
      for (const [label, f, reason] of cases) {
        yield* withStore(directory, (store) =>
          Effect.gen(function*() {
            yield* store.save("tally", record(0))
            for (let age = 1; age <= 3; age++) yield* store.save("tally", record(age), change(age))
          }))
        yield* damage(log, f)
        const error = yield* withStore(directory, (store) => loadFailure(store, "tally"))
        assert.strictEqual(error.operation, "load", label)
        assert.strictEqual(error.reason, `${log}: ${reason}`, label)
      }
    }).pipe(provideNode))

  it.effect("log entries left by a crash during compaction are older than the snapshot and skipped", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const log = yield* pathOf(directory, "tally", "log")
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          yield* store.save("tally", record(1), change(1))
          yield* store.save("tally", record(2), change(2))
        }))
      const stale = yield* readBytes(log)
      yield* withStore(directory, (store) => store.save("tally", record(2)))
      // The crash came after the snapshot's rename, before the log was emptied.
      yield* writeBytes(log, stale)
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), record(2))
      // Same, with the log one entry ahead of the snapshot.
      yield* withStore(directory, (store) => store.save("tally", record(1)))
      yield* writeBytes(log, stale)
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), { ...record(1), changes: [change(2)] })
    }).pipe(provideNode))

  it.effect("a change log without its snapshot fails the load; a leftover temporary snapshot is ignored", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const snapshot = yield* pathOf(directory, "tally", "snapshot")
      const temp = yield* pathOf(directory, "tally", "snapshot.tmp")
      const fs = yield* FileSystem.FileSystem
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          yield* store.save("tally", record(1), change(1))
        }))
      yield* writeBytes(temp, new Uint8Array([1, 2, 3]))
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), { ...record(0), changes: [change(1)] })
      yield* withStore(directory, (store) => store.save("tally", record(5)))
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), record(5))
      assert.deepStrictEqual(yield* listing(directory), ["tally.snapshot"])
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(6), change(6))
          yield* store.save("tally", record(7), change(7))
        }))
      yield* fs.remove(snapshot)
      const error = yield* withStore(directory, (store) => loadFailure(store, "tally"))
      assert.include(error.reason, "a change log exists but its snapshot is missing")
    }).pipe(provideNode))

  it.effect("an interrupted save runs to its end: the interruption waits for it and the record is on disk", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const fs = yield* FileSystem.FileSystem
      const reached = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      // The fsync of the temporary snapshot waits for the test.
      const gated = replaceSync(fs, ".snapshot.tmp", (_, sync) =>
        Deferred.succeed(reached, undefined).pipe(Effect.andThen(Deferred.await(release)), Effect.andThen(sync)))
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* FilePersistence.make({ directory, journal: false }).pipe(Effect.provideService(FileSystem.FileSystem, gated))
        const saving = yield* Effect.forkChild(store.save("counter", record(1)))
        yield* Deferred.await(reached)
        const interrupting = yield* Effect.forkChild(Fiber.interrupt(saving))
        yield* Effect.yieldNow
        assert.isUndefined(interrupting.pollUnsafe(), "the interruption waits for the save")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(interrupting)
        // The caller sees the interruption; the save itself finished before it took effect.
        const exit = yield* Fiber.await(saving)
        assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))
      }))
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("counter")), record(1))
      assert.deepStrictEqual(yield* listing(directory), ["counter.snapshot"])
    }).pipe(provideNode))

  it.effect("a failed fsync fails the save and leaves the last acknowledged record; the next save writes a snapshot", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const fs = yield* FileSystem.FileSystem
      const log = yield* pathOf(directory, "tally", "log")
      const faults = { syncLog: false, rename: false }
      const faulty = FileSystem.FileSystem.of({
        ...replaceSync(fs, ".log", (path, sync) => Effect.suspend(() => faults.syncLog ? Effect.fail(denied("sync", path)) : sync)),
        rename: (from, to) => faults.rename ? Effect.fail(denied("rename", from)) : fs.rename(from, to)
      })
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* FilePersistence.make({ directory, journal: false }).pipe(Effect.provideService(FileSystem.FileSystem, faulty))
        yield* store.save("tally", record(0))
        yield* store.save("tally", record(1), change(1))
        faults.syncLog = true
        const error = yield* Effect.flip(store.save("tally", record(2), change(2)))
        assert.strictEqual(error.operation, "save")
        assert.strictEqual(error.stateName, "tally")
        assert.include(error.reason, "injected by the test")
        faults.syncLog = false
        // The owner retries generation 2 with another change: the store writes a snapshot.
        const retried = { ...record(2, { age: 2, retried: true }) }
        yield* store.save("tally", retried, change(2))
        assert.deepStrictEqual(yield* store.load("tally"), retried)
        assert.deepStrictEqual(yield* listing(directory), ["tally.snapshot"])
        yield* store.save("tally", record(3), change(3))
        faults.rename = true
        const renameError = yield* Effect.flip(store.save("tally", record(4)))
        assert.include(renameError.reason, "injected by the test")
        assert.deepStrictEqual(yield* store.load("tally"), { ...retried, changes: [change(3)] })
        faults.rename = false
        yield* store.save("tally", record(4), change(4))
        assert.deepStrictEqual(yield* store.load("tally"), record(4))
        assert.deepStrictEqual(yield* listing(directory), ["tally.snapshot"])
        yield* store.save("tally", record(5), change(5))
        assert.strictEqual(yield* fileSize(log), logHeader + entryBytes(5))
      }))
    }).pipe(provideNode))
})

// ---- end to end: the owner on a file store --------------------------------------------------

/** Captures log messages at warning level and above, with their annotations. */
const captureWarnings = () => {
  const messages: Array<string> = []
  const annotations: Array<Readonly<Record<string, unknown>>> = []
  const logger = Logger.make((options) => {
    if (options.logLevel === "Warn" || options.logLevel === "Error") {
      messages.push(Array.isArray(options.message) ? options.message.join(" ") : String(options.message))
      annotations.push(options.fiber.getRef(References.CurrentLogAnnotations))
    }
  })
  return { messages, annotations, layer: Logger.layer([logger]) }
}

const tallyBy = (label: string) => (state: TallyState) => ({ state: tallyNext(state, { add: 1, label }), change: { add: 1, label } })

describe("FilePersistence with a node", () => {
  const ownState = Effect.gen(function*() {
    const ledger = yield* StateRegistry.register(Ledger)
    const tally = yield* StateRegistry.register(Tally)
    const l = yield* ledger.local
    const t = yield* tally.local
    return {
      ledger: { generation: l.generation, value: yield* ledger.state },
      tally: { generation: t.generation, value: yield* tally.state }
    }
  })
  const mutateBoth = (times: number) =>
    Effect.gen(function*() {
      const ledger = yield* StateRegistry.register(Ledger)
      const tally = yield* StateRegistry.register(Tally)
      for (let i = 0; i < times; i++) {
        yield* ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))
        const t = yield* tally.state
        yield* tally.mutateWithDelta(tallyBy(`#${t.total + 1}`))
      }
    })

  it.effect("a restarted node gets its state and generation back, replaying the change log", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const persistence = FilePersistence.layerFile({ directory, compactEvery: 4 })
      yield* TestClock.setTime(1_000_000)
      const first = yield* onNode(persistence, ownState)
      assert.deepStrictEqual(first.ledger.generation, { incarnation: 1_000_000, age: 0 })
      yield* onNode(persistence, mutateBoth(6))
      yield* TestClock.adjust(60_000)
      const again = yield* onNode(persistence, ownState)
      assert.deepStrictEqual(again.ledger, { generation: { incarnation: 1_000_000, age: 6 }, value: { count: 6, pad: ledgerPad(6) } })
      assert.deepStrictEqual(again.tally.generation, { incarnation: 1_000_000, age: 6 })
      assert.deepStrictEqual(again.tally.value.labels, tallyLabels(6))
      assert.strictEqual(again.tally.value.total, 6)
      // The node's first save (age 1) is a snapshot; ages 2 to 4 are logged; with compactEvery 4
      // the 4th change since that snapshot (age 5) is a snapshot again; age 6 is logged.
      const tallyRecord = yield* withStore(directory, (store) => store.load(Tally.name))
      assert.deepStrictEqual(tallyRecord?.generation, { incarnation: 1_000_000, age: 5 })
      assert.deepStrictEqual(tallyRecord?.changes?.map((c) => c.generation.age), [6])
    }).pipe(provideNode))

  it.effect("three nodes running at once on one directory each get their own states back", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const nodes = ["node-a", "node-b", "node-c"] as const
      const persistenceOf = (node: string) => FilePersistence.layerFile({ directory, prefix: node, compactEvery: 3 })
      yield* TestClock.setTime(7_000_000)
      // Node i mutates both states 2 + 3i times, all three concurrently.
      yield* Effect.forEach(nodes, (node, i) => onNode(persistenceOf(node), mutateBoth(2 + 3 * i), node), {
        concurrency: "unbounded",
        discard: true
      })
      yield* TestClock.adjust(1_000)
      const after = yield* Effect.forEach(nodes, (node) => onNode(persistenceOf(node), ownState, node), { concurrency: "unbounded" })
      assert.deepStrictEqual(after.map((own) => [own.ledger, own.tally.generation, own.tally.value.labels]), [2, 5, 8].map((n) => [
        { generation: { incarnation: 7_000_000, age: n }, value: { count: n, pad: ledgerPad(n) } },
        { incarnation: 7_000_000, age: n },
        tallyLabels(n)
      ]))
    }).pipe(provideNode))

  it.effect("a corrupted snapshot is logged and the node starts fresh with a newer incarnation", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const persistence = FilePersistence.layerFile({ directory, journal: false })
      yield* TestClock.setTime(2_000_000)
      yield* onNode(persistence, mutateBoth(3))
      yield* damage(yield* pathOf(directory, Ledger.name, "snapshot"), flipByte((n) => n - 100))
      yield* damage(yield* pathOf(directory, Tally.name, "log"), (bytes) => bytes.subarray(0, bytes.length - 1))
      yield* TestClock.adjust(5_000)
      const warnings = captureWarnings()
      const after = yield* onNode(persistence, ownState).pipe(Effect.provide(warnings.layer))
      // The ledger's snapshot is corrupt: new incarnation, initial state.
      assert.deepStrictEqual(after.ledger, { generation: { incarnation: 2_005_000, age: 0 }, value: { count: 0, pad: ledgerPad(0) } })
      // The tally's log lost its unacknowledged-looking tail: the last change is gone, the rest replays.
      assert.deepStrictEqual(after.tally.generation, { incarnation: 2_000_000, age: 2 })
      assert.deepStrictEqual(after.tally.value.labels, tallyLabels(2))
      assert.deepStrictEqual(warnings.messages, [
        "could not load the persisted state; starting fresh with a new incarnation",
        "dropped a torn entry at the end of the change log (a crash during an append)"
      ])
      // The fresh state is persisted: mutations go on and survive the next restart.
      yield* onNode(persistence, mutateBoth(1))
      const last = yield* onNode(persistence, ownState)
      assert.deepStrictEqual(last.ledger.generation, { incarnation: 2_005_000, age: 1 })
      assert.deepStrictEqual(last.tally.generation, { incarnation: 2_000_000, age: 3 })
      assert.deepStrictEqual(last.tally.value.labels, tallyLabels(3))
    }).pipe(provideNode))

  it.effect("every kind of damage fails the load with a logged, typed error; only that state starts fresh", () =>
    Effect.gen(function*() {
      // With compactEvery 8, the node's startup save of the tally (age 0) is a snapshot and ages 1 to 4
      // are logged: the log holds four entries, the first of which starts right after the log header.
      const middleEntryPayload = logHeader + 12 + 3
      interface Case {
        readonly label: string
        readonly state: string
        readonly file: "snapshot" | "log"
        readonly damage: (bytes: Uint8Array) => Uint8Array
        /** What the load failure names; `undefined`: not corruption (a torn tail, dropped). */
        readonly reason: string | undefined
      }
      const cases: ReadonlyArray<Case> = [
        {
          label: "a flipped byte in a snapshot",
          state: Ledger.name,
          file: "snapshot",
          damage: flipByte((n) => n - 100),
          reason: "snapshot checksum mismatch"
        },
        {
          label: "a truncated snapshot",
          state: Ledger.name,
          file: "snapshot",
          damage: (bytes) => bytes.subarray(0, bytes.length >> 1),
          reason: "snapshot is truncated"
        },
        {
          label: "an empty snapshot",
          state: Tally.name,
          file: "snapshot",
          damage: () => new Uint8Array(0),
          reason: "snapshot is truncated: 0 bytes"
        },
        {
          label: "a flipped byte in the middle of a change log",
          state: Tally.name,
          file: "log",
          damage: flipByte(() => middleEntryPayload),
          reason: "fails its checksum"
        },
        // What a crash during the first append leaves: the torn entry is dropped and the snapshot loads.
        {
          label: "a change log cut inside its first entry's header",
          state: Tally.name,
          file: "log",
          damage: (bytes) => bytes.subarray(0, logHeader + 5),
          reason: undefined
        }
      ]
      let clock = 10_000_000
      for (const { damage: f, file: kind, label, reason, state: damaged } of cases) {
        const directory = yield* tempDir
        const persistence = FilePersistence.layerFile({ directory, compactEvery: 8, journal: false })
        yield* TestClock.setTime(clock)
        yield* onNode(persistence, mutateBoth(4))
        const file = yield* pathOf(directory, damaged, kind)
        yield* damage(file, f)
        clock += 60_000
        yield* TestClock.setTime(clock)
        const warnings = captureWarnings()
        const after = yield* onNode(persistence, ownState).pipe(Effect.provide(warnings.layer))
        if (reason === undefined) {
          assert.deepStrictEqual(warnings.messages, [
            "dropped a torn entry at the end of the change log (a crash during an append)"
          ], label)
          assert.deepStrictEqual(after.tally.generation, { incarnation: clock - 60_000, age: 0 }, label)
          assert.deepStrictEqual(after.tally.value.labels, [], label)
          assert.deepStrictEqual(after.ledger.generation, { incarnation: clock - 60_000, age: 4 }, label)
          continue
        }
        assert.deepStrictEqual(warnings.messages, ["could not load the persisted state; starting fresh with a new incarnation"], label)
        const error = String(warnings.annotations[0]?.error)
        assert.isTrue(error.startsWith(`load of state "${damaged}" failed: ${file}: `), `${label}: ${error}`)
        assert.include(error, reason, label)
        const fresh = { incarnation: clock, age: 0 }
        const kept = { incarnation: clock - 60_000, age: 4 }
        if (damaged === Ledger.name) {
          assert.deepStrictEqual(after.ledger, { generation: fresh, value: { count: 0, pad: ledgerPad(0) } }, label)
          assert.deepStrictEqual(after.tally.generation, kept, label)
          assert.deepStrictEqual(after.tally.value.labels, tallyLabels(4), label)
        } else {
          assert.deepStrictEqual(after.tally.generation, fresh, label)
          assert.deepStrictEqual(after.tally.value.labels, [], label)
          assert.deepStrictEqual(after.ledger, { generation: kept, value: { count: 4, pad: ledgerPad(4) } }, label)
        }
        // The fresh state was saved over the damaged files: the next start loads it without a warning.
        yield* onNode(persistence, mutateBoth(1))
        const again = captureWarnings()
        const last = yield* onNode(persistence, ownState).pipe(Effect.provide(again.layer))
        assert.deepStrictEqual(again.messages, [], label)
        assert.deepStrictEqual(
          damaged === Ledger.name ? last.ledger.generation : last.tally.generation,
          { incarnation: clock, age: 1 },
          label
        )
        clock += 60_000
      }
    }).pipe(provideNode))
})

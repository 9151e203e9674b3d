/**
 * The file store's node journal: saves of all states share one write and
 * fsync per batch, a failed batch fails every save it covered, the journal
 * is compacted into the per-state snapshots past `journalBytes`, folded into
 * them at startup (a torn tail dropped, damage before the tail refused), and
 * its options are checked at their edges.
 */
import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, FileSystem, Layer, Path, PlatformError, Schema } from "effect"
import { DistributedState, DStateError, StatePersistence, StateRegistry } from "dstate"
import { FilePersistence } from "dstate/node"
import { eventually } from "./support/Eventually.ts"
import { Ledger, ledgerPad, onNode, Tally, tallyNext, type TallyState } from "./fixtures/persistenceNode.ts"

type StoredState = StatePersistence.StoredState
type StoredChange = StatePersistence.StoredChange
type Store = StatePersistence.StatePersistence["Service"]

const NodeLayers = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)
const provideNode = Effect.provide(NodeLayers)

const inc = 1_717_171_717_171

const record = (age: number, value: StoredState["value"] = { age }): StoredState => ({
  generation: { incarnation: inc, age },
  storageVersion: 1,
  value,
  createdAt: 1_000,
  modifiedAt: 1_000 + age
})

const change = (age: number): StoredChange => ({ generation: { incarnation: inc, age }, value: { add: 1, label: `#${age}` } })

/** Bytes of the journal entry of `saved` (entry header, kind, name length, name, JSON). */
const recordEntryBytes = (name: string, saved: StoredState) =>
  12 + 5 + Buffer.byteLength(name, "utf8") + Buffer.byteLength(JSON.stringify(saved), "utf8")
const journalHeader = 4

const tempDir = Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.makeTempDirectoryScoped({ prefix: "dstate-journal-test-" }))

const withStore = <A, E, R>(
  directory: string,
  f: (store: Store) => Effect.Effect<A, E, R>,
  options?: Omit<FilePersistence.Options, "directory">
) => Effect.scoped(Effect.flatMap(FilePersistence.make({ directory, ...options }), f))

const listing = (directory: string) =>
  Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.readDirectory(directory)).pipe(Effect.map((names) => names.sort()))

const fileSize = (file: string) =>
  Effect.flatMap(Effect.service(FileSystem.FileSystem), (fs) => fs.stat(file)).pipe(Effect.map((info) => Number(info.size)))

const damage = (file: string, f: (bytes: Uint8Array) => Uint8Array) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const bytes = yield* fs.readFile(file)
    yield* fs.writeFile(file, f(new Uint8Array(bytes)))
  })

/** The record in a state's snapshot file (its 12-byte header skipped). */
const snapshotAt = (directory: string, name: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const bytes = yield* fs.readFile(path.join(directory, `${FilePersistence.fileName(name)}.snapshot`))
    return JSON.parse(Buffer.from(bytes).subarray(12).toString("utf8")) as StoredState
  })

const journalOf = (directory: string) => Effect.map(Effect.service(Path.Path), (path) => path.join(directory, "node.journal"))

const denied = (path: string) =>
  PlatformError.systemError({
    _tag: "PermissionDenied",
    module: "FileSystem",
    method: "sync",
    pathOrDescriptor: path,
    description: "injected by the test"
  })

/** `fs` whose journal file's `sync` runs `sync(its own sync)`. */
const journalSync = (
  fs: FileSystem.FileSystem,
  sync: (original: Effect.Effect<void, PlatformError.PlatformError>, path: string) => Effect.Effect<void, PlatformError.PlatformError>
) =>
  FileSystem.FileSystem.of({
    ...fs,
    open: (path, options) =>
      Effect.map(fs.open(path, options), (file) =>
        path.endsWith(".journal")
          ? new Proxy(file, {
            get: (target, key) => {
              if (key === "sync") return sync(target.sync, path)
              const value = Reflect.get(target, key, target)
              return typeof value === "function" ? value.bind(target) : value
            }
          })
          : file)
  })

/** Switches of a journal whose fsyncs can be held (the next one after `arm`) and made to fail. */
interface Switches {
  fail: boolean
  /** Journal fsyncs (counted from 1) that fail. */
  failAt: ReadonlySet<number>
  syncs: number
  armed: { readonly reached: Deferred.Deferred<void>; readonly release: Deferred.Deferred<void> } | undefined
}

const switches = (): Switches => ({ fail: false, failAt: new Set(), syncs: 0, armed: undefined })

/** Holds the next journal fsync: returns an effect that waits until it is reached, and one that releases it. */
const arm = (sw: Switches) =>
  Effect.gen(function*() {
    const armed = { reached: yield* Deferred.make<void>(), release: yield* Deferred.make<void>() }
    sw.armed = armed
    return { reached: Deferred.await(armed.reached), release: Deferred.succeed(armed.release, undefined) }
  })

const switched = (fs: FileSystem.FileSystem, sw: Switches) =>
  journalSync(fs, (sync, path) =>
    Effect.suspend(() => {
      const n = ++sw.syncs
      const run = Effect.suspend(() => sw.fail || sw.failAt.has(n) ? Effect.fail(denied(path)) : sync)
      const armed = sw.armed
      if (armed === undefined) return run
      sw.armed = undefined
      return Deferred.succeed(armed.reached, undefined).pipe(Effect.andThen(Deferred.await(armed.release)), Effect.andThen(run))
    }))

const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

describe("FilePersistence journal", () => {
  it.effect("maxBatchSaves and journalBytes must be positive integers and journal a boolean: InvalidOptions", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      for (const option of ["maxBatchSaves", "journalBytes"] as const) {
        for (const value of [0, 1.5, -1, Number.NaN]) {
          const expected = new DStateError.InvalidOptions({
            module: "FilePersistence",
            option,
            value,
            reason: "must be a positive integer"
          })
          assert.deepStrictEqual(yield* Effect.flip(FilePersistence.make({ directory, [option]: value })), expected)
          assert.deepStrictEqual(yield* Effect.flip(Layer.build(FilePersistence.layerFile({ directory, [option]: value }))), expected)
        }
      }
      const notBoolean = "yes" as unknown as boolean
      assert.deepStrictEqual(
        yield* Effect.flip(FilePersistence.make({ directory, journal: notBoolean })),
        new DStateError.InvalidOptions({ module: "FilePersistence", option: "journal", value: "yes", reason: "must be a boolean" })
      )
      assert.deepStrictEqual(yield* listing(directory), [])
      // 1 is the edge that is accepted for both.
      const loaded = yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("counter", record(1))
          return yield* store.load("counter")
        }), { maxBatchSaves: 1, journalBytes: 1 })
      assert.deepStrictEqual(loaded, record(1))
    }).pipe(provideNode))

  it.effect("saves of different states waiting together share one write and fsync, at most maxBatchSaves each", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      for (const [maxBatchSaves, batches] of [[undefined, 1], [4, 3], [1, 10]] as const) {
        const directory = yield* tempDir
        const sw = switches()
        yield* Effect.scoped(Effect.gen(function*() {
          const store = yield* FilePersistence.make({ directory, maxBatchSaves }).pipe(
            Effect.provideService(FileSystem.FileSystem, switched(fs, sw))
          )
          // Opens the journal (its header is written and fsynced once).
          assert.isUndefined(yield* store.load("first"))
          assert.strictEqual(sw.syncs, 1)
          const held = yield* arm(sw)
          const first = yield* Effect.forkChild(store.save("first", record(1)))
          yield* held.reached
          // Ten saves of ten states arrive while the first is written: they wait, and go in batches.
          const rest = yield* Effect.forEach(
            Array.from({ length: 10 }, (_, i) => i),
            (i) => Effect.forkChild(store.save(`state-${i}`, record(i + 1)))
          )
          yield* settle
          assert.strictEqual(sw.syncs, 2, "nothing else is written while the first fsync runs")
          yield* held.release
          yield* Fiber.join(first)
          yield* Effect.forEach(rest, Fiber.join, { discard: true })
          assert.strictEqual(sw.syncs, 2 + batches, `maxBatchSaves ${maxBatchSaves}`)
          for (let i = 0; i < 10; i++) assert.deepStrictEqual(yield* store.load(`state-${i}`), record(i + 1))
        }))
        // What was acknowledged is there after a restart.
        const loaded = yield* withStore(directory, (store) => Effect.forEach(Array.from({ length: 10 }, (_, i) => `state-${i}`), store.load))
        assert.deepStrictEqual(loaded, Array.from({ length: 10 }, (_, i) => record(i + 1)))
      }
    }).pipe(provideNode))

  it.effect("a failed batch fails every save it covered; the journal goes back to its durable end", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const directory = yield* tempDir
      const journal = yield* journalOf(directory)
      const sw = switches()
      yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* FilePersistence.make({ directory, compactEvery: 4 }).pipe(
          Effect.provideService(FileSystem.FileSystem, switched(fs, sw))
        )
        yield* store.save("a", record(1))
        yield* store.save("b", record(1))
        yield* store.save("c", record(0))
        yield* store.save("c", record(1), change(1))
        // Three states' saves in one batch (behind a fourth state's save), whose fsync fails.
        const held = yield* arm(sw)
        const blocker = yield* Effect.forkChild(store.save("z", record(1)))
        yield* held.reached
        const batch = yield* Effect.forEach(
          [store.save("a", record(2)), store.save("b", record(2)), store.save("c", record(2), change(2))],
          (save) => Effect.forkChild(Effect.flip(save))
        )
        yield* settle
        sw.failAt = new Set([sw.syncs + 1])
        yield* held.release
        yield* Fiber.join(blocker)
        const errors = yield* Effect.forEach(batch, Fiber.join)
        assert.deepStrictEqual(errors.map((e) => [e._tag, e.stateName, e.operation]), [
          ["PersistenceFailed", "a", "save"],
          ["PersistenceFailed", "b", "save"],
          ["PersistenceFailed", "c", "save"]
        ])
        for (const error of errors) assert.strictEqual((error.cause as PlatformError.PlatformError).reason._tag, "PermissionDenied")
        assert.deepStrictEqual(yield* store.load("a"), record(1))
        assert.deepStrictEqual(yield* store.load("c"), record(1))
        // What is durable: a, b, c (a record and a change) and z; nothing of the failed batch.
        const durable = journalHeader + recordEntryBytes("a", record(1)) + recordEntryBytes("b", record(1)) +
          recordEntryBytes("c", record(0)) + 12 + 5 + 1 + Buffer.byteLength(JSON.stringify(change(1))) +
          recordEntryBytes("z", record(1))
        // The next batch first cuts what the failed one left, then writes: c's next save is a full record.
        yield* store.save("c", record(2, { retried: true }), change(2))
        assert.deepStrictEqual(yield* store.load("c"), record(2, { retried: true }))
        assert.strictEqual(yield* fileSize(journal), durable + recordEntryBytes("c", record(2, { retried: true })))
      }))
      const loaded = yield* withStore(directory, (store) => Effect.forEach(["a", "b", "c", "z"], store.load))
      assert.deepStrictEqual(loaded, [record(1), record(1), record(2, { retried: true }), record(1)])
    }).pipe(provideNode))

  it.live("past journalBytes (not at it) the journal is compacted into the states' snapshots", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const journal = yield* journalOf(directory)
      const limit = journalHeader + recordEntryBytes("a", record(1)) + recordEntryBytes("b", record(1))
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("a", record(1))
          yield* store.save("b", record(1))
          // Exactly at the limit: nothing is compacted.
          assert.strictEqual(yield* fileSize(journal), limit)
          assert.deepStrictEqual(yield* listing(directory), ["node.journal"])
          yield* store.save("a", record(2))
          // Past it: after acknowledging the batch, the writer writes both states' newest records as
          // snapshots and empties the journal.
          yield* eventually(Effect.map(fileSize(journal), (size) => size === journalHeader), {
            timeout: "10 seconds",
            what: "the compaction"
          })
          assert.deepStrictEqual(yield* listing(directory), ["a.snapshot", "b.snapshot", "node.journal"])
          assert.deepStrictEqual(yield* Effect.forEach(["a", "b"], (name) => snapshotAt(directory, name)), [record(2), record(1)])
          // Changes after a compaction continue from the snapshot.
          yield* store.save("a", record(3), change(3))
          assert.deepStrictEqual(yield* store.load("a"), record(3))
        }), { journalBytes: limit })
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("a"), { journal: false }), {
        ...record(2),
        changes: [change(3)]
      })
    }).pipe(provideNode))

  it.effect("a save on a closed store fails with PersistenceFailed", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const store = yield* withStore(directory, (store) => Effect.as(store.save("a", record(1)), store))
      const error = yield* Effect.flip(store.save("a", record(2)))
      assert.deepStrictEqual([error._tag, error.stateName, error.operation, error.reason], [
        "PersistenceFailed",
        "a",
        "save",
        "the store is closed"
      ])
      assert.deepStrictEqual(yield* withStore(directory, (other) => other.load("a")), record(1))
    }).pipe(provideNode))

  it.effect("a restart folds the journal into the states' files; with the journal off the journal is removed", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("counter", record(5))
          yield* store.save("tally", record(0))
          for (let age = 1; age <= 3; age++) yield* store.save("tally", record(age), change(age))
        }))
      assert.deepStrictEqual(yield* listing(directory), ["node.journal"])
      const loaded = yield* withStore(directory, (store) => Effect.forEach(["counter", "tally"], store.load), { journal: false })
      assert.deepStrictEqual(loaded, [record(5), { ...record(0), changes: [change(1), change(2), change(3)] }])
      assert.deepStrictEqual(yield* listing(directory), ["counter.snapshot", "tally.log", "tally.snapshot"])
      // Per-state files written with the journal off load with it on, and its saves go on from them.
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(0), changes: [change(1), change(2), change(3)] })
          yield* store.save("tally", record(4), change(4))
        }))
      assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), record(4))
    }).pipe(provideNode))

  it.effect("a torn journal tail is dropped on restart; damage before the tail fails loads and saves", () =>
    Effect.gen(function*() {
      const directory = yield* tempDir
      const journal = yield* journalOf(directory)
      const write = withStore(directory, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          yield* store.save("tally", record(1), change(1))
          yield* store.save("tally", record(2), change(2))
        }))
      const twoEntries = journalHeader + recordEntryBytes("tally", record(0)) + 12 + 5 + 5 +
        Buffer.byteLength(JSON.stringify(change(1)))
      const cases: ReadonlyArray<readonly [string, (bytes: Uint8Array) => Uint8Array]> = [
        ["payload cut short", (bytes) => bytes.subarray(0, bytes.length - 3)],
        ["header cut short", (bytes) => bytes.subarray(0, twoEntries + 5)],
        ["last payload byte wrong", (bytes) => {
          const out = new Uint8Array(bytes)
          out[out.length - 1] ^= 0x5a
          return out
        }],
        ["last entry zeroed", (bytes) => new Uint8Array([...bytes.subarray(0, twoEntries), ...new Uint8Array(bytes.length - twoEntries)])]
      ]
      for (const [label, f] of cases) {
        yield* write
        yield* damage(journal, f)
        assert.deepStrictEqual(yield* withStore(directory, (store) => store.load("tally")), { ...record(0), changes: [change(1)] }, label)
        // Folded: the per-state files hold it, the journal is empty.
        assert.strictEqual(yield* fileSize(journal), journalHeader, label)
        yield* withStore(directory, (store) => store.save("tally", record(0)))
      }
      // A damaged entry with entries after it is not a torn tail.
      yield* write
      yield* damage(journal, (bytes) => {
        const out = new Uint8Array(bytes)
        out[journalHeader + 20] ^= 0x5a
        return out
      })
      yield* withStore(directory, (store) =>
        Effect.gen(function*() {
          const loadError = yield* Effect.flip(store.load("tally"))
          assert.strictEqual(loadError.operation, "load")
          assert.strictEqual(loadError.stateName, "tally")
          assert.strictEqual(
            loadError.reason,
            `${journal}: journal entry 1 at byte ${journalHeader} fails its checksum and ${
              twoEntries - journalHeader - recordEntryBytes("tally", record(0)) + 12 + 5 + 5 + Buffer.byteLength(JSON.stringify(change(2)))
            } bytes follow it`
          )
          const saveError = yield* Effect.flip(store.save("other", record(1)))
          assert.strictEqual(saveError.operation, "save")
          assert.strictEqual(saveError.reason, loadError.reason)
        }))
    }).pipe(provideNode))
})

// ---- with a node ------------------------------------------------------------------------------

const Blocker = DistributedState.make({
  name: "journal/blocker",
  schema: Schema.Struct({ n: Schema.Int }),
  initial: () => ({ n: 0 })
})

const tallyBy = (label: string) => (state: TallyState) => ({ state: tallyNext(state, { add: 1, label }), change: { add: 1, label } })

describe("FilePersistence journal with a node", () => {
  it.effect("a failed batch fails the mutations of every state it covered; none is visible, and the next ones commit", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const directory = yield* tempDir
      const sw = switches()
      const persistence = FilePersistence.layerFileSystem({ directory }).pipe(
        Layer.provide(Layer.mergeAll(Layer.succeed(FileSystem.FileSystem, switched(fs, sw)), NodePath.layer))
      )
      yield* onNode(persistence, Effect.gen(function*() {
        const ledger = yield* StateRegistry.register(Ledger)
        const tally = yield* StateRegistry.register(Tally)
        yield* ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))
        yield* tally.mutateWithDelta(tallyBy("#1"))
        const blocker = yield* StateRegistry.register(Blocker)
        // Both states' next mutations land in one batch (behind a third state's save), whose fsync fails.
        const held = yield* arm(sw)
        const other = yield* Effect.forkChild(blocker.mutate((s) => ({ n: s.n + 1 })))
        yield* held.reached
        const l = yield* Effect.forkChild(Effect.flip(ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))))
        const t = yield* Effect.forkChild(Effect.flip(tally.mutateWithDelta(tallyBy("#2"))))
        yield* settle
        sw.fail = true
        yield* held.release
        const errors = [yield* Effect.flip(Fiber.join(other)), yield* Fiber.join(l), yield* Fiber.join(t)]
        assert.deepStrictEqual(errors.map((e) => e._tag), ["PersistenceFailed", "PersistenceFailed", "PersistenceFailed"])
        assert.deepStrictEqual(errors.map((e) => "stateName" in e ? e.stateName : undefined), [Blocker.name, Ledger.name, Tally.name])
        // Nothing of them is visible: both states are at their last durable generation.
        assert.strictEqual((yield* ledger.local).generation.age, 1)
        assert.strictEqual((yield* tally.local).generation.age, 1)
        assert.deepStrictEqual(yield* ledger.state, { count: 1, pad: ledgerPad(1) })
        assert.strictEqual((yield* tally.state).total, 1)
        sw.fail = false
        yield* ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))
        yield* tally.mutateWithDelta(tallyBy("#2"))
        assert.strictEqual((yield* ledger.local).generation.age, 2)
        assert.strictEqual((yield* tally.local).generation.age, 2)
      }))
      const restarted = yield* onNode(FilePersistence.layerFile({ directory }), Effect.gen(function*() {
        const ledger = yield* StateRegistry.register(Ledger)
        const tally = yield* StateRegistry.register(Tally)
        return [(yield* ledger.local).generation.age, yield* ledger.state, (yield* tally.local).generation.age, (yield* tally.state).labels] as const
      }))
      assert.deepStrictEqual(restarted, [2, { count: 2, pad: ledgerPad(2) }, 2, ["#1", "#2"]])
    }).pipe(provideNode))
})

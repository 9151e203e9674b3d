import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, FileSystem, Layer, PlatformError, Redacted, Result } from "effect"
import { KeyValueStore } from "effect/persistence"
import { TestClock } from "effect/testing"
import * as Zlib from "node:zlib"
import { KeyValuePersistence, StatePersistence, StateRegistry } from "dstate"
import { suite } from "./conformance/PersistenceSuite.ts"
import { Ledger, ledgerPad, onNode } from "./fixtures/persistenceNode.ts"

type StoredState = StatePersistence.StoredState

const NodeLayers = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)

const kvError = (method: string, key?: string) =>
  new KeyValueStore.KeyValueStoreError({ method, message: `${method} refused by the test`, ...(key === undefined ? {} : { key }) })

/** A key-value store that refuses everything. */
const failingKeyValueStore = Layer.succeed(
  KeyValueStore.KeyValueStore,
  KeyValueStore.makeStringOnly({
    get: (key) => Effect.fail(kvError("get", key)),
    set: (key) => Effect.fail(kvError("set", key)),
    remove: (key) => Effect.fail(kvError("remove", key)),
    clear: Effect.fail(kvError("clear")),
    size: Effect.fail(kvError("size")),
    keys: Effect.fail(kvError("keys"))
  })
)

/** `KeyValueStore.layerFileSystem` in a fresh temporary directory, removed when the layer closes. */
const fileSystemKeyValueStore = Layer.unwrap(Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-kv-" })
  return KeyValueStore.layerFileSystem(directory)
})).pipe(Layer.provide(NodeLayers))

suite("key-value store (memory)", KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(KeyValueStore.layerMemory)), {
  failing: KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(failingKeyValueStore)),
  failingCause: "KeyValueStoreError"
})
suite(
  "key-value store (memory, prefixed)",
  KeyValuePersistence.layerKeyValueStoreWithPrefix("node-1/").pipe(Layer.provide(KeyValueStore.layerMemory)),
  {
    failing: KeyValuePersistence.layerKeyValueStoreWithPrefix("node-1/").pipe(Layer.provide(failingKeyValueStore)),
    failingCause: "KeyValueStoreError"
  }
)
/** `KeyValueStore.layerFileSystem` on a file system that refuses to read or write any file. */
const failingFileSystemKeyValueStore = Layer.unwrap(Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-kv-failing-" })
  const denied = (method: string, path: string) =>
    PlatformError.systemError({ _tag: "PermissionDenied", module: "FileSystem", method, pathOrDescriptor: path })
  const broken = FileSystem.FileSystem.of({
    ...fs,
    readFileString: (path) => Effect.fail(denied("readFileString", path)),
    writeFileString: (path) => Effect.fail(denied("writeFileString", path))
  })
  return KeyValueStore.layerFileSystem(directory).pipe(Layer.provide(Layer.succeed(FileSystem.FileSystem, broken)))
})).pipe(Layer.provide(NodeLayers))

suite("key-value store (file system)", KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(fileSystemKeyValueStore)), {
  failing: KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(failingFileSystemKeyValueStore)),
  timeout: 60_000
})

/** The test database (trust auth); override with DSTATE_TEST_POSTGRES_URL. */
const postgresUrl = process.env.DSTATE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
let sqlTables = 0

/**
 * `KeyValueStore.layerSql` on PostgreSQL, on a table of its own that is dropped when the layer closes
 * (`broken`: dropped right after the store is made, so that every get and set fails).
 */
const sqlKeyValueStore = (broken: boolean) =>
  Layer.unwrap(Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const table = `dstate_kv_test_${process.pid}_${++sqlTables}`
    yield* Effect.addFinalizer(() => Effect.ignore(sql`DROP TABLE IF EXISTS ${sql(table)}`))
    const store = yield* Effect.service(KeyValueStore.KeyValueStore).pipe(Effect.provide(KeyValueStore.layerSql({ table })))
    if (broken) yield* sql`DROP TABLE ${sql(table)}`
    return Layer.succeed(KeyValueStore.KeyValueStore, store)
  })).pipe(Layer.provide(PgClient.layer({ url: Redacted.make(postgresUrl) })))

suite("key-value store (SQL on PostgreSQL)", KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(sqlKeyValueStore(false))), {
  failing: KeyValuePersistence.layerKeyValueStore.pipe(Layer.provide(sqlKeyValueStore(true))),
  timeout: 60_000
})

const record = (age: number, value: StoredState["value"] = { age }): StoredState => ({
  generation: { incarnation: 1_717_171_717_171, age },
  storageVersion: 1,
  value,
  createdAt: 1_000,
  modifiedAt: 1_000 + age
})

const crcHex = (text: string) => (Zlib.crc32(text) >>> 0).toString(16).padStart(8, "0")

describe("KeyValuePersistence", () => {
  it.effect("a record is stored as a checksummed header and its JSON under the state's name", () =>
    Effect.gen(function*() {
      const kv = yield* KeyValueStore.KeyValueStore
      const store = KeyValuePersistence.make(kv)
      yield* store.save("counter", record(2, { n: "ä" }))
      const json = "{\"generation\":{\"incarnation\":1717171717171,\"age\":2},\"storageVersion\":1,\"value\":{\"n\":\"ä\"}," +
        "\"createdAt\":1000,\"modifiedAt\":1002}"
      assert.strictEqual(yield* kv.get("counter"), `dstate/1 crc32=${crcHex(json)}\n${json}`)
      assert.deepStrictEqual(yield* kv.keys, ["counter"])
      // Logged changes are not kept: the whole record is the truth.
      yield* store.save("counter", record(3), { generation: record(3).generation, value: { add: 1 } })
      assert.deepStrictEqual(yield* store.load("counter"), record(3))
    }).pipe(Effect.provide(KeyValueStore.layerMemory)))

  it.effect("prefixes keep the records of nodes sharing one store apart", () =>
    Effect.gen(function*() {
      const kv = yield* KeyValueStore.KeyValueStore
      // Both layers take the one store of this test from the context.
      const withPrefix = (prefix: string) =>
        Effect.service(StatePersistence.StatePersistence).pipe(
          Effect.provide(KeyValuePersistence.layerKeyValueStoreWithPrefix(prefix))
        )
      const a = yield* withPrefix("a:")
      const b = yield* withPrefix("b:")
      yield* a.save("counter", record(1, "a"))
      yield* b.save("counter", record(2, "b"))
      assert.deepStrictEqual(yield* a.load("counter"), record(1, "a"))
      assert.deepStrictEqual(yield* b.load("counter"), record(2, "b"))
      assert.deepStrictEqual([...(yield* kv.keys)].sort(), ["a:counter", "b:counter"])
    }).pipe(Effect.provide(KeyValueStore.layerMemory)))

  it.effect("a damaged value fails the load with PersistenceFailed naming the damage", () =>
    Effect.gen(function*() {
      const kv = yield* KeyValueStore.KeyValueStore
      const store = KeyValuePersistence.make(kv)
      yield* store.save("counter", record(4))
      const good = (yield* kv.get("counter"))!
      const header = good.slice(0, good.indexOf("\n") + 1)
      const json = good.slice(header.length)
      const cases: ReadonlyArray<readonly [string, string, string]> = [
        ["a changed digit", header + json.replace("\"age\":4", "\"age\":5"), "checksum mismatch: stored"],
        ["cut short", good.slice(0, good.length - 2), "checksum mismatch: stored"],
        ["no header", json, "not a dstate record (bad header)"],
        ["cut in the header", good.slice(0, 10), "not a dstate record (bad header)"],
        ["empty", "", "not a dstate record (bad header)"],
        [
          "valid checksum, not a record",
          `dstate/1 crc32=${crcHex("{\"n\":1}")}\n{"n":1}`,
          "record passes its checksum but does not decode"
        ]
      ]
      for (const [label, text, reason] of cases) {
        yield* kv.set("counter", text)
        const error = yield* Effect.flip(store.load("counter"))
        assert.strictEqual(error._tag, "PersistenceFailed", label)
        assert.strictEqual(error.operation, "load", label)
        assert.strictEqual(error.stateName, "counter", label)
        assert.isTrue(error.reason.startsWith(reason), `${label}: ${error.reason}`)
        // Only a record that does not decode has an error underneath: the schema's.
        const cause = error.cause as { readonly _tag?: string } | undefined
        assert.strictEqual(cause?._tag, reason.startsWith("record passes") ? "SchemaError" : undefined, label)
      }
      assert.isTrue(Result.isSuccess(KeyValuePersistence.decode(good)))
    }).pipe(Effect.provide(KeyValueStore.layerMemory)))

  it.effect("a node whose record was damaged logs it and starts fresh with a newer incarnation", () =>
    Effect.gen(function*() {
      const kv = yield* KeyValueStore.KeyValueStore
      const persistence = KeyValuePersistence.layerKeyValueStore.pipe(
        Layer.provide(Layer.succeed(KeyValueStore.KeyValueStore, kv))
      )
      const mutate = Effect.gen(function*() {
        const ledger = yield* StateRegistry.register(Ledger)
        yield* ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))
        yield* ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))
      })
      const own = Effect.gen(function*() {
        const ledger = yield* StateRegistry.register(Ledger)
        return { generation: (yield* ledger.local).generation, count: (yield* ledger.state).count }
      })
      yield* TestClock.setTime(3_000_000)
      yield* onNode(persistence, mutate)
      assert.deepStrictEqual(yield* onNode(persistence, own), { generation: { incarnation: 3_000_000, age: 2 }, count: 2 })
      const text = (yield* kv.get(Ledger.name))!
      yield* kv.set(Ledger.name, text.replace("\"count\":2", "\"count\":9"))
      yield* TestClock.adjust(1_000)
      assert.deepStrictEqual(yield* onNode(persistence, own), { generation: { incarnation: 3_001_000, age: 0 }, count: 0 })
    }).pipe(Effect.provide(KeyValueStore.layerMemory)))
})

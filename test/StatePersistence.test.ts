/**
 * `StatePersistence`: the conformance suite against the memory stores, then
 * what only the test stores offer (fault switches, inspectable records that
 * survive a rebuild of the layer).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { StatePersistence } from "dstate"
import { InMemoryPersistence } from "dstate/testing"
import * as PersistenceSuite from "./conformance/PersistenceSuite.ts"

PersistenceSuite.suite("layerMemory", StatePersistence.layerMemory)

// One store shared by every test of the suite (the suite uses distinct state names).
PersistenceSuite.suite("InMemoryPersistence.layer", InMemoryPersistence.layer(InMemoryPersistence.makeStore()), {
  failing: InMemoryPersistence.layerFailing
})

const record = (value: StatePersistence.StoredState["value"], age = 1): StatePersistence.StoredState => ({
  generation: { incarnation: 1_000, age },
  storageVersion: 1,
  value,
  createdAt: 5_000,
  modifiedAt: 5_000 + age
})

const withStore = <A, E>(
  store: InMemoryPersistence.Store,
  body: (persistence: StatePersistence.StatePersistence["Service"]) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    return yield* body(yield* StatePersistence.StatePersistence)
  }).pipe(Effect.provide(InMemoryPersistence.layer(store)))

describe("StatePersistence.layerMemory", () => {
  it.effect("records live as long as the layer: a new build starts empty", () =>
    Effect.gen(function*() {
      const use = <A, E>(f: (p: StatePersistence.StatePersistence["Service"]) => Effect.Effect<A, E>) =>
        Effect.gen(function*() {
          return yield* f(yield* StatePersistence.StatePersistence)
        }).pipe(Effect.provide(StatePersistence.layerMemory))
      yield* use((p) => p.save("s", record({ n: 1 })))
      assert.isUndefined(yield* use((p) => p.load("s")))
    }))
})

describe("StatePersistence.makeMemory", () => {
  it.effect("keeps records as JSON text in the given map", () =>
    Effect.gen(function*() {
      const records = new Map<string, string>()
      const memory = StatePersistence.makeMemory(records)
      const saved = record({ n: 1, list: [1, 2] })
      yield* memory.save("s", saved)
      assert.deepStrictEqual([...records.keys()], ["s"])
      assert.deepStrictEqual(JSON.parse(records.get("s")!), saved)
      // Another service over the same map sees the record.
      assert.deepStrictEqual(yield* StatePersistence.makeMemory(records).load("s"), saved)
    }))

  it.effect("a corrupt record fails the load with PersistenceFailed and is left in place", () =>
    Effect.gen(function*() {
      const records = new Map<string, string>([
        ["not-json", "{\"generation\":"],
        ["wrong-shape", JSON.stringify({ ...record(1), generation: { incarnation: 1, age: -1 } })],
        ["missing-field", JSON.stringify({ ...record(1), storageVersion: undefined })]
      ])
      const memory = StatePersistence.makeMemory(records)
      for (const stateName of ["not-json", "wrong-shape", "missing-field"]) {
        const error = yield* Effect.flip(memory.load(stateName))
        assert.strictEqual(error._tag, "PersistenceFailed")
        assert.strictEqual(error.stateName, stateName)
        assert.strictEqual(error.operation, "load")
        assert.isTrue(error.reason.startsWith("corrupt record"), error.reason)
      }
      assert.strictEqual(records.size, 3)
      // Saving over a corrupt record repairs it.
      yield* memory.save("not-json", record(7))
      assert.deepStrictEqual(yield* memory.load("not-json"), record(7))
    }))

  it.effect("a record that cannot be encoded fails the save and stores nothing", () =>
    Effect.gen(function*() {
      const records = new Map<string, string>()
      const memory = StatePersistence.makeMemory(records)
      const error = yield* Effect.flip(memory.save("s", { ...record(1), generation: { incarnation: -1, age: 0.5 } }))
      assert.strictEqual(error._tag, "PersistenceFailed")
      assert.strictEqual(error.operation, "save")
      assert.isTrue(error.reason.startsWith("cannot encode"), error.reason)
      assert.strictEqual(records.size, 0)
    }))
})

describe("InMemoryPersistence", () => {
  it.effect("makeStore starts empty with both switches off", () =>
    Effect.sync(() => {
      const store = InMemoryPersistence.makeStore()
      assert.strictEqual(store.records.size, 0)
      assert.strictEqual(store.failSaves, false)
      assert.strictEqual(store.failLoads, false)
      assert.strictEqual(store.saves, 0)
    }))

  it.effect("records survive a rebuild of the layer over the same store (a node's restart)", () =>
    Effect.gen(function*() {
      const store = InMemoryPersistence.makeStore()
      yield* withStore(store, (p) => p.save("counter", record({ value: 3 }, 3)))
      const loaded = yield* withStore(store, (p) => p.load("counter"))
      assert.deepStrictEqual(loaded, record({ value: 3 }, 3))
      assert.deepStrictEqual(JSON.parse(store.records.get("counter")!), record({ value: 3 }, 3))
    }))

  it.effect("saves counts successful saves only", () =>
    Effect.gen(function*() {
      const store = InMemoryPersistence.makeStore()
      yield* withStore(store, (p) =>
        Effect.gen(function*() {
          yield* p.save("a", record(1))
          yield* p.save("a", record(2, 2))
          yield* p.save("b", record(3))
          assert.strictEqual(store.saves, 3)
          yield* Effect.flip(p.save("a", record(Number.NaN)))
          assert.strictEqual(store.saves, 3)
          store.failSaves = true
          yield* Effect.flip(p.save("a", record(4, 3)))
          assert.strictEqual(store.saves, 3)
          yield* p.load("a")
          assert.strictEqual(store.saves, 3)
        }))
    }))

  it.effect("failSaves: every save fails with PersistenceFailed, stores nothing, and loads still work", () =>
    Effect.gen(function*() {
      const store = InMemoryPersistence.makeStore()
      yield* withStore(store, (p) =>
        Effect.gen(function*() {
          yield* p.save("s", record({ n: 1 }))
          const before = new Map(store.records)
          store.failSaves = true
          const error = yield* Effect.flip(p.save("s", record({ n: 2 }, 2)))
          assert.strictEqual(error._tag, "PersistenceFailed")
          assert.strictEqual(error.stateName, "s")
          assert.strictEqual(error.operation, "save")
          assert.strictEqual(error.reason, "save failure injected by the test store")
          const other = yield* Effect.flip(p.save("t", record({ n: 3 })))
          assert.strictEqual(other.stateName, "t")
          assert.deepStrictEqual(store.records, before)
          assert.deepStrictEqual(yield* p.load("s"), record({ n: 1 }))
          assert.isUndefined(yield* p.load("t"))
          // The switch is read at each call: turning it off restores saving.
          store.failSaves = false
          yield* p.save("s", record({ n: 2 }, 2))
          assert.deepStrictEqual(yield* p.load("s"), record({ n: 2 }, 2))
        }))
    }))

  it.effect("failLoads: every load fails with PersistenceFailed, saves still work", () =>
    Effect.gen(function*() {
      const store = InMemoryPersistence.makeStore()
      yield* withStore(store, (p) =>
        Effect.gen(function*() {
          yield* p.save("s", record({ n: 1 }))
          store.failLoads = true
          const error = yield* Effect.flip(p.load("s"))
          assert.strictEqual(error._tag, "PersistenceFailed")
          assert.strictEqual(error.stateName, "s")
          assert.strictEqual(error.operation, "load")
          assert.strictEqual(error.reason, "load failure injected by the test store")
          // Even a state that was never saved fails to load.
          const absent = yield* Effect.flip(p.load("never-saved"))
          assert.strictEqual(absent.operation, "load")
          yield* p.save("s", record({ n: 2 }, 2))
          assert.strictEqual(store.saves, 2)
          store.failLoads = false
          assert.deepStrictEqual(yield* p.load("s"), record({ n: 2 }, 2))
        }))
    }))

  it.effect("layerFailing fails every load and save, each time it is built", () =>
    Effect.gen(function*() {
      for (let build = 0; build < 2; build++) {
        yield* Effect.gen(function*() {
          const p = yield* StatePersistence.StatePersistence
          const saveError = yield* Effect.flip(p.save("s", record(1)))
          assert.strictEqual(saveError._tag, "PersistenceFailed")
          assert.strictEqual(saveError.operation, "save")
          assert.strictEqual(saveError.stateName, "s")
          const loadError = yield* Effect.flip(p.load("s"))
          assert.strictEqual(loadError._tag, "PersistenceFailed")
          assert.strictEqual(loadError.operation, "load")
          assert.strictEqual(loadError.stateName, "s")
        }).pipe(Effect.provide(InMemoryPersistence.layerFailing))
      }
    }))
})

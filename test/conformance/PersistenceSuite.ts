/**
 * Conformance suite of `StatePersistence`: one body of tests that every store
 * must pass (memory, file in snapshot and change-log modes, KeyValueStore,
 * Postgres): round-trip, absent state, overwrite, change logs, many states,
 * opaque names, a 10 MiB state, and saves and loads that fail surfacing as
 * `PersistenceFailed`.
 *
 * `suite(name, layer, options)` builds `layer` afresh for each test (so a
 * backend whose layer is a fresh store gets isolation for free) and uses state
 * names unique to each test (so a backend whose layer shares one store across
 * builds, such as a database, passes too). A backend that can be made to fail
 * passes `options.failing`: a layer of the same backend whose loads and saves
 * fail (an unreachable database, a read-only directory...), and the tag of
 * the backend error its failures carry as `cause` in `options.failingCause`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { StatePersistence } from "dstate"

type Persistence = StatePersistence.StatePersistence
type StoredState = StatePersistence.StoredState

/**
 * Options of `suite`.
 */
export interface SuiteOptions {
  /** A layer of the same backend on which every `load` and `save` fails. */
  readonly failing?: Layer.Layer<Persistence, unknown> | undefined
  /** The `_tag` of the backend's own error, which a failure of `failing` carries as its `cause` (`SqlError`...). */
  readonly failingCause?: string | undefined
  /** Vitest timeout of each test in ms (default: the vitest config's). */
  readonly timeout?: number | undefined
}

let unique = 0
/** A state name no other test of this process uses (stores may be shared across tests). */
const freshName = (label: string) => `conformance/${label}/${++unique}`

const record = (value: StoredState["value"], overrides?: Partial<StoredState>): StoredState => ({
  generation: { incarnation: 1_717_171_717_171, age: 3 },
  storageVersion: 1,
  value,
  createdAt: 1_717_171_717_000,
  modifiedAt: 1_717_171_717_171,
  ...overrides
})

const service = Effect.gen(function*() {
  return yield* StatePersistence.StatePersistence
})

/**
 * Registers the persistence conformance tests for one backend.
 */
export const suite = (name: string, layer: Layer.Layer<Persistence, unknown>, options?: SuiteOptions): void => {
  const timeout = options?.timeout
  const test = <A, E>(title: string, body: (store: Persistence["Service"]) => Effect.Effect<A, E>) =>
    it.effect(title, () => Effect.flatMap(service, body).pipe(Effect.provide(layer)), timeout)

  describe(`StatePersistence conformance: ${name}`, () => {
    test("a saved record loads back equal", (store) =>
      Effect.gen(function*() {
        const stateName = freshName("round-trip")
        const saved = record({ value: 42, tags: ["a", "b"], nested: { ok: true, none: null }, ratio: 0.125 })
        yield* store.save(stateName, saved)
        assert.deepStrictEqual(yield* store.load(stateName), saved)
        // Loading does not consume the record.
        assert.deepStrictEqual(yield* store.load(stateName), saved)
      }))

    test("a state never saved loads as undefined", (store) =>
      Effect.gen(function*() {
        const stateName = freshName("absent")
        assert.isUndefined(yield* store.load(stateName))
        // Saving another state does not make this one appear.
        yield* store.save(freshName("absent-other"), record(1))
        assert.isUndefined(yield* store.load(stateName))
      }))

    test("every JSON value round-trips", (store) =>
      Effect.gen(function*() {
        const values: ReadonlyArray<StoredState["value"]> = [
          null,
          true,
          false,
          0,
          -17,
          1.5e-300,
          Number.MAX_SAFE_INTEGER,
          -Number.MAX_SAFE_INTEGER,
          "",
          "plain",
          "naïve – 日本語 – 🎉 – \"quoted\" \\ backslash \n newline \t tab",
          "control characters: \u0000 \u0001 \u001f \u007f, astral plane: 𝄞",
          [],
          {},
          [1, "two", [3, [4, { five: 5 }]], null],
          { "": "empty key", "with space": 1, "ünïcode": 2, "__proto__x": 3 }
        ]
        const names = values.map(() => freshName("json"))
        yield* Effect.forEach(values, (value, i) => store.save(names[i], record(value)), { discard: true })
        for (let i = 0; i < values.length; i++) {
          const loaded = yield* store.load(names[i])
          assert.deepStrictEqual(loaded?.value, values[i], `value #${i}`)
        }
      }))

    test("generation, storageVersion, createdAt and modifiedAt come back exactly", (store) =>
      Effect.gen(function*() {
        const cases: ReadonlyArray<StoredState> = [
          record("x", {
            generation: { incarnation: 0, age: 0 },
            storageVersion: 0,
            createdAt: 0,
            modifiedAt: 0
          }),
          record("y", {
            generation: { incarnation: 1_717_171_717_171, age: 2 ** 40 + 3 },
            storageVersion: 42,
            createdAt: 1_717_171_717_000,
            modifiedAt: Number.MAX_SAFE_INTEGER
          }),
          record("z", {
            generation: { incarnation: Number.MAX_SAFE_INTEGER, age: Number.MAX_SAFE_INTEGER },
            storageVersion: 2 ** 31 - 1,
            createdAt: 1,
            modifiedAt: 2
          })
        ]
        for (const saved of cases) {
          const stateName = freshName("metadata")
          yield* store.save(stateName, saved)
          const loaded = yield* store.load(stateName)
          assert.isDefined(loaded)
          if (loaded === undefined) return
          assert.deepStrictEqual(loaded.generation, saved.generation)
          assert.strictEqual(loaded.storageVersion, saved.storageVersion)
          assert.strictEqual(loaded.createdAt, saved.createdAt)
          assert.strictEqual(loaded.modifiedAt, saved.modifiedAt)
          assert.deepStrictEqual(loaded, saved)
        }
      }))

    test("a second save overwrites the first; the last save wins", (store) =>
      Effect.gen(function*() {
        const stateName = freshName("overwrite")
        yield* store.save(stateName, record({ n: 1, extra: "dropped later" }))
        yield* store.save(stateName, record({ n: 2 }, { generation: { incarnation: 1_717_171_717_171, age: 4 } }))
        const last = record([3], {
          generation: { incarnation: 1_717_171_717_999, age: 0 },
          storageVersion: 2,
          createdAt: 1_717_171_717_900,
          modifiedAt: 1_717_171_717_950
        })
        yield* store.save(stateName, last)
        assert.deepStrictEqual(yield* store.load(stateName), last)
      }))

    test("saves with changes load back as the last record, or as a saved snapshot plus the changes after it", (store) =>
      Effect.gen(function*() {
        const stateName = freshName("changes")
        const generation = (age: number) => ({ incarnation: 1_717_171_717_171, age })
        // A store may keep a change log: `load` then returns one of the saved
        // records (a snapshot) with exactly the changes saved after it.
        const records = [0, 1, 2, 3].map((age) =>
          record({ n: age * 10 }, { generation: generation(age), modifiedAt: 1_717_171_717_171 + age })
        )
        const changes = [1, 2, 3].map((age): StatePersistence.StoredChange => ({
          generation: generation(age),
          value: { op: "add", by: 10 }
        }))
        const expectSnapshotPlusChanges = (loaded: StoredState | undefined, upTo: number) => {
          assert.isDefined(loaded)
          if (loaded === undefined) return
          const { changes: logged, ...snapshot } = loaded
          const k = records.findIndex((r) => r.generation.age === snapshot.generation.age)
          assert.isTrue(k >= 0 && k <= upTo, `snapshot generation ${JSON.stringify(snapshot.generation)}`)
          assert.deepStrictEqual(snapshot, records[k])
          assert.deepStrictEqual(logged ?? [], changes.slice(k, upTo))
        }
        yield* store.save(stateName, records[0])
        assert.deepStrictEqual(yield* store.load(stateName), records[0])
        for (let i = 1; i <= 3; i++) {
          yield* store.save(stateName, records[i], changes[i - 1])
          expectSnapshotPlusChanges(yield* store.load(stateName), i)
        }
        // A save without a change replaces everything before it.
        const rewritten = record({ n: 99 }, { generation: generation(4) })
        yield* store.save(stateName, rewritten)
        const { changes: left, ...loaded } = (yield* store.load(stateName))!
        assert.deepStrictEqual(loaded, rewritten)
        assert.deepStrictEqual(left ?? [], [])
      }))

    test("100 states saved concurrently are independent", (store) =>
      Effect.gen(function*() {
        const prefix = freshName("many")
        const names = Array.from({ length: 100 }, (_, i) => `${prefix}/state-${i}`)
        const recordOf = (i: number, round: number) =>
          record({ index: i, round, label: `state ${i}` }, {
            generation: { incarnation: 1_000 + i, age: round },
            storageVersion: 1 + (i % 3),
            createdAt: 10_000 + i,
            modifiedAt: 20_000 + i + round
          })
        yield* Effect.forEach(names, (n, i) => store.save(n, recordOf(i, 0)), {
          concurrency: "unbounded",
          discard: true
        })
        const loaded = yield* Effect.forEach(names, (n) => store.load(n), { concurrency: "unbounded" })
        assert.deepStrictEqual(loaded, names.map((_, i) => recordOf(i, 0)))
        // Overwriting the even states leaves the odd ones untouched.
        yield* Effect.forEach(names, (n, i) => i % 2 === 0 ? store.save(n, recordOf(i, 1)) : Effect.void, {
          concurrency: "unbounded",
          discard: true
        })
        const reloaded = yield* Effect.forEach(names, (n) => store.load(n), { concurrency: 10 })
        assert.deepStrictEqual(reloaded, names.map((_, i) => recordOf(i, i % 2 === 0 ? 1 : 0)))
        // A name that differs only by a suffix is still another state.
        assert.isUndefined(yield* store.load(`${prefix}/state-1000`))
        assert.isUndefined(yield* store.load(`${prefix}/state-`))
      }))

    test("state names are opaque: separators, unicode and case are kept apart", (store) =>
      Effect.gen(function*() {
        const base = freshName("names")
        const names = [
          `${base}/a`,
          `${base}/A`,
          `${base}/a/b`,
          `${base}\\a`,
          `${base}/../a`,
          `${base}/ä`,
          `${base}/a b`,
          `${base}/a:b*?"<>|`
        ]
        yield* Effect.forEach(names, (n, i) => store.save(n, record({ i })), { discard: true })
        for (let i = 0; i < names.length; i++) {
          assert.deepStrictEqual((yield* store.load(names[i]))?.value, { i }, names[i])
        }
      }))

    test("a 10 MiB state round-trips", (store) =>
      Effect.gen(function*() {
        const stateName = freshName("large")
        const chunk = "0123456789abcdef".repeat(64) // 1 KiB
        const blob = chunk.repeat(10 * 1024) // 10 MiB
        const rows = Array.from({ length: 10_000 }, (_, i) => ({ id: i, name: `row-${i}`, load: i / 8 }))
        const saved = record({ blob, rows })
        assert.strictEqual(blob.length, 10 * 1024 * 1024)
        yield* store.save(stateName, saved)
        const loaded = yield* store.load(stateName)
        assert.isDefined(loaded)
        if (loaded === undefined) return
        const value = loaded.value as { readonly blob: string; readonly rows: ReadonlyArray<unknown> }
        assert.strictEqual(value.blob.length, blob.length)
        assert.isTrue(value.blob === blob)
        assert.deepStrictEqual(value.rows, rows)
        assert.deepStrictEqual(loaded.generation, saved.generation)
      }))

    test("a record whose value is not JSON is refused with PersistenceFailed and the previous one is kept", (store) =>
      Effect.gen(function*() {
        const stateName = freshName("not-json")
        const kept = record({ ok: 1 })
        yield* store.save(stateName, kept)
        const bad: ReadonlyArray<unknown> = [Number.NaN, Number.POSITIVE_INFINITY, { a: undefined }, [1, () => 2], 10n]
        for (const value of bad) {
          const error = yield* Effect.flip(store.save(stateName, record(value as StoredState["value"])))
          assert.strictEqual(error._tag, "PersistenceFailed")
          assert.strictEqual(error.stateName, stateName)
          assert.strictEqual(error.operation, "save")
          // The schema error that refused the value is kept.
          assert.strictEqual((error.cause as { readonly _tag?: string } | undefined)?._tag, "SchemaError")
        }
        assert.deepStrictEqual(yield* store.load(stateName), kept)
      }))

    const failing = options?.failing
    if (failing !== undefined) {
      it.effect("a failing backend surfaces load and save failures as PersistenceFailed", () =>
        Effect.gen(function*() {
          const store = yield* service
          const stateName = freshName("failing")
          const saveError = yield* Effect.flip(store.save(stateName, record({ n: 1 })))
          assert.strictEqual(saveError._tag, "PersistenceFailed")
          assert.strictEqual(saveError.stateName, stateName)
          assert.strictEqual(saveError.operation, "save")
          assert.isTrue(saveError.reason.length > 0)
          // A save that carries a change fails the same way.
          const changed = record({ n: 2 }, { generation: { incarnation: 1_717_171_717_171, age: 4 } })
          const changeError = yield* Effect.flip(
            store.save(stateName, changed, { generation: changed.generation, value: { add: 1 } })
          )
          assert.strictEqual(changeError._tag, "PersistenceFailed")
          assert.strictEqual(changeError.stateName, stateName)
          assert.strictEqual(changeError.operation, "save")
          const loadError = yield* Effect.flip(store.load(stateName))
          assert.strictEqual(loadError._tag, "PersistenceFailed")
          assert.strictEqual(loadError.stateName, stateName)
          assert.strictEqual(loadError.operation, "load")
          assert.isTrue(loadError.reason.length > 0)
          const causeTag = options?.failingCause
          if (causeTag !== undefined) {
            // The backend's own error is the cause, and the reason is its message.
            for (const error of [saveError, changeError, loadError]) {
              assert.strictEqual((error.cause as { readonly _tag?: string } | undefined)?._tag, causeTag)
              assert.strictEqual(error.reason, (error.cause as Error).message)
            }
          }
        }).pipe(Effect.provide(failing)), timeout)
    }
  })
}

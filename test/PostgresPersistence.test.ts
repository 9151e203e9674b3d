import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Redacted, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as Zlib from "node:zlib"
import { DStateError, StatePersistence, StateRegistry } from "dstate"
import { PostgresPersistence } from "dstate/node"
import { suite } from "./conformance/PersistenceSuite.ts"
import { eventually } from "./support/Eventually.ts"
import { Ledger, ledgerPad, onNode, Tally, tallyLabels, tallyNext, type TallyState } from "./fixtures/persistenceNode.ts"

type StoredState = StatePersistence.StoredState
type StoredChange = StatePersistence.StoredChange

/** The test database (trust auth); override with DSTATE_TEST_POSTGRES_URL. */
const url = process.env.DSTATE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const PgLive = PgClient.layer({ url: Redacted.make(url) })

let tables = 0
/** A table name no other test, and no concurrent run of these tests, uses. */
const freshTable = () => `dstate_test_${process.pid}_${++tables}`

const dropTables = (table: string) =>
  Effect.flatMap(
    Effect.service(PgClient.PgClient),
    (sql) => sql`DROP TABLE IF EXISTS ${sql(table)}, ${sql(`${table}_changes`)}`
  ).pipe(Effect.ignore)

/** A store on its own table, dropped when the layer closes. */
const pgStore = (options?: Omit<PostgresPersistence.Options, "table" | "node">) =>
  Layer.unwrap(Effect.gen(function*() {
    const table = freshTable()
    yield* Effect.addFinalizer(() => dropTables(table))
    return PostgresPersistence.layerPostgres({ node: "node-1", table, ...options })
  })).pipe(Layer.provide(PgLive))

/** A store whose tables are dropped right after it is made: every load and save fails. */
const failingPgStore = (options?: Omit<PostgresPersistence.Options, "table" | "node">) =>
  Layer.unwrap(Effect.gen(function*() {
    const table = freshTable()
    const store = yield* PostgresPersistence.make({ node: "node-1", table, ...options })
    yield* dropTables(table)
    return Layer.succeed(StatePersistence.StatePersistence, store)
  })).pipe(Layer.provide(PgLive))

suite("postgres (compactEvery 64)", pgStore(), { failing: failingPgStore(), failingCause: "SqlError", timeout: 60_000 })
suite("postgres (compactEvery 2)", pgStore({ compactEvery: 2 }), {
  failing: failingPgStore({ compactEvery: 2 }),
  failingCause: "SqlError",
  timeout: 60_000
})

// ---- helpers ------------------------------------------------------------------------------------

const inc = 1_717_171_717_171

const record = (age: number, value: StoredState["value"] = { age }, incarnation = inc): StoredState => ({
  generation: { incarnation, age },
  storageVersion: 1,
  value,
  createdAt: 1_000,
  modifiedAt: 1_000 + age
})

const change = (age: number): StoredChange => ({ generation: { incarnation: inc, age }, value: { add: 1, label: `#${age}` } })

/** A table for one test, dropped at its end. */
const tableForTest = Effect.acquireRelease(Effect.sync(freshTable), dropTables)

/** Makes a store on `table`, runs `f` with it (a node's process, start to stop). */
const withStore = <A, E, R>(
  table: string,
  f: (store: StatePersistence.StatePersistence["Service"]) => Effect.Effect<A, E, R>,
  options?: Omit<PostgresPersistence.Options, "table" | "node"> & { readonly node?: string }
) => Effect.flatMap(PostgresPersistence.make({ node: "node-1", table, ...options }), f)

const rowsOf = (table: string) =>
  Effect.flatMap(Effect.service(PgClient.PgClient), (sql) =>
    Effect.all({
      records: sql<{ node: string; state_name: string; incarnation: bigint; age: bigint; checksum: bigint; record: string }>`
        SELECT node, state_name, incarnation, age, checksum, record FROM ${sql(table)} ORDER BY node, state_name`,
      changes: sql<{ node: string; state_name: string; age: bigint }>`
        SELECT node, state_name, age FROM ${sql(`${table}_changes`)} ORDER BY node, state_name, incarnation, age`
    })).pipe(
      Effect.map(({ changes, records }) => ({
        records: records.map((r) => ({
          node: r.node,
          state: r.state_name,
          age: Number(r.age),
          checksumOk: Number(r.checksum) === (Zlib.crc32(r.record) >>> 0)
        })),
        changes: changes.map((c) => `${c.node}/${c.state_name}@${Number(c.age)}`)
      }))
    )

// One client per suite (`layer`); each test's scope closes, dropping its tables, before the client does.
layer(PgLive)("PostgresPersistence", (it) => {
  it.effect("one row per (node, state); the log holds changes until every compactEvery-th one", () =>
    Effect.gen(function*() {
      const table = yield* tableForTest
      yield* withStore(table, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          yield* store.save("tally", record(1), change(1))
          yield* store.save("tally", record(2), change(2))
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(0), changes: [change(1), change(2)] })
          assert.deepStrictEqual(yield* rowsOf(table), {
            records: [{ node: "node-1", state: "tally", age: 0, checksumOk: true }],
            changes: ["node-1/tally@1", "node-1/tally@2"]
          })
          yield* store.save("tally", record(3), change(3))
          assert.deepStrictEqual(yield* store.load("tally"), record(3))
          assert.deepStrictEqual(yield* rowsOf(table), {
            records: [{ node: "node-1", state: "tally", age: 3, checksumOk: true }],
            changes: []
          })
          yield* store.save("tally", record(4), change(4))
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(3), changes: [change(4)] })
        }), { compactEvery: 3 })
      yield* withStore(table, (store) => store.save("tally", record(9)), { node: "node-2" })
      assert.deepStrictEqual(yield* rowsOf(table), {
        records: [
          { node: "node-1", state: "tally", age: 3, checksumOk: true },
          { node: "node-2", state: "tally", age: 9, checksumOk: true }
        ],
        changes: ["node-1/tally@4"]
      })
      // Nodes are kept apart.
      assert.deepStrictEqual(yield* withStore(table, (store) => store.load("tally"), { node: "node-2" }), record(9))
      assert.isUndefined(yield* withStore(table, (store) => store.load("tally"), { node: "node-3" }))
    }))

  it.effect("a restarted store loads the record with its log, and its first save rewrites the record", () =>
    Effect.gen(function*() {
      const table = yield* tableForTest
      yield* withStore(table, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          for (let age = 1; age <= 4; age++) yield* store.save("tally", record(age), change(age))
        }))
      yield* withStore(table, (store) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(yield* store.load("tally"), { ...record(0), changes: [1, 2, 3, 4].map(change) })
          yield* store.save("tally", record(5), change(5))
          assert.deepStrictEqual(yield* rowsOf(table), {
            records: [{ node: "node-1", state: "tally", age: 5, checksumOk: true }],
            changes: []
          })
        }))
    }))

  it.effect("a row that does not match its checksum fails the load", () =>
    Effect.gen(function*() {
      const table = yield* tableForTest
      const sql = yield* PgClient.PgClient
      const write = withStore(table, (store) =>
        Effect.gen(function*() {
          yield* store.save("tally", record(0))
          yield* store.save("tally", record(1), change(1))
          yield* store.save("tally", record(2), change(2))
        }))
      yield* write
      yield* sql`UPDATE ${sql(table)} SET record = replace(record, '"age":0', '"age":7')`
      const recordError = yield* withStore(table, (store) => Effect.flip(store.load("tally")))
      assert.strictEqual(recordError.operation, "load")
      assert.strictEqual(recordError.stateName, "tally")
      assert.isTrue(recordError.reason.startsWith("record checksum mismatch: stored "), recordError.reason)
      yield* write
      yield* sql`UPDATE ${sql(`${table}_changes`)} SET entry = replace(entry, '#2', '#3')`
      const changeError = yield* withStore(table, (store) => Effect.flip(store.load("tally")))
      assert.strictEqual(changeError.reason, "change log entry 2 fails its checksum")
      assert.isUndefined(changeError.cause)
    }))

  it.effect("a row that passes its checksum but does not decode fails the load with the schema error as cause", () =>
    Effect.gen(function*() {
      const table = yield* tableForTest
      const sql = yield* PgClient.PgClient
      yield* withStore(table, (store) => store.save("tally", record(0)))
      const json = "{\"age\":\"zero\"}"
      yield* sql`UPDATE ${sql(table)} SET record = ${json}, checksum = ${Zlib.crc32(json) >>> 0}`
      const error = yield* withStore(table, (store) => Effect.flip(store.load("tally")))
      assert.strictEqual(error.operation, "load")
      assert.isTrue(error.reason.startsWith("record passes its checksum but does not decode: "), error.reason)
      assert.instanceOf(error.cause, Schema.SchemaError)
      assert.strictEqual(error.reason, `record passes its checksum but does not decode: ${(error.cause as Schema.SchemaError).message}`)
    }))

  it.effect("a role without the CREATE privilege uses existing tables (schema-qualified)", () =>
    Effect.gen(function*() {
      const sql = yield* PgClient.PgClient
      const schema = `dstate_test_schema_${process.pid}`
      const role = `dstate_test_role_${process.pid}`
      const table = `${schema}.records`
      yield* Effect.acquireRelease(
        Effect.gen(function*() {
          yield* sql`CREATE SCHEMA ${sql(schema)}`
          yield* sql`DROP ROLE IF EXISTS ${sql(role)}`
          yield* sql`CREATE ROLE ${sql(role)} NOLOGIN`
        }),
        () =>
          Effect.ignore(Effect.gen(function*() {
            yield* sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`
            yield* sql`DROP ROLE IF EXISTS ${sql(role)}`
          }))
      )
      // The tables are created by a store that may, then used by one that may not: every statement of
      // `asRole` runs in one transaction as the role.
      yield* withStore(table, (store) => store.save("tally", record(0)))
      yield* sql`GRANT USAGE ON SCHEMA ${sql(schema)} TO ${sql(role)}`
      yield* sql`GRANT SELECT, INSERT, UPDATE, DELETE ON ${sql(table)}, ${sql(`${table}_changes`)} TO ${sql(role)}`
      const asRole = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        sql.withTransaction(Effect.andThen(sql`SET LOCAL ROLE ${sql(role)}`, effect))
      const loaded = yield* asRole(withStore(table, (store) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(yield* store.load("tally"), record(0))
          yield* store.save("tally", record(1), change(1))
          yield* store.save("tally", record(2), change(2))
          return yield* store.load("tally")
        })))
      assert.deepStrictEqual(loaded, { ...record(1), changes: [change(2)] })
      // The role really may not create tables: a store on missing ones fails.
      const error = yield* Effect.flip(asRole(PostgresPersistence.make({ node: "node-1", table: `${schema}.other` })))
      assert.strictEqual(error._tag, "SqlError")
      if (error._tag === "SqlError") assert.strictEqual(error.reason._tag, "AuthorizationError")
    }))

  it.effect("a table name must be one or two identifiers that fit Postgres' limit: InvalidOptions otherwise", () =>
    Effect.gen(function*() {
      const reason = "must be \"name\" or \"schema.name\" with parts of 1 to 50 bytes"
      for (const table of ["a.b.c", "", "x".repeat(51), "public.", `public.${"x".repeat(51)}`]) {
        assert.deepStrictEqual(
          yield* Effect.flip(PostgresPersistence.make({ node: "n", table })),
          new DStateError.InvalidOptions({ module: "PostgresPersistence", option: "table", value: table, reason }),
          table
        )
      }
      // The longest names that fit are accepted (and the store works on them).
      for (const table of [`t${process.pid}`.padEnd(50, "x"), `public.${`u${process.pid}`.padEnd(50, "x")}`]) {
        yield* Effect.addFinalizer(() => dropTables(table))
        const store = yield* PostgresPersistence.make({ node: "n", table })
        yield* store.save("tally", record(0))
        assert.deepStrictEqual(yield* store.load("tally"), record(0), table)
      }
    }))

  it.effect("compactEvery must be a positive integer: 1 is accepted, 0 and 1.5 fail with InvalidOptions", () =>
    Effect.gen(function*() {
      for (const compactEvery of [0, 1.5, -1]) {
        assert.deepStrictEqual(
          yield* Effect.flip(PostgresPersistence.make({ node: "n", table: freshTable(), compactEvery })),
          new DStateError.InvalidOptions({
            module: "PostgresPersistence",
            option: "compactEvery",
            value: compactEvery,
            reason: "must be a positive integer"
          })
        )
      }
      const table = yield* tableForTest
      const store = yield* PostgresPersistence.make({ node: "n", table, compactEvery: 1 })
      yield* store.save("tally", record(0))
      yield* store.save("tally", record(1), change(1))
      // compactEvery 1: every save rewrites the record, nothing is logged.
      assert.deepStrictEqual(yield* store.load("tally"), record(1))
    }))

  it.effect("maxBatchSaves must be an integer from 1 to 10,000: InvalidOptions otherwise", () =>
    Effect.gen(function*() {
      for (const maxBatchSaves of [0, 1.5, -1, 10_001]) {
        assert.deepStrictEqual(
          yield* Effect.flip(PostgresPersistence.make({ node: "n", table: freshTable(), maxBatchSaves })),
          new DStateError.InvalidOptions({
            module: "PostgresPersistence",
            option: "maxBatchSaves",
            value: maxBatchSaves,
            reason: "must be an integer from 1 to 10000"
          })
        )
      }
      for (const maxBatchSaves of [1, 10_000]) {
        const table = yield* tableForTest
        const store = yield* PostgresPersistence.make({ node: "n", table, maxBatchSaves })
        const names = Array.from({ length: 20 }, (_, i) => `state-${i}`)
        yield* Effect.forEach(names, (name, i) => store.save(name, record(i)), { concurrency: "unbounded", discard: true })
        assert.deepStrictEqual(yield* Effect.forEach(names, store.load), names.map((_, i) => record(i)), `${maxBatchSaves}`)
      }
    }))

  it.effect("saves of many states waiting together are one statement: one that fails fails them all, and none is written", () =>
    Effect.gen(function*() {
      const sql = yield* PgClient.PgClient
      const table = yield* tableForTest
      const store = yield* PostgresPersistence.make({ node: "n", table, compactEvery: 4 })
      yield* store.save("a", record(1))
      yield* store.save("b", record(0))
      yield* store.save("b", record(1), change(1))
      // Another session holds the table: the next statement waits for it, and the saves behind it queue.
      const locked = yield* Deferred.make<void>()
      const unlock = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
        yield* sql`LOCK TABLE ${sql(table)} IN ACCESS EXCLUSIVE MODE`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(unlock)
      })))
      yield* Deferred.await(locked)
      const blocked = yield* Effect.forkChild(store.save("z", record(1)))
      yield* eventually(
        Effect.map(
          sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE relation = to_regclass(${table}) AND NOT granted`,
          (rows) => rows[0].n > 0
        ),
        { timeout: "10 seconds", what: "the blocked statement" }
      ).pipe(TestClock.withLive)
      // A NUL byte in a state name: the server refuses the whole statement.
      const batch = yield* Effect.forEach(
        [store.save("a", record(2)), store.save("b", record(2), change(2)), store.save("bad\u0000name", record(1))],
        (save) => Effect.forkChild(Effect.flip(save))
      )
      for (let i = 0; i < 50; i++) yield* Effect.yieldNow
      yield* Deferred.succeed(unlock, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(blocked)
      const errors = yield* Effect.forEach(batch, Fiber.join)
      assert.deepStrictEqual(errors.map((e) => [e._tag, e.stateName, e.operation]), [
        ["PersistenceFailed", "a", "save"],
        ["PersistenceFailed", "b", "save"],
        ["PersistenceFailed", "bad\u0000name", "save"]
      ])
      for (const error of errors) assert.strictEqual((error.cause as { readonly _tag?: string })._tag, "SqlError")
      assert.deepStrictEqual(yield* store.load("a"), record(1))
      assert.deepStrictEqual(yield* store.load("b"), { ...record(0), changes: [change(1)] })
      assert.deepStrictEqual(yield* store.load("z"), record(1))
      // The next saves are written; b's is a full record again.
      yield* Effect.forEach([store.save("a", record(2)), store.save("b", record(2), change(2))], (e) => e, {
        concurrency: "unbounded",
        discard: true
      })
      assert.deepStrictEqual(yield* store.load("a"), record(2))
      assert.deepStrictEqual(yield* store.load("b"), record(2))
    }))
})

// ---- end to end: the owner on Postgres ---------------------------------------------------------

layer(PgLive)("PostgresPersistence with a node", (it) => {
  const tallyBy = (label: string) => (state: TallyState) => ({ state: tallyNext(state, { add: 1, label }), change: { add: 1, label } })
  const mutateBoth = (times: number) =>
    Effect.gen(function*() {
      const ledger = yield* StateRegistry.register(Ledger)
      const tally = yield* StateRegistry.register(Tally)
      for (let i = 0; i < times; i++) {
        yield* ledger.mutate((s) => ({ count: s.count + 1, pad: ledgerPad(s.count + 1) }))
        yield* tally.mutateWithDelta(tallyBy(`#${(yield* tally.state).total + 1}`))
      }
    })
  const own = Effect.gen(function*() {
    const ledger = yield* StateRegistry.register(Ledger)
    const tally = yield* StateRegistry.register(Tally)
    return {
      ledger: { generation: (yield* ledger.local).generation, count: (yield* ledger.state).count },
      tally: { generation: (yield* tally.local).generation, labels: (yield* tally.state).labels }
    }
  })

  it.effect("restarts replay the log; a damaged row makes the node start fresh with a newer incarnation", () =>
    Effect.gen(function*() {
      const table = yield* tableForTest
      const sql = yield* PgClient.PgClient
      const client = Layer.succeed(PgClient.PgClient, sql)
      const persistence = PostgresPersistence.layerPostgres({ node: "node-1", table, compactEvery: 4 }).pipe(Layer.provide(client))
      yield* TestClock.setTime(4_000_000)
      yield* onNode(persistence, mutateBoth(7))
      assert.deepStrictEqual(yield* onNode(persistence, own), {
        ledger: { generation: { incarnation: 4_000_000, age: 7 }, count: 7 },
        tally: { generation: { incarnation: 4_000_000, age: 7 }, labels: tallyLabels(7) }
      })
      // The startup save (age 0) is a full record; 1 to 3 are logged; the 4th change since (age 4) is a
      // full record again; 5 to 7 are logged.
      const rows = yield* rowsOf(table)
      assert.deepStrictEqual(rows.records.map((r) => `${r.state}@${r.age}`), ["crash/ledger@7", "crash/tally@4"])
      assert.deepStrictEqual(rows.changes, ["node-1/crash/tally@5", "node-1/crash/tally@6", "node-1/crash/tally@7"])
      yield* sql`UPDATE ${sql(table)} SET record = replace(record, '"count":7', '"count":8') WHERE state_name = ${Ledger.name}`
      yield* TestClock.adjust(2_000)
      assert.deepStrictEqual(yield* onNode(persistence, own), {
        ledger: { generation: { incarnation: 4_002_000, age: 0 }, count: 0 },
        tally: { generation: { incarnation: 4_000_000, age: 7 }, labels: tallyLabels(7) }
      })
    }))
})

/**
 * A PostgreSQL store for `StatePersistence`, on `@effect/sql-pg`: one row per
 * (node, state) holding the last full record, and a change-log table for
 * delta-aware states that log their changes.
 *
 * **Schema** (created when missing; `table` defaults to `dstate_state`)
 *
 * ```sql
 * CREATE TABLE dstate_state (
 *   node text, state_name text,
 *   incarnation bigint, age bigint,      -- the record's generation
 *   record text,                         -- the record as JSON
 *   checksum bigint,                     -- CRC32 of record's UTF-8 bytes
 *   PRIMARY KEY (node, state_name))
 * CREATE TABLE dstate_state_changes (
 *   node text, state_name text, incarnation bigint, age bigint,
 *   entry text, checksum bigint,         -- one change as JSON, and its CRC32
 *   PRIMARY KEY (node, state_name, incarnation, age))
 * ```
 *
 * **Writes**
 *
 * Saves go through one writer per store: the saves that arrive while a
 * statement runs (of any states of the node, at most `maxBatchSaves`) are
 * written by the next one, a single statement that upserts the records of
 * the states saved whole, deletes those states' logged changes and inserts
 * the changes of the others (data-modifying `WITH`s), so all of it happens
 * or none. A save returns after the server committed the statement that
 * covers it; when the statement fails, every save it covered fails with
 * `PersistenceFailed`. Per state, a save that carries a change inserts only
 * the change, until `compactEvery` changes since the last full record make
 * it a full save again; several saves of one state in a batch are written
 * as its newest record (or as all their changes). The first save of a state
 * after the store starts, and the first after a failed save, is a full save.
 *
 * **Loads** read the record and the changes after its generation in one
 * statement, verify every checksum, and fail with `PersistenceFailed` when a
 * row does not match its checksum.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Deferred, Effect, Layer, Queue, Result, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import * as Zlib from "node:zlib"
import { type InvalidOptions, PersistenceFailed } from "../DStateError.ts"
import * as Check from "../internal/options.ts"
import { closeQueue } from "../internal/closeQueue.ts"
import { decodeChange, decodeRecord, encodeChange, encodeRecord } from "../internal/storedJson.ts"
import { StatePersistence, StoredChange, StoredState } from "../StatePersistence.ts"

/**
 * Options of the Postgres store.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** This node's id: the rows of one node are kept apart from the others'. */
  readonly node: string
  /**
   * The records' table, optionally schema-qualified (`"app.dstate"`); the
   * change log lives in `<table>_changes`. Default `dstate_state`.
   */
  readonly table?: string | undefined
  /**
   * A save that carries a change inserts only the change, except every
   * `compactEvery`-th change since the last full record, which rewrites the
   * record and clears the log. `1` always rewrites the record. Default 64.
   */
  readonly compactEvery?: number | undefined
  /**
   * Concurrent saves of the node (of any states) are written together, one
   * statement per batch; at most this many saves share one. Default 512,
   * at most 10,000 (the statement's parameters stay under the server's limit).
   */
  readonly maxBatchSaves?: number | undefined
}

/**
 * The default of `Options.table`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultTable = "dstate_state"

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

/** Parameters per saved row are at most 6: the server allows 65,535 per statement. */
const maxMaxBatchSaves = 10_000


const crc32 = (text: string): number => Zlib.crc32(text) >>> 0

/** The rows of a batch, as `sql.insert` takes them (never empty where it is used). */
type NonEmpty = readonly [Record<string, unknown>, ...Array<Record<string, unknown>>]

/** A table name as `sql(name)` writes it: every dot-separated part double-quoted. */
const quoted = (name: string) => name.split(".").map((part) => `"${part.replace(/"/g, "\"\"")}"`).join(".")

/** Identifiers longer than this are cut by the server; leave room for `_changes` and `_pkey`. */
const maxIdentifier = 63 - "_changes_pkey".length

/** The rows of `changes` as decoded from their JSON aggregate: `[entry, checksum]`. */
const ChangeRows = Schema.fromJsonString(Schema.Array(Schema.Tuple([Schema.String, Schema.Number])))
const decodeChangeRows = Schema.decodeUnknownResult(ChangeRows)

interface Slot {
  readonly name: string
  /** Changes logged since the last full save by this process; `undefined`: the next save is a full one. */
  logged: number | undefined
}

/** A save waiting for the writer. */
interface Queued {
  readonly slot: Slot
  readonly record: StoredState
  readonly change: StoredChange | undefined
  readonly done: Deferred.Deferred<void, PersistenceFailed>
}

interface RecordRow {
  readonly node: string
  readonly state_name: string
  readonly incarnation: number
  readonly age: number
  readonly record: string
  readonly checksum: number
}

interface ChangeRow {
  readonly node: string
  readonly state_name: string
  readonly incarnation: number
  readonly age: number
  readonly entry: string
  readonly checksum: number
}

/**
 * The Postgres store over the `PgClient` in context. Creates the tables when
 * missing.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options) {
  const sql = yield* PgClient.PgClient
  const table = options.table ?? defaultTable
  const checker = { module: "PostgresPersistence" }
  const parts = table.split(".")
  if (parts.length > 2 || parts.some((part) => part.length === 0 || Buffer.byteLength(part, "utf8") > maxIdentifier)) {
    return yield* Check.invalid(
      checker,
      "table",
      table,
      `must be "name" or "schema.name" with parts of 1 to ${maxIdentifier} bytes`
    )
  }
  const compactEvery = yield* Check.integer(checker, "compactEvery", options.compactEvery ?? defaultCompactEvery, 1)
  const maxBatchSaves = yield* Check.integer(
    checker,
    "maxBatchSaves",
    options.maxBatchSaves ?? defaultMaxBatchSaves,
    1,
    maxMaxBatchSaves
  )
  const node = options.node
  const records = sql(table)
  const changes = sql(`${table}_changes`)

  /** Whether a table is missing (`CREATE TABLE IF NOT EXISTS` needs the CREATE privilege even when it exists). */
  const missing = (name: string) =>
    Effect.map(
      sql<{ readonly found: boolean }>`SELECT to_regclass(${quoted(name)}) IS NOT NULL AS found`,
      (rows) => rows[0]?.found !== true
    )

  if (yield* missing(table)) {
    yield* sql`CREATE TABLE IF NOT EXISTS ${records} (
    node text NOT NULL,
    state_name text NOT NULL,
    incarnation bigint NOT NULL,
    age bigint NOT NULL,
    record text NOT NULL,
    checksum bigint NOT NULL,
    PRIMARY KEY (node, state_name)
  )`
  }
  if (yield* missing(`${table}_changes`)) {
    yield* sql`CREATE TABLE IF NOT EXISTS ${changes} (
    node text NOT NULL,
    state_name text NOT NULL,
    incarnation bigint NOT NULL,
    age bigint NOT NULL,
    entry text NOT NULL,
    checksum bigint NOT NULL,
    PRIMARY KEY (node, state_name, incarnation, age)
  )`
  }

  const slots = new Map<string, Slot>()
  const slotOf = (stateName: string): Slot => {
    let slot = slots.get(stateName)
    if (slot === undefined) {
      slot = { name: stateName, logged: undefined }
      slots.set(stateName, slot)
    }
    return slot
  }

  const failed = (stateName: string, operation: "load" | "save") => (error: SqlError) =>
    new PersistenceFailed({ stateName, operation, reason: error.message, cause: error })

  const upsertRecords = (rows: ReadonlyArray<RecordRow>) =>
    sql`INSERT INTO ${records} ${sql.insert(rows as unknown as NonEmpty)}
    ON CONFLICT (node, state_name) DO UPDATE SET
      incarnation = excluded.incarnation,
      age = excluded.age,
      record = excluded.record,
      checksum = excluded.checksum`

  /** Appends changes (a retried generation replaces its earlier attempt). */
  const insertChanges = (rows: ReadonlyArray<ChangeRow>) =>
    sql`INSERT INTO ${changes} ${sql.insert(rows as unknown as NonEmpty)}
    ON CONFLICT (node, state_name, incarnation, age) DO UPDATE SET
      entry = excluded.entry,
      checksum = excluded.checksum`

  /**
   * One statement for a batch: upserts the records and clears those states'
   * logs (a data-modifying `WITH`), and appends the changes of the other
   * states, so that all of it happens or none.
   */
  const writeRows = (
    recordRows: ReadonlyArray<RecordRow>,
    changeRows: ReadonlyArray<ChangeRow>,
    toClear: ReadonlyArray<string>
  ) => {
    if (recordRows.length === 0) return insertChanges(changeRows)
    if (toClear.length === 0) {
      return changeRows.length === 0
        ? upsertRecords(recordRows)
        : sql`WITH logged AS (${insertChanges(changeRows)}) ${upsertRecords(recordRows)}`
    }
    const cleared = sql`DELETE FROM ${changes} WHERE node = ${node} AND state_name IN ${sql.in(toClear)}`
    return changeRows.length === 0
      ? sql`WITH cleared AS (${cleared}) ${upsertRecords(recordRows)}`
      : sql`WITH cleared AS (${cleared}), logged AS (${insertChanges(changeRows)}) ${upsertRecords(recordRows)}`
  }

  const closed = (stateName: string) => new PersistenceFailed({ stateName, operation: "save", reason: "the store is closed" })

  const encodeFailed = (stateName: string, what: string, error: { readonly message: string }) =>
    new PersistenceFailed({ stateName, operation: "save", reason: `cannot encode the ${what}: ${error.message}`, cause: error })

  /**
   * Writes one batch: per state, its changes when every save of it in the
   * batch carries one and the log has room for them, else its newest record
   * alone (which covers the earlier saves of the batch).
   */
  const writeBatch = (batch: ReadonlyArray<Queued>) =>
    Effect.gen(function*() {
      const byState = new Map<Slot, Array<Queued>>()
      for (const item of batch) {
        const list = byState.get(item.slot)
        if (list === undefined) byState.set(item.slot, [item])
        else list.push(item)
      }
      const recordRows: Array<RecordRow> = []
      const changeRows: Array<ChangeRow> = []
      /** States saved whole whose log may hold changes (none when this process wrote their last record and no change since). */
      const toClear: Array<string> = []
      const covered: Array<{ readonly slot: Slot; readonly items: ReadonlyArray<Queued>; readonly logged: number }> = []
      for (const [slot, items] of byState) {
        const logged = slot.logged
        if (logged !== undefined && logged + items.length < compactEvery && items.every((item) => item.change !== undefined)) {
          const rows: Array<ChangeRow> = []
          for (const item of items) {
            const change = item.change!
            const json = encodeChange(change)
            if (Result.isFailure(json)) break
            rows.push({
              node,
              state_name: slot.name,
              incarnation: change.generation.incarnation,
              age: change.generation.age,
              entry: json.success,
              checksum: crc32(json.success)
            })
          }
          if (rows.length === items.length) {
            // A generation saved twice in one batch is written once, the later attempt.
            const seen = new Set<string>()
            for (let i = rows.length - 1; i >= 0; i--) {
              const key = `${rows[i].incarnation}/${rows[i].age}`
              if (!seen.has(key)) changeRows.push(rows[i])
              seen.add(key)
            }
            covered.push({ slot, items, logged: logged + items.length })
            continue
          }
        }
        // The newest record that encodes covers the saves up to it; later ones that do not encode fail.
        let last = items.length - 1
        for (; last >= 0; last--) {
          const item = items[last]
          const { changes: _, ...snapshot } = item.record
          const json = encodeRecord(snapshot)
          if (Result.isSuccess(json)) {
            recordRows.push({
              node,
              state_name: slot.name,
              incarnation: item.record.generation.incarnation,
              age: item.record.generation.age,
              record: json.success,
              checksum: crc32(json.success)
            })
            break
          }
          Deferred.doneUnsafe(item.done, Effect.fail(encodeFailed(slot.name, "record", json.failure)))
        }
        if (last >= 0) {
          covered.push({ slot, items: items.slice(0, last + 1), logged: 0 })
          if (logged !== 0) toClear.push(slot.name)
        }
      }
      if (covered.length === 0) return
      const result = yield* Effect.result(writeRows(recordRows, changeRows, toClear))
      for (const { items, logged, slot } of covered) {
        slot.logged = Result.isSuccess(result) ? logged : undefined
        for (const item of items) {
          Deferred.doneUnsafe(
            item.done,
            Result.isSuccess(result) ? Effect.void : Effect.fail(failed(slot.name, "save")(result.failure))
          )
        }
      }
    }).pipe(Effect.uninterruptible)

  const queue = yield* Queue.unbounded<Queued>()
  yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.takeBetween(queue, 1, maxBatchSaves), writeBatch)))
  // Closing the store (after the writer's statement in flight): the saves still waiting fail, later ones too.
  yield* Effect.addFinalizer(() =>
    Effect.map(closeQueue(queue), (left) => {
      for (const item of left) Deferred.doneUnsafe(item.done, Effect.fail(closed(item.slot.name)))
    })
  )

  const save = (stateName: string, record: StoredState, change?: StoredChange) =>
    Effect.suspend(() => {
      const done = Deferred.makeUnsafe<void, PersistenceFailed>()
      if (!Queue.offerUnsafe(queue, { slot: slotOf(stateName), record, change, done })) {
        return Effect.fail(closed(stateName))
      }
      return Deferred.await(done)
    })

  const load = (stateName: string) =>
    Effect.suspend(() => {
      const corrupt = (reason: string, cause?: unknown) =>
        Effect.fail(
          new PersistenceFailed({ stateName, operation: "load", reason, ...(cause === undefined ? {} : { cause }) })
        )
      return Effect.gen(function*() {
        // One statement, so the record and the log are read from one snapshot of the database.
        const rows = yield* sql<{ readonly record: string; readonly checksum: bigint | number; readonly changes: string }>`
          SELECT r.record, r.checksum, COALESCE((
            SELECT json_agg(json_build_array(c.entry, c.checksum) ORDER BY c.incarnation, c.age)
            FROM ${changes} c
            WHERE c.node = r.node AND c.state_name = r.state_name AND (c.incarnation, c.age) > (r.incarnation, r.age)
          ), '[]'::json)::text AS changes
          FROM ${records} r
          WHERE r.node = ${node} AND r.state_name = ${stateName}`
        if (rows.length === 0) return undefined
        const row = rows[0]
        if (Number(row.checksum) !== crc32(row.record)) {
          return yield* corrupt(`record checksum mismatch: stored ${Number(row.checksum)}, computed ${crc32(row.record)}`)
        }
        const record = decodeRecord(row.record)
        if (Result.isFailure(record)) {
          return yield* corrupt(`record passes its checksum but does not decode: ${record.failure.message}`, record.failure)
        }
        const logged = decodeChangeRows(row.changes)
        if (Result.isFailure(logged)) return yield* corrupt(`unreadable change log: ${logged.failure.message}`, logged.failure)
        const out: Array<StoredChange> = []
        for (const [entry, checksum] of logged.success) {
          if (checksum !== crc32(entry)) {
            return yield* corrupt(`change log entry ${out.length + 1} fails its checksum`)
          }
          const change = decodeChange(entry)
          if (Result.isFailure(change)) {
            return yield* corrupt(`change log entry ${out.length + 1} does not decode: ${change.failure.message}`, change.failure)
          }
          out.push(change.success)
        }
        return out.length === 0 ? record.success : { ...record.success, changes: out }
      }).pipe(
        Effect.catchTag("SqlError", (error) => Effect.fail(failed(stateName, "load")(error)))
      )
    })

  return StatePersistence.of({ load, save })
})

/**
 * The Postgres store as a layer over a `PgClient`.
 *
 * **When to use**
 *
 * Nodes without a durable local disk, or when state should outlive the
 * machine. Every node of a cluster may use the same database and table; each
 * must pass its own `node`.
 *
 * **Gotchas**
 *
 * One process per `node` may write at a time. A statement the server is still
 * executing when its client dies may commit after the client is gone: restart
 * a crashed node only after its old connection is closed (the server notices
 * within milliseconds on a local network). The layer fails with `SqlError`
 * when the tables are missing and cannot be created; tables that exist need
 * only `SELECT`, `INSERT`, `UPDATE` and `DELETE` for the layer's role. It
 * fails with `InvalidOptions` when `table` is not `"name"` or
 * `"schema.name"` with parts of 1 to 50 bytes, `compactEvery` is not a
 * positive integer, or `maxBatchSaves` is not an integer from 1 to 10,000.
 *
 * **Example**
 *
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Layer, Redacted } from "effect"
 * import { PostgresPersistence } from "dstate/node"
 *
 * export const Persistence = PostgresPersistence.layerPostgres({ node: "node-1" }).pipe(
 *   Layer.provide(PgClient.layer({ url: Redacted.make("postgres://postgres@127.0.0.1:5432/app") }))
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerPostgres = (
  options: Options
): Layer.Layer<StatePersistence, SqlError | InvalidOptions, PgClient.PgClient> =>
  Layer.effect(StatePersistence, make(options))

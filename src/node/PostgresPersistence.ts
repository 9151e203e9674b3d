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
 * A full save is one statement: it upserts the record and deletes the
 * state's logged changes (a data-modifying `WITH`), so both happen or
 * neither. A save that carries a change inserts only the change, until
 * `compactEvery` changes since the last full record make it a full save
 * again. Both return after the server committed. The first save of a state
 * after the store starts, and the first after a failed save, is a full save.
 *
 * **Loads** read the record and the changes after its generation in one
 * statement, verify every checksum, and fail with `PersistenceFailed` when a
 * row does not match its checksum.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Result, Schema, Semaphore } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import * as Zlib from "node:zlib"
import { type InvalidOptions, PersistenceFailed } from "../DStateError.ts"
import * as Check from "../internal/options.ts"
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


const crc32 = (text: string): number => Zlib.crc32(text) >>> 0

/** A table name as `sql(name)` writes it: every dot-separated part double-quoted. */
const quoted = (name: string) => name.split(".").map((part) => `"${part.replace(/"/g, "\"\"")}"`).join(".")

/** Identifiers longer than this are cut by the server; leave room for `_changes` and `_pkey`. */
const maxIdentifier = 63 - "_changes_pkey".length

/** The rows of `changes` as decoded from their JSON aggregate: `[entry, checksum]`. */
const ChangeRows = Schema.fromJsonString(Schema.Array(Schema.Tuple([Schema.String, Schema.Number])))
const decodeChangeRows = Schema.decodeUnknownResult(ChangeRows)

interface Slot {
  readonly lock: Semaphore.Semaphore
  /** Changes logged since the last full save by this process; `undefined`: the next save is a full one. */
  logged: number | undefined
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
      slot = { lock: Semaphore.makeUnsafe(1), logged: undefined }
      slots.set(stateName, slot)
    }
    return slot
  }

  const failed = (stateName: string, operation: "load" | "save") => (error: SqlError) =>
    new PersistenceFailed({ stateName, operation, reason: error.message, cause: error })

  /** Upserts the record and clears the log, in one statement. */
  const saveRecord = (stateName: string, record: StoredState, json: string) =>
    sql`WITH cleared AS (
      DELETE FROM ${changes} WHERE node = ${node} AND state_name = ${stateName}
    )
    INSERT INTO ${records} (node, state_name, incarnation, age, record, checksum)
    VALUES (${node}, ${stateName}, ${record.generation.incarnation}, ${record.generation.age}, ${json}, ${crc32(json)})
    ON CONFLICT (node, state_name) DO UPDATE SET
      incarnation = excluded.incarnation,
      age = excluded.age,
      record = excluded.record,
      checksum = excluded.checksum`

  /** Appends one change (a retried generation replaces its earlier attempt). */
  const saveChange = (stateName: string, change: StoredChange, json: string) =>
    sql`INSERT INTO ${changes} (node, state_name, incarnation, age, entry, checksum)
    VALUES (${node}, ${stateName}, ${change.generation.incarnation}, ${change.generation.age}, ${json}, ${crc32(json)})
    ON CONFLICT (node, state_name, incarnation, age) DO UPDATE SET
      entry = excluded.entry,
      checksum = excluded.checksum`

  const save = (stateName: string, record: StoredState, change?: StoredChange) =>
    Effect.suspend(() => {
      const slot = slotOf(stateName)
      const refuse = (reason: string, cause: unknown) =>
        Effect.fail(new PersistenceFailed({ stateName, operation: "save", reason, cause }))
      const write = Effect.suspend((): Effect.Effect<void, PersistenceFailed | SqlError> => {
        const logged = slot.logged
        if (change !== undefined && logged !== undefined && logged + 1 < compactEvery) {
          const json = encodeChange(change)
          if (Result.isFailure(json)) return refuse(`cannot encode the change: ${json.failure.message}`, json.failure)
          return saveChange(stateName, change, json.success).pipe(
            Effect.andThen(Effect.sync(() => {
              slot.logged = logged + 1
            }))
          )
        }
        const { changes: _, ...snapshot } = record
        const json = encodeRecord(snapshot)
        if (Result.isFailure(json)) return refuse(`cannot encode the record: ${json.failure.message}`, json.failure)
        return saveRecord(stateName, record, json.success).pipe(
          Effect.andThen(Effect.sync(() => {
            slot.logged = 0
          }))
        )
      })
      return write.pipe(
        Effect.catchTag("SqlError", (error) =>
          Effect.andThen(
            Effect.sync(() => {
              slot.logged = undefined
            }),
            Effect.fail(failed(stateName, "save")(error))
          )),
        Semaphore.withPermits(slot.lock, 1)
      )
    })

  const load = (stateName: string) =>
    Effect.suspend(() => {
      const slot = slotOf(stateName)
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
        Effect.catchTag("SqlError", (error) => Effect.fail(failed(stateName, "load")(error))),
        Semaphore.withPermits(slot.lock, 1)
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
 * `"schema.name"` with parts of 1 to 50 bytes, or `compactEvery` is not a
 * positive integer.
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

/**
 * Group commit across the states of a node: 64 states (simple, 1 KiB each)
 * on one node, one caller per state mutating it back to back (each awaiting
 * its acknowledgement before the next mutation), so every save covers one
 * mutation and the saves of different states can only share an fsync in the
 * store.
 *
 * - `P1/64`: the file store (its defaults: the node journal) against the
 *   group-commit floor measured in the same run, interleaved with it: a raw
 *   loop that appends 64 entries of the size the store writes (one per
 *   state) with one `write` and one `fsync`, counted as 64 records per fsync.
 *   `P1/64/p99`: p99 of save-to-acknowledge (a save's call to its return,
 *   measured around the store) against the p99 of that raw write + fsync.
 * - `P3/64`: the Postgres store against a raw multi-row upsert of 64 rows of
 *   the same size per statement through the same client, counted as 64
 *   records per statement. `P3/64/p99` as for the file store.
 *
 * Run: `npm run bench -- manystates`.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { PgClient } from "@effect/sql-pg"
import { Deferred, Duration, Effect, Fiber, Layer, Redacted, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import { DistributedState, NodeId, StatePersistence, StateRegistry } from "dstate"
import { FilePersistence, PostgresPersistence } from "dstate/node"
import { InProcessRuntime, SimNetwork } from "dstate/testing"
import type { Row } from "./inprocess.ts"

const states = 64
const data = "d".repeat(1000)
const definitions = Array.from({ length: states }, (_, i) =>
  DistributedState.make({
    name: `bench/many-${i}`,
    schema: Schema.Struct({ seq: Schema.Int, data: Schema.String }),
    initial: () => ({ seq: 0, data })
  }))

const rounds = 3
const subjectMillis = 1000
const floorMillis = 500
const warmupMillis = 300

const p99 = (latencies: ReadonlyArray<number>) => {
  const sorted = [...latencies].sort((a, b) => a - b)
  return sorted[Math.max(0, Math.ceil(sorted.length * 0.99) - 1)] ?? Number.NaN
}

interface Timing {
  count: number
  millis: number
  readonly latencies: Array<number>
}

const timing = (): Timing => ({ count: 0, millis: 0, latencies: [] })

/** A store whose saves are timed into `current.latencies` while `current` is set. */
const timed = (store: StatePersistence.StatePersistence["Service"], current: { timing: Timing | undefined }) =>
  StatePersistence.StatePersistence.of({
    load: store.load,
    save: (name, record, change) =>
      Effect.suspend(() => {
        const t = current.timing
        if (t === undefined) return store.save(name, record, change)
        const start = performance.now()
        return Effect.tap(store.save(name, record, change), () => Effect.sync(() => t.latencies.push(performance.now() - start)))
      })
  })

/** The registry with 64 registered states over `store`, and a function that mutates all of them for `millis`. */
const node = (store: StatePersistence.StatePersistence["Service"]) =>
  Effect.gen(function*() {
    const network = yield* SimNetwork.make
    const context = yield* Layer.build(StateRegistry.layer.pipe(
      Layer.provide(InProcessRuntime.layer(network, NodeId.make("bench-node"))),
      Layer.provide(Layer.succeed(StatePersistence.StatePersistence, store))
    ))
    const handles = yield* Effect.forEach(definitions, (d) => StateRegistry.register(d)).pipe(Effect.provideContext(context))
    return (millis: number, into: Timing | undefined) =>
      Effect.gen(function*() {
        const stop = yield* Deferred.make<void>()
        let mutations = 0
        const started = performance.now()
        const fibers = yield* Effect.forEach(handles, (handle) =>
          Effect.forkChild(Effect.gen(function*() {
            while (!(yield* Deferred.isDone(stop))) {
              yield* Effect.orDie(handle.mutate((s) => ({ seq: s.seq + 1, data: s.data })))
              mutations++
            }
          })))
        yield* Effect.sleep(millis)
        yield* Deferred.succeed(stop, undefined)
        yield* Effect.forEach(fibers, Fiber.join)
        if (into !== undefined) {
          into.count += mutations
          into.millis += performance.now() - started
        }
      })
  })

/** Alternates `subject` and `floor` rounds after a warm-up of each; returns both timings. */
const interleave = <E, E2>(
  subject: (millis: number, into: Timing | undefined) => Effect.Effect<void, E>,
  floor: (millis: number, into: Timing | undefined) => Effect.Effect<void, E2>
) =>
  Effect.gen(function*() {
    const a = timing()
    const b = timing()
    yield* subject(warmupMillis, undefined)
    yield* floor(warmupMillis, undefined)
    for (let round = 0; round < rounds; round++) {
      yield* floor(floorMillis, b)
      yield* subject(subjectMillis, a)
    }
    yield* floor(floorMillis, b)
    return { subject: a, floor: b }
  })

/**
 * The 64 states over `store` (saves timed while a round is measured) in rounds alternating with `floor`'s
 * (`interleave`).
 */
const againstFloor = <E>(
  store: StatePersistence.StatePersistence["Service"],
  floor: (millis: number, into: Timing | undefined) => Effect.Effect<void, E>
) =>
  Effect.gen(function*() {
    const current: { timing: Timing | undefined } = { timing: undefined }
    const mutateAll = yield* node(timed(store, current))
    return yield* interleave(
      (millis, into) =>
        Effect.suspend(() => {
          current.timing = into
          return Effect.ensuring(mutateAll(millis, into), Effect.sync(() => (current.timing = undefined)))
        }),
      floor
    )
  })

const rowsOf = (
  id: string,
  name: string,
  baselineName: string,
  result: { readonly subject: Timing; readonly floor: Timing }
): Array<Row> => {
  const perSecond = result.subject.count / (result.subject.millis / 1000)
  const floorPerSecond = result.floor.count / (result.floor.millis / 1000)
  const ours = p99(result.subject.latencies)
  const theirs = p99(result.floor.latencies)
  return [
    {
      id,
      name: `${name}: total persisted mutations/s (${result.subject.count} mutations), against ${baselineName}`,
      value: perSecond,
      unit: "mutations/s",
      baseline: floorPerSecond,
      baselineName,
      ratio: perSecond / floorPerSecond,
      target: ">= 0.5",
      met: perSecond / floorPerSecond >= 0.5
    },
    {
      id: `${id}/p99`,
      name: `${name}: p99 save-to-acknowledge (${result.subject.latencies.length} saves), against the p99 of one ${baselineName}`,
      value: ours,
      unit: "ms",
      baseline: theirs,
      baselineName: `p99 of one ${baselineName}`,
      ratio: ours / theirs,
      target: "<= 2",
      met: ours / theirs <= 2
    }
  ]
}

// ---- the file store -----------------------------------------------------------------------------

/** The bytes of one journal entry of a bench state's record (entry header, kind, name, JSON). */
const entryBytes = () => {
  const record = {
    generation: { incarnation: 1_717_171_717_171, age: 123_456 },
    storageVersion: 1,
    value: { seq: 123_456, data },
    createdAt: 1_717_171_717_000,
    modifiedAt: 1_717_171_717_999
  }
  return 12 + 5 + Buffer.byteLength(definitions[0].name) + Buffer.byteLength(JSON.stringify(record))
}

const fileFloor = (directory: string) => {
  const fd = fs.openSync(nodePath.join(directory, "floor.journal"), "a")
  const batch = Buffer.alloc(states * entryBytes(), 0x61)
  let written = 0
  return {
    close: () => fs.closeSync(fd),
    run: (millis: number, into: Timing | undefined) =>
      Effect.sync(() => {
        const started = performance.now()
        let batches = 0
        while (performance.now() - started < millis) {
          const t = performance.now()
          fs.writeSync(fd, batch)
          fs.fsyncSync(fd)
          into?.latencies.push(performance.now() - t)
          batches++
          written += batch.length
          if (written > 64 * 1024 * 1024) {
            fs.ftruncateSync(fd, 0)
            written = 0
          }
        }
        if (into !== undefined) {
          into.count += batches * states
          into.millis += performance.now() - started
        }
      })
  }
}

export const runFile = Effect.gen(function*() {
  const root = fs.mkdtempSync(nodePath.join(process.env.DSTATE_BENCH_DIR ?? os.tmpdir(), "dstate-many-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
  const floor = fileFloor(root)
  yield* Effect.addFinalizer(() => Effect.sync(floor.close))
  const store = yield* FilePersistence.make({ directory: nodePath.join(root, "store") }).pipe(
    Effect.provide([NodeFileSystem.layer, NodePath.layer])
  )
  const result = yield* againstFloor(store, floor.run)
  return rowsOf(
    "P1/64",
    `file store (node journal), ${states} states of 1 KiB on one node, one caller each`,
    `raw write of ${states} entries + fsync (${states} records per fsync)`,
    result
  )
}).pipe(Effect.scoped)

// ---- Postgres -----------------------------------------------------------------------------------

const postgresUrl = process.env.DSTATE_BENCH_POSTGRES_URL ?? process.env.DSTATE_TEST_POSTGRES_URL ??
  "postgres://postgres@127.0.0.1:5432/test"

const postgres = Effect.gen(function*() {
  const sql = yield* PgClient.PgClient
  const table = `dstate_bench_many_${process.pid}`
  const raw = sql(`${table}_raw`)
  yield* Effect.addFinalizer(() => sql`DROP TABLE IF EXISTS ${sql(table)}, ${sql(`${table}_changes`)}, ${raw}`.pipe(Effect.ignore))
  yield* sql`CREATE TABLE IF NOT EXISTS ${raw} (k text PRIMARY KEY, v text NOT NULL)`
  const text = JSON.stringify({
    generation: { incarnation: 1_717_171_717_171, age: 123_456 },
    storageVersion: 1,
    value: { seq: 123_456, data },
    createdAt: 1_717_171_717_000,
    modifiedAt: 1_717_171_717_999
  })
  const rows = definitions.map((d) => ({ k: d.name, v: text })) as unknown as readonly [{ k: string; v: string }, ...Array<{ k: string; v: string }>]
  const floor = (millis: number, into: Timing | undefined) =>
    Effect.gen(function*() {
      const started = performance.now()
      let statements = 0
      while (performance.now() - started < millis) {
        const t = performance.now()
        yield* sql`INSERT INTO ${raw} ${sql.insert(rows)} ON CONFLICT (k) DO UPDATE SET v = excluded.v`
        into?.latencies.push(performance.now() - t)
        statements++
      }
      if (into !== undefined) {
        into.count += statements * states
        into.millis += performance.now() - started
      }
    })
  const store = yield* PostgresPersistence.make({ node: "bench", table })
  const result = yield* againstFloor(store, floor)
  return rowsOf(
    "P3/64",
    `postgres store, ${states} states of 1 KiB on one node, one caller each`,
    `raw multi-row upsert of ${states} rows (${states} records per statement)`,
    result
  )
}).pipe(Effect.scoped)

export const run = Effect.gen(function*() {
  const rows: Array<Row> = [...(yield* runFile)]
  const pg = yield* postgres.pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(postgresUrl) })),
    Effect.timeout(Duration.minutes(2)),
    Effect.catchCause((cause) =>
      Effect.as(Effect.sync(() => console.error(`P3/64 skipped: Postgres at ${postgresUrl} is not usable:\n${cause}`)), [])
    )
  )
  rows.push(...pg)
  return rows
}).pipe(Effect.orDie)

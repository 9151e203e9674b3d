/**
 * Persistence benchmarks: saves per second and p99 save latency of the
 * durable stores, each against the raw floor of the same durability measured
 * in the same run, interleaved with it (five alternating rounds each, after a
 * warm-up), so that a change in the machine's load hits both alike.
 *
 * - P1 file store, snapshot mode (a simple state: every save writes the whole
 *   record) vs a plain loop of `writeFileSync` + `fsyncSync` of a temporary
 *   file of the same size, `renameSync` over the target and `fsyncSync` of the
 *   directory (the durability the store gives).
 * - P2 file store, delta-log mode (a delta-aware state: every save appends a
 *   ~60-byte change, every 64th writes a snapshot, the default `compactEvery`)
 *   vs a plain loop that appends an entry of the same size and fsyncs it, with
 *   every 64th iteration a raw snapshot as in P1 and the log emptied.
 * - P3 Postgres store (full record upsert, one statement) vs a raw
 *   single-statement upsert of a text value of the same size into a two-column
 *   table, through the same `PgClient`.
 *
 * Each at a 1 KiB and a 100 KiB state (random hex, so that neither the disk
 * nor Postgres' TOAST compression sees an easy payload). Files go to a fresh
 * directory under `DSTATE_BENCH_DIR` (default: the OS temporary directory);
 * Postgres is `DSTATE_BENCH_POSTGRES_URL`, else `DSTATE_TEST_POSTGRES_URL`,
 * else postgres://postgres@127.0.0.1:5432/test (P3 is skipped, with a
 * message, when it cannot connect).
 *
 * Run: `npm run bench -- persistence` (this file only) or `npm run bench` (all).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import type { StatePersistence } from "dstate"
import { FilePersistence, PostgresPersistence } from "dstate/node"
import type { Row } from "./inprocess.ts"

type Store = StatePersistence.StatePersistence["Service"]

const now = () => performance.now()

const sizes = [{ label: "1 KiB", bytes: 1024 }, { label: "100 KiB", bytes: 100 * 1024 }] as const
const compactEvery = FilePersistence.defaultCompactEvery
const rounds = 5
const roundMillis = 400
const warmupMillis = 200

/** Random lower-case hex of `length` characters from a fixed seed (mulberry32). */
const hex = (length: number, seed: number) => {
  let a = seed >>> 0
  let out = ""
  while (out.length < length) {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    out += ((t ^ (t >>> 14)) >>> 0).toString(16).padStart(8, "0")
  }
  return out.slice(0, length)
}

/** The record of the benchmark state at `seq`, its value carrying `data`. */
const recordAt = (seq: number, data: string): StatePersistence.StoredState => ({
  generation: { incarnation: 1_717_171_717_171, age: seq },
  storageVersion: 1,
  value: { seq, data },
  createdAt: 1_717_171_717_000,
  modifiedAt: 1_717_171_717_000 + seq
})

const changeAt = (seq: number): StatePersistence.StoredChange => ({
  generation: { incarnation: 1_717_171_717_171, age: seq },
  value: { add: 1, label: `#${seq}` }
})

/** The bytes the file store writes for a record: its 12-byte header and the JSON. */
const snapshotBytes = (record: StatePersistence.StoredState) => Buffer.alloc(12 + Buffer.byteLength(JSON.stringify(record)), 0x61)

// ---- measurement --------------------------------------------------------------------------------

interface Timing {
  readonly latencies: Array<number>
  millis: number
}

interface Summary {
  readonly perSecond: number
  readonly p99: number
  readonly count: number
}

const summarize = (timing: Timing): Summary => {
  const sorted = [...timing.latencies].sort((a, b) => a - b)
  return {
    perSecond: sorted.length / (timing.millis / 1000),
    p99: sorted[Math.max(0, Math.ceil(sorted.length * 0.99) - 1)] ?? Number.NaN,
    count: sorted.length
  }
}

/** Runs `step` back to back for `millis`, recording every latency into `timing`. */
const phase = <E>(step: Effect.Effect<void, E>, millis: number, timing: Timing | undefined) =>
  Effect.gen(function*() {
    const start = now()
    while (now() - start < millis) {
      const t = now()
      yield* step
      timing?.latencies.push(now() - t)
    }
    if (timing !== undefined) timing.millis += now() - start
  })

/** Measures `subject` and `baseline` in alternating rounds after a warm-up of each. */
const compare = <E1, E2>(subject: Effect.Effect<void, E1>, baseline: Effect.Effect<void, E2>) =>
  Effect.gen(function*() {
    const a: Timing = { latencies: [], millis: 0 }
    const b: Timing = { latencies: [], millis: 0 }
    yield* phase(subject, warmupMillis, undefined)
    yield* phase(baseline, warmupMillis, undefined)
    for (let round = 0; round < rounds; round++) {
      if (round % 2 === 0) {
        yield* phase(subject, roundMillis, a)
        yield* phase(baseline, roundMillis, b)
      } else {
        yield* phase(baseline, roundMillis, b)
        yield* phase(subject, roundMillis, a)
      }
    }
    return { subject: summarize(a), baseline: summarize(b) }
  })

/** The throughput and p99 rows of one comparison. */
const rowsOf = (
  id: string,
  name: string,
  baselineName: string,
  result: { readonly subject: Summary; readonly baseline: Summary }
): Array<Row> => {
  const throughput = result.subject.perSecond / result.baseline.perSecond
  const latency = result.subject.p99 / result.baseline.p99
  return [
    {
      id,
      name: `${name}: saves/s (${result.subject.count} saves)`,
      value: result.subject.perSecond,
      unit: "saves/s",
      baseline: result.baseline.perSecond,
      baselineName,
      ratio: throughput,
      target: ">= 0.5",
      met: throughput >= 0.5
    },
    {
      id: `${id}/p99`,
      name: `${name}: p99 save latency`,
      value: result.subject.p99,
      unit: "ms",
      baseline: result.baseline.p99,
      baselineName,
      ratio: latency,
      target: "<= 2",
      met: latency <= 2
    }
  ]
}

// ---- the file store -----------------------------------------------------------------------------

const fsyncDirectory = (directory: string) => {
  const fd = fs.openSync(directory, "r")
  fs.fsyncSync(fd)
  fs.closeSync(fd)
}

/** One raw durable replacement of `target`: temporary file, fsync, rename, fsync of the directory. */
const rawReplace = (directory: string, target: string, bytes: Buffer) => {
  const temp = `${target}.tmp`
  const fd = fs.openSync(temp, "w")
  fs.writeFileSync(fd, bytes)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  fs.renameSync(temp, target)
  fsyncDirectory(directory)
}

/** A file store in a fresh directory of its own, removed with the scope. */
const withFileStore = <A, E>(root: string, f: (store: Store) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const directory = fs.mkdtempSync(nodePath.join(root, "store-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true })))
    // Built in this scope: the store's open log file lives until the scope closes.
    const store = yield* FilePersistence.make({ directory, compactEvery }).pipe(
      Effect.provide([NodeFileSystem.layer, NodePath.layer])
    )
    return yield* f(store)
  }).pipe(Effect.scoped)

/** A fresh directory for a raw loop, removed with the scope. */
const rawDirectory = (root: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(nodePath.join(root, "raw-"))),
    (directory) => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true }))
  )

const fileSnapshot = (root: string, data: string) =>
  Effect.gen(function*() {
    const directory = yield* rawDirectory(root)
    const target = nodePath.join(directory, "state.snapshot")
    const bytes = snapshotBytes(recordAt(1_000_000, data))
    const baseline = Effect.sync(() => rawReplace(directory, target, bytes))
    return yield* withFileStore(root, (store) => {
      let seq = 0
      return compare(Effect.suspend(() => store.save("bench", recordAt(++seq, data))), baseline)
    })
  }).pipe(Effect.scoped)

const fileDelta = (root: string, data: string) =>
  Effect.gen(function*() {
    const directory = yield* rawDirectory(root)
    const target = nodePath.join(directory, "state.snapshot")
    const snapshot = snapshotBytes(recordAt(1_000_000, data))
    // A log entry: 12-byte header and the change's JSON.
    const entry = Buffer.alloc(12 + Buffer.byteLength(JSON.stringify(changeAt(1_000_000))), 0x62)
    const log = yield* Effect.acquireRelease(
      Effect.sync(() => fs.openSync(nodePath.join(directory, "state.log"), "a")),
      (fd) => Effect.sync(() => fs.closeSync(fd))
    )
    let iteration = 0
    const baseline = Effect.sync(() => {
      if (++iteration % compactEvery === 0) {
        rawReplace(directory, target, snapshot)
        fs.ftruncateSync(log, 0)
        fs.fsyncSync(log)
      } else {
        fs.writeSync(log, entry)
        fs.fsyncSync(log)
      }
    })
    return yield* withFileStore(root, (store) => {
      let seq = 0
      return compare(
        Effect.suspend(() => {
          seq++
          return store.save("bench", recordAt(seq, data), changeAt(seq))
        }),
        baseline
      )
    })
  }).pipe(Effect.scoped)

// ---- Postgres -----------------------------------------------------------------------------------

const postgresUrl = process.env.DSTATE_BENCH_POSTGRES_URL ?? process.env.DSTATE_TEST_POSTGRES_URL ??
  "postgres://postgres@127.0.0.1:5432/test"

const postgres = (data: string, label: string) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const table = `dstate_bench_${process.pid}_${label.replace(/\W/g, "")}`
    const raw = sql(`${table}_raw`)
    yield* Effect.addFinalizer(() =>
      sql`DROP TABLE IF EXISTS ${sql(table)}, ${sql(`${table}_changes`)}, ${raw}`.pipe(Effect.ignore)
    )
    yield* sql`CREATE TABLE IF NOT EXISTS ${raw} (k text PRIMARY KEY, v text NOT NULL)`
    const text = JSON.stringify(recordAt(1_000_000, data))
    const baseline = Effect.asVoid(
      sql`INSERT INTO ${raw} (k, v) VALUES ('bench', ${text}) ON CONFLICT (k) DO UPDATE SET v = excluded.v`
    )
    const store = yield* PostgresPersistence.make({ node: "bench", table })
    let seq = 0
    return yield* compare(Effect.suspend(() => store.save("bench", recordAt(++seq, data))), baseline)
  }).pipe(Effect.scoped)

/** The file system type of `directory`, for the report. */
const fileSystemType = (directory: string) => {
  const type = fs.statfsSync(directory).type
  const known: Record<number, string> = { 0xef53: "ext4", 0x58465342: "xfs", 0x9123683e: "btrfs", 0x01021994: "tmpfs" }
  return known[type] ?? `fs type 0x${type.toString(16)}`
}

export const run = Effect.gen(function*() {
  const rows: Array<Row> = []
  const root = fs.mkdtempSync(nodePath.join(process.env.DSTATE_BENCH_DIR ?? os.tmpdir(), "dstate-bench-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
  const where = fileSystemType(root)
  for (const [i, size] of sizes.entries()) {
    const data = hex(size.bytes, 0x5eed + i)
    rows.push(...rowsOf(
      `P1/${size.bytes / 1024}k`,
      `file store, snapshot mode, ${size.label} state (${where})`,
      "write+fsync+rename+dir fsync",
      yield* fileSnapshot(root, data)
    ))
    rows.push(...rowsOf(
      `P2/${size.bytes / 1024}k`,
      `file store, delta-log mode, ${size.label} state, compactEvery ${compactEvery} (${where})`,
      `append+fsync, every ${compactEvery}th a raw snapshot`,
      yield* fileDelta(root, data)
    ))
  }
  const pg = yield* Effect.gen(function*() {
    const out: Array<Row> = []
    for (const [i, size] of sizes.entries()) {
      out.push(...rowsOf(
        `P3/${size.bytes / 1024}k`,
        `postgres store, ${size.label} state`,
        "raw single-statement upsert",
        yield* postgres(hex(size.bytes, 0x5eed + i), size.label)
      ))
    }
    return out
  }).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(postgresUrl) })),
    Effect.timeout(Duration.minutes(2)),
    Effect.catchCause((cause) =>
      Effect.as(Effect.sync(() => console.error(`P3 skipped: Postgres at ${postgresUrl} is not usable:\n${cause}`)), [])
    )
  )
  rows.push(...pg)
  return rows
}).pipe(Effect.scoped)

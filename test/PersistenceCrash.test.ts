/**
 * Crash safety of the durable stores with real processes: a child node
 * (test/fixtures/crashWriter.ts) mutates a simple state (full snapshots) and
 * a delta-aware state (change log, compacted often) as fast as it can and
 * prints every acknowledged generation; the test kills it with SIGKILL at
 * seeded-random moments (most in the middle of the mutation stream, some
 * during startup and the first saves) and starts the next child on the same
 * store. Every child reports what it loaded: it must be exactly the last
 * acknowledged generation or the one after it (a save that completed before
 * the kill but was not yet printed), in the same incarnation, with a value
 * that is exactly what that generation wrote — never torn, never older, never
 * a fresh start.
 *
 * Seeds: DSTATE_CRASH_SEED overrides the fixed seeds; a failure names the seed
 * and the round.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Duration, Effect, FileSystem, Layer, Redacted, Schedule } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as ChildProcesses from "./support/ChildProcesses.ts"

const writer = fileURLToPath(new URL("./fixtures/crashWriter.ts", import.meta.url))
const url = process.env.DSTATE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const seedFromEnv = process.env.DSTATE_CRASH_SEED === undefined ? undefined : Number(process.env.DSTATE_CRASH_SEED)

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface Child {
  readonly process: ChildProcess
  readonly lines: Array<string>
  stderr: string
  closed: boolean
  readonly waiters: Set<() => void>
}

/**
 * Starts a writer, which loads its modules and waits for `go`; it is killed
 * when the scope closes if still running.
 */
const startWriter = (config: unknown, env: NodeJS.ProcessEnv) =>
  Effect.acquireRelease(
    Effect.sync((): Child => {
      const proc = spawn(process.execPath, [writer, JSON.stringify(config)], { stdio: ["pipe", "pipe", "pipe"], env })
      const child: Child = { process: proc, lines: [], stderr: "", closed: false, waiters: new Set() }
      let partial = ""
      proc.stdout!.setEncoding("utf8")
      proc.stdout!.on("data", (chunk: string) => {
        const parts = (partial + chunk).split("\n")
        partial = parts.pop()!
        child.lines.push(...parts)
        ChildProcesses.notify(child)
      })
      ChildProcesses.watch(child)
      return child
    }),
    (child) =>
      Effect.sync(() => {
        if (!child.closed) child.process.kill("SIGKILL")
      })
  )

/** Lets a started writer open the store and begin. */
const go = (child: Child) =>
  Effect.sync(() => {
    child.process.stdin!.write("go\n")
  })

/** Waits until `done()` holds, re-checked on every output line and on exit. */
const waitFor = (child: Child, done: () => boolean, what: string) =>
  Effect.callback<void>((resume) => {
    const check = () => {
      if (done()) {
        child.waiters.delete(check)
        resume(Effect.void)
      }
    }
    child.waiters.add(check)
    check()
    return Effect.sync(() => child.waiters.delete(check))
  }).pipe(
    Effect.timeoutOrElse({
      duration: Duration.seconds(20),
      orElse: () => Effect.die(new Error(`timed out waiting for ${what}; stderr: ${child.stderr}`))
    })
  )

interface Generation {
  readonly incarnation: number
  readonly age: number
}

const baseStates = ["ledger", "tally"] as const
type StateName = string

interface Loaded extends Generation {
  readonly consistent: boolean
}

const parseLoaded = (lines: ReadonlyArray<string>): Partial<Record<StateName, Loaded>> => {
  const out: Partial<Record<StateName, Loaded>> = {}
  for (const line of lines) {
    const [kind, state, incarnation, age, consistent] = line.split(" ")
    if (kind === "loaded") {
      out[state as StateName] = { incarnation: Number(incarnation), age: Number(age), consistent: consistent === "true" }
    }
  }
  return out
}

/** The last acknowledged generation of each state in a child's output. */
const lastAcks = (lines: ReadonlyArray<string>): Partial<Record<StateName, Generation>> => {
  const out: Partial<Record<StateName, Generation>> = {}
  for (const line of lines) {
    const [kind, state, incarnation, age] = line.split(" ")
    if (kind === "ack") out[state as StateName] = { incarnation: Number(incarnation), age: Number(age) }
  }
  return out
}

interface Outcome {
  /** Restarts whose load was checked. */
  readonly restarts: number
  /** Rounds whose kill came after both states had acknowledged a mutation (the others: after "ready"). */
  readonly busyKills: number
  /** Acknowledged mutations over all writers. */
  readonly acks: number
  /** Loads that found mutations after the last acknowledged one (saved, killed before printing them). */
  readonly oneNewer: number
  /** What the last writer loaded. */
  readonly final: Partial<Record<StateName, Loaded>>
  /** The states checked. */
  readonly states: ReadonlyArray<StateName>
}

/** Share of the rounds whose kill is timed from "ready" (landing in startup or the first saves). */
const earlyKillShare = 0.2

/** Writers started ahead of the one running (their module loading overlaps the current round). */
const startedAhead = 2

/**
 * Runs `kills` writers one after the other on the same store, killing each at
 * a random moment, then a last one that only loads. Checks every load.
 *
 * Each writer is started (its modules loading) while earlier ones still run,
 * and told to open the store only after the previous one is dead and
 * `afterKill` is done: a restart on a live store is not what is tested.
 */
const crashLoop = (options: {
  /** The writer's config in a round. */
  readonly config: (round: number) => unknown
  readonly kills: number
  readonly seed: number
  readonly maxDelayMillis: number
  /** Runs after a writer died, before the next opens the store. */
  readonly afterKill?: ((round: number) => Effect.Effect<void, unknown>) | undefined
  /** Concurrent writers per state (as in the config): this many mutations may be durable and not acknowledged. */
  readonly writers?: number | undefined
  /** More simple states on the node (as `many` in the config), checked like the others. */
  readonly many?: number | undefined
}) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    // Node's compile cache, shared by the writers of this run, makes their start cheaper.
    const env = { ...process.env, NODE_COMPILE_CACHE: yield* fs.makeTempDirectoryScoped({ prefix: "dstate-crash-cache-" }) }
    const random = prng(options.seed)
    const writers = options.writers ?? 1
    const states: ReadonlyArray<StateName> = [
      ...baseStates,
      ...Array.from({ length: options.many ?? 0 }, (_, i) => `m${i}`)
    ]
    const acked: Partial<Record<StateName, Generation>> = {}
    const loadedBefore: Partial<Record<StateName, Generation>> = {}
    let incarnations: Partial<Record<StateName, number>> | undefined
    let acks = 0
    let oneNewer = 0
    let restarts = 0
    let busyKills = 0
    let final: Partial<Record<StateName, Loaded>> | undefined
    const started: Array<Child> = []
    const startUpTo = (round: number) =>
      Effect.gen(function*() {
        while (started.length <= Math.min(round, options.kills)) {
          started.push(yield* startWriter(options.config(started.length), env))
        }
      })
    for (let round = 0; round <= options.kills; round++) {
      const where = `seed ${options.seed}, round ${round}`
      yield* startUpTo(round + startedAhead)
      const child = started[round]
      yield* go(child)
      yield* waitFor(child, () => child.closed || child.lines.includes("ready"), `"ready" (${where})`)
      assert.isFalse(child.closed, `the writer exited by itself (${where}): ${child.stderr}`)
      const loaded = parseLoaded(child.lines)
      for (const state of states) {
        const got = loaded[state]
        assert.isDefined(got, `${state}: the writer reported no load (${where})`)
        if (got === undefined) return yield* Effect.die("unreachable")
        assert.isTrue(got.consistent, `${state}: loaded value does not match its generation (${where})`)
        if (incarnations === undefined) {
          assert.strictEqual(got.age, 0, `${state}: the first writer starts fresh (${where})`)
          continue
        }
        assert.strictEqual(got.incarnation, incarnations[state], `${state}: a restart must keep the incarnation (${where})`)
        // What the previous writer started from counts as acknowledged too: a writer killed before
        // its first acknowledgement may still have saved mutations on top of it, one per writer at most.
        const base = Math.max(acked[state]?.age ?? 0, loadedBefore[state]?.age ?? 0)
        assert.isTrue(
          got.age >= base && got.age <= base + writers,
          `${state}: loaded age ${got.age}, last acknowledged or loaded ${base}, ${writers} writers (${where})`
        )
        if (got.age > base) oneNewer++
      }
      if (incarnations === undefined) {
        incarnations = Object.fromEntries(states.map((state) => [state, loaded[state]!.incarnation]))
      } else {
        restarts++
      }
      for (const state of states) loadedBefore[state] = loaded[state]!
      if (round === options.kills) {
        final = loaded
        break
      }
      // Most kills land in the middle of the mutation stream: timed from the first acknowledgement
      // of both states, so that a slow machine does not turn them into kills during startup.
      const early = random() < earlyKillShare
      if (!early) {
        yield* waitFor(
          child,
          () => child.closed || states.every((state) => child.lines.some((line) => line.startsWith(`ack ${state} `))),
          `the first acknowledgements (${where})`
        )
        assert.isFalse(child.closed, `the writer exited by itself (${where}): ${child.stderr}`)
        busyKills++
      }
      yield* Effect.sleep(Duration.millis(Math.floor(random() * options.maxDelayMillis)))
      child.process.kill("SIGKILL")
      yield* waitFor(child, () => child.closed, `the writer to die (${where})`)
      const last = lastAcks(child.lines)
      for (const state of states) {
        const ack = last[state]
        if (ack !== undefined) {
          assert.strictEqual(ack.incarnation, incarnations[state], `${state}: acknowledged in another incarnation (${where})`)
          acked[state] = ack
        }
      }
      acks += child.lines.filter((line) => line.startsWith("ack ")).length
      if (options.afterKill !== undefined) yield* options.afterKill(round)
    }
    return { restarts, busyKills, acks, oneNewer, final: final!, states } satisfies Outcome
  })

/** What every crash loop must show beyond its per-round checks. */
const checkOutcome = (outcome: Outcome, kills: number, seed: number) => {
  assert.strictEqual(outcome.restarts, kills)
  // Most kills came in the middle of the mutation stream, and every such round left at least one
  // more durable mutation of each state: the last writer loaded at least that many.
  assert.isTrue(outcome.busyKills >= kills / 2, `only ${outcome.busyKills} of ${kills} kills while busy (seed ${seed})`)
  for (const state of outcome.states) {
    const age = outcome.final[state]?.age ?? -1
    assert.isTrue(
      age >= outcome.busyKills,
      `${state}: the last writer loaded age ${age} after ${outcome.busyKills} busy rounds (seed ${seed})`
    )
  }
}

describe("persistence under SIGKILL", () => {
  it.live("file store: 50 kills, every restart loads the last acknowledged mutation or the next", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-crash-" })
      const seed = seedFromEnv ?? 0x5eed_f11e
      const outcome = yield* crashLoop({
        config: () => ({ backend: "file", directory, compactEvery: 5 }),
        kills: 50,
        seed,
        maxDelayMillis: 60
      })
      checkOutcome(outcome, 50, seed)
    }).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)), { timeout: 90_000 })

  it.live("file store, 8 concurrent writers per state (group commit): 25 kills, every restart loads the acknowledged mutations or ones after them", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-crash-group-" })
      const seed = seedFromEnv ?? 0x5eed_9c01
      const outcome = yield* crashLoop({
        config: () => ({ backend: "file", directory, compactEvery: 5, writers: 8 }),
        kills: 25,
        seed,
        maxDelayMillis: 60,
        writers: 8
      })
      checkOutcome(outcome, 25, seed)
      // Eight writers per state keep saves in flight: acknowledgements came in groups, more than one per round.
      assert.isAbove(outcome.acks, 25 * 2)
    }).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)), { timeout: 90_000 })

  it.live("file store, 16 more states and 4 concurrent writers per state (saves of all states share journal fsyncs): 20 kills, every restart loads the acknowledged mutations or ones after them", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const directory = yield* fs.makeTempDirectoryScoped({ prefix: "dstate-crash-many-" })
      const seed = seedFromEnv ?? 0x5eed_3a64
      const outcome = yield* crashLoop({
        // A small journal, so that kills also land in compactions.
        config: () => ({ backend: "file", directory, compactEvery: 5, writers: 4, many: 16, journalBytes: 256 * 1024 }),
        kills: 20,
        seed,
        maxDelayMillis: 60,
        writers: 4,
        many: 16
      })
      checkOutcome(outcome, 20, seed)
      assert.strictEqual(outcome.states.length, 18)
      assert.isAbove(outcome.acks, 20 * 18)
    }).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)), { timeout: 120_000 })

  for (
    const variant of [
      { title: "postgres store: 20 kills, every restart loads the last acknowledged mutation or the next", kills: 20, many: 0, writers: 1, suffix: "", seed: 0x5eed_0090 },
      {
        title: "postgres store, 16 more states and 4 concurrent writers per state (saves of all states share statements): 10 kills, every restart loads the acknowledged mutations or ones after them",
        kills: 10,
        many: 16,
        writers: 4,
        suffix: "_many",
        seed: 0x5eed_0d64
      }
    ]
  ) {
  it.live(variant.title, () =>
    Effect.gen(function*() {
      const table = `dstate_crash_${process.pid}${variant.suffix}`
      const sql = yield* PgClient.PgClient
      yield* Effect.addFinalizer(() =>
        sql`DROP TABLE IF EXISTS ${sql(table)}, ${sql(`${table}_changes`)}`.pipe(Effect.ignore)
      )
      const seed = seedFromEnv ?? variant.seed
      const applicationName = (round: number) => `dstate-crash-${process.pid}${variant.suffix}-${round}`
      // A statement the server received before the kill may still commit: wait until the server
      // has closed the dead writer's connections, as a real restart must (see layerPostgres).
      const connectionsClosed = (round: number) =>
        sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${
          applicationName(round)
        }`.pipe(
          Effect.repeat({ until: (rows) => rows[0].n === 0, schedule: Schedule.spaced("5 millis") }),
          Effect.timeoutOrElse({
            duration: Duration.seconds(10),
            orElse: () => Effect.die(new Error(`the connections of writer ${round} stayed open (seed ${seed})`))
          })
        )
      const outcome = yield* crashLoop({
        config: (round) => ({
          backend: "postgres",
          url,
          table,
          applicationName: applicationName(round),
          compactEvery: 5,
          writers: variant.writers,
          many: variant.many
        }),
        kills: variant.kills,
        seed,
        maxDelayMillis: 80,
        afterKill: connectionsClosed,
        writers: variant.writers,
        many: variant.many
      })
      checkOutcome(outcome, variant.kills, seed)
      assert.strictEqual(outcome.states.length, 2 + variant.many)
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.mergeAll(NodeFileSystem.layer, Layer.fresh(PgClient.layer({ url: Redacted.make(url) }))))
    ), { timeout: 90_000 })
  }
})

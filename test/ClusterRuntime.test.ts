/**
 * The Effect cluster runtime on real Effect cluster runners (socket runners
 * with `Sharding`, several in one process, each built with `Layer.fresh`):
 * the runtime conformance suite, then replication across runners whose
 * membership comes from a shared memory `RunnerStorage` and from
 * `SqlRunnerStorage` on PostgreSQL, and the reachability of a listed runner
 * that goes silent.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Effect, Exit, Layer, Option, PubSub, Redacted, References, Scope } from "effect"
import {
  MessageStorage,
  Runner,
  RunnerAddress,
  RunnerHealth,
  RunnerStorage,
  ShardingConfig,
  SocketRunner,
  SqlRunnerStorage
} from "effect/cluster"
import { RpcSerialization } from "effect/rpc"
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as Net from "node:net"
import { ActorRuntime, ClusterEvents, type DStateError, type NodeId, StateRegistry } from "dstate"
import { ClusterRuntime } from "dstate/cluster"
import { TcpRuntime } from "dstate/node"
import { Fixtures } from "dstate/testing"
import * as RuntimeSuite from "./conformance/RuntimeSuite.ts"
import { frameOf, rawAuthenticated, write } from "./support/RawClient.ts"
import { eventually, eventuallyWithin } from "./support/Eventually.ts"
import * as RealNodes from "./support/RealNodes.ts"
import { buildInOwnScope, fastTimings, type ScopedNode, secret } from "./support/RealNodes.ts"

/** How often each runner reads the RunnerStorage. */
const POLL_MILLIS = 100

/** Fast transport timings, as in the TCP runtime's tests. */
const transportOptions = {
  secret,
  pollInterval: POLL_MILLIS,
  heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("2 seconds"), checkInterval: "50 millis" },
  ...fastTimings
} satisfies ClusterRuntime.Options

// ---- ports ----------------------------------------------------------------------------------------

const listenOn = (port: number) =>
  Effect.callback<number | undefined>((resume) => {
    const server = Net.createServer()
    server.once("error", () => resume(Effect.succeed(undefined)))
    server.listen(port, "127.0.0.1", () => {
      const address = server.address()
      const bound = typeof address === "object" && address !== null ? address.port : undefined
      server.close(() => resume(Effect.succeed(bound)))
    })
  })

const usedPorts = new Set<number>()

/** A runner address whose port and dstate port (port + 1000) are both free, never handed out twice. */
const freeRunnerAddress = Effect.gen(function*() {
  while (true) {
    const port = yield* listenOn(0)
    if (port === undefined || port + 1000 > 65535 || usedPorts.has(port) || usedPorts.has(port + 1000)) continue
    if ((yield* listenOn(port + 1000)) === undefined) continue
    usedPorts.add(port)
    usedPorts.add(port + 1000)
    return RunnerAddress.make("127.0.0.1", port)
  }
})

// ---- runners --------------------------------------------------------------------------------------

/** Runner health decided by the test: a runner in `down` fails the cluster's health check. */
const makeHealth = () => {
  const down = new Set<string>()
  const layer = Layer.succeed(
    RunnerHealth.RunnerHealth,
    RunnerHealth.RunnerHealth.of({
      isAlive: (address) => Effect.sync(() => !down.has(ClusterRuntime.nodeId(address)))
    })
  )
  return { down, layer }
}

/** What the runners of one test share: how each gets its RunnerStorage, and the health check. */
interface ClusterEnv {
  readonly storage: Layer.Layer<RunnerStorage.RunnerStorage, unknown, ShardingConfig.ShardingConfig>
  readonly health: Layer.Layer<RunnerHealth.RunnerHealth>
}

type RunnerServices = ActorRuntime.ActorRuntime | ClusterEvents.ClusterEvents | RunnerStorage.RunnerStorage

interface Runner extends ScopedNode<RunnerServices> {
  readonly address: RunnerAddress.RunnerAddress
}

/**
 * One Effect cluster runner (socket transport, Sharding, the test's storage
 * and health check) with the dstate runtime on top, and `onTop` above that,
 * in its own closeable scope (closed with the test's scope at the latest).
 */
const startRunner = <Extra>(env: ClusterEnv, onTop: Layer.Layer<Extra, DStateError.InvalidOptions, RunnerServices>) =>
  Effect.gen(function*() {
    const address = yield* freeRunnerAddress
    const cluster = SocketRunner.layer.pipe(
      Layer.provide([NodeClusterSocket.layerSocketServer, NodeClusterSocket.layerClientProtocol, env.health]),
      Layer.provide(RpcSerialization.layerSchemaBinary()),
      Layer.provideMerge(Layer.merge(env.storage, MessageStorage.layerMemory))
    )
    const runner = onTop.pipe(
      Layer.provideMerge(ClusterRuntime.layer(transportOptions)),
      Layer.provideMerge(cluster),
      Layer.provideMerge(ShardingConfig.layer({
        runnerAddress: Option.some(address),
        shardsPerGroup: 12,
        refreshAssignmentsInterval: "200 millis",
        runnerHealthCheckInterval: "100 millis"
      })),
      Layer.provide(Layer.succeed(References.MinimumLogLevel, "Error")),
      Layer.fresh
    )
    const { context, scope } = yield* buildInOwnScope(runner)
    return { id: ClusterRuntime.nodeId(address), address, scope, context }
  })

const eventsOf = (node: { readonly context: Context.Context<RunnerServices> }) =>
  Context.get(node.context, ClusterEvents.ClusterEvents)
const storageOf = (node: Runner) => Context.get(node.context, RunnerStorage.RunnerStorage)

const poll = eventuallyWithin("10 seconds")

const sorted = (ids: Iterable<NodeId.NodeId>) => [...ids].map(String).sort()

/** Waits until every runner sees exactly the others as members. */
const awaitMesh = (nodes: ReadonlyArray<Runner>) => RealNodes.awaitMesh(nodes, "10 seconds")

const memoryEnv = Effect.map(RunnerStorage.makeMemory, (storage): ClusterEnv => ({
  storage: Layer.succeed(RunnerStorage.RunnerStorage, storage),
  health: RunnerHealth.layerNoop
}))

/** Runners on a memory RunnerStorage of their own; removing one closes its scope (a graceful stop). */
const makeCluster: RuntimeSuite.MakeNodes = (count) =>
  Effect.flatMap(memoryEnv, (env) => RealNodes.realCluster(count, () => startRunner(env, Layer.empty), "10 seconds"))

RuntimeSuite.suite("effect-cluster", makeCluster, { clock: "real", timeout: 20_000 })

// ---- replication across runners ------------------------------------------------------------------

/** A runner with a registry and the counter state registered. */
const startNode = (env: ClusterEnv) =>
  Effect.gen(function*() {
    const runner = yield* startRunner(env, StateRegistry.layer)
    const counter = yield* StateRegistry.register(Fixtures.Counter).pipe(
      Effect.provideContext(runner.context),
      Scope.provide(runner.scope)
    )
    return { ...runner, counter }
  })

type Node = Effect.Success<ReturnType<typeof startNode>>

/** Sets a node's counter to `value` by `value` increments. */
const count = (node: Node, value: number) =>
  Effect.repeat(node.counter.mutate((s) => ({ value: s.value + 1 })), { times: value - 1 })

/** The counter values a node holds, by node id. */
const valuesOn = (node: Node) =>
  Effect.map(node.counter.snapshot, (views) =>
    Object.fromEntries([...views].map(([id, view]) => [String(id), view.value.value]).sort()))

const expectValues = (nodes: ReadonlyArray<Node>, expected: Record<string, number>) =>
  poll(Effect.forEach(nodes, (node) =>
    Effect.map(valuesOn(node), (values) => assert.deepStrictEqual(values, expected)), { discard: true }))

/**
 * Subscribes to a node's membership events; the returned effect gives every
 * event received since the subscription (it never waits).
 */
const eventLog = (node: Runner) =>
  Effect.map(eventsOf(node).subscribe, (subscription) => {
    const seen: Array<ClusterEvents.ClusterEvent> = []
    return Effect.map(PubSub.takeUpTo(subscription, Number.POSITIVE_INFINITY), (events) => {
      seen.push(...events)
      return [...seen]
    })
  })

/** How the storage lists a runner: healthy, unhealthy, or absent. */
const listing = (storage: RunnerStorage.RunnerStorage["Service"], node: Runner) =>
  Effect.map(storage.getRunners, (runners) => {
    const entry = runners.find(([runner]) => ClusterRuntime.nodeId(runner.address) === node.id)
    return entry === undefined ? "absent" : entry[1] ? "healthy" : "unhealthy"
  })

/** Three runners, counters at 1, 2 and 3, replicated everywhere. */
const threeCounting = (env: ClusterEnv) =>
  Effect.gen(function*() {
    const nodes = [yield* startNode(env), yield* startNode(env), yield* startNode(env)]
    yield* awaitMesh(nodes)
    yield* Effect.forEach(nodes, (node, i) => count(node, i + 1), { discard: true })
    const expected = Object.fromEntries(nodes.map((n, i) => [String(n.id), i + 1]))
    yield* expectValues(nodes, expected)
    return { nodes, expected }
  })

/** The replication scenarios, against one kind of RunnerStorage. */
const scenarios = (name: string, makeEnv: Effect.Effect<ClusterEnv & { readonly down: Set<string> }, unknown, Scope.Scope>) =>
  describe(`ClusterRuntime: three runners sharing ${name}`, () => {
    it.live("node ids are the runner addresses; states replicate across runners with exact values", () =>
      Effect.gen(function*() {
        const { expected, nodes } = yield* threeCounting(yield* makeEnv)
        for (const node of nodes) {
          assert.strictEqual(String(node.id), `127.0.0.1:${node.address.port}`)
          assert.strictEqual(Context.get(node.context, ActorRuntime.ActorRuntime).nodeId, node.id)
        }
        assert.deepStrictEqual(Object.values(expected), [1, 2, 3])
        const [a] = nodes
        assert.strictEqual(yield* a.counter.query({ maxStaleness: "5 seconds" }, (views) =>
          [...views.values()].reduce((sum, view) => sum + view.value.value, 0)), 6)
        // The storage lists exactly these three runners, healthy.
        const runners = yield* storageOf(a).getRunners
        assert.deepStrictEqual(
          runners.map(([runner, healthy]) => [String(ClusterRuntime.nodeId(runner.address)), healthy]).sort(),
          nodes.map((n) => [String(n.id), true]).sort()
        )
      }), 30_000)

    it.live("a stopped runner is NodeLeft on the others within the poll bound and its view disappears", () =>
      Effect.gen(function*() {
        const env = yield* makeEnv
        const { nodes } = yield* threeCounting(env)
        const [a, b, c] = nodes
        const eventsA = yield* eventLog(a)
        const eventsB = yield* eventLog(b)
        const start = yield* Clock.currentTimeMillis
        yield* Scope.close(c.scope, Exit.void)
        yield* poll(Effect.gen(function*() {
          assert.deepStrictEqual(yield* eventsA, [ClusterEvents.NodeLeft(c.id)])
          assert.deepStrictEqual(yield* eventsB, [ClusterEvents.NodeLeft(c.id)])
        }))
        // Bound: one poll interval after the runner unregistered, plus scheduling slack.
        assert.isAtMost((yield* Clock.currentTimeMillis) - start, POLL_MILLIS + 900)
        yield* expectValues([a, b], { [String(a.id)]: 1, [String(b.id)]: 2 })
        assert.strictEqual(yield* listing(storageOf(a), c), "absent")
        assert.deepStrictEqual(sorted(yield* eventsOf(a).members), [String(b.id)])
        // Nothing else happens afterwards: a runner started later is the next event on both.
        const d = yield* startNode(env)
        yield* poll(Effect.gen(function*() {
          assert.deepStrictEqual(yield* eventsA, [ClusterEvents.NodeLeft(c.id), ClusterEvents.NodeJoined(d.id)])
          assert.deepStrictEqual(yield* eventsB, [ClusterEvents.NodeLeft(c.id), ClusterEvents.NodeJoined(d.id)])
        }))
      }), 30_000)

    it.live("a runner the cluster's health check flags unhealthy leaves within the poll bound, and rejoins when healthy", () =>
      Effect.gen(function*() {
        const env = yield* makeEnv
        const { expected, nodes } = yield* threeCounting(env)
        const [a, b, c] = nodes
        const eventsA = yield* eventLog(a)
        const eventsB = yield* eventLog(b)
        const eventsC = yield* eventLog(c)
        const storage = storageOf(a)
        // RunnerHealth now reports c as dead; c itself keeps running.
        env.down.add(c.id)
        yield* eventually(Effect.map(listing(storage, c), (listed) => listed === "unhealthy"), {
          timeout: "10 seconds",
          interval: "5 millis",
          what: "c listed unhealthy"
        })
        const flagged = yield* Clock.currentTimeMillis
        yield* poll(Effect.gen(function*() {
          assert.deepStrictEqual(yield* eventsA, [ClusterEvents.NodeLeft(c.id)])
          assert.deepStrictEqual(yield* eventsB, [ClusterEvents.NodeLeft(c.id)])
        }))
        // c's transport is alive and heartbeating: only the storage's flag made it leave.
        assert.isAtMost((yield* Clock.currentTimeMillis) - flagged, POLL_MILLIS + 900)
        yield* expectValues([a, b], { [String(a.id)]: 1, [String(b.id)]: 2 })
        // c no longer sees itself listed as healthy: it drops its peers too.
        yield* poll(Effect.gen(function*() {
          const seen = yield* eventsC
          assert.deepStrictEqual(seen.map((e) => e._tag), ["NodeLeft", "NodeLeft"])
          assert.deepStrictEqual(sorted(seen.map((e) => e.node)), sorted([a.id, b.id]))
        }))
        yield* expectValues([c], { [String(c.id)]: 3 })

        // Healthy again: c rejoins and every runner holds every view again.
        env.down.delete(c.id)
        yield* expectValues(nodes, expected)
        assert.deepStrictEqual(yield* eventsA, [ClusterEvents.NodeLeft(c.id), ClusterEvents.NodeJoined(c.id)])
        assert.deepStrictEqual(yield* eventsB, [ClusterEvents.NodeLeft(c.id), ClusterEvents.NodeJoined(c.id)])
        assert.deepStrictEqual((yield* eventsC).map((e) => e._tag), ["NodeLeft", "NodeLeft", "NodeJoined", "NodeJoined"])
      }), 30_000)

    it.live("a new runner joins, receives every view, and every runner receives its view", () =>
      Effect.gen(function*() {
        const env = yield* makeEnv
        const { expected, nodes } = yield* threeCounting(env)
        const eventsA = yield* eventLog(nodes[0])
        const d = yield* startNode(env)
        yield* count(d, 4)
        yield* expectValues([...nodes, d], { ...expected, [String(d.id)]: 4 })
        assert.deepStrictEqual(yield* eventsA, [ClusterEvents.NodeJoined(d.id)])
        assert.deepStrictEqual(sorted(yield* eventsOf(d).members), sorted(nodes.map((n) => n.id)))
      }), 30_000)
  })

scenarios(
  "a memory RunnerStorage",
  Effect.gen(function*() {
    const { down, layer } = makeHealth()
    const storage = yield* RunnerStorage.makeMemory
    return { storage: Layer.succeed(RunnerStorage.RunnerStorage, storage), health: layer, down }
  })
)

/** The test database (trust auth); override with DSTATE_TEST_POSTGRES_URL. */
const url = process.env.DSTATE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
let prefixes = 0

scenarios(
  "SqlRunnerStorage on PostgreSQL",
  Effect.gen(function*() {
    const { down, layer } = makeHealth()
    const pg = yield* Layer.build(PgClient.layer({ url: Redacted.make(url) }))
    // Tables of their own for this test; dropped after the runners stopped (finalizers run in reverse).
    const prefix = `dstate_cluster_${process.pid}_${++prefixes}`
    yield* Effect.addFinalizer(() =>
      Effect.provideContext(
        Effect.flatMap(Effect.service(PgClient.PgClient), (sql) =>
          sql`DROP TABLE IF EXISTS ${sql(`${prefix}_runners`)}, ${sql(`${prefix}_locks`)}, ${sql(`${prefix}_runner_migrations`)}`),
        pg
      ).pipe(Effect.ignore)
    )
    // Every runner opens its own SqlRunnerStorage on the shared tables, as separate processes would.
    const storage = SqlRunnerStorage.layerWith({ prefix }).pipe(Layer.provide(Layer.succeedContext(pg)))
    return { storage, health: layer, down }
  })
)

describe("ClusterRuntime: reachability", () => {
  it.live("a listed runner that goes silent is NodeUnreachable, and NodeReachable with its membership kept when heard again", () =>
    Effect.gen(function*() {
      const env = yield* memoryEnv
      const a = yield* startRunner(env, Layer.empty)
      const events = yield* eventLog(a)
      // A runner the storage lists whose dstate side is a raw client: it authenticates, then says nothing.
      const quietAddress = yield* freeRunnerAddress
      const quiet = ClusterRuntime.nodeId(quietAddress)
      yield* storageOf(a).register(Runner.make({ address: quietAddress, groups: ["default"], weight: 1 }), true)
      const transport = ClusterRuntime.transportAddress(a.address)!
      const client = yield* poll(rawAuthenticated(transport, quiet, []))
      yield* poll(Effect.map(events, (seen) => assert.deepStrictEqual(seen, [ClusterEvents.NodeJoined(quiet)])))
      // The detector's 2 s pass: unreachable, still a member.
      const unreachable = yield* eventually(Effect.map(events, (seen) => {
        assert.strictEqual(seen.length, 2)
        return seen[1]
      }), { timeout: "6 seconds", interval: "20 millis", what: "NodeUnreachable" })
      assert.strictEqual(unreachable._tag, "NodeUnreachable")
      assert.strictEqual(unreachable.node, quiet)
      assert.deepStrictEqual(sorted(yield* eventsOf(a).members), [String(quiet)])
      // It speaks again.
      yield* write(client.socket, frameOf({ _tag: "Heartbeat", groupsVersion: 1, groups: [], members: [] }))
      yield* poll(Effect.map(events, (seen) => assert.deepStrictEqual(seen.slice(2), [ClusterEvents.NodeReachable(quiet)])))
      assert.deepStrictEqual(sorted(yield* eventsOf(a).members), [String(quiet)])
      assert.strictEqual((yield* eventsOf(a).unreachable).size, 0)
    }).pipe(Effect.scoped), 30_000)
})

describe("ClusterRuntime: addresses and options", () => {
  it.effect("node ids and dstate addresses are derived from the runner address", () =>
    Effect.sync(() => {
      const runner = RunnerAddress.make("10.0.0.7", 34431)
      assert.strictEqual(ClusterRuntime.nodeId(runner), "10.0.0.7:34431")
      assert.deepStrictEqual(ClusterRuntime.transportAddress(runner), { host: "10.0.0.7", port: 35431 })
      assert.deepStrictEqual(ClusterRuntime.transportAddress(runner, -1), { host: "10.0.0.7", port: 34430 })
      assert.isUndefined(ClusterRuntime.transportAddress(RunnerAddress.make("10.0.0.7", 65000)))
      assert.isUndefined(ClusterRuntime.transportAddress(runner, 0.5))
    }))

  it.effect("a client-only process fails with NotARunner; bad options fail with InvalidOptions", () =>
    Effect.gen(function*() {
      const storage = Layer.succeed(RunnerStorage.RunnerStorage, yield* RunnerStorage.makeMemory)
      const build = (config: Partial<ShardingConfig.ShardingConfig["Service"]>, options?: Partial<ClusterRuntime.Options>) =>
        Layer.build(ClusterRuntime.layer({ ...transportOptions, ...options }).pipe(
          Layer.provide([storage, ShardingConfig.layer(config)])
        )).pipe(Effect.flip)
      const runnerAddress = Option.some(RunnerAddress.make("127.0.0.1", 34431))
      assert.deepStrictEqual(yield* build({ runnerAddress: Option.none() }), new ClusterRuntime.NotARunner())
      assert.deepStrictEqual(
        yield* build({ runnerAddress: Option.some(RunnerAddress.make("127.0.0.1", 65000)) }),
        new TcpRuntime.InvalidOptions({
          module: "ClusterRuntime",
          option: "portOffset",
          value: 1000,
          reason: "runner port + 1000 is not a TCP port"
        })
      )
      assert.deepStrictEqual(
        yield* build({ runnerAddress }, { pollInterval: 0 }),
        new TcpRuntime.InvalidOptions({
          module: "ClusterRuntime",
          option: "pollInterval",
          value: 0,
          reason: "must be a finite positive duration"
        })
      )
      assert.deepStrictEqual(
        yield* build({ runnerAddress }, { pollInterval: "Infinity" }),
        new TcpRuntime.InvalidOptions({
          module: "ClusterRuntime",
          option: "pollInterval",
          value: "Infinity",
          reason: "must be a finite positive duration"
        })
      )
      assert.deepStrictEqual(
        yield* build({ runnerAddress }, { pollTimeout: -1 }),
        new TcpRuntime.InvalidOptions({
          module: "ClusterRuntime",
          option: "pollTimeout",
          value: -1,
          reason: "must be a finite positive duration"
        })
      )
      // Transport options are checked by the TCP runtime.
      assert.deepStrictEqual(
        yield* build({ runnerAddress }, { secret: Redacted.make("short") }),
        new TcpRuntime.InvalidOptions({ module: "TcpRuntime", option: "secret", reason: "must be at least 16 bytes" })
      )
      assert.deepStrictEqual(
        yield* build({ runnerAddress }, { heartbeat: { interval: 0 } }),
        new TcpRuntime.InvalidOptions({
          module: "TcpRuntime",
          option: "heartbeat.interval",
          value: 0,
          reason: "must be a finite positive duration"
        })
      )
    }))
})

import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Metric } from "effect"
import { TestClock } from "effect/testing"
import { type Diagnostics, StateRegistry, SyncStrategy } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import {
  awaitFrame,
  type Cluster,
  frames,
  handleOn,
  healthOn,
  localOn,
  metricsOn,
  mutateOn,
  type Node,
  statusOn
} from "./helpers.ts"

const Resource = Fixtures.NodeResource
const Counter = Fixtures.Counter

const change = (cluster: Cluster, node: Node, c: Fixtures.NodeResourceChange) =>
  Effect.flatMap(handleOn(cluster, node, Resource), (h) => Effect.orDie(h.mutateWithDelta((s) => Fixtures.updateResource(s, c))))

/** `after - before`, per counter, keeping only the counters that moved. */
const moved = (before: Diagnostics.StateSyncMetrics, after: Diagnostics.StateSyncMetrics) => {
  const out: Record<string, number> = {}
  for (const key of Object.keys(after) as Array<keyof Diagnostics.StateSyncMetrics>) {
    if (after[key] !== before[key]) out[key] = after[key] - before[key]
  }
  return out
}

describe("diagnostics", () => {
  it.effect("syncStatus per peer: ages, gaps, failures, last sync and last error", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.activePush(), pullTimeout: "5 seconds" })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      const incarnation = (yield* localOn(cluster, a, Resource)).generation.incarnation

      yield* TestClock.adjust("1 second")
      yield* change(cluster, b, { tags: ["b"] }) // b's own age: 1
      yield* change(cluster, a, { memoryUsedMiB: 1 }) // age 1, reaches everyone
      yield* cluster.settle
      // Force a gap on b: the delta of age 2 is lost on the link a → b.
      yield* TestClock.adjust("1 second")
      cluster.network.cut(a.id, b.id)
      yield* change(cluster, a, { memoryUsedMiB: 2 })
      yield* cluster.settle
      cluster.network.heal()
      cluster.network.clearLog()
      yield* TestClock.adjust("1 second") // t = 3000
      yield* change(cluster, a, { memoryUsedMiB: 3 }) // age 3: b sees the gap and asks for a snapshot
      yield* cluster.settle

      assert.deepStrictEqual(yield* statusOn(cluster, b, Resource, a), {
        node: a.id,
        localAge: 1,
        remoteAge: 3,
        remoteIncarnation: incarnation,
        gapCount: 1,
        consecutiveFailures: 0,
        lastSyncAt: 3_000,
        lastAttemptAt: 3_000,
        lastError: undefined,
        lastSyncLatencyMillis: undefined
      })
      assert.deepStrictEqual(yield* statusOn(cluster, c, Resource, a), {
        node: a.id,
        localAge: 0,
        remoteAge: 3,
        remoteIncarnation: incarnation,
        gapCount: 0,
        consecutiveFailures: 0,
        lastSyncAt: 3_000,
        lastAttemptAt: 3_000,
        lastError: undefined,
        lastSyncLatencyMillis: undefined
      })
      assert.strictEqual((yield* metricsOn(cluster, b, Resource)).gapsDetected, 1)
      // The repair was one snapshot request from b, answered by one snapshot.
      assert.deepStrictEqual(
        frames(cluster, { to: b.id }).concat(frames(cluster, { from: b.id })).map((f) => `${f.from}>${f.to} ${f.message._tag}`),
        [`${a.id}>${b.id} DeltaUpdate`, `${a.id}>${b.id} FullSnapshot`, `${b.id}>${a.id} RequestSnapshot`]
      )
      assert.deepStrictEqual((yield* statusOn(cluster, b, Resource, a)).remoteAge, (yield* localOn(cluster, a, Resource)).generation.age)

      // A failed pull: a is cut off from b; b's query waits the pull timeout and fails.
      yield* TestClock.adjust("7 seconds") // t = 10000
      cluster.network.partition([a.id], [b.id])
      cluster.network.clearLog()
      const h = yield* handleOn(cluster, b, Resource)
      const fiber = yield* Effect.forkChild(h.query({ maxStaleness: "5 seconds" }, () => undefined))
      yield* awaitFrame(cluster, { from: b.id, to: a.id, kind: "request" })
      yield* cluster.settle // c's answer to the same query's other pull
      yield* TestClock.adjust("5 seconds") // t = 15000
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(yield* statusOn(cluster, b, Resource, a), {
        node: a.id,
        localAge: 1,
        remoteAge: 3,
        remoteIncarnation: incarnation,
        gapCount: 1,
        consecutiveFailures: 1,
        lastSyncAt: 3_000,
        lastAttemptAt: 10_000,
        lastError: `no reply from ${a.id} within 5000 ms`,
        lastSyncLatencyMillis: undefined
      })
      // The other stale peer answered the same query's pull.
      const fromC = yield* statusOn(cluster, b, Resource, c)
      assert.deepStrictEqual(
        [fromC.consecutiveFailures, fromC.lastSyncAt, fromC.lastAttemptAt, fromC.lastSyncLatencyMillis, fromC.lastError],
        [0, 10_000, 10_000, 0, undefined]
      )

      // A second failure counts up; a success resets the count.
      const again = yield* Effect.forkChild(h.query({ maxStaleness: "5 seconds" }, () => undefined))
      yield* TestClock.adjust("5 seconds") // t = 20000
      assert.isTrue(Exit.isFailure(yield* Fiber.await(again)))
      assert.strictEqual((yield* statusOn(cluster, b, Resource, a)).consecutiveFailures, 2)
      cluster.network.heal()
      const remote = yield* h.query({ maxStaleness: "5 seconds" }, (views) => views.get(a.id)!.value.memoryUsedMiB)
      assert.strictEqual(remote, 3)
      const healed = yield* statusOn(cluster, b, Resource, a)
      assert.deepStrictEqual([healed.consecutiveFailures, healed.lastSyncAt, healed.lastSyncLatencyMillis], [0, 20_000, 0])
      assert.strictEqual((yield* metricsOn(cluster, b, Resource)).syncFailures, 2)
    }))

  it.effect("metrics: exact counters after a known scenario", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.activePush() })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle

      // After the join handshake every node accepted each peer's snapshot once, and every snapshot
      // sent was either accepted or discarded as a duplicate.
      const base = [yield* metricsOn(cluster, a, Resource), yield* metricsOn(cluster, b, Resource), yield* metricsOn(cluster, c, Resource)]
      for (const m of base) {
        assert.strictEqual(m.snapshotsReceived, 2)
        assert.deepStrictEqual([m.mutations, m.deltasSent, m.deltasReceived, m.gapsDetected, m.syncFailures], [0, 0, 0, 0, 0])
      }
      const sum = (k: keyof Diagnostics.StateSyncMetrics) => base.reduce((acc, m) => acc + m[k], 0)
      assert.strictEqual(sum("snapshotsSent"), sum("snapshotsReceived") + sum("staleDiscarded"))
      assert.strictEqual(sum("snapshotRequestsSent"), sum("snapshotRequestsReceived"))

      // Three changes on a: Default, Immediate (a CPU move of 40 points), Default.
      cluster.network.clearLog()
      yield* change(cluster, a, { cpuPercent: 10 })
      yield* change(cluster, a, { cpuPercent: 50 })
      yield* change(cluster, a, { memoryUsedMiB: 5 })
      yield* cluster.settle
      // b receives a's last delta a second time (a duplicate in transit).
      const lastDelta = frames(cluster, { from: a.id, to: b.id, tag: "DeltaUpdate" }).at(-1)!
      yield* cluster.network.inject(a.id, b.id, lastDelta.frame)
      yield* cluster.settle
      // c misses a's fourth change, then sees the gap at the fifth and asks for a snapshot.
      cluster.network.cut(a.id, c.id)
      yield* change(cluster, a, { tags: ["lost-on-c"] })
      yield* cluster.settle
      cluster.network.heal()
      yield* change(cluster, a, { cpuPercent: 55 })
      yield* cluster.settle

      assert.deepStrictEqual(moved(base[0], yield* metricsOn(cluster, a, Resource)), {
        mutations: 5,
        immediate: 1,
        deltasSent: 10, // 5 changes × 2 peers (the one cut on the way to c included)
        snapshotRequestsReceived: 1,
        snapshotsSent: 1
      })
      assert.deepStrictEqual(moved(base[1], yield* metricsOn(cluster, b, Resource)), {
        deltasReceived: 5,
        staleDiscarded: 1
      })
      assert.deepStrictEqual(moved(base[2], yield* metricsOn(cluster, c, Resource)), {
        deltasReceived: 3,
        gapsDetected: 1,
        snapshotRequestsSent: 1,
        snapshotsReceived: 1
      })
      const expected = { cpuPercent: 55, memoryUsedMiB: 5, tags: ["lost-on-c"] }
      for (const node of [b, c]) {
        const views = yield* Effect.flatMap(handleOn(cluster, node, Resource), (h) => h.snapshot)
        assert.deepStrictEqual(views.get(a.id)!.value, expected)
      }
    }))

  it.effect("health: Healthy when fresh, Degraded with a stale peer, Unhealthy when failing", () =>
    Effect.gen(function*() {
      const setup = Effect.all([
        StateRegistry.register(Counter, { strategy: SyncStrategy.activePush(), pullTimeout: "2 seconds" }),
        StateRegistry.register(Resource, { strategy: SyncStrategy.periodicOnly("10 seconds") })
      ])
      const cluster = yield* TestCluster.make({ nodes: 3, setup, registry: { healthStaleAfter: "30 seconds" } })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      const state = (stateName: string, status: Diagnostics.HealthStatus, fresh: number, stale: number, failing: number) => ({
        stateName,
        status,
        peers: fresh + stale + failing,
        freshPeers: fresh,
        stalePeers: stale,
        failingPeers: failing
      })
      assert.deepStrictEqual(yield* healthOn(cluster, a), {
        status: "Healthy",
        states: [state("counter", "Healthy", 2, 0, 0), state("node_resource", "Healthy", 2, 0, 0)]
      })

      // t = 25 s: b's counter changes (a's view of b is fresh again). node_resource changes on every node
      // and goes out with the periodic tick at 30 s.
      yield* TestClock.adjust("25 seconds")
      yield* mutateOn(cluster, b, Counter, (s) => ({ value: s.value + 1 }))
      yield* cluster.settle
      for (const n of [a, b, c]) yield* change(cluster, n, { memoryUsedMiB: 1 })
      yield* TestClock.adjust("5 seconds") // t = 30 s: the periodic tick at 30 s delivers
      yield* cluster.settle
      assert.strictEqual((yield* healthOn(cluster, a)).status, "Healthy")

      // t = 30.001 s: a's counter view of c was last synced at 0: stale. b's is 5 s old: fresh.
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* healthOn(cluster, a), {
        status: "Degraded",
        states: [state("counter", "Degraded", 1, 1, 0), state("node_resource", "Healthy", 2, 0, 0)]
      })

      // A failed pull from c: one failing peer of two is Unhealthy.
      cluster.network.partition([a.id], [c.id])
      const h = yield* handleOn(cluster, a, Counter)
      const fiber = yield* Effect.forkChild(h.query({ maxStaleness: "10 seconds" }, () => undefined))
      yield* awaitFrame(cluster, { from: a.id, to: c.id, kind: "request" })
      yield* TestClock.adjust("2 seconds")
      assert.isTrue(Exit.isFailure(yield* Fiber.await(fiber)))
      assert.deepStrictEqual(yield* healthOn(cluster, a), {
        status: "Unhealthy",
        states: [state("counter", "Unhealthy", 1, 0, 1), state("node_resource", "Healthy", 2, 0, 0)]
      })
      // Other nodes are not affected.
      assert.strictEqual((yield* healthOn(cluster, b)).states[0].failingPeers, 0)

      // Healed and pulled: Healthy again.
      cluster.network.heal()
      yield* h.query({ maxStaleness: "10 seconds" }, () => undefined)
      assert.deepStrictEqual(yield* healthOn(cluster, a), {
        status: "Healthy",
        states: [state("counter", "Healthy", 2, 0, 0), state("node_resource", "Healthy", 2, 0, 0)]
      })
    }))

  it.effect("health: a view announced as changed by the feed counts as stale", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.feedLazyPull() })
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      yield* mutateOn(cluster, a, Counter, (s) => ({ value: s.value + 1 }))
      yield* TestClock.adjust("1 second")
      yield* cluster.settle
      const health = yield* healthOn(cluster, b)
      assert.strictEqual(health.status, "Degraded")
      assert.deepStrictEqual([health.states[0].freshPeers, health.states[0].stalePeers], [0, 1])
    }))

  it.effect("the counters are Effect metrics: dstate_mutations per state and node", () =>
    Effect.gen(function*() {
      const setup = Effect.all([
        StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() }),
        StateRegistry.register(Resource, { strategy: SyncStrategy.activePush() })
      ])
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      for (let i = 0; i < 3; i++) yield* mutateOn(cluster, a, Counter, (s) => ({ value: s.value + 1 }))
      yield* mutateOn(cluster, b, Counter, (s) => ({ value: s.value + 1 }))
      yield* change(cluster, b, { cpuPercent: 1 })
      yield* change(cluster, b, { cpuPercent: 2 })
      yield* cluster.settle

      const snapshot = yield* Metric.snapshot
      const count = (id: string, state: string, node: string) => {
        const found = snapshot.filter((m) => m.id === id && m.attributes?.state === state && m.attributes?.node === node)
        // A counter appears once it was first updated.
        if (found.length === 0) return 0
        assert.strictEqual(found.length, 1, `${id} ${state} ${node}`)
        assert.strictEqual(found[0].type, "Counter")
        return (found[0].state as Metric.CounterState<number>).count
      }
      assert.strictEqual(count("dstate_mutations", "counter", a.id), 3)
      assert.strictEqual(count("dstate_mutations", "counter", b.id), 1)
      assert.strictEqual(count("dstate_mutations", "node_resource", a.id), 0)
      assert.strictEqual(count("dstate_mutations", "node_resource", b.id), 2)
      // The metrics agree with the handle's counters.
      assert.strictEqual(count("dstate_deltas_sent", "node_resource", b.id), (yield* metricsOn(cluster, b, Resource)).deltasSent)
      assert.strictEqual(count("dstate_snapshots_received", "counter", b.id), (yield* metricsOn(cluster, b, Counter)).snapshotsReceived)
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))
})

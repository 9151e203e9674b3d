import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { DStateError, StateRegistry, SyncStrategy } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import { awaitFrame, frames, handleOn, metricsOn, mutateOn, statusOn, viewsOn } from "./helpers.ts"

const Counter = Fixtures.Counter
const inc = (s: { readonly value: number }) => ({ value: s.value + 1 })
const valuesOf = (views: ReadonlyMap<string, { readonly value: { readonly value: number } }>) =>
  Object.fromEntries([...views].map(([node, v]) => [node, v.value.value]))

describe("query", () => {
  it.effect("a view marked pending by the feed is pulled and the query returns the fresh value", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.feedLazyPull() })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      for (let i = 0; i < 4; i++) yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle
      assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.pendingRemote?.age, 4)
      cluster.network.clearLog()

      const h = yield* handleOn(cluster, b, Counter)
      // The views are only 1 s old: without the marker this query would be served locally.
      const result = yield* h.query({ maxStaleness: "1 minute" }, valuesOf)
      assert.deepStrictEqual(result, { [a.id]: 4, [b.id]: 0, [c.id]: 0 })
      // Exactly one pull, to the announced owner only.
      assert.deepStrictEqual(frames(cluster, { kind: "request" }).map((f) => [f.from, f.to, f.message._tag]), [
        [b.id, a.id, "RequestSnapshot"]
      ])
      assert.deepStrictEqual(frames(cluster, { kind: "reply" }).map((f) => [f.from, f.to, f.message._tag]), [
        [a.id, b.id, "FullSnapshot"]
      ])
      const view = (yield* viewsOn(cluster, b, Counter)).get(a.id)!
      assert.strictEqual(view.generation.age, 4)
      assert.strictEqual(view.pendingRemote, undefined)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, 1)
    }))

  it.effect("a fresh query sends nothing", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      yield* mutateOn(cluster, b, Counter, inc)
      yield* cluster.settle
      yield* TestClock.adjust("4 seconds")
      const stats = cluster.network.stats()
      const h = yield* handleOn(cluster, a, Counter)
      const result = yield* h.query({ maxStaleness: "5 seconds" }, valuesOf)
      assert.deepStrictEqual(result, { [a.id]: 0, [b.id]: 1, [c.id]: 0 })
      // No freshness requirement at all: also local.
      assert.deepStrictEqual(yield* h.query({}, valuesOf), result)
      yield* cluster.settle
      assert.deepStrictEqual(cluster.network.stats(), stats)
      assert.strictEqual((yield* metricsOn(cluster, a, Counter)).pulls, 0)
    }))

  it.effect("10 concurrent stale queries share one pull per peer", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      yield* mutateOn(cluster, b, Counter, inc)
      yield* mutateOn(cluster, c, Counter, (s) => ({ value: s.value + 7 }))
      yield* cluster.settle
      yield* TestClock.adjust("2 seconds") // views are now 2 s old
      cluster.network.clearLog()
      const requestsBefore = [
        (yield* metricsOn(cluster, b, Counter)).snapshotRequestsReceived,
        (yield* metricsOn(cluster, c, Counter)).snapshotRequestsReceived
      ]

      const h = yield* handleOn(cluster, a, Counter)
      const results = yield* Effect.all(
        Array.from({ length: 10 }, () => h.query({ maxStaleness: "1 second" }, valuesOf)),
        { concurrency: "unbounded" }
      )
      for (const r of results) assert.deepStrictEqual(r, { [a.id]: 0, [b.id]: 1, [c.id]: 7 })
      const requests = frames(cluster, { kind: "request" })
      assert.deepStrictEqual(requests.map((f) => [f.from, f.to]).sort(), [[a.id, b.id], [a.id, c.id]])
      assert.strictEqual((yield* metricsOn(cluster, a, Counter)).pulls, 2)
      assert.deepStrictEqual([
        (yield* metricsOn(cluster, b, Counter)).snapshotRequestsReceived - requestsBefore[0],
        (yield* metricsOn(cluster, c, Counter)).snapshotRequestsReceived - requestsBefore[1]
      ], [1, 1])
      for (const peer of [b, c]) {
        const status = yield* statusOn(cluster, a, Counter, peer)
        assert.strictEqual(status.lastSyncLatencyMillis, 0)
        assert.strictEqual(status.lastSyncAt, 2_000)
      }
    }))

  it.effect("an unreachable owner fails the query with StalePeer after exactly the pull timeout", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.feedLazyPull(), pullTimeout: "5 seconds" })
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      const h = yield* handleOn(cluster, b, Counter)
      // A successful pull at t = 3000 sets the last sync time.
      yield* TestClock.adjust("3 seconds")
      yield* h.query({ maxStaleness: "1 second" }, () => undefined)
      assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.syncedAt, 3_000)

      yield* TestClock.adjust("2 seconds") // t = 5000: stale again
      cluster.network.partition([a.id], [b.id])
      cluster.network.clearLog()
      const fiber = yield* Effect.forkChild(h.query({ maxStaleness: "1 second" }, valuesOf))
      yield* awaitFrame(cluster, { kind: "request", from: b.id })
      yield* TestClock.adjust("4999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.await(fiber)
      assert.deepStrictEqual(
        exit,
        Exit.fail(new DStateError.StalePeer({ stateName: "counter", node: a.id, lastSyncedAt: 3_000 }))
      )
      assert.strictEqual(frames(cluster, { kind: "request" }).length, 1)
      assert.strictEqual(frames(cluster, { kind: "reply" }).length, 0)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, 2)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).syncFailures, 1)
    }))

  it.effect("pullOnQuery: false fails a stale query with StalePeer without any request", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.feedLazyPull({ pullOnQuery: false }) })
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      const syncedAt = (yield* viewsOn(cluster, b, Counter)).get(a.id)!.syncedAt
      yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle
      cluster.network.clearLog()
      const h = yield* handleOn(cluster, b, Counter)
      // Pending marker: stale however young the view.
      const exit = yield* Effect.exit(h.query({ maxStaleness: "1 hour" }, valuesOf))
      assert.deepStrictEqual(exit, Exit.fail(new DStateError.StalePeer({ stateName: "counter", node: a.id, lastSyncedAt: syncedAt })))
      assert.strictEqual(cluster.network.log().length, 0)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, 0)
      // Without a freshness requirement, the held (old) value is served.
      assert.deepStrictEqual(yield* h.query({}, valuesOf), { [a.id]: 0, [b.id]: 0 })
    }))

  it.effect("pullOnQuery: false fails a query on a too-old view without any request", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.activePush({ pullOnQuery: false }) })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      yield* TestClock.adjust("1 second")
      yield* mutateOn(cluster, c, Counter, inc) // a's view of c synced at 1000
      yield* cluster.settle
      yield* TestClock.adjust("1 second")
      yield* mutateOn(cluster, b, Counter, inc) // a's view of b synced at 2000
      yield* cluster.settle
      yield* TestClock.adjust("1500 millis") // t = 3500: b's view is 1500 ms old, c's 2500 ms
      cluster.network.clearLog()
      const h = yield* handleOn(cluster, a, Counter)
      assert.deepStrictEqual(yield* h.query({ maxStaleness: "3 seconds" }, valuesOf), { [a.id]: 0, [b.id]: 1, [c.id]: 1 })
      const exit = yield* Effect.exit(h.query({ maxStaleness: "2 seconds" }, valuesOf))
      assert.deepStrictEqual(exit, Exit.fail(new DStateError.StalePeer({ stateName: "counter", node: c.id, lastSyncedAt: 1_000 })))
      assert.strictEqual(cluster.network.log().length, 0)
    }))
})

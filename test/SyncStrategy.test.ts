import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Schedule, Schema } from "effect"
import { TestClock } from "effect/testing"
import { DistributedState, Generation, StateRegistry, SyncMessage, SyncStrategy, SyncUrgency } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import {
  captureLogs,
  feedBatches,
  frameOf,
  frames,
  handleOn,
  inboundOn,
  localOn,
  metricsOn,
  mutateOn,
  viewsOn
} from "./helpers.ts"
import { nodeResource } from "./support/NodeResource.ts"

const Counter = Fixtures.Counter
const Other = DistributedState.make({
  name: "other_counter",
  schema: Schema.Struct({ value: Schema.Int }),
  initial: () => ({ value: 0 })
})

const inc = (s: { readonly value: number }) => ({ value: s.value + 1 })

describe("SyncStrategy.feedLazyPull", () => {
  const setup = Effect.all([
    StateRegistry.register(Counter, { strategy: SyncStrategy.feedLazyPull() }),
    StateRegistry.register(Other, { strategy: SyncStrategy.feedLazyPull() })
  ])

  it.effect("5 mutations in one interval: each peer gets exactly one notice per (state, source)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      for (let i = 0; i < 5; i++) yield* mutateOn(cluster, a, Counter, inc)
      yield* cluster.settle
      // Nothing announced before the flush.
      assert.strictEqual(cluster.network.log().length, 0)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle

      const batches = feedBatches(cluster)
      assert.deepStrictEqual(batches.map((x) => [x.from, x.to]).sort(), [[a.id, b.id], [a.id, c.id]])
      const local = yield* localOn(cluster, a, Counter)
      for (const { batch } of batches) {
        assert.strictEqual(batch.source, a.id)
        assert.deepStrictEqual(batch.notices, [{ stateName: "counter", source: a.id, generation: local.generation }])
      }
      assert.strictEqual(local.generation.age, 5)
      // Only the feed travelled: no snapshot, no delta.
      assert.strictEqual(cluster.network.log().length, 2)

      const sender = yield* inboundOn(cluster, a)
      assert.strictEqual(sender.feedBatchesSent, 1)
      assert.strictEqual(sender.feedNoticesSent, 1)
      for (const peer of [b, c]) {
        const inbound = yield* inboundOn(cluster, peer)
        assert.strictEqual(inbound.feedBatchesReceived, 1)
        assert.strictEqual(inbound.feedBatchesSent, 0)
        assert.strictEqual((yield* metricsOn(cluster, peer, Counter)).noticesReceived, 1)
      }
    }))

  it.effect("two state types mutated in one interval travel in one batch", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* mutateOn(cluster, a, Counter, inc)
      yield* mutateOn(cluster, a, Other, inc)
      yield* mutateOn(cluster, a, Other, inc)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle

      const batches = feedBatches(cluster)
      assert.strictEqual(batches.length, 1)
      assert.strictEqual(batches[0].to, b.id)
      const notices = batches[0].batch.notices.map((n) => [n.stateName, n.source, n.generation.age])
      assert.deepStrictEqual(notices.sort(), [["counter", a.id, 1], ["other_counter", a.id, 2]])
      const sender = yield* inboundOn(cluster, a)
      assert.deepStrictEqual([sender.feedBatchesSent, sender.feedNoticesSent], [1, 2])
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).noticesReceived, 1)
      assert.strictEqual((yield* metricsOn(cluster, b, Other)).noticesReceived, 1)
    }))

  it.effect("nothing is sent while the feed is empty", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      yield* cluster.settle
      cluster.network.clearLog()
      const before = cluster.network.stats().sent
      for (let i = 0; i < 5; i++) {
        yield* TestClock.adjust("1 second")
        yield* cluster.settle
      }
      assert.strictEqual(feedBatches(cluster).length, 0)
      assert.strictEqual(cluster.network.stats().sent, before)
      for (const node of cluster.nodes) assert.strictEqual((yield* inboundOn(cluster, node)).feedBatchesSent, 0)

      // One flush after a mutation, then quiet again.
      yield* mutateOn(cluster, cluster.nodes[0], Counter, inc)
      for (let i = 0; i < 5; i++) {
        yield* TestClock.adjust("1 second")
        yield* cluster.settle
      }
      assert.strictEqual(feedBatches(cluster).length, 2)
      assert.strictEqual((yield* inboundOn(cluster, cluster.nodes[0])).feedBatchesSent, 1)
    }))

  it.effect("a notice marks the view pending; a notice not newer than what is held is ignored", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      const initial = (yield* localOn(cluster, a, Counter)).generation
      for (let i = 0; i < 3; i++) yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle

      const held = (yield* viewsOn(cluster, b, Counter)).get(a.id)!
      assert.deepStrictEqual(held.generation, initial)
      assert.deepStrictEqual(held.value, { value: 0 })
      assert.deepStrictEqual(held.pendingRemote, Generation.make(initial.incarnation, 3))
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).noticesReceived, 1)

      const notice = (age: number) =>
        frameOf(
          new SyncMessage.BatchedChangeFeed({
            source: a.id,
            notices: [{ stateName: "counter", source: a.id, generation: Generation.make(initial.incarnation, age) }]
          })
        )
      // Older than or equal to the pending generation: ignored.
      yield* cluster.network.inject(a.id, b.id, notice(2))
      yield* cluster.network.inject(a.id, b.id, notice(3))
      yield* cluster.settle
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.pendingRemote, Generation.make(initial.incarnation, 3))
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).noticesReceived, 1)
      assert.strictEqual((yield* inboundOn(cluster, b)).feedBatchesReceived, 3)

      // Pull: the view is fresh, the pending marker cleared.
      const h = yield* handleOn(cluster, b, Counter)
      const value = yield* h.query({ maxStaleness: "1 hour" }, (views) => views.get(a.id)!.value.value)
      assert.strictEqual(value, 3)
      const pulled = (yield* viewsOn(cluster, b, Counter)).get(a.id)!
      assert.strictEqual(pulled.pendingRemote, undefined)
      assert.strictEqual(pulled.generation.age, 3)

      // A notice for the generation already held (or older) changes nothing.
      yield* cluster.network.inject(a.id, b.id, notice(3))
      yield* cluster.network.inject(a.id, b.id, notice(1))
      yield* cluster.settle
      assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.pendingRemote, undefined)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).noticesReceived, 1)

      // A newer one marks it again.
      yield* cluster.network.inject(a.id, b.id, notice(4))
      yield* cluster.settle
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.pendingRemote, Generation.make(initial.incarnation, 4))
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).noticesReceived, 2)
    }))

  it.effect("a node ignores its own batches", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* mutateOn(cluster, b, Counter, inc)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle
      // The flush goes to the other node only.
      assert.deepStrictEqual(feedBatches(cluster).map((x) => [x.from, x.to]), [[b.id, a.id]])

      // A batch that names b as its source, delivered to b, is dropped whole, even
      // when it announces another node's change.
      const aGen = (yield* localOn(cluster, a, Counter)).generation
      const own = frameOf(
        new SyncMessage.BatchedChangeFeed({
          source: b.id,
          notices: [{ stateName: "counter", source: a.id, generation: Generation.next(aGen) }]
        })
      )
      yield* cluster.network.inject(b.id, b.id, own)
      yield* cluster.settle
      assert.strictEqual((yield* inboundOn(cluster, b)).feedBatchesReceived, 0)
      assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.pendingRemote, undefined)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).noticesReceived, 0)
    }))

  it.effect("a notice for an unknown state is ignored and counted", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      const aGen = (yield* localOn(cluster, a, Counter)).generation
      const batch = frameOf(
        new SyncMessage.BatchedChangeFeed({
          source: a.id,
          notices: [
            { stateName: "no_such_state", source: a.id, generation: Generation.next(aGen) },
            { stateName: "counter", source: a.id, generation: Generation.next(aGen) }
          ]
        })
      )
      yield* cluster.network.inject(a.id, b.id, batch)
      yield* cluster.settle
      const inbound = yield* inboundOn(cluster, b)
      assert.strictEqual(inbound.unknownState, 1)
      assert.strictEqual(inbound.feedBatchesReceived, 1)
      assert.strictEqual(inbound.framesRejected, 0)
      // The known notice of the same batch still applied.
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.pendingRemote, Generation.next(aGen))
      assert.strictEqual((yield* viewsOn(cluster, b, Other)).get(a.id)!.pendingRemote, undefined)
    }))

  it.effect("the flush follows the registry's changeFeedFlush (a duration)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup, registry: { changeFeedFlush: "5 seconds" } })
      const [a] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("4999 millis")
      yield* cluster.settle
      assert.strictEqual(feedBatches(cluster).length, 0)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      assert.strictEqual(feedBatches(cluster).length, 1)
      // Next flush only 5 s later.
      yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("4999 millis")
      yield* cluster.settle
      assert.strictEqual(feedBatches(cluster).length, 1)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      assert.strictEqual(feedBatches(cluster).length, 2)
      assert.strictEqual(feedBatches(cluster)[1].batch.notices[0].generation.age, 2)
    }))

  it.effect("the flush follows the registry's changeFeedFlush (a Schedule)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({
        nodes: 2,
        setup,
        registry: { changeFeedFlush: Schedule.fixed("250 millis") }
      })
      const [a] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("249 millis")
      yield* cluster.settle
      assert.strictEqual(feedBatches(cluster).length, 0)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      assert.strictEqual(feedBatches(cluster).length, 1)
    }))
})

describe("SyncStrategy periodic sync", () => {
  it.effect("periodicOnly delivers at the interval and not before; unchanged ticks send nothing", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.periodicOnly("10 seconds") })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* mutateOn(cluster, a, Counter, inc)
      yield* mutateOn(cluster, a, Counter, inc)
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)

      yield* TestClock.adjust("9999 millis")
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)
      for (const peer of [b, c]) assert.strictEqual((yield* viewsOn(cluster, peer, Counter)).get(a.id)!.generation.age, 0)

      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      for (const peer of [b, c]) {
        const view = (yield* viewsOn(cluster, peer, Counter)).get(a.id)!
        assert.strictEqual(view.generation.age, 2)
        assert.deepStrictEqual(view.value, { value: 2 })
      }
      const fromA = frames(cluster, { from: a.id })
      assert.deepStrictEqual(fromA.map((f) => [f.message._tag, f.to]).sort(), [["FullSnapshot", b.id], ["FullSnapshot", c.id]])
      assert.strictEqual((yield* metricsOn(cluster, a, Counter)).periodicSyncs, 1)

      // Two more ticks without any change: nothing at all on the wire.
      cluster.network.clearLog()
      yield* TestClock.adjust("10 seconds")
      yield* cluster.settle
      yield* TestClock.adjust("10 seconds")
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)
      for (const node of cluster.nodes) assert.strictEqual((yield* metricsOn(cluster, node, Counter)).periodicSyncs, 1)

      // A change: the next tick sends it, once.
      yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("10 seconds")
      yield* cluster.settle
      assert.strictEqual(frames(cluster, { from: a.id, tag: "FullSnapshot" }).length, 2)
      assert.strictEqual(cluster.network.log().length, 2)
      assert.strictEqual((yield* metricsOn(cluster, a, Counter)).periodicSyncs, 2)
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.value, { value: 3 })
    }))

  it.effect("feedWithPeriodicSync: the feed marks the view pending, the periodic snapshot refreshes it without a pull", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.feedWithPeriodicSync("10 seconds") })
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* mutateOn(cluster, a, Counter, inc)
      yield* TestClock.adjust("1 second")
      yield* cluster.settle
      let view = (yield* viewsOn(cluster, b, Counter)).get(a.id)!
      assert.strictEqual(view.generation.age, 0)
      assert.strictEqual(view.pendingRemote?.age, 1)
      assert.deepStrictEqual(frames(cluster).map((f) => f.message._tag), ["BatchedChangeFeed"])

      yield* TestClock.adjust("8999 millis")
      yield* cluster.settle
      assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.generation.age, 0)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      view = (yield* viewsOn(cluster, b, Counter)).get(a.id)!
      assert.strictEqual(view.generation.age, 1)
      assert.deepStrictEqual(view.value, { value: 1 })
      assert.strictEqual(view.pendingRemote, undefined)
      assert.strictEqual(frames(cluster, { kind: "request" }).length, 0)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, 0)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).snapshotsReceived, 2) // join + periodic
    }))

  // A valid cron expression never fails to parse; its error channel is not `never`, hence the cast.
  const everyMinute = Schedule.cron("* * * * *") as Schedule.Schedule<unknown>
  const schedules: ReadonlyArray<readonly [string, Schedule.Schedule<unknown>, ReadonlyArray<number>]> = [
    ["Schedule.spaced", Schedule.spaced("3 seconds"), [3_000, 6_000, 9_000]],
    ["Schedule.fixed", Schedule.fixed("3 seconds"), [3_000, 6_000, 9_000]],
    ["Schedule.exponential", Schedule.exponential("1 second"), [1_000, 3_000, 7_000]],
    ["Schedule.cron", everyMinute, [60_000, 120_000, 180_000]]
  ]
  for (const [label, schedule, ticks] of schedules) {
    it.effect(`periodicOnly accepts any Schedule: ${label} ticks at ${ticks.join(", ")} ms`, () =>
      Effect.gen(function*() {
        const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.periodicOnly(schedule) })
        const cluster = yield* TestCluster.make({ nodes: 2, setup })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        let now = 0
        for (let i = 0; i < ticks.length; i++) {
          yield* mutateOn(cluster, a, Counter, inc)
          yield* TestClock.adjust(ticks[i] - 1 - now)
          yield* cluster.settle
          assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.generation.age, i, `before tick ${i}`)
          yield* TestClock.adjust(1)
          yield* cluster.settle
          assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.generation.age, i + 1, `at tick ${i}`)
          now = ticks[i]
        }
        assert.strictEqual((yield* metricsOn(cluster, a, Counter)).periodicSyncs, ticks.length)
      }))
  }
})

/** A delta-aware state whose urgency is named by the first tag a mutation sets. */
const urgencyOf = (delta: Fixtures.NodeResourceDelta) => {
  switch (delta.tags?.[0]) {
    case "immediate":
      return SyncUrgency.Immediate
    case "delayed":
      return SyncUrgency.Delayed("1 second")
    case "quiet":
      return SyncUrgency.Suppress
    case "bad":
      return SyncUrgency.Delayed("soon" as Duration.Input) // throws InvalidOptions
    default:
      return SyncUrgency.Default
  }
}
const Resource = DistributedState.makeDelta({
  name: "resource_urgency",
  ...nodeResource,
  syncUrgency: (_old, _new, delta) => urgencyOf(delta)
})
const change = (cluster: TestCluster.TestCluster<any>, node: TestCluster.TestNode, c: Fixtures.NodeResourceChange) =>
  Effect.flatMap(handleOn(cluster, node, Resource), (h) => Effect.orDie(h.mutateWithDelta((s) => Fixtures.updateResource(s, c))))
const peerView = (cluster: TestCluster.TestCluster<any>, reader: TestCluster.TestNode, owner: TestCluster.TestNode) =>
  Effect.map(viewsOn(cluster, reader, Resource), (views) => {
    const v = views.get(owner.id)!
    return { age: v.generation.age, value: v.value }
  })

describe("SyncUrgency", () => {
  it.effect("Immediate sends at once under periodicOnly(10 s); Default waits for the tick", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.periodicOnly("10 seconds") })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* change(cluster, a, { cpuPercent: 50, tags: ["immediate"] })
      yield* cluster.settle
      for (const peer of [b, c]) {
        assert.deepStrictEqual(yield* peerView(cluster, peer, a), {
          age: 1,
          value: { cpuPercent: 50, memoryUsedMiB: 0, tags: ["immediate"] }
        })
      }
      assert.deepStrictEqual(frames(cluster).map((f) => [f.message._tag, f.to]).sort(), [["DeltaUpdate", b.id], ["DeltaUpdate", c.id]])
      const m = yield* metricsOn(cluster, a, Resource)
      assert.strictEqual(m.immediate, 1)
      assert.strictEqual(m.deltasSent, 2)

      // A Default change follows the strategy: nothing until the tick.
      yield* change(cluster, a, { memoryUsedMiB: 100 })
      yield* TestClock.adjust("9999 millis")
      yield* cluster.settle
      assert.strictEqual((yield* peerView(cluster, b, a)).age, 1)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      assert.deepStrictEqual(yield* peerView(cluster, b, a), {
        age: 2,
        value: { cpuPercent: 50, memoryUsedMiB: 100, tags: ["immediate"] }
      })
    }))

  it.effect("Delayed(1 s) under periodicOnly(10 s) arrives exactly 1 s after the first change and coalesces the window", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.periodicOnly("10 seconds") })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      cluster.network.clearLog()
      yield* change(cluster, a, { cpuPercent: 10, tags: ["delayed"] }) // t = 0: deadline 1000
      yield* TestClock.adjust("400 millis")
      yield* change(cluster, a, { memoryUsedMiB: 64, tags: ["delayed"] }) // t = 400: inside the window
      yield* TestClock.adjust("500 millis")
      yield* change(cluster, a, { cpuPercent: 30, tags: ["delayed", "last"] }) // t = 900
      yield* TestClock.adjust("99 millis") // t = 999
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)
      assert.strictEqual((yield* peerView(cluster, b, a)).age, 0)

      yield* TestClock.adjust("1 millis") // t = 1000
      yield* cluster.settle
      const expected = { age: 3, value: { cpuPercent: 30, memoryUsedMiB: 64, tags: ["delayed", "last"] } }
      for (const peer of [b, c]) assert.deepStrictEqual(yield* peerView(cluster, peer, a), expected)
      // One send for the three changes: a snapshot per peer (they missed more than one delta).
      assert.deepStrictEqual(frames(cluster).map((f) => [f.message._tag, f.to]).sort(), [["FullSnapshot", b.id], ["FullSnapshot", c.id]])
      assert.strictEqual((yield* metricsOn(cluster, a, Resource)).delayed, 3)

      // Nothing more when the later deadlines (1400, 1900) pass.
      cluster.network.clearLog()
      yield* TestClock.adjust("1 second") // t = 2000
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)

      // A new window: a single delayed change goes out as a delta 1 s later.
      yield* change(cluster, a, { memoryUsedMiB: 65, tags: ["delayed"] }) // t = 2000
      yield* TestClock.adjust("999 millis")
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      assert.deepStrictEqual(frames(cluster).map((f) => [f.message._tag, f.to]).sort(), [["DeltaUpdate", b.id], ["DeltaUpdate", c.id]])
      assert.deepStrictEqual(yield* peerView(cluster, c, a), {
        age: 4,
        value: { cpuPercent: 30, memoryUsedMiB: 65, tags: ["delayed"] }
      })
    }))

  it.effect("3 suppressed + 1 default change under activePush: peers get the cumulative value in one send", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.activePush() })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      const before = yield* metricsOn(cluster, a, Resource)
      cluster.network.clearLog()
      yield* change(cluster, a, { cpuPercent: 10, tags: ["quiet"] })
      yield* change(cluster, a, { memoryUsedMiB: 512, tags: ["quiet"] })
      yield* change(cluster, a, { cpuPercent: 30, tags: ["quiet", "x"] })
      yield* cluster.settle
      assert.strictEqual(cluster.network.log().length, 0)
      for (const peer of [b, c]) assert.strictEqual((yield* peerView(cluster, peer, a)).age, 0)

      yield* change(cluster, a, { tags: ["web"] })
      yield* cluster.settle
      for (const peer of [b, c]) {
        assert.deepStrictEqual(yield* peerView(cluster, peer, a), {
          age: 4,
          value: { cpuPercent: 30, memoryUsedMiB: 512, tags: ["web"] }
        })
      }
      assert.deepStrictEqual(frames(cluster).map((f) => [f.message._tag, f.to]).sort(), [["FullSnapshot", b.id], ["FullSnapshot", c.id]])
      const after = yield* metricsOn(cluster, a, Resource)
      assert.strictEqual(after.suppressed, 3)
      assert.strictEqual(after.mutations, 4)
      assert.strictEqual(after.deltasSent - before.deltasSent, 0)
      assert.strictEqual(after.snapshotsSent - before.snapshotsSent, 2)
      for (const peer of [b, c]) assert.strictEqual((yield* metricsOn(cluster, peer, Resource)).gapsDetected, 0)
    }))

  it.effect("a bad Delayed from syncUrgency is logged with its InvalidOptions; the mutation commits and follows the strategy", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.periodicOnly("10 seconds") })
      const { lines, result: cluster } = yield* captureLogs(Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup })
        yield* cluster.settle
        yield* change(cluster, cluster.nodes[0], { cpuPercent: 70, tags: ["bad"] })
        return cluster
      }))
      const [a, b] = cluster.nodes
      const failed = lines.filter((l) => l.message === "syncUrgency failed; following the strategy")
      assert.strictEqual(failed.length, 1)
      assert.strictEqual(failed[0].level, "Error")
      assert.include(String(failed[0].annotations.error), "invalid SyncUrgency option Delayed = \"soon\": must be a finite non-negative duration")
      // Committed: the owner holds it at once; peers get it at the strategy's tick, not before.
      assert.strictEqual((yield* peerView(cluster, a, a)).age, 1)
      yield* TestClock.adjust("9999 millis")
      yield* cluster.settle
      assert.strictEqual((yield* peerView(cluster, b, a)).age, 0)
      yield* TestClock.adjust("1 millis")
      yield* cluster.settle
      assert.deepStrictEqual(yield* peerView(cluster, b, a), { age: 1, value: { cpuPercent: 70, memoryUsedMiB: 0, tags: ["bad"] } })
    }))

  const warning = "this state's syncUrgency may suppress changes"
  it.effect("registration warns when syncUrgency meets a strategy without periodic sync or pull on query", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Resource, { strategy: SyncStrategy.activePush({ pullOnQuery: false }) })
      const { lines, result: cluster } = yield* captureLogs(TestCluster.make({ nodes: 2, setup }))
      const warnings = lines.filter((l) => l.message.includes(warning))
      assert.strictEqual(warnings.length, 2)
      assert.deepStrictEqual(
        warnings.map((l) => [l.level, l.annotations.state, l.annotations.node]).sort(),
        cluster.nodes.map((n) => ["Warn", "resource_urgency", n.id]).sort()
      )
      assert.strictEqual(
        warnings[0].message,
        "this state's syncUrgency may suppress changes and the strategy has neither periodic sync nor pull on query: a suppressed change reaches peers only with the next sent update"
      )
    }))

  const quiet: ReadonlyArray<readonly [string, DistributedState.Any, SyncStrategy.SyncStrategy]> = [
    ["syncUrgency + activePush() (pulls on query)", Resource, SyncStrategy.activePush()],
    ["syncUrgency + periodicOnly without pulls", Resource, SyncStrategy.periodicOnly("10 seconds", { pullOnQuery: false })],
    ["syncUrgency + feedWithPeriodicSync without pulls", Resource, SyncStrategy.feedWithPeriodicSync("10 seconds", { pullOnQuery: false })],
    ["no syncUrgency + activePush without pulls", Counter, SyncStrategy.activePush({ pullOnQuery: false })]
  ]
  for (const [label, definition, strategy] of quiet) {
    it.effect(`registration does not warn: ${label}`, () =>
      Effect.gen(function*() {
        const setup = StateRegistry.register(definition, { strategy })
        const { lines } = yield* captureLogs(TestCluster.make({ nodes: 2, setup }))
        assert.deepStrictEqual(lines.filter((l) => l.message.includes("syncUrgency")), [])
        // The logger did record the registration (so silence is not a capture failure).
        assert.strictEqual(lines.filter((l) => l.message === "registered state").length, 2)
      }))
  }
})

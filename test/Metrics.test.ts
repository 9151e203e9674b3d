import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Metric, Scope } from "effect"
import { PrometheusMetrics } from "effect/observability"
import { Metrics, StateRegistry, SyncStrategy } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import { handleOn, inboundOn, metricsOn, mutateOn } from "./helpers.ts"

const Counter = Fixtures.Counter

type Snapshot = ReadonlyArray<Metric.Metric.Snapshot>

/** The one series of `id` with exactly these labels. */
const series = (snapshot: Snapshot, id: string, labels: Record<string, string>) => {
  const found = snapshot.filter((m) =>
    m.id === id && Object.entries(labels).every(([k, v]) => m.attributes?.[k] === v) &&
    Object.keys(m.attributes ?? {}).length === Object.keys(labels).length
  )
  assert.strictEqual(found.length, 1, `${id} ${JSON.stringify(labels)}: ${found.length} series`)
  return found[0]
}
const count = (snapshot: Snapshot, id: string, labels: Record<string, string>) =>
  (series(snapshot, id, labels).state as Metric.CounterState<number>).count
const gauge = (snapshot: Snapshot, id: string, labels: Record<string, string>) =>
  (series(snapshot, id, labels).state as Metric.GaugeState<number>).value
const histogramCount = (snapshot: Snapshot, id: string, labels: Record<string, string>) =>
  (series(snapshot, id, labels).state as Metric.HistogramState).count

const isolated = Effect.provideService(Metric.MetricRegistry, new Map())

describe("metrics", () => {
  it.effect("every counter of a state is a series from registration on, equal to the handle's metrics", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      for (let i = 0; i < 5; i++) yield* mutateOn(cluster, a, Counter, (s) => ({ value: s.value + 1 }))
      yield* cluster.settle
      const snapshot = yield* Metric.snapshot
      for (const node of [a, b]) {
        const metrics = yield* metricsOn(cluster, node, Counter)
        for (const key of Object.keys(Metrics.state) as Array<Metrics.StateCounter>) {
          assert.strictEqual(count(snapshot, Metrics.state[key].id, { state: "counter", node: node.id }), metrics[key], key)
        }
      }
      assert.strictEqual(count(snapshot, "dstate_mutations", { state: "counter", node: a.id }), 5)
      assert.strictEqual(count(snapshot, "dstate_mutations", { state: "counter", node: b.id }), 0)
      // Inbound counters: the registry's door, per node.
      const inbound = yield* inboundOn(cluster, b)
      for (const key of Object.keys(Metrics.inbound) as Array<Metrics.InboundCounter>) {
        assert.strictEqual(count(snapshot, Metrics.inbound[key].id, { node: b.id }), inbound[key], key)
      }
      assert.isAbove(inbound.framesReceived, 0)
    }).pipe(isolated))

  it.effect("histograms: one save and one mutate-to-publish observation per persisted mutation", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 1, persistence: "memory", setup: StateRegistry.register(Counter) })
      const [a] = cluster.nodes
      for (let i = 0; i < 7; i++) yield* mutateOn(cluster, a, Counter, (s) => ({ value: s.value + 1 }))
      const snapshot = yield* Metric.snapshot
      assert.strictEqual(histogramCount(snapshot, "dstate_save_latency_ms", { state: "counter", node: a.id }), 7)
      assert.strictEqual(histogramCount(snapshot, "dstate_mutate_to_publish_ms", { state: "counter", node: a.id }), 7)
      assert.deepStrictEqual(Metrics.latencyBoundaries.slice(0, 3), [0.05, 0.1, 0.2])
    }).pipe(isolated))

  it.effect("gauges: members as each node sees them, data messages waiting in a state's mailbox", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({
        nodes: 3,
        persistence: "none",
        setup: StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })
      })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      const labels = (node: { readonly id: string }) => ({ state: "counter", node: node.id })
      let snapshot = yield* Metric.snapshot
      for (const node of [a, b, c]) assert.strictEqual(gauge(snapshot, "dstate_members", { node: node.id }), 3)
      assert.strictEqual(gauge(snapshot, "dstate_mailbox_depth", labels(b)), 0)

      // Paused, b's actor takes nothing: a's three snapshots wait in its mailbox.
      yield* cluster.network.pause(b.id)
      const handle = yield* handleOn(cluster, a, Counter)
      for (let i = 0; i < 3; i++) {
        yield* Effect.orDie(handle.mutate((s) => ({ value: s.value + 1 })))
        yield* Effect.yieldNow
      }
      yield* cluster.settle
      snapshot = yield* Metric.snapshot
      assert.strictEqual(gauge(snapshot, "dstate_mailbox_depth", labels(b)), 3)
      yield* cluster.network.resume(b.id)
      yield* cluster.settle
      snapshot = yield* Metric.snapshot
      assert.strictEqual(gauge(snapshot, "dstate_mailbox_depth", labels(b)), 0)

      yield* cluster.removeNode(c)
      yield* cluster.settle
      snapshot = yield* Metric.snapshot
      assert.strictEqual(gauge(snapshot, "dstate_members", { node: a.id }), 2)
      // A node that stopped has no series left.
      assert.deepStrictEqual(snapshot.filter((m) => m.attributes?.node === c.id).map((m) => m.id), [])
    }).pipe(isolated))

  it.effect("Prometheus text exposition of effect's exporter carries the series with their labels", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 1, persistence: "memory", setup: StateRegistry.register(Counter) })
      const [a] = cluster.nodes
      for (let i = 0; i < 4; i++) yield* mutateOn(cluster, a, Counter, (s) => ({ value: s.value + 1 }))
      const text = yield* PrometheusMetrics.format()
      const line = (name: string) => text.split("\n").find((l) => l.startsWith(name + "{") && l.includes(`node="${a.id}"`))
      assert.match(line("dstate_mutations_total") ?? line("dstate_mutations") ?? "", / 4$/)
      assert.match(text, /# TYPE dstate_mailbox_depth gauge/)
      assert.match(text, /dstate_save_latency_ms_count\{[^}]*state="counter"[^}]*\} 4/)
    }).pipe(isolated))

  it.effect("a cluster that closes removes every series it registered", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) }).pipe(Scope.provide(scope))
      assert.isAbove((yield* Metric.snapshot).filter((m) => m.id.startsWith("dstate_")).length, 2 * 21)
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual((yield* Metric.snapshot).filter((m) => m.id.startsWith("dstate_")).map((m) => m.id), [])
    }).pipe(isolated))
})

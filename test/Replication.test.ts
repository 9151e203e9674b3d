/**
 * Replication scenarios on simulated time: fan-out of mutations to every
 * peer, both kinds of state, concurrent owners, long runs, join and leave,
 * crashes with and without persistence, persistence failures, storage
 * migrations, and large views.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { TestClock } from "effect/testing"
import { DistributedState, DStateError, StatePersistence, StateRegistry } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import { handleOn, localOn, loggedFrames, metricsOn, sentFrames, summary, viewsOn } from "./helpers.ts"
import type { Cluster, Node } from "./helpers.ts"

const { Counter, NodeResource } = Fixtures
const registerCounter = StateRegistry.register(Counter)
const increment = (by: number) => (s: { readonly value: number }) => ({ value: s.value + by })

const mutateOn = (cluster: Cluster, node: Node, by: number) =>
  Effect.flatMap(handleOn(cluster, node, Counter), (h) => h.mutate(increment(by)))

/** Asserts that every node up holds exactly `expected` as its view map of `definition`. */
const assertEverywhere = <T extends DistributedState.Any>(
  cluster: Cluster,
  definition: T,
  expected: Record<string, { incarnation: number; age: number; value: DistributedState.ViewOf<T> }>
) =>
  Effect.gen(function*() {
    for (const node of cluster.nodes) {
      assert.deepStrictEqual(summary(yield* viewsOn(cluster, node, definition)), expected, `views on ${node.id}`)
    }
  })

describe("Replication", () => {
  describe("fan-out", () => {
    for (const size of [2, 4, 10]) {
      it.effect(`a mutation reaches all ${size - 1} peers of a ${size}-node cluster with its value and age`, () =>
        Effect.gen(function*() {
          const cluster = yield* TestCluster.make({ nodes: size, setup: registerCounter })
          const [a, ...peers] = cluster.nodes
          assert.strictEqual(peers.length, size - 1)
          yield* cluster.settle
          const sentBefore = (yield* metricsOn(cluster, a, Counter)).snapshotsSent
          const receivedBefore = yield* Effect.forEach(peers, (p) => metricsOn(cluster, p, Counter))
          const committed = yield* mutateOn(cluster, a, 42)
          assert.deepStrictEqual(committed, { generation: { incarnation: 0, age: 1 }, state: { value: 42 } })
          yield* cluster.settle
          const expected: Record<string, { incarnation: number; age: number; value: { value: number } }> = {}
          for (const n of cluster.nodes) {
            expected[n.id] = { incarnation: 0, age: n === a ? 1 : 0, value: { value: n === a ? 42 : 0 } }
          }
          yield* assertEverywhere(cluster, Counter, expected)
          const owner = yield* metricsOn(cluster, a, Counter)
          assert.strictEqual(owner.mutations, 1)
          assert.strictEqual(owner.snapshotsSent - sentBefore, size - 1)
          for (const [i, p] of peers.entries()) {
            const m = yield* metricsOn(cluster, p, Counter)
            assert.strictEqual(m.snapshotsReceived - receivedBefore[i].snapshotsReceived, 1)
            assert.strictEqual(m.staleDiscarded, receivedBefore[i].staleDiscarded)
          }
        }))
    }
  })

  describe("both kinds of state", () => {
    it.effect("a simple counter is pushed as snapshots: peers × mutations", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 4, setup: registerCounter })
        const [a, ...peers] = cluster.nodes
        yield* cluster.settle
        const before = yield* metricsOn(cluster, a, Counter)
        const receivedBefore = yield* Effect.forEach(peers, (p) => metricsOn(cluster, p, Counter))
        // Each mutation in its own turn: each is pushed.
        for (const by of [1, 10, 100]) {
          yield* mutateOn(cluster, a, by)
          yield* Effect.yieldNow
        }
        yield* cluster.settle
        const after = yield* metricsOn(cluster, a, Counter)
        assert.strictEqual(after.snapshotsSent - before.snapshotsSent, 3 * 3)
        assert.strictEqual(after.deltasSent, 0)
        for (const [i, p] of peers.entries()) {
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, p, Counter))[a.id], {
            incarnation: 0,
            age: 3,
            value: { value: 111 }
          })
          const m = yield* metricsOn(cluster, p, Counter)
          assert.strictEqual(m.snapshotsReceived - receivedBefore[i].snapshotsReceived, 3)
          assert.strictEqual(m.deltasReceived, 0)
        }
      }))

    it.effect("mutations in one turn of the mutating fiber are pushed as one snapshot of the newest generation", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 4, setup: registerCounter })
        const [a, ...peers] = cluster.nodes
        yield* cluster.settle
        const before = yield* metricsOn(cluster, a, Counter)
        const receivedBefore = yield* Effect.forEach(peers, (p) => metricsOn(cluster, p, Counter))
        const owner = yield* handleOn(cluster, a, Counter)
        yield* Effect.forEach([1, 10, 100], (by) => owner.mutate(increment(by)), { discard: true })
        // Nothing has been sent yet: the push waits for this fiber to yield.
        assert.strictEqual((yield* owner.metrics).snapshotsSent, before.snapshotsSent)
        yield* cluster.settle
        const after = yield* metricsOn(cluster, a, Counter)
        assert.strictEqual(after.mutations - before.mutations, 3)
        assert.strictEqual(after.snapshotsSent - before.snapshotsSent, 3)
        for (const [i, p] of peers.entries()) {
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, p, Counter))[a.id], {
            incarnation: 0,
            age: 3,
            value: { value: 111 }
          })
          const m = yield* metricsOn(cluster, p, Counter)
          assert.deepStrictEqual(m, { ...receivedBefore[i], snapshotsReceived: receivedBefore[i].snapshotsReceived + 1 })
        }
      }))

    it.effect("a delta-aware state sends deltas; peers see exactly the projected view, never the private fields", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 4, setup: StateRegistry.register(NodeResource) })
        const [a, ...peers] = cluster.nodes
        yield* cluster.settle
        const before = yield* metricsOn(cluster, a, NodeResource)
        const peersBefore = yield* Effect.forEach(peers, (p) => metricsOn(cluster, p, NodeResource))
        cluster.network.clearLog()
        const owner = yield* handleOn(cluster, a, NodeResource)
        const changes: ReadonlyArray<Fixtures.NodeResourceChange> = [
          { cpuPercent: 12.5 },
          { memoryUsedMiB: 512 },
          { tags: ["gpu", "ssd"] },
          { cpuPercent: 7, memoryUsedMiB: 640 }
        ]
        for (const change of changes) {
          yield* owner.mutateWithDelta((s) => Fixtures.updateResource({ ...s, lastRawCpuTicks: s.lastRawCpuTicks + 1000 }, change))
        }
        yield* cluster.settle
        const view = { cpuPercent: 7, memoryUsedMiB: 640, tags: ["gpu", "ssd"] }
        // The owner keeps its private fields; every copy (its own view included) is the projection.
        assert.deepStrictEqual(yield* owner.state, {
          cpuPercent: 7,
          memoryUsedMiB: 640,
          tags: ["gpu", "ssd"],
          samples: 4,
          lastRawCpuTicks: 4000
        })
        for (const n of cluster.nodes) {
          const held = (yield* viewsOn(cluster, n, NodeResource)).get(a.id)!
          assert.deepStrictEqual(held.generation, { incarnation: 0, age: 4 })
          assert.deepStrictEqual(held.value, view)
          assert.deepStrictEqual(Object.keys(held.value).sort(), ["cpuPercent", "memoryUsedMiB", "tags"])
          assert.isFalse("samples" in held.value)
          assert.isFalse("lastRawCpuTicks" in held.value)
        }
        const after = yield* metricsOn(cluster, a, NodeResource)
        assert.strictEqual(after.mutations, 4)
        assert.strictEqual(after.deltasSent - before.deltasSent, peers.length * changes.length)
        assert.strictEqual(after.snapshotsSent, before.snapshotsSent)
        for (const [i, p] of peers.entries()) {
          const m = yield* metricsOn(cluster, p, NodeResource)
          assert.deepStrictEqual(m, { ...peersBefore[i], deltasReceived: peersBefore[i].deltasReceived + 4 })
          assert.strictEqual(m.deltasReceived, 4)
        }
        // What travelled: exactly one DeltaUpdate per peer and mutation, nothing else.
        const traffic = loggedFrames(cluster)
        assert.strictEqual(traffic.length, cluster.network.log().length)
        assert.deepStrictEqual(traffic.map((f) => `${f.message._tag} ${f.from}`), Array(12).fill(`DeltaUpdate ${a.id}`))
      }))

    it.effect("a new peer gets the projected view in its join snapshot", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(NodeResource) })
        const [a] = cluster.nodes
        yield* cluster.settle
        const owner = yield* handleOn(cluster, a, NodeResource)
        yield* owner.mutateWithDelta((s) => Fixtures.updateResource({ ...s, lastRawCpuTicks: 99 }, { cpuPercent: 50 }))
        yield* owner.mutateWithDelta((s) => Fixtures.updateResource(s, { tags: ["edge"] }))
        yield* cluster.settle
        const c = yield* cluster.addNode()
        yield* cluster.settle
        const held = (yield* viewsOn(cluster, c, NodeResource)).get(a.id)!
        assert.deepStrictEqual(held.generation, { incarnation: 0, age: 2 })
        assert.deepStrictEqual(held.value, { cpuPercent: 50, memoryUsedMiB: 0, tags: ["edge"] })
        assert.deepStrictEqual(Object.keys(held.value).sort(), ["cpuPercent", "memoryUsedMiB", "tags"])
        // Later deltas apply on top of that snapshot.
        yield* owner.mutateWithDelta((s) => Fixtures.updateResource(s, { memoryUsedMiB: 128 }))
        yield* cluster.settle
        const next = (yield* viewsOn(cluster, c, NodeResource)).get(a.id)!
        assert.deepStrictEqual(next.generation, { incarnation: 0, age: 3 })
        assert.deepStrictEqual(next.value, { cpuPercent: 50, memoryUsedMiB: 128, tags: ["edge"] })
        assert.strictEqual((yield* metricsOn(cluster, c, NodeResource)).deltasReceived, 1)
      }))
  })

  describe("convergence", () => {
    it.effect("concurrent mutations on every node converge to every owner's final value and age", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 5, setup: registerCounter })
        const nodes = cluster.nodes
        yield* cluster.settle
        // Node i commits (i + 3) mutations of +(i + 1), all nodes and all mutations at once.
        yield* Effect.forEach(
          nodes,
          (node, i) =>
            Effect.flatMap(handleOn(cluster, node, Counter), (h) =>
              Effect.forEach(Array.from({ length: i + 3 }), () => h.mutate(increment(i + 1)), {
                concurrency: "unbounded",
                discard: true
              })),
          { concurrency: "unbounded", discard: true }
        )
        yield* cluster.settle
        const expected: Record<string, { incarnation: number; age: number; value: { value: number } }> = {}
        for (const [i, node] of nodes.entries()) {
          expected[node.id] = { incarnation: 0, age: i + 3, value: { value: (i + 3) * (i + 1) } }
        }
        yield* assertEverywhere(cluster, Counter, expected)
      }))

    it.effect("concurrent delta mutations on every node converge", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 4, setup: StateRegistry.register(NodeResource) })
        const nodes = cluster.nodes
        yield* cluster.settle
        yield* Effect.forEach(
          nodes,
          (node, i) =>
            Effect.flatMap(handleOn(cluster, node, NodeResource), (h) =>
              Effect.forEach(
                [1, 2, 3, 4, 5],
                (k) => h.mutateWithDelta((s) => Fixtures.updateResource(s, k % 2 === 0 ? { memoryUsedMiB: s.memoryUsedMiB + k * (i + 1) } : { cpuPercent: s.cpuPercent + k })),
                { concurrency: "unbounded", discard: true }
              )),
          { concurrency: "unbounded", discard: true }
        )
        yield* cluster.settle
        // The mailbox serialises each owner's mutations: cpu 1+3+5, memory (2+4)(i+1), in any order.
        const expected: Record<string, { incarnation: number; age: number; value: Fixtures.NodeResourceView }> = {}
        for (const [i, node] of nodes.entries()) {
          expected[node.id] = { incarnation: 0, age: 5, value: { cpuPercent: 9, memoryUsedMiB: 6 * (i + 1), tags: [] } }
        }
        yield* assertEverywhere(cluster, NodeResource, expected)
        for (const node of nodes) {
          const m = yield* metricsOn(cluster, node, NodeResource)
          assert.strictEqual(m.deltasSent, 3 * 5)
          assert.strictEqual(m.deltasReceived, 3 * 5)
          assert.strictEqual(m.gapsDetected, 0)
        }
      }))

    it.effect("1000 sequential mutations arrive with age 1000 and value 1000", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        const before = yield* Effect.forEach([b, c], (n) => metricsOn(cluster, n, Counter))
        const owner = yield* handleOn(cluster, a, Counter)
        for (let i = 0; i < 1000; i++) {
          yield* owner.mutate(increment(1))
          yield* Effect.yieldNow // its own turn: pushed before the next
        }
        yield* cluster.settle
        for (const n of [a, b, c]) {
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, n, Counter))[a.id], {
            incarnation: 0,
            age: 1000,
            value: { value: 1000 }
          })
        }
        for (const [i, n] of [b, c].entries()) {
          const m = yield* metricsOn(cluster, n, Counter)
          // One snapshot per mutation, none lost, none out of order.
          assert.deepStrictEqual(m, { ...before[i], snapshotsReceived: before[i].snapshotsReceived + 1000 })
        }
        assert.strictEqual((yield* metricsOn(cluster, a, Counter)).mutations, 1000)
      }))
    it.effect("1000 mutations in one turn: peers end at age 1000 with one snapshot per push, never an older one", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        const before = yield* Effect.forEach([a, b, c], (n) => metricsOn(cluster, n, Counter))
        const owner = yield* handleOn(cluster, a, Counter)
        for (let i = 0; i < 1000; i++) yield* owner.mutate(increment(1))
        yield* cluster.settle
        for (const n of [a, b, c]) {
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, n, Counter))[a.id], {
            incarnation: 0,
            age: 1000,
            value: { value: 1000 }
          })
        }
        const sent = (yield* metricsOn(cluster, a, Counter)).snapshotsSent - before[0].snapshotsSent
        const pushes = sent / 2
        // The mutating fiber yields now and then (the scheduler's budget): a few pushes, not 1000.
        assert.isAtLeast(pushes, 1)
        assert.isBelow(pushes, 100)
        for (const [i, n] of [b, c].entries()) {
          const m = yield* metricsOn(cluster, n, Counter)
          assert.deepStrictEqual(m, { ...before[i + 1], snapshotsReceived: before[i + 1].snapshotsReceived + pushes })
        }
      }))
  })

  describe("membership", () => {


    it.effect("a node added later receives every existing view, and every node receives its view", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        yield* mutateOn(cluster, a, 1)
        yield* mutateOn(cluster, b, 2)
        yield* mutateOn(cluster, b, 2)
        yield* mutateOn(cluster, c, 3)
        yield* mutateOn(cluster, c, 3)
        yield* mutateOn(cluster, c, 3)
        yield* cluster.settle
        yield* TestClock.adjust("1 second")
        const d = yield* cluster.addNode()
        yield* cluster.settle
        const expected = {
          [a.id]: { incarnation: 0, age: 1, value: { value: 1 } },
          [b.id]: { incarnation: 0, age: 2, value: { value: 4 } },
          [c.id]: { incarnation: 0, age: 3, value: { value: 9 } },
          [d.id]: { incarnation: 1000, age: 0, value: { value: 0 } }
        }
        yield* assertEverywhere(cluster, Counter, expected)
        // And it takes part like any other node.
        yield* mutateOn(cluster, d, 40)
        yield* cluster.settle
        yield* assertEverywhere(cluster, Counter, { ...expected, [d.id]: { incarnation: 1000, age: 1, value: { value: 40 } } })
      }))

    it.effect("a graceful leave removes the node's view everywhere; a late frame of that incarnation is ignored", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, x] = cluster.nodes
        yield* cluster.settle
        yield* mutateOn(cluster, x, 5)
        yield* mutateOn(cluster, x, 5)
        yield* cluster.settle
        const late = loggedFrames(cluster, { from: x.id, to: a.id, tag: "FullSnapshot" })
          .filter((f) => f.message._tag === "FullSnapshot" && f.message.generation.age === 2)
        assert.strictEqual(late.length, 1)
        yield* cluster.removeNode(x)
        yield* cluster.settle
        const expected = {
          [a.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        }
        yield* assertEverywhere(cluster, Counter, expected)
        const before = yield* metricsOn(cluster, a, Counter)
        yield* cluster.network.inject(x.id, a.id, late[0].frame)
        yield* cluster.settle
        yield* assertEverywhere(cluster, Counter, expected)
        const after = yield* metricsOn(cluster, a, Counter)
        assert.deepStrictEqual(after, { ...before, departedIgnored: before.departedIgnored + 1 })
      }))

    it.effect("the departed set holds exactly departedCapacity nodes: the oldest departure beyond it is forgotten", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 4, setup: registerCounter, registry: { departedCapacity: 2 } })
        const [a, x1, x2, x3] = cluster.nodes
        yield* cluster.settle
        const late = new Map<Node, Uint8Array>()
        for (const x of [x1, x2, x3]) {
          yield* mutateOn(cluster, x, 1)
          yield* mutateOn(cluster, x, 1)
          yield* cluster.settle
          const frames = loggedFrames(cluster, { from: x.id, to: a.id, tag: "FullSnapshot" })
            .filter((f) => f.message._tag === "FullSnapshot" && f.message.generation.age === 2)
          assert.strictEqual(frames.length, 1)
          late.set(x, frames[0].frame)
        }
        // Three departures into a set of two: x1's is forgotten.
        for (const x of [x1, x2, x3]) yield* cluster.removeNode(x)
        yield* cluster.settle
        const alone = { [a.id]: { incarnation: 0, age: 0, value: { value: 0 } } }
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, a, Counter)), alone)
        const before = yield* metricsOn(cluster, a, Counter)
        // The two remembered departures still keep their late frames out...
        yield* cluster.network.inject(x2.id, a.id, late.get(x2)!)
        yield* cluster.network.inject(x3.id, a.id, late.get(x3)!)
        yield* cluster.settle
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, a, Counter)), alone)
        const after = yield* metricsOn(cluster, a, Counter)
        assert.strictEqual(after.departedIgnored, before.departedIgnored + 2)
        // ...while the forgotten one's is accepted again, as the limit documents.
        yield* cluster.network.inject(x1.id, a.id, late.get(x1)!)
        yield* cluster.settle
        const views = yield* viewsOn(cluster, a, Counter)
        assert.deepStrictEqual(summary(views)[x1.id], { incarnation: 0, age: 2, value: { value: 2 } })
        assert.strictEqual((yield* metricsOn(cluster, a, Counter)).departedIgnored, before.departedIgnored + 2)
      }))

    it.effect("a node that leaves and rejoins with a new incarnation is accepted again", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter, persistence: "none" })
        const [a, x] = cluster.nodes
        yield* cluster.settle
        yield* mutateOn(cluster, x, 5)
        yield* cluster.settle
        yield* cluster.removeNode(x)
        yield* cluster.settle
        yield* TestClock.adjust("2 seconds")
        yield* cluster.restart(x)
        yield* cluster.settle
        yield* assertEverywhere(cluster, Counter, {
          [a.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [x.id]: { incarnation: 2000, age: 0, value: { value: 0 } }
        })
      }))
  })

  describe("crash and restart", () => {
    it.effect("without persistence: peers accept the new, greater incarnation at age 0", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter, persistence: "none" })
        const [a, b, c] = cluster.nodes
        assert.strictEqual(a.store, undefined)
        yield* cluster.settle
        for (let i = 0; i < 3; i++) yield* mutateOn(cluster, a, 1)
        yield* cluster.settle
        const old = (yield* localOn(cluster, a, Counter)).generation
        assert.deepStrictEqual(old, { incarnation: 0, age: 3 })
        yield* cluster.crash(a)
        yield* cluster.settle
        for (const n of [b, c]) assert.isFalse((yield* viewsOn(cluster, n, Counter)).has(a.id))
        yield* TestClock.adjust("1 second")
        yield* cluster.restart(a)
        yield* cluster.settle
        const fresh = (yield* localOn(cluster, a, Counter)).generation
        assert.deepStrictEqual(fresh, { incarnation: 1000, age: 0 })
        assert.isTrue(fresh.incarnation > old.incarnation)
        yield* assertEverywhere(cluster, Counter, {
          [a.id]: { incarnation: 1000, age: 0, value: { value: 0 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
        // The new incarnation replicates as usual.
        yield* mutateOn(cluster, a, 7)
        yield* cluster.settle
        for (const n of [b, c]) {
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, n, Counter))[a.id], { incarnation: 1000, age: 1, value: { value: 7 } })
        }
      }))

    it.effect("with persistence: the same incarnation, age and value are restored and peers hold them", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        for (let i = 0; i < 3; i++) yield* mutateOn(cluster, a, 2)
        yield* cluster.settle
        const before = yield* localOn(cluster, a, Counter)
        yield* cluster.crash(a)
        yield* cluster.settle
        yield* TestClock.adjust("1 second")
        yield* cluster.restart(a)
        yield* cluster.settle
        const restored = yield* localOn(cluster, a, Counter)
        assert.deepStrictEqual(restored.generation, { incarnation: 0, age: 3 })
        assert.deepStrictEqual(restored.value, { value: 6 })
        assert.strictEqual(restored.createdAt, before.createdAt)
        assert.strictEqual(restored.modifiedAt, before.modifiedAt)
        yield* assertEverywhere(cluster, Counter, {
          [a.id]: { incarnation: 0, age: 3, value: { value: 6 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
        // Ages continue where they were.
        const committed = yield* mutateOn(cluster, a, 1)
        assert.deepStrictEqual(committed.generation, { incarnation: 0, age: 4 })
        yield* cluster.settle
        for (const n of [b, c]) {
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, n, Counter))[a.id], { incarnation: 0, age: 4, value: { value: 7 } })
        }
      }))

    it.effect("with persistence, a delta-aware state keeps its private fields across a crash", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(NodeResource) })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const owner = yield* handleOn(cluster, a, NodeResource)
        yield* owner.mutateWithDelta((s) => Fixtures.updateResource({ ...s, lastRawCpuTicks: 77 }, { cpuPercent: 30 }))
        yield* owner.mutateWithDelta((s) => Fixtures.updateResource(s, { tags: ["x"] }))
        yield* cluster.settle
        yield* cluster.crash(a)
        yield* cluster.restart(a)
        yield* cluster.settle
        assert.deepStrictEqual(yield* Effect.flatMap(handleOn(cluster, a, NodeResource), (h) => h.state), {
          cpuPercent: 30,
          memoryUsedMiB: 0,
          tags: ["x"],
          samples: 2,
          lastRawCpuTicks: 77
        })
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, NodeResource))[a.id], {
          incarnation: 0,
          age: 2,
          value: { cpuPercent: 30, memoryUsedMiB: 0, tags: ["x"] }
        })
        // Deltas continue from the restored age.
        yield* Effect.flatMap(
          handleOn(cluster, a, NodeResource),
          (h) => h.mutateWithDelta((s) => Fixtures.updateResource(s, { memoryUsedMiB: 1 }))
        )
        yield* cluster.settle
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, NodeResource))[a.id], {
          incarnation: 0,
          age: 3,
          value: { cpuPercent: 30, memoryUsedMiB: 1, tags: ["x"] }
        })
      }))
  })

  describe("persistence failures", () => {
    it.effect("a failed save fails the mutation with PersistenceFailed, changes no age anywhere and sends nothing", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        yield* mutateOn(cluster, a, 1)
        yield* cluster.settle
        const owner = yield* handleOn(cluster, a, Counter)
        const metricsBefore = yield* owner.metrics
        const record = a.store!.records.get("counter")
        a.store!.failSaves = true
        const sent = sentFrames(cluster)
        const error = yield* owner.mutate(increment(100)).pipe(Effect.flip)
        yield* cluster.settle
        assert.instanceOf(error, DStateError.PersistenceFailed)
        assert.strictEqual(error._tag, "PersistenceFailed")
        assert.strictEqual(error.stateName, "counter")
        assert.strictEqual(error.operation, "save")
        assert.strictEqual(sentFrames(cluster), sent)
        assert.strictEqual(a.store!.records.get("counter"), record)
        assert.deepStrictEqual(yield* owner.state, { value: 1 })
        const expected = {
          [a.id]: { incarnation: 0, age: 1, value: { value: 1 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        }
        yield* assertEverywhere(cluster, Counter, expected)
        const metricsAfter = yield* owner.metrics
        assert.strictEqual(metricsAfter.persistenceFailures, metricsBefore.persistenceFailures + 1)
        assert.strictEqual(metricsAfter.mutations, metricsBefore.mutations)
        assert.strictEqual(metricsAfter.snapshotsSent, metricsBefore.snapshotsSent)
        // Once saves work again the next mutation takes the next age: the failed one left no trace.
        a.store!.failSaves = false
        const committed = yield* owner.mutate(increment(10))
        assert.deepStrictEqual(committed, { generation: { incarnation: 0, age: 2 }, state: { value: 11 } })
        yield* cluster.settle
        yield* assertEverywhere(cluster, Counter, { ...expected, [a.id]: { incarnation: 0, age: 2, value: { value: 11 } } })
      }))

    it.effect("a failed delta save sends no delta either", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(NodeResource) })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const owner = yield* handleOn(cluster, a, NodeResource)
        a.store!.failSaves = true
        const sent = sentFrames(cluster)
        for (const cpuPercent of [90, 45]) {
          const error = yield* owner.mutateWithDelta((s) => Fixtures.updateResource(s, { cpuPercent })).pipe(Effect.flip)
          assert.instanceOf(error, DStateError.PersistenceFailed)
          assert.strictEqual((error as DStateError.PersistenceFailed).operation, "save")
          yield* cluster.settle
        }
        assert.strictEqual(sentFrames(cluster), sent)
        assert.deepStrictEqual(yield* owner.state, { cpuPercent: 0, memoryUsedMiB: 0, tags: [], samples: 0, lastRawCpuTicks: 0 })
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, NodeResource))[a.id], {
          incarnation: 0,
          age: 0,
          value: { cpuPercent: 0, memoryUsedMiB: 0, tags: [] }
        })
        const m = yield* owner.metrics
        assert.strictEqual(m.persistenceFailures, 2)
        assert.strictEqual(m.deltasSent, 0)
        assert.strictEqual((yield* metricsOn(cluster, b, NodeResource)).deltasReceived, 0)
      }))

    it.effect("a failed load starts the node fresh with a new, greater incarnation and the initial value", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* mutateOn(cluster, a, 4)
        yield* mutateOn(cluster, a, 4)
        yield* cluster.settle
        yield* cluster.crash(a)
        yield* TestClock.adjust("3 seconds")
        a.store!.failLoads = true
        yield* cluster.restart(a)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, Counter)
        assert.deepStrictEqual(local.generation, { incarnation: 3000, age: 0 })
        assert.deepStrictEqual(local.value, { value: 0 })
        assert.deepStrictEqual(yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.state), { value: 0 })
        yield* assertEverywhere(cluster, Counter, {
          [a.id]: { incarnation: 3000, age: 0, value: { value: 0 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
      }))

    it.effect("an owner that restarts below a generation its peers accepted is told so and moves past it", () =>
      Effect.gen(function*() {
        // A peer accepted {2100-01-01, 9} from a; a then loses its state (failed load) with the clock far
        // behind that incarnation. The peer's snapshot request carries what it saw, and a moves above it.
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* cluster.crash(a)
        const future = 4_102_444_800_000
        yield* StatePersistence.makeMemory(a.store!.records).save("counter", {
          generation: { incarnation: future, age: 9 },
          storageVersion: 1,
          value: { value: 9 },
          createdAt: future,
          modifiedAt: future
        })
        yield* cluster.restart(a)
        yield* cluster.settle
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], {
          incarnation: future,
          age: 9,
          value: { value: 9 }
        })
        yield* cluster.crash(a)
        yield* TestClock.adjust("1 second")
        a.store!.failLoads = true
        yield* cluster.restart(a)
        a.store!.failLoads = false
        yield* cluster.settle
        const local = yield* localOn(cluster, a, Counter)
        assert.deepStrictEqual(local.generation, { incarnation: future + 1, age: 0 })
        yield* assertEverywhere(cluster, Counter, {
          [a.id]: { incarnation: future + 1, age: 0, value: { value: 0 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
      }))

    it.effect("a restart that reuses an incarnation at the same clock reading never names two states with one generation", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        yield* mutateOn(cluster, a, 5)
        yield* cluster.settle
        // Crash and restart at the same clock reading with a failed load: a starts fresh at {0, 0}, below
        // the {0, 1} its peers hold; they refuse it and tell a, which moves to incarnation 1.
        yield* cluster.crash(a)
        a.store!.failLoads = true
        yield* cluster.restart(a)
        a.store!.failLoads = false
        yield* cluster.settle
        yield* mutateOn(cluster, a, 1)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, Counter)
        assert.deepStrictEqual(local.generation, { incarnation: 1, age: 1 })
        yield* assertEverywhere(cluster, Counter, {
          [a.id]: { incarnation: 1, age: 1, value: { value: 1 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
      }))

    it.effect("a new incarnation is greater than the persisted one even when the clock is behind it", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* cluster.crash(a)
        yield* TestClock.adjust("1 second")
        // A record written by an incarnation far ahead of the clock, whose value no longer decodes.
        const future = 4_102_444_800_000 // 2100-01-01 in ms
        yield* StatePersistence.makeMemory(a.store!.records).save("counter", {
          generation: { incarnation: future, age: 9 },
          storageVersion: 1,
          value: { value: "corrupted" },
          createdAt: future,
          modifiedAt: future
        })
        yield* cluster.restart(a)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, Counter)
        assert.deepStrictEqual(local.generation, { incarnation: future + 1, age: 0 })
        assert.deepStrictEqual(local.value, { value: 0 })
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], {
          incarnation: future + 1,
          age: 0,
          value: { value: 0 }
        })
        // The fresh state was saved over the bad record.
        const saved = yield* StatePersistence.makeMemory(a.store!.records).load("counter")
        assert.deepStrictEqual(saved?.generation, { incarnation: future + 1, age: 0 })
        assert.deepStrictEqual(saved?.value, { value: 0 })
      }))
  })

  describe("storage migration", () => {
    const V1 = DistributedState.make({
      name: "profile",
      schema: Schema.Struct({ value: Schema.Int }),
      initial: () => ({ value: 0 }),
      storageVersion: 1
    })
    const V2State = Schema.Struct({ count: Schema.Int, label: Schema.String })
    const fromV1 = Schema.decodeUnknownEffect(Schema.toCodecJson(Schema.Struct({ value: Schema.Int })))
    const migrated = (migrateState: DistributedState.MigrateState<typeof V2State.Type>) =>
      DistributedState.make({
        name: "profile",
        schema: V2State,
        initial: () => ({ count: 0, label: "fresh" }),
        storageVersion: 2,
        migrateState
      })
    const V2 = migrated((encoded, fromVersion) =>
      fromV1(encoded).pipe(
        Effect.map((old) => ({ count: old.value, label: `from v${fromVersion}` })),
        Effect.mapError((e) =>
          new DStateError.MigrationFailed({ stateName: "profile", fromVersion, toVersion: 2, reason: e.message, cause: e })
        )
      )
    )
    const V2Failing = migrated((_encoded, fromVersion) =>
      Effect.fail(new DStateError.MigrationFailed({ stateName: "profile", fromVersion, toVersion: 2, reason: "refused" }))
    )
    const V2Dying = migrated(() => Effect.die(new Error("migration bug")))

    /** A one-node cluster whose setup registers whichever definition is current at (re)start. */
    const withVersions = Effect.gen(function*() {
      const current: { definition: DistributedState.Any } = { definition: V1 }
      const cluster = yield* TestCluster.make({
        nodes: 1,
        setup: Effect.suspend(() => StateRegistry.register(current.definition))
      })
      const [a] = cluster.nodes
      yield* cluster.settle
      const owner = yield* handleOn(cluster, a, V1)
      for (let i = 0; i < 3; i++) yield* owner.mutate(increment(5))
      const stored = (yield* StatePersistence.makeMemory(a.store!.records).load("profile"))!
      assert.deepStrictEqual(stored.generation, { incarnation: 0, age: 3 })
      assert.strictEqual(stored.storageVersion, 1)
      yield* cluster.crash(a)
      return { cluster, a, current }
    })

    it.effect("a v2 definition reading a v1 record keeps age and incarnation and saves the v2 record", () =>
      Effect.gen(function*() {
        const { a, cluster, current } = yield* withVersions
        yield* TestClock.adjust("1 second")
        current.definition = V2
        yield* cluster.restart(a)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, V2)
        assert.deepStrictEqual(local.generation, { incarnation: 0, age: 3 })
        assert.deepStrictEqual(local.value, { count: 15, label: "from v1" })
        assert.strictEqual(local.createdAt, 0)
        const stored = (yield* StatePersistence.makeMemory(a.store!.records).load("profile"))!
        assert.strictEqual(stored.storageVersion, 2)
        assert.deepStrictEqual(stored.generation, { incarnation: 0, age: 3 })
        assert.deepStrictEqual(stored.value, { count: 15, label: "from v1" })
        const committed = yield* Effect.flatMap(handleOn(cluster, a, V2), (h) => h.mutate((s) => ({ ...s, count: s.count + 1 })))
        assert.deepStrictEqual(committed.generation, { incarnation: 0, age: 4 })
      }))

    it.effect("a failing migration starts fresh with a new incarnation (one more than the record's)", () =>
      Effect.gen(function*() {
        const { a, cluster, current } = yield* withVersions
        current.definition = V2Failing
        yield* cluster.restart(a)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, V2Failing)
        assert.deepStrictEqual(local.generation, { incarnation: 1, age: 0 })
        assert.deepStrictEqual(local.value, { count: 0, label: "fresh" })
        const stored = (yield* StatePersistence.makeMemory(a.store!.records).load("profile"))!
        assert.strictEqual(stored.storageVersion, 2)
        assert.deepStrictEqual(stored.generation, { incarnation: 1, age: 0 })
      }))

    it.effect("a migration that dies is treated like a failing one", () =>
      Effect.gen(function*() {
        const { a, cluster, current } = yield* withVersions
        yield* TestClock.adjust("5 seconds")
        current.definition = V2Dying
        yield* cluster.restart(a)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, V2Dying)
        assert.deepStrictEqual(local.generation, { incarnation: 5000, age: 0 })
        assert.deepStrictEqual(local.value, { count: 0, label: "fresh" })
      }))

    it.effect("a record from a newer storage version is not read: fresh state, new incarnation", () =>
      Effect.gen(function*() {
        const { a, cluster, current } = yield* withVersions
        current.definition = V2
        yield* cluster.restart(a)
        yield* cluster.settle
        yield* cluster.crash(a)
        current.definition = V1
        yield* cluster.restart(a)
        yield* cluster.settle
        const local = yield* localOn(cluster, a, V1)
        assert.deepStrictEqual(local.generation, { incarnation: 1, age: 0 })
        assert.deepStrictEqual(local.value, { value: 0 })
      }))
  })

  describe("large views", () => {
    it.effect("a 1 MiB view replicates intact", () =>
      Effect.gen(function*() {
        const Blob = DistributedState.make({
          name: "blob",
          schema: Schema.Struct({ data: Schema.String }),
          initial: () => ({ data: "" })
        })
        const cluster = yield* TestCluster.make({ nodes: 3, setup: StateRegistry.register(Blob) })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        let data = ""
        for (let i = 0; data.length < 1024 * 1024; i++) data += alphabet[(i * 7) % alphabet.length]
        assert.strictEqual(data.length, 1024 * 1024)
        yield* Effect.flatMap(handleOn(cluster, a, Blob), (h) => h.mutate(() => ({ data })))
        yield* cluster.settle
        for (const n of [b, c]) {
          const held = (yield* viewsOn(cluster, n, Blob)).get(a.id)!
          assert.deepStrictEqual(held.generation, { incarnation: 0, age: 1 })
          assert.strictEqual(held.value.data.length, 1024 * 1024)
          assert.isTrue(held.value.data === data)
        }
        const frames = loggedFrames(cluster, { from: a.id, tag: "FullSnapshot" })
          .filter((f) => f.message._tag === "FullSnapshot" && f.message.generation.age === 1)
        assert.strictEqual(frames.length, 2)
        for (const f of frames) assert.isTrue(f.frame.length > 1024 * 1024)
      }))
  })
})

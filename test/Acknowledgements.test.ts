/**
 * Awaited mutations on a 5-node `TestCluster` on simulated time: each
 * consistency level with its exact acknowledged count, the timeout under a
 * partition (the mutation committed and visible where the network allows),
 * a member leaving during the wait, requests that cannot be met, the option
 * checks at their edges, and every strategy (the owner pushes what the
 * awaited peers need under the change-feed and periodic strategies).
 */
import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { DistributedState, DStateError, Generation, StateRegistry, SyncMessage, SyncStrategy, SyncUrgency } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import { frameOf, handleOn, inboundOn, metricsOn, viewsOn } from "./helpers.ts"
import type { Cluster, Node } from "./helpers.ts"

const { Counter, NodeResource } = Fixtures
const increment = (s: { readonly value: number }) => ({ value: s.value + 1 })

const awaited = (
  peers: number | "majority" | "all",
  timeout: Duration.Input = "5 seconds"
): StateRegistry.MutateOptions => ({ await: { peers, timeout } })

/** Starts an awaited increment on `node` (forked: the acknowledgements need the network to run). */
const mutateAwaiting = (cluster: Cluster, node: Node, options: StateRegistry.MutateOptions) =>
  Effect.flatMap(handleOn(cluster, node, Counter), (h) => Effect.forkChild(h.mutate(increment, options)))

/** The age of `owner`'s view of the counter held on each of `nodes`, by node id. */
const agesOf = (cluster: Cluster, owner: Node, nodes: ReadonlyArray<Node>) =>
  Effect.gen(function*() {
    const ages: Record<string, number | undefined> = {}
    for (const node of nodes) ages[node.id] = (yield* viewsOn(cluster, node, Counter)).get(owner.id)?.generation.age
    return ages
  })

const fiveNodes = (setup: Effect.Effect<unknown, unknown, StateRegistry.StateRegistry> = StateRegistry.register(Counter)) =>
  Effect.gen(function*() {
    const cluster = yield* TestCluster.make({ nodes: 5, setup })
    yield* cluster.settle
    return cluster
  })

describe("Acknowledgements", () => {
  describe("consistency levels on 5 nodes", () => {
    for (
      const [peers, required] of [["majority", 2], ["all", 4], [1, 1], [3, 3], [4, 4]] as const
    ) {
      it.effect(`peers: ${peers} returns with exactly ${required} acknowledgements, each from a peer holding the write`, () =>
        Effect.gen(function*() {
          const cluster = yield* fiveNodes()
          const [a, ...others] = cluster.nodes
          const fiber = yield* mutateAwaiting(cluster, a, awaited(peers))
          yield* cluster.settle
          const result = yield* Fiber.join(fiber)
          assert.strictEqual(result.acknowledged, required)
          assert.strictEqual(result.required, required)
          assert.strictEqual(result.acknowledgedBy.length, required)
          assert.deepStrictEqual(result.generation, { incarnation: 0, age: 1 })
          assert.deepStrictEqual(result.state, { value: 1 })
          for (const id of result.acknowledgedBy) assert.isTrue(others.some((n) => n.id === id))
          // The write reached every peer; the owner asked each of them once and heard back from all.
          assert.deepStrictEqual(yield* agesOf(cluster, a, others), Object.fromEntries(others.map((n) => [n.id, 1])))
          const owner = yield* metricsOn(cluster, a, Counter)
          assert.strictEqual(owner.ackRequestsSent, 4)
          assert.strictEqual(owner.acksReceived, 4)
          for (const peer of others) assert.strictEqual((yield* metricsOn(cluster, peer, Counter)).acksSent, 1)
        }))
    }

    it.effect("five awaited mutations in one turn: each peer answers with one acknowledgement covering all five", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, ...others] = cluster.nodes
        const handle = yield* handleOn(cluster, a, Counter)
        const fiber = yield* Effect.forkChild(
          Effect.all(Array.from({ length: 5 }, () => handle.mutate(increment, awaited("all"))), { concurrency: "unbounded" })
        )
        yield* cluster.settle
        const results = yield* Fiber.join(fiber)
        assert.deepStrictEqual(results.map((r) => [r.generation.age, r.acknowledged]), [[1, 4], [2, 4], [3, 4], [4, 4], [5, 4]])
        const owner = yield* metricsOn(cluster, a, Counter)
        assert.strictEqual(owner.ackRequestsSent, 20)
        for (const peer of others) assert.strictEqual((yield* metricsOn(cluster, peer, Counter)).acksSent, 1)
        assert.strictEqual(owner.acksReceived, 4 * 1)
      }))

    it.effect("a mutation without options waits for nothing and asks for no acknowledgement", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a] = cluster.nodes
        const committed = yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.mutate(increment))
        assert.deepStrictEqual(committed, { generation: { incarnation: 0, age: 1 }, state: { value: 1 } })
        yield* cluster.settle
        assert.strictEqual((yield* metricsOn(cluster, a, Counter)).ackRequestsSent, 0)
      }))

    it.effect("a delta-aware state: mutateWithDelta awaits all four peers", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes(StateRegistry.register(NodeResource))
        const [a, ...others] = cluster.nodes
        const handle = yield* handleOn(cluster, a, NodeResource)
        const fiber = yield* Effect.forkChild(
          handle.mutateWithDelta((s) => Fixtures.updateResource(s, { cpuPercent: 42 }), awaited("all"))
        )
        yield* cluster.settle
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.acknowledged, 4)
        assert.deepStrictEqual([...result.acknowledgedBy].sort(), others.map((n) => n.id).sort())
        for (const peer of others) {
          assert.strictEqual((yield* viewsOn(cluster, peer, NodeResource)).get(a.id)?.value.cpuPercent, 42)
        }
      }))
  })

  describe("timeouts and departures", () => {
    it.effect("a partitioned peer: AckTimeout with 3 of 4 and the peer missing; the write is visible on the reachable side", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, b, c, d, e] = cluster.nodes
        cluster.network.isolate(e.id)
        const fiber = yield* mutateAwaiting(cluster, a, awaited("all", "2 seconds"))
        yield* cluster.settle
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("2 seconds")
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit))
        const error = yield* Effect.flip(Fiber.join(fiber))
        assert.instanceOf(error, DStateError.AckTimeout)
        const timeout = error as DStateError.AckTimeout
        assert.strictEqual(timeout.acknowledged, 3)
        assert.strictEqual(timeout.required, 4)
        assert.deepStrictEqual(timeout.missing, [e.id])
        assert.deepStrictEqual(timeout.generation, { incarnation: 0, age: 1 })
        assert.include(timeout.message, "committed and published")
        // Committed all the same: the owner and the reachable peers hold it; the isolated one does not.
        assert.deepStrictEqual(yield* agesOf(cluster, a, [a, b, c, d, e]), { [a.id]: 1, [b.id]: 1, [c.id]: 1, [d.id]: 1, [e.id]: 0 })
        // After the heal, the next awaited write is acknowledged by all four.
        cluster.network.heal()
        const again = yield* mutateAwaiting(cluster, a, awaited("all", "2 seconds"))
        yield* cluster.settle
        assert.strictEqual((yield* Fiber.join(again)).acknowledged, 4)
        assert.deepStrictEqual(yield* agesOf(cluster, a, [e]), { [e.id]: 2 })
      }))

    it.effect("a wait that outlasts a partition ends acknowledged after the heal: the owner asks again every retry interval", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, , , , e] = cluster.nodes
        cluster.network.isolate(e.id)
        const fiber = yield* mutateAwaiting(cluster, a, awaited("all", "1 minute"))
        yield* cluster.settle
        yield* TestClock.adjust("10 seconds")
        yield* cluster.settle
        assert.isUndefined(fiber.pollUnsafe())
        cluster.network.heal()
        // The retry interval is the pull timeout (5 s by default): within it, e is asked again and answers.
        yield* TestClock.adjust("5 seconds")
        yield* cluster.settle
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.acknowledged, 4)
        assert.include(result.acknowledgedBy, e.id)
        assert.deepStrictEqual(yield* agesOf(cluster, a, [e]), { [e.id]: 1 })
      }))

    it.effect("a majority is still met with one peer partitioned", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, , , , e] = cluster.nodes
        cluster.network.isolate(e.id)
        const fiber = yield* mutateAwaiting(cluster, a, awaited("majority", "2 seconds"))
        yield* cluster.settle
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.acknowledged, 2)
        assert.notInclude(result.acknowledgedBy, e.id)
      }))

    it.effect("a peer that leaves during the wait is not counted: all is met by the three that stay", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, b, c, d, e] = cluster.nodes
        cluster.network.isolate(e.id)
        const fiber = yield* mutateAwaiting(cluster, a, awaited("all", "1 minute"))
        yield* cluster.settle
        assert.isUndefined(fiber.pollUnsafe())
        cluster.network.heal()
        yield* cluster.removeNode(e)
        yield* cluster.settle
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.acknowledged, 3)
        assert.strictEqual(result.required, 3)
        assert.deepStrictEqual([...result.acknowledgedBy].sort(), [b.id, c.id, d.id].sort())
      }))

    it.effect("a count that leaves can no longer reach fails with AckUnsatisfiable without waiting for the timeout", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, , , , e] = cluster.nodes
        cluster.network.isolate(e.id)
        const fiber = yield* mutateAwaiting(cluster, a, awaited(4, "1 minute"))
        yield* cluster.settle
        assert.isUndefined(fiber.pollUnsafe())
        cluster.network.heal()
        yield* cluster.removeNode(e)
        yield* cluster.settle
        const error = yield* Effect.flip(Fiber.join(fiber))
        assert.instanceOf(error, DStateError.AckUnsatisfiable)
        const unsatisfiable = error as DStateError.AckUnsatisfiable
        assert.strictEqual(unsatisfiable.required, 4)
        assert.strictEqual(unsatisfiable.acknowledged, 3)
        assert.strictEqual(unsatisfiable.eligible.length, 3)
      }))

    it.effect("the owner stopping during the wait fails the call with ActorStopped instead of leaving it waiting", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, , , , e] = cluster.nodes
        cluster.network.isolate(e.id)
        const fiber = yield* mutateAwaiting(cluster, a, awaited("all", "1 minute"))
        yield* cluster.settle
        assert.isUndefined(fiber.pollUnsafe())
        yield* cluster.crash(a)
        const error = yield* Effect.flip(Fiber.join(fiber))
        assert.instanceOf(error, DStateError.ActorStopped)
        assert.strictEqual((error as DStateError.ActorStopped).actor, "state/counter")
      }))

    it.effect("more peers than the group has: AckUnsatisfiable at once, the mutation committed and sent", () =>
      Effect.gen(function*() {
        const cluster = yield* fiveNodes()
        const [a, ...others] = cluster.nodes
        const handle = yield* handleOn(cluster, a, Counter)
        const error = yield* Effect.flip(handle.mutate(increment, awaited(5)))
        assert.instanceOf(error, DStateError.AckUnsatisfiable)
        const unsatisfiable = error as DStateError.AckUnsatisfiable
        assert.strictEqual(unsatisfiable.required, 5)
        assert.strictEqual(unsatisfiable.acknowledged, 0)
        assert.strictEqual(unsatisfiable.eligible.length, 4)
        yield* cluster.settle
        assert.deepStrictEqual(yield* agesOf(cluster, a, others), Object.fromEntries(others.map((n) => [n.id, 1])))
        assert.strictEqual((yield* metricsOn(cluster, a, Counter)).ackRequestsSent, 0)
      }))

    it.effect("a single node: majority and all are met at once with 0 acknowledgements", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1, setup: StateRegistry.register(Counter) })
        const handle = yield* handleOn(cluster, cluster.nodes[0], Counter)
        for (const peers of ["majority", "all"] as const) {
          const result = yield* handle.mutate(increment, awaited(peers))
          assert.strictEqual(result.acknowledged, 0)
          assert.strictEqual(result.required, 0)
        }
      }))
  })

  describe("options", () => {
    const invalid: ReadonlyArray<readonly [string, unknown, string]> = [
      ["peers 0", { peers: 0, timeout: "1 second" }, "await.peers"],
      ["peers 1.5", { peers: 1.5, timeout: "1 second" }, "await.peers"],
      ["peers -1", { peers: -1, timeout: "1 second" }, "await.peers"],
      ["peers NaN", { peers: Number.NaN, timeout: "1 second" }, "await.peers"],
      ["peers \"most\"", { peers: "most", timeout: "1 second" }, "await.peers"],
      ["timeout 0", { peers: 1, timeout: 0 }, "await.timeout"],
      ["timeout negative", { peers: 1, timeout: -1 }, "await.timeout"],
      ["timeout infinite", { peers: 1, timeout: "Infinity" }, "await.timeout"],
      ["no await", undefined, "await"]
    ]
    for (const [label, spec, option] of invalid) {
      it.effect(`${label}: InvalidOptions naming ${option}, and nothing is committed`, () =>
        Effect.gen(function*() {
          const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) })
          const [a] = cluster.nodes
          const handle = yield* handleOn(cluster, a, Counter)
          const error = yield* Effect.flip(handle.mutate(increment, { await: spec } as never))
          assert.instanceOf(error, DStateError.InvalidOptions)
          assert.strictEqual((error as DStateError.InvalidOptions).option, option)
          assert.strictEqual((error as DStateError.InvalidOptions).module, "StateHandle.mutate")
          assert.strictEqual((yield* handle.local).generation.age, 0)
        }))
    }

    it.effect("the edges that are allowed: peers 1 and a timeout of 1 millisecond", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) })
        const [a] = cluster.nodes
        yield* cluster.settle
        const fiber = yield* mutateAwaiting(cluster, a, { await: { peers: 1, timeout: 1 } })
        yield* cluster.settle
        assert.strictEqual((yield* Fiber.join(fiber)).acknowledged, 1)
      }))
  })

  describe("strategies", () => {
    for (
      const [label, strategy] of [
        ["feedLazyPull", SyncStrategy.feedLazyPull()],
        ["periodicOnly", SyncStrategy.periodicOnly("1 minute")],
        ["feedWithPeriodicSync", SyncStrategy.feedWithPeriodicSync("1 minute")]
      ] as const
    ) {
      it.effect(`${label}: the owner sends the awaited peers the write; majority acknowledges with exactly 2`, () =>
        Effect.gen(function*() {
          const cluster = yield* fiveNodes(StateRegistry.register(Counter, { strategy }))
          const [a, ...others] = cluster.nodes
          const fiber = yield* mutateAwaiting(cluster, a, awaited("majority"))
          // No change-feed flush and no periodic tick happen: only the await makes the owner send.
          yield* cluster.settle
          const result = yield* Fiber.join(fiber)
          assert.strictEqual(result.acknowledged, 2)
          const ages = yield* agesOf(cluster, a, others)
          for (const id of result.acknowledgedBy) assert.strictEqual(ages[id], 1)
          // Every awaited peer got the snapshot (one each), whether or not its acknowledgement was needed.
          assert.strictEqual((yield* metricsOn(cluster, a, Counter)).ackRequestsSent, 4)
          assert.deepStrictEqual(ages, Object.fromEntries(others.map((n) => [n.id, 1])))
        }))
    }

    it.effect("activePush with a delayed urgency: the await sends at once instead of after the delay", () =>
      Effect.gen(function*() {
        const Delayed = DistributedState.makeDelta({
          name: "delayed_resource",
          state: Fixtures.NodeResourceState,
          view: Fixtures.NodeResourceView,
          delta: Fixtures.NodeResourceDelta,
          initial: NodeResource.initial,
          projectView: NodeResource.projectView,
          projectDelta: NodeResource.projectDelta,
          applyDelta: NodeResource.applyDelta,
          syncUrgency: () => SyncUrgency.Delayed("1 hour"),
          wireVersion: 1,
          storageVersion: 1
        })
        const cluster = yield* fiveNodes(StateRegistry.register(Delayed))
        const [a, ...others] = cluster.nodes
        const handle = yield* handleOn(cluster, a, Delayed)
        const fiber = yield* Effect.forkChild(
          handle.mutateWithDelta((s) => Fixtures.updateResource(s, { cpuPercent: 7 }), awaited("all"))
        )
        yield* cluster.settle
        assert.strictEqual((yield* Fiber.join(fiber)).acknowledged, 4)
        for (const peer of others) assert.strictEqual((yield* viewsOn(cluster, peer, Delayed)).get(a.id)?.value.cpuPercent, 7)
      }))
  })

  describe("mixed wire versions", () => {
    /** A 5-node cluster whose last two nodes speak only sync protocol 1 (no acknowledgements). */
    const mixed = Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 5, setup: StateRegistry.register(Counter), syncProtocols: [2, 2, 2, 1, 1] })
      yield* cluster.settle
      cluster.network.clearLog()
      return cluster
    })
    /** Frames of protocol 2 (acknowledgement messages) the network carried to `node`. */
    const ackFramesTo = (cluster: Cluster, node: Node) =>
      cluster.network.log().filter((f) => f.to === node.id && f.frame[4] === SyncMessage.ackProtocolVersion).length

    it.effect("majority counts the old nodes in the group but asks only the new ones: exactly 2, from the new peers", () =>
      Effect.gen(function*() {
        const cluster = yield* mixed
        const [a, b, c, d, e] = cluster.nodes
        const fiber = yield* mutateAwaiting(cluster, a, awaited("majority"))
        yield* cluster.settle
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.acknowledged, 2)
        assert.deepStrictEqual([...result.acknowledgedBy].sort(), [b.id, c.id].sort())
        assert.strictEqual((yield* metricsOn(cluster, a, Counter)).ackRequestsSent, 2)
        // The old nodes got the write as always, no acknowledgement frame, and rejected nothing.
        assert.deepStrictEqual(yield* agesOf(cluster, a, [d, e]), { [d.id]: 1, [e.id]: 1 })
        for (const old of [d, e]) {
          assert.strictEqual(ackFramesTo(cluster, old), 0)
          assert.strictEqual((yield* inboundOn(cluster, old)).framesRejected, 0)
        }
      }))

    it.effect("all, or more peers than the new ones, cannot be satisfied: AckUnsatisfiable names the old nodes", () =>
      Effect.gen(function*() {
        const cluster = yield* mixed
        const [a, b, c, d, e] = cluster.nodes
        const handle = yield* handleOn(cluster, a, Counter)
        for (const [peers, required] of [["all", 4], [3, 3]] as const) {
          const error = yield* Effect.flip(handle.mutate(increment, awaited(peers)))
          assert.instanceOf(error, DStateError.AckUnsatisfiable)
          const unsatisfiable = error as DStateError.AckUnsatisfiable
          assert.strictEqual(unsatisfiable.required, required)
          assert.deepStrictEqual([...unsatisfiable.eligible].sort(), [b.id, c.id].sort())
          assert.deepStrictEqual([...unsatisfiable.unsupported].sort(), [d.id, e.id].sort())
        }
        yield* cluster.settle
        // Both mutations are committed and reached every node, old ones included.
        assert.deepStrictEqual(yield* agesOf(cluster, a, [b, c, d, e]), { [b.id]: 2, [c.id]: 2, [d.id]: 2, [e.id]: 2 })
        const fiber = yield* mutateAwaiting(cluster, a, awaited(2))
        yield* cluster.settle
        assert.strictEqual((yield* Fiber.join(fiber)).acknowledged, 2)
      }))

    it.effect("an old node asks for nothing, and rejects an acknowledgement frame it is sent anyway", () =>
      Effect.gen(function*() {
        const cluster = yield* mixed
        const [a, , , d] = cluster.nodes
        const error = yield* Effect.flip(
          Effect.flatMap(handleOn(cluster, d, Counter), (h) => h.mutate(increment, awaited("majority")))
        )
        assert.instanceOf(error, DStateError.AckUnsatisfiable)
        assert.strictEqual((error as DStateError.AckUnsatisfiable).eligible.length, 0)
        yield* cluster.settle
        assert.strictEqual(cluster.network.log().filter((f) => f.frame[4] === SyncMessage.ackProtocolVersion).length, 0)
        const request = frameOf(new SyncMessage.AckRequest({ stateName: "counter", source: a.id, generation: Generation.make(0, 0) }))
        yield* cluster.network.inject(a.id, d.id, request)
        yield* cluster.settle
        const inbound = yield* inboundOn(cluster, d)
        assert.strictEqual(inbound.framesRejected, 1)
        assert.strictEqual(inbound.malformed, 1)
        assert.strictEqual((yield* metricsOn(cluster, d, Counter)).acksSent, 0)
      }))

    it.effect("an old node upgraded by a restart is asked and counted", () =>
      Effect.gen(function*() {
        const cluster = yield* mixed
        const [a, , , d, e] = cluster.nodes
        d.syncProtocol = 2
        yield* cluster.removeNode(d)
        yield* cluster.restart(d)
        yield* cluster.settle
        const handle = yield* handleOn(cluster, a, Counter)
        const error = yield* Effect.flip(handle.mutate(increment, awaited("all")))
        assert.deepStrictEqual((error as DStateError.AckUnsatisfiable).unsupported, [e.id])
        const fiber = yield* mutateAwaiting(cluster, a, awaited(3))
        yield* cluster.settle
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.acknowledged, 3)
        assert.include(result.acknowledgedBy, d.id)
      }))

    it.effect("TestCluster refuses a sync protocol other than 1 or 2", () =>
      Effect.gen(function*() {
        for (const protocol of [0, 3]) {
          const error = yield* Effect.flip(TestCluster.make({ nodes: 2, syncProtocols: [2, protocol] }))
          assert.instanceOf(error, DStateError.InvalidOptions)
          assert.strictEqual((error as DStateError.InvalidOptions).option, "syncProtocols[1]")
        }
      }))
  })
})

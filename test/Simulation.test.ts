/**
 * Self-tests of the simulation harness: one seed reproduces a run bit for
 * bit; every network knob measurably does what it says (loss, duplication,
 * delay and reordering, capacity, clogging, corruption, partitions); a crash
 * drops frames in flight; a paused node's timers are frozen; node clocks can
 * be offset and stepped back across a restart. Then the scenarios the matrix
 * singles out: the last write before quiescence lost (pure active push does
 * not converge, anti-entropy does), a lost periodic snapshot, and hundreds of
 * join/leave cycles. Failing runs print their seed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber, Result, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { Generation, NodeId, StateRegistry, SyncMessage, SyncStrategy } from "dstate"
import type { ActorRuntime } from "dstate"
import { Fixtures, InMemoryPersistence, Prng, SimNetwork, Simulation, TestCluster } from "dstate/testing"
import { decodeFrame, encodeFrame } from "../src/internal/codec.ts"
import { handleOn, localOn, viewsOn } from "./strategyHelpers.ts"

const { Counter } = Fixtures

// ---------------------------------------------------------------------------------------------
// A bare network with recording endpoints
// ---------------------------------------------------------------------------------------------

interface Received {
  readonly from: NodeId.NodeId
  readonly bytes: Uint8Array
  readonly at: number
}

const a = NodeId.make("node-a")
const b = NodeId.make("node-b")
const c = NodeId.make("node-c")

/** A network with endpoints that record what reaches them. */
const probe = (seed: number, nodes: ReadonlyArray<NodeId.NodeId> = [a, b]) =>
  Effect.gen(function*() {
    const trace: Array<SimNetwork.TraceEvent> = []
    const network = yield* SimNetwork.makeWith({ seed, log: false, trace: (e) => trace.push(e) })
    const received = new Map<NodeId.NodeId, Array<Received>>()
    for (const nodeId of nodes) {
      const inbox: Array<Received> = []
      received.set(nodeId, inbox)
      const inbound: ActorRuntime.Inbound = {
        onMessage: (from, bytes) => Effect.map(Clock.currentTimeMillis, (at) => void inbox.push({ from, bytes, at })),
        onRequest: () => Effect.succeed(new Uint8Array(0))
      }
      yield* network.attach({
        nodeId,
        inbound,
        alive: true,
        busy: 0,
        paused: undefined,
        joined: () => Effect.succeed(true),
        left: () => Effect.succeed(true)
      })
    }
    return { network, trace, inbox: (n: NodeId.NodeId) => received.get(n)! }
  })

const advance = (millis: number) => TestClock.adjust(Duration.millis(millis))

/** Lets every delivery that is due run. */
const drain = (network: SimNetwork.SimNetwork) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100_000 && network.pendingWork() > 0 && network.nextDeliveryAt() !== undefined; i++) {
      const next = network.nextDeliveryAt()!
      if (next > (yield* Clock.currentTimeMillis)) return
      yield* Effect.yieldNow
    }
  })

/** A valid frame carrying a sequence number in its payload. */
const numbered = (seq: number, source: NodeId.NodeId = a): Uint8Array =>
  Result.getOrThrow(encodeFrame(
    new SyncMessage.FullSnapshot({
      stateName: "probe",
      source,
      generation: Generation.make(1, seq),
      wireVersion: 1,
      createdAt: 0,
      modifiedAt: 0,
      payload: new Uint8Array([seq & 0xff, (seq >>> 8) & 0xff])
    }),
    Number.MAX_SAFE_INTEGER
  ))

const seqOf = (bytes: Uint8Array): number => {
  const decoded = Result.getOrThrow(decodeFrame(bytes, Number.MAX_SAFE_INTEGER))
  if (decoded._tag !== "FullSnapshot") throw new Error(`unexpected ${decoded._tag}`)
  return decoded.generation.age
}

const sendMany = (network: SimNetwork.SimNetwork, count: number, from = a, to = b) =>
  Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => network.send(from, to, numbered(i, from)), {
    discard: true
  })

/** Asserts a run passed, printing its seed and findings otherwise. */
const assertOk = (result: Simulation.RunResult) => assert.isTrue(result.ok, Simulation.describe(result))

describe("Simulation harness", () => {
  describe("caps", () => {
    it.effect("every actor's mailbox is sampled at every delivery to its node and never exceeds its capacity", () =>
      Effect.gen(function*() {
        const result = yield* Simulation.run({ strategy: "push", nodes: 3, fault: "slowPeer" }, 77)
        assertOk(result)
        // One actor per state per node, all watched (slowPeer registers both states with 32-message mailboxes).
        assert.strictEqual(result.mailboxes.actors, 6)
        assert.strictEqual(result.mailboxes.samples % 2, 0)
        assert.isAbove(result.mailboxes.samples, 100)
        assert.isAtMost(result.mailboxes.peak, 1)
        assert.isFalse(result.safety.some((v) => v.kind === "MailboxOverCap"))
      }))

    it.effect("every departed set is reported as it changes and stays within departedCapacity under churn", () =>
      Effect.gen(function*() {
        const result = yield* Simulation.run({ strategy: "push", nodes: 5, fault: "churn", churnCycles: 40 }, 78)
        assertOk(result)
        assert.isAbove(result.departedPeak, 0)
        assert.isAtMost(result.departedPeak, 10_000)
        assert.isFalse(result.safety.some((v) => v.kind === "DepartedSetOverCap"))
      }))
  })

  describe("determinism", () => {
    const scenarios: ReadonlyArray<Simulation.Scenario> = [
      { strategy: "push+periodic", nodes: 5, fault: "mix" },
      { strategy: "feed", nodes: 3, fault: "clockSkew" },
      { strategy: "periodic", nodes: 3, fault: "churn", churnCycles: 20 },
      { strategy: "push", nodes: 3, fault: "corruption" }
    ]
    for (const scenario of scenarios) {
      it.effect(`the same seed gives an identical run: ${scenario.strategy}/${scenario.nodes}/${scenario.fault}`, () =>
        Effect.gen(function*() {
          const first = yield* Simulation.run(scenario, 4242)
          const second = yield* Simulation.run(scenario, 4242)
          assert.deepStrictEqual(second, first)
          assert.match(first.historyHash, /^[0-9a-f]{16}$/)
          const other = yield* Simulation.run(scenario, 4243)
          assert.notStrictEqual(other.historyHash, first.historyHash)
          assertOk(first)
          assertOk(other)
        }))
    }

    it("sub-seeds are derived by label, independent of each other", () => {
      const root = 20261201
      const network = Simulation.deriveSeed(root, "network")
      assert.strictEqual(Simulation.deriveSeed(root, "network"), network)
      assert.notStrictEqual(Simulation.deriveSeed(root, "faults"), network)
      assert.notStrictEqual(Simulation.deriveSeed(root + 1, "network"), network)
    })
  })

  describe("link knobs", () => {
    it.effect("loss 0.2 over 10,000 frames drops 20 % (± 1.5 %), and nothing else", () =>
      Effect.gen(function*() {
        const { network, inbox, trace } = yield* probe(7)
        network.setDefaultLink({ loss: 0.2 })
        yield* sendMany(network, 10_000)
        yield* drain(network)
        const lost = network.faultStats().lost
        assert.isTrue(Math.abs(lost / 10_000 - 0.2) < 0.015, `lost ${lost} of 10,000`)
        assert.deepStrictEqual(network.stats(), { sent: 10_000, delivered: 10_000 - lost, dropped: lost })
        assert.strictEqual(inbox(b).length, 10_000 - lost)
        assert.strictEqual(trace.filter((e) => e._tag === "Dropped" && e.reason === "loss").length, lost)
      }))

    it.effect("duplication 0.3 over 10,000 frames delivers 30 % (± 1.5 %) of them twice", () =>
      Effect.gen(function*() {
        const { network, inbox } = yield* probe(8)
        network.setDefaultLink({ duplicate: 0.3 })
        yield* sendMany(network, 10_000)
        yield* drain(network)
        const duplicated = network.faultStats().duplicated
        assert.isTrue(Math.abs(duplicated / 10_000 - 0.3) < 0.015, `duplicated ${duplicated} of 10,000`)
        assert.strictEqual(inbox(b).length, 10_000 + duplicated)
        const seen = new Map<number, number>()
        for (const r of inbox(b)) seen.set(seqOf(r.bytes), (seen.get(seqOf(r.bytes)) ?? 0) + 1)
        assert.strictEqual(seen.size, 10_000)
        assert.strictEqual([...seen.values()].filter((n) => n === 2).length, duplicated)
      }))

    it.effect("a variable delay reorders frames, each within [min, max]; a fixed delay keeps the order", () =>
      Effect.gen(function*() {
        const { network, inbox } = yield* probe(9, [a, b, c])
        network.setLink(a, b, { delay: { min: 10, max: 100 } })
        network.setLink(a, c, { delay: { min: 40, max: 40 } })
        yield* sendMany(network, 2000, a, b)
        yield* sendMany(network, 2000, a, c)
        yield* advance(100)
        const varied = inbox(b)
        const fixed = inbox(c)
        assert.strictEqual(varied.length, 2000)
        assert.strictEqual(fixed.length, 2000)
        // A frame is overtaken when a later one arrived before it.
        let overtaken = 0
        let newest = -1
        for (const r of varied) {
          const seq = seqOf(r.bytes)
          if (seq < newest) overtaken++
          else newest = seq
        }
        assert.isTrue(overtaken > 1500, `${overtaken} of 2,000 frames overtaken`)
        assert.isTrue(varied.every((r) => r.at >= 10 && r.at <= 100))
        assert.deepStrictEqual(fixed.map((r) => seqOf(r.bytes)), Array.from({ length: 2000 }, (_, i) => i))
        assert.isTrue(fixed.every((r) => r.at === 40))
      }))

    it.effect("a link at capacity drops what does not fit, and takes frames again once it drains", () =>
      Effect.gen(function*() {
        const { network, inbox, trace } = yield* probe(10)
        network.setDefaultLink({ capacity: 3, delay: { min: 50, max: 50 } })
        yield* sendMany(network, 10)
        assert.deepStrictEqual(network.faultStats(), { lost: 0, duplicated: 0, corrupted: 0, overflowed: 7 })
        yield* TestClock.adjust("50 millis")
        assert.deepStrictEqual(inbox(b).map((r) => seqOf(r.bytes)), [0, 1, 2])
        yield* sendMany(network, 10)
        yield* TestClock.adjust("50 millis")
        assert.strictEqual(inbox(b).length, 6)
        assert.strictEqual(network.faultStats().overflowed, 14)
        assert.strictEqual(trace.filter((e) => e._tag === "Dropped" && e.reason === "capacity").length, 14)
      }))

    it.effect("a clogged link holds every frame until the clog ends, then delivers them in order", () =>
      Effect.gen(function*() {
        const { network, inbox } = yield* probe(11)
        yield* network.clog(a, b, "500 millis")
        yield* sendMany(network, 5)
        yield* advance(499)
        assert.strictEqual(inbox(b).length, 0)
        yield* advance(1)
        assert.deepStrictEqual(inbox(b).map((r) => [seqOf(r.bytes), r.at]), [[0, 500], [1, 500], [2, 500], [3, 500], [4, 500]])
        yield* sendMany(network, 1)
        yield* drain(network)
        assert.strictEqual(inbox(b).length, 6)
      }))

    it.effect("corruption 0.25 over 4,000 frames: every corrupted frame fails to decode, every other one is intact", () =>
      Effect.gen(function*() {
        const { network, inbox, trace } = yield* probe(12)
        network.setDefaultLink({ corrupt: 0.25 })
        yield* sendMany(network, 4000)
        const corrupted = network.faultStats().corrupted
        assert.isTrue(Math.abs(corrupted / 4000 - 0.25) < 0.02, `corrupted ${corrupted} of 4,000`)
        let rejected = 0
        for (const r of inbox(b)) if (Result.isFailure(decodeFrame(r.bytes, Number.MAX_SAFE_INTEGER, a))) rejected++
        assert.strictEqual(rejected, corrupted)
        const delivered = trace.filter((e) => e._tag === "Delivered")
        assert.strictEqual(delivered.filter((e) => e._tag === "Delivered" && e.corrupted).length, corrupted)
        const intact = inbox(b).filter((r) => Result.isSuccess(decodeFrame(r.bytes, Number.MAX_SAFE_INTEGER, a)))
        assert.deepStrictEqual(intact.map((r) => r.bytes), intact.map((r) => numbered(seqOf(r.bytes))))
      }))

    it.effect("partitions: a one-way cut drops only its direction; groups talk only inside; heal restores all", () =>
      Effect.gen(function*() {
        const { network, inbox, trace } = yield* probe(13, [a, b, c])
        network.cut(a, b)
        yield* network.send(a, b, numbered(1))
        yield* network.send(b, a, numbered(2, b))
        yield* drain(network)
        assert.strictEqual(inbox(b).length, 0)
        assert.strictEqual(inbox(a).length, 1)
        network.heal()
        network.partitionGroups([[a], [b, c]])
        yield* network.send(a, c, numbered(3))
        yield* network.send(b, c, numbered(4, b))
        yield* network.send(c, a, numbered(5, c))
        yield* drain(network)
        assert.deepStrictEqual(inbox(c).map((r) => seqOf(r.bytes)), [4])
        assert.strictEqual(inbox(a).length, 1)
        assert.strictEqual(trace.filter((e) => e._tag === "Dropped" && e.reason === "cut").length, 3)
        network.heal()
        yield* network.send(a, c, numbered(6))
        yield* drain(network)
        assert.deepStrictEqual(inbox(c).map((r) => seqOf(r.bytes)), [4, 6])
      }))
  })

  describe("node faults", () => {
    const registerCounter = (strategy: SyncStrategy.SyncStrategy) => StateRegistry.register(Counter, { strategy })
    const increment = (s: { readonly value: number }) => ({ value: s.value + 1 })

    it.effect("a crash drops the frames in flight to and from the crashed node", () =>
      Effect.gen(function*() {
        const trace: Array<SimNetwork.TraceEvent> = []
        const cluster = yield* TestCluster.make({
          nodes: 3,
          setup: registerCounter(SyncStrategy.activePush()),
          network: { log: false, trace: (e) => trace.push(e) }
        })
        const [x, y, z] = cluster.nodes
        yield* cluster.settle
        cluster.network.setDelay("100 millis")
        const hx = yield* handleOn(cluster, x, Counter)
        for (let i = 0; i < 5; i++) {
          yield* hx.mutate(increment)
          yield* Effect.yieldNow // its own turn: one frame per peer per mutation
        }
        const hz = yield* handleOn(cluster, z, Counter)
        yield* hz.mutate(increment)
        yield* TestClock.adjust("1 millis")
        trace.length = 0
        yield* cluster.crash(y)
        yield* cluster.crash(z)
        yield* TestClock.adjust("200 millis")
        const dropped = (from: TestCluster.TestNode, to: TestCluster.TestNode) =>
          trace.filter((e) => e._tag === "Dropped" && e.reason === "crashed" && e.frame.from === from.id && e.frame.to === to.id)
            .length
        assert.strictEqual(dropped(x, y), 5)
        assert.strictEqual(dropped(x, z), 5)
        assert.strictEqual(dropped(z, x), 1)
        assert.strictEqual(trace.filter((e) => e._tag === "Delivered").length, 0)
        assert.strictEqual((yield* viewsOn(cluster, x, Counter)).size, 1)
      }))

    it.effect("a paused node processes nothing and its timers are frozen: one periodic sync on resume, not one per missed period", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter(SyncStrategy.periodicOnly("1 second")) })
        const [x, y] = cluster.nodes
        yield* cluster.settle
        const hx = yield* handleOn(cluster, x, Counter)
        yield* hx.mutate(increment)
        yield* cluster.network.pause(x.id)
        cluster.network.clearLog()
        const blocked = yield* Effect.forkChild(hx.mutate(increment))
        yield* TestClock.adjust("5 seconds")
        yield* cluster.settle
        assert.isUndefined(blocked.pollUnsafe())
        assert.strictEqual(cluster.network.log().filter((f) => f.from === x.id).length, 0)
        assert.strictEqual((yield* viewsOn(cluster, y, Counter)).get(x.id)?.generation.age, 0)
        yield* cluster.network.resume(x.id)
        const committed = yield* Fiber.join(blocked)
        assert.strictEqual(committed.generation.age, 2)
        yield* cluster.settle
        assert.strictEqual(cluster.network.log().filter((f) => f.from === x.id).length, 1)
        assert.strictEqual((yield* viewsOn(cluster, y, Counter)).get(x.id)?.generation.age, 2)
      }))

    it.effect("a node's wall clock can be offset: its mutations are stamped with its own time", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter(SyncStrategy.activePush()) })
        const [x, y] = cluster.nodes
        yield* cluster.settle
        yield* TestClock.adjust("10 seconds")
        x.clockOffsetMillis = 7000
        yield* (yield* handleOn(cluster, x, Counter)).mutate(increment)
        yield* cluster.settle
        assert.strictEqual((yield* localOn(cluster, x, Counter)).modifiedAt, 17_000)
        assert.strictEqual((yield* viewsOn(cluster, y, Counter)).get(x.id)?.modifiedAt, 17_000)
        assert.strictEqual((yield* localOn(cluster, y, Counter)).modifiedAt, 0)
      }))

    it.effect("a clock stepped back across a restart without state still ends above every incarnation peers saw", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({
          nodes: 3,
          setup: registerCounter(SyncStrategy.activePush()),
          persistence: "none"
        })
        const [x, y, z] = cluster.nodes
        yield* TestClock.adjust("100 seconds")
        yield* cluster.crash(y)
        yield* cluster.restart(y)
        yield* cluster.settle
        const before = (yield* localOn(cluster, y, Counter)).generation
        assert.deepStrictEqual(before, Generation.make(100_000, 0))
        yield* cluster.crash(y)
        y.clockOffsetMillis = -60_000
        yield* cluster.restart(y)
        yield* cluster.settle
        // It started at 40,000 by its clock, was told of 100,000 and moved just past it.
        const after = (yield* localOn(cluster, y, Counter)).generation
        assert.deepStrictEqual(after, Generation.make(100_001, 0))
        for (const peer of [x, z]) assert.deepStrictEqual((yield* viewsOn(cluster, peer, Counter)).get(y.id)?.generation, after)
      }))

    it.effect("stores take their seeds from the cluster's seed: the same seed fails the same saves", () =>
      Effect.gen(function*() {
        const failures = (seed: number) =>
          Effect.gen(function*() {
            const cluster = yield* TestCluster.make({ nodes: 1, setup: registerCounter(SyncStrategy.activePush()), seed })
            const [x] = cluster.nodes
            x.store!.saveFailureRate = 0.5
            const h = yield* handleOn(cluster, x, Counter)
            const outcomes: Array<boolean> = []
            for (let i = 0; i < 40; i++) outcomes.push(Result.isSuccess(yield* Effect.result(h.mutate(increment))))
            InMemoryPersistence.heal(x.store!)
            return outcomes
          }).pipe(Effect.scoped)
        const first = yield* failures(99)
        assert.deepStrictEqual(yield* failures(99), first)
        assert.notStrictEqual(JSON.stringify(yield* failures(100)), JSON.stringify(first))
        const failed = first.filter((ok) => !ok).length
        assert.isTrue(failed > 10 && failed < 30, `${failed} of 40 saves failed`)
      }))
  })
})

// ---------------------------------------------------------------------------------------------
// Scenarios the matrix singles out
// ---------------------------------------------------------------------------------------------

describe("Simulation scenarios", () => {
  describe("the last write before quiescence is lost", () => {
    for (const nodes of [2, 3, 5]) {
      it.effect(`pure active push without reads never repairs it (${nodes} nodes): every peer keeps the previous age`, () =>
        Effect.gen(function*() {
          for (const seed of [1, 2, 3]) {
            const result = yield* Simulation.run({ strategy: "push", nodes, fault: "lostLastWrite", readers: false }, seed)
            const lost = result.lostWrite
            assert.isDefined(lost, Simulation.describe(result))
            assert.isFalse(result.liveness.converged, Simulation.describe(result))
            assert.isFalse(result.liveness.expected)
            assert.isTrue(result.ok, Simulation.describe(result))
            const expected = Array.from({ length: nodes }, (_, i) => `node-${i + 1}`)
              .filter((n) => n !== lost!.owner)
              .map((n) =>
                `${n} holds ${Generation.format(Generation.make(lost!.generation.incarnation, lost!.generation.age - 1))} of ${
                  lost!.owner
                }, owner at ${Generation.format(lost!.generation)} (counter)`
              )
            assert.deepStrictEqual([...result.liveness.divergent].sort(), expected.sort())
          }
        }))

      it.effect(`anti-entropy repairs it (${nodes} nodes): reads for push and feed, the next period for the periodic shapes`, () =>
        Effect.gen(function*() {
          const cases: ReadonlyArray<readonly [Simulation.StrategyShape, boolean]> = [
            ["push", true],
            ["feed", true],
            ["push+periodic", false],
            ["feed+periodic", false],
            ["periodic", false]
          ]
          for (const [strategy, readers] of cases) {
            for (const seed of [1, 2]) {
              const result = yield* Simulation.run({ strategy, nodes, fault: "lostLastWrite", readers }, seed)
              assertOk(result)
              assert.isTrue(result.liveness.converged, Simulation.describe(result))
              assert.isDefined(result.lostWrite)
              const bound = Simulation.livenessBound(strategy, readers)
              assert.isDefined(bound)
              assert.isTrue(result.liveness.convergenceMillis! <= bound!, Simulation.describe(result))
            }
          }
        }))
    }

    it("the bounds: none for push and feed without reads", () => {
      assert.isUndefined(Simulation.livenessBound("push", false))
      assert.isUndefined(Simulation.livenessBound("feed", false))
      assert.strictEqual(Simulation.livenessBound("periodic", false), Simulation.timing.period + Simulation.timing.maxDelay)
      for (const shape of Simulation.strategyShapes) {
        assert.strictEqual(
          Simulation.livenessBound(shape, true),
          Simulation.timing.readInterval + Simulation.timing.maxStaleness + Simulation.timing.pullTimeout +
            Simulation.timing.maxDelay
        )
      }
    })
  })

  it.effect("a periodic snapshot lost in a fault is not resent without a change: only a read repairs it", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({
        nodes: 2,
        setup: StateRegistry.register(Counter, {
          strategy: SyncStrategy.periodicOnly(Schedule.spaced("1 second")),
          pullTimeout: "1 second"
        })
      })
      const [x, y] = cluster.nodes
      yield* cluster.settle
      cluster.network.cut(x.id, y.id)
      yield* (yield* handleOn(cluster, x, Counter)).mutate((s) => ({ value: s.value + 5 }))
      yield* TestClock.adjust("1500 millis")
      cluster.network.heal()
      yield* TestClock.adjust("10 seconds")
      yield* cluster.settle
      const held = (yield* viewsOn(cluster, y, Counter)).get(x.id)
      assert.deepStrictEqual([held?.generation.age, held?.value], [0, { value: 0 }])
      const hy = yield* handleOn(cluster, y, Counter)
      const read = yield* Effect.forkChild(hy.query({ maxStaleness: "2 seconds" }, (views) => views.get(x.id)?.value))
      yield* cluster.settle
      assert.deepStrictEqual(yield* Fiber.join(read), { value: 5 })
    }))

  describe("repairs the simulator called for", () => {
    const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.activePush(), pullTimeout: "1 second" })
    /** Restarts `y` with both directions of its links to `x` cut, so the join exchange is lost. */
    const lostJoin = Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup, persistence: "none" })
      const [x, y] = cluster.nodes
      yield* cluster.settle
      yield* cluster.crash(y)
      cluster.network.cut(x.id, y.id)
      cluster.network.cut(y.id, x.id)
      yield* cluster.restart(y)
      yield* cluster.settle
      assert.isFalse((yield* viewsOn(cluster, x, Counter)).has(y.id))
      assert.isFalse((yield* viewsOn(cluster, y, Counter)).has(x.id))
      return { cluster, x, y }
    })

    it.effect("a lost join exchange is asked for again every pullTimeout until the view arrives", () =>
      Effect.gen(function*() {
        const { cluster, x, y } = yield* lostJoin
        yield* TestClock.adjust("2500 millis")
        assert.isFalse((yield* viewsOn(cluster, x, Counter)).has(y.id))
        // Asked at 1 s, 2 s (both lost), then at 3 s after the restart: 500 ms after the heal.
        cluster.network.heal()
        yield* TestClock.adjust("499 millis")
        yield* cluster.settle
        assert.isFalse((yield* viewsOn(cluster, x, Counter)).has(y.id))
        yield* TestClock.adjust("1 millis")
        yield* cluster.settle
        assert.deepStrictEqual((yield* viewsOn(cluster, x, Counter)).get(y.id)?.generation, (yield* localOn(cluster, y, Counter)).generation)
        assert.deepStrictEqual((yield* viewsOn(cluster, y, Counter)).get(x.id)?.generation, (yield* localOn(cluster, x, Counter)).generation)
        // Once both hold the view, nothing more is asked.
        cluster.network.clearLog()
        yield* TestClock.adjust("10 seconds")
        yield* cluster.settle
        assert.strictEqual(cluster.network.log().length, 0)
      }))

    it.effect("a bounded read fails with StalePeer while a member's view is missing, and pulls it once it can", () =>
      Effect.gen(function*() {
        const { cluster, x, y } = yield* lostJoin
        const hx = yield* handleOn(cluster, x, Counter)
        const missing = yield* Effect.forkChild(Effect.flip(hx.query({ maxStaleness: "1 minute" }, (views) => views.size)))
        yield* TestClock.adjust("1 second")
        const error = yield* Fiber.join(missing)
        assert(error._tag === "StalePeer")
        assert.strictEqual(error.node, y.id)
        assert.strictEqual(error.lastSyncedAt, 0)
        cluster.network.heal()
        const read = yield* Effect.forkChild(hx.query({ maxStaleness: "1 minute" }, (views) => [...views.keys()].sort()))
        yield* cluster.settle
        assert.deepStrictEqual(yield* Fiber.join(read), [x.id, y.id].sort())
      }))
  })

  describe("churn", () => {
    it.effect("300 join/leave cycles on 3 nodes (push): no ghost views, no decreasing generation, converged", () =>
      Effect.gen(function*() {
        const result = yield* Simulation.run({ strategy: "push", nodes: 3, fault: "churn", churnCycles: 300 }, 77)
        assertOk(result)
        assert.deepStrictEqual(result.safety, [])
        assert.isTrue(result.liveness.converged)
      }), { timeout: 120_000 })

    it.effect("200 join/leave cycles on 5 nodes (feed + periodic sync): converged within the bound", () =>
      Effect.gen(function*() {
        const result = yield* Simulation.run({ strategy: "feed+periodic", nodes: 5, fault: "churn", churnCycles: 200 }, 78)
        assertOk(result)
        assert.isTrue(result.liveness.convergenceMillis! <= Simulation.livenessBound("feed+periodic", true)!)
      }), { timeout: 120_000 })
  })

  describe("awaited writes", () => {
    for (const fault of ["none", "loss", "partition", "crash", "crashPersistent", "versionSkew", "churn", "lostLastWrite"] as const) {
      for (const strategy of ["push", "feed", "periodic"] as const) {
        it.effect(`${strategy} × 5 nodes × ${fault}: every acknowledged write is held by its acknowledgers, every probe after the heal is acknowledged`, () =>
          Effect.gen(function*() {
            for (const seed of [11, 12]) {
              const result = yield* Simulation.run({ strategy, nodes: 5, fault, awaits: true, churnCycles: 20 }, seed)
              assertOk(result)
              const why = Simulation.describe(result)
              assert.isTrue(result.acks.awaited > 0, why)
              assert.strictEqual(
                result.acks.acknowledged + result.acks.timedOut + result.acks.unsatisfiable <= result.acks.awaited,
                true,
                why
              )
              assert.isTrue(result.acks.probes > 0, why)
              assert.strictEqual(result.acks.probesAcknowledged, result.acks.probes, why)
              // Without faults nothing times out; old nodes make "all" unsatisfiable, never a timeout by itself.
              if (fault === "none") assert.strictEqual(result.acks.timedOut, 0, why)
              if (fault === "versionSkew") assert.isTrue(result.acks.unsatisfiable > 0, why)
            }
          }), { timeout: 60_000 })
      }
    }

    it.effect("runs without awaited writes keep their history: the same hash with awaits off as before", () =>
      Effect.gen(function*() {
        const off = yield* Simulation.run({ strategy: "push", nodes: 3, fault: "loss" }, 4242)
        assert.deepStrictEqual(off.acks, { awaited: 0, acknowledged: 0, timedOut: 0, unsatisfiable: 0, probes: 0, probesAcknowledged: 0 })
        const on = yield* Simulation.run({ strategy: "push", nodes: 3, fault: "loss", awaits: true }, 4242)
        assert.notStrictEqual(on.historyHash, off.historyHash)
        assertOk(on)
      }))
  })

  it.effect("hostile frames are rejected exactly, six per node, and change no view", () =>
    Effect.gen(function*() {
      for (const nodes of [1, 3]) {
        const result = yield* Simulation.run({ strategy: "push", nodes, fault: "hostile" }, 5)
        assertOk(result)
        assert.strictEqual(result.frames.hostileInjected, 6 * nodes)
        assert.strictEqual(result.frames.hostileRejected, 6 * nodes)
      }
      const frames = Simulation.hostileFrames(NodeId.make("node-1"), Prng.make(1))
      assert.deepStrictEqual(frames.map((f) => f.name), [
        "huge length prefix",
        "unknown message tag",
        "wrong protocol version",
        "forged source",
        "truncated",
        "bit flip",
        "unknown state",
        "unknown wire version"
      ])
      for (const f of frames) {
        const decoded = decodeFrame(f.frame, SyncMessage.MaxFrameBytes.defaultValue(), NodeId.make("node-1"))
        assert.strictEqual(Result.isFailure(decoded), f.outcome === "rejected", f.name)
      }
    }))

  it.effect("corrupted frames in a run are each rejected on delivery", () =>
    Effect.gen(function*() {
      const result = yield* Simulation.run({ strategy: "push", nodes: 5, fault: "corruption", mutations: 30 }, 9)
      assertOk(result)
      assert.isTrue(result.frames.corruptedDelivered > 0)
      assert.strictEqual(result.frames.corruptedRejected, result.frames.corruptedDelivered)
    }))
})


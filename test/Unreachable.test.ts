/**
 * Unreachable is not down: with the simulated failure detector a silent
 * member is first unreachable (its views kept, marked, stale for bounded
 * queries), reachable again with its views intact and no join exchange, and
 * down (`NodeLeft`, views dropped) only `downAfter` after it was marked; a
 * graceful leave is `NodeLeft` at once. Then local health awareness and the
 * detector's options. Everything on `TestClock`: probe rounds every second
 * from time 0, so a member silent from time 0 is unreachable at exactly
 * `detectAfter` and down at exactly `detectAfter + downAfter`.
 */
import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber, Stream } from "effect"
import { TestClock } from "effect/testing"
import { ClusterEvents, DStateError, StateRegistry, SyncStrategy } from "dstate"
import { Fixtures, SimDetector, TestCluster } from "dstate/testing"
import * as LocalHealth from "../src/internal/localHealth.ts"
import { frames, handleOn, metricsOn, mutateOn, summary, viewsOn } from "./helpers.ts"
import type { Cluster, Node } from "./helpers.ts"

const Counter = Fixtures.Counter
const inc = (s: { readonly value: number }) => ({ value: s.value + 1 })
const detector = { probeInterval: "1 second", detectAfter: "3 seconds", downAfter: "10 seconds" } as const
const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })

/** Members and unreachable members as `node` sees them. */
const membershipOn = (cluster: Cluster, node: Node) =>
  cluster.run(
    node,
    Effect.gen(function*() {
      const events = yield* ClusterEvents.ClusterEvents
      return { members: [...(yield* events.members)].sort(), unreachable: Object.fromEntries(yield* events.unreachable) }
    })
  )

/** A two-node cluster where `a` mutated twice and `b` once, everything delivered, at time 0. */
const twoNodes = Effect.gen(function*() {
  const cluster = yield* TestCluster.make({ nodes: 2, setup, detector })
  const [a, b] = cluster.nodes
  yield* cluster.settle
  yield* mutateOn(cluster, a, Counter, inc)
  yield* mutateOn(cluster, a, Counter, inc)
  yield* mutateOn(cluster, b, Counter, inc)
  yield* cluster.settle
  return { cluster, a, b }
})

describe("unreachable is not down", () => {
  it.effect("unreachable, then reachable: the views stay as they were, marked meanwhile, and no join exchange", () =>
    Effect.gen(function*() {
      const { a, b, cluster } = yield* twoNodes
      const before = summary(yield* viewsOn(cluster, b, Counter))
      const counters = yield* metricsOn(cluster, b, Counter)
      const h = yield* handleOn(cluster, b, Counter)
      // Added b (its own view first), Added a, Updated a (marked), Updated a (unmarked).
      const diffs = yield* Effect.forkChild(Stream.runCollect(Stream.take(h.diffs, 4)))
      yield* Effect.yieldNow
      cluster.network.partition([a.id], [b.id])
      cluster.network.clearLog()

      yield* TestClock.adjust(2_999)
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: {} })
      yield* TestClock.adjust(1)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: { [a.id]: 3_000 } })
      assert.deepStrictEqual(yield* membershipOn(cluster, a), { members: [b.id], unreachable: { [b.id]: 3_000 } })
      const marked = yield* viewsOn(cluster, b, Counter)
      assert.deepStrictEqual(summary(marked), before)
      assert.strictEqual(marked.get(a.id)!.unreachableSince, 3_000)
      assert.strictEqual(marked.get(b.id)!.unreachableSince, undefined)
      // `/status` says so too.
      const [status] = yield* cluster.run(b, Effect.flatMap(StateRegistry.StateRegistry, (r) => r.status))
      assert.deepStrictEqual(status.views.map((v) => [v.node, v.unreachableSince]), [[a.id, 3_000], [b.id, undefined]])

      // Healed at 5 s; the probe round at 6 s hears it again.
      yield* TestClock.adjust(2_000)
      cluster.network.heal()
      yield* TestClock.adjust(999)
      assert.deepStrictEqual((yield* membershipOn(cluster, b)).unreachable, { [a.id]: 3_000 })
      yield* TestClock.adjust(1)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: {} })
      const after = yield* viewsOn(cluster, b, Counter)
      assert.deepStrictEqual(summary(after), before)
      assert.deepStrictEqual(summary(after)[a.id], { incarnation: after.get(a.id)!.generation.incarnation, age: 2, value: { value: 2 } })
      assert.strictEqual(after.get(a.id)!.unreachableSince, undefined)
      // Nothing was exchanged: no snapshot, no request, on either side.
      assert.deepStrictEqual(frames(cluster).map((f) => f.message._tag), [])
      assert.deepStrictEqual(yield* metricsOn(cluster, b, Counter), counters)

      const events = yield* Fiber.join(diffs)
      assert.deepStrictEqual(events.map((d) => [d._tag, d.owner, d.current?.unreachableSince]), [
        ["Added", b.id, undefined],
        ["Added", a.id, undefined],
        ["Updated", a.id, 3_000],
        ["Updated", a.id, undefined]
      ])
    }))

  it.effect("unreachable, then down exactly downAfter after the mark; a re-join once it answers", () =>
    Effect.gen(function*() {
      const { a, b, cluster } = yield* twoNodes
      cluster.network.partition([a.id], [b.id])
      yield* TestClock.adjust(3_000)
      yield* cluster.settle
      // Marked at 3 s; down at 13 s, not a millisecond before.
      yield* TestClock.adjust(9_999)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: { [a.id]: 3_000 } })
      assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id].value, { value: 2 })
      yield* TestClock.adjust(1)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [], unreachable: {} })
      assert.deepStrictEqual([...(yield* viewsOn(cluster, b, Counter)).keys()], [b.id])
      assert.deepStrictEqual(cluster.network.detector!.stats(), {
        unreachable: 2,
        reachable: 0,
        down: 2,
        rejoined: 0,
        falseDown: 0,
        falseUnreachable: 0
      })

      // Healed: the next round hears it, a re-join with its snapshot exchange.
      cluster.network.heal()
      cluster.network.clearLog()
      yield* TestClock.adjust(1_000)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: {} })
      assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id].value, { value: 2 })
      // Both sides re-join: each sends its snapshot and asks for the other's; each request is answered.
      assert.deepStrictEqual(frames(cluster).map((f) => [f.from, f.message._tag]).sort(), [
        [a.id, "FullSnapshot"],
        [a.id, "FullSnapshot"],
        [a.id, "RequestSnapshot"],
        [b.id, "FullSnapshot"],
        [b.id, "FullSnapshot"],
        [b.id, "RequestSnapshot"]
      ])
      assert.strictEqual(cluster.network.detector!.stats().rejoined, 2)
    }))

  it.effect("a graceful leave is NodeLeft at once; a crash is unreachable, then down", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 3, setup, detector })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      yield* cluster.removeNode(a)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [c.id], unreachable: {} })
      assert.deepStrictEqual([...(yield* viewsOn(cluster, b, Counter)).keys()].sort(), [b.id, c.id])

      yield* cluster.crash(c)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [c.id], unreachable: {} })
      yield* TestClock.adjust(3_000)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [c.id], unreachable: { [c.id]: 3_000 } })
      assert.deepStrictEqual([...(yield* viewsOn(cluster, b, Counter)).keys()].sort(), [b.id, c.id])
      yield* TestClock.adjust(10_000)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [], unreachable: {} })
      assert.deepStrictEqual([...(yield* viewsOn(cluster, b, Counter)).keys()], [b.id])
      // A crash is not a false alarm.
      assert.deepStrictEqual(cluster.network.detector!.stats(), {
        unreachable: 1,
        reachable: 0,
        down: 1,
        rejoined: 0,
        falseDown: 0,
        falseUnreachable: 0
      })
    }))

  it.effect("a node back from a crash before downAfter is reachable again, its views kept", () =>
    Effect.gen(function*() {
      const { a, b, cluster } = yield* twoNodes
      yield* cluster.crash(a)
      yield* TestClock.adjust(4_000)
      yield* cluster.settle
      assert.deepStrictEqual((yield* membershipOn(cluster, b)).unreachable, { [a.id]: 3_000 })
      yield* cluster.restart(a)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: {} })
      const views = yield* viewsOn(cluster, b, Counter)
      assert.deepStrictEqual(views.get(a.id)!.value, { value: 2 })
      assert.strictEqual(views.get(a.id)!.unreachableSince, undefined)
    }))

  it.effect("since is the observer's own wall clock", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup, detector })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      b.clockOffsetMillis = 60_000
      cluster.network.partition([a.id], [b.id])
      yield* TestClock.adjust(3_000)
      yield* cluster.settle
      assert.deepStrictEqual((yield* membershipOn(cluster, a)).unreachable, { [b.id]: 3_000 })
      assert.deepStrictEqual((yield* membershipOn(cluster, b)).unreachable, { [a.id]: 63_000 })
      assert.strictEqual((yield* viewsOn(cluster, b, Counter)).get(a.id)!.unreachableSince, 63_000)
    }))

  it.effect("without a detector a crash is NodeLeft at once (the oracle)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      cluster.network.partition([a.id], [b.id])
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: {} })
      yield* cluster.crash(a)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [], unreachable: {} })
      assert.strictEqual(cluster.network.detector, undefined)
    }))
})

describe("bounded queries and unreachable owners", () => {
  const valuesOf = (views: ReadonlyMap<string, { readonly value: { readonly value: number } }>) =>
    Object.fromEntries([...views].map(([node, v]) => [node, v.value.value]))

  it.effect("StalePeer at once without a pull (the default), or skipped with unreachable: \"skip\"", () =>
    Effect.gen(function*() {
      const { a, b, cluster } = yield* twoNodes
      const c = yield* cluster.addNode()
      yield* cluster.settle
      cluster.network.isolate(a.id)
      yield* TestClock.adjust(3_000)
      yield* cluster.settle
      cluster.network.clearLog()
      const h = yield* handleOn(cluster, b, Counter)
      const failed = yield* Effect.exit(h.query({ maxStaleness: "1 hour" }, valuesOf))
      assert.deepStrictEqual(failed, Exit.fail(new DStateError.StalePeer({ stateName: "counter", node: a.id, lastSyncedAt: 0 })))
      assert.deepStrictEqual(
        yield* Effect.exit(h.query({ maxStaleness: "1 hour", unreachable: "fail" }, valuesOf)),
        failed
      )
      assert.deepStrictEqual(yield* h.query({ maxStaleness: "1 hour", unreachable: "skip" }, valuesOf), {
        [b.id]: 1,
        [c.id]: 0
      })
      // No freshness requirement: every view, the unreachable owner's included.
      assert.deepStrictEqual(yield* h.query({}, valuesOf), { [a.id]: 2, [b.id]: 1, [c.id]: 0 })
      yield* cluster.settle
      assert.deepStrictEqual(frames(cluster, { kind: "request" }).length, 0)
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, 0)
      // Skipping still pulls a reachable stale owner.
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(yield* h.query({ maxStaleness: "1 second", unreachable: "skip" }, valuesOf), {
        [b.id]: 1,
        [c.id]: 0
      })
      assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, 1)
      assert.deepStrictEqual(frames(cluster, { kind: "request" }).map((f) => [f.from, f.to]), [[b.id, c.id]])
      // An option outside its two values.
      const invalid = yield* Effect.exit(h.query({ maxStaleness: "1 hour", unreachable: "ignore" as "skip" }, valuesOf))
      assert.deepStrictEqual(
        invalid,
        Exit.fail(
          new DStateError.InvalidOptions({
            module: "query",
            option: "unreachable",
            value: "ignore",
            reason: "must be \"fail\" or \"skip\"",
            stateName: "counter"
          })
        )
      )
      // Reachable again: the same query is served.
      cluster.network.heal()
      yield* TestClock.adjust(1_000)
      yield* cluster.settle
      assert.deepStrictEqual(yield* h.query({ maxStaleness: "1 hour" }, valuesOf), { [a.id]: 2, [b.id]: 1, [c.id]: 0 })
    }))

  it.effect("a state registered while a member is unreachable starts with it marked: not pulled, StalePeer", () =>
    Effect.gen(function*() {
      const { a, b, cluster } = yield* twoNodes
      yield* cluster.run(a, StateRegistry.register(Fixtures.NodeResource)).pipe(Effect.orDie)
      yield* cluster.settle
      cluster.network.partition([a.id], [b.id])
      yield* TestClock.adjust(3_000)
      yield* cluster.settle
      const h = yield* cluster.run(b, StateRegistry.register(Fixtures.NodeResource)).pipe(Effect.orDie)
      yield* cluster.settle
      // a's view never arrived (its snapshot request was cut) and a is unreachable: StalePeer, no pull.
      const failed = yield* Effect.exit(h.query({ maxStaleness: "1 hour" }, (views) => views.size))
      assert.deepStrictEqual(failed, Exit.fail(new DStateError.StalePeer({ stateName: "node_resource", node: a.id, lastSyncedAt: 0 })))
      assert.strictEqual((yield* h.metrics).pulls, 0)
      // Asked again only once it answers: nothing while it is unreachable.
      cluster.network.clearLog()
      yield* TestClock.adjust(6_000)
      yield* cluster.settle
      assert.deepStrictEqual(frames(cluster, { from: b.id, tag: "RequestSnapshot" }).length, 0)
      assert.strictEqual(yield* h.query({ maxStaleness: "1 hour", unreachable: "skip" }, (views) => views.size), 1)
    }))

  it.effect("an unreachable node that does not replicate the state does not fail its queries", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 3, setup, detector })
      const [a, b, c] = cluster.nodes
      const hb = yield* cluster.run(b, StateRegistry.register(Fixtures.NodeResource)).pipe(Effect.orDie)
      yield* cluster.run(c, StateRegistry.register(Fixtures.NodeResource)).pipe(Effect.orDie)
      yield* cluster.settle
      cluster.network.isolate(a.id)
      yield* TestClock.adjust(3_000)
      yield* cluster.settle
      assert.deepStrictEqual(Object.keys((yield* membershipOn(cluster, b)).unreachable), [a.id])
      assert.deepStrictEqual(
        yield* hb.query({ maxStaleness: "1 hour" }, (views) => [...views.keys()].sort()),
        [b.id, c.id].sort()
      )
      // The counter, which a replicates, fails.
      const counter = yield* handleOn(cluster, b, Counter)
      assert.isTrue(Exit.isFailure(yield* Effect.exit(counter.query({ maxStaleness: "1 hour" }, (views) => views.size))))
    }))
})

describe("local health (Lifeguard)", () => {
  it("the score: +1 per late timer and per round mostly unanswered, -1 per round all answered, within [0, max]", () => {
    let h = LocalHealth.make(2)
    assert.deepStrictEqual(h, { score: 0, max: 2 })
    assert.strictEqual(LocalHealth.timerFired(h, 500, 1_000), h)
    h = LocalHealth.timerFired(h, 501, 1_000)
    assert.strictEqual(h.score, 1)
    h = LocalHealth.probeRound(h, 4, 1)
    assert.strictEqual(h.score, 2)
    h = LocalHealth.probeRound(h, 4, 0)
    assert.strictEqual(h.score, 2)
    assert.strictEqual(LocalHealth.scale(h, 3_000), 9_000)
    assert.strictEqual(LocalHealth.multiplier(h), 3)
    assert.strictEqual(LocalHealth.probeRound(h, 4, 2), h)
    assert.strictEqual(LocalHealth.probeRound(h, 0, 0), h)
    h = LocalHealth.probeRound(h, 4, 4)
    assert.strictEqual(h.score, 1)
    assert.strictEqual(LocalHealth.apply(h, -5).score, 0)
    assert.strictEqual(LocalHealth.make().max, 8)
  })

  const overloaded = (localHealth: boolean) =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 3, setup, detector: { ...detector, localHealth } })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      cluster.network.detector!.overload(a.id, true)
      yield* TestClock.adjust("60 seconds")
      yield* cluster.settle
      const during = { ...cluster.network.detector!.stats(), health: cluster.network.detector!.healthOf(a.id) }
      cluster.network.detector!.overload(a.id, false)
      yield* TestClock.adjust("20 seconds")
      yield* cluster.settle
      return { during, after: yield* membershipOn(cluster, a), health: cluster.network.detector!.healthOf(a.id), others: [b.id, c.id] }
    })

  it.effect("an overloaded node without awareness declares its healthy peers down", () =>
    Effect.gen(function*() {
      const { after, during, others } = yield* overloaded(false)
      assert.deepStrictEqual(during, {
        unreachable: 2,
        reachable: 0,
        down: 2,
        rejoined: 0,
        falseDown: 2,
        falseUnreachable: 2,
        health: 0
      })
      // Once it recovers, it hears them again: a re-join.
      assert.deepStrictEqual(after, { members: others, unreachable: {} })
    }))

  it.effect("with local health awareness it only marks them unreachable, 9 times later, and never down", () =>
    Effect.gen(function*() {
      const { after, during, health, others } = yield* overloaded(true)
      assert.deepStrictEqual(during, {
        unreachable: 2,
        reachable: 0,
        down: 0,
        rejoined: 0,
        falseDown: 0,
        falseUnreachable: 2,
        health: 8
      })
      assert.deepStrictEqual(after, { members: others, unreachable: {} })
      assert.strictEqual(health, 0)
    }))
})

describe("detector options", () => {
  it.effect("each option at its edge: positive probe interval and detectAfter, downAfter from 0, max from 0", () =>
    Effect.gen(function*() {
      const ok = yield* SimDetector.settings({ probeInterval: 1, detectAfter: 1, downAfter: 0, localHealth: { max: 0 } })
      assert.deepStrictEqual(ok, { probeIntervalMillis: 1, detectAfterMillis: 1, downAfterMillis: 0, localHealth: 0 })
      assert.deepStrictEqual(yield* SimDetector.settings({}), {
        probeIntervalMillis: 1_000,
        detectAfterMillis: 5_000,
        downAfterMillis: 30_000,
        localHealth: undefined
      })
      assert.strictEqual((yield* SimDetector.settings({ localHealth: true })).localHealth, 8)
      const refused = (options: SimDetector.Options) =>
        Effect.map(Effect.flip(SimDetector.settings(options)), (e) => [e.module, e.option, e.value])
      assert.deepStrictEqual(yield* refused({ probeInterval: 0 }), ["SimDetector", "probeInterval", 0])
      assert.deepStrictEqual(yield* refused({ detectAfter: 0 }), ["SimDetector", "detectAfter", 0])
      assert.deepStrictEqual(yield* refused({ downAfter: -1 }), ["SimDetector", "downAfter", -1])
      assert.deepStrictEqual(yield* refused({ localHealth: { max: -1 } }), ["SimDetector", "localHealth.max", -1])
      const cluster = yield* Effect.flip(TestCluster.make({ nodes: 1, detector: { probeInterval: "0 millis" } }))
      assert.strictEqual(cluster._tag, "InvalidOptions")
    }))

  it.effect("downAfter 0: down in the round that finds it unreachable", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup, detector: { ...detector, downAfter: 0 } })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      cluster.network.partition([a.id], [b.id])
      yield* TestClock.adjust(2_999)
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [a.id], unreachable: {} })
      yield* TestClock.adjust(1)
      yield* cluster.settle
      assert.deepStrictEqual(yield* membershipOn(cluster, b), { members: [], unreachable: {} })
    }))

  describe("awaited writes", () => {
    const threeNodes = Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 3, setup, detector })
      yield* cluster.settle
      return { cluster, a: cluster.nodes[0], b: cluster.nodes[1], c: cluster.nodes[2] }
    })
    const awaiting = (cluster: Cluster, node: Node, peers: number | "majority" | "all", timeout: Duration.Input) =>
      Effect.flatMap(handleOn(cluster, node, Counter), (h) =>
        Effect.forkChild(h.mutate(inc, { await: { peers, timeout } }) as Effect.Effect<StateRegistry.Committed<{ readonly value: number }>, unknown>))

    it.effect("a member unreachable at the call is not counted: \"all\" is met by the others, a count it cannot reach is unsatisfiable", () =>
      Effect.gen(function*() {
        const { a, b, c, cluster } = yield* threeNodes
        cluster.network.partition([a.id, b.id], [c.id])
        yield* TestClock.adjust(3_000)
        yield* cluster.settle
        assert.deepStrictEqual((yield* membershipOn(cluster, a)).unreachable, { [c.id]: 3_000 })

        const all = yield* awaiting(cluster, a, "all", "20 seconds")
        yield* cluster.settle
        const done = yield* Fiber.join(all)
        assert.deepStrictEqual((done as StateRegistry.Acknowledged<{ readonly value: number }>).acknowledgedBy, [b.id])
        assert.deepStrictEqual(done.state, { value: 1 })

        // A majority of the two other members is one: b.
        const majority = yield* Fiber.join(yield* awaiting(cluster, a, "majority", "20 seconds"))
        assert.deepStrictEqual((majority as StateRegistry.Acknowledged<{ readonly value: number }>).acknowledgedBy, [b.id])

        // Two acknowledgements cannot come while c is unreachable: said at once, the mutation committed.
        const two = yield* Fiber.await(yield* awaiting(cluster, a, 2, "20 seconds"))
        assert.isTrue(Exit.isFailure(two))
        const error = Exit.isFailure(two) ? (two.cause.reasons[0] as { readonly error?: unknown }).error : undefined
        assert.instanceOf(error, DStateError.AckUnsatisfiable)
        assert.strictEqual((error as DStateError.AckUnsatisfiable).required, 2)
        assert.deepStrictEqual((error as DStateError.AckUnsatisfiable).eligible, [b.id])
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, a, Counter))[a.id].value, { value: 3 })
      }))

    it.effect("a member that becomes unreachable during the wait stops being waited for", () =>
      Effect.gen(function*() {
        const { a, b, c, cluster } = yield* threeNodes
        // c is cut off at 0; the await starts before anyone finds it silent.
        cluster.network.partition([a.id, b.id], [c.id])
        const all = yield* awaiting(cluster, a, "all", "20 seconds")
        yield* TestClock.adjust(2_999)
        assert.isUndefined(all.pollUnsafe())
        yield* TestClock.adjust(1)
        yield* cluster.settle
        const done = yield* Fiber.join(all)
        assert.deepStrictEqual((done as StateRegistry.Acknowledged<{ readonly value: number }>).acknowledgedBy, [b.id])
        assert.deepStrictEqual(done.state, { value: 1 })
      }))
  })
})

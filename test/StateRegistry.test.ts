/**
 * The registry and the state handle on a simulated cluster: registration and
 * lookup, the view map's local entry, queries (fast path, pull, `StalePeer`),
 * the `changes` stream, rejection of bad inbound frames, bounded mailboxes.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Result, Schema, Stream } from "effect"
import { TestClock } from "effect/testing"
import { SchemaBinary } from "effect/encoding"
import { DistributedState, DStateError, NodeId, StateRegistry, SyncMessage, SyncUrgency } from "dstate"
import { Fixtures, InProcessRuntime, SimNetwork, TestCluster } from "dstate/testing"
import { encodeFrame } from "../src/internal/codec.ts"
import { nodeResource } from "./support/NodeResource.ts"
import {
  awaitFrame,
  handleOn,
  inboundOn,
  localOn,
  loggedFrames,
  metricsOn,
  sentFrames,
  summary,
  viewsOn
} from "./helpers.ts"

const { Counter, NodeResource } = Fixtures
const registerCounter = StateRegistry.register(Counter)
const statesOf = Effect.gen(function*() {
  const registry = yield* StateRegistry.StateRegistry
  return yield* registry.states
})
/** The default frame limit (16 MiB). */
const SyncMessageMax = 16 * 1024 * 1024
type ViewMapOf = ReadonlyMap<NodeId.NodeId, { readonly generation: { readonly age: number } }>
const increment = (by: number) => (s: { readonly value: number }) => ({ value: s.value + by })

describe("StateRegistry", () => {
  describe("register and lookup", () => {
    it.effect("lookup of an unregistered state fails with StateNotRegistered", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1 })
        const [a] = cluster.nodes
        const error = yield* cluster.run(a, StateRegistry.lookup(Counter)).pipe(Effect.flip)
        assert.instanceOf(error, DStateError.StateNotRegistered)
        assert.strictEqual(error._tag, "StateNotRegistered")
        assert.strictEqual(error.stateName, "counter")
        assert.deepStrictEqual(yield* cluster.run(a, statesOf), [])
      }))

    it.effect("lookup returns the registered handle; other states stay unregistered", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1, setup: registerCounter })
        const [a] = cluster.nodes
        const counter = yield* cluster.run(a, StateRegistry.lookup(Counter))
        assert.strictEqual(counter._tag, "Simple")
        assert.strictEqual(counter.name, "counter")
        assert.strictEqual(counter.nodeId, a.id)
        assert.strictEqual(yield* cluster.run(a, StateRegistry.lookup(Counter)), counter)
        const error = yield* cluster.run(a, StateRegistry.lookup(NodeResource)).pipe(Effect.flip)
        assert.strictEqual(error._tag, "StateNotRegistered")
        assert.strictEqual(error.stateName, "node_resource")
      }))

    it.effect("registering the same name twice fails with DuplicateStateName and keeps the first", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const first = yield* handleOn(cluster, a, Counter)
        yield* first.mutate(increment(3))
        // Same definition again, and another definition with the same name.
        const again = yield* cluster.run(a, StateRegistry.register(Counter)).pipe(Effect.flip)
        assert.instanceOf(again, DStateError.DuplicateStateName)
        assert.strictEqual(again.stateName, "counter")
        const impostor = DistributedState.make({
          name: "counter",
          schema: Schema.Struct({ other: Schema.String }),
          initial: () => ({ other: "" })
        })
        const clash = yield* cluster.run(a, StateRegistry.register(impostor)).pipe(Effect.flip)
        assert.strictEqual(clash._tag, "DuplicateStateName")
        assert.strictEqual(clash.stateName, "counter")
        // The first registration is untouched and still replicates.
        assert.strictEqual(yield* handleOn(cluster, a, Counter), first)
        yield* first.mutate(increment(4))
        yield* cluster.settle
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], { incarnation: 0, age: 2, value: { value: 7 } })
        const states = yield* cluster.run(a, statesOf)
        assert.deepStrictEqual(states, ["counter"])
      }))

    it.effect("two different states register side by side", () =>
      Effect.gen(function*() {
        const setup = Effect.andThen(registerCounter, StateRegistry.register(NodeResource))
        const cluster = yield* TestCluster.make({ nodes: 1, setup })
        const [a] = cluster.nodes
        const states = yield* cluster.run(a, statesOf)
        assert.deepStrictEqual([...states].sort(), ["counter", "node_resource"])
        assert.strictEqual((yield* handleOn(cluster, a, NodeResource))._tag, "Delta")
      }))
  })

  describe("register: bad definitions and options fail with InvalidOptions", () => {
    const named = (name: string) => DistributedState.make({ name, schema: Counter.state, initial: () => ({ value: 0 }) })
    const refusal = (module: string, stateName: string, option: string, value: unknown, reason: string) =>
      new DStateError.InvalidOptions({ module, stateName, option, value, reason })
    /** Registers on a fresh node: the error, or the names registered after success. */
    const registerOnFreshNode = <T extends DistributedState.Any>(definition: T, options?: StateRegistry.RegisterOptions) =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1 })
        const [a] = cluster.nodes
        const result = yield* cluster.run(a, Effect.result(StateRegistry.register(definition, options)))
        return { result, states: yield* cluster.run(a, statesOf) }
      })
    const refused = <T extends DistributedState.Any>(definition: T, options?: StateRegistry.RegisterOptions) =>
      Effect.gen(function*() {
        const { result, states } = yield* registerOnFreshNode(definition, options)
        // Nothing is registered, so the same name may be registered again with good options.
        assert.deepStrictEqual(states, [])
        if (Result.isSuccess(result)) return assert.fail("register succeeded")
        if (result.failure._tag !== "InvalidOptions") return assert.fail(result.failure.message)
        return result.failure
      })
    const accepted = <T extends DistributedState.Any>(definition: T, options?: StateRegistry.RegisterOptions) =>
      Effect.gen(function*() {
        const { result, states } = yield* registerOnFreshNode(definition, options)
        assert.isTrue(Result.isSuccess(result), Result.isFailure(result) ? result.failure.message : "")
        assert.deepStrictEqual(states, [definition.name])
      })

    it.effect("a state name must have 1 to 256 characters", () =>
      Effect.gen(function*() {
        yield* accepted(named("a"))
        yield* accepted(named("n".repeat(256)))
        for (const name of ["", "n".repeat(257)]) {
          assert.deepStrictEqual(
            yield* refused(named(name)),
            refusal("DistributedState", name, "name", name, "must have 1 to 256 characters")
          )
        }
        const long = yield* refused(DistributedState.makeDelta({ name: "n".repeat(257), ...nodeResource }))
        assert.strictEqual(long.option, "name")
        assert.strictEqual(long.module, "DistributedState")
      }))

    it.effect("a delta state gives change and applyChange together or not at all", () =>
      Effect.gen(function*() {
        const change = Schema.Struct({ cpuPercent: Schema.optionalKey(Schema.Number) })
        const applyChange = (state: Fixtures.NodeResourceState, c: Fixtures.NodeResourceChange) => ({ ...state, ...c })
        yield* accepted(DistributedState.makeDelta({ name: "neither", ...nodeResource }))
        yield* accepted(DistributedState.makeDelta({ name: "both", ...nodeResource, change, applyChange }))
        assert.deepStrictEqual(
          yield* refused(DistributedState.makeDelta({ name: "only-change", ...nodeResource, change })),
          refusal("DistributedState", "only-change", "applyChange", undefined, "must be given with change")
        )
        assert.deepStrictEqual(
          yield* refused(DistributedState.makeDelta({ name: "only-apply", ...nodeResource, applyChange })),
          refusal("DistributedState", "only-apply", "change", undefined, "must be given with applyChange")
        )
      }))

    it.effect("mailbox must be a positive integer or \"unbounded\"", () =>
      Effect.gen(function*() {
        yield* accepted(Counter, { mailbox: 1 })
        yield* accepted(Counter, { mailbox: "unbounded" })
        for (const mailbox of [0, -1, 1.5, Number.NaN]) {
          assert.deepStrictEqual(
            yield* refused(Counter, { mailbox }),
            refusal("StateRegistry.register", "counter", "mailbox", mailbox, "must be a positive integer or \"unbounded\"")
          )
        }
      }))

    it.effect("pullTimeout must be a finite positive duration", () =>
      Effect.gen(function*() {
        yield* accepted(Counter, { pullTimeout: 1 })
        yield* accepted(Counter, { pullTimeout: "1 nanos" })
        for (const pullTimeout of [0, -1, "Infinity", "soon"] as const) {
          assert.deepStrictEqual(
            yield* refused(Counter, { pullTimeout: pullTimeout as StateRegistry.RegisterOptions["pullTimeout"] }),
            refusal("StateRegistry.register", "counter", "pullTimeout", pullTimeout, "must be a finite positive duration")
          )
        }
      }))

    it.effect("versionMismatchPolicy must be one of the two policies", () =>
      Effect.gen(function*() {
        yield* accepted(Counter, { versionMismatchPolicy: "DropAndWait" })
        const policy = "Ignore" as unknown as StateRegistry.VersionMismatchPolicy
        assert.deepStrictEqual(
          yield* refused(Counter, { versionMismatchPolicy: policy }),
          refusal("StateRegistry.register", "counter", "versionMismatchPolicy", "Ignore", "must be \"KeepStale\" or \"DropAndWait\"")
        )
      }))

    it.effect("the error's message names the option, the value and what is allowed", () =>
      Effect.gen(function*() {
        const error = yield* refused(Counter, { mailbox: 0 })
        assert.strictEqual(
          error.message,
          "invalid StateRegistry.register option mailbox of state \"counter\" = 0: must be a positive integer or \"unbounded\""
        )
      }))
  })

  describe("registry settings, query bounds and urgencies fail with InvalidOptions", () => {
    const refusal = (module: string, option: string, value: unknown, reason: string, stateName?: string) =>
      new DStateError.InvalidOptions({ module, option, value, reason, ...(stateName === undefined ? {} : { stateName }) })
    /** Builds one node with these registry settings: the layer's error, or the success. */
    const build = (settings: Parameters<typeof StateRegistry.layerWith>[0]) =>
      Effect.scoped(Effect.gen(function*() {
        const network = yield* SimNetwork.make
        return yield* Layer.build(
          StateRegistry.layerWith(settings).pipe(Layer.provide(InProcessRuntime.layer(network, NodeId.make("n"))))
        ).pipe(Effect.as("built"), Effect.result)
      }))
    const refusedWith = (settings: Parameters<typeof StateRegistry.layerWith>[0]) =>
      Effect.map(build(settings), (result) => Result.isFailure(result) ? result.failure : assert.fail("layer built"))

    it.effect("each registry setting is checked at its edge when the layer is built", () =>
      Effect.gen(function*() {
        const positiveInteger = "must be a positive integer"
        const positiveDuration = "must be a finite positive duration"
        const goods: ReadonlyArray<Parameters<typeof StateRegistry.layerWith>[0]> = [
          { departedCapacity: 1 },
          { maxFrameBytes: 1 },
          { healthStaleAfter: "1 nanos" },
          { changeFeedFlush: 1 }
        ]
        for (const good of goods) {
          assert.deepStrictEqual(yield* build(good), Result.succeed("built"))
        }
        const cases: ReadonlyArray<[Parameters<typeof StateRegistry.layerWith>[0], string, unknown, string]> = [
          [{ departedCapacity: 0 }, "departedCapacity", 0, positiveInteger],
          [{ departedCapacity: 2.5 }, "departedCapacity", 2.5, positiveInteger],
          [{ maxFrameBytes: 0 }, "maxFrameBytes", 0, positiveInteger],
          [{ healthStaleAfter: 0 }, "healthStaleAfter", 0, positiveDuration],
          [{ healthStaleAfter: "soon" as Duration.Input }, "healthStaleAfter", "soon", positiveDuration],
          [{ changeFeedFlush: "Infinity" }, "changeFeedFlush", "Infinity", positiveDuration],
          [{ changeFeedFlush: -1 }, "changeFeedFlush", -1, positiveDuration]
        ]
        for (const [settings, option, value, reason] of cases) {
          assert.deepStrictEqual(yield* refusedWith(settings), refusal("StateRegistry", option, value, reason))
        }
      }))

    it.effect("TestCluster checks the registry settings once, before any node starts", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(TestCluster.make({ nodes: 2, registry: { departedCapacity: 0 } }))
        assert.deepStrictEqual(error, refusal("StateRegistry", "departedCapacity", 0, "must be a positive integer"))
      }))

    it.effect("query: maxStaleness must be a non-negative duration; zero and infinity are bounds", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        yield* cluster.settle
        const counter = yield* handleOn(cluster, cluster.nodes[0], Counter)
        assert.strictEqual(yield* counter.query({ maxStaleness: Duration.infinity }, (views) => views.size), 2)
        assert.strictEqual(yield* counter.query({ maxStaleness: "1 hour" }, (views) => views.size), 2)
        for (const maxStaleness of [-1, "-1 millis", "soon", Number.NaN] as ReadonlyArray<Duration.Input>) {
          const error = yield* Effect.flip(counter.query({ maxStaleness }, (views) => views.size))
          assert.deepStrictEqual(
            error,
            refusal("query", "maxStaleness", maxStaleness, "must be a non-negative duration", "counter")
          )
        }
        // The same bad input again is refused again (the memo keeps refusals too).
        const again = yield* Effect.flip(counter.query({ maxStaleness: "soon" as Duration.Input }, (views) => views.size))
        assert.strictEqual(again._tag, "InvalidOptions")
      }))

    it("SyncUrgency.Delayed takes a finite duration of zero or more; anything else throws InvalidOptions", () => {
      assert.deepStrictEqual(SyncUrgency.Delayed(0), { _tag: "Delayed", duration: Duration.zero })
      assert.deepStrictEqual(SyncUrgency.Delayed("250 millis"), { _tag: "Delayed", duration: Duration.millis(250) })
      for (const input of [-1, "Infinity", "soon", Number.NaN] as ReadonlyArray<Duration.Input>) {
        assert.throws(() => SyncUrgency.Delayed(input), DStateError.InvalidOptions)
        try {
          SyncUrgency.Delayed(input)
        } catch (error) {
          assert.deepStrictEqual(
            error,
            refusal("SyncUrgency", "Delayed", input, "must be a finite non-negative duration")
          )
        }
      }
    })
  })

  describe("views", () => {
    it.effect("a lone node's view map holds exactly its own view", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1, setup: registerCounter })
        const [a] = cluster.nodes
        yield* cluster.settle
        const views = yield* viewsOn(cluster, a, Counter)
        assert.deepStrictEqual([...views.keys()], [a.id])
        const own = views.get(a.id)!
        assert.strictEqual(own.source, a.id)
        assert.deepStrictEqual(own.generation, { incarnation: 0, age: 0 })
        assert.deepStrictEqual(own.value, { value: 0 })
        assert.strictEqual(own.wireVersion, 1)
        assert.strictEqual(own.pendingRemote, undefined)
        assert.strictEqual(yield* localOn(cluster, a, Counter), own)
      }))

    it.effect("every node's view map contains the local node, before and after peers come and go", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        // Right after start, before anything was delivered.
        for (const n of [a, b, c]) assert.isTrue((yield* viewsOn(cluster, n, Counter)).has(n.id))
        yield* cluster.settle
        for (const n of [a, b, c]) {
          const views = yield* viewsOn(cluster, n, Counter)
          assert.deepStrictEqual([...views.keys()].sort(), [a.id, b.id, c.id])
          assert.strictEqual(views.get(n.id)!.source, n.id)
        }
        yield* cluster.removeNode(b)
        yield* cluster.crash(c)
        yield* cluster.settle
        const alone = yield* viewsOn(cluster, a, Counter)
        assert.deepStrictEqual(summary(alone), { [a.id]: { incarnation: 0, age: 0, value: { value: 0 } } })
      }))
  })

  describe("published maps", () => {
    for (const persist of [false, true]) {
      it.effect(`a map once given out never changes: snapshots, query results and changes (persist: ${persist})`, () =>
        Effect.gen(function*() {
          const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter, { persist }) })
          const [a, b] = cluster.nodes
          yield* cluster.settle
          const counter = yield* handleOn(cluster, a, Counter)
          // Not given out yet: these publications may reuse the map.
          yield* counter.mutate(increment(1))
          yield* counter.mutate(increment(1))
          const first = yield* counter.snapshot
          assert.deepStrictEqual(summary(first)[a.id], { incarnation: 0, age: 2, value: { value: 2 } })
          yield* counter.mutate(increment(1))
          const queried = yield* counter.query({ maxStaleness: "1 hour" }, (views) => views)
          yield* counter.mutate(increment(1))
          const seen: Array<ViewMapOf> = []
          const collecting = yield* counter.changes.pipe(
            Stream.take(3),
            Stream.runForEach((views) => Effect.sync(() => void seen.push(views))),
            Effect.forkChild
          )
          yield* cluster.settle
          yield* counter.mutate(increment(1))
          yield* counter.mutate(increment(1))
          yield* Fiber.join(collecting)
          yield* cluster.settle
          // Each map still holds what it held when it was given out.
          assert.deepStrictEqual(summary(first)[a.id], { incarnation: 0, age: 2, value: { value: 2 } })
          assert.deepStrictEqual(summary(queried)[a.id], { incarnation: 0, age: 3, value: { value: 3 } })
          assert.deepStrictEqual(seen.map((views) => views.get(a.id)!.generation.age), [4, 5, 6])
          assert.strictEqual(new Set(seen).size, 3)
          assert.notStrictEqual(first, queried)
          // And the peer saw the newest.
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], {
            incarnation: 0,
            age: 6,
            value: { value: 6 }
          })
          assert.deepStrictEqual(summary(yield* counter.snapshot)[a.id], { incarnation: 0, age: 6, value: { value: 6 } })
        }))
    }
  })

  describe("query", () => {
    it.effect("right after settle, a bounded-staleness query is served locally and sends nothing", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.mutate(increment(7)))
        yield* Effect.flatMap(handleOn(cluster, c, Counter), (h) => h.mutate(increment(2)))
        yield* cluster.settle
        const sent = sentFrames(cluster)
        const pulls = (yield* metricsOn(cluster, b, Counter)).pulls
        const counter = yield* handleOn(cluster, b, Counter)
        const total = yield* counter.query({ maxStaleness: "5 seconds" }, (views) => {
          let sum = 0
          for (const v of views.values()) sum += v.value.value
          return sum
        })
        assert.strictEqual(total, 9)
        const seen = yield* counter.query({ maxStaleness: "5 seconds" }, summary)
        assert.deepStrictEqual(seen, {
          [a.id]: { incarnation: 0, age: 1, value: { value: 7 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 1, value: { value: 2 } }
        })
        // Still fresh at exactly maxStaleness.
        yield* TestClock.adjust("5 seconds")
        assert.strictEqual(yield* counter.query({ maxStaleness: "5 seconds" }, (views) => views.size), 3)
        assert.strictEqual(sentFrames(cluster), sent)
        assert.strictEqual((yield* metricsOn(cluster, b, Counter)).pulls, pulls)
      }))

    it.effect("a query without maxStaleness never pulls, however old the views", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* TestClock.adjust("1 hour")
        const sent = sentFrames(cluster)
        const counter = yield* handleOn(cluster, b, Counter)
        assert.deepStrictEqual(yield* counter.query({}, (views) => [...views.keys()].sort()), [a.id, b.id])
        assert.strictEqual(sentFrames(cluster), sent)
      }))

    it.effect("beyond maxStaleness a query pulls every stale peer and returns the fresh values", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        const ownerA = yield* handleOn(cluster, a, Counter)
        yield* ownerA.mutate(increment(7))
        yield* cluster.settle
        // b misses a's second push (pure activePush does not repair it by itself).
        cluster.network.cut(a.id, b.id)
        yield* ownerA.mutate(increment(1))
        yield* cluster.settle
        cluster.network.heal()
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], { incarnation: 0, age: 1, value: { value: 7 } })
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, c, Counter))[a.id], { incarnation: 0, age: 2, value: { value: 8 } })

        yield* TestClock.adjust("6 seconds")
        const sent = sentFrames(cluster)
        const before = yield* metricsOn(cluster, b, Counter)
        cluster.network.clearLog()
        const counter = yield* handleOn(cluster, b, Counter)
        const seen = yield* counter.query({ maxStaleness: "5 seconds" }, summary)
        assert.deepStrictEqual(seen, {
          [a.id]: { incarnation: 0, age: 2, value: { value: 8 } },
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
        // One request and one reply per stale peer (a and c).
        assert.strictEqual(sentFrames(cluster) - sent, 4)
        assert.deepStrictEqual(
          cluster.network.log().map((f) => `${f.kind} ${f.from}->${f.to}`).sort(),
          [`reply ${a.id}->${b.id}`, `reply ${c.id}->${b.id}`, `request ${b.id}->${a.id}`, `request ${b.id}->${c.id}`]
        )
        const after = yield* metricsOn(cluster, b, Counter)
        assert.strictEqual(after.pulls - before.pulls, 2)
        assert.strictEqual(after.snapshotsReceived - before.snapshotsReceived, 1) // a's age 2
        assert.strictEqual(after.staleDiscarded - before.staleDiscarded, 1) // c's unchanged snapshot confirms the view
        // The pulled views are fresh again: the next query is local.
        const sentAfter = sentFrames(cluster)
        assert.strictEqual(yield* counter.query({ maxStaleness: "5 seconds" }, (views) => views.size), 3)
        assert.strictEqual(sentFrames(cluster), sentAfter)
        yield* cluster.settle
      }))

    it.effect("with its link cut, a stale owner makes the query fail with StalePeer after exactly the pull timeout", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.mutate(increment(1)))
        yield* cluster.settle
        cluster.network.partition([a.id], [b.id])
        yield* TestClock.adjust("6 seconds")
        cluster.network.clearLog()
        const counter = yield* handleOn(cluster, b, Counter)
        const fiber = yield* counter.query({ maxStaleness: "5 seconds" }, summary).pipe(Effect.forkChild)
        yield* awaitFrame(cluster, { from: b.id, to: a.id, tag: "RequestSnapshot" })
        yield* TestClock.adjust("4999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const error = yield* Fiber.join(fiber).pipe(Effect.flip)
        assert.instanceOf(error, DStateError.StalePeer)
        assert.strictEqual(error.stateName, "counter")
        assert.strictEqual(error.node, a.id)
        assert.strictEqual(error.lastSyncedAt, 0)
        const metrics = yield* metricsOn(cluster, b, Counter)
        assert.strictEqual(metrics.pulls, 1)
        assert.strictEqual(metrics.syncFailures, 1)
        const [status] = (yield* counter.syncStatus).filter((s) => s.node === a.id)
        assert.strictEqual(status.consecutiveFailures, 1)
        assert.strictEqual(status.remoteAge, 1)
        // The view is kept (stale); only the query failed.
        assert.deepStrictEqual(summary(yield* counter.snapshot)[a.id], { incarnation: 0, age: 1, value: { value: 1 } })
      }))

    it.effect("a custom pullTimeout bounds the wait", () =>
      Effect.gen(function*() {
        const setup = StateRegistry.register(Counter, { pullTimeout: "2 seconds" })
        const cluster = yield* TestCluster.make({ nodes: 2, setup })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        cluster.network.cut(b.id, a.id)
        yield* TestClock.adjust("1 minute")
        cluster.network.clearLog()
        const counter = yield* handleOn(cluster, b, Counter)
        const fiber = yield* counter.query({ maxStaleness: "1 second" }, (views) => views.size).pipe(Effect.forkChild)
        yield* awaitFrame(cluster, { from: b.id, to: a.id, tag: "RequestSnapshot" })
        yield* TestClock.adjust("1999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit))
        const error = yield* Fiber.join(fiber).pipe(Effect.flip)
        assert(error._tag === "StalePeer")
        assert.strictEqual(error.node, a.id)
      }))

    it.effect("an owner that crashes while the pull is in flight makes the query fail with StalePeer", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* TestClock.adjust("6 seconds")
        // The request is still on the wire when the owner crashes; the crash drops it.
        cluster.network.setDelay("100 millis")
        cluster.network.clearLog()
        const counter = yield* handleOn(cluster, b, Counter)
        const fiber = yield* counter.query({ maxStaleness: "5 seconds" }, summary).pipe(Effect.forkChild)
        yield* awaitFrame(cluster, { from: b.id, to: a.id, tag: "RequestSnapshot" })
        yield* cluster.crash(a)
        yield* TestClock.adjust("4999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const error = yield* Fiber.join(fiber).pipe(Effect.flip)
        assert.instanceOf(error, DStateError.StalePeer)
        assert.strictEqual(error.node, a.id)
        assert.strictEqual(error.stateName, "counter")
        assert.strictEqual(error.lastSyncedAt, 0)
      }))

    it.effect("after an owner crashed (and left the membership), queries are served without its view", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: registerCounter })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.mutate(increment(1)))
        yield* cluster.settle
        yield* cluster.crash(a)
        yield* cluster.settle
        yield* TestClock.adjust("6 seconds")
        const counter = yield* handleOn(cluster, b, Counter)
        const seen = yield* counter.query({ maxStaleness: "5 seconds" }, summary)
        assert.deepStrictEqual(seen, {
          [b.id]: { incarnation: 0, age: 0, value: { value: 0 } },
          [c.id]: { incarnation: 0, age: 0, value: { value: 0 } }
        })
      }))
  })

  describe("changes", () => {
    it.effect("emits the current map, then the map with a remote mutation", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const counter = yield* handleOn(cluster, b, Counter)
        const fiber = yield* counter.changes.pipe(Stream.take(2), Stream.runCollect, Effect.forkChild)
        yield* cluster.settle
        yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.mutate(increment(5)))
        yield* cluster.settle
        const emitted = yield* Fiber.join(fiber)
        assert.deepStrictEqual(emitted.map(summary), [
          {
            [a.id]: { incarnation: 0, age: 0, value: { value: 0 } },
            [b.id]: { incarnation: 0, age: 0, value: { value: 0 } }
          },
          {
            [a.id]: { incarnation: 0, age: 1, value: { value: 5 } },
            [b.id]: { incarnation: 0, age: 0, value: { value: 0 } }
          }
        ])
        assert.strictEqual(emitted[1], yield* counter.snapshot)
      }))

    it.effect("emits every remote mutation in order", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const counter = yield* handleOn(cluster, b, Counter)
        const fiber = yield* counter.changes.pipe(
          Stream.map((views) => views.get(a.id)!.generation.age),
          Stream.take(4),
          Stream.runCollect,
          Effect.forkChild
        )
        yield* cluster.settle
        const owner = yield* handleOn(cluster, a, Counter)
        for (let i = 0; i < 3; i++) {
          yield* owner.mutate(increment(1))
          yield* cluster.settle
        }
        assert.deepStrictEqual(yield* Fiber.join(fiber), [0, 1, 2, 3])
      }))
  })

  describe("mutate", () => {
    for (const persist of [false, true]) {
      it.effect(`an apply that throws dies with its defect and changes nothing (persist: ${persist})`, () =>
        Effect.gen(function*() {
          const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter, { persist }) })
          const [a, b] = cluster.nodes
          yield* cluster.settle
          const counter = yield* handleOn(cluster, a, Counter)
          yield* counter.mutate(increment(2))
          yield* cluster.settle
          const sentBefore = (yield* counter.metrics).snapshotsSent
          const boom = new Error("boom")
          const exit = yield* Effect.exit(counter.mutate(() => {
            throw boom
          }))
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit)) {
            const reasons = exit.cause.reasons
            assert.strictEqual(reasons.length, 1)
            assert.strictEqual(reasons[0]._tag, "Die")
            if (reasons[0]._tag === "Die") assert.strictEqual(reasons[0].defect, boom)
          }
          yield* cluster.settle
          assert.deepStrictEqual(yield* counter.state, { value: 2 })
          assert.deepStrictEqual((yield* counter.local).generation, { incarnation: 0, age: 1 })
          const m = yield* counter.metrics
          assert.strictEqual(m.mutations, 1)
          assert.strictEqual(m.snapshotsSent, sentBefore)
          assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], {
            incarnation: 0,
            age: 1,
            value: { value: 2 }
          })
          // The actor goes on: the next mutation commits.
          const next = yield* counter.mutate(increment(1))
          assert.deepStrictEqual(next, { generation: { incarnation: 0, age: 2 }, state: { value: 3 } })
        }))
    }
  })

  describe("bounded mailbox", () => {
    it.effect("with mailbox 1, concurrent mutations on an idle actor each complete at once", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1, setup: StateRegistry.register(Counter, { mailbox: 1 }) })
        const [a] = cluster.nodes
        yield* cluster.settle
        const counter = yield* handleOn(cluster, a, Counter)
        const exits = yield* Effect.forEach([1, 2, 3, 4, 5], () => counter.mutate(increment(1)), {
          concurrency: "unbounded"
        })
        // Each found the actor idle and was handled in its own fiber: none waited in the mailbox.
        assert.deepStrictEqual(exits.map((c) => c.generation.age).sort(), [1, 2, 3, 4, 5])
        assert.deepStrictEqual(yield* counter.state, { value: 5 })
        assert.strictEqual((yield* counter.metrics).mutations, 5)
      }))

    it.effect("with mailbox 1, mutations offered while the actor is busy fail with MailboxFull", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 1, setup: StateRegistry.register(Counter, { mailbox: 1 }) })
        const [a] = cluster.nodes
        yield* cluster.settle
        const counter = yield* handleOn(cluster, a, Counter)
        // A paused node's actor takes nothing: the first mutation waits in the mailbox, the rest find it full.
        yield* cluster.network.pause(a.id)
        const offered = yield* Effect.forEach([1, 2, 3, 4, 5], () => Effect.exit(counter.mutate(increment(1))), {
          concurrency: "unbounded"
        }).pipe(Effect.forkChild)
        // Let all five be offered while the node is paused.
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow
        yield* cluster.network.resume(a.id)
        const exits = yield* Fiber.join(offered)
        const ok = exits.filter(Exit.isSuccess)
        assert.strictEqual(ok.length, 1)
        assert.deepStrictEqual(ok[0].value, { generation: { incarnation: 0, age: 1 }, state: { value: 1 } })
        const failures = exits.filter(Exit.isFailure).map((e) => e.cause.reasons)
        assert.strictEqual(failures.length, 4)
        for (const reasons of failures) {
          assert.strictEqual(reasons.length, 1)
          const reason = reasons[0]
          assert.strictEqual(reason._tag, "Fail")
          if (reason._tag === "Fail") {
            assert.instanceOf(reason.error, DStateError.MailboxFull)
            assert.strictEqual(reason.error._tag, "MailboxFull")
            if (reason.error._tag === "MailboxFull") {
              assert.strictEqual(reason.error.actor, "state/counter")
              assert.strictEqual(reason.error.capacity, 1)
            }
          }
        }
        // Rejected mutations left no trace; sequential ones all go through.
        assert.strictEqual((yield* counter.metrics).mutations, 1)
        for (let i = 0; i < 3; i++) yield* counter.mutate(increment(1))
        assert.deepStrictEqual((yield* counter.local).generation, { incarnation: 0, age: 4 })
        assert.deepStrictEqual(yield* counter.state, { value: 4 })
      }))

    it.effect("a full mailbox never drops a leave: no ghost view stays behind", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: StateRegistry.register(Counter, { mailbox: 2 }) })
        const [a, , c] = cluster.nodes
        yield* cluster.settle
        const [frame] = loggedFrames(cluster, { from: c.id, to: a.id, tag: "FullSnapshot" })
        yield* Effect.forEach([1, 2], () => cluster.network.inject(c.id, a.id, frame.frame), {
          concurrency: "unbounded",
          discard: true
        })
        yield* cluster.removeNode(c)
        yield* cluster.settle
        const views = yield* viewsOn(cluster, a, Counter)
        assert.isFalse(views.has(c.id))
        assert.strictEqual(views.size, 2)
      }))

    it.effect("a 3-node cluster with mailbox 2 converges at startup: dropped join frames are made up for", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, setup: StateRegistry.register(Counter, { mailbox: 2 }) })
        yield* cluster.settle
        for (const node of cluster.nodes) {
          assert.deepStrictEqual(
            Object.keys(summary(yield* viewsOn(cluster, node, Counter))),
            cluster.nodes.map((n) => n.id).sort()
          )
        }
      }))

    it.effect("with the default mailbox, a burst of 100 concurrent mutations all commit", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const counter = yield* handleOn(cluster, a, Counter)
        const committed = yield* Effect.forEach(Array.from({ length: 100 }), () => counter.mutate(increment(1)), {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(committed.map((c) => c.generation.age).sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i + 1))
        yield* cluster.settle
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], { incarnation: 0, age: 100, value: { value: 100 } })
      }))

    it.effect("with mailbox 1, an inbound burst is dropped beyond the first frame and counted in mailboxDropped", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter, { mailbox: 1 }) })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        const owner = yield* handleOn(cluster, a, Counter)
        for (let i = 0; i < 3; i++) {
          yield* owner.mutate(increment(1))
          yield* cluster.settle // one push at a time: b's mailbox holds one message
        }
        const views = summary(yield* viewsOn(cluster, b, Counter))
        assert.deepStrictEqual(views[a.id], { incarnation: 0, age: 3, value: { value: 3 } })
        const frames = loggedFrames(cluster, { from: a.id, to: b.id, tag: "FullSnapshot" })
        // Every age 0 to 3 went out once; the startup snapshot may go out again when b resyncs after
        // dropping a message on its full mailbox.
        assert.deepStrictEqual([...new Set(frames.map((f) => (f.message._tag === "FullSnapshot" ? f.message.generation.age : -1)))], [0, 1, 2, 3])
        assert.strictEqual(frames.filter((f) => (f.message._tag === "FullSnapshot" ? f.message.generation.age : -1) !== 0).length, 3)
        const before = yield* metricsOn(cluster, b, Counter)
        // Four copies of the latest snapshot at once: the first is handled (a duplicate), the rest find the mailbox full.
        const latest = frames[frames.length - 1].frame
        yield* Effect.forEach([1, 2, 3, 4], () => cluster.network.inject(a.id, b.id, latest), {
          concurrency: "unbounded",
          discard: true
        })
        yield* cluster.settle
        const after = yield* metricsOn(cluster, b, Counter)
        assert.deepStrictEqual(after, {
          ...before,
          mailboxDropped: before.mailboxDropped + 3,
          // Once the mailbox drained, b asked a for a snapshot to make up for the dropped frames; the
          // answer is one more duplicate.
          snapshotRequestsSent: before.snapshotRequestsSent + 1,
          staleDiscarded: before.staleDiscarded + 2
        })
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter)), views)
      }))
  })

  describe("inbound rejection", () => {
    const setupMutated = Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ nodes: 2, setup: registerCounter })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      yield* Effect.flatMap(handleOn(cluster, a, Counter), (h) => h.mutate(increment(1)))
      yield* cluster.settle
      return { cluster, a, b }
    })

    for (
      const [where, position] of [
        ["the length prefix", 3],
        ["the protocol version", 4],
        ["the checksum", 6],
        ["the first body byte", 9],
        ["the last body byte", -1]
      ] as const
    ) {
      it.effect(`a frame with one flipped byte in ${where} is rejected and counted`, () =>
        Effect.gen(function*() {
          const { a, b, cluster } = yield* setupMutated
          const [captured] = loggedFrames(cluster, { from: a.id, to: b.id, tag: "FullSnapshot" })
            .filter((f) => f.message._tag === "FullSnapshot" && f.message.generation.age === 1)
          const corrupted = captured.frame.slice()
          const i = position < 0 ? corrupted.length + position : position
          corrupted[i] = corrupted[i] ^ 0xff
          const views = yield* viewsOn(cluster, b, Counter)
          const inbound = yield* inboundOn(cluster, b)
          const metrics = yield* metricsOn(cluster, b, Counter)
          yield* cluster.network.inject(a.id, b.id, corrupted)
          yield* cluster.settle
          assert.deepStrictEqual(yield* inboundOn(cluster, b), {
            ...inbound,
            framesReceived: inbound.framesReceived + 1,
            framesRejected: inbound.framesRejected + 1,
            malformed: inbound.malformed + 1
          })
          assert.strictEqual(yield* viewsOn(cluster, b, Counter), views)
          assert.deepStrictEqual(yield* metricsOn(cluster, b, Counter), metrics)
          // The original frame is intact and still accepted as a duplicate.
          yield* cluster.network.inject(a.id, b.id, captured.frame)
          yield* cluster.settle
          assert.strictEqual((yield* metricsOn(cluster, b, Counter)).staleDiscarded, metrics.staleDiscarded + 1)
        }))
    }

    it.effect("a frame that claims another source than its sender is rejected", () =>
      Effect.gen(function*() {
        const { a, b, cluster } = yield* setupMutated
        const [captured] = loggedFrames(cluster, { from: a.id, to: b.id, tag: "FullSnapshot" })
        const inbound = yield* inboundOn(cluster, b)
        const views = yield* viewsOn(cluster, b, Counter)
        yield* cluster.network.inject(NodeId.make("node-99"), b.id, captured.frame)
        yield* cluster.settle
        const after = yield* inboundOn(cluster, b)
        assert.strictEqual(after.framesRejected, inbound.framesRejected + 1)
        assert.strictEqual(after.malformed, inbound.malformed + 1)
        assert.strictEqual(yield* viewsOn(cluster, b, Counter), views)
      }))

    it.effect("a well-framed FullSnapshot with a garbage payload is counted as malformed and leaves the view", () =>
      Effect.gen(function*() {
        const { a, b, cluster } = yield* setupMutated
        const views = yield* viewsOn(cluster, b, Counter)
        const inbound = yield* inboundOn(cluster, b)
        const metrics = yield* metricsOn(cluster, b, Counter)
        const frame = Result.getOrThrow(encodeFrame(
          new SyncMessage.FullSnapshot({
            stateName: "counter",
            source: a.id,
            generation: { incarnation: 0, age: 2 },
            wireVersion: 1,
            createdAt: 0,
            modifiedAt: 0,
            payload: new Uint8Array([0xff, 0xfe, 0xfd, 0xfc, 0x00, 0x01])
          }),
          SyncMessageMax
        ))
        yield* cluster.network.inject(a.id, b.id, frame)
        yield* cluster.settle
        const after = yield* metricsOn(cluster, b, Counter)
        assert.strictEqual(after.malformedReceived, metrics.malformedReceived + 1)
        assert.strictEqual(after.snapshotsReceived, metrics.snapshotsReceived)
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter)), summary(views))
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter))[a.id], { incarnation: 0, age: 1, value: { value: 1 } })
        // The frame itself was sound: the registry accepted and routed it.
        const inboundAfter = yield* inboundOn(cluster, b)
        assert.strictEqual(inboundAfter.framesReceived, inbound.framesReceived + 1)
        assert.strictEqual(inboundAfter.framesRejected, inbound.framesRejected)
      }))

    it.effect("a payload of the wrong shape (a valid encoding of another schema) is malformed too", () =>
      Effect.gen(function*() {
        const { a, b, cluster } = yield* setupMutated
        const views = yield* viewsOn(cluster, b, Counter)
        const metrics = yield* metricsOn(cluster, b, Counter)
        const wrong = Schema.encodeSync(SchemaBinary.toCodec(Schema.Struct({ value: Schema.String })))({ value: "nope" })
        const frame = Result.getOrThrow(encodeFrame(
          new SyncMessage.FullSnapshot({
            stateName: "counter",
            source: a.id,
            generation: { incarnation: 0, age: 2 },
            wireVersion: 1,
            createdAt: 0,
            modifiedAt: 0,
            payload: wrong.slice()
          }),
          SyncMessageMax
        ))
        yield* cluster.network.inject(a.id, b.id, frame)
        yield* cluster.settle
        assert.strictEqual((yield* metricsOn(cluster, b, Counter)).malformedReceived, metrics.malformedReceived + 1)
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, Counter)), summary(views))
      }))

    it.effect("a garbage delta payload is counted as malformed and leaves the view", () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(NodeResource) })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        yield* Effect.flatMap(
          handleOn(cluster, a, NodeResource),
          (h) => h.mutateWithDelta((s) => Fixtures.updateResource(s, { cpuPercent: 12 }))
        )
        yield* cluster.settle
        const views = yield* viewsOn(cluster, b, NodeResource)
        const metrics = yield* metricsOn(cluster, b, NodeResource)
        const frame = Result.getOrThrow(encodeFrame(
          new SyncMessage.DeltaUpdate({
            stateName: "node_resource",
            source: a.id,
            generation: { incarnation: 0, age: 2 },
            wireVersion: 1,
            modifiedAt: 0,
            payload: new Uint8Array([0xff, 0xff, 0xff, 0xff])
          }),
          SyncMessageMax
        ))
        yield* cluster.network.inject(a.id, b.id, frame)
        yield* cluster.settle
        const after = yield* metricsOn(cluster, b, NodeResource)
        assert.strictEqual(after.malformedReceived, metrics.malformedReceived + 1)
        assert.strictEqual(after.deltasReceived, metrics.deltasReceived)
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, NodeResource)), summary(views))
        assert.deepStrictEqual(summary(yield* viewsOn(cluster, b, NodeResource))[a.id], {
          incarnation: 0,
          age: 1,
          value: { cpuPercent: 12, memoryUsedMiB: 0, tags: [] }
        })
      }))

    it.effect("a frame for a state this node does not run is counted as unknownState", () =>
      Effect.gen(function*() {
        const { a, b, cluster } = yield* setupMutated
        const inbound = yield* inboundOn(cluster, b)
        const frame = Result.getOrThrow(encodeFrame(
          new SyncMessage.FullSnapshot({
            stateName: "nobody-runs-this",
            source: a.id,
            generation: { incarnation: 0, age: 1 },
            wireVersion: 1,
            createdAt: 0,
            modifiedAt: 0,
            payload: new Uint8Array(0)
          }),
          SyncMessageMax
        ))
        yield* cluster.network.inject(a.id, b.id, frame)
        yield* cluster.settle
        assert.deepStrictEqual(yield* inboundOn(cluster, b), {
          ...inbound,
          framesReceived: inbound.framesReceived + 1,
          unknownState: inbound.unknownState + 1
        })
      }))
  })
})

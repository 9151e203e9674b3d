/**
 * Three nodes in one process replicate a counter.
 *
 * Each node is an ordinary stack of Effect layers: an actor runtime (here the
 * in-process one, connected by a simulated network), optional persistence,
 * and the state registry on top. Every node registers the same `Counter`
 * definition, owns its own counter, and holds read-only replicas of the
 * others'. Run with `node examples/01_counter.ts` (or `npm start`).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Schema, Stream } from "effect"
import { DistributedState, NodeId, StatePersistence, StateRegistry, SyncStrategy } from "dstate"
import { InProcessRuntime, SimNetwork } from "dstate/testing"

// A simple state: the whole value is public and travels as a snapshot.
const Counter = DistributedState.make({
  name: "counter",
  schema: Schema.Struct({ value: Schema.Int }),
  initial: () => ({ value: 0 }),
  wireVersion: 1,
  storageVersion: 1
})

// One node = runtime + persistence + registry. In production the runtime layer
// would be the TCP one from "dstate/node"; the rest stays the same.
const nodeLayer = (network: SimNetwork.SimNetwork, id: string) =>
  StateRegistry.layer.pipe(
    Layer.provideMerge(InProcessRuntime.layer(network, NodeId.make(id))),
    Layer.provide(StatePersistence.layerMemory)
  )

// What each node does: register the counter and bump its own value `times` times.
const work = (times: number) =>
  Effect.gen(function*() {
    const counter = yield* StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })
    for (let i = 0; i < times; i++) yield* counter.mutate((s) => ({ value: s.value + 1 }))
    return counter
  })

const program = Effect.gen(function*() {
  const network = yield* SimNetwork.make
  const ids = ["alpha", "beta", "gamma"]
  // Build every node first so that they all see each other join.
  const contexts = yield* Effect.forEach(ids, (id) => Layer.build(nodeLayer(network, id)))
  const handles = yield* Effect.forEach(contexts, (context, i) => Effect.provideContext(work(i + 1), context))

  // Wait (event-driven, no polling) until every node sees every counter at its final value.
  const expected = new Map(ids.map((id, i) => [id, i + 1]))
  yield* Effect.forEach(handles, (handle) =>
    handle.changes.pipe(
      Stream.filter((views) =>
        views.size === ids.length && [...views].every(([node, view]) => view.value.value === expected.get(node))
      ),
      Stream.take(1),
      Stream.runDrain
    ), { concurrency: "unbounded", discard: true }).pipe(Effect.timeout("5 seconds"))

  for (const handle of handles) {
    const views = yield* handle.snapshot
    const row = [...views.values()]
      .map((v) => `${v.source}=${v.value.value} (age ${v.generation.age})`)
      .join("  ")
    yield* Effect.log(`${handle.nodeId} sees: ${row}`)
  }
  const total = yield* handles[0].query({ maxStaleness: "1 second" }, (views) =>
    [...views.values()].reduce((sum, v) => sum + v.value.value, 0))
  yield* Effect.log(`cluster-wide total, from alpha's local memory: ${total}`)
})

NodeRuntime.runMain(Effect.scoped(program))

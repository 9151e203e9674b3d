import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Option, Stream } from "effect"
import { type NodeId, StateRegistry, type StateView } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import { handleOn, mutateOn } from "./helpers.ts"

const Counter = Fixtures.Counter
const bump = (s: { readonly value: number }) => ({ value: s.value + 1 })

type View = StateView.StateView<{ readonly value: number }>
const age = (view: View | undefined) => view === undefined ? "none" : `${view.source}@${view.generation.age}`
const event = (d: StateView.ViewDiff<{ readonly value: number }>) =>
  `${d._tag} ${d.owner} ${age(d.previous)} -> ${age(d.current)}`

/** Lets forked consumers catch up (simulated time: a bounded number of yields, no clock). */
const untilLength = (items: ReadonlyArray<unknown>, n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000 && items.length < n; i++) yield* Effect.yieldNow
    assert.strictEqual(items.length, n, `expected ${n} items, got ${items.length}: ${JSON.stringify(items)}`)
  })

/** Consumes `stream` in a fiber of the test, holding each element until `gate` opens (a slow consumer). */
const consume = <A>(stream: Stream.Stream<A>, gate?: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    const items: Array<A> = []
    const held = gate === undefined ? stream : Stream.mapEffect(stream, (a) => Effect.as(Deferred.await(gate), a))
    yield* Stream.runForEach(held, (a) => Effect.sync(() => items.push(a))).pipe(Effect.forkChild)
    return items
  })

/** Two settled nodes with the counter registered, and node a's handle. */
const twoNodes = Effect.gen(function*() {
  const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) })
  const [a, b] = cluster.nodes
  yield* cluster.settle
  const handle = yield* handleOn(cluster, a, Counter)
  return { a, b, cluster, handle }
})

describe("change streams", () => {
  it.effect("changesOf(owner): the owner's view now and after each change; None once it is gone", () =>
    Effect.gen(function*() {
      const { a, b, cluster, handle } = yield* twoNodes
      const seen = yield* consume(Stream.map(handle.changesOf(b.id), (o) => age(Option.getOrUndefined(o))))
      yield* untilLength(seen, 1)
      for (let i = 0; i < 3; i++) {
        yield* mutateOn(cluster, b, Counter, bump)
        yield* cluster.settle
      }
      // a's own changes are not b's: nothing is emitted for them.
      yield* mutateOn(cluster, a, Counter, bump)
      yield* cluster.settle
      yield* cluster.removeNode(b)
      yield* cluster.settle
      yield* untilLength(seen, 5)
      assert.deepStrictEqual(seen, [`${b.id}@0`, `${b.id}@1`, `${b.id}@2`, `${b.id}@3`, "none"])
    }))

  it.effect("changesOf keeps only the latest value for a slow consumer", () =>
    Effect.gen(function*() {
      const { b, cluster, handle } = yield* twoNodes
      const gate = yield* Deferred.make<void>()
      const seen = yield* consume(Stream.map(handle.changesOf(b.id), (o) => age(Option.getOrUndefined(o))), gate)
      for (let i = 0; i < 5; i++) {
        yield* mutateOn(cluster, b, Counter, bump)
        yield* cluster.settle
      }
      yield* Deferred.succeed(gate, undefined)
      yield* untilLength(seen, 2)
      // The first view was taken before the gate; of the five changes, only the newest waited.
      assert.deepStrictEqual(seen, [`${b.id}@0`, `${b.id}@5`])
    }))

  it.effect("diffs: Added for every view held, then Updated / Added / Removed in the order the map changed", () =>
    Effect.gen(function*() {
      const { a, b, cluster, handle } = yield* twoNodes
      const seen = yield* consume(Stream.map(handle.diffs, event))
      yield* untilLength(seen, 2)
      yield* mutateOn(cluster, b, Counter, bump)
      yield* cluster.settle
      yield* untilLength(seen, 3)
      const c = yield* cluster.addNode()
      yield* cluster.settle
      yield* untilLength(seen, 4)
      yield* mutateOn(cluster, a, Counter, bump)
      yield* untilLength(seen, 5)
      yield* cluster.removeNode(c)
      yield* cluster.settle
      yield* untilLength(seen, 6)
      const id = (n: { readonly id: NodeId.NodeId }) => n.id
      assert.deepStrictEqual(seen, [
        `Added ${id(a)} none -> ${id(a)}@0`,
        `Added ${id(b)} none -> ${id(b)}@0`,
        `Updated ${id(b)} ${id(b)}@0 -> ${id(b)}@1`,
        `Added ${id(c)} none -> ${id(c)}@0`,
        `Updated ${id(a)} ${id(a)}@0 -> ${id(a)}@1`,
        `Removed ${id(c)} ${id(c)}@0 -> none`
      ])
    }))

  it.effect("diffs conflates for a slow consumer: one event per owner from what it saw to what is held", () =>
    Effect.gen(function*() {
      const { a, b, cluster, handle } = yield* twoNodes
      const gate = yield* Deferred.make<void>()
      const seen = yield* consume(Stream.map(handle.diffs, event), gate)
      for (let i = 0; i < 3; i++) {
        yield* mutateOn(cluster, b, Counter, bump)
        yield* cluster.settle
      }
      // A node that joins and leaves while the consumer is busy cancels out.
      const c = yield* cluster.addNode()
      yield* cluster.settle
      yield* cluster.removeNode(c)
      yield* cluster.settle
      yield* mutateOn(cluster, a, Counter, bump)
      yield* Deferred.succeed(gate, undefined)
      yield* untilLength(seen, 3)
      // a's Added was taken before the gate; b's Added was still pending and moved on to age 3; c's Added and
      // Removed cancelled out; a's change came after.
      assert.deepStrictEqual(seen, [
        `Added ${a.id} none -> ${a.id}@0`,
        `Added ${b.id} none -> ${b.id}@3`,
        `Updated ${a.id} ${a.id}@0 -> ${a.id}@1`
      ])
      // Nothing else was pending.
      for (let i = 0; i < 100; i++) yield* Effect.yieldNow
      assert.strictEqual(seen.length, 3)
    }))
})

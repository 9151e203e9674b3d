import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { StateRegistry, SyncStrategy } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"

describe("smoke", () => {
  it.effect("a mutation reaches every peer", () =>
    Effect.gen(function*() {
      const setup = StateRegistry.register(Fixtures.Counter, { strategy: SyncStrategy.activePush() })
      const cluster = yield* TestCluster.make({ nodes: 3, setup })
      const [a, b, c] = cluster.nodes
      yield* cluster.settle
      yield* cluster.run(a, Effect.flatMap(StateRegistry.lookup(Fixtures.Counter), (h) => h.mutate((s) => ({ value: s.value + 5 }))))
      yield* cluster.settle
      for (const n of [b, c]) {
        const views = yield* cluster.run(n, Effect.flatMap(StateRegistry.lookup(Fixtures.Counter), (h) => h.snapshot))
        assert.strictEqual(views.size, 3)
        assert.deepStrictEqual(views.get(a.id)?.value, { value: 5 })
        assert.deepStrictEqual(views.get(a.id)?.generation.age, 1)
      }
    }))
})

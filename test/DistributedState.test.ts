import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { DistributedState, SyncUrgency } from "dstate"
import { Fixtures } from "dstate/testing"
import { nodeResource } from "./support/NodeResource.ts"

const CounterSchema = Schema.Struct({ value: Schema.Int })

describe("DistributedState", () => {
  describe("make", () => {
    it("defaults wireVersion and storageVersion to 1", () => {
      const def = DistributedState.make({ name: "c", schema: CounterSchema, initial: () => ({ value: 0 }) })
      assert.strictEqual(def._tag, "Simple")
      assert.strictEqual(def.name, "c")
      assert.strictEqual(def.wireVersion, 1)
      assert.strictEqual(def.storageVersion, 1)
      assert.strictEqual(def.state, CounterSchema)
      assert.strictEqual(def.view, CounterSchema)
      assert.isUndefined(def.migrateState)
      assert.deepStrictEqual(def.initial(), { value: 0 })
    })

    it("keeps explicit versions and migrateState", () => {
      const migrateState = (_encoded: unknown, _from: number) => Effect.succeed({ value: 9 })
      const def = DistributedState.make({
        name: "c",
        schema: CounterSchema,
        initial: () => ({ value: 0 }),
        wireVersion: 3,
        storageVersion: 4,
        migrateState
      })
      assert.strictEqual(def.wireVersion, 3)
      assert.strictEqual(def.storageVersion, 4)
      assert.strictEqual(def.migrateState, migrateState)
    })

    it("the Counter fixture", () => {
      assert.strictEqual(Fixtures.Counter._tag, "Simple")
      assert.strictEqual(Fixtures.Counter.name, "counter")
      assert.strictEqual(Fixtures.Counter.wireVersion, 1)
      assert.strictEqual(Fixtures.Counter.storageVersion, 1)
      assert.deepStrictEqual(Fixtures.Counter.initial(), { value: 0 })
    })

    it("projectView of a simple state is the state itself", () => {
      const state = { value: 12 }
      assert.strictEqual(DistributedState.projectView(Fixtures.Counter, state), state)
    })
  })

  describe("makeDelta", () => {
    it("defaults wireVersion 1, storageVersion 1, no wire decoders, no urgency, no migration", () => {
      const def = DistributedState.makeDelta({ name: "r", ...nodeResource })
      assert.strictEqual(def._tag, "Delta")
      assert.strictEqual(def.name, "r")
      assert.strictEqual(def.wireVersion, 1)
      assert.strictEqual(def.storageVersion, 1)
      assert.deepStrictEqual(def.wireDecoders, {})
      assert.isUndefined(def.syncUrgency)
      assert.isUndefined(def.migrateState)
      assert.strictEqual(def.state, Fixtures.NodeResourceState)
      assert.strictEqual(def.view, Fixtures.NodeResourceView)
      assert.strictEqual(def.delta, Fixtures.NodeResourceDelta)
    })

    it("keeps explicit versions, wire decoders and urgency", () => {
      const wireDecoders = { 1: { view: Fixtures.NodeResourceView } }
      const syncUrgency = () => SyncUrgency.Immediate
      const def = DistributedState.makeDelta({
        name: "r",
        ...nodeResource,
        wireVersion: 2,
        storageVersion: 5,
        wireDecoders,
        syncUrgency
      })
      assert.strictEqual(def.wireVersion, 2)
      assert.strictEqual(def.storageVersion, 5)
      assert.strictEqual(def.wireDecoders, wireDecoders)
      assert.strictEqual(def.syncUrgency, syncUrgency)
    })

    it("projectView of a delta-aware state drops the private fields", () => {
      const state: Fixtures.NodeResourceState = {
        cpuPercent: 10,
        memoryUsedMiB: 20,
        tags: ["x"],
        samples: 3,
        lastRawCpuTicks: 444
      }
      assert.deepStrictEqual(DistributedState.projectView(Fixtures.NodeResource, state), {
        cpuPercent: 10,
        memoryUsedMiB: 20,
        tags: ["x"]
      })
    })

    it("the NodeResource fixture's urgency: a CPU move of 20 points or more is Immediate", () => {
      const urgency = Fixtures.NodeResource.syncUrgency
      if (urgency === undefined) return assert.fail("NodeResource has a syncUrgency")
      const view = (cpuPercent: number): Fixtures.NodeResourceView => ({ cpuPercent, memoryUsedMiB: 0, tags: [] })
      assert.deepStrictEqual(urgency(view(10), view(30), { cpuPercent: 30 }), SyncUrgency.Immediate)
      assert.deepStrictEqual(urgency(view(30), view(10), { cpuPercent: 10 }), SyncUrgency.Immediate)
      assert.deepStrictEqual(urgency(view(10), view(29.5), { cpuPercent: 29.5 }), SyncUrgency.Default)
      assert.deepStrictEqual(urgency(view(10), view(10), {}), SyncUrgency.Default)
    })
  })

  describe("name validation", () => {
    const makeNamed = (name: string) => () =>
      DistributedState.make({ name, schema: CounterSchema, initial: () => ({ value: 0 }) })
    const makeDeltaNamed = (name: string) => () => DistributedState.makeDelta({ name, ...nodeResource })

    // The constructors build any definition; `StateRegistry.register` refuses bad names with InvalidOptions
    // (test/StateRegistry.test.ts).
    it("the constructors do not throw on a bad name: the definition keeps it", () => {
      assert.strictEqual(makeNamed("")().name, "")
      assert.strictEqual(makeDeltaNamed("")().name, "")
      assert.strictEqual(makeNamed("n".repeat(257))().name, "n".repeat(257))
    })

    it("names of 1 and 256 characters are accepted", () => {
      assert.strictEqual(makeNamed("a")().name, "a")
      assert.strictEqual(makeNamed("n".repeat(256))().name, "n".repeat(256))
      assert.strictEqual(makeDeltaNamed("n".repeat(256))().name, "n".repeat(256))
    })

    it("a delta state with change but no applyChange is still a value (register refuses it)", () => {
      const def = DistributedState.makeDelta({ name: "half", ...nodeResource, change: Schema.Struct({ cpuPercent: Schema.Number }) })
      assert.strictEqual(def._tag, "Delta")
      assert.isDefined(def.change)
      assert.isUndefined(def.applyChange)
    })
  })

  describe("delta law (NodeResource)", () => {
    const start: Fixtures.NodeResourceState = {
      cpuPercent: 12.5,
      memoryUsedMiB: 1024,
      tags: ["eu-west"],
      samples: 7,
      lastRawCpuTicks: 123456
    }

    const changes: ReadonlyArray<readonly [string, Fixtures.NodeResourceChange, Fixtures.NodeResourceView]> = [
      ["cpu only", { cpuPercent: 80.25 }, { cpuPercent: 80.25, memoryUsedMiB: 1024, tags: ["eu-west"] }],
      ["memory only", { memoryUsedMiB: 4096 }, { cpuPercent: 12.5, memoryUsedMiB: 4096, tags: ["eu-west"] }],
      ["tags only", { tags: ["gpu", "eu-west"] }, { cpuPercent: 12.5, memoryUsedMiB: 1024, tags: ["gpu", "eu-west"] }],
      ["tags cleared", { tags: [] }, { cpuPercent: 12.5, memoryUsedMiB: 1024, tags: [] }],
      ["cpu to zero", { cpuPercent: 0 }, { cpuPercent: 0, memoryUsedMiB: 1024, tags: ["eu-west"] }],
      ["every field", { cpuPercent: 1, memoryUsedMiB: 2, tags: ["a"] }, { cpuPercent: 1, memoryUsedMiB: 2, tags: ["a"] }],
      ["nothing", {}, { cpuPercent: 12.5, memoryUsedMiB: 1024, tags: ["eu-west"] }]
    ]

    for (const [name, change, expected] of changes) {
      it(name, () => {
        const { state: after } = Fixtures.updateResource(start, change)
        assert.strictEqual(after.samples, 8)
        assert.strictEqual(after.lastRawCpuTicks, 123456)
        const { applied, projected } = Fixtures.deltaRoundTrip(Fixtures.NodeResource, start, after, change)
        assert.deepStrictEqual(projected, expected)
        assert.deepStrictEqual(applied, expected)
      })
    }

    it("a sequence of changes applied as deltas reaches the owner's view", () => {
      let state = Fixtures.NodeResource.initial()
      let replica = Fixtures.NodeResource.projectView(state)
      for (const [, change] of changes) {
        const { state: after } = Fixtures.updateResource(state, change)
        const { applied, projected } = Fixtures.deltaRoundTrip(Fixtures.NodeResource, state, after, change)
        assert.deepStrictEqual(applied, projected)
        replica = Fixtures.NodeResource.applyDelta(replica, Fixtures.NodeResource.projectDelta(change))
        assert.deepStrictEqual(replica, projected)
        state = after
      }
      assert.strictEqual(state.samples, changes.length)
      assert.deepStrictEqual(replica, { cpuPercent: 1, memoryUsedMiB: 2, tags: ["a"] })
    })

    it("applyDelta does not mutate the view it is given", () => {
      const view: Fixtures.NodeResourceView = { cpuPercent: 5, memoryUsedMiB: 6, tags: ["t"] }
      const next = Fixtures.NodeResource.applyDelta(view, { cpuPercent: 50 })
      assert.deepStrictEqual(view, { cpuPercent: 5, memoryUsedMiB: 6, tags: ["t"] })
      assert.deepStrictEqual(next, { cpuPercent: 50, memoryUsedMiB: 6, tags: ["t"] })
    })

    it("deltaRoundTrip exposes a broken law", () => {
      const Broken = DistributedState.makeDelta({
        name: "broken",
        ...nodeResource,
        // forgets the memory figure
        projectDelta: (change: Fixtures.NodeResourceChange): Fixtures.NodeResourceDelta =>
          change.cpuPercent === undefined ? {} : { cpuPercent: change.cpuPercent }
      })
      const change: Fixtures.NodeResourceChange = { memoryUsedMiB: 1 }
      const { state: after } = Fixtures.updateResource(start, change)
      const { applied, projected } = Fixtures.deltaRoundTrip(Broken, start, after, change)
      assert.deepStrictEqual(applied, { cpuPercent: 12.5, memoryUsedMiB: 1024, tags: ["eu-west"] })
      assert.deepStrictEqual(projected, { cpuPercent: 12.5, memoryUsedMiB: 1, tags: ["eu-west"] })
      assert.notDeepEqual(applied, projected)
    })
  })
})

/**
 * The fault matrix with the simulated failure detector on: members go
 * unreachable, come back, or are declared down and re-join, while every
 * safety, durability and liveness check of the simulator holds. Faults that
 * silence nodes, every strategy shape, 3 and 5 nodes, one seed per cell from
 * the CI root. Besides passing, the detector must have done what the fault
 * calls for: `flap` makes members unreachable and reachable again; a
 * partition's downs of live nodes all re-join after the heal. Then the
 * Lifeguard measurement on a few seeds: without awareness the overloaded
 * node declares healthy peers down, with it never.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Simulation } from "dstate/testing"
import seeds from "./simulation-seeds.json" with { type: "json" }

const faults: ReadonlyArray<Simulation.Fault> = [
  "partition",
  "asymmetricPartition",
  "crash",
  "crashPersistent",
  "pause",
  "clockSkew",
  "churn",
  "slowPeer",
  "mix",
  "flap"
]

describe("Simulation with the failure detector", () => {
  for (const fault of faults) {
    it.effect(`${fault}: every shape on 3 and 5 nodes`, () =>
      Effect.gen(function*() {
        for (const strategy of Simulation.strategyShapes) {
          for (const nodes of [3, 5]) {
            const seed = Simulation.deriveSeed(seeds.ciRoot, `ci/detector/${fault}/${strategy}/${nodes}`)
            const result = yield* Simulation.run({ strategy, nodes, fault, detector: true }, seed)
            const why = Simulation.describe(result)
            assert.isTrue(result.ok, why)
            assert.isTrue(result.liveness.converged, why)
            const stats = result.detector!
            switch (fault) {
              case "flap":
                assert.isAbove(stats.unreachable, 0, why)
                assert.isAbove(stats.reachable, 0, why)
                break
              case "partition":
              case "asymmetricPartition":
                // Nobody crashed: every member declared down was alive, and re-joined after the heal.
                assert.strictEqual(stats.rejoined, stats.down, why)
                break
            }
            // Nothing in these faults overloads a node's own detector.
            assert.strictEqual(stats.falseDown, 0, why)
          }
        }
      }), { timeout: 120_000 })
  }

  it.effect("a partition longer than detectAfter + downAfter declares members down (and they re-join)", () =>
    Effect.gen(function*() {
      let downs = 0
      for (const strategy of Simulation.strategyShapes) {
        const seed = Simulation.deriveSeed(seeds.ciRoot, `ci/detector/partition/${strategy}/5`)
        downs += (yield* Simulation.run({ strategy, nodes: 5, fault: "partition", detector: true }, seed)).detector!.down
      }
      assert.isAbove(downs, 0)
    }), { timeout: 60_000 })

  it.effect("the same seed gives the same history with the detector", () =>
    Effect.gen(function*() {
      const seed = Simulation.deriveSeed(seeds.ciRoot, "ci/detector/replay")
      const first = yield* Simulation.run({ strategy: "feed+periodic", nodes: 5, fault: "mix", detector: true }, seed)
      const second = yield* Simulation.run({ strategy: "feed+periodic", nodes: 5, fault: "mix", detector: true }, seed)
      assert.strictEqual(second.historyHash, first.historyHash)
      assert.deepStrictEqual(second.detector, first.detector)
    }), { timeout: 60_000 })

  it.effect("Lifeguard: false downs of an overloaded node, without and with local health awareness", () =>
    Effect.gen(function*() {
      for (let k = 0; k < 3; k++) {
        const seed = Simulation.deriveSeed(seeds.ciRoot, `ci/lifeguard/${k}`)
        const off = yield* Simulation.lifeguard({ localHealth: false, durationMillis: 10 * 60_000 }, seed)
        const on = yield* Simulation.lifeguard({ localHealth: true, durationMillis: 10 * 60_000 }, seed)
        // The same overload schedule either way.
        assert.strictEqual(on.overloadedMillis, off.overloadedMillis)
        assert.strictEqual(on.stats.falseDown, 0)
        assert.isAbove(off.stats.falseDown, 0)
        // A real crash among healthy nodes is declared down as fast either way: detectAfter + downAfter.
        assert.strictEqual(off.crashDetectedMillis, 35_000)
        assert.strictEqual(on.crashDetectedMillis, 35_000)
      }
    }), { timeout: 60_000 })
})

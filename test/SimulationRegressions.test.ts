/**
 * Seeds that once found a problem, replayed on every run (test/simulation-seeds.json).
 * Each must now pass every check; a failure prints the seed and what the run found.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Simulation } from "dstate/testing"
import seeds from "./simulation-seeds.json" with { type: "json" }

describe("Simulation regression seeds", () => {
  for (const r of seeds.regressions) {
    const scenario: Simulation.Scenario = {
      strategy: r.strategy as Simulation.StrategyShape,
      nodes: r.nodes,
      fault: r.fault as Simulation.Fault,
      mutations: r.mutations
    }
    it.effect(`${r.strategy}/${r.nodes}/${r.fault} seed ${r.seed}: ${r.finding}`, () =>
      Effect.gen(function*() {
        assert.include(Simulation.faults, scenario.fault)
        assert.include(Simulation.strategyShapes, scenario.strategy)
        const result = yield* Simulation.run(scenario, r.seed)
        assert.isTrue(result.ok, Simulation.describe(result))
        assert.deepStrictEqual([...result.safety, ...result.durability], [], Simulation.describe(result))
        assert.isTrue(result.liveness.converged, Simulation.describe(result))
        assert.isTrue(result.liveness.convergenceMillis! <= result.liveness.boundMillis!, Simulation.describe(result))
      }))
  }
})

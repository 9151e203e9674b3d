/**
 * The simulator at scale: 100-node cells of the scale faults (one strategy
 * shape each, rotating through the shapes) and one 500-node cell, each with
 * seeds derived from the CI root seed, a checker watching a seeded sample of
 * `Simulation.scaleObserved` nodes, and the same rules as the small matrix:
 * no safety or durability violation, and convergence within the shape's
 * bound on every watched node. `npm run sim -- --scale` runs every shape.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Simulation } from "dstate/testing"
import seeds from "./simulation-seeds.json" with { type: "json" }

const cells: ReadonlyArray<{ readonly nodes: number; readonly fault: Simulation.Fault; readonly strategy: Simulation.StrategyShape }> = [
  { nodes: 100, fault: "none", strategy: "push" },
  { nodes: 100, fault: "loss", strategy: "feed+periodic" },
  { nodes: 100, fault: "partition", strategy: "feed" },
  { nodes: 100, fault: "churn", strategy: "push+periodic" },
  { nodes: 100, fault: "crash", strategy: "periodic" },
  { nodes: 500, fault: "crash", strategy: "feed+periodic" }
]

describe("Simulation at scale", () => {
  it("covers every scale fault at 100 nodes and the largest size once", () => {
    assert.deepStrictEqual(
      [...new Set(cells.filter((c) => c.nodes === 100).map((c) => c.fault))].sort(),
      [...Simulation.scaleFaults].sort()
    )
    assert.deepStrictEqual([...new Set(cells.map((c) => c.nodes))].sort((a, b) => a - b), [...Simulation.scaleSizes])
  })

  for (const { fault, nodes, strategy } of cells) {
    it.effect(`${strategy} × ${nodes} nodes, ${fault}`, () =>
      Effect.gen(function*() {
        const seed = Simulation.deriveSeed(seeds.ciRoot, `ci/scale/${fault}/${strategy}/${nodes}`)
        const result = yield* Simulation.run({ strategy, nodes, fault, observed: Simulation.scaleObserved }, seed)
        const why = Simulation.describe(result)
        assert.isTrue(result.ok, why)
        assert.deepStrictEqual(result.safety, [], why)
        assert.isTrue(result.liveness.converged, why)
        assert.isAbove(result.mutations.acknowledged, 0, why)
      }), { timeout: 300_000 })
  }
})

/**
 * The fault matrix as tests: every fault × strategy shape × cluster size,
 * each cell run with fresh seeds derived from a fixed CI root seed
 * (test/simulation-seeds.json), so CI is deterministic and every failure
 * names its seed. Besides passing every check, a few faults assert their
 * exact outcome: corrupted frames each rejected, hostile frames rejected six
 * per node, pure active push not converging after losing its last write.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Simulation } from "dstate/testing"
import seeds from "./simulation-seeds.json" with { type: "json" }

const fresh = seeds.freshSeedsPerCell as Record<string, number>

/** The seeds of one cell: derived from the CI root seed and the cell. */
export const cellSeeds = (fault: Simulation.Fault, strategy: Simulation.StrategyShape, nodes: number): Array<number> =>
  Array.from(
    { length: fresh[String(nodes)] ?? 1 },
    (_, k) => Simulation.deriveSeed(seeds.ciRoot, `ci/${fault}/${strategy}/${nodes}/${k}`)
  )

const checkCell = (result: Simulation.RunResult) => {
  const why = Simulation.describe(result)
  assert.isTrue(result.ok, why)
  const { fault, strategy, nodes } = result.scenario
  switch (fault) {
    case "corruption":
      assert.strictEqual(result.frames.corruptedRejected, result.frames.corruptedDelivered, why)
      break
    case "hostile":
      assert.strictEqual(result.frames.hostileInjected, 6 * nodes, why)
      assert.strictEqual(result.frames.hostileRejected, 6 * nodes, why)
      break
    case "lostLastWrite":
      assert.strictEqual(result.liveness.converged, strategy !== "push" || nodes === 1, why)
      break
    default:
      assert.isTrue(result.liveness.converged, why)
  }
}

/** Registers the cells of `faults`. */
export const matrix = (faults: ReadonlyArray<Simulation.Fault>) => {
  for (const fault of faults) {
    describe(`fault: ${fault}`, () => {
      for (const strategy of Simulation.strategyShapes) {
        for (const nodes of Simulation.clusterSizes) {
          it.effect(`${strategy} × ${nodes} node${nodes === 1 ? "" : "s"}`, () =>
            Effect.gen(function*() {
              for (const seed of cellSeeds(fault, strategy, nodes)) {
                checkCell(yield* Simulation.run({ strategy, nodes, fault }, seed))
              }
            }), { timeout: 60_000 })
        }
      }
    })
  }
}

/** The fault matrix, first half: link faults and partitions (see SimulationMatrix.ts). */
import { describe } from "@effect/vitest"
import { matrix } from "./SimulationMatrix.ts"

describe("Simulation matrix (network)", () => {
  matrix(["none", "loss", "duplication", "delay", "partition", "asymmetricPartition", "clog", "corruption", "hostile", "lostLastWrite"])
})

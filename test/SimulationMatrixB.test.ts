/** The fault matrix, second half: node, persistence and membership faults (see SimulationMatrix.ts). */
import { describe } from "@effect/vitest"
import { matrix } from "./SimulationMatrix.ts"

describe("Simulation matrix (nodes)", () => {
  matrix(["crash", "crashPersistent", "persistence", "pause", "clockSkew", "versionSkew", "churn", "slowPeer", "mix", "flap"])
})

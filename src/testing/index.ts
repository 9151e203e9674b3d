/**
 * The public test kit: N nodes in one process on simulated time.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Fixtures from "./Fixtures.ts"
/** @since 0.1.0 */
export * as InMemoryPersistence from "./InMemoryPersistence.ts"
/** @since 0.1.0 */
export * as InProcessRuntime from "./InProcessRuntime.ts"
/** @since 0.1.0 */
export * as Prng from "./Prng.ts"
/** @since 0.2.0 */
export * as SimDetector from "./SimDetector.ts"
/** @since 0.1.0 */
export * as SimNetwork from "./SimNetwork.ts"
/** @since 0.1.0 */
export * as Simulation from "./Simulation.ts"
/** @since 0.1.0 */
export * as TestCluster from "./TestCluster.ts"

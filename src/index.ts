/**
 * dstate: replicated application state for Effect clusters.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ActorRuntime from "./ActorRuntime.ts"
/** @since 0.1.0 */
export * as ClusterEvents from "./ClusterEvents.ts"
/** @since 0.1.0 */
export * as Diagnostics from "./Diagnostics.ts"
export * as Metrics from "./Metrics.ts"
/** @since 0.1.0 */
export * as DistributedState from "./DistributedState.ts"
/** @since 0.1.0 */
export * as DStateError from "./DStateError.ts"
/** @since 0.1.0 */
export * as Generation from "./Generation.ts"
/** @since 0.1.0 */
export * as KeyValuePersistence from "./KeyValuePersistence.ts"
/** @since 0.1.0 */
export * as NodeId from "./NodeId.ts"
/** @since 0.1.0 */
export * as StatePersistence from "./StatePersistence.ts"
/** @since 0.1.0 */
export * as StateHandle from "./StateHandle.ts"
/** @since 0.1.0 */
export * as StateRegistry from "./StateRegistry.ts"
/** @since 0.1.0 */
export * as StateView from "./StateView.ts"
/** @since 0.1.0 */
export * as SyncMessage from "./SyncMessage.ts"
/** @since 0.1.0 */
export * as SyncStrategy from "./SyncStrategy.ts"
/** @since 0.1.0 */
export * as SyncUrgency from "./SyncUrgency.ts"

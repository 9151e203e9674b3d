/**
 * dstate on an Effect cluster: the runtime whose nodes are the cluster's
 * runners, with membership from the cluster's `RunnerStorage`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ClusterRuntime from "./ClusterRuntime.ts"

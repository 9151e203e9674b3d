/**
 * dstate over HTTP for operations: liveness and readiness probes, the
 * Prometheus text of every dstate metric, and a status report whose shape is
 * a Schema (`HttpOperations`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as HttpOperations from "./HttpOperations.ts"
/** @since 0.1.0 */
export * as StatusReport from "./StatusReport.ts"

/**
 * Node-only parts of dstate: the TCP runtime (`ActorRuntime` and
 * `ClusterEvents` over authenticated TCP or TLS connections) and durable
 * `StatePersistence` stores on the local disk and on PostgreSQL.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as FilePersistence from "./FilePersistence.ts"
/** @since 0.1.0 */
export * as PostgresPersistence from "./PostgresPersistence.ts"
/** @since 0.1.0 */
export * as TcpRuntime from "./TcpRuntime.ts"

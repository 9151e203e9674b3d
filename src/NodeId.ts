/**
 * Node identities. Every node of a cluster has one `NodeId`, chosen by its
 * runtime; views, messages and membership events are keyed by it.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The identity of one node of a cluster: a non-empty string, branded so that
 * it cannot be confused with state names or other strings.
 *
 * @category models
 * @since 0.1.0
 */
export const NodeId = Schema.NonEmptyString.pipe(Schema.brand("dstate/NodeId"))

/**
 * @category models
 * @since 0.1.0
 */
export type NodeId = typeof NodeId.Type

/**
 * Builds a `NodeId` from a string, throwing on an empty string (a defect: node
 * ids come from configuration, not from the network).
 *
 * @example
 * ```ts
 * import { NodeId } from "dstate"
 * const a = NodeId.make("node-a")
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (id: string): NodeId => NodeId.make(id)

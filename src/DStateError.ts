/**
 * The typed errors of dstate, all in this module: registry and query errors,
 * frame errors, persistence and migration errors, actor and request errors,
 * and the errors of building a node (`InvalidOptions`, `ListenFailed`,
 * `NotARunner`). Each carries the context needed to act on it (state name,
 * node, option, sizes, limits, versions) and, when it wraps another failure
 * (a store's error, a schema error, a socket error, a defect), that failure as
 * `cause`. All are `Schema.TaggedError`s, so they can be encoded like any
 * message. `TcpRuntime`, `ActorRuntime` and `ClusterRuntime` re-export the
 * ones they fail with under the names they always had.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { NodeId } from "./NodeId.ts"

/**
 * `StateRegistry.lookup` found no state registered under that name on this node.
 *
 * @category errors
 * @since 0.1.0
 */
export class StateNotRegistered extends Schema.TaggedError<StateNotRegistered>()("StateNotRegistered", {
  stateName: Schema.String
}) {
  override get message() {
    return `state "${this.stateName}" is not registered on this node`
  }
}

/**
 * A state with this name is already registered on this node.
 *
 * @category errors
 * @since 0.1.0
 */
export class DuplicateStateName extends Schema.TaggedError<DuplicateStateName>()("DuplicateStateName", {
  stateName: Schema.String
}) {
  override get message() {
    return `state "${this.stateName}" is already registered on this node`
  }
}

/**
 * A query needed a view fresher than the one held for `node`, and no fresh
 * view could be obtained (the pull timed out, failed, or pulling is disabled).
 * `lastSyncedAt` is the monotonic time in milliseconds of the last successful
 * sync from that peer.
 *
 * @category errors
 * @since 0.1.0
 */
export class StalePeer extends Schema.TaggedError<StalePeer>()("StalePeer", {
  stateName: Schema.String,
  node: NodeId,
  lastSyncedAt: Schema.Finite
}) {
  override get message() {
    return `view of "${this.stateName}" from ${this.node} is stale (last synced at ${this.lastSyncedAt} ms)`
  }
}

/**
 * Saving or loading the owner's state failed. A failed save leaves the state
 * unchanged and publishes nothing. `cause` is the failure underneath when
 * there is one: the store's own error (`PlatformError`, `SqlError`,
 * `KeyValueStore` error) or the schema error of a record that does not encode
 * or decode.
 *
 * @category errors
 * @since 0.1.0
 */
export class PersistenceFailed extends Schema.TaggedError<PersistenceFailed>()("PersistenceFailed", {
  stateName: Schema.String,
  operation: Schema.Literals(["load", "save"]),
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return `${this.operation} of state "${this.stateName}" failed: ${this.reason}`
  }
}

/**
 * An inbound frame or payload could not be decoded: bad checksum, unknown
 * protocol version, truncated bytes, or a payload that does not match the
 * state's schema. The frame is dropped and counted; nothing changes.
 *
 * @category errors
 * @since 0.1.0
 */
export class MalformedMessage extends Schema.TaggedError<MalformedMessage>()("MalformedMessage", {
  node: Schema.optionalKey(NodeId),
  stateName: Schema.optionalKey(Schema.String),
  reason: Schema.String,
  /** The schema error when a payload did not decode or a value did not encode. */
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return `malformed message${this.node === undefined ? "" : ` from ${this.node}`}${
      this.stateName === undefined ? "" : ` for "${this.stateName}"`
    }: ${this.reason}`
  }
}

/**
 * A frame is longer than the configured limit. It is rejected before its body
 * is allocated.
 *
 * @category errors
 * @since 0.1.0
 */
export class MessageTooLarge extends Schema.TaggedError<MessageTooLarge>()("MessageTooLarge", {
  node: Schema.optionalKey(NodeId),
  size: Schema.Number,
  limit: Schema.Number
}) {
  override get message() {
    return `frame of ${this.size} bytes exceeds the limit of ${this.limit} bytes`
  }
}

/**
 * A peer sent a view or delta in a wire version this node cannot decode.
 *
 * @category errors
 * @since 0.1.0
 */
export class UnsupportedWireVersion extends Schema.TaggedError<UnsupportedWireVersion>()("UnsupportedWireVersion", {
  stateName: Schema.String,
  node: NodeId,
  wireVersion: Schema.Number,
  supported: Schema.Array(Schema.Number)
}) {
  override get message() {
    return `"${this.stateName}" from ${this.node}: wire version ${this.wireVersion} is not one of ${
      this.supported.join(", ")
    }`
  }
}

/**
 * A persisted state could not be migrated from its storage version. When
 * `migrateState` died, the defect is the `cause`.
 *
 * @category errors
 * @since 0.1.0
 */
export class MigrationFailed extends Schema.TaggedError<MigrationFailed>()("MigrationFailed", {
  stateName: Schema.String,
  fromVersion: Schema.Number,
  toVersion: Schema.Number,
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return `migration of "${this.stateName}" from storage version ${this.fromVersion} to ${this.toVersion} failed: ${this.reason}`
  }
}

/**
 * A bounded actor mailbox is full; the message was not enqueued.
 *
 * @category errors
 * @since 0.1.0
 */
export class MailboxFull extends Schema.TaggedError<MailboxFull>()("MailboxFull", {
  actor: Schema.String,
  capacity: Schema.Number
}) {
  override get message() {
    return `mailbox of ${this.actor} is full (capacity ${this.capacity})`
  }
}

/**
 * The actor stopped (its restart schedule ended after repeated defects); the
 * message was not enqueued.
 *
 * @category errors
 * @since 0.1.0
 */
export class ActorStopped extends Schema.TaggedError<ActorStopped>()("ActorStopped", {
  actor: Schema.String
}) {
  override get message() {
    return `actor ${this.actor} has stopped`
  }
}

/**
 * A request to another node got no reply within its timeout.
 *
 * @category errors
 * @since 0.1.0
 */
export class RequestTimeout extends Schema.TaggedError<RequestTimeout>()("RequestTimeout", {
  node: NodeId,
  timeoutMillis: Schema.Number
}) {
  override get message() {
    return `no reply from ${this.node} within ${this.timeoutMillis} ms`
  }
}

/**
 * The target node is not a member of the cluster (unknown, departed, or not
 * reachable by this runtime).
 *
 * @category errors
 * @since 0.1.0
 */
export class NodeUnreachable extends Schema.TaggedError<NodeUnreachable>()("NodeUnreachable", {
  node: NodeId
}) {
  override get message() {
    return `node ${this.node} is not reachable`
  }
}

/**
 * The receiver of a request could not answer it (for example, the state it
 * names is not registered there, or the request frame did not decode).
 * Re-exported as `ActorRuntime.RequestRejected`.
 *
 * @category errors
 * @since 0.1.0
 */
export class RequestRejected extends Schema.TaggedError<RequestRejected>()("RequestRejected", {
  node: NodeId,
  reason: Schema.String
}) {
  override get message() {
    return `request rejected by ${this.node}: ${this.reason}`
  }
}

/**
 * A mutation awaited acknowledgements from its peers and too few came within
 * the timeout. The mutation itself is committed (persisted, published on the
 * owner and sent to peers) all the same: only the wait failed.
 *
 * **Details**
 *
 * - `generation`: the mutation's generation (`incarnation`, `age`).
 * - `acknowledged`: how many peers had applied it (or a newer generation) when the timeout passed.
 * - `required`: how many were awaited.
 * - `missing`: the awaited members that had not acknowledged and were still members.
 *
 * @category errors
 * @since 0.2.0
 */
export class AckTimeout extends Schema.TaggedError<AckTimeout>()("AckTimeout", {
  stateName: Schema.String,
  generation: Schema.Struct({ incarnation: Schema.Int, age: Schema.Int }),
  acknowledged: Schema.Int,
  required: Schema.Int,
  missing: Schema.Array(NodeId),
  timeoutMillis: Schema.Finite
}) {
  override get message() {
    return `mutation ${this.generation.incarnation}/${this.generation.age} of "${this.stateName}" is committed and published, ` +
      `but only ${this.acknowledged} of ${this.required} required peers acknowledged it within ${this.timeoutMillis} ms ` +
      `(missing: ${this.missing.length === 0 ? "none" : this.missing.join(", ")})`
  }
}

/**
 * A mutation awaited more acknowledgements than the members able to give them:
 * more peers than the state's group has, `"all"` with a member that speaks
 * only a wire version without acknowledgements, or members that left during
 * the wait. Failed at once (or as soon as it became impossible), without
 * waiting for the timeout. The mutation itself is committed and published.
 *
 * **Details**
 *
 * - `required`: how many acknowledgements were awaited.
 * - `acknowledged`: how many came before the wait was given up.
 * - `eligible`: the members that can acknowledge (speak the acknowledgement's wire version).
 * - `unsupported`: the members that cannot (an older wire version).
 *
 * @category errors
 * @since 0.2.0
 */
export class AckUnsatisfiable extends Schema.TaggedError<AckUnsatisfiable>()("AckUnsatisfiable", {
  stateName: Schema.String,
  generation: Schema.Struct({ incarnation: Schema.Int, age: Schema.Int }),
  acknowledged: Schema.Int,
  required: Schema.Int,
  eligible: Schema.Array(NodeId),
  unsupported: Schema.Array(NodeId)
}) {
  override get message() {
    return `mutation ${this.generation.incarnation}/${this.generation.age} of "${this.stateName}" is committed and published, ` +
      `but ${this.required} acknowledgements cannot be had: ${this.eligible.length} members can acknowledge` +
      (this.unsupported.length === 0 ? "" : `, ${this.unsupported.join(", ")} speak a wire version without acknowledgements`)
  }
}

const formatValue = (value: unknown): string => {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}...` : value)
    case "number":
    case "bigint":
    case "boolean":
    case "undefined":
      return String(value)
    default:
      return value === null ? "null" : Array.isArray(value) ? `[${value.map(formatValue).join(", ")}]` : String(value)
  }
}

/**
 * An option or a definition is outside what is allowed. Layers fail with it
 * when they are built (`TcpRuntime.layer`, `ClusterRuntime.layer`,
 * `FilePersistence`, `PostgresPersistence`), and `StateRegistry.register`
 * fails with it for bad register options or a bad definition; nothing is
 * started. Re-exported as `TcpRuntime.InvalidOptions`.
 *
 * **Details**
 *
 * - `module`: who refused it (`"TcpRuntime"`, `"ClusterRuntime"`,
 *   `"FilePersistence"`, `"PostgresPersistence"`, `"StateRegistry.register"`,
 *   `"DistributedState"`, `"ActorRuntime.spawn"`).
 * - `option`: the option's path (`"limits.maxFrameBytes"`, `"heartbeat.interval"`).
 * - `value`: the value given (absent for secrets).
 * - `reason`: what is allowed (`"must be a positive integer"`).
 * - `stateName`: the state concerned, for `register`.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  module: Schema.String,
  option: Schema.String,
  value: Schema.optionalKey(Schema.Unknown),
  reason: Schema.String,
  stateName: Schema.optionalKey(Schema.String)
}) {
  override get message() {
    const state = this.stateName === undefined ? "" : ` of state "${this.stateName}"`
    const value = "value" in this ? ` = ${formatValue(this.value)}` : ""
    return `invalid ${this.module} option ${this.option}${state}${value}: ${this.reason}`
  }
}

/**
 * The node could not listen on its address; `cause` is the socket's error.
 * Re-exported as `TcpRuntime.ListenFailed`.
 *
 * @category errors
 * @since 0.1.0
 */
export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  host: Schema.String,
  port: Schema.Number,
  cause: Schema.Defect()
}) {
  override get message() {
    return `cannot listen on ${this.host}:${this.port}: ${String(this.cause)}`
  }
}

/**
 * The `ShardingConfig` has no `runnerAddress`: this process is a cluster
 * client only, not a runner, so it cannot be a dstate node. Re-exported as
 * `ClusterRuntime.NotARunner`.
 *
 * @category errors
 * @since 0.1.0
 */
export class NotARunner extends Schema.TaggedError<NotARunner>()("NotARunner", {}) {
  override get message() {
    return "ShardingConfig.runnerAddress is None: a client-only process is not a dstate node"
  }
}

/**
 * A node's `/status` could not be read: the request failed, the node
 * answered with another code than 200 (`status`; 401 for a missing or wrong
 * token), or the body did not decode against `HttpOperations.Status`.
 *
 * @category errors
 * @since 0.1.0
 */
export class StatusUnavailable extends Schema.TaggedError<StatusUnavailable>()("StatusUnavailable", {
  url: Schema.String,
  status: Schema.optionalKey(Schema.Int),
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message() {
    return `cannot read the status of ${this.url}: ${this.reason}`
  }
}

/**
 * Every error an inbound frame can produce.
 *
 * @category errors
 * @since 0.1.0
 */
export type FrameError = MalformedMessage | MessageTooLarge | UnsupportedWireVersion

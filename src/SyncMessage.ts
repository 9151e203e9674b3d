/**
 * The messages nodes exchange and the frame format they travel in.
 *
 * Every message names its state, its source node, a generation and a wire
 * version. State payloads are bytes produced by the state's own schemas, so the
 * envelope can be decoded (and routed, counted, rejected) without knowing the
 * state's types.
 *
 * A frame is:
 *
 * ```text
 * u32 BE  body length (protocol version + checksum + message bytes)
 * u8      protocol version (1; 2 for the acknowledgement messages)
 * u32 BE  CRC32 of the message bytes
 * ...     message bytes (a fixed binary envelope: tag byte, length-prefixed
 *         UTF-8 strings, f64 numbers, the payload as length-prefixed bytes)
 * ```
 *
 * A frame whose length exceeds the configured limit is rejected from its first
 * four bytes, before the body is read or allocated.
 *
 * @since 0.1.0
 */
import { Context, Schema } from "effect"
import { Generation } from "./Generation.ts"
import { NodeId } from "./NodeId.ts"

/**
 * The owner's whole view.
 *
 * @category models
 * @since 0.1.0
 */
export class FullSnapshot extends Schema.TaggedClass<FullSnapshot>()("FullSnapshot", {
  stateName: Schema.String,
  source: NodeId,
  generation: Generation,
  wireVersion: Schema.Int,
  createdAt: Schema.Finite,
  modifiedAt: Schema.Finite,
  payload: Schema.Uint8Array
}) {}

/**
 * One committed change as a view-level delta; `generation` is the generation
 * after the change (its age is one more than the view it applies to).
 *
 * @category models
 * @since 0.1.0
 */
export class DeltaUpdate extends Schema.TaggedClass<DeltaUpdate>()("DeltaUpdate", {
  stateName: Schema.String,
  source: NodeId,
  generation: Generation,
  wireVersion: Schema.Int,
  modifiedAt: Schema.Finite,
  payload: Schema.Uint8Array
}) {}

/**
 * Asks the owner of `stateName` for a full snapshot. `generation` is the
 * requester's current view of the owner (`undefined` when it has none); an
 * owner that finds it newer than its own incarnation learns that its clock
 * stepped back and moves to a newer incarnation.
 *
 * @category models
 * @since 0.1.0
 */
export class RequestSnapshot extends Schema.TaggedClass<RequestSnapshot>()("RequestSnapshot", {
  stateName: Schema.String,
  source: NodeId,
  generation: Schema.optionalKey(Generation),
  wireVersion: Schema.Int
}) {}

/**
 * One notice of the change feed: `source`'s `stateName` reached `generation`.
 *
 * @category models
 * @since 0.1.0
 */
export const ChangeNotice = Schema.Struct({
  stateName: Schema.String,
  source: NodeId,
  generation: Generation
})

/**
 * @category models
 * @since 0.1.0
 */
export type ChangeNotice = typeof ChangeNotice.Type

/**
 * A node's batch of change notices for every state type, flushed once per
 * change-feed interval.
 *
 * @category models
 * @since 0.1.0
 */
export class BatchedChangeFeed extends Schema.TaggedClass<BatchedChangeFeed>()("BatchedChangeFeed", {
  source: NodeId,
  notices: Schema.Array(ChangeNotice)
}) {}

/**
 * The owner of `stateName` (`source`) asks the receiver to acknowledge once it
 * has applied (and published) a view of the owner's state at `generation` or
 * newer. Protocol version 2: sent only to peers that speak it.
 *
 * @category models
 * @since 0.2.0
 */
export class AckRequest extends Schema.TaggedClass<AckRequest>()("AckRequest", {
  stateName: Schema.String,
  source: NodeId,
  generation: Generation
}) {}

/**
 * `source` holds (applied and published) the receiver's `stateName` at
 * `generation`; one acknowledgement covers every generation up to it.
 * Protocol version 2: sent only to peers that speak it.
 *
 * @category models
 * @since 0.2.0
 */
export class Acknowledge extends Schema.TaggedClass<Acknowledge>()("Acknowledge", {
  stateName: Schema.String,
  source: NodeId,
  generation: Generation
}) {}

/**
 * Every message.
 *
 * @category models
 * @since 0.1.0
 */
export const SyncMessage = Schema.Union([FullSnapshot, DeltaUpdate, RequestSnapshot, BatchedChangeFeed, AckRequest, Acknowledge])

/**
 * @category models
 * @since 0.1.0
 */
export type SyncMessage = typeof SyncMessage.Type

/**
 * The protocol version written in every frame but the acknowledgement
 * messages' (which need `ackProtocolVersion`).
 *
 * @category models
 * @since 0.1.0
 */
export const protocolVersion = 1

/**
 * The protocol version of `AckRequest` and `Acknowledge` frames, and the
 * highest this node speaks. A peer that speaks only version 1 rejects such
 * frames, so they go only to peers whose handshake (or join) said they speak
 * it.
 *
 * @category models
 * @since 0.2.0
 */
export const ackProtocolVersion = 2

/**
 * Bytes before a frame's message: length (4), protocol version (1), CRC32 (4).
 *
 * @category models
 * @since 0.1.0
 */
export const frameHeaderBytes = 9

/**
 * The largest frame (header included) a node accepts or sends. Default 16 MiB.
 *
 * @category models
 * @since 0.1.0
 */
export const MaxFrameBytes = Context.Reference<number>("dstate/SyncMessage/MaxFrameBytes", {
  defaultValue: () => 16 * 1024 * 1024
})

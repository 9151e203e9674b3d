/**
 * Frame and payload codecs: SyncMessage <-> framed bytes (the envelope by
 * `wire.ts`), and per-state encoders for views, deltas (SchemaBinary) and
 * stored states (JSON).
 * @internal
 */
import { Result, Schema } from "effect"
import { SchemaBinary } from "effect/encoding"
import { crc32 } from "node:zlib"
import type * as DistributedState from "../DistributedState.ts"
import { MalformedMessage, MessageTooLarge, UnsupportedWireVersion } from "../DStateError.ts"
import type { NodeId } from "../NodeId.ts"
import { ackProtocolVersion, frameHeaderBytes, protocolVersion, type SyncMessage } from "../SyncMessage.ts"
import * as Wire from "./wire.ts"

/**
 * Writes the one frame header of the library into `target` at `offset` (9 bytes): the length of what follows
 * the length field (u32 BE: 5 header bytes and `body`), the protocol byte, and the CRC32 of `body` (u32 BE).
 * With `rest`, the body is `body` followed by `rest` (written after it by the caller), and the CRC covers both.
 * Registry frames and the TCP transport's frames both carry it.
 */
export const writeHeader = (
  target: Uint8Array,
  offset: number,
  protocol: number,
  body: Uint8Array,
  rest?: Uint8Array
): void => {
  const view = new DataView(target.buffer, target.byteOffset + offset, frameHeaderBytes)
  view.setUint32(0, frameHeaderBytes - 4 + body.length + (rest === undefined ? 0 : rest.length))
  target[offset + 4] = protocol
  view.setUint32(5, rest === undefined ? crc32(body) : crc32(rest, crc32(body)))
}

/** Encodes a message into one frame (a fresh, independently owned buffer). */
export const encodeFrame = (
  message: Wire.Envelope,
  maxFrameBytes: number
): Result.Result<Uint8Array, MessageTooLarge | MalformedMessage> => {
  // The size is known before anything is allocated: an oversized message costs no buffer.
  const size = frameHeaderBytes + Wire.sizeOf(message)
  if (size > maxFrameBytes) return Result.fail(new MessageTooLarge({ size, limit: maxFrameBytes }))
  const frame = new Uint8Array(size)
  Wire.encodeInto(message, frame, frameHeaderBytes)
  writeHeader(frame, 0, Wire.needsAckProtocol(message) ? ackProtocolVersion : protocolVersion, frame.subarray(frameHeaderBytes))
  return Result.succeed(frame)
}

/**
 * Reads the total frame size announced by a frame's first four bytes, so that
 * stream readers can reject an oversized frame before reading its body.
 */
export const announcedFrameSize = (prefix: Uint8Array): number =>
  new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0) + 4

/**
 * Decodes one complete frame. A payload is copied out of the frame unless
 * `copyPayload` is `false`: then it is a view into `frame`, which the caller
 * must not reuse while the message lives (the registry's inbound path, whose
 * runtimes hand over fresh buffers, so that a large view is not copied).
 * `maxProtocol` is the highest protocol the node speaks: a node of protocol 1
 * rejects the acknowledgement frames as an unknown protocol version.
 */
export const decodeFrame = (
  frame: Uint8Array,
  maxFrameBytes: number,
  from?: NodeId,
  copyPayload = true,
  maxProtocol: number = ackProtocolVersion
): Result.Result<SyncMessage, MalformedMessage | MessageTooLarge> => {
  const node = from === undefined ? {} : { node: from }
  if (frame.length < frameHeaderBytes) {
    return Result.fail(new MalformedMessage({ ...node, reason: `frame of ${frame.length} bytes is shorter than its header` }))
  }
  const size = announcedFrameSize(frame)
  if (size > maxFrameBytes) return Result.fail(new MessageTooLarge({ ...node, size, limit: maxFrameBytes }))
  if (size !== frame.length) {
    return Result.fail(
      new MalformedMessage({ ...node, reason: `frame announces ${size} bytes but has ${frame.length}` })
    )
  }
  const protocol = frame[4]
  if (protocol !== protocolVersion && (protocol !== ackProtocolVersion || maxProtocol < ackProtocolVersion)) {
    return Result.fail(new MalformedMessage({ ...node, reason: `unknown protocol version ${frame[4]}` }))
  }
  const body = frame.subarray(frameHeaderBytes)
  const expected = new DataView(frame.buffer, frame.byteOffset + 5, 4).getUint32(0)
  if (crc32(body) !== expected) return Result.fail(new MalformedMessage({ ...node, reason: "checksum mismatch" }))
  const decoded = Wire.decode(body, copyPayload, protocol)
  if (Result.isFailure(decoded)) {
    return Result.fail(new MalformedMessage({ ...node, reason: `undecodable message: ${decoded.failure}` }))
  }
  const message = decoded.success
  if (from !== undefined && message.source !== from) {
    return Result.fail(
      new MalformedMessage({ ...node, reason: `message claims source ${message.source} but came from ${from}` })
    )
  }
  return Result.succeed(message)
}

/** Per-state encoders and decoders derived from a definition's schemas. */
export interface StateCodec<S, V, D> {
  /** Encoded views and deltas are independently owned buffers. */
  readonly encodeView: (view: V) => Result.Result<Uint8Array, MalformedMessage>
  /** As `encodeView`, but the bytes may share SchemaBinary's output arena: copy them before anything else encodes. */
  readonly encodeViewShared: (view: V) => Result.Result<Uint8Array, MalformedMessage>
  readonly encodeDeltaShared: (delta: D) => Result.Result<Uint8Array, MalformedMessage>
  readonly decodeView: (
    bytes: Uint8Array,
    wireVersion: number,
    from: NodeId
  ) => Result.Result<V, MalformedMessage | UnsupportedWireVersion>
  readonly encodeDelta: (delta: D) => Result.Result<Uint8Array, MalformedMessage>
  readonly decodeDelta: (
    bytes: Uint8Array,
    wireVersion: number,
    from: NodeId
  ) => Result.Result<D, MalformedMessage | UnsupportedWireVersion>
  readonly encodeState: (state: S) => Result.Result<unknown, MalformedMessage>
  readonly decodeState: (encoded: unknown) => Result.Result<S, MalformedMessage>
  /** Encodes a state-level change as JSON; `undefined` when the definition has no `change` schema. */
  readonly encodeChange: ((change: unknown) => Result.Result<unknown, MalformedMessage>) | undefined
  readonly decodeChange: ((encoded: unknown) => Result.Result<unknown, MalformedMessage>) | undefined
}

/** Encodes with SchemaBinary; `shared` returns the arena-backed bytes as they are (to be copied at once into a frame). */
const binaryEncoder = <T>(schema: Schema.Codec<T, unknown>, stateName: string, what: string, shared: boolean) => {
  const encode = Schema.encodeUnknownResult(SchemaBinary.toCodec(schema))
  return (value: T): Result.Result<Uint8Array, MalformedMessage> => {
    const r = encode(value)
    return Result.isSuccess(r)
      ? Result.succeed(shared ? r.success : r.success.slice())
      : Result.fail(new MalformedMessage({ stateName, reason: `cannot encode ${what}: ${r.failure.message}`, cause: r.failure }))
  }
}

const binaryDecoder = <T>(schema: Schema.Codec<T, unknown>) => Schema.decodeUnknownResult(SchemaBinary.toCodec(schema))

/** Builds the codec of a definition. */
export const makeStateCodec = <S, V, D, C>(
  definition: DistributedState.DistributedState<S, V, D, C>
): StateCodec<S, V, D> => {
  const stateName = definition.name
  const current = definition.wireVersion
  const viewSchema = definition.view as Schema.Codec<V, unknown>
  const viewDecoders = new Map<number, (u: unknown) => Result.Result<V, Schema.SchemaError>>()
  const deltaDecoders = new Map<number, (u: unknown) => Result.Result<D, Schema.SchemaError>>()
  viewDecoders.set(current, binaryDecoder(viewSchema))
  if (definition._tag === "Delta") {
    deltaDecoders.set(current, binaryDecoder(definition.delta))
    for (const [version, decoder] of Object.entries(definition.wireDecoders)) {
      const v = Number(version)
      if (v === current) continue
      viewDecoders.set(v, binaryDecoder(decoder.view))
      if (decoder.delta !== undefined) deltaDecoders.set(v, binaryDecoder(decoder.delta))
    }
  }
  const decodeWith = <T>(decoders: Map<number, (u: unknown) => Result.Result<T, Schema.SchemaError>>, what: string) =>
  (
    bytes: Uint8Array,
    wireVersion: number,
    from: NodeId
  ): Result.Result<T, MalformedMessage | UnsupportedWireVersion> => {
    const decode = decoders.get(wireVersion)
    if (decode === undefined) {
      return Result.fail(
        new UnsupportedWireVersion({ stateName, node: from, wireVersion, supported: [...decoders.keys()] })
      )
    }
    const r = decode(bytes)
    return Result.isSuccess(r)
      ? Result.succeed(r.success)
      : Result.fail(
        new MalformedMessage({ node: from, stateName, reason: `undecodable ${what}: ${r.failure.message}`, cause: r.failure })
      )
  }
  const jsonCodec = <T>(schema: Schema.Codec<T, unknown>, what: string) => {
    const json = Schema.toCodecJson(schema)
    const encode = Schema.encodeUnknownResult(json)
    const decode = Schema.decodeUnknownResult(json)
    return {
      encode: (value: unknown): Result.Result<unknown, MalformedMessage> => {
        const r = encode(value)
        return Result.isSuccess(r)
          ? Result.succeed(r.success as unknown)
          : Result.fail(new MalformedMessage({ stateName, reason: `cannot encode ${what}: ${r.failure.message}`, cause: r.failure }))
      },
      decode: (encoded: unknown): Result.Result<unknown, MalformedMessage> => {
        const r = decode(encoded)
        return Result.isSuccess(r)
          ? Result.succeed(r.success as unknown)
          : Result.fail(new MalformedMessage({
            stateName,
            reason: `cannot decode stored ${what}: ${r.failure.message}`,
            cause: r.failure
          }))
      }
    }
  }
  const changeJson = definition._tag === "Delta" && definition.change !== undefined
    ? jsonCodec(definition.change, "change")
    : undefined
  const noDeltas = () => Result.fail(new MalformedMessage({ stateName, reason: "a simple state has no deltas" }))
  const stateJson = Schema.toCodecJson(definition.state)
  const encodeStateJson = Schema.encodeUnknownResult(stateJson)
  const decodeStateJson = Schema.decodeUnknownResult(stateJson)
  return {
    encodeView: binaryEncoder(viewSchema, stateName, "view", false),
    encodeViewShared: binaryEncoder(viewSchema, stateName, "view", true),
    decodeView: decodeWith(viewDecoders, "view"),
    encodeDelta: definition._tag === "Delta"
      ? binaryEncoder(definition.delta, stateName, "delta", false)
      : noDeltas,
    encodeDeltaShared: definition._tag === "Delta" ? binaryEncoder(definition.delta, stateName, "delta", true) : noDeltas,
    decodeDelta: decodeWith(deltaDecoders, "delta"),
    encodeState: (state) => {
      const r = encodeStateJson(state)
      return Result.isSuccess(r)
        ? Result.succeed(r.success as unknown)
        : Result.fail(new MalformedMessage({ stateName, reason: `cannot encode state: ${r.failure.message}`, cause: r.failure }))
    },
    encodeChange: changeJson?.encode,
    decodeChange: changeJson?.decode,
    decodeState: (encoded) => {
      const r = decodeStateJson(encoded)
      return Result.isSuccess(r)
        ? Result.succeed(r.success)
        : Result.fail(new MalformedMessage({ stateName, reason: `cannot decode stored state: ${r.failure.message}`, cause: r.failure }))
    }
  }
}

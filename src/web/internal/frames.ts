/**
 * The frames of `dstate/web`, readable in a browser: the library's one frame
 * header (length, protocol byte, CRC32 of the body) around either a sync
 * message (protocol 1: `FullSnapshot` and `DeltaUpdate`, in the envelope of
 * `internal/wire.ts`) or a control message of the web endpoint (protocol
 * `webProtocol`: UTF-8 JSON). Nothing here imports Node: the CRC32 is
 * computed in plain JS (table-driven, the same polynomial as `zlib.crc32`,
 * which is not available in a browser) and strings are checked with a fatal
 * `TextDecoder`. The node side writes control frames with `controlFrame`;
 * its sync frames come from `internal/codec.ts`.
 * @internal
 */
import { Result } from "effect"
import * as Body from "../../internal/reader.ts"
import { type DeltaUpdate, frameHeaderBytes, type FullSnapshot, protocolVersion } from "../../SyncMessage.ts"

/** The protocol byte of a control frame ("W"). */
export const webProtocol = 0x57

const crcTable = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

/** CRC32 (IEEE 802.3, as `zlib.crc32`) of `bytes`, continuing from `initial`. */
export const crc32 = (bytes: Uint8Array, initial = 0): number => {
  let crc = (initial ^ 0xffffffff) >>> 0
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}

const encoder = new TextEncoder()
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** A control frame carrying `message` as JSON. */
export const controlFrame = (message: unknown): Uint8Array => {
  const body = encoder.encode(JSON.stringify(message))
  const frame = new Uint8Array(frameHeaderBytes + body.length)
  const view = new DataView(frame.buffer)
  view.setUint32(0, frameHeaderBytes - 4 + body.length)
  frame[4] = webProtocol
  view.setUint32(5, crc32(body))
  frame.set(body, frameHeaderBytes)
  return frame
}

/** A sync message as the browser reads it: a snapshot or a delta of one owner's view. */
export type DataMessage = FullSnapshot | DeltaUpdate

/** A decoded frame: a data message, a control message (parsed JSON, not yet checked), or why it was refused. */
export type Decoded =
  | { readonly _tag: "Data"; readonly message: DataMessage }
  | { readonly _tag: "Control"; readonly json: unknown }
  | { readonly _tag: "Refused"; readonly reason: string }

const refused = (reason: string): Decoded => ({ _tag: "Refused", reason })

/**
 * Decodes one frame (one WebSocket message): the same checks as the node's
 * `decodeFrame` (the length announced, the protocol byte, the checksum, the
 * limit) then the envelope's (non-empty names, non-negative safe-integer
 * generations, finite times, well-formed UTF-8, no trailing bytes). Only
 * snapshots and deltas are data messages here; any other sync message is
 * refused.
 */
export const decode = (frame: Uint8Array, maxFrameBytes: number): Decoded => {
  if (frame.length < frameHeaderBytes) return refused(`frame of ${frame.length} bytes is shorter than its header`)
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
  const size = view.getUint32(0) + 4
  if (size > maxFrameBytes) return refused(`frame of ${size} bytes exceeds the limit of ${maxFrameBytes}`)
  if (size !== frame.length) return refused(`frame announces ${size} bytes but has ${frame.length}`)
  const protocol = frame[4]
  const body = frame.subarray(frameHeaderBytes)
  if (crc32(body) !== view.getUint32(5)) return refused("checksum mismatch")
  if (protocol === webProtocol) {
    const text = decodeText(body)
    if (text === undefined) return refused("control message is not valid UTF-8")
    const json = parseJson(text)
    return json === undefined ? refused("control message is not JSON") : { _tag: "Control", json: json.value }
  }
  if (protocol !== protocolVersion) return refused(`unknown protocol version ${protocol}`)
  return readMessage(body)
}

/** The text of well-formed UTF-8, or `undefined` (a fatal decoder's failure, as a value). */
const decodeText = (bytes: Uint8Array): string | undefined =>
  Result.getOrUndefined(Result.try(() => utf8.decode(bytes)))

const parseJson = (text: string): { readonly value: unknown } | undefined =>
  Result.getOrUndefined(Result.try(() => ({ value: JSON.parse(text) as unknown })))

const readMessage = (body: Uint8Array): Decoded => {
  if (body.length > 0 && body[0] !== Body.tagFull && body[0] !== Body.tagDelta) {
    return refused(`message tag ${body[0]} is not a snapshot or a delta`)
  }
  const decoded = Body.decode(body, (bytes, start, end) => decodeText(bytes.subarray(start, end)), true, protocolVersion)
  return Result.isFailure(decoded)
    ? refused(decoded.failure)
    : { _tag: "Data", message: { ...decoded.success } as DataMessage } // plain data, as the browser holds it
}

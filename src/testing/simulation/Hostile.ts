/**
 * Hostile frames: frames no honest peer sends (a huge length prefix, an
 * unknown message tag, a wrong protocol or wire version, a forged source, a
 * truncated and a bit-flipped frame, an unknown state), how a node must
 * handle each, and `inject`, which sends them all to every node of a run and
 * checks that each was counted exactly as expected and left every view map
 * untouched.
 *
 * @since 0.1.0
 */
import { Result } from "effect"
import { crc32 } from "node:zlib"
import * as Generation from "../../Generation.ts"
import { encodeFrame } from "../../internal/codec.ts"
import * as NodeId from "../../NodeId.ts"
import { FRAME_HEADER_BYTES, FullSnapshot, PROTOCOL_VERSION, RequestSnapshot } from "../../SyncMessage.ts"
import * as Fixtures from "../Fixtures.ts"
import type * as Prng from "../Prng.ts"

/**
 * A frame around arbitrary message bytes with a correct length prefix,
 * protocol version and checksum, so that the bytes reach the message decoder
 * (for hostile-frame and fuzzing tests).
 *
 * @category constructors
 * @since 0.1.0
 */
export const frameWithBody = (body: Uint8Array, version: number = PROTOCOL_VERSION): Uint8Array => {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + body.length)
  const view = new DataView(frame.buffer)
  view.setUint32(0, frame.length - 4)
  frame[4] = version
  view.setUint32(5, crc32(body))
  frame.set(body, FRAME_HEADER_BYTES)
  return frame
}

const frameOf = (message: FullSnapshot | RequestSnapshot): Uint8Array =>
  Result.getOrThrow(encodeFrame(message, Number.MAX_SAFE_INTEGER))

/**
 * The hostile frames `hostile` sends from `from` to every node, with how each
 * must be handled: `rejected` (counted by the registry and seen by the
 * observer), `unknownState` (counted, ignored) or `unsupportedVersion`
 * (counted by the counter's shard, the held view kept).
 *
 * @category constructors
 * @since 0.1.0
 */
export const hostileFrames = (
  from: NodeId.NodeId,
  random: Prng.Prng
): ReadonlyArray<{ readonly name: string; readonly frame: Uint8Array; readonly outcome: "rejected" | "unknownState" | "unsupportedVersion" }> => {
  const snapshot = (stateName: string, wireVersion: number, source: NodeId.NodeId = from) =>
    new FullSnapshot({
      stateName,
      source,
      generation: Generation.make(Number.MAX_SAFE_INTEGER - 1, 1_000_000),
      wireVersion,
      createdAt: 0,
      modifiedAt: 0,
      payload: new Uint8Array([1, 2, 3])
    })
  const huge = new Uint8Array(FRAME_HEADER_BYTES)
  new DataView(huge.buffer).setUint32(0, 0xffff_fff0)
  huge[4] = PROTOCOL_VERSION
  const valid = frameOf(new RequestSnapshot({ stateName: Fixtures.Counter.name, source: from, wireVersion: 1 }))
  // A valid body whose first byte, the message tag, names no message.
  const unknownTag = valid.slice(FRAME_HEADER_BYTES)
  unknownTag[0] = 0x7f
  const wrongProtocol = valid.slice()
  wrongProtocol[4] = PROTOCOL_VERSION + 1
  const flipped = valid.slice()
  const bit = random.int(FRAME_HEADER_BYTES * 8, flipped.length * 8 - 1)
  flipped[bit >>> 3] ^= 1 << (bit & 7)
  return [
    { name: "huge length prefix", frame: huge, outcome: "rejected" },
    { name: "unknown message tag", frame: frameWithBody(unknownTag), outcome: "rejected" },
    { name: "wrong protocol version", frame: wrongProtocol, outcome: "rejected" },
    { name: "forged source", frame: frameOf(snapshot(Fixtures.Counter.name, 1, NodeId.make("node-forged"))), outcome: "rejected" },
    { name: "truncated", frame: valid.slice(0, random.int(1, valid.length - 1)), outcome: "rejected" },
    { name: "bit flip", frame: flipped, outcome: "rejected" },
    { name: "unknown state", frame: frameOf(snapshot("no_such_state", 1)), outcome: "unknownState" },
    { name: "unknown wire version", frame: frameOf(snapshot(Fixtures.Counter.name, 99)), outcome: "unsupportedVersion" }
  ]
}


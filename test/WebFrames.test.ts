/**
 * The browser's frame reader (`web/internal/frames.ts`): its plain-JS CRC32
 * is zlib's for any input; it decodes the frames the node's codec writes
 * (snapshots and deltas, exact fields) and the control frames; and it
 * refuses, with the reason, every frame a node would refuse (short, length
 * mismatch, over the limit, bad checksum, unknown protocol, bad envelope,
 * trailing bytes) and sync messages a browser has no use for.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import * as Zlib from "node:zlib"
import { encodeFrame } from "../src/internal/codec.ts"
import { crc32, controlFrame, decode, webProtocol } from "../src/web/internal/frames.ts"
import { NodeId } from "dstate"

const frameOf = (message: Parameters<typeof encodeFrame>[0]) => Result.getOrThrow(encodeFrame(message, 1 << 20))

const snapshot = {
  _tag: "FullSnapshot" as const,
  stateName: "counter",
  source: NodeId.make("node-é"),
  generation: { incarnation: 1_796_000_000_000, age: 42 },
  wireVersion: 3,
  createdAt: 1_796_000_000_000,
  modifiedAt: 1_796_000_000_500.5,
  payload: new Uint8Array([1, 2, 3, 255])
}

const reason = (frame: Uint8Array, limit = 1 << 20) => {
  const decoded = decode(frame, limit)
  return decoded._tag === "Refused" ? decoded.reason : `not refused: ${decoded._tag}`
}

describe("web frames", () => {
  it.effect.prop("crc32 is zlib's", [Schema.Uint8Array, Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffffffff }))], ([bytes, initial]) =>
    Effect.sync(() => {
      assert.strictEqual(crc32(bytes), Zlib.crc32(bytes))
      assert.strictEqual(crc32(bytes, initial), Zlib.crc32(bytes, initial))
    }))

  it.effect("decodes the node's snapshot and delta frames, field for field", () =>
    Effect.sync(() => {
      const full = decode(frameOf(snapshot), 1 << 20)
      assert.deepStrictEqual(full, { _tag: "Data", message: snapshot })
      const delta = {
        _tag: "DeltaUpdate" as const,
        stateName: "node_resource",
        source: NodeId.make("node-2"),
        generation: { incarnation: 7, age: 8 },
        wireVersion: 1,
        modifiedAt: 99,
        payload: new Uint8Array(1000).fill(7)
      }
      assert.deepStrictEqual(decode(frameOf(delta), 1 << 20), { _tag: "Data", message: delta })
    }))

  it.effect("control frames carry JSON under their own protocol byte", () =>
    Effect.sync(() => {
      const frame = controlFrame({ t: "removed", state: "counter", owner: "node-ü" })
      assert.strictEqual(frame[4], webProtocol)
      assert.deepStrictEqual(decode(frame, 1 << 20), { _tag: "Control", json: { t: "removed", state: "counter", owner: "node-ü" } })
    }))

  it.effect("refuses what a node refuses, with the reason", () =>
    Effect.sync(() => {
      const good = frameOf(snapshot)
      assert.strictEqual(reason(good.subarray(0, 8)), "frame of 8 bytes is shorter than its header")
      assert.strictEqual(reason(good.subarray(0, good.length - 1)), `frame announces ${good.length} bytes but has ${good.length - 1}`)
      // The limit, at its edge: a frame of exactly the limit passes, one byte less of limit refuses it.
      assert.strictEqual(decode(good, good.length)._tag, "Data")
      assert.strictEqual(reason(good, good.length - 1), `frame of ${good.length} bytes exceeds the limit of ${good.length - 1}`)
      const flipped = good.slice()
      flipped[good.length - 1] ^= 1
      assert.strictEqual(reason(flipped), "checksum mismatch")
      const protocol = good.slice()
      protocol[4] = 9
      assert.strictEqual(reason(protocol), "unknown protocol version 9")
      const request = frameOf({ _tag: "RequestSnapshot", stateName: "counter", source: "node-1", wireVersion: 1 })
      assert.strictEqual(reason(request), "message tag 3 is not a snapshot or a delta")
      const badJson = controlFrame("x")
      badJson.set(new TextEncoder().encode("{"), 9)
      const header = new DataView(badJson.buffer)
      header.setUint32(5, crc32(badJson.subarray(9)))
      assert.strictEqual(reason(badJson), "control message is not JSON")
    }))

  it.effect("refuses a bad envelope: empty source, negative generation, invalid UTF-8, trailing bytes", () =>
    Effect.sync(() => {
      const withBody = (body: Uint8Array) => {
        const frame = new Uint8Array(9 + body.length)
        const view = new DataView(frame.buffer)
        view.setUint32(0, 5 + body.length)
        frame[4] = 1
        view.setUint32(5, crc32(body))
        frame.set(body, 9)
        return frame
      }
      const good = frameOf(snapshot)
      const body = good.subarray(9)
      assert.strictEqual(reason(withBody(new Uint8Array([...body, 0]))), "1 trailing bytes")
      const empty = frameOf({ ...snapshot, source: "" as NodeId.NodeId })
      assert.strictEqual(reason(empty), "source is empty")
      const negative = frameOf({ ...snapshot, generation: { incarnation: 1, age: -1 } })
      assert.strictEqual(reason(negative), "generation is negative")
      const utf8 = body.slice()
      // stateName's first byte ("c") becomes a lone continuation byte.
      utf8[5] = 0x80
      assert.strictEqual(reason(withBody(utf8)), "stateName is not valid UTF-8")
    }))
})

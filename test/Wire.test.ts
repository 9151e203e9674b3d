/**
 * The hand-written envelope codec (`src/internal/wire.ts`) and the TCP
 * transport's `Deliver` frames (protocol byte 0x84): a string field decodes to
 * what a fatal `TextDecoder` gives, or is rejected where it rejects, messages with non-ASCII names
 * round-trip, and a `Deliver` carries the registry frame as it is, checked by
 * its checksum.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import { NodeId } from "dstate"
import * as Prng from "../src/testing/Prng.ts"
import * as Codec from "../src/internal/codec.ts"
import * as Wire from "../src/internal/wire.ts"
import * as Protocol from "../src/node/internal/protocol.ts"
import { DeltaUpdate, FullSnapshot, RequestSnapshot } from "../src/SyncMessage.ts"

// What the envelope decoder must match: a fatal decoder that keeps a leading BOM, as the codec's does.
const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const decoderResult = (bytes: Uint8Array): Result.Result<string, string> =>
  Result.mapError(Result.try(() => fatal.decode(bytes)), () => "stateName is not valid UTF-8")

/** A `RequestSnapshot` frame whose state name is the given bytes, as they are (source "ab", no generation). */
const frameWithName = (name: Uint8Array): Uint8Array => {
  const frame = new Uint8Array(1 + 4 + name.length + 4 + 2 + 1 + 8)
  const view = new DataView(frame.buffer)
  frame[0] = 3
  view.setUint32(1, name.length)
  frame.set(name, 5)
  view.setUint32(5 + name.length, 2)
  frame.set([0x61, 0x62], 9 + name.length)
  frame[11 + name.length] = 0
  view.setFloat64(12 + name.length, 1)
  return frame
}

/** The state name the envelope decoder reads from such a frame, or why it rejected it. */
const wireResult = (name: Uint8Array): Result.Result<string, string> =>
  Result.map(Wire.decode(frameWithName(name)), (message) => message._tag === "RequestSnapshot" ? message.stateName : "?")

describe("wire: UTF-8 in string fields", () => {
  const cases: ReadonlyArray<readonly [string, ReadonlyArray<number>, boolean]> = [
    ["empty", [], true],
    ["ASCII", [0x61, 0x62, 0x7f], true],
    ["NUL", [0x00], true],
    ["two bytes (é)", [0xc3, 0xa9], true],
    ["three bytes (€)", [0xe2, 0x82, 0xac], true],
    ["four bytes (U+1F600)", [0xf0, 0x9f, 0x98, 0x80], true],
    ["U+10FFFF, the last code point", [0xf4, 0x8f, 0xbf, 0xbf], true],
    ["leading BOM, kept", [0xef, 0xbb, 0xbf, 0x61], true],
    ["overlong two-byte NUL", [0xc0, 0x80], false],
    ["overlong two-byte (0xc1)", [0xc1, 0xbf], false],
    ["overlong three-byte", [0xe0, 0x80, 0xaf], false],
    ["overlong four-byte", [0xf0, 0x80, 0x80, 0xaf], false],
    ["surrogate U+D800", [0xed, 0xa0, 0x80], false],
    ["above U+10FFFF", [0xf4, 0x90, 0x80, 0x80], false],
    ["lead byte 0xf5", [0xf5, 0x80, 0x80, 0x80], false],
    ["lone continuation byte", [0x80], false],
    ["truncated three-byte sequence", [0xe2, 0x82], false],
    ["truncated four-byte sequence", [0xf0, 0x9f, 0x98], false],
    ["continuation replaced by ASCII", [0xc3, 0x41], false],
    ["0xff", [0xff], false]
  ]
  for (const [name, bytes, valid] of cases) {
    it(`${name}: ${valid ? "accepted" : "rejected"}, with the same string as a fatal TextDecoder`, () => {
      const input = Uint8Array.from(bytes)
      assert.strictEqual(Result.isSuccess(decoderResult(input)), valid)
      assert.deepStrictEqual(wireResult(input), decoderResult(input))
    })
  }

  it("agrees with a fatal TextDecoder on 200,000 seeded byte strings biased towards multi-byte sequences", () => {
    const random = Prng.make(20261201)
    const interesting = [0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbb, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff]
    let valid = 0
    let ascii = 0
    for (let n = 0; n < 200_000; n++) {
      const length = random.int(0, 7)
      const bytes = new Uint8Array(length)
      for (let i = 0; i < length; i++) {
        bytes[i] = random.chance(0.5) ? random.pick(interesting) : random.int(0, 255)
      }
      const expected = decoderResult(bytes)
      if (Result.isSuccess(expected)) valid++
      if (bytes.every((b) => b < 0x80)) ascii++
      const actual = wireResult(bytes)
      if (Result.isSuccess(actual) !== Result.isSuccess(expected) || (Result.isSuccess(actual) && Result.isSuccess(expected) && actual.success !== expected.success)) {
        assert.fail(`disagreement on [${[...bytes].map((b) => b.toString(16)).join(" ")}]`)
      }
    }
    // Both outcomes, and both decoding paths (all-ASCII and not), are well represented, so the agreement means something.
    assert.isAbove(valid, 10_000)
    assert.isBelow(valid, 190_000)
    assert.isAbove(ascii, 5_000)
    assert.isAbove(valid - ascii, 1_000)
  })

  it("checks exactly the field's bytes: a sequence cut by the length prefix is rejected, bad bytes elsewhere do not matter", () => {
    // "aé" is 61 c3 a9; a length of 2 ends the name inside the two-byte sequence, although the next byte completes it.
    const cut = frameWithName(Uint8Array.from([0x61, 0xc3, 0xa9]))
    new DataView(cut.buffer).setUint32(1, 2)
    assert.deepStrictEqual(Wire.decode(cut), Result.fail("stateName is not valid UTF-8"))
    // A payload that is not UTF-8 right after non-ASCII names is opaque bytes, not text.
    const message = new FullSnapshot({
      stateName: "é",
      source: NodeId.make("nœud"),
      generation: { incarnation: 1, age: 2 },
      wireVersion: 1,
      createdAt: 0,
      modifiedAt: 0,
      payload: Uint8Array.from([0xff, 0xc3, 0x80])
    })
    const decoded = Result.map(Wire.decode(Wire.encode(message, 0)), (m) => m._tag === "FullSnapshot" ? [m.stateName, m.source, [...m.payload]] : [])
    assert.deepStrictEqual(decoded, Result.succeed(["é", "nœud", [0xff, 0xc3, 0x80]]))
  })
})

describe("wire: envelope round trips", () => {
  const source = NodeId.make("nœud-€-😀")
  const generation = { incarnation: 1_700_000_000_000, age: 42 }
  const payload = Uint8Array.from([1, 2, 3, 250])

  it("a snapshot with non-ASCII state and node names round-trips field by field", () => {
    const message = new FullSnapshot({
      stateName: "état",
      source,
      generation,
      wireVersion: 3,
      createdAt: 1.5,
      modifiedAt: 2.25,
      payload
    })
    const decoded = Wire.decode(Wire.encode(message, 0))
    assert.isTrue(Result.isSuccess(decoded))
    const m = Result.getOrThrow(decoded)
    assert.strictEqual(m._tag, "FullSnapshot")
    if (m._tag !== "FullSnapshot") return
    assert.strictEqual(m.stateName, "état")
    assert.strictEqual(m.source, source)
    assert.deepStrictEqual(m.generation, generation)
    assert.deepStrictEqual([m.wireVersion, m.createdAt, m.modifiedAt], [3, 1.5, 2.25])
    assert.deepStrictEqual([...m.payload], [...payload])
  })

  it("sizeOf is exactly the encoded length, for every message kind", () => {
    const messages = [
      new FullSnapshot({ stateName: "s", source, generation, wireVersion: 1, createdAt: 0, modifiedAt: 0, payload }),
      new DeltaUpdate({ stateName: "ß", source, generation, wireVersion: 1, modifiedAt: 0, payload }),
      new RequestSnapshot({ stateName: "s", source, wireVersion: 1 }),
      new RequestSnapshot({ stateName: "s", source, generation, wireVersion: 1 })
    ]
    for (const message of messages) {
      const bytes = Wire.encode(message, 7)
      assert.strictEqual(bytes.length, 7 + Wire.sizeOf(message))
      assert.deepStrictEqual(Result.map(Wire.decode(bytes.subarray(7)), (m) => m._tag), Result.succeed(message._tag))
    }
  })

  it("a node id that is not valid UTF-8 is rejected with its reason, not decoded with replacement characters", () => {
    const bytes = Wire.encode(new RequestSnapshot({ stateName: "s", source: NodeId.make("ab"), wireVersion: 1 }), 0)
    // Layout: tag, str stateName (4 + 1), str source (4 + 2): overwrite the source's first byte.
    bytes[1 + 5 + 4] = 0xc3
    const decoded = Wire.decode(bytes)
    assert.deepStrictEqual(decoded, Result.fail("source is not valid UTF-8"))
  })
})

describe("transport: Deliver frames (protocol 0x84)", () => {
  const registryFrame = Uint8Array.from({ length: 300 }, (_, i) => (i * 31) % 256)

  it("a Deliver is a 9-byte header followed by the registry frame itself; decoding gives the same bytes", () => {
    const [header, body] = Result.getOrThrow(Protocol.encodeDeliver(registryFrame, 1024))
    assert.strictEqual(header.length, Protocol.headerBytes)
    assert.strictEqual(body, registryFrame)
    assert.strictEqual(header[4], Protocol.deliverProtocol)
    const reader = new Protocol.FrameReader(1024)
    // Arrives in three chunks: the header split in two, then the body.
    reader.push(header.subarray(0, 3))
    assert.deepStrictEqual(reader.next(), Result.succeed(undefined))
    reader.push(header.subarray(3))
    reader.push(body)
    const frame = Result.getOrThrow(reader.next())
    assert.isDefined(frame)
    const message = Result.getOrThrow(Protocol.decode(frame!))
    assert.strictEqual(message._tag, "Deliver")
    if (message._tag !== "Deliver") return
    assert.deepStrictEqual([...message.payload], [...registryFrame])
    assert.strictEqual(reader.pending, 0)
  })

  it("encode of a Deliver message is the same bytes as its header and body", () => {
    const [header, body] = Result.getOrThrow(Protocol.encodeDeliver(registryFrame, 1024))
    const whole = Result.getOrThrow(Protocol.encode({ _tag: "Deliver", payload: registryFrame }, 1024))
    assert.deepStrictEqual([...whole], [...header, ...body])
  })

  it("a flipped byte in a Deliver's body fails the checksum", () => {
    const whole = Result.getOrThrow(Protocol.encode({ _tag: "Deliver", payload: registryFrame }, 1024))
    whole[Protocol.headerBytes + 100] ^= 0x10
    const decoded = Protocol.decode(whole)
    assert.isTrue(Result.isFailure(decoded))
    if (Result.isFailure(decoded)) assert.strictEqual(decoded.failure.reason, "checksum mismatch")
  })

  it("a Deliver larger than the frame limit is refused when encoding, with its size and the limit", () => {
    const refused = Protocol.encodeDeliver(registryFrame, Protocol.headerBytes + registryFrame.length - 1)
    assert.isTrue(Result.isFailure(refused))
    if (Result.isFailure(refused)) {
      assert.strictEqual(refused.failure._tag, "MessageTooLarge")
      assert.strictEqual(refused.failure.size, Protocol.headerBytes + registryFrame.length)
    }
    assert.isTrue(Result.isSuccess(Protocol.encodeDeliver(registryFrame, Protocol.headerBytes + registryFrame.length)))
  })

  it("an unknown protocol byte is malformed", () => {
    const whole = Result.getOrThrow(Protocol.encode({ _tag: "Deliver", payload: registryFrame }, 1024))
    whole[4] = 0x86
    const decoded = Protocol.decode(whole)
    assert.isTrue(Result.isFailure(decoded))
    if (Result.isFailure(decoded)) assert.strictEqual(decoded.failure.reason, "unknown transport protocol 0x86")
  })

  it("a frame of transport protocol 1 is malformed, and says so", () => {
    const whole = Result.getOrThrow(Protocol.encode({ _tag: "Deliver", payload: registryFrame }, 1024))
    whole[4] = 0x82
    const decoded = Protocol.decode(whole)
    assert.isTrue(Result.isFailure(decoded))
    if (Result.isFailure(decoded)) assert.strictEqual(decoded.failure.reason, "transport protocol 1 (0x82); this node speaks protocol 2")
  })

  it("500 seeded payloads round-trip through a Deliver frame", () => {
    const random = Prng.make(7)
    for (let n = 0; n < 500; n++) {
      const payload = Uint8Array.from({ length: random.int(0, 2047) }, () => random.int(0, 255))
      const whole = Result.getOrThrow(Protocol.encode({ _tag: "Deliver", payload }, 4096))
      const message = Result.getOrThrow(Protocol.decode(whole))
      assert.deepStrictEqual(message, { _tag: "Deliver", payload: whole.subarray(Protocol.headerBytes) })
      assert.deepStrictEqual([...whole.subarray(Protocol.headerBytes)], [...payload])
    }
  })
})

describe("transport: bare Deliver frames (the registry frame alone)", () => {
  const snapshot = Result.getOrThrow(Codec.encodeFrame(
    new FullSnapshot({
      stateName: "counter",
      source: NodeId.make("node-a"),
      generation: { incarnation: 7, age: 3 },
      wireVersion: 1,
      createdAt: 1,
      modifiedAt: 2,
      payload: new Uint8Array([1, 2, 3])
    }),
    1024
  ))

  it("a registry frame is frame-shaped, and decodes as a Deliver of exactly its own bytes (no transport checksum)", () => {
    assert.isTrue(Protocol.isFrameShaped(snapshot))
    const decoded = Protocol.decode(snapshot)
    assert(decoded._tag === "Success" && decoded.success._tag === "Deliver")
    assert.strictEqual(decoded.success.payload, snapshot)
    // A damaged body still decodes here: the registry, which checks the frame's own checksum, refuses it.
    const damaged = snapshot.slice()
    damaged[damaged.length - 1] ^= 0xff
    assert.strictEqual(Protocol.decode(damaged)._tag, "Success")
    assert.strictEqual(Codec.decodeFrame(damaged, 1024)._tag, "Failure")
  })

  it("anything else is not frame-shaped: a wrong length prefix, a transport protocol byte, a short buffer", () => {
    const wrongLength = snapshot.slice()
    wrongLength[3] ^= 1
    assert.isFalse(Protocol.isFrameShaped(wrongLength))
    const transportByte = snapshot.slice()
    transportByte[4] = Protocol.deliverProtocol
    assert.isFalse(Protocol.isFrameShaped(transportByte))
    assert.isFalse(Protocol.isFrameShaped(snapshot.subarray(0, Protocol.headerBytes - 1)))
    assert.isFalse(Protocol.isFrameShaped(Uint8Array.from({ length: 300 }, (_, i) => (i * 31) % 256)))
  })
})

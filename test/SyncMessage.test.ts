import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema, SchemaTransformation } from "effect"
import { crc32 } from "node:zlib"
import { DistributedState, DStateError, Generation, NodeId, SyncMessage } from "dstate"
import { Fixtures } from "dstate/testing"
import * as Codec from "../src/internal/codec.ts"
import { nodeResource } from "./support/NodeResource.ts"

const nodeA = NodeId.make("node-a")
const nodeB = NodeId.make("node-b")
const LIMIT = 1024

const fullSnapshot = new SyncMessage.FullSnapshot({
  stateName: "node_resource",
  source: nodeA,
  generation: Generation.make(1_700_000_000_000, 42),
  wireVersion: 1,
  createdAt: 1_700_000_000_000,
  modifiedAt: 1_700_000_001_234,
  payload: new Uint8Array([1, 2, 3, 250, 0, 7])
})

const deltaUpdate = new SyncMessage.DeltaUpdate({
  stateName: "node_resource",
  source: nodeA,
  generation: Generation.make(9, 3),
  wireVersion: 2,
  modifiedAt: 12.5,
  payload: new Uint8Array([9, 8, 7])
})

const requestWithGeneration = new SyncMessage.RequestSnapshot({
  stateName: "counter",
  source: nodeA,
  generation: Generation.make(5, 6),
  wireVersion: 1
})

const requestWithoutGeneration = new SyncMessage.RequestSnapshot({
  stateName: "counter",
  source: nodeA,
  wireVersion: 1
})

const changeFeed = new SyncMessage.BatchedChangeFeed({
  source: nodeA,
  notices: [
    { stateName: "counter", source: nodeA, generation: Generation.make(1, 1) },
    { stateName: "node_resource", source: nodeB, generation: Generation.make(2, 0) }
  ]
})

const emptyChangeFeed = new SyncMessage.BatchedChangeFeed({ source: nodeA, notices: [] })

const allMessages: ReadonlyArray<readonly [string, SyncMessage.SyncMessage]> = [
  ["FullSnapshot", fullSnapshot],
  ["DeltaUpdate", deltaUpdate],
  ["RequestSnapshot with generation", requestWithGeneration],
  ["RequestSnapshot without generation", requestWithoutGeneration],
  ["BatchedChangeFeed", changeFeed],
  ["BatchedChangeFeed without notices", emptyChangeFeed]
]

const successOf = <A, E>(result: Result.Result<A, E>): A => {
  if (Result.isFailure(result)) assert.fail(`expected a success, got ${String(result.failure)}`)
  return result.success
}

const failureOf = <A, E>(result: Result.Result<A, E>): E => {
  if (Result.isSuccess(result)) assert.fail("expected a failure, got a success")
  return result.failure
}

const frameOf = (message: SyncMessage.SyncMessage): Uint8Array => successOf(Codec.encodeFrame(message, LIMIT))

/** Wraps arbitrary message bytes in a header with the right length, version and checksum. */
const wrapBody = (body: Uint8Array): Uint8Array => {
  const frame = new Uint8Array(SyncMessage.frameHeaderBytes + body.length)
  const view = new DataView(frame.buffer)
  view.setUint32(0, frame.length - 4)
  frame[4] = SyncMessage.protocolVersion
  view.setUint32(5, crc32(body))
  frame.set(body, SyncMessage.frameHeaderBytes)
  return frame
}

const assertMalformed = (
  error: DStateError.MalformedMessage | DStateError.MessageTooLarge,
  reason: string
) => {
  assert.strictEqual(error._tag, "MalformedMessage")
  if (error._tag === "MalformedMessage") assert.strictEqual(error.reason, reason)
}

const assertTooLarge = (
  error: DStateError.MalformedMessage | DStateError.MessageTooLarge,
  size: number,
  limit: number
) => {
  assert.strictEqual(error._tag, "MessageTooLarge")
  if (error._tag === "MessageTooLarge") {
    assert.strictEqual(error.size, size)
    assert.strictEqual(error.limit, limit)
  }
}

describe("SyncMessage frames", () => {
  describe("round trip", () => {
    for (const [name, message] of allMessages) {
      it(name, () => {
        const frame = frameOf(message)
        const decoded = successOf(Codec.decodeFrame(frame, LIMIT))
        assert.deepStrictEqual(decoded, message)
        assert.strictEqual(decoded._tag, message._tag)
        assert.strictEqual(Object.getPrototypeOf(decoded), Object.getPrototypeOf(message))
        // with the matching sender
        assert.deepStrictEqual(successOf(Codec.decodeFrame(frame, LIMIT, nodeA)), message)
      })
    }

    it("RequestSnapshot without generation decodes without a generation key", () => {
      const decoded = successOf(Codec.decodeFrame(frameOf(requestWithoutGeneration), LIMIT))
      assert.strictEqual(decoded._tag, "RequestSnapshot")
      assert.isFalse(Object.hasOwn(decoded, "generation"))
    })

    it("decodes a frame that is a view into a larger buffer", () => {
      const frame = frameOf(fullSnapshot)
      const buffer = new Uint8Array(frame.length + 10).fill(0xee)
      buffer.set(frame, 3)
      const decoded = successOf(Codec.decodeFrame(buffer.subarray(3, 3 + frame.length), LIMIT))
      assert.deepStrictEqual(decoded, fullSnapshot)
    })

    it("a decoded payload does not alias the frame it came from", () => {
      const frame = frameOf(fullSnapshot)
      const decoded = successOf(Codec.decodeFrame(frame, LIMIT))
      frame.fill(0)
      assert.strictEqual(decoded._tag, "FullSnapshot")
      if (decoded._tag === "FullSnapshot") assert.deepStrictEqual(decoded.payload, new Uint8Array([1, 2, 3, 250, 0, 7]))
    })

    it("encodeFrame returns an independently owned buffer", () => {
      const frame = frameOf(fullSnapshot)
      assert.strictEqual(frame.byteOffset, 0)
      assert.strictEqual(frame.buffer.byteLength, frame.length)
    })
  })

  describe("header layout", () => {
    for (const [name, message] of allMessages) {
      it(name, () => {
        const frame = frameOf(message)
        const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
        assert.strictEqual(SyncMessage.frameHeaderBytes, 9)
        assert.strictEqual(view.getUint32(0), frame.length - 4)
        assert.strictEqual(Codec.announcedFrameSize(frame), frame.length)
        assert.strictEqual(frame[4], SyncMessage.protocolVersion)
        assert.strictEqual(SyncMessage.protocolVersion, 1)
        assert.strictEqual(view.getUint32(5), crc32(frame.subarray(9)))
        assert.isTrue(frame.length > SyncMessage.frameHeaderBytes)
      })
    }
  })

  describe("corruption", () => {
    for (const [name, message] of [["RequestSnapshot", requestWithoutGeneration], ["FullSnapshot", fullSnapshot]] as const) {
      it(`every single-bit flip of a ${name} frame is rejected with the exact error`, () => {
        const frame = frameOf(message)
        const announced = frame.length - 4
        let rejected = 0
        for (let bit = 0; bit < frame.length * 8; bit++) {
          const corrupted = frame.slice()
          const byte = bit >> 3
          corrupted[byte] ^= 1 << (bit & 7)
          const result = Codec.decodeFrame(corrupted, LIMIT)
          const error = failureOf(result)
          if (byte < 4) {
            const size = ((announced ^ (((1 << (bit & 7)) << (8 * (3 - byte))) >>> 0)) >>> 0) + 4
            if (size > LIMIT) assertTooLarge(error, size, LIMIT)
            else assertMalformed(error, `frame announces ${size} bytes but has ${frame.length}`)
          } else if (byte === 4) {
            assertMalformed(error, `unknown protocol version ${corrupted[4]}`)
          } else {
            // CRC32 detects every single-bit error, in the checksum itself or in the body
            assertMalformed(error, "checksum mismatch")
          }
          rejected++
        }
        assert.strictEqual(rejected, frame.length * 8)
      })
    }

    it("truncation at every length is rejected", () => {
      const frame = frameOf(fullSnapshot)
      for (let length = 0; length < frame.length; length++) {
        const error = failureOf(Codec.decodeFrame(frame.slice(0, length), LIMIT))
        if (length < SyncMessage.frameHeaderBytes) {
          assertMalformed(error, `frame of ${length} bytes is shorter than its header`)
        } else {
          assertMalformed(error, `frame announces ${frame.length} bytes but has ${length}`)
        }
      }
    })

    it("trailing bytes are rejected", () => {
      const frame = frameOf(changeFeed)
      for (const extra of [1, 2, 100]) {
        const longer = new Uint8Array(frame.length + extra)
        longer.set(frame)
        const error = failureOf(Codec.decodeFrame(longer, LIMIT))
        assertMalformed(error, `frame announces ${frame.length} bytes but has ${frame.length + extra}`)
      }
    })

    it("a wrong protocol version is rejected", () => {
      for (const version of [0, 3, 255]) {
        const frame = frameOf(fullSnapshot)
        frame[4] = version
        assertMalformed(failureOf(Codec.decodeFrame(frame, LIMIT)), `unknown protocol version ${version}`)
      }
    })

    it("a valid checksum over bytes that are not a message is rejected as undecodable", () => {
      for (const body of [[], [0], [1, 2, 3, 4], [0xff, 0xff, 0xff, 0xff, 0xff]]) {
        const error = failureOf(Codec.decodeFrame(wrapBody(new Uint8Array(body)), LIMIT))
        assert.strictEqual(error._tag, "MalformedMessage")
        if (error._tag === "MalformedMessage") assert.isTrue(error.reason.startsWith("undecodable message: "))
      }
    })

    it("errors name the sending node when it is known", () => {
      const frame = frameOf(fullSnapshot)
      frame[20] ^= 0x10
      const error = failureOf(Codec.decodeFrame(frame, LIMIT, nodeA))
      assert.strictEqual(error._tag, "MalformedMessage")
      assert.strictEqual(error.node, nodeA)
      const anonymous = failureOf(Codec.decodeFrame(frame, LIMIT))
      assert.isFalse(Object.hasOwn(anonymous, "node"))
    })

    it("a message whose source differs from the sender is rejected", () => {
      const error = failureOf(Codec.decodeFrame(frameOf(fullSnapshot), LIMIT, nodeB))
      assertMalformed(error, "message claims source node-a but came from node-b")
      assert.strictEqual(error.node, nodeB)
      const feed = failureOf(Codec.decodeFrame(frameOf(changeFeed), LIMIT, nodeB))
      assertMalformed(feed, "message claims source node-a but came from node-b")
    })
  })

  describe("size limit", () => {
    it.effect("the default limit is 16 MiB", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* SyncMessage.MaxFrameBytes, 16 * 1024 * 1024)
      }))

    it("a frame of exactly maxFrameBytes is accepted, one byte over is rejected", () => {
      const frame = frameOf(fullSnapshot)
      const size = frame.length
      assert.deepStrictEqual(successOf(Codec.decodeFrame(frame, size)), fullSnapshot)
      const error = failureOf(Codec.decodeFrame(frame, size - 1))
      assertTooLarge(error, size, size - 1)
      const fromNode = failureOf(Codec.decodeFrame(frame, size - 1, nodeA))
      assertTooLarge(fromNode, size, size - 1)
      assert.strictEqual(fromNode.node, nodeA)
    })

    it("a frame one byte over is rejected even when the message itself fits", () => {
      // grow the payload until the frame is exactly LIMIT + 1 bytes
      let over: Uint8Array | undefined
      for (let n = 0; n < LIMIT && over === undefined; n++) {
        const message = new SyncMessage.FullSnapshot({ ...fullSnapshot, payload: new Uint8Array(n).fill(5) })
        const frame = successOf(Codec.encodeFrame(message, LIMIT * 2))
        if (frame.length === LIMIT + 1) over = frame
      }
      if (over === undefined) return assert.fail("no payload size gives a frame of LIMIT + 1 bytes")
      assertTooLarge(failureOf(Codec.decodeFrame(over, LIMIT)), LIMIT + 1, LIMIT)
      assert.strictEqual(successOf(Codec.decodeFrame(over, LIMIT + 1))._tag, "FullSnapshot")
    })

    it("an oversized frame is rejected from its length prefix alone", () => {
      const prefix = new Uint8Array(SyncMessage.frameHeaderBytes)
      new DataView(prefix.buffer).setUint32(0, 0xffff_ffff)
      prefix[4] = SyncMessage.protocolVersion
      assert.strictEqual(Codec.announcedFrameSize(prefix), 0xffff_ffff + 4)
      const limit = 16 * 1024 * 1024
      assertTooLarge(failureOf(Codec.decodeFrame(prefix, limit)), 0xffff_ffff + 4, limit)
    })

    it("encodeFrame refuses to build a frame over the limit", () => {
      const size = frameOf(fullSnapshot).length
      assertTooLarge(failureOf(Codec.encodeFrame(fullSnapshot, size - 1)), size, size - 1)
      assert.strictEqual(successOf(Codec.encodeFrame(fullSnapshot, size)).length, size)
      const big = new SyncMessage.FullSnapshot({ ...fullSnapshot, payload: new Uint8Array(LIMIT) })
      const error = failureOf(Codec.encodeFrame(big, LIMIT))
      assert.strictEqual(error._tag, "MessageTooLarge")
      if (error._tag === "MessageTooLarge") {
        assert.strictEqual(error.limit, LIMIT)
        assert.isTrue(error.size > LIMIT + 9)
      }
    })
  })

  describe("fuzzing", () => {
    const isFrameError = (u: unknown): boolean =>
      u instanceof DStateError.MalformedMessage || u instanceof DStateError.MessageTooLarge

    it.effect.prop(
      "decodeFrame never throws on random bytes and fails with a tagged error",
      [Schema.Uint8Array],
      ([bytes]) =>
        Effect.sync(() => {
          const result = Codec.decodeFrame(bytes, LIMIT)
          assert.isTrue(Result.isFailure(result))
          if (Result.isFailure(result)) assert.isTrue(isFrameError(result.failure))
          const fromNode = Codec.decodeFrame(bytes, LIMIT, nodeB)
          assert.isTrue(Result.isFailure(fromNode))
          if (Result.isFailure(fromNode)) {
            assert.isTrue(isFrameError(fromNode.failure))
            assert.strictEqual(fromNode.failure.node, nodeB)
          }
        }),
      { arbitrary: { seed: 424242, runs: 500, size: 64 } }
    )

    it.effect.prop(
      "decodeFrame never throws on random bodies behind a valid header",
      [Schema.Uint8Array],
      ([body]) =>
        Effect.sync(() => {
          const result = Codec.decodeFrame(wrapBody(body), LIMIT)
          if (Result.isFailure(result)) {
            assert.strictEqual(result.failure._tag, "MalformedMessage")
            if (result.failure._tag === "MalformedMessage") {
              assert.isTrue(result.failure.reason.startsWith("undecodable message: "))
            }
          } else {
            assert.isTrue(Schema.is(SyncMessage.SyncMessage)(result.success))
          }
        }),
      { arbitrary: { seed: 31337, runs: 500, size: 64 } }
    )

    it.effect.prop(
      "decodeFrame never throws on a valid body with one byte replaced behind a valid header",
      [
        Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1_000_000 })),
        Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 }))
      ],
      ([position, value]) =>
        Effect.sync(() => {
          const body = frameOf(fullSnapshot).slice(SyncMessage.frameHeaderBytes)
          body[position % body.length] = value
          const result = Codec.decodeFrame(wrapBody(body), LIMIT)
          if (Result.isFailure(result)) {
            assert.strictEqual(result.failure._tag, "MalformedMessage")
          } else {
            assert.isTrue(Schema.is(SyncMessage.SyncMessage)(result.success))
          }
        }),
      { arbitrary: { seed: 2718, runs: 1000 } }
    )
  })
})

// ---------------------------------------------------------------------------
// State codecs
// ---------------------------------------------------------------------------

/** An older wire version of the resource view: CPU only. */
const NodeResourceViewV1 = Schema.Struct({ cpu: Schema.Finite })

const ViewV1toV2 = NodeResourceViewV1.pipe(
  Schema.decodeTo(
    Fixtures.NodeResourceView,
    SchemaTransformation.transform({
      decode: (old: typeof NodeResourceViewV1.Type): typeof Fixtures.NodeResourceView.Encoded => ({
        cpuPercent: old.cpu,
        memoryUsedMiB: 0,
        tags: []
      }),
      encode: (view: typeof Fixtures.NodeResourceView.Encoded): typeof NodeResourceViewV1.Type => ({
        cpu: view.cpuPercent
      })
    })
  )
)

const NodeResourceV2 = DistributedState.makeDelta({
  name: "node_resource_v2",
  ...nodeResource,
  wireVersion: 2,
  wireDecoders: { 1: { view: ViewV1toV2 } }
})

const sampleState: Fixtures.NodeResourceState = {
  cpuPercent: 37.5,
  memoryUsedMiB: 2048,
  tags: ["gpu", "eu-west"],
  samples: 12,
  lastRawCpuTicks: 998877
}

const sampleView: Fixtures.NodeResourceView = { cpuPercent: 37.5, memoryUsedMiB: 2048, tags: ["gpu", "eu-west"] }

const assertUnsupported = (
  error: DStateError.MalformedMessage | DStateError.UnsupportedWireVersion,
  expected: { stateName: string; wireVersion: number; supported: ReadonlyArray<number> }
) => {
  assert.strictEqual(error._tag, "UnsupportedWireVersion")
  if (error._tag === "UnsupportedWireVersion") {
    assert.strictEqual(error.stateName, expected.stateName)
    assert.strictEqual(error.node, nodeB)
    assert.strictEqual(error.wireVersion, expected.wireVersion)
    // the set of versions matters, not the order they are listed in
    assert.deepStrictEqual([...error.supported].sort((a, b) => a - b), expected.supported)
  }
}

const assertUndecodable = (
  error: DStateError.MalformedMessage | DStateError.UnsupportedWireVersion,
  stateName: string,
  what: "view" | "delta"
) => {
  assert.strictEqual(error._tag, "MalformedMessage")
  if (error._tag === "MalformedMessage") {
    assert.strictEqual(error.node, nodeB)
    assert.strictEqual(error.stateName, stateName)
    assert.isTrue(error.reason.startsWith(`undecodable ${what}: `), error.reason)
    // The schema error is kept as the cause; the reason quotes its message.
    assert.instanceOf(error.cause, Schema.SchemaError)
    assert.strictEqual(error.reason, `undecodable ${what}: ${(error.cause as Schema.SchemaError).message}`)
  }
}

const garbage: ReadonlyArray<Uint8Array> = [
  new Uint8Array([]),
  new Uint8Array([0]),
  new Uint8Array([0xff]),
  new Uint8Array([0xff, 0xff, 0xff]),
  new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])
]

describe("makeStateCodec", () => {
  describe("simple state (Counter)", () => {
    const codec = Codec.makeStateCodec(Fixtures.Counter)

    it("view round trip", () => {
      for (const value of [0, 1, -5, 1_000_000]) {
        const bytes = successOf(codec.encodeView({ value }))
        assert.deepStrictEqual(successOf(codec.decodeView(bytes, 1, nodeB)), { value })
      }
    })

    it("unknown wire version", () => {
      const bytes = successOf(codec.encodeView({ value: 3 }))
      assertUnsupported(failureOf(codec.decodeView(bytes, 2, nodeB)), {
        stateName: "counter",
        wireVersion: 2,
        supported: [1]
      })
    })

    it("a simple state has no deltas", () => {
      const error = failureOf(codec.encodeDelta(undefined as never))
      assert.strictEqual(error._tag, "MalformedMessage")
      assert.strictEqual(error.stateName, "counter")
      assert.strictEqual(error.reason, "a simple state has no deltas")
    })

    it("a view of another state's schema is malformed", () => {
      const other = successOf(Codec.makeStateCodec(Fixtures.NodeResource).encodeView(sampleView))
      assertUndecodable(failureOf(codec.decodeView(other, 1, nodeB)), "counter", "view")
    })

    it("state JSON round trip", () => {
      const encoded = successOf(codec.encodeState({ value: 17 }))
      assert.deepStrictEqual(successOf(codec.decodeState(JSON.parse(JSON.stringify(encoded)))), { value: 17 })
    })
  })

  describe("delta-aware state (NodeResource)", () => {
    const codec = Codec.makeStateCodec(Fixtures.NodeResource)

    it("view round trip", () => {
      for (const view of [sampleView, Fixtures.NodeResource.projectView(Fixtures.NodeResource.initial())]) {
        const bytes = successOf(codec.encodeView(view))
        assert.deepStrictEqual(successOf(codec.decodeView(bytes, 1, nodeB)), view)
      }
    })

    it("delta round trip", () => {
      const deltas: ReadonlyArray<Fixtures.NodeResourceDelta> = [
        {},
        { cpuPercent: 99.25 },
        { memoryUsedMiB: 512 },
        { tags: [] },
        { tags: ["a", "b"] },
        { cpuPercent: 1, memoryUsedMiB: 2, tags: ["c"] }
      ]
      for (const delta of deltas) {
        const bytes = successOf(codec.encodeDelta(delta))
        const decoded = successOf(codec.decodeDelta(bytes, 1, nodeB))
        assert.deepStrictEqual(decoded, delta)
        assert.deepStrictEqual(Object.keys(decoded).sort(), Object.keys(delta).sort())
      }
    })

    it("encoded bytes are independent copies", () => {
      const bytes = successOf(codec.encodeView(sampleView))
      assert.strictEqual(bytes.byteOffset, 0)
      assert.strictEqual(bytes.buffer.byteLength, bytes.length)
    })

    it("unknown wire version is UnsupportedWireVersion with the supported list", () => {
      const view = successOf(codec.encodeView(sampleView))
      const delta = successOf(codec.encodeDelta({ cpuPercent: 3 }))
      for (const wireVersion of [0, 2, 99]) {
        assertUnsupported(failureOf(codec.decodeView(view, wireVersion, nodeB)), {
          stateName: "node_resource",
          wireVersion,
          supported: [1]
        })
        assertUnsupported(failureOf(codec.decodeDelta(delta, wireVersion, nodeB)), {
          stateName: "node_resource",
          wireVersion,
          supported: [1]
        })
      }
    })

    it("a garbage payload in a supported version is MalformedMessage, not a version mismatch", () => {
      for (const bytes of garbage) {
        assertUndecodable(failureOf(codec.decodeView(bytes, 1, nodeB)), "node_resource", "view")
        assertUndecodable(failureOf(codec.decodeDelta(bytes, 1, nodeB)), "node_resource", "delta")
      }
    })

    it("a garbage payload in an unsupported version is a version mismatch", () => {
      assertUnsupported(failureOf(codec.decodeView(new Uint8Array([0xff]), 7, nodeB)), {
        stateName: "node_resource",
        wireVersion: 7,
        supported: [1]
      })
    })

    it("state JSON round trip keeps the private fields", () => {
      const encoded = successOf(codec.encodeState(sampleState))
      const decoded = successOf(codec.decodeState(JSON.parse(JSON.stringify(encoded))))
      assert.deepStrictEqual(decoded, sampleState)
    })

    it("an undecodable stored state is MalformedMessage", () => {
      for (const stored of [null, "x", 5, { cpuPercent: "high" }, { ...sampleState, samples: 1.5 }]) {
        const error = failureOf(codec.decodeState(stored))
        assert.strictEqual(error._tag, "MalformedMessage")
        assert.strictEqual(error.stateName, "node_resource")
        assert.isTrue(error.reason.startsWith("cannot decode stored state: "), error.reason)
        assert.instanceOf(error.cause, Schema.SchemaError)
      }
    })
  })

  describe("older wire versions (wireDecoders)", () => {
    const codec = Codec.makeStateCodec(NodeResourceV2)
    const v1Bytes = successOf(Codec.makeStateCodec(DistributedState.make({
      name: "node_resource_v1",
      schema: NodeResourceViewV1,
      initial: () => ({ cpu: 0 })
    })).encodeView({ cpu: 64 }))

    it("decodes a view sent in an older wire version", () => {
      assert.deepStrictEqual(successOf(codec.decodeView(v1Bytes, 1, nodeB)), {
        cpuPercent: 64,
        memoryUsedMiB: 0,
        tags: []
      })
    })

    it("decodes the current wire version", () => {
      const bytes = successOf(codec.encodeView(sampleView))
      assert.deepStrictEqual(successOf(codec.decodeView(bytes, 2, nodeB)), sampleView)
    })

    it("lists every supported version, per kind of payload", () => {
      const view = successOf(codec.encodeView(sampleView))
      assertUnsupported(failureOf(codec.decodeView(view, 3, nodeB)), {
        stateName: "node_resource_v2",
        wireVersion: 3,
        supported: [1, 2]
      })
      // no delta decoder was given for version 1
      const delta = successOf(codec.encodeDelta({ cpuPercent: 5 }))
      assertUnsupported(failureOf(codec.decodeDelta(delta, 1, nodeB)), {
        stateName: "node_resource_v2",
        wireVersion: 1,
        supported: [2]
      })
    })

    it("a garbage payload in an older version is MalformedMessage", () => {
      assertUndecodable(failureOf(codec.decodeView(new Uint8Array([1, 2, 3]), 1, nodeB)), "node_resource_v2", "view")
    })
  })
})

describe("acknowledgement frames (protocol version 2)", () => {
  const ackRequest = new SyncMessage.AckRequest({ stateName: "counter", source: nodeA, generation: Generation.make(3, 4) })
  const acknowledge = new SyncMessage.Acknowledge({ stateName: "counter", source: nodeB, generation: Generation.make(3, 9) })
  const encode = (m: SyncMessage.SyncMessage) => Result.getOrThrow(Codec.encodeFrame(m, LIMIT))

  it("round-trip in frames whose protocol byte is 2, the other messages staying at 1", () => {
    for (const m of [ackRequest, acknowledge]) {
      const frame = encode(m)
      assert.strictEqual(frame[4], SyncMessage.ackProtocolVersion)
      assert.strictEqual(frame.length, SyncMessage.frameHeaderBytes + 1 + 4 + 7 + 4 + 6 + 16)
      assert.deepStrictEqual(Result.getOrThrow(Codec.decodeFrame(frame, LIMIT)), m)
    }
    assert.strictEqual(encode(fullSnapshot)[4], SyncMessage.protocolVersion)
  })

  it("a node that speaks only protocol 1 rejects them as an unknown protocol version", () => {
    const result = Codec.decodeFrame(encode(ackRequest), LIMIT, nodeA, true, 1)
    assert.isTrue(Result.isFailure(result))
    assert.include((result as Result.Failure<unknown, DStateError.MalformedMessage>).failure.reason, "unknown protocol version 2")
  })

  it("an acknowledgement message in a protocol 1 frame is malformed", () => {
    const frame = encode(acknowledge)
    frame[4] = SyncMessage.protocolVersion
    const result = Codec.decodeFrame(frame, LIMIT)
    assert.isTrue(Result.isFailure(result))
    assert.include((result as Result.Failure<unknown, DStateError.MalformedMessage>).failure.reason, "needs protocol version 2")
  })

  it("the protocol byte goes with the tag: a protocol 1 message framed as protocol 2 is malformed", () => {
    const frame = encode(fullSnapshot)
    frame[4] = SyncMessage.ackProtocolVersion
    const result = Codec.decodeFrame(frame, LIMIT)
    assert.isTrue(Result.isFailure(result))
    assert.include((result as Result.Failure<unknown, DStateError.MalformedMessage>).failure.reason, "needs protocol version 1")
  })

  it("the schemas accept what the codec produces", () => {
    for (const m of [ackRequest, acknowledge]) {
      assert.deepStrictEqual(Schema.decodeUnknownSync(SyncMessage.SyncMessage)(Schema.encodeSync(SyncMessage.SyncMessage)(m)), m)
    }
  })
})

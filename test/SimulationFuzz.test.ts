/**
 * Property tests of the inbound decoders under the corruptions the
 * simulator injects and worse: sequences of bit flips, byte writes,
 * truncations, deletions and splices of other frames, applied to valid frames
 * of every message type, with the header left as is (the checksum must catch
 * them) or recomputed (so the mutations reach the message decoder), and the
 * same mutations of valid state payloads through the states' codecs. Every
 * outcome is a typed error or a valid message, never a defect. Random bytes
 * behind a valid header and single-byte replacements are covered in
 * SyncMessage.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import { DStateError, Generation, NodeId, SyncMessage } from "dstate"
import { Fixtures, Simulation } from "dstate/testing"
import * as Codec from "../src/internal/codec.ts"

const nodeA = NodeId.make("node-a")
const LIMIT = 64 * 1024

const counterCodec = Codec.makeStateCodec(Fixtures.Counter)
const resourceCodec = Codec.makeStateCodec(Fixtures.NodeResource)
const ok = <A, E>(r: Result.Result<A, E>): A => Result.getOrThrow(r)

const resourceView: Fixtures.NodeResourceView = { cpuPercent: 12.5, memoryUsedMiB: 2048, tags: ["gpu", "eu-west", "é"] }
const resourceDelta: Fixtures.NodeResourceDelta = { cpuPercent: 99, tags: ["a"] }

/** Valid frames of every message type, with real state payloads. */
const corpus: ReadonlyArray<Uint8Array> = [
  new SyncMessage.FullSnapshot({
    stateName: "counter",
    source: nodeA,
    generation: Generation.make(1_700_000_000_000, 3),
    wireVersion: 1,
    createdAt: 1_700_000_000_000,
    modifiedAt: 1_700_000_000_500,
    payload: ok(counterCodec.encodeView({ value: 41 }))
  }),
  new SyncMessage.FullSnapshot({
    stateName: "node_resource",
    source: nodeA,
    generation: Generation.make(7, 0),
    wireVersion: 1,
    createdAt: 0,
    modifiedAt: 0,
    payload: ok(resourceCodec.encodeView(resourceView))
  }),
  new SyncMessage.DeltaUpdate({
    stateName: "node_resource",
    source: nodeA,
    generation: Generation.make(7, 1),
    wireVersion: 1,
    modifiedAt: 12.25,
    payload: ok(resourceCodec.encodeDelta(resourceDelta))
  }),
  new SyncMessage.RequestSnapshot({ stateName: "counter", source: nodeA, generation: Generation.make(5, 6), wireVersion: 1 }),
  new SyncMessage.RequestSnapshot({ stateName: "node_resource", source: nodeA, wireVersion: 2 }),
  new SyncMessage.BatchedChangeFeed({
    source: nodeA,
    notices: [
      { stateName: "counter", source: nodeA, generation: Generation.make(1, 1) },
      { stateName: "node_resource", source: NodeId.make("node-b"), generation: Generation.make(2, 0) }
    ]
  })
].map((m) => ok(Codec.encodeFrame(m, LIMIT)))

const Position = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1_000_000 }))
const Mutation = Schema.Union([
  Schema.Struct({ op: Schema.Literal("flip"), at: Position, bit: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 7 })) }),
  Schema.Struct({ op: Schema.Literal("set"), at: Position, value: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 })) }),
  Schema.Struct({ op: Schema.Literal("truncate"), at: Position }),
  Schema.Struct({ op: Schema.Literal("delete"), at: Position, count: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 16 })) }),
  Schema.Struct({ op: Schema.Literal("splice"), at: Position, other: Position, from: Position, length: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 24 })) })
])
type Mutation = typeof Mutation.Type
const Mutations = Schema.Array(Mutation).check(Schema.isMinLength(1), Schema.isMaxLength(8))
const FrameIndex = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: corpus.length - 1 }))

/** Applies the mutations in order; positions are taken modulo the current length. */
const mutate = (input: Uint8Array, mutations: ReadonlyArray<Mutation>, donors: ReadonlyArray<Uint8Array>): Uint8Array => {
  let bytes = input.slice()
  for (const m of mutations) {
    const n = bytes.length
    switch (m.op) {
      case "flip":
        if (n > 0) bytes[m.at % n] ^= 1 << m.bit
        break
      case "set":
        if (n > 0) bytes[m.at % n] = m.value
        break
      case "truncate":
        bytes = bytes.slice(0, n === 0 ? 0 : m.at % n)
        break
      case "delete": {
        const at = n === 0 ? 0 : m.at % n
        bytes = Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + m.count)])
        break
      }
      case "splice": {
        const donor = donors[m.other % donors.length]
        const from = m.from % donor.length
        const piece = donor.subarray(from, from + m.length)
        const at = n === 0 ? 0 : m.at % (n + 1)
        bytes = Uint8Array.from([...bytes.subarray(0, at), ...piece, ...bytes.subarray(at)])
        break
      }
    }
  }
  return bytes
}

const wrap = (body: Uint8Array): Uint8Array => Simulation.frameWithBody(body)

const isFrameError = (u: unknown) => u instanceof DStateError.MalformedMessage || u instanceof DStateError.MessageTooLarge
const isMessage = Schema.is(SyncMessage.SyncMessage)

/** The decoder's verdict, checked to be a typed error or a valid message; the test fails on a throw. */
const verdict = (frame: Uint8Array, from?: NodeId.NodeId): "error" | "message" => {
  const result = Codec.decodeFrame(frame, LIMIT, from)
  if (Result.isFailure(result)) {
    assert.isTrue(isFrameError(result.failure), `not a frame error: ${String(result.failure)}`)
    if (from !== undefined) assert.strictEqual(result.failure.node, from)
    return "error"
  }
  assert.isTrue(isMessage(result.success), "decoded a value that is not a SyncMessage")
  // A message that decodes re-encodes to the same bytes.
  assert.deepStrictEqual(ok(Codec.encodeFrame(result.success, LIMIT)), frame)
  return "message"
}

describe("decoders under mutation", () => {
  it.effect.prop(
    "mutated frames (flips, writes, truncations, deletions, splices) decode to a typed error or a valid message",
    [FrameIndex, Mutations],
    ([index, mutations]) =>
      Effect.sync(() => {
        const original = corpus[index]
        const mutated = mutate(original, mutations, corpus)
        const outcome = verdict(mutated, nodeA)
        const unchanged = mutated.length === original.length && mutated.every((b, i) => b === original[i])
        // Without a recomputed checksum, a frame decodes only when its bytes are intact.
        assert.strictEqual(outcome === "message", unchanged)
      }),
    { arbitrary: { seed: 90210, runs: 2000 } }
  )

  it.effect.prop(
    "mutated bodies behind a recomputed header reach the message decoder: typed error or valid message",
    [FrameIndex, Mutations],
    ([index, mutations]) =>
      Effect.sync(() => {
        const body = corpus[index].subarray(SyncMessage.frameHeaderBytes)
        const donors = corpus.map((f) => f.subarray(SyncMessage.frameHeaderBytes))
        verdict(wrap(mutate(body, mutations, donors)))
      }),
    { arbitrary: { seed: 4711, runs: 3000 } }
  )

  it.effect.prop(
    "two valid frames spliced together never decode as one",
    [FrameIndex, FrameIndex, Position],
    ([i, j, cut]) =>
      Effect.sync(() => {
        const first = corpus[i]
        const second = corpus[j]
        const at = cut % (first.length + 1)
        const joined = Uint8Array.from([...first.subarray(0, at), ...second.subarray(at % (second.length + 1))])
        const equals = (frame: Uint8Array) => joined.length === frame.length && joined.every((b, k) => b === frame[k])
        assert.strictEqual(verdict(joined) === "message", equals(first) || equals(second))
      }),
    { arbitrary: { seed: 1234, runs: 1000 } }
  )

  const payloads: ReadonlyArray<readonly [string, Uint8Array, (bytes: Uint8Array) => Result.Result<unknown, unknown>, (u: unknown) => boolean]> = [
    ["counter view", ok(counterCodec.encodeView({ value: 41 })), (b) => counterCodec.decodeView(b, 1, nodeA), Schema.is(Fixtures.Counter.view)],
    ["resource view", ok(resourceCodec.encodeView(resourceView)), (b) => resourceCodec.decodeView(b, 1, nodeA), Schema.is(Fixtures.NodeResourceView)],
    ["resource delta", ok(resourceCodec.encodeDelta(resourceDelta)), (b) => resourceCodec.decodeDelta(b, 1, nodeA), Schema.is(Fixtures.NodeResourceDelta)]
  ]
  for (const [name, payload, decode, valid] of payloads) {
    it.effect.prop(
      `mutated ${name} payloads decode to MalformedMessage or a value of the schema`,
      [Mutations],
      ([mutations]) =>
        Effect.sync(() => {
          const result = decode(mutate(payload, mutations, payloads.map((p) => p[1])))
          if (Result.isFailure(result)) {
            assert.instanceOf(result.failure, DStateError.MalformedMessage)
          } else {
            assert.isTrue(valid(result.success), `decoded an invalid ${name}`)
          }
        }),
      { arbitrary: { seed: 777, runs: 1000 } }
    )

    it.effect.prop(
      `random bytes as a ${name} payload decode to MalformedMessage or a value of the schema`,
      [Schema.Uint8Array],
      ([bytes]) =>
        Effect.sync(() => {
          const result = decode(bytes)
          if (Result.isFailure(result)) assert.instanceOf(result.failure, DStateError.MalformedMessage)
          else assert.isTrue(valid(result.success))
        }),
      { arbitrary: { seed: 778, runs: 500, size: 48 } }
    )
  }
})

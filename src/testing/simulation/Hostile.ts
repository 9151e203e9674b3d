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
import { Effect, Result } from "effect"
import { crc32 } from "node:zlib"
import * as Generation from "../../Generation.ts"
import { encodeFrame } from "../../internal/codec.ts"
import * as NodeId from "../../NodeId.ts"
import * as StateRegistry from "../../StateRegistry.ts"
import { ackProtocolVersion, frameHeaderBytes, FullSnapshot, protocolVersion, RequestSnapshot } from "../../SyncMessage.ts"
import * as Fixtures from "../Fixtures.ts"
import type * as Prng from "../Prng.ts"
import type * as TestCluster from "../TestCluster.ts"
import { same } from "./Checker.ts"
import type { RunContext } from "./RunContext.ts"
import { stateNames } from "./Scenario.ts"

/**
 * A frame around arbitrary message bytes with a correct length prefix,
 * protocol version and checksum, so that the bytes reach the message decoder
 * (for hostile-frame and fuzzing tests).
 *
 * @category constructors
 * @since 0.1.0
 */
export const frameWithBody = (body: Uint8Array, version: number = protocolVersion): Uint8Array => {
  const frame = new Uint8Array(frameHeaderBytes + body.length)
  const view = new DataView(frame.buffer)
  view.setUint32(0, frame.length - 4)
  frame[4] = version
  view.setUint32(5, crc32(body))
  frame.set(body, frameHeaderBytes)
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
  const huge = new Uint8Array(frameHeaderBytes)
  new DataView(huge.buffer).setUint32(0, 0xffff_fff0)
  huge[4] = protocolVersion
  const valid = frameOf(new RequestSnapshot({ stateName: Fixtures.Counter.name, source: from, wireVersion: 1 }))
  // A valid body whose first byte, the message tag, names no message.
  const unknownTag = valid.slice(frameHeaderBytes)
  unknownTag[0] = 0x7f
  const wrongProtocol = valid.slice()
  wrongProtocol[4] = ackProtocolVersion + 1
  const flipped = valid.slice()
  const bit = random.int(frameHeaderBytes * 8, flipped.length * 8 - 1)
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

/** A node's inbound frame counts and the counter's unsupported-version count. */
const countsOn = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode) {
  const registry = yield* ctx.cluster.run(node, StateRegistry.StateRegistry)
  const inbound = yield* registry.inboundMetrics
  const counter = yield* (yield* ctx.handleOn(node, Fixtures.Counter.name)).metrics
  return { inbound, unsupported: counter.unsupportedVersion }
})

/**
 * `hostile`: once the cluster is idle, every node receives the hostile frames
 * from a random peer (or a stranger); each node's registry must count exactly
 * six rejected frames (one too large, five malformed), one unknown state and
 * one unsupported version, and the observer must see every rejection, with
 * no view map changed.
 */
export const inject = Effect.fnUntraced(function*(ctx: RunContext) {
  const { checker, cluster, fr, network } = ctx
  yield* cluster.settle
  checker.setInjecting(true)
  const targets = cluster.nodes
  const before = yield* Effect.forEach(targets, (t) =>
    Effect.map(countsOn(ctx, t), (counts) => ({
      ...counts,
      maps: stateNames.map((s) => checker.latest.get(s)!.get(t.id))
    })))
  let expectedRejected = 0
  for (const target of targets) {
    const peers = targets.filter((n) => n !== target)
    const from = peers.length > 0 ? fr.pick(peers).id : NodeId.make("node-stranger")
    const frames = hostileFrames(from, fr)
    for (const hostile of frames) {
      if (hostile.outcome === "rejected") expectedRejected++
      yield* network.inject(from, target.id, hostile.frame)
    }
  }
  yield* cluster.settle
  for (const [i, target] of targets.entries()) {
    const { inbound, unsupported } = yield* countsOn(ctx, target)
    const b = before[i]
    const delta = {
      rejected: inbound.framesRejected - b.inbound.framesRejected,
      tooLarge: inbound.tooLarge - b.inbound.tooLarge,
      malformed: inbound.malformed - b.inbound.malformed,
      unknownState: inbound.unknownState - b.inbound.unknownState,
      unsupported: unsupported - b.unsupported
    }
    const expected = { rejected: 6, tooLarge: 1, malformed: 5, unknownState: 1, unsupported: 1 }
    if (!same(delta, expected)) {
      checker.violation("HostileFrameCount", `${target.id}: ${JSON.stringify(delta)}, expected ${JSON.stringify(expected)}`)
    }
    for (const [k, s] of stateNames.entries()) {
      if (checker.latest.get(s)!.get(target.id) !== b.maps[k]) {
        checker.violation("HostileFrameChangedState", `${target.id}'s ${s} views changed`)
      }
    }
  }
  checker.counts.hostileExpected += expectedRejected
  if (checker.counts.hostileRejected !== checker.counts.hostileExpected) {
    checker.violation(
      "HostileFrameCount",
      `observer saw ${checker.counts.hostileRejected} rejections of ${checker.counts.hostileExpected} hostile frames`
    )
  }
  checker.setInjecting(false)
})

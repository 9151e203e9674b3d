/**
 * Backpressure of the TCP runtime: a state's deltas wait for a peer that is
 * keeping up instead of being dropped at its outbound queue's cap, and a peer
 * that stopped reading is not waited for. On the queue alone (`TestClock`):
 * the high-water mark, relief at half of it, a stall. Over real loopback
 * sockets: an owner making 3,000 deltas as fast as it can, with queues of 32
 * frames, delivers every one of them as a delta (no gap, nothing dropped), and
 * with a member that never reads besides, still finishes, that member being
 * counted as stalled (3,000 deltas of 16 KiB, more than its socket buffers
 * hold). And the options at their edges.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, type Duration, Effect, Fiber, Layer } from "effect"
import { NodeId, StateRegistry, SyncStrategy } from "dstate"
import { Fixtures } from "dstate/testing"
import { TestClock } from "effect/testing"
import * as Outbound from "../src/node/internal/outbound.ts"
import * as TcpRuntime from "../src/node/TcpRuntime.ts"
import { eventuallyWithin } from "./support/Eventually.ts"
import { rawAuthenticated } from "./support/RawClient.ts"
import { awaitMesh, buildInOwnScope, fastTimings, secret } from "./support/RealNodes.ts"

const frame = (id: number) => new Uint8Array([id, 0, 0, 0])
const sequence = { key: "s", replaces: false } as const

describe("Outbound: backpressure marks", () => {
  it.effect("pressed at the mark while the peer writes; relieved at half of it, or once it has written nothing for the stall timeout", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 1 << 20, maxFrames: 100 }, { frames: 10, bytes: 1 << 20, stallMillis: 1000 })
      for (let i = 0; i < 9; i++) queue.offer(frame(i), sequence)
      assert.isFalse(queue.pressed())
      queue.offer(frame(9), sequence)
      assert.isTrue(queue.pressed())
      const waiting = yield* Effect.forkChild(queue.relieved)
      // 4 frames written: 6 left, not yet under half of the mark.
      yield* queue.take(4)
      yield* queue.written
      yield* Effect.yieldNow
      assert.isUndefined(waiting.pollUnsafe())
      yield* queue.take(2)
      yield* queue.written
      assert.strictEqual(yield* Fiber.join(waiting), "drained")

      // Back at the mark; then the peer writes nothing for the stall timeout.
      for (let i = 0; i < 6; i++) queue.offer(frame(i), sequence)
      assert.isTrue(queue.pressed())
      const stalling = yield* Effect.forkChild(queue.relieved)
      yield* TestClock.adjust("999 millis")
      assert.isUndefined(stalling.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Fiber.join(stalling), "stalled")
      // A stalled peer is not waited for: not pressed, whatever its queue holds.
      assert.isFalse(queue.pressed())
      assert.strictEqual(yield* queue.relieved, "stalled")
    }))

  it.effect("a cleared queue (its peer left) relieves its waiters at once", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 1 << 20, maxFrames: 100 }, { frames: 4, bytes: 1 << 20, stallMillis: 1000 })
      for (let i = 0; i < 4; i++) queue.offer(frame(i), sequence)
      const waiting = yield* Effect.forkChild(queue.relieved)
      yield* Effect.yieldNow
      assert.isUndefined(waiting.pollUnsafe())
      queue.clear()
      assert.strictEqual(yield* Fiber.join(waiting), "drained")
    }))

  it.effect("the byte mark the same way", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 1 << 20, maxFrames: 100 }, { frames: 100, bytes: 16, stallMillis: 1000 })
      for (let i = 0; i < 3; i++) queue.offer(frame(i), sequence)
      assert.isFalse(queue.pressed())
      queue.offer(frame(3), sequence)
      assert.isTrue(queue.pressed())
      yield* queue.take(3)
      yield* queue.written
      assert.strictEqual(yield* queue.relieved, "drained")
    }))
})

// ---- over TCP -------------------------------------------------------------------------------------

const poll = eventuallyWithin("20 seconds")
let ids = 0
const fast = {
  ...fastTimings,
  host: "127.0.0.1",
  port: 0,
  heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("5 seconds"), checkInterval: "50 millis" }
} as const

/** A node whose queues hold 32 frames, waiting for a peer at 8. */
const startNode = (seeds: ReadonlyArray<TcpRuntime.Address>) =>
  Effect.gen(function*() {
    const id = NodeId.make(`bp-${process.pid}-${++ids}`)
    const layer = StateRegistry.layer.pipe(Layer.provideMerge(TcpRuntime.layer({
      ...fast,
      nodeId: id,
      secret,
      seeds,
      limits: { maxQueuedFrames: 32, backpressureFrames: 8 }
    })))
    const { context, scope } = yield* buildInOwnScope(layer)
    const resource = yield* StateRegistry.register(Fixtures.NodeResource, { strategy: SyncStrategy.activePush(), persist: false })
      .pipe(Effect.provideContext(context))
    return { id, scope, context, resource, transport: Context.get(context, TcpRuntime.TcpTransport) }
  })

/**
 * `n` deltas, as fast as the owner goes (a yield every 64, so that the transport's writers get turns); with
 * `tags`, each delta carries them (to outgrow the kernel's socket buffers sooner).
 */
const deltas = (node: Effect.Success<ReturnType<typeof startNode>>, n: number, tags?: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    for (let i = 1; i <= n; i++) {
      yield* node.resource.mutateWithDelta((s) =>
        Fixtures.updateResource(s, tags === undefined ? { cpuPercent: i } : { cpuPercent: i, tags: [...tags, String(i)] })
      )
      if (i % 64 === 0) yield* Effect.yieldNow
    }
  })

describe("TcpRuntime: backpressure", () => {
  it.live("3,000 deltas to a peer that keeps up, through queues of 32 frames: every one arrives as a delta, none dropped", () =>
    Effect.gen(function*() {
      const a = yield* startNode([])
      const b = yield* startNode([a.transport.address])
      yield* awaitMesh([a, b], "8 seconds")
      yield* poll(Effect.map(b.resource.snapshot, (views) => assert.isTrue(views.has(a.id))))
      const before = yield* b.resource.metrics
      yield* deltas(a, 3000)
      yield* poll(Effect.map(b.resource.snapshot, (views) => assert.strictEqual(views.get(a.id)?.value.cpuPercent, 3000)))
      const after = yield* b.resource.metrics
      assert.strictEqual(after.deltasReceived - before.deltasReceived, 3000)
      assert.strictEqual(after.gapsDetected - before.gapsDetected, 0)
      const stats = yield* a.transport.stats
      assert.isAbove(stats.backpressureWaits, 0)
      assert.strictEqual(stats.backpressureStalls, 0)
      const [peer] = yield* a.transport.peers
      assert.deepStrictEqual([peer.outbound.droppedOldest, peer.outbound.replacedAtCap], [0, 0])
      assert.isAtMost(peer.outbound.peakQueuedBytes, 32 * 1024 * 1024)
    }), 60_000)

  it.live("with a member that never reads besides: the owner finishes, the healthy peer gets every delta, the silent one is counted as stalled", () =>
    Effect.gen(function*() {
      const a = yield* startNode([])
      const b = yield* startNode([a.transport.address])
      yield* awaitMesh([a, b], "8 seconds")
      const silent = yield* rawAuthenticated(a.transport.address, "bp-silent", [`dstate/state/${Fixtures.NodeResource.name}`])
      silent.socket.pause() // authenticated, then never reads again
      yield* poll(Effect.map(a.transport.peers, (peers) => assert.strictEqual(peers.length, 2)))
      yield* poll(Effect.map(b.resource.snapshot, (views) => assert.isTrue(views.has(a.id))))
      const before = yield* b.resource.metrics
      // 3,000 deltas of 16 KiB each: far more than the silent member's socket buffers take.
      yield* deltas(a, 3000, ["x".repeat(16 * 1024)])
      yield* poll(Effect.map(b.resource.snapshot, (views) => assert.strictEqual(views.get(a.id)?.value.cpuPercent, 3000)))
      const after = yield* b.resource.metrics
      assert.strictEqual(after.deltasReceived - before.deltasReceived, 3000)
      assert.strictEqual(after.gapsDetected - before.gapsDetected, 0)
      const stats = yield* a.transport.stats
      assert.isAtLeast(stats.backpressureStalls, 1)
      const peers = yield* a.transport.peers
      const stalled = peers.find((p) => p.node === "bp-silent")!
      assert.isAbove(stalled.outbound.replacedAtCap, 0)
      assert.strictEqual(stalled.outbound.queuedFrames, 32)
    }), 60_000)

  it.live("the marks are checked: 1 to the queue's caps", () =>
    Effect.gen(function*() {
      const refused = (limits: Partial<TcpRuntime.Limits>, stallTimeout?: Duration.Input) =>
        Effect.flip(buildInOwnScope(TcpRuntime.layer({
          ...fast,
          nodeId: `bp-bad-${++ids}`,
          secret,
          limits,
          ...(stallTimeout === undefined ? {} : { stallTimeout })
        })))
      assert.strictEqual(
        (yield* refused({ maxQueuedFrames: 32, backpressureFrames: 33 })).message,
        "invalid TcpRuntime option limits.backpressureFrames = 33: must be an integer from 1 to 32"
      )
      assert.strictEqual(
        (yield* refused({ backpressureFrames: 0 })).message,
        "invalid TcpRuntime option limits.backpressureFrames = 0: must be an integer from 1 to 10000"
      )
      assert.strictEqual((yield* refused({ backpressureBytes: 0 })).message.startsWith("invalid TcpRuntime option limits.backpressureBytes"), true)
      assert.strictEqual((yield* refused({}, "0 millis")).message.startsWith("invalid TcpRuntime option stallTimeout"), true)
      // The edges themselves are accepted.
      yield* buildInOwnScope(TcpRuntime.layer({ ...fast, nodeId: `bp-edge-${++ids}`, secret, limits: { maxQueuedFrames: 32, backpressureFrames: 32, backpressureBytes: 1 } }))
    }), 20_000)
})

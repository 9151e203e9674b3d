/**
 * The TCP runtime over real loopback sockets: the runtime conformance suite
 * on the real clock, then what only a real transport has to survive
 * (unauthenticated and forged input, oversized length prefixes, peers that
 * stop reading, failure detection and reconnection, TLS).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Deferred, Duration, Effect, Exit, Layer, Metric, Option, PubSub, Redacted, Result, Scope, Stream } from "effect"
import { ActorRuntime, ClusterEvents, NodeId, StateRegistry, SyncMessage } from "dstate"
import { Fixtures } from "dstate/testing"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { encodeFrame } from "../src/internal/codec.ts"
import * as Protocol from "../src/node/internal/protocol.ts"
import * as TcpRuntime from "../src/node/TcpRuntime.ts"
import * as RuntimeSuite from "./conformance/RuntimeSuite.ts"
import { eventually, eventuallyWithin } from "./support/Eventually.ts"
import { frameOf, messagesOf, rawAuthenticated, rawConnect, rawHello, write } from "./support/RawClient.ts"
import * as RealNodes from "./support/RealNodes.ts"
import { buildInOwnScope, fastTcp, type ScopedNode, secret, type TcpNodeServices } from "./support/RealNodes.ts"

const fast = fastTcp

type NodeServices = TcpNodeServices

type TcpNode = ScopedNode<NodeServices>

let nodeCounter = 0
/** Ids that sort in creation order ("tcp-0001" < "tcp-0002"), unique across the file. */
const nextId = () => NodeId.make(`tcp-${String(++nodeCounter).padStart(4, "0")}`)

const transportOf = (node: { readonly context: Context.Context<NodeServices> }) =>
  Context.get(node.context, TcpRuntime.TcpTransport)
const runtimeOf = (node: { readonly context: Context.Context<NodeServices> }) =>
  Context.get(node.context, ActorRuntime.ActorRuntime)
const eventsOf = (node: { readonly context: Context.Context<NodeServices> }) =>
  Context.get(node.context, ClusterEvents.ClusterEvents)

/** Starts one node in its own closeable scope, closed with the test's scope at the latest. */
const startNode = (options: Partial<TcpRuntime.Options>) =>
  Effect.gen(function*() {
    const id = options.nodeId ?? nextId()
    const { context, scope } = yield* buildInOwnScope(
      TcpRuntime.layer({ ...fast, ...options, nodeId: id, secret: options.secret ?? secret })
    )
    return { id: NodeId.make(String(id)), scope, context } satisfies TcpNode
  })

const poll = eventuallyWithin("8 seconds")

/** Waits until every node sees exactly the others as members. */
const awaitMesh = (nodes: ReadonlyArray<TcpNode>) => RealNodes.awaitMesh(nodes, "8 seconds")

RuntimeSuite.suite(
  "tcp",
  (count) =>
    RealNodes.realCluster(
      count,
      (running: ReadonlyArray<TcpNode>) => startNode(running.length === 0 ? {} : { seeds: [transportOf(running[0]).address] }),
      "8 seconds"
    ),
  { clock: "real", timeout: 20_000 }
)

// ---- raw clients ----------------------------------------------------------------------------------
// (test/support/RawClient.ts)

/** Starts a registry on a running node and registers the counter state there. */
const withCounter = (node: TcpNode, options?: StateRegistry.RegisterOptions) =>
  Effect.gen(function*() {
    const registry = yield* Layer.buildWithScope(
      StateRegistry.layer.pipe(Layer.provide(Layer.succeedContext(node.context))),
      node.scope
    )
    const counter = yield* StateRegistry.register(Fixtures.Counter, options).pipe(
      Effect.provideContext(registry),
      Scope.provide(node.scope)
    )
    return { registry, counter }
  })

/** The registry's counters of inbound frames. */
const inboundOf = (registry: Context.Context<StateRegistry.StateRegistry>) =>
  Effect.provideContext(Effect.flatMap(StateRegistry.StateRegistry, (r) => r.inboundMetrics), registry)

/** An encoded snapshot frame of `stateName` from `source` at generation (1, `age`), one byte of payload by default. */
const snapshotFrame = (options: {
  readonly stateName: string
  readonly source: string
  readonly age: number
  readonly payload?: Uint8Array | undefined
}) =>
  Result.getOrThrow(encodeFrame(
    new SyncMessage.FullSnapshot({
      stateName: options.stateName,
      source: NodeId.make(options.source),
      generation: { incarnation: 1, age: options.age },
      wireVersion: 1,
      createdAt: 0,
      modifiedAt: 0,
      payload: options.payload ?? new Uint8Array([0])
    }),
    512 * 1024
  ))

/** A node running a registry with the counter state, plus its transport diagnostics. */
const registryNode = (options: Partial<TcpRuntime.Options> = {}) =>
  Effect.gen(function*() {
    const node = yield* startNode(options)
    return { node, ...(yield* withCounter(node)) }
  })

describe("TcpRuntime: options", () => {
  /** Builds a node with `options` on top of the test defaults, and closes it. */
  const build = (options: Partial<TcpRuntime.Options>) =>
    Effect.scoped(Layer.build(TcpRuntime.layer({ ...fast, nodeId: nextId(), secret, ...options })))
  const refusal = (module: string, option: string, value: unknown, reason: string) =>
    new TcpRuntime.InvalidOptions({ module, option, value, reason })
  const positiveInteger = "must be a positive integer"
  const positiveDuration = "must be a finite positive duration"
  const nonNegativeDuration = "must be a finite non-negative duration"
  const phi = (options: Parameters<typeof TcpRuntime.phiAccrual>[0]) => ({ heartbeat: { ...fast.heartbeat, detector: TcpRuntime.phiAccrual(options) } })
  /** Per option: the options at the last good value, and the first bad ones with the error each gives. */
  const edges: ReadonlyArray<{
    readonly option: string
    readonly good: ReadonlyArray<Partial<TcpRuntime.Options>>
    readonly bad: ReadonlyArray<readonly [Partial<TcpRuntime.Options>, unknown, string]>
  }> = [
    { option: "port", good: [{ port: 0 }], bad: [[{ port: -1 }, -1, "must be an integer from 0 to 65535"], [{ port: 65536 }, 65536, "must be an integer from 0 to 65535"]] },
    { option: "limits.maxFrameBytes", good: [{ limits: { maxFrameBytes: 1 } }], bad: [[{ limits: { maxFrameBytes: 0 } }, 0, positiveInteger], [{ limits: { maxFrameBytes: 1.5 } }, 1.5, positiveInteger]] },
    { option: "limits.handshakeFrameBytes", good: [{ limits: { handshakeFrameBytes: 1 } }], bad: [[{ limits: { handshakeFrameBytes: 0 } }, 0, positiveInteger]] },
    {
      option: "limits.maxQueuedBytes",
      good: [{ limits: { maxFrameBytes: 1000, maxQueuedBytes: 2024 } }],
      bad: [[{ limits: { maxFrameBytes: 1000, maxQueuedBytes: 2023 } }, 2023, "must be an integer of at least maxFrameBytes + 1024"]]
    },
    { option: "limits.maxQueuedFrames", good: [{ limits: { maxQueuedFrames: 1 } }], bad: [[{ limits: { maxQueuedFrames: 0 } }, 0, positiveInteger]] },
    { option: "limits.maxPendingHandshakes", good: [{ limits: { maxPendingHandshakes: 1 } }], bad: [[{ limits: { maxPendingHandshakes: 0 } }, 0, positiveInteger]] },
    {
      option: "limits.mailbox",
      good: [{ limits: { mailbox: 1 } }, { limits: { mailbox: "unbounded" } }],
      bad: [
        [{ limits: { mailbox: 0 } }, 0, "must be a positive integer or \"unbounded\""],
        [{ limits: { mailbox: 1.5 } }, 1.5, "must be a positive integer or \"unbounded\""]
      ]
    },
    {
      option: "heartbeat.interval",
      good: [{ heartbeat: { ...fast.heartbeat, interval: 1 } }],
      bad: [
        [{ heartbeat: { ...fast.heartbeat, interval: 0 } }, 0, positiveDuration],
        [{ heartbeat: { ...fast.heartbeat, interval: "-1 seconds" } }, "-1 seconds", positiveDuration],
        [{ heartbeat: { ...fast.heartbeat, interval: "Infinity" } }, "Infinity", positiveDuration],
        [{ heartbeat: { ...fast.heartbeat, interval: Number.NaN } }, Number.NaN, positiveDuration]
      ]
    },
    {
      option: "heartbeat.checkInterval",
      good: [{ heartbeat: { ...fast.heartbeat, checkInterval: 1 } }],
      bad: [[{ heartbeat: { ...fast.heartbeat, checkInterval: 0 } }, 0, positiveDuration]]
    },
    {
      option: "heartbeat.detector.timeout",
      good: [{ heartbeat: { ...fast.heartbeat, detector: TcpRuntime.fixedTimeout(1) } }],
      bad: [[{ heartbeat: { ...fast.heartbeat, detector: TcpRuntime.fixedTimeout(0) } }, 0, positiveDuration]]
    },
    {
      option: "heartbeat.detector.threshold",
      good: [phi({ threshold: 0.001 })],
      bad: [[phi({ threshold: 0 }), 0, "must be a finite positive number"], [phi({ threshold: Number.POSITIVE_INFINITY }), Number.POSITIVE_INFINITY, "must be a finite positive number"]]
    },
    { option: "heartbeat.detector.minStdDeviation", good: [phi({ minStdDeviation: 1 })], bad: [[phi({ minStdDeviation: 0 }), 0, positiveDuration]] },
    {
      option: "heartbeat.detector.acceptableHeartbeatPause",
      good: [phi({ acceptableHeartbeatPause: 0 })],
      bad: [[phi({ acceptableHeartbeatPause: -1 }), -1, nonNegativeDuration]]
    },
    {
      option: "heartbeat.detector.maxSampleSize",
      good: [phi({ maxSampleSize: 1 })],
      bad: [[phi({ maxSampleSize: 0 }), 0, positiveInteger], [phi({ maxSampleSize: 2.5 }), 2.5, positiveInteger]]
    },
    { option: "heartbeat.detector.maxSilence", good: [phi({ maxSilence: 1 })], bad: [[phi({ maxSilence: 0 }), 0, positiveDuration]] },
    { option: "handshakeTimeout", good: [{ handshakeTimeout: 1 }], bad: [[{ handshakeTimeout: 0 }, 0, positiveDuration]] },
    {
      option: "heartbeat.localHealth.max",
      good: [
        { heartbeat: { ...fast.heartbeat, localHealth: { max: 0 } } },
        { heartbeat: { ...fast.heartbeat, localHealth: true } },
        { heartbeat: { ...fast.heartbeat, localHealth: false } }
      ],
      bad: [
        [{ heartbeat: { ...fast.heartbeat, localHealth: { max: -1 } } }, -1, "must be a non-negative integer"],
        [{ heartbeat: { ...fast.heartbeat, localHealth: { max: 2.5 } } }, 2.5, "must be a non-negative integer"]
      ]
    },
    {
      option: "downAfter",
      good: [{ downAfter: 0 }, { downAfter: "30 seconds" }],
      bad: [[{ downAfter: -1 }, -1, nonNegativeDuration], [{ downAfter: "Infinity" }, "Infinity", nonNegativeDuration]]
    },
    { option: "connectTimeout", good: [{ connectTimeout: 1 }], bad: [[{ connectTimeout: 0 }, 0, positiveDuration]] },
    {
      option: "limits.maxPendingHandshakesPerAddress",
      good: [{ limits: { maxPendingHandshakesPerAddress: 1 } }],
      bad: [[{ limits: { maxPendingHandshakesPerAddress: 0 } }, 0, positiveInteger]]
    },
    {
      option: "limits.reservedHandshakes",
      good: [{ limits: { reservedHandshakes: 0 } }],
      bad: [[{ limits: { reservedHandshakes: -1 } }, -1, "must be a non-negative integer"]]
    },
    { option: "handshakeIdleTimeout", good: [{ handshakeIdleTimeout: 1 }], bad: [[{ handshakeIdleTimeout: 0 }, 0, positiveDuration]] },
    { option: "rejectionLogInterval", good: [{ rejectionLogInterval: 1 }], bad: [[{ rejectionLogInterval: 0 }, 0, positiveDuration]] },
    {
      option: "syncProtocol",
      good: [{ syncProtocol: 1 }, { syncProtocol: 2 }],
      bad: [
        [{ syncProtocol: 0 as never }, 0, "must be an integer from 1 to 2"],
        [{ syncProtocol: 3 as never }, 3, "must be an integer from 1 to 2"],
        [{ syncProtocol: 1.5 as never }, 1.5, "must be an integer from 1 to 2"]
      ]
    },
    {
      option: "leaveTimeout",
      good: [{ leaveTimeout: 0 }],
      bad: [[{ leaveTimeout: -1 }, -1, nonNegativeDuration], [{ leaveTimeout: "Infinity" }, "Infinity", nonNegativeDuration]]
    }
  ]

  it.live("every option at its edge: the last good value builds a node, the first bad one fails the layer with InvalidOptions", () =>
    Effect.gen(function*() {
      for (const { bad, good, option } of edges) {
        for (const options of good) {
          const exit = yield* Effect.exit(build(options))
          assert.isTrue(Exit.isSuccess(exit), `${option}: ${JSON.stringify(options)} ${Exit.isFailure(exit) ? exit.cause : ""}`)
        }
        for (const [options, value, reason] of bad) {
          assert.deepStrictEqual(yield* Effect.flip(build(options)), refusal("TcpRuntime", option, value, reason), option)
        }
      }
    }), 30_000)

  it.live("a secret is checked without being quoted in the error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(build({ secret: Redacted.make("fifteen bytes!!") }))
      assert.deepStrictEqual(error, new TcpRuntime.InvalidOptions({ module: "TcpRuntime", option: "secret", reason: "must be at least 16 bytes" }))
      assert.isFalse("value" in error)
      assert.strictEqual(error.message, "invalid TcpRuntime option secret: must be at least 16 bytes")
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(build({ secret: Redacted.make("sixteen bytes!!!") }))))
    }))

  it.live("a port that is taken fails the layer with ListenFailed carrying the socket's error", () =>
    Effect.gen(function*() {
      const first = yield* startNode({})
      const { port } = transportOf(first).address
      const error = yield* Effect.flip(build({ port }))
      assert.instanceOf(error, TcpRuntime.ListenFailed)
      if (error._tag !== "ListenFailed") return
      assert.strictEqual(error.host, "127.0.0.1")
      assert.strictEqual(error.port, port)
      assert.strictEqual((error.cause as { readonly code?: string }).code, "EADDRINUSE")
    }))
})

describe("TcpRuntime: security and limits", () => {
  it.live("a client without the secret is rejected and nothing it sends is applied", () =>
    Effect.gen(function*() {
      const { counter, node, registry } = yield* registryNode()
      const address = transportOf(node).address
      const before = yield* counter.snapshot
      const registryInbound = yield* inboundOf(registry)
      // A perfectly valid snapshot frame from a made-up node, wrapped in a valid transport frame.
      const forged = snapshotFrame({ stateName: "counter", source: "intruder", age: 99 })

      // 1. No handshake at all: the frame is refused and the connection closed.
      const bare = yield* rawConnect(address)
      yield* write(bare.socket, frameOf({ _tag: "Deliver", payload: forged }))
      yield* Deferred.await(bare.closed).pipe(Effect.timeout("5 seconds"))

      // 2. A handshake with the wrong secret: the proof does not verify, and the node says so before closing.
      const wrong = yield* rawConnect(address)
      const { transcript } = yield* rawHello(wrong, "intruder", "s")
      const badKey = Protocol.secretBytes("not-the-cluster-secret")
      yield* write(wrong.socket, frameOf({
        _tag: "Auth",
        proof: Protocol.proof(badKey, "dialer", transcript),
        info: { host: "127.0.0.1", port: 1, groupsVersion: 1, groups: ["dstate/state/counter"], members: [] }
      }))
      yield* write(wrong.socket, frameOf({ _tag: "Deliver", payload: forged }))
      yield* Deferred.await(wrong.closed).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual(messagesOf(wrong.received).map((m) => m._tag), ["Challenge", "Refused"])

      const stats = yield* transportOf(node).stats
      assert.strictEqual(stats.rejectedUnauthenticated, 1)
      assert.strictEqual(stats.authFailures, 1)
      assert.strictEqual(stats.nodesJoined, 0)
      assert.strictEqual(stats.handshakesCompleted, 0)
      assert.deepStrictEqual(yield* counter.snapshot, before)
      assert.deepStrictEqual([...(yield* counter.snapshot).keys()], [node.id])
      assert.strictEqual((yield* eventsOf(node).members).size, 0)
      assert.deepStrictEqual(yield* inboundOf(registry), registryInbound)
    }), 20_000)

  it.live("an authenticated frame claiming another source is rejected by the registry and not applied", () =>
    Effect.gen(function*() {
      const { counter, node, registry } = yield* registryNode()
      const client = yield* rawAuthenticated(transportOf(node).address, "raw-peer", ["dstate/state/counter"])
      yield* poll(Effect.gen(function*() {
        assert.isTrue((yield* eventsOf(node).members).has(NodeId.make("raw-peer")))
      }))
      const forged = snapshotFrame({ stateName: "counter", source: "someone-else", age: 5 })
      yield* write(client.socket, frameOf({ _tag: "Deliver", payload: forged }))
      const inbound = yield* poll(Effect.gen(function*() {
        const m = yield* inboundOf(registry)
        assert.strictEqual(m.framesRejected, 1)
        return m
      }))
      assert.strictEqual(inbound.malformed, 1)
      assert.deepStrictEqual([...(yield* counter.snapshot).keys()], [node.id])
    }), 20_000)

  it.live("a frame announcing 4 GiB is rejected from its length prefix: no allocation, connection closed, node serves", () =>
    Effect.gen(function*() {
      const { counter, node } = yield* registryNode()
      const peer = yield* startNode({ seeds: [transportOf(node).address] })
      yield* awaitMesh([node, peer])
      const memoryBefore = process.memoryUsage().arrayBuffers

      // Unauthenticated: the 64 KiB handshake limit applies.
      const bare = yield* rawConnect(transportOf(node).address)
      yield* write(bare.socket, Uint8Array.of(0xff, 0xff, 0xff, 0xff, Protocol.transportProtocol, 0, 0, 0, 0))
      yield* Deferred.await(bare.closed).pipe(Effect.timeout("5 seconds"))

      // Authenticated: the frame limit applies; the rest of the body follows, and is never buffered whole.
      const client = yield* rawAuthenticated(transportOf(node).address, "raw-big", [])
      yield* write(client.socket, Uint8Array.of(0xff, 0xff, 0xff, 0xff, Protocol.transportProtocol, 0, 0, 0, 0))
      yield* write(client.socket, new Uint8Array(1024 * 1024))
      yield* Deferred.await(client.closed).pipe(Effect.timeout("5 seconds"))

      const growth = process.memoryUsage().arrayBuffers - memoryBefore
      assert.isBelow(growth, 64 * 1024 * 1024, `arrayBuffers grew by ${growth} bytes`)
      const stats = yield* transportOf(node).stats
      assert.strictEqual(stats.rejectedTooLarge, 2)

      // The node still works: a peer's mutation reaches it and its queries answer.
      const { counter: peerCounter } = yield* withCounter(peer)
      yield* peerCounter.mutate(() => ({ value: 42 }))
      const seen = yield* poll(counter.query({ maxStaleness: "5 seconds" }, (views) => {
        assert.strictEqual(views.get(peer.id)?.value.value, 42)
        return views.size
      }))
      assert.strictEqual(seen, 2)
    }), 20_000)

  it.live("a peer that stops reading: the sender's queue stays under its cap, snapshots supersede", () =>
    Effect.gen(function*() {
      const cap = 1024 * 1024
      const node = yield* startNode({
        limits: { maxQueuedBytes: cap, maxFrameBytes: 512 * 1024 },
        // Long detector: the stalled peer stays a member while the queue is under pressure.
        heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("30 seconds") }
      })
      const client = yield* rawAuthenticated(transportOf(node).address, "slow-reader", ["g"])
      client.socket.pause() // authenticates, then never reads again
      const slow = NodeId.make("slow-reader")
      yield* poll(Effect.gen(function*() {
        assert.deepStrictEqual(yield* runtimeOf(node).members("g"), [slow])
      }))
      // 200 frames of 64 KiB = 12.5 MiB, far more than the cap and than the kernel buffers.
      const frame = new Uint8Array(64 * 1024)
      for (let i = 0; i < 200; i++) {
        yield* runtimeOf(node).send(slow, frame)
        const [peer] = yield* transportOf(node).peers
        assert.isAtMost(peer.outbound.queuedBytes, cap)
      }
      // Frames the caller says replace each other (one state's snapshots) supersede each other in the queue.
      for (let age = 1; age <= 50; age++) {
        const snapshot = snapshotFrame({ stateName: "s", source: node.id, age, payload: new Uint8Array(1000) })
        yield* runtimeOf(node).broadcast("g", snapshot, { key: "s", replaces: true })
      }
      // Every snapshot but the last one was replaced in the queue.
      const [peer] = yield* poll(Effect.map(transportOf(node).peers, (peers) =>
        peers.length === 1 && peers[0].outbound.superseded >= 49 && peers
      ))
      assert.strictEqual(peer.node, slow)
      assert.isAtMost(peer.outbound.queuedBytes, cap)
      assert.isAtMost(peer.outbound.peakQueuedBytes, cap)
      assert.isAbove(peer.outbound.droppedOldest, 0)
      assert.strictEqual(peer.outbound.superseded, 49)
      // Still a member: a slow reader is not a failed node.
      assert.isTrue((yield* eventsOf(node).members).has(slow))
    }), 30_000)
})

describe("TcpRuntime: handshake limits", () => {
  it.live("maxPendingHandshakes: exactly that many connections may be mid-handshake; one more is closed at once", () =>
    Effect.gen(function*() {
      const node = yield* startNode({ limits: { maxPendingHandshakes: 2 }, handshakeTimeout: "10 seconds", handshakeIdleTimeout: "10 seconds" })
      const address = transportOf(node).address
      const pending = yield* Effect.forEach([1, 2], () => rawConnect(address))
      yield* poll(Effect.map(transportOf(node).stats, (s) => assert.strictEqual(s.connectionsAccepted, 2)))
      const third = yield* rawConnect(address)
      yield* Deferred.await(third.closed).pipe(Effect.timeout("2 seconds"))
      const stats = yield* transportOf(node).stats
      assert.strictEqual(stats.rejectedPendingHandshakes, 1)
      // The two within the limit are still open, waiting for their Hello.
      for (const p of pending) assert.isFalse(Deferred.isDoneUnsafe(p.closed))
      // Once they go, the slots are free again: a new connection is taken into the handshake and gets its
      // Challenge. (One that comes before the node saw them go is refused, and counted.)
      for (const p of pending) p.socket.destroy()
      let refusedWhileFreeing = 0
      yield* poll(Effect.gen(function*() {
        const fourth = yield* rawConnect(address)
        yield* write(fourth.socket, frameOf({ _tag: "Hello", node: NodeId.make("fourth"), session: "s", nonce: new Uint8Array(32).fill(4) }))
        yield* eventually(
          Effect.sync(() => Deferred.isDoneUnsafe(fourth.closed) || messagesOf(fourth.received).length > 0),
          { timeout: "2 seconds", what: "a Challenge or the close" }
        )
        if (Deferred.isDoneUnsafe(fourth.closed) && messagesOf(fourth.received).length === 0) refusedWhileFreeing++
        assert.strictEqual(messagesOf(fourth.received)[0]?._tag, "Challenge")
        assert.isFalse(Deferred.isDoneUnsafe(fourth.closed))
      }).pipe(Effect.scoped))
      assert.strictEqual((yield* transportOf(node).stats).rejectedPendingHandshakes, 1 + refusedWhileFreeing)
    }), 20_000)

  it.live("handshakeFrameBytes: a frame before authentication may be that long, one byte more closes the connection", () =>
    Effect.gen(function*() {
      const limit = 1024
      const node = yield* startNode({ limits: { handshakeFrameBytes: limit } })
      const address = transportOf(node).address
      const announce = (total: number) => {
        const prefix = new Uint8Array(4)
        new DataView(prefix.buffer).setUint32(0, total - 4)
        return prefix
      }
      // A Hello of exactly `limit` bytes (its session string pads it).
      const helloOf = (padding: number) =>
        frameOf({ _tag: "Hello", node: NodeId.make("at-limit"), session: "s".repeat(padding), nonce: new Uint8Array(32).fill(5) })
      let padding = limit - helloOf(0).length
      while (helloOf(padding).length > limit) padding--
      const hello = helloOf(padding)
      assert.strictEqual(hello.length, limit)
      assert.deepStrictEqual([...hello.subarray(0, 4)], [...announce(limit)])
      // At the limit: not rejected for its size (the node waits for the rest of the frame).
      const atLimit = yield* rawConnect(address)
      yield* write(atLimit.socket, hello.subarray(0, 4))
      // One byte over: rejected from the prefix alone.
      const over = yield* rawConnect(address)
      yield* write(over.socket, announce(limit + 1))
      yield* Deferred.await(over.closed).pipe(Effect.timeout("2 seconds"))
      // The connection at the limit was kept: the rest of its frame is read, and answered.
      yield* write(atLimit.socket, hello.subarray(4))
      yield* poll(Effect.sync(() => assert.strictEqual(messagesOf(atLimit.received)[0]?._tag, "Challenge")))
      assert.isFalse(Deferred.isDoneUnsafe(atLimit.closed))
      assert.strictEqual((yield* transportOf(node).stats).rejectedTooLarge, 1)
    }), 20_000)
})

describe("TcpRuntime: shutdown", () => {
  it.live("connections accepted while a node closes are closed with it and never hold up the close", () =>
    Effect.gen(function*() {
      const node = yield* startNode({})
      const address = transportOf(node).address
      // Some connections are mid-handshake when the close starts; more arrive while it runs.
      const early = yield* Effect.forEach(Array.from({ length: 5 }), () => rawConnect(address))
      const late = Array.from({ length: 20 }, () => {
        const socket = Net.createConnection({ host: address.host, port: address.port })
        const closed = Deferred.makeUnsafe<void>()
        socket.on("error", () => {})
        socket.on("close", () => Deferred.doneUnsafe(closed, Effect.void))
        return { socket, closed }
      })
      const start = yield* Clock.currentTimeMillis
      yield* Scope.close(node.scope, Exit.void).pipe(Effect.timeout("5 seconds"))
      assert.isBelow((yield* Clock.currentTimeMillis) - start, 5000)
      // Every client, accepted or not, sees its connection end.
      yield* Effect.forEach([...early, ...late], (c) => Deferred.await(c.closed).pipe(Effect.timeout("2 seconds")), {
        discard: true
      })
      for (const c of late) c.socket.destroy()
      // The port is free again: nothing kept the server open.
      const reopened = yield* startNode({ port: address.port })
      assert.strictEqual(transportOf(reopened).address.port, address.port)
    }), 20_000)
})

describe("TcpRuntime: membership", () => {
  it.live("a peer that goes silent is NodeUnreachable within the detector bound, then NodeLeft after downAfter", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ downAfter: "1 second" })
      const b = yield* startNode({ seeds: [transportOf(a).address] })
      yield* awaitMesh([a, b])
      const subscription = yield* eventsOf(a).subscribe
      // A raw peer that authenticates and then goes quiet (no heartbeats).
      const client = yield* rawAuthenticated(transportOf(a).address, "tcp-quiet", [])
      const quiet = NodeId.make("tcp-quiet")
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeJoined(quiet))
      const start = yield* Clock.currentTimeMillis
      const unreachable = yield* takeEvent(subscription)
      const atUnreachable = yield* Clock.currentTimeMillis
      assert.strictEqual(unreachable._tag, "NodeUnreachable")
      assert.strictEqual(unreachable.node, quiet)
      // Bound: detector timeout (1 s) + one check interval (50 ms) + scheduling slack.
      assert.isAtMost(atUnreachable - start, 1000 + 50 + 500)
      assert.isAtLeast(atUnreachable - start, 900)
      // Unreachable is not down: still a member, marked, its connection open.
      assert.deepStrictEqual([...(yield* eventsOf(a).members)].sort(), [b.id, quiet].sort())
      assert.deepStrictEqual([...(yield* eventsOf(a).unreachable).keys()], [quiet])
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeLeft(quiet))
      const elapsed = (yield* Clock.currentTimeMillis) - atUnreachable
      // downAfter (1 s) + one check interval + slack.
      assert.isAtMost(elapsed, 1000 + 50 + 500)
      assert.isAtLeast(elapsed, 900)
      // Declared down: its connection was closed.
      yield* Deferred.await(client.closed).pipe(Effect.timeout("2 seconds"))
      // b is unaffected.
      assert.deepStrictEqual([...(yield* eventsOf(a).members)], [b.id])
      assert.strictEqual((yield* eventsOf(a).unreachable).size, 0)
      const stats = yield* transportOf(a).stats
      assert.strictEqual(stats.nodesUnreachable, 1)
      assert.strictEqual(stats.nodesReachable, 0)
      assert.strictEqual(stats.failuresDetected, 1)
    }), 20_000)

  it.live("local health: a detector check that runs late raises the score, and rounds in which every member is heard bring it back to 0", () =>
    Effect.gen(function*() {
      const aware = yield* startNode({ heartbeat: { ...fast.heartbeat, localHealth: { max: 3 } } })
      const unaware = yield* startNode({ seeds: [transportOf(aware).address] })
      yield* awaitMesh([aware, unaware])
      const score = (node: TcpNode) =>
        Effect.map(Metric.snapshot, (snapshot) => {
          const found = snapshot.filter((m) => m.id === "dstate_transport_local_health" && m.attributes?.node === node.id)
          assert.strictEqual(found.length, 1)
          return (found[0].state as Metric.GaugeState<number>).value
        })
      yield* poll(Effect.gen(function*() {
        assert.strictEqual(yield* score(aware), 0)
      }))
      // The whole process stops for 300 ms: both nodes' checks (every 50 ms) run at least 250 ms late.
      yield* Effect.sync(() => {
        const until = performance.now() + 300
        while (performance.now() < until) {
          // busy: the event loop is held
        }
      })
      yield* poll(Effect.gen(function*() {
        assert.isAtLeast(yield* score(aware), 1)
      }))
      // Off, the score stays 0 whatever happens.
      assert.strictEqual(yield* score(unaware), 0)
      // Nothing was silent long enough to be unreachable (300 ms against a 1 s detector).
      assert.strictEqual((yield* eventsOf(aware).unreachable).size, 0)
      // Every heartbeat interval in which the other member is heard takes one off.
      yield* poll(Effect.gen(function*() {
        assert.strictEqual(yield* score(aware), 0)
      }))
    }), 20_000)

  it.live("an unreachable peer that answers again before downAfter is NodeReachable, still a member, on the same connection", () =>
    Effect.gen(function*() {
      const a = yield* startNode({})
      const subscription = yield* eventsOf(a).subscribe
      const client = yield* rawAuthenticated(transportOf(a).address, "tcp-pause", ["g"])
      const paused = NodeId.make("tcp-pause")
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeJoined(paused))
      const unreachable = yield* takeEvent(subscription)
      assert.strictEqual(unreachable._tag, "NodeUnreachable")
      assert.deepStrictEqual((yield* transportOf(a).peers).map((p) => [p.node, p.unreachable, p.connected]), [[paused, true, true]])
      // It speaks again: one heartbeat (as a node of before gossip membership sends it).
      yield* write(client.socket, frameOf({ _tag: "Heartbeat", groupsVersion: 1, groups: ["g"], members: [] }))
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeReachable(paused))
      assert.deepStrictEqual([...(yield* eventsOf(a).members)], [paused])
      assert.strictEqual((yield* eventsOf(a).unreachable).size, 0)
      // Its groups and its connection were kept: nothing to join again.
      assert.deepStrictEqual(yield* runtimeOf(a).members("g"), [paused])
      assert.isFalse(client.socket.destroyed)
      assert.deepStrictEqual((yield* transportOf(a).peers).map((p) => [p.node, p.unreachable]), [[paused, false]])
      const stats = yield* transportOf(a).stats
      assert.deepStrictEqual(
        [stats.nodesJoined, stats.nodesUnreachable, stats.nodesReachable, stats.nodesLeft, stats.handshakesCompleted],
        [1, 1, 1, 0, 1]
      )
    }), 20_000)

  it.live("a peer of before gossip membership gets heartbeats without a member list, and a member list when a node joins", () =>
    Effect.gen(function*() {
      const a = yield* startNode({})
      const client = yield* rawAuthenticated(transportOf(a).address, "tcp-old", [])
      // Its heartbeats: this node's groups, and no member list.
      const heartbeats = yield* poll(Effect.sync(() => {
        const beats = messagesOf(client.received).filter((m) => m._tag === "Heartbeat")
        assert.isAtLeast(beats.length, 2)
        return beats
      }))
      for (const beat of heartbeats) assert.deepStrictEqual(beat._tag === "Heartbeat" ? beat.members : undefined, [])
      // No frame of gossip membership ever reaches it.
      const gossipTags = new Set(["Pulse", "Gossip", "DigestHashes", "Digest", "Delta"])
      const b = yield* startNode({ seeds: [transportOf(a).address] })
      const listed = yield* poll(Effect.sync(() => {
        const lists = messagesOf(client.received).filter((m) => m._tag === "Members")
        assert.isAtLeast(lists.length, 1)
        return lists[0]
      }))
      assert.deepStrictEqual(
        listed._tag === "Members" ? listed.members.map((m) => m.node).sort() : [],
        [transportOf(a).nodeId, transportOf(b).nodeId, "tcp-old"].sort()
      )
      assert.deepStrictEqual(messagesOf(client.received).filter((m) => gossipTags.has(m._tag)), [])
      // What a and b sent each other for membership is counted.
      yield* poll(Effect.map(transportOf(b).stats, (stats) => assert.isAbove(stats.membershipBytesSent, 0)))
    }), 20_000)

  it.live("a peer that speaks gossip membership gets pulses; a down of it gossiped by another member is NodeLeft at once", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("10 seconds") } })
      const record = (node: string, session: string, status: Protocol.MemberRecord["status"]): Protocol.MemberRecord => ({
        node: NodeId.make(node),
        session,
        started: 1,
        incarnation: 0,
        status,
        host: "127.0.0.1",
        port: 1,
        groups: []
      })
      const features = [Protocol.gossipMembershipFeature]
      const subscription = yield* eventsOf(a).subscribe
      const x = yield* rawAuthenticated(transportOf(a).address, "tcp-gx", [], features, record("tcp-gx", "sx", "alive"), "sx")
      const y = yield* rawAuthenticated(transportOf(a).address, "tcp-gy", [], features, record("tcp-gy", "sy", "alive"), "sy")
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeJoined(NodeId.make("tcp-gx")))
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeJoined(NodeId.make("tcp-gy")))
      // Heartbeats to it are pulses: no groups, no member list.
      yield* poll(Effect.sync(() => assert.isAtLeast(messagesOf(x.received).filter((m) => m._tag === "Pulse").length, 2)))
      assert.deepStrictEqual(messagesOf(x.received).filter((m) => m._tag === "Heartbeat"), [])
      // y gossips that x is down (at x's incarnation): a drops x at once, far below its 10 s detector.
      const start = yield* Clock.currentTimeMillis
      yield* write(y.socket, frameOf({ _tag: "Gossip", records: [record("tcp-gx", "sx", "down")] }))
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeLeft(NodeId.make("tcp-gx")))
      assert.isBelow((yield* Clock.currentTimeMillis) - start, 2000)
      yield* Deferred.await(x.closed).pipe(Effect.timeout("2 seconds"))
      assert.deepStrictEqual([...(yield* eventsOf(a).members)], [NodeId.make("tcp-gy")])
    }), 20_000)

  it.live("graceful leave is seen at once, and a restarted node (new session) joins again", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("10 seconds") } })
      const bId = nextId()
      const b = yield* startNode({ nodeId: bId, seeds: [transportOf(a).address] })
      yield* awaitMesh([a, b])
      const subscription = yield* eventsOf(a).subscribe
      const start = yield* Clock.currentTimeMillis
      yield* Scope.close(b.scope, Exit.void)
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeLeft(bId))
      // Far below the 10 s detector: the Leave frame did it.
      assert.isBelow((yield* Clock.currentTimeMillis) - start, 2000)
      const b2 = yield* startNode({ nodeId: bId, seeds: [transportOf(a).address] })
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeJoined(bId))
      assert.notStrictEqual(transportOf(b2).session, transportOf(b).session)
      yield* awaitMesh([a, b2])
    }), 20_000)

  it.live("a graceful leave reaches the peers the leaving node dialed, not only those that dialed it", () =>
    Effect.gen(function*() {
      // The smallest id dials every other node; a and c only ever accept from it.
      const slow = { heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("10 seconds") } } as const
      const dialer = yield* startNode(slow)
      const b = yield* startNode({ ...slow, seeds: [transportOf(dialer).address] })
      const c = yield* startNode({ ...slow, seeds: [transportOf(b).address] })
      yield* awaitMesh([dialer, b, c])
      const subB = yield* eventsOf(b).subscribe
      const subC = yield* eventsOf(c).subscribe
      const start = yield* Clock.currentTimeMillis
      yield* Scope.close(dialer.scope, Exit.void)
      assert.deepStrictEqual(yield* takeEvent(subB), ClusterEvents.NodeLeft(dialer.id))
      assert.deepStrictEqual(yield* takeEvent(subC), ClusterEvents.NodeLeft(dialer.id))
      // Far below the 10 s detector on both: the Leave frame did it.
      assert.isBelow((yield* Clock.currentTimeMillis) - start, 2000)
      assert.strictEqual((yield* transportOf(b).stats).leavesReceived, 1)
      assert.strictEqual((yield* transportOf(c).stats).leavesReceived, 1)
      assert.deepStrictEqual([...(yield* eventsOf(b).members)], [c.id])
      assert.deepStrictEqual([...(yield* eventsOf(c).members)], [b.id])
    }), 20_000)

  it.live("nodes learn members through gossip and keep one connection per pair", () =>
    Effect.gen(function*() {
      const a = yield* startNode({})
      // Every node seeds a only; b, c and d must find each other through a's member list.
      const others = yield* Effect.forEach([1, 2, 3], () => startNode({ seeds: [transportOf(a).address] }))
      const all = [a, ...others]
      yield* awaitMesh(all)
      // Connections dialed both ways at once are settled down to one per pair.
      yield* poll(Effect.forEach(all, (node) =>
        Effect.gen(function*() {
          const peers = yield* transportOf(node).peers
          assert.strictEqual(peers.length, 3)
          for (const p of peers) {
            assert.isTrue(p.connected)
            assert.strictEqual(p.connections, 1)
          }
        }), { discard: true }))
      // A late group join reaches everyone.
      yield* runtimeOf(others[2]).joinGroup("late")
      yield* poll(Effect.forEach(all, (n) =>
        Effect.map(runtimeOf(n).members("late"), (m) => assert.deepStrictEqual(m, [others[2].id]))))
    }), 20_000)

  it.live("a group joined right after start is known to the peer at once, not at the next heartbeat", () =>
    Effect.gen(function*() {
      // Heartbeats (which also carry groups) far apart: the group must travel with the join itself.
      const slowHeartbeat = { interval: "30 seconds", detector: TcpRuntime.fixedTimeout("60 seconds") } as const
      const a = yield* startNode({ heartbeat: slowHeartbeat })
      yield* runtimeOf(a).joinGroup("g")
      const b = yield* startNode({ seeds: [transportOf(a).address], heartbeat: slowHeartbeat })
      // Right after start, while b may still be connecting to a.
      yield* runtimeOf(b).joinGroup("g")
      yield* awaitMesh([a, b])
      yield* eventually(Effect.gen(function*() {
        assert.deepStrictEqual([...(yield* runtimeOf(a).members("g"))].map(String).sort(), [String(a.id), String(b.id)].sort())
        assert.deepStrictEqual([...(yield* runtimeOf(b).members("g"))].map(String).sort(), [String(a.id), String(b.id)].sort())
      }), { timeout: "2 seconds", what: "the group on both nodes" })
    }), 20_000)

  it.live("two nodes that register a state at the same moment, after they met, exchange their views with no change made", () =>
    Effect.gen(function*() {
      const slowHeartbeat = { heartbeat: { interval: "30 seconds", detector: TcpRuntime.fixedTimeout("60 seconds") } } as const
      const a = yield* startNode(slowHeartbeat)
      const b = yield* startNode({ ...slowHeartbeat, seeds: [transportOf(a).address] })
      yield* awaitMesh([a, b])
      // Each registers before it can know that the other did: neither sees the other in the group yet.
      const [ca, cb] = yield* Effect.forEach([a, b], (node) =>
        Effect.map(withCounter(node, { persist: false }), ({ counter }) => counter))
      yield* eventually(Effect.gen(function*() {
        for (const handle of [ca, cb]) {
          const views = yield* handle.snapshot
          assert.deepStrictEqual([...views.keys()].map(String).sort(), [String(a.id), String(b.id)].sort())
          for (const view of views.values()) assert.deepStrictEqual(view.value, { value: 0 })
        }
      }), { timeout: "3 seconds", what: "both views on both nodes" })
    }), 20_000)

  it.live("changesOf and diffs over TCP: exact events for a peer's mutations and its leave", () =>
    Effect.gen(function*() {
      const a = yield* registryNode()
      const b = yield* registryNode({ seeds: [transportOf(a.node).address] })
      yield* eventually(Effect.map(a.counter.snapshot, (views) => views.has(b.node.id)), { timeout: "3 seconds", what: "b's view on a" })
      const age = (view: { readonly source: string; readonly generation: { readonly age: number } } | undefined) =>
        view === undefined ? "none" : `${view.source === a.node.id ? "a" : "b"}@${view.generation.age}`
      const ofB: Array<string> = []
      const diffs: Array<string> = []
      yield* Stream.runForEach(a.counter.changesOf(b.node.id), (o) => Effect.sync(() => ofB.push(age(Option.getOrUndefined(o))))).pipe(
        Effect.forkChild
      )
      yield* Stream.runForEach(a.counter.diffs, (d) => Effect.sync(() => diffs.push(`${d._tag} ${age(d.previous)} -> ${age(d.current)}`)))
        .pipe(Effect.forkChild)
      yield* eventually(Effect.sync(() => ofB.length === 1 && diffs.length === 2), { timeout: "2 seconds", what: "the first events" })
      for (let i = 0; i < 2; i++) yield* Effect.orDie(b.counter.mutate((s) => ({ value: s.value + 1 })))
      yield* eventually(Effect.sync(() => ofB.at(-1) === "b@2"), { timeout: "3 seconds", what: "b@2 on a" })
      yield* Scope.close(b.node.scope, Exit.void)
      yield* eventually(Effect.sync(() => ofB.at(-1) === "none"), { timeout: "3 seconds", what: "b's leave on a" })
      // Two mutations in two turns may reach a as one snapshot (coalesced push) or two.
      const updates = ofB.length === 4 ? ["b@1", "b@2"] : ["b@2"]
      assert.deepStrictEqual(ofB, ["b@0", ...updates, "none"])
      assert.deepStrictEqual(diffs.slice(0, 2).sort(), ["Added none -> a@0", "Added none -> b@0"])
      assert.deepStrictEqual(diffs.slice(2), [
        ...(updates.length === 2 ? ["Updated b@0 -> b@1", "Updated b@1 -> b@2"] : ["Updated b@0 -> b@2"]),
        "Removed b@2 -> none"
      ])
    }), 20_000)

  it.live("phi accrual: a silent peer is unreachable within maxSilence (and, with downAfter 0, down at once)", () =>
    Effect.gen(function*() {
      const a = yield* startNode({
        downAfter: 0,
        heartbeat: {
          interval: "100 millis",
          checkInterval: "50 millis",
          detector: TcpRuntime.phiAccrual({ threshold: 8, minStdDeviation: "50 millis", maxSilence: "2 seconds" })
        }
      })
      const b = yield* startNode({ seeds: [transportOf(a).address] })
      yield* awaitMesh([a, b])
      // Healthy heartbeats keep phi low: once a has received five of them, the sixth is not yet overdue.
      yield* poll(Effect.map(transportOf(a).stats, (stats) => stats.heartbeatsReceived >= 5))
      const [peer] = yield* transportOf(a).peers
      assert.isBelow(peer.phi, 1)
      const subscription = yield* eventsOf(a).subscribe
      const client = yield* rawAuthenticated(transportOf(a).address, "tcp-phi", [])
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeJoined(NodeId.make("tcp-phi")))
      const start = yield* Clock.currentTimeMillis
      const unreachable = yield* takeEvent(subscription)
      assert.strictEqual(unreachable._tag, "NodeUnreachable")
      assert.deepStrictEqual(yield* takeEvent(subscription), ClusterEvents.NodeLeft(NodeId.make("tcp-phi")))
      // phi passes 8 well before the 2 s hard bound with 100 ms heartbeats; the hard bound caps it anyway.
      assert.isAtMost((yield* Clock.currentTimeMillis) - start, 2000 + 50 + 500)
      yield* Deferred.await(client.closed).pipe(Effect.timeout("2 seconds"))
    }), 20_000)
})

describe("TcpRuntime: TLS", () => {
  const dir = mkdtempSync(join(tmpdir(), "dstate-tls-"))
  const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" })
  let pki: { readonly ca: string; readonly cert: string; readonly key: string } | undefined
  try {
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=dstate-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    execFileSync("sh", ["-c", "printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf"], { cwd: dir })
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "node.pem", "-days", "1", "-extfile", "ext.cnf")
    pki = {
      ca: readFileSync(join(dir, "ca.pem"), "utf8"),
      cert: readFileSync(join(dir, "node.pem"), "utf8"),
      key: readFileSync(join(dir, "node.key"), "utf8")
    }
  } catch {
    pki = undefined
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }

  it.live.skipIf(pki === undefined)("two nodes over mutual TLS exchange frames; a plain-TCP client gets nothing", () =>
    Effect.gen(function*() {
      const tls = { cert: pki!.cert, key: Redacted.make(pki!.key), ca: pki!.ca }
      const a = yield* startNode({ tls })
      const b = yield* startNode({ tls, seeds: [transportOf(a).address] })
      yield* awaitMesh([a, b])
      const received: Array<Array<number>> = []
      yield* runtimeOf(b).serve({
        onMessage: (_from, frame) => Effect.sync(() => received.push([...frame])),
        onRequest: (_from, frame) => Effect.succeed(frame)
      })
      yield* runtimeOf(a).send(b.id, Uint8Array.of(1, 2, 3))
      const reply = yield* runtimeOf(a).request(b.id, Uint8Array.of(4), "5 seconds")
      assert.deepStrictEqual([...reply], [4])
      yield* poll(Effect.sync(() => assert.deepStrictEqual(received, [[1, 2, 3]])))
      // A plain client speaking the protocol in clear is cut off by the TLS layer.
      const plain = yield* rawConnect(transportOf(a).address)
      yield* write(plain.socket, frameOf({ _tag: "Hello", node: NodeId.make("plain"), session: "s", nonce: new Uint8Array(32) }))
      yield* Deferred.await(plain.closed).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(messagesOf(plain.received).length, 0)
      assert.strictEqual((yield* transportOf(a).stats).handshakesCompleted, 1)
    }), 20_000)
})

/** The next membership event, failing after 10 seconds. */
function takeEvent(subscription: PubSub.Subscription<ClusterEvents.ClusterEvent>) {
  return PubSub.take(subscription).pipe(Effect.timeout(Duration.seconds(10)))
}

describe("TcpRuntime: bare Delivers", () => {
  /** The raw frames a client received after the handshake (Challenge and Welcome dropped). */
  const framesOf = (received: ReadonlyArray<Uint8Array>) => {
    const reader = new Protocol.FrameReader(1 << 20)
    for (const chunk of received) reader.push(chunk)
    const out: Array<Uint8Array> = []
    while (true) {
      const frame = reader.next()
      if (Result.isFailure(frame) || frame.success === undefined) return out.slice(2)
      out.push(frame.success.slice())
    }
  }

  it.live("a peer that lists bareDeliver gets the registry frame alone, one that does not gets it in a 0x84 Deliver; other bytes always go in one", () =>
    Effect.gen(function*() {
      const node = yield* startNode({})
      const address = transportOf(node).address
      const bare = yield* rawAuthenticated(address, "bare-peer", ["g"], [Protocol.bareDeliverFeature])
      const plain = yield* rawAuthenticated(address, "plain-peer", ["g"])
      yield* poll(Effect.gen(function*() {
        assert.deepStrictEqual([...(yield* runtimeOf(node).members("g"))].sort(), ["bare-peer", "plain-peer"])
      }))
      const registryFrame = Result.getOrThrow(encodeFrame(
        new SyncMessage.RequestSnapshot({ stateName: "s", source: node.id, wireVersion: 1 }),
        1024
      ))
      const notAFrame = new Uint8Array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
      yield* runtimeOf(node).broadcast("g", registryFrame)
      yield* runtimeOf(node).broadcast("g", notAFrame)
      const onBare = yield* poll(Effect.sync(() => {
        const frames = framesOf(bare.received).filter((f) => f[4] !== Protocol.transportProtocol) // heartbeats aside
        assert.strictEqual(frames.length, 2)
        return frames
      }))
      assert.deepStrictEqual(onBare[0], registryFrame)
      assert.strictEqual(onBare[1][4], Protocol.deliverProtocol)
      assert.deepStrictEqual(onBare[1].subarray(Protocol.headerBytes), notAFrame)
      const onPlain = yield* poll(Effect.sync(() => {
        const frames = framesOf(plain.received).filter((f) => f[4] !== Protocol.transportProtocol)
        assert.strictEqual(frames.length, 2)
        return frames
      }))
      assert.deepStrictEqual(onPlain.map((f) => f[4]), [Protocol.deliverProtocol, Protocol.deliverProtocol])
      assert.deepStrictEqual(onPlain[0].subarray(Protocol.headerBytes), registryFrame)
    }), 20_000)
})

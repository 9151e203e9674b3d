/**
 * The in-process runtime over `SimNetwork`: the runtime conformance suite on
 * simulated time, then what only the simulated network offers (partitions,
 * one-way cuts, delays, raw injection, crashes).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, type Duration, Effect, Exit, Fiber, Layer, Scope } from "effect"
import { TestClock } from "effect/testing"
import { ActorRuntime, NodeId } from "dstate"
import { InProcessRuntime, SimDetector, SimNetwork } from "dstate/testing"
import * as RuntimeSuite from "./conformance/RuntimeSuite.ts"

interface SimNode extends RuntimeSuite.RuntimeNode {
  readonly scope: Scope.Closeable
  readonly endpoint: SimNetwork.Endpoint
}

interface SimCluster extends RuntimeSuite.RuntimeCluster {
  readonly nodes: ReadonlyArray<SimNode>
  readonly network: SimNetwork.SimNetwork
  readonly addNode: Effect.Effect<SimNode>
  /** Marks the node dead (its frames in flight are dropped), then stops it. */
  readonly crash: (node: SimNode) => Effect.Effect<void>
  /** Delivers every frame in flight and lets every actor go idle, moving the clock only as far as deliveries need. */
  readonly settle: Effect.Effect<void>
  readonly advance: (duration: Duration.Input) => Effect.Effect<void>
}

const makeCluster = (count: number, detector?: SimDetector.Settings): Effect.Effect<SimCluster, never, Scope.Scope> =>
  Effect.gen(function*() {
    const network = yield* SimNetwork.makeWith(detector === undefined ? {} : { detector })
    const running = new Map<NodeId.NodeId, SimNode>()
    let counter = 0

    yield* Effect.addFinalizer(() =>
      Effect.forEach([...running.values()].reverse(), (n) => Scope.close(n.scope, Exit.void), { discard: true })
    )

    const addNode = Effect.gen(function*() {
      counter++
      const id = NodeId.make(`node-${counter}`)
      const scope = yield* Scope.make()
      let endpoint: SimNetwork.Endpoint | undefined
      const context = yield* Layer.buildWithScope(
        InProcessRuntime.layer(network, id, {
          onEndpoint: (e) => {
            endpoint = e
          }
        }),
        scope
      )
      if (endpoint === undefined) return yield* Effect.die(new Error("the runtime did not report its endpoint"))
      const node: SimNode = { id, context, scope, endpoint }
      running.set(id, node)
      return node
    })

    const stop = (node: SimNode, crashed: boolean) =>
      Effect.suspend(() => {
        if (!running.delete(node.id)) return Effect.void
        if (crashed) node.endpoint.alive = false
        return Scope.close(node.scope, Exit.void)
      })

    const nodes: Array<SimNode> = []
    for (let i = 0; i < count; i++) nodes.push(yield* addNode)
    const settle = SimNetwork.settle(network)

    return {
      nodes,
      network,
      addNode,
      removeNode: (node) => stop(node as SimNode, false),
      crash: (node) => stop(node, true),
      settle,
      eventually: (check) => Effect.andThen(settle, check),
      advance: (duration) => TestClock.adjust(duration)
    } satisfies SimCluster
  })

const timings = { probeInterval: "1 second", detectAfter: "3 seconds", downAfter: "10 seconds" } as const

RuntimeSuite.suite("in-process", (count) => makeCluster(count), {
  reachability: {
    makeNodes: (count) =>
      Effect.gen(function*() {
        const cluster = yield* makeCluster(count, yield* SimDetector.settings(timings))
        return {
          ...cluster,
          silence: (node) => Effect.sync(() => cluster.network.isolate(node.id)),
          answer: () => Effect.sync(() => cluster.network.heal())
        } satisfies RuntimeSuite.SilenceableCluster
      }),
    detectAfter: timings.detectAfter,
    downAfter: timings.downAfter
  }
})

const runtimeOf = (node: SimNode) => Context.get(node.context, ActorRuntime.ActorRuntime)

interface Received {
  readonly from: NodeId.NodeId
  readonly frame: ReadonlyArray<number>
}

const record = (node: SimNode) =>
  Effect.gen(function*() {
    const received: Array<Received> = []
    yield* runtimeOf(node).serve({
      onMessage: (from, frame) => Effect.sync(() => received.push({ from, frame: Array.from(frame) })),
      onRequest: (_from, frame) => Effect.succeed(Uint8Array.from([...frame, 0xff]))
    })
    return received
  })

/** The frame counters every network keeps (the fault counters are not exercised here). */
const traffic = (network: SimNetwork.SimNetwork) => {
  const { delivered, dropped, sent } = network.stats()
  return { sent, delivered, dropped }
}

const send = (from: SimNode, to: SimNode, ...frame: ReadonlyArray<number>) =>
  runtimeOf(from).send(to.id, Uint8Array.from(frame))

describe("SimNetwork", () => {
  it.effect("partition cuts every link between the sides, both ways, and nothing else", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(3)
      const [a, b, c] = cluster.nodes
      const [inA, inB, inC] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.partition([a.id], [b.id])
      yield* send(a, b, 1)
      yield* send(b, a, 2)
      yield* send(a, c, 3)
      yield* send(c, b, 4)
      yield* send(b, c, 5)
      yield* cluster.settle
      assert.deepStrictEqual(inA, [])
      assert.deepStrictEqual(inB, [{ from: c.id, frame: [4] }])
      assert.deepStrictEqual(inC, [{ from: a.id, frame: [3] }, { from: b.id, frame: [5] }])
      assert.deepStrictEqual(traffic(cluster.network), { sent: 5, delivered: 3, dropped: 2 })
    }))

  it.effect("a request across a partition times out", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      yield* record(b)
      cluster.network.partition([a.id], [b.id])
      const fiber = yield* runtimeOf(a).request(b.id, Uint8Array.of(1), "2 seconds").pipe(Effect.flip, Effect.forkChild)
      yield* TestClock.adjust("2 seconds")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "RequestTimeout")
      assert.deepStrictEqual(traffic(cluster.network), { sent: 1, delivered: 0, dropped: 1 })
    }))

  it.effect("cut is one-way", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      const [inA, inB] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.cut(a.id, b.id)
      yield* send(a, b, 1)
      yield* send(b, a, 2)
      yield* cluster.settle
      assert.deepStrictEqual(inA, [{ from: b.id, frame: [2] }])
      assert.deepStrictEqual(inB, [])
      assert.deepStrictEqual(traffic(cluster.network), { sent: 2, delivered: 1, dropped: 1 })
    }))

  it.effect("a request over a link cut only on the way back loses its reply", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      const calls: Array<NodeId.NodeId> = []
      yield* runtimeOf(b).serve({
        onMessage: () => Effect.void,
        onRequest: (from, frame) => Effect.sync(() => (calls.push(from), frame))
      })
      cluster.network.cut(b.id, a.id)
      const fiber = yield* runtimeOf(a).request(b.id, Uint8Array.of(1), "1 second").pipe(Effect.flip, Effect.forkChild)
      yield* TestClock.adjust("1 second")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "RequestTimeout")
      assert.deepStrictEqual(calls, [a.id])
      assert.deepStrictEqual(traffic(cluster.network), { sent: 2, delivered: 1, dropped: 1 })
    }))

  it.effect("heal restores every link", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(3)
      const [a, b, c] = cluster.nodes
      const [inA, inB, inC] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.partition([a.id], [b.id, c.id])
      cluster.network.cut(b.id, c.id)
      yield* send(a, b, 1)
      yield* send(b, c, 2)
      yield* cluster.settle
      assert.deepStrictEqual([inA, inB, inC], [[], [], []])
      cluster.network.heal()
      yield* send(a, b, 3)
      yield* send(b, a, 4)
      yield* send(b, c, 5)
      yield* send(c, a, 6)
      yield* cluster.settle
      assert.deepStrictEqual(inA, [{ from: b.id, frame: [4] }, { from: c.id, frame: [6] }])
      assert.deepStrictEqual(inB, [{ from: a.id, frame: [3] }])
      assert.deepStrictEqual(inC, [{ from: b.id, frame: [5] }])
      // Frames dropped before the heal stay lost.
      assert.deepStrictEqual(traffic(cluster.network), { sent: 6, delivered: 4, dropped: 2 })
    }))

  it.effect("setDelay delays each delivery by exactly that simulated time", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      const [, inB] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.setDelay("250 millis")
      const start = yield* Clock.currentTimeMillis
      yield* send(a, b, 1)
      assert.strictEqual(cluster.network.nextDeliveryAt(), start + 250)
      assert.strictEqual(cluster.network.pendingWork(), 1)
      yield* Effect.yieldNow
      yield* TestClock.adjust("249 millis")
      assert.deepStrictEqual(inB, [])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(inB, [{ from: a.id, frame: [1] }])
      assert.isUndefined(cluster.network.nextDeliveryAt())
      assert.strictEqual(cluster.network.pendingWork(), 0)

      // A request pays the delay twice: there and back.
      const requestStart = yield* Clock.currentTimeMillis
      const fiber = yield* runtimeOf(a).request(b.id, Uint8Array.of(7), "10 seconds").pipe(
        Effect.flatMap((reply) =>
          Effect.map(Clock.currentTimeMillis, (now) => [Array.from(reply), now - requestStart])
        ),
        Effect.forkChild
      )
      yield* Effect.yieldNow
      yield* TestClock.adjust("499 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), [[7, 0xff], 500])

      // Back to zero delay: delivery needs no clock movement.
      cluster.network.setDelay(0)
      yield* send(a, b, 2)
      yield* cluster.settle
      assert.strictEqual(yield* Clock.currentTimeMillis, requestStart + 500)
      assert.deepStrictEqual(inB, [{ from: a.id, frame: [1] }, { from: a.id, frame: [2] }])
    }))

  it.effect("settle moves the clock only as far as the deliveries need", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      const [, inB] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.setDelay("3 seconds")
      const start = yield* Clock.currentTimeMillis
      yield* send(a, b, 1)
      yield* cluster.settle
      assert.strictEqual((yield* Clock.currentTimeMillis) - start, 3000)
      assert.deepStrictEqual(inB, [{ from: a.id, frame: [1] }])
    }))

  it.effect("inject delivers raw bytes to the node's inbound handler, bypassing links and counters", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      const [inA, inB] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.cut(a.id, b.id)
      const garbage = [0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]
      yield* cluster.network.inject(a.id, b.id, Uint8Array.from(garbage))
      // Delivered synchronously: no settle needed.
      assert.deepStrictEqual(inB, [{ from: a.id, frame: garbage }])
      // The claimed sender need not exist.
      const ghost = NodeId.make("ghost")
      yield* cluster.network.inject(ghost, b.id, Uint8Array.of())
      assert.deepStrictEqual(inB, [{ from: a.id, frame: garbage }, { from: ghost, frame: [] }])
      // Injecting to an unknown node does nothing.
      yield* cluster.network.inject(a.id, ghost, Uint8Array.of(1))
      assert.deepStrictEqual(inA, [])
      assert.deepStrictEqual(traffic(cluster.network), { sent: 0, delivered: 0, dropped: 0 })
      assert.deepStrictEqual(cluster.network.log(), [])
    }))

  it.effect("a crashed node's frames in flight, to it and from it, are dropped and counted", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(3)
      const [a, b, c] = cluster.nodes
      const [inA, inB, inC] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.setDelay("100 millis")
      yield* send(a, b, 1)
      yield* send(a, b, 2)
      yield* send(b, a, 3)
      yield* send(b, c, 4)
      yield* send(a, c, 5)
      yield* Effect.yieldNow
      yield* TestClock.adjust("50 millis")
      yield* cluster.crash(b)
      yield* cluster.settle
      assert.deepStrictEqual(inA, [])
      assert.deepStrictEqual(inB, [])
      assert.deepStrictEqual(inC, [{ from: a.id, frame: [5] }])
      assert.deepStrictEqual(traffic(cluster.network), { sent: 5, delivered: 1, dropped: 4 })
      assert.deepStrictEqual(cluster.network.nodes(), [a.id, c.id])
    }))

  it.effect("frames already sent by a node that leaves gracefully are still delivered", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      const [inA] = yield* Effect.forEach(cluster.nodes, record)
      cluster.network.setDelay("100 millis")
      yield* send(b, a, 1)
      yield* send(a, b, 2)
      yield* Effect.yieldNow
      yield* cluster.removeNode(b)
      yield* cluster.settle
      assert.deepStrictEqual(inA, [{ from: b.id, frame: [1] }])
      // The frame to the departed node has nowhere to go.
      assert.deepStrictEqual(traffic(cluster.network), { sent: 2, delivered: 1, dropped: 1 })
    }))

  it.effect("a crashed node's pending request reply is dropped and the caller times out", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      yield* record(b)
      cluster.network.setDelay("100 millis")
      const fiber = yield* runtimeOf(a).request(b.id, Uint8Array.of(1), "1 second").pipe(Effect.flip, Effect.forkChild)
      yield* Effect.yieldNow
      yield* TestClock.adjust("150 millis") // request delivered at 100, reply in flight until 200
      yield* cluster.crash(b)
      yield* TestClock.adjust("850 millis")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "RequestTimeout")
      assert.deepStrictEqual(traffic(cluster.network), { sent: 2, delivered: 1, dropped: 1 })
    }))

  it.effect("the log records every frame with its kind, until cleared", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      yield* Effect.forEach(cluster.nodes, record)
      yield* send(a, b, 1)
      const reply = yield* runtimeOf(b).request(a.id, Uint8Array.of(2), "1 second")
      assert.deepStrictEqual(Array.from(reply), [2, 0xff])
      yield* cluster.settle
      assert.deepStrictEqual(
        cluster.network.log().map((f) => ({ from: f.from, to: f.to, kind: f.kind, frame: Array.from(f.frame) })),
        [
          { from: a.id, to: b.id, kind: "message", frame: [1] },
          { from: b.id, to: a.id, kind: "request", frame: [2] },
          { from: a.id, to: b.id, kind: "reply", frame: [2, 0xff] }
        ]
      )
      cluster.network.clearLog()
      assert.deepStrictEqual(cluster.network.log(), [])
      assert.deepStrictEqual(traffic(cluster.network), { sent: 3, delivered: 3, dropped: 0 })
    }))

  it.effect("nodes lists the attached nodes; a node id cannot be attached twice", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster(2)
      const [a, b] = cluster.nodes
      assert.deepStrictEqual(cluster.network.nodes(), [a.id, b.id])
      const exit = yield* Layer.build(InProcessRuntime.layer(cluster.network, a.id)).pipe(Effect.scoped, Effect.exit)
      assert.isTrue(Exit.hasDies(exit))
      assert.deepStrictEqual(cluster.network.nodes(), [a.id, b.id])
      const c = yield* cluster.addNode
      assert.deepStrictEqual(cluster.network.nodes(), [a.id, b.id, c.id])
    }))
})

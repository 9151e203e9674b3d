/**
 * Awaited mutations over real loopback sockets: three TCP nodes in this
 * process, the acknowledgement exchange negotiated in the handshake. Exact
 * acknowledged counts for majority and all; a node pinned to sync protocol 1
 * is never asked (all cannot be satisfied, a count that the new nodes can
 * meet is met) and never sent a frame it would reject. Waits poll for their
 * condition (`eventually`) and then assert exact values. Also runs
 * examples/06_acknowledgements.ts to its end.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Scope } from "effect"
import { DStateError, NodeId, StateRegistry } from "dstate"
import { Fixtures } from "dstate/testing"
import { execFile } from "node:child_process"
import * as TcpRuntime from "../src/node/TcpRuntime.ts"
import { eventuallyWithin } from "./support/Eventually.ts"
import * as RealNodes from "./support/RealNodes.ts"
import { buildInOwnScope, fastTcp, type ScopedNode, secret, type TcpNodeServices } from "./support/RealNodes.ts"

const fast = fastTcp

type NodeServices = TcpNodeServices
type TcpNode = ScopedNode<NodeServices>

let nodeCounter = 0
const nextId = () => NodeId.make(`ack-${String(++nodeCounter).padStart(4, "0")}`)
const poll = eventuallyWithin("8 seconds")
const increment = (s: { readonly value: number }) => ({ value: s.value + 1 })

/** Starts a TCP node with a registry and the counter state, in its own scope. */
const counterNode = (options: Partial<TcpRuntime.Options>) =>
  Effect.gen(function*() {
    const id = nextId()
    const { context, scope } = yield* buildInOwnScope(TcpRuntime.layer({ ...fast, ...options, nodeId: id, secret }))
    const node: TcpNode = { id, scope, context }
    const registry = yield* Layer.buildWithScope(StateRegistry.layer.pipe(Layer.provide(Layer.succeedContext(context))), scope)
    const counter = yield* StateRegistry.register(Fixtures.Counter).pipe(Effect.provideContext(registry), Scope.provide(scope))
    return { node, registry, counter }
  })

/** Three nodes meshed, the last one speaking `lastProtocol`, every counter view held everywhere. */
const threeNodes = (lastProtocol: 1 | 2) =>
  Effect.gen(function*() {
    const a = yield* counterNode({})
    const seeds = [Context.get(a.node.context, TcpRuntime.TcpTransport).address]
    const b = yield* counterNode({ seeds })
    const c = yield* counterNode({ seeds, syncProtocol: lastProtocol })
    const all = [a, b, c]
    yield* RealNodes.awaitMesh(all.map((n) => n.node), "8 seconds")
    yield* poll(Effect.forEach(all, (n) => Effect.map(n.counter.snapshot, (views) => views.size === 3 || false)).pipe(
      Effect.map((held) => held.every((ok) => ok) || false)
    ))
    return all
  })

const inboundOf = (registry: Context.Context<StateRegistry.StateRegistry>) =>
  Effect.provideContext(Effect.flatMap(StateRegistry.StateRegistry, (r) => r.inboundMetrics), registry)

describe("TcpRuntime: acknowledgements", () => {
  it.live("majority is 1 of 2 peers, all is 2; the acknowledged write is held by who acknowledged it", () =>
    Effect.gen(function*() {
      const [a, b, c] = yield* threeNodes(2)
      const majority = yield* a.counter.mutate(increment, { await: { peers: "majority", timeout: "5 seconds" } })
      assert.strictEqual(majority.acknowledged, 1)
      assert.strictEqual(majority.required, 1)
      const holder = [b, c].find((n) => n.node.id === majority.acknowledgedBy[0])!
      assert.strictEqual((yield* holder.counter.snapshot).get(a.node.id)!.generation.age, 1)
      const all = yield* a.counter.mutate(increment, { await: { peers: "all", timeout: "5 seconds" } })
      assert.strictEqual(all.acknowledged, 2)
      assert.deepStrictEqual([...all.acknowledgedBy].sort(), [b.node.id, c.node.id].sort())
      for (const peer of [b, c]) {
        const view = (yield* peer.counter.snapshot).get(a.node.id)!
        assert.deepStrictEqual([view.generation.age, view.value.value], [2, 2])
      }
    }), { timeout: 30_000 })

  it.live("a peer pinned to protocol 1 is not asked: all is unsatisfiable, 1 peer is met by the new one", () =>
    Effect.gen(function*() {
      const [a, b, c] = yield* threeNodes(1)
      const error = yield* Effect.flip(a.counter.mutate(increment, { await: { peers: "all", timeout: "5 seconds" } }))
      assert.instanceOf(error, DStateError.AckUnsatisfiable)
      const unsatisfiable = error as DStateError.AckUnsatisfiable
      assert.deepStrictEqual(unsatisfiable.unsupported, [c.node.id])
      assert.deepStrictEqual(unsatisfiable.eligible, [b.node.id])
      const one = yield* a.counter.mutate(increment, { await: { peers: 1, timeout: "5 seconds" } })
      assert.deepStrictEqual(one.acknowledgedBy, [b.node.id])
      // The old node gets both writes as always, and never a frame it would reject.
      yield* poll(Effect.map(c.counter.snapshot, (views) => views.get(a.node.id)?.generation.age === 2 || false))
      assert.strictEqual((yield* inboundOf(c.registry)).framesRejected, 0)
      assert.strictEqual((yield* c.counter.metrics).acksSent, 0)
    }), { timeout: 30_000 })
})

describe("the acknowledgements example", () => {
  it.live("examples/06_acknowledgements.ts: majority 1 of 1, all by both peers, then AckTimeout naming gamma", () =>
    Effect.gen(function*() {
      const run = yield* Effect.callback<{ readonly code: number; readonly stdout: string; readonly stderr: string }>((resume) => {
        execFile(process.execPath, ["examples/06_acknowledgements.ts"], { timeout: 60_000 }, (error, stdout, stderr) => {
          resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr }))
        })
      })
      assert.strictEqual(run.code, 0, run.stderr)
      for (
        const line of [
          "age 1: 1 of 1 required acknowledged",
          "age 2: acknowledged by beta, gamma",
          "AckTimeout: 1 of 2, missing gamma",
          "beta holds alpha's counter at age 3 (value 3)"
        ]
      ) assert.include(run.stdout, line)
    }), { timeout: 60_000 })
})

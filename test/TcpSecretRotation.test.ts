/**
 * Rotating the cluster secret of running TCP nodes over real loopback sockets:
 * a 3-node cluster walks through a rolling rotation (accept the new secret
 * everywhere, prove with it everywhere, drop the old one), each node's
 * connections cut after its change so that they are authenticated again
 * under the new secrets, with no node declared down or left, no refused
 * handshake and replication going on; afterwards a node with only the old
 * secret is refused and one with the new secret joins. And the secrets'
 * validation: in the layer and in `TcpTransport.setSecret`, which changes
 * nothing when it fails.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted, Schedule } from "effect"
import { ClusterEvents, NodeId, StateRegistry } from "dstate"
import { Fixtures } from "dstate/testing"
import * as TcpRuntime from "../src/node/TcpRuntime.ts"
import { canCutConnections, cutPort } from "./support/CutConnections.ts"
import { eventuallyWithin } from "./support/Eventually.ts"
import { buildInOwnScope, fastTimings } from "./support/RealNodes.ts"

const oldSecret = Redacted.make("rotation-old-secret-0123456789")
const newSecret = Redacted.make("rotation-new-secret-9876543210")

const fast = {
  ...fastTimings,
  heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("2 seconds"), checkInterval: "50 millis" }
} satisfies Partial<TcpRuntime.Options>

const poll = eventuallyWithin("8 seconds")
let counter = 0

/** A TCP node with the fixture counter registered. */
const startNode = (name: string, secret: TcpRuntime.Secrets, seeds: ReadonlyArray<TcpRuntime.Address>, options: Partial<TcpRuntime.Options> = {}) =>
  Effect.gen(function*() {
    const id = NodeId.make(`${name}-${process.pid}-${++counter}`)
    const layer = StateRegistry.layer.pipe(Layer.provideMerge(TcpRuntime.layer({ ...fast, ...options, nodeId: id, secret, seeds })))
    const { context, scope } = yield* buildInOwnScope(layer)
    const handle = yield* StateRegistry.register(Fixtures.Counter).pipe(Effect.provideContext(context))
    const transport = Context.get(context, TcpRuntime.TcpTransport)
    return { id, scope, context, transport, counter: handle }
  })

type Started = Effect.Success<ReturnType<typeof startNode>>

const membersOf = (node: Started) =>
  Effect.map(Context.get(node.context, ClusterEvents.ClusterEvents).members, (members) => [...members].map(String).sort())

/** The counters that must stay 0 through a rotation. */
const untouched = ["nodesLeft", "failuresDetected", "authFailures", "rejectedUnauthenticated", "rejectedMalformed", "rejectedTooLarge"] as const

describe("TcpRuntime: secret rotation", () => {
  it.live.skipIf(!canCutConnections)(
    "a 3-node cluster rotates its secret while running: reconnections authenticate at every step, nobody leaves, no handshake is refused",
    () =>
      Effect.gen(function*() {
        const a = yield* startNode("rot-a", oldSecret, [])
        const b = yield* startNode("rot-b", oldSecret, [a.transport.address])
        const c = yield* startNode("rot-c", oldSecret, [a.transport.address])
        const nodes = [a, b, c]
        const others = (node: Started) => nodes.filter((n) => n !== node).map((n) => String(n.id)).sort()
        yield* poll(Effect.forEach(nodes, (node) => Effect.map(membersOf(node), (m) => assert.deepStrictEqual(m, others(node))), { discard: true }))

        let value = 0
        const steps: ReadonlyArray<readonly [string, TcpRuntime.Secrets]> = [
          ["accept the new secret", [oldSecret, newSecret]],
          ["prove with the new secret", [newSecret, oldSecret]],
          ["drop the old secret", newSecret]
        ]
        for (const [step, secrets] of steps) {
          // Rolling: one node at a time; then every connection of the cluster is cut, so that they are all
          // authenticated again at once, between the nodes already changed and the others not yet.
          for (const changed of nodes) {
            const completed = yield* Effect.forEach(nodes, (node) => Effect.map(node.transport.stats, (s) => s.handshakesCompleted))
            yield* changed.transport.setSecret(secrets)
            for (const node of nodes) yield* cutPort(node.transport.address.port)
            yield* poll(Effect.forEach(nodes, (node, i) =>
              Effect.gen(function*() {
                const where = `${step}, ${changed.id} changed: ${node.id}`
                assert.isAbove((yield* node.transport.stats).handshakesCompleted, completed[i], `${where} authenticated again`)
                const peers = yield* node.transport.peers
                assert.deepStrictEqual(peers.filter((p) => p.connected).map((p) => String(p.node)).sort(), others(node), where)
              }), { discard: true }))
          }
          // Replication goes on: every node's mutation reaches both others.
          value++
          for (const node of nodes) yield* node.counter.mutate(() => ({ value }))
          yield* poll(Effect.forEach(nodes, (node) =>
            Effect.map(node.counter.snapshot, (views) =>
              assert.deepStrictEqual(
                nodes.map((n) => views.get(n.id)?.value.value),
                [value, value, value],
                `${step}: views on ${node.id}`
              )), { discard: true }))
        }
        for (const node of nodes) {
          const stats = yield* node.transport.stats
          for (const key of untouched) assert.strictEqual(stats[key], 0, `${key} on ${node.id}`)
          assert.isAtLeast(stats.handshakesCompleted, 3)
          assert.deepStrictEqual(yield* membersOf(node), others(node))
        }

        // The old secret no longer gets in; the new one does.
        const stale = yield* startNode("rot-stale", oldSecret, [a.transport.address], { reconnect: Schedule.recurs(0) })
        yield* poll(Effect.gen(function*() {
          assert.strictEqual((yield* a.transport.stats).authFailures, 1)
          assert.strictEqual((yield* stale.transport.stats).authFailures, 1)
        }))
        assert.deepStrictEqual(yield* membersOf(stale), [])
        const fresh = yield* startNode("rot-fresh", newSecret, [a.transport.address])
        yield* poll(Effect.map(membersOf(fresh), (m) => assert.deepStrictEqual(m, nodes.map((n) => String(n.id)).sort())))
      }),
    40_000
  )

  it.live("the secrets are checked in the layer and by setSecret, which changes nothing when one is not valid", () =>
    Effect.gen(function*() {
      const refused = (secret: unknown) =>
        Effect.flip(startNode("rot-bad", secret as TcpRuntime.Secrets, []))
      const short = Redacted.make("too short")
      assert.deepStrictEqual(
        yield* refused([]),
        new TcpRuntime.InvalidOptions({ module: "TcpRuntime", option: "secret", reason: "must list at least one secret, the current one first" })
      )
      assert.deepStrictEqual(
        yield* refused([newSecret, short]),
        new TcpRuntime.InvalidOptions({ module: "TcpRuntime", option: "secret", reason: "must be at least 16 bytes (entry 1)" })
      )
      assert.deepStrictEqual(
        yield* refused([newSecret, "not redacted"]),
        new TcpRuntime.InvalidOptions({ module: "TcpRuntime", option: "secret", reason: "must be a Redacted value (entry 1)" })
      )
      // A 16-byte secret is the shortest accepted.
      const a = yield* startNode("rot-edge", [Redacted.make("x".repeat(16)), oldSecret], [])
      const error = yield* Effect.flip(a.transport.setSecret([oldSecret, short]))
      assert.strictEqual(error.message, "invalid TcpRuntime option secret: must be at least 16 bytes (entry 1)")
      // Unchanged: a node proving with the 16-byte secret still gets in.
      const b = yield* startNode("rot-edge", Redacted.make("x".repeat(16)), [a.transport.address])
      yield* poll(Effect.map(membersOf(b), (m) => assert.deepStrictEqual(m, [String(a.id)])))
      assert.strictEqual((yield* a.transport.stats).authFailures, 0)
    }), 20_000)
})

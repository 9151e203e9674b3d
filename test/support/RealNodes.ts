/**
 * What the real-socket runtime tests share (the TCP runtime's and the Effect
 * cluster adapter's): the cluster secret and fast transport timings, nodes
 * built in closeable scopes of their own, waiting until every node sees the
 * others, and the `RuntimeCluster` the conformance suite drives.
 */
import { assert } from "@effect/vitest"
import { Context, type Duration, Effect, Exit, Layer, Redacted, Schedule, Scope } from "effect"
import { type ActorRuntime, ClusterEvents, type NodeId } from "dstate"
import * as TcpRuntime from "../../src/node/TcpRuntime.ts"
import type * as RuntimeSuite from "../conformance/RuntimeSuite.ts"
import { eventually } from "./Eventually.ts"

/** The cluster secret of every real-socket test. */
export const secret = Redacted.make("test-cluster-secret-0123456789")

/** Fast reconnects, leaves and handshakes for tests (heartbeats are chosen by each suite). */
export const fastTimings = {
  reconnect: Schedule.min([Schedule.exponential("50 millis"), Schedule.spaced("500 millis")]).pipe(
    Schedule.upTo({ duration: "30 seconds" })
  ),
  leaveTimeout: "500 millis",
  handshakeTimeout: "2 seconds"
} as const

/** The TCP runtime suites' timings: `fastTimings` with 100 ms heartbeats and down after 1 s of silence. */
export const fastTcp = {
  heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("1 second"), checkInterval: "50 millis" },
  ...fastTimings
} satisfies Partial<TcpRuntime.Options>

/** The services of a TCP node: its runtime, its membership events and its transport's diagnostics. */
export type TcpNodeServices = ActorRuntime.ActorRuntime | ClusterEvents.ClusterEvents | TcpRuntime.TcpTransport

/** A node running in a closeable scope of its own. */
export interface ScopedNode<R = ClusterEvents.ClusterEvents> {
  readonly id: NodeId.NodeId
  readonly scope: Scope.Closeable
  readonly context: Context.Context<R>
}

/**
 * Builds `layer` in a new closeable scope, closed with the current scope at
 * the latest (a test can stop the node early by closing it).
 */
export const buildInOwnScope = <A, E, R>(layer: Layer.Layer<A, E, R>) =>
  Effect.gen(function*() {
    const outer = yield* Scope.Scope
    const scope = yield* Scope.make()
    yield* Scope.addFinalizer(outer, Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layer, scope)
    return { scope, context }
  })

const sorted = (ids: Iterable<NodeId.NodeId>) => [...ids].map(String).sort()

/** Waits, up to `timeout`, until every node sees exactly the others as members. */
export const awaitMesh = (
  nodes: ReadonlyArray<{ readonly id: NodeId.NodeId; readonly context: Context.Context<ClusterEvents.ClusterEvents> }>,
  timeout: Duration.Input
) =>
  eventually(
    Effect.gen(function*() {
      for (const node of nodes) {
        const members = yield* Context.get(node.context, ClusterEvents.ClusterEvents).members
        assert.deepStrictEqual(sorted(members), sorted(nodes.filter((n) => n !== node).map((n) => n.id)), `members of ${node.id}`)
      }
    }),
    { timeout, what: "a full mesh" }
  )

/**
 * The conformance suite's view of real nodes: starts `count` nodes with
 * `start` (given the nodes running so far, to pick a seed), waits for the
 * mesh, and stops a removed node by closing its scope. `eventually` polls up
 * to `timeout`.
 */
export const realCluster = <N extends ScopedNode<RuntimeSuite.RuntimeServices>>(
  count: number,
  start: (running: ReadonlyArray<N>) => Effect.Effect<N, unknown, Scope.Scope>,
  timeout: Duration.Input
): Effect.Effect<RuntimeSuite.RuntimeCluster, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const testScope = yield* Scope.Scope
    const running = new Map<NodeId.NodeId, N>()
    const add = Effect.tap(Effect.suspend(() => start([...running.values()])), (node) =>
      Effect.sync(() => running.set(node.id, node)))
    const nodes: Array<N> = []
    for (let i = 0; i < count; i++) nodes.push(yield* add)
    yield* awaitMesh(nodes, timeout)
    return {
      nodes,
      addNode: add.pipe(Effect.orDie, Scope.provide(testScope)),
      removeNode: (node) =>
        Effect.suspend(() => {
          const stopping = running.get(node.id)
          if (stopping === undefined) return Effect.void
          running.delete(node.id)
          return Scope.close(stopping.scope, Exit.void)
        }),
      eventually: (check) => eventually(check, { timeout })
    }
  })

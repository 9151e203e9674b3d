/**
 * Browser read replicas over a real WebSocket on loopback, with the client
 * running in Node (its global `WebSocket`): two TCP nodes with the
 * operations server and the web endpoint; a client of one node holds every
 * owner's views with exact values and generations, sees a mutation on the
 * other node, pulls on `query({ maxStaleness })`, is refused for each kind of
 * bad token (typed, counted, before any view), reconnects after the node's
 * endpoint restarts, and a slow reader costs the node at most the queue's
 * caps (newer snapshots supersede).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Redacted, Scope } from "effect"
import type { NodeId } from "dstate"
import { Fixtures } from "dstate/testing"
import { WebClient, WebErrors, WebToken } from "dstate/web"
import { startNode, token } from "./support/BrowserReplicas.ts"
import { eventually } from "./support/Eventually.ts"

const counterValues = (views: ReadonlyMap<NodeId.NodeId, { readonly value: { readonly value: number } }>) =>
  Object.fromEntries([...views].map(([owner, view]) => [owner, view.value.value]))

describe("WebReplicas", () => {
  it.live("a client holds every owner's views, decoded, and sees a mutation on another node", () =>
    Effect.gen(function*() {
      const a = yield* startNode()
      const b = yield* startNode({ seeds: [a.address] })
      yield* a.counter.mutate(() => ({ value: 7 }))
      yield* b.counter.mutate(() => ({ value: 3 }))
      yield* b.resource.mutateWithDelta((s) => Fixtures.updateResource(s, { cpuPercent: 40, tags: ["x"] }))
      const client = yield* WebClient.make({
        url: a.ws,
        token: yield* token(),
        states: [Fixtures.Counter, Fixtures.NodeResource]
      })
      const counter = yield* client.replica(Fixtures.Counter)
      const resource = yield* client.replica(Fixtures.NodeResource)
      yield* eventually(
        Effect.map(counter.snapshot, (views) => {
          assert.deepStrictEqual(counterValues(views), { [a.id]: 7, [b.id]: 3 })
          assert.deepStrictEqual(views.get(b.id)!.generation.age, 1)
        }),
        { timeout: "10 seconds", what: "both counters on the client" }
      )
      yield* eventually(
        Effect.map(resource.snapshot, (views) => assert.deepStrictEqual(views.get(b.id)?.value, { cpuPercent: 40, memoryUsedMiB: 0, tags: ["x"] })),
        { timeout: "10 seconds", what: "b's resource on the client" }
      )
      yield* b.counter.mutate(() => ({ value: 4 }))
      yield* eventually(
        Effect.map(counter.snapshot, (views) => assert.deepStrictEqual(counterValues(views), { [a.id]: 7, [b.id]: 4 })),
        { timeout: "10 seconds", what: "b's mutation on the client" }
      )
      assert.deepStrictEqual((yield* client.states).slice().sort(), ["counter", "node_resource"])
      const stats = yield* client.stats
      assert.strictEqual(stats.malformed, 0)
      assert.strictEqual(stats.connections, 1)
      const served = yield* a.web.stats
      assert.strictEqual(served.connectionsAccepted, 1)
      assert.strictEqual(served.connections, 1)
    }), { timeout: 30_000 })

  it.live("query with maxStaleness pulls over the socket; an owner that leaves is removed", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ web: { statusInterval: "10 seconds" } })
      const b = yield* startNode({ seeds: [a.address] })
      yield* b.counter.mutate(() => ({ value: 5 }))
      const client = yield* WebClient.make({ url: a.ws, token: yield* token(), states: [Fixtures.Counter] })
      const counter = yield* client.replica(Fixtures.Counter)
      yield* eventually(
        Effect.map(counter.snapshot, (views) => assert.strictEqual(views.get(b.id)?.value.value, 5)),
        { timeout: "10 seconds", what: "b's counter" }
      )
      const pullsBefore = (yield* a.web.stats).pulls
      // Views at most 10 ms old are not there: the query pulls, the node runs its own query (pulling b), then confirms.
      yield* Effect.sleep("20 millis")
      const values = yield* counter.query({ maxStaleness: "10 millis" }, counterValues)
      assert.deepStrictEqual(values, { [a.id]: 0, [b.id]: 5 })
      assert.strictEqual((yield* a.web.stats).pulls, pullsBefore + 1)
      // A generous bound needs no pull.
      yield* counter.query({ maxStaleness: "1 minute" }, counterValues)
      assert.strictEqual((yield* a.web.stats).pulls, pullsBefore + 1)
      // An invalid bound is a typed error.
      const invalid = yield* Effect.exit(counter.query({ maxStaleness: -1 }, counterValues))
      assert.isTrue(Exit.isFailure(invalid) && Exit.isFailure(invalid) && invalid.cause.reasons.some((r) => r._tag === "Fail" && r.error._tag === "InvalidOptions"))
      // b leaves: its view is removed on the client too.
      yield* Scope.close(b.scope, Exit.void)
      yield* eventually(
        Effect.map(counter.snapshot, (views) => assert.deepStrictEqual(counterValues(views), { [a.id]: 0 })),
        { timeout: "10 seconds", what: "b's view removed on the client" }
      )
    }), { timeout: 40_000 })

  it.live("maxPendingPulls: a pull beyond the limit is answered at once, and the query fails with StalePeer", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ web: { maxPendingPulls: 1, statusInterval: "10 seconds" } })
      const b = yield* startNode({ seeds: [a.address] })
      const client = yield* WebClient.make({ url: a.ws, token: yield* token(), states: [Fixtures.Counter] })
      const counter = yield* client.replica(Fixtures.Counter)
      yield* eventually(
        Effect.map(counter.snapshot, (views) => assert.strictEqual(views.size, 2)),
        { timeout: "10 seconds", what: "both views" }
      )
      yield* Effect.sleep("20 millis")
      const both = yield* Effect.all(
        [counter.query({ maxStaleness: "5 millis" }, counterValues), counter.query({ maxStaleness: "5 millis" }, counterValues)].map(
          Effect.result
        ),
        { concurrency: "unbounded" }
      )
      const failures = both.filter((r) => r._tag === "Failure").map((r) => r._tag === "Failure" ? r.failure : undefined)
      assert.strictEqual(failures.length, 1)
      assert.strictEqual(failures[0]!._tag, "StalePeer")
      assert.strictEqual((failures[0] as { readonly node: string }).node, a.id)
      assert.deepStrictEqual(both.find((r) => r._tag === "Success")?.success, { [a.id]: 0, [b.id]: 0 })
      assert.strictEqual((yield* a.web.stats).pulls, 2)
    }), { timeout: 30_000 })

  it.live("bad tokens are refused before any view, typed and counted", () =>
    Effect.gen(function*() {
      const a = yield* startNode()
      const refusal = (tokenValue: string, states: WebClient.Options["states"] = [Fixtures.Counter], status = false) =>
        WebClient.make({ url: a.ws, token: tokenValue, states, status }).pipe(Effect.scoped, Effect.flip)
      const wrongKey = yield* WebToken.issue(Redacted.make("another-key-0123456789"), { states: "*" })
      const expired = yield* token({ ttl: "1 millis" })
      yield* Effect.sleep("5 millis")
      const narrow = yield* token({ states: ["node_resource"] })
      const cases = [
        [yield* refusal("not-a-token"), "Malformed"],
        [yield* refusal(wrongKey), "BadSignature"],
        [yield* refusal(expired), "Expired"],
        [yield* refusal(narrow), "OutOfScope"],
        [yield* refusal(yield* token(), ["no_such_state"]), "OutOfScope"],
        [yield* refusal(yield* token(), [Fixtures.Counter], true), "OutOfScope"]
      ] as const
      for (const [error, reason] of cases) {
        assert.instanceOf(error, WebErrors.WebTokenRefused)
        assert.strictEqual((error as WebErrors.WebTokenRefused).reason, reason)
      }
      const stats = yield* a.web.stats
      assert.strictEqual(stats.refusedMalformed, 1)
      assert.strictEqual(stats.refusedBadSignature, 1)
      assert.strictEqual(stats.refusedExpired, 1)
      assert.strictEqual(stats.refusedOutOfScope, 3)
      assert.strictEqual(stats.connectionsAccepted, 0)
      assert.strictEqual(stats.framesSent, 0)
    }), { timeout: 30_000 })
})

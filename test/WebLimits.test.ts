/**
 * The web endpoint's limits at their edges, over a real WebSocket on
 * loopback: `maxConnections` (the one beyond is refused, a freed place is
 * taken again), `helloTimeout`, a first message that is not a hello,
 * `maxClientMessageBytes` (exactly the limit passes, one more closes the
 * connection), a reader that stops reading (newer snapshots supersede the
 * queued ones: the queue holds one frame per view, and the reader gets the
 * newest when it reads again), a token that expires on an open connection
 * (the client reconnects with a fresh one), the client reconnecting after
 * the node's server restarts, and every option's `InvalidOptions`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import { StateRegistry, ClusterEvents } from "dstate"
import { HttpOperations } from "dstate/http"
import { Fixtures } from "dstate/testing"
import { WebClient, WebErrors, WebReplicas } from "dstate/web"
import { controls, key, rawClient, startNode, token } from "./support/BrowserReplicas.ts"
import { eventually } from "./support/Eventually.ts"

const within = (what: string) => ({ timeout: "10 seconds" as const, what })

const refusedReason = (client: { readonly frames: ReadonlyArray<unknown> }) =>
  controls(client as Parameters<typeof controls>[0]).find((m) => m.t === "refused")?.reason

describe("WebReplicas limits", () => {
  it.live("maxConnections: the connection beyond is refused; a freed place is taken again", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ web: { maxConnections: 1 } })
      const first = yield* Scope.make()
      yield* WebClient.make({ url: a.ws, token: yield* token(), states: [Fixtures.Counter] }).pipe(
        Effect.provideService(Scope.Scope, first)
      )
      const refused = yield* WebClient.make({ url: a.ws, token: yield* token(), states: [Fixtures.Counter] }).pipe(
        Effect.scoped,
        Effect.flip
      )
      assert.instanceOf(refused, WebErrors.WebTokenRefused)
      assert.strictEqual((refused as WebErrors.WebTokenRefused).reason, "TooManyConnections")
      yield* Scope.close(first, Exit.void)
      yield* eventually(Effect.map(a.web.stats, (s) => assert.strictEqual(s.connections, 0)), within("the first connection's end"))
      yield* WebClient.make({ url: a.ws, token: yield* token(), states: [Fixtures.Counter] }).pipe(Effect.scoped)
      const stats = yield* a.web.stats
      assert.strictEqual(stats.refusedTooManyConnections, 1)
      assert.strictEqual(stats.connectionsAccepted, 2)
    }), { timeout: 30_000 })

  it.live("helloTimeout, and a first message that is not a hello, are refused before any view", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ web: { helloTimeout: "300 millis" } })
      const silent = yield* rawClient(a.ws)
      yield* eventually(Effect.sync(() => assert.strictEqual(silent.closed?.code, 4401)), within("the silent client's close"))
      assert.strictEqual(refusedReason(silent), "HelloTimeout")
      assert.strictEqual(silent.frames.length, 1)
      const binary = yield* rawClient(a.ws)
      binary.ws.send(new Uint8Array([1, 2, 3]))
      yield* eventually(Effect.sync(() => assert.strictEqual(binary.closed?.code, 4401)), within("the binary client's close"))
      assert.strictEqual(refusedReason(binary), "BadHello")
      const pull = yield* rawClient(a.ws)
      pull.ws.send(JSON.stringify({ t: "pull", id: 1, state: "counter", maxStalenessMillis: 0 }))
      yield* eventually(Effect.sync(() => assert.strictEqual(pull.closed?.code, 4401)), within("the pulling client's close"))
      assert.strictEqual(refusedReason(pull), "BadHello")
      const stats = yield* a.web.stats
      assert.strictEqual(stats.refusedHelloTimeout, 1)
      assert.strictEqual(stats.refusedBadHello, 2)
      assert.strictEqual(stats.connectionsAccepted, 0)
    }), { timeout: 30_000 })

  it.live("maxClientMessageBytes: a message of exactly the limit is read, one more closes the connection", () =>
    Effect.gen(function*() {
      const limit = 512
      const a = yield* startNode({ web: { maxClientMessageBytes: limit } })
      const client = yield* rawClient(a.ws)
      client.ws.send(JSON.stringify({ t: "hello", token: yield* token(), states: ["counter"] }))
      yield* eventually(Effect.sync(() => assert.isTrue(controls(client).some((m) => m.t === "welcome"))), within("the welcome"))
      const pull = (id: number, length: number) => JSON.stringify({ t: "pull", id, state: "counter", maxStalenessMillis: 60_000 }).padEnd(length, " ")
      client.ws.send(pull(1, limit))
      yield* eventually(Effect.sync(() => assert.isTrue(controls(client).some((m) => m.t === "pulled" && m.id === 1))), within("the pull's reply"))
      client.ws.send(pull(2, limit + 1))
      yield* eventually(Effect.sync(() => assert.strictEqual(client.closed?.code, 1008)), within("the close"))
      assert.isFalse(controls(client).some((m) => m.t === "pulled" && m.id === 2))
      const stats = yield* a.web.stats
      assert.strictEqual(stats.clientMessagesRejected, 1)
      assert.strictEqual(stats.pulls, 1)
    }), { timeout: 30_000 })

  it.live("a reader that stops reading: newer snapshots supersede the queued ones, and it gets the newest when it reads again", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ web: { socketHighWater: 1, statusInterval: "1 hour" } })
      const client = yield* rawClient(a.ws)
      client.ws.send(JSON.stringify({ t: "hello", token: yield* token(), states: ["node_resource"] }))
      yield* eventually(Effect.sync(() => assert.isTrue(controls(client).some((m) => m.t === "synced"))), within("the first views"))
      // The client stops reading; each view is 20 KB, so the socket's buffers fill within a few hundred.
      const socket = (client.ws as unknown as { readonly _socket: { pause(): void; resume(): void } })._socket
      socket.pause()
      const padding = "x".repeat(20_000)
      const mutations = 600
      for (let i = 1; i <= mutations; i++) {
        yield* a.resource.mutateWithDelta((s) => Fixtures.updateResource(s, { tags: [`${i}`, padding] }))
      }
      const stats = yield* eventually(
        Effect.map(a.web.stats, (s) => {
          assert.isAbove(s.superseded, 0)
          return s
        }),
        within("superseded snapshots")
      )
      // One view, one state: the queue holds at most that view's newest snapshot.
      assert.isAtMost(stats.queuedFrames, 1)
      assert.isAtMost(stats.queuedBytes, 21_000)
      socket.resume()
      yield* eventually(
        Effect.sync(() => {
          const last = client.frames.findLast((f) => f._tag === "Data")
          assert.isTrue(last !== undefined && last._tag === "Data" && last.message.generation.age === mutations)
        }),
        within("the newest snapshot")
      )
      const received = client.frames.filter((f) => f._tag === "Data").length
      assert.isBelow(received, mutations)
    }), { timeout: 60_000 })

  it.live("a token that expires on an open connection closes it; a client with a token effect reconnects with a fresh one", () =>
    Effect.gen(function*() {
      const a = yield* startNode()
      let issued = 0
      const fresh = Effect.flatMap(token({ ttl: "1 second" }), (t) => Effect.sync(() => (issued++, t)))
      const client = yield* WebClient.make({ url: a.ws, token: fresh, states: [Fixtures.Counter], reconnectInitial: "20 millis" })
      yield* eventually(Effect.map(a.web.stats, (s) => assert.isAtLeast(s.tokensExpired, 1)), within("an expiry"))
      yield* eventually(Effect.map(client.stats, (s) => assert.isAtLeast(s.connections, 2)), within("the reconnection"))
      assert.isAtLeast(issued, 2)
      yield* a.counter.mutate(() => ({ value: 11 }))
      const counter = yield* client.replica(Fixtures.Counter)
      yield* eventually(Effect.map(counter.snapshot, (views) => assert.strictEqual(views.get(a.id)?.value.value, 11)), within("the mutation"))
    }), { timeout: 30_000 })

  it.live("the client reconnects after the node's server restarts, and takes the new incarnation", () =>
    Effect.gen(function*() {
      const a = yield* startNode()
      yield* a.counter.mutate(() => ({ value: 1 }))
      const client = yield* WebClient.make({ url: a.ws, token: yield* token(), states: [Fixtures.Counter], reconnectInitial: "20 millis", reconnectMax: "200 millis" })
      const counter = yield* client.replica(Fixtures.Counter)
      yield* eventually(Effect.map(counter.snapshot, (views) => assert.strictEqual(views.get(a.id)?.value.value, 1)), within("the first value"))
      const before = (yield* counter.snapshot).get(a.id)!.generation
      yield* Scope.close(a.scope, Exit.void)
      yield* eventually(Effect.map(client.connectionState, (s) => assert.notStrictEqual(s._tag, "Connected")), within("the disconnection"))
      // The views are kept while disconnected.
      assert.strictEqual((yield* counter.snapshot).get(a.id)?.value.value, 1)
      const again = yield* startNode({ id: a.id, http: { port: a.port } })
      yield* eventually(
        Effect.map(counter.snapshot, (views) => {
          const view = views.get(a.id)
          assert.isTrue(view !== undefined && view.generation.incarnation > before.incarnation)
          assert.strictEqual(view!.value.value, 0)
        }),
        within("the restarted node's view")
      )
      assert.strictEqual((yield* client.connectionState)._tag, "Connected")
      assert.strictEqual((yield* again.web.stats).connectionsAccepted, 1)
    }), { timeout: 30_000 })

  it.effect("every option is checked: InvalidOptions at each edge", () =>
    Effect.gen(function*() {
      const option = (options: Partial<WebReplicas.Options>) =>
        Layer.build(WebReplicas.layer({ key, states: [Fixtures.Counter], ...options })).pipe(
          Effect.provide(Layer.mergeAll(
            Layer.succeed(StateRegistry.StateRegistry, {} as StateRegistry.StateRegistry["Service"]),
            Layer.succeed(ClusterEvents.ClusterEvents, {} as ClusterEvents.ClusterEvents["Service"])
          )),
          Effect.scoped,
          Effect.flip,
          Effect.map((error) => `${error._tag}:${error.option}`)
        )
      assert.strictEqual(yield* option({ maxConnections: 0 }), "InvalidOptions:maxConnections")
      assert.strictEqual(yield* option({ maxQueuedFrames: 0 }), "InvalidOptions:maxQueuedFrames")
      assert.strictEqual(yield* option({ maxQueuedBytes: 0 }), "InvalidOptions:maxQueuedBytes")
      assert.strictEqual(yield* option({ socketHighWater: 0 }), "InvalidOptions:socketHighWater")
      assert.strictEqual(yield* option({ maxClientMessageBytes: 255 }), "InvalidOptions:maxClientMessageBytes")
      assert.strictEqual(yield* option({ maxPendingPulls: 0 }), "InvalidOptions:maxPendingPulls")
      assert.strictEqual(yield* option({ helloTimeout: 0 }), "InvalidOptions:helloTimeout")
      assert.strictEqual(yield* option({ statusInterval: "0 millis" }), "InvalidOptions:statusInterval")
      assert.strictEqual(yield* option({ path: "web" }), "InvalidOptions:path")
      assert.strictEqual(yield* option({ path: "/status" }), "InvalidOptions:path")
      assert.strictEqual(yield* option({ states: [] }), "InvalidOptions:states")
      assert.strictEqual(yield* option({ states: [Fixtures.Counter, Fixtures.Counter] }), "InvalidOptions:states")
      assert.strictEqual(yield* option({ key: [] }), "InvalidOptions:key")
      const client = (options: Partial<WebClient.Options>) =>
        WebClient.make({ url: "ws://127.0.0.1:1/web", token: "t", states: [Fixtures.Counter], ...options }).pipe(
          Effect.scoped,
          Effect.flip,
          Effect.map((error) => `${error._tag}:${(error as { readonly option?: string }).option}`)
        )
      assert.strictEqual(yield* client({ url: "http://127.0.0.1/web" }), "InvalidOptions:url")
      assert.strictEqual(yield* client({ pullTimeout: 0 }), "InvalidOptions:pullTimeout")
      assert.strictEqual(yield* client({ connectTimeout: 0 }), "InvalidOptions:connectTimeout")
      assert.strictEqual(yield* client({ reconnectInitial: "1 second", reconnectMax: "999 millis" }), "InvalidOptions:reconnectMax")
      assert.strictEqual(yield* client({ maxFrameBytes: 63 }), "InvalidOptions:maxFrameBytes")
      assert.strictEqual(yield* client({ states: [] }), "InvalidOptions:states")
      // An unused import check: HttpOperations mounts what the layer provides.
      assert.strictEqual(HttpOperations.Mounts.key, "dstate/http/HttpOperations/Mounts")
    }))
})

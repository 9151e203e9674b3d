/**
 * The browser client's acceptance rules against a scripted server (a plain
 * `ws` server on loopback that sends exactly the frames the test chooses):
 * a snapshot is taken, a delta that follows is applied with the
 * definition's `applyDelta`, a duplicate or stale one is discarded and
 * counted, a gap makes the client ask for the snapshot, a newer incarnation's
 * snapshot replaces the view, a corrupted frame is counted and changes
 * nothing, `synced` sets staleness and the pending generation, a complete
 * `synced` drops owners it does not list; and a state asked for by name
 * holds the encoded bytes, with `diffs` starting from `Added`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Stream } from "effect"
import { NodeId } from "dstate"
import { Fixtures } from "dstate/testing"
import { WebClient } from "dstate/web"
import { WebSocketServer, type WebSocket } from "ws"
import { encodeFrame, makeStateCodec } from "../src/internal/codec.ts"
import { controlFrame } from "../src/web/internal/frames.ts"
import { eventually } from "./support/Eventually.ts"

const within = (what: string) => ({ timeout: "10 seconds" as const, what })
const owner = NodeId.make("node-x")
const codec = makeStateCodec(Fixtures.NodeResource)
const view = { cpuPercent: 10, memoryUsedMiB: 100, tags: ["a"] }

const snapshotFrame = (incarnation: number, age: number, value: typeof view) =>
  Result.getOrThrow(encodeFrame({
    _tag: "FullSnapshot",
    stateName: "node_resource",
    source: owner,
    generation: { incarnation, age },
    wireVersion: 1,
    createdAt: 1,
    modifiedAt: 2,
    payload: Result.getOrThrow(codec.encodeView(value))
  }, 1 << 20))

const deltaFrame = (incarnation: number, age: number, delta: Partial<typeof view>) =>
  Result.getOrThrow(encodeFrame({
    _tag: "DeltaUpdate",
    stateName: "node_resource",
    source: owner,
    generation: { incarnation, age },
    wireVersion: 1,
    modifiedAt: 3,
    payload: Result.getOrThrow(codec.encodeDelta(delta))
  }, 1 << 20))

/** A server that welcomes one client and then sends what the test says; it records what the client sends. */
const scriptedServer = Effect.acquireRelease(
  Effect.callback<{ readonly wss: WebSocketServer; readonly url: string; readonly received: Array<Record<string, unknown>>; socket: WebSocket | undefined }>((resume) => {
    const wss: WebSocketServer = new WebSocketServer({ host: "127.0.0.1", port: 0 }, () => {
      const server = { wss, url: `ws://127.0.0.1:${(wss.address() as { readonly port: number }).port}/`, received: [] as Array<Record<string, unknown>>, socket: undefined as WebSocket | undefined }
      wss.on("connection", (socket) => {
        server.socket = socket
        socket.on("message", (data: Buffer) => {
          const message = JSON.parse(data.toString()) as Record<string, unknown>
          server.received.push(message)
          if (message.t === "hello") {
            socket.send(controlFrame({ t: "welcome", node: "node-x", states: ["node_resource"], status: false, expiresAt: 1e15 }))
          }
        })
      })
      resume(Effect.succeed(server))
    })
  }),
  ({ wss }) => Effect.sync(() => wss.close())
)

describe("WebClient", () => {
  it.live("accepts snapshots and deltas by the nodes' rules; a gap asks for the snapshot", () =>
    Effect.gen(function*() {
      const server = yield* scriptedServer
      const client = yield* WebClient.make({ url: server.url, token: "t", states: [Fixtures.NodeResource] })
      const replica = yield* client.replica(Fixtures.NodeResource)
      const send = (frame: Uint8Array) => Effect.sync(() => server.socket!.send(frame))
      const held = Effect.map(replica.snapshot, (views) => {
        const v = views.get(owner)
        return v === undefined ? undefined : { generation: `${v.generation.incarnation}:${v.generation.age}`, value: v.value }
      })

      yield* send(snapshotFrame(5, 1, view))
      yield* eventually(Effect.map(held, (h) => assert.deepStrictEqual(h, { generation: "5:1", value: view })), within("the snapshot"))
      yield* send(deltaFrame(5, 2, { cpuPercent: 55 }))
      yield* eventually(
        Effect.map(held, (h) => assert.deepStrictEqual(h, { generation: "5:2", value: { ...view, cpuPercent: 55 } })),
        within("the delta applied")
      )
      // A duplicate and a stale delta: discarded, counted.
      yield* send(deltaFrame(5, 2, { cpuPercent: 99 }))
      yield* send(snapshotFrame(5, 1, { ...view, cpuPercent: 1 }))
      yield* eventually(Effect.map(client.stats, (s) => assert.strictEqual(s.staleDiscarded, 2)), within("two discarded"))
      assert.deepStrictEqual(yield* held, { generation: "5:2", value: { ...view, cpuPercent: 55 } })
      // A gap (age 4 after 2): not applied, the snapshot is asked for.
      yield* send(deltaFrame(5, 4, { cpuPercent: 70 }))
      yield* eventually(
        Effect.sync(() => assert.deepStrictEqual(server.received.at(-1), { t: "snapshot", state: "node_resource", owner: "node-x" })),
        within("the snapshot request")
      )
      assert.deepStrictEqual(yield* held, { generation: "5:2", value: { ...view, cpuPercent: 55 } })
      // A corrupted frame: counted, nothing changes.
      const corrupted = snapshotFrame(5, 9, view)
      corrupted[corrupted.length - 1] ^= 0xff
      yield* send(corrupted)
      yield* eventually(Effect.map(client.stats, (s) => assert.strictEqual(s.malformed, 1)), within("the corrupted frame counted"))
      // A new incarnation's snapshot replaces the view; synced sets the pending generation.
      yield* send(snapshotFrame(6, 0, { ...view, tags: ["b"] }))
      yield* send(controlFrame({ t: "synced", state: "node_resource", complete: false, views: [{ owner: "node-x", incarnation: 6, age: 0, stalenessMillis: 0, pending: { incarnation: 6, age: 3 } }] }))
      yield* eventually(
        Effect.map(replica.snapshot, (views) => {
          const v = views.get(owner)!
          assert.deepStrictEqual(v.generation, { incarnation: 6, age: 0 })
          assert.deepStrictEqual(v.value.tags, ["b"])
          assert.deepStrictEqual(v.pendingRemote, { incarnation: 6, age: 3 })
        }),
        within("the new incarnation, pending 6:3")
      )
      // A complete synced without the owner drops it.
      yield* send(controlFrame({ t: "synced", state: "node_resource", complete: true, views: [] }))
      yield* eventually(Effect.map(replica.snapshot, (views) => assert.strictEqual(views.size, 0)), within("the owner dropped"))
      const stats = yield* client.stats
      assert.strictEqual(stats.snapshotsAccepted, 2)
      assert.strictEqual(stats.deltasAccepted, 1)
      assert.strictEqual(stats.gapsDetected, 1)
    }), { timeout: 30_000 })

  it.live("a state asked for by name holds the encoded bytes; diffs start with Added", () =>
    Effect.gen(function*() {
      const server = yield* scriptedServer
      const client = yield* WebClient.make({ url: server.url, token: "t", states: ["node_resource"] })
      const replica = yield* client.raw("node_resource")
      const frame = snapshotFrame(1, 1, view)
      server.socket!.send(frame)
      yield* eventually(Effect.map(replica.snapshot, (views) => assert.strictEqual(views.size, 1)), within("the raw view"))
      const value = (yield* replica.snapshot).get(owner)!.value as Uint8Array
      assert.deepStrictEqual(value, Result.getOrThrow(codec.encodeView(view)))
      const first = yield* replica.diffs.pipe(Stream.take(1), Stream.runCollect)
      assert.deepStrictEqual([...first].map((d) => [d._tag, d.owner]), [["Added", owner]])
      // Deltas of a state read by name cannot be applied: the client asks for the snapshot instead.
      server.socket!.send(deltaFrame(1, 2, { cpuPercent: 1 }))
      yield* eventually(
        Effect.sync(() => assert.deepStrictEqual(server.received.at(-1), { t: "snapshot", state: "node_resource", owner: "node-x" })),
        within("the snapshot request")
      )
      assert.isTrue((yield* Effect.result(client.replica(Fixtures.Counter)))._tag === "Failure")
    }), { timeout: 30_000 })
})

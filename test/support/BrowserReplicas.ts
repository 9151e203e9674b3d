/**
 * In-process nodes for the web suites: a TCP node on loopback with Counter
 * and NodeResource registered, its operations server and the web endpoint
 * (options of both given by the test), in a scope of its own; tokens signed
 * with the suite's key; and a raw WebSocket client (the `ws` package) that
 * can stop reading, for what a browser's own client never does.
 */
import { Context, Effect, Layer, Redacted } from "effect"
import { NodeId, StatePersistence, StateRegistry, SyncStrategy } from "dstate"
import { HttpOperations } from "dstate/http"
import { TcpRuntime } from "dstate/node"
import { Fixtures } from "dstate/testing"
import { WebReplicas, WebToken } from "dstate/web"
import WebSocket from "ws"
import { decode, type Decoded } from "../../src/web/internal/frames.ts"
import { buildInOwnScope, fastTimings, secret } from "./RealNodes.ts"

export const key = Redacted.make("web-test-key-0123456789")
const fast = {
  heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("2 seconds"), checkInterval: "50 millis" },
  ...fastTimings
} satisfies Partial<TcpRuntime.Options>

let nodeCounter = 0
const nextId = () => NodeId.make(`web-${String(++nodeCounter).padStart(3, "0")}`)

export interface StartOptions {
  readonly seeds?: ReadonlyArray<TcpRuntime.Address>
  readonly web?: Partial<WebReplicas.Options>
  readonly http?: HttpOperations.Options
  readonly id?: NodeId.NodeId
}

/** A TCP node with Counter and NodeResource registered, its operations server and the web endpoint, in a scope of its own. */
export const startNode = (options: StartOptions = {}) =>
  Effect.gen(function*() {
    const id = options.id ?? nextId()
    const node = StateRegistry.layer.pipe(
      Layer.provideMerge(TcpRuntime.layer({ ...fast, nodeId: id, secret, seeds: options.seeds ?? [] })),
      Layer.provide(StatePersistence.layerMemory)
    )
    const web = WebReplicas.layer({ key, states: [Fixtures.Counter, Fixtures.NodeResource], ...options.web })
    const { context, scope } = yield* buildInOwnScope(
      HttpOperations.layer(options.http).pipe(Layer.provideMerge(web), Layer.provideMerge(node))
    )
    const registry = Context.get(context, StateRegistry.StateRegistry)
    const counter = yield* registry.register(Fixtures.Counter, { strategy: SyncStrategy.activePush() })
    const resource = yield* registry.register(Fixtures.NodeResource, { strategy: SyncStrategy.activePush() })
    const http = Context.get(context, HttpOperations.HttpOperations)
    return {
      id,
      scope,
      counter,
      resource,
      url: http.url,
      ws: `${http.url.replace("http", "ws")}/web`,
      port: http.address.port,
      address: Context.get(context, TcpRuntime.TcpTransport).address,
      web: Context.get(context, WebReplicas.WebReplicas)
    }
  })

export const token = (options: Partial<WebToken.IssueOptions> = {}) => WebToken.issue(key, { states: "*", ...options })

/** A raw client: every frame it received (decoded), how it closed, and its socket. */
export interface RawClient {
  readonly ws: WebSocket
  readonly frames: Array<Decoded>
  closed: { readonly code: number; readonly reason: string } | undefined
}

/** Opens a raw WebSocket to `url`, closed (terminated) with the scope. */
export const rawClient = (url: string) =>
  Effect.acquireRelease(
    Effect.callback<RawClient>((resume) => {
      const ws = new WebSocket(url)
      const client: RawClient = { ws, frames: [], closed: undefined }
      ws.on("message", (data: Buffer) => client.frames.push(decode(new Uint8Array(data), 1 << 24)))
      ws.on("close", (code: number, reason: Buffer) => {
        client.closed = { code, reason: reason.toString() }
      })
      ws.once("open", () => resume(Effect.succeed(client)))
      ws.once("error", (error: Error) => resume(Effect.die(error)))
    }),
    (client) => Effect.sync(() => client.ws.terminate())
  )

/** The control messages a raw client received, in order. */
export const controls = (client: RawClient): ReadonlyArray<Record<string, unknown>> =>
  client.frames.flatMap((frame) => frame._tag === "Control" ? [frame.json as Record<string, unknown>] : [])

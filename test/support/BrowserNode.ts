/**
 * Child process of the browser suite (test/WebDashboard.test.ts) and of the
 * web bench: one dstate node in its own OS process (TCP runtime on loopback,
 * memory persistence, the registry), with the operations server and the web
 * endpoint serving the fixture `Counter` and `NodeResource` states, driven
 * over stdin/stdout one JSON object per line.
 *
 * Usage: `node test/support/BrowserNode.ts '<config JSON>'` with
 * `{ "id": "node-1", "port": 0, "httpPort": 0, "seeds": ["127.0.0.1:7001"], "key": "..." }`.
 *
 * Commands: `{ "id": 1, "op": "set", "value": 5 }` (the counter becomes
 * `{ value: 5 }`; the reply carries its generation), `{ "id": 2, "op":
 * "token", "states": "*", "status": true, "ttlMillis": 60000 }` (a token
 * signed with the endpoint's key). Events: `{ "event": "ready", "node",
 * "port", "httpPort", "url" }` once both states are registered. Logs go to
 * stderr. When stdin closes the node stops gracefully.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Duration, Effect, Layer, Logger, Queue, Redacted } from "effect"
import { NodeId, StatePersistence, StateRegistry, SyncStrategy } from "dstate"
import { HttpOperations } from "dstate/http"
import { TcpRuntime } from "dstate/node"
import { Fixtures } from "dstate/testing"
import { WebReplicas } from "dstate/web"
import { createInterface } from "node:readline"
import { fastTcp, secret } from "./RealNodes.ts"

export interface Config {
  readonly id: string
  readonly port: number
  readonly httpPort: number
  readonly seeds: ReadonlyArray<string>
  readonly key: string
}

const config = JSON.parse(process.argv[2]) as Config

const seeds = config.seeds.map((seed) => {
  const [host, port] = seed.split(":")
  return { host, port: Number(port) }
})
const node = StateRegistry.layer.pipe(
  Layer.provideMerge(TcpRuntime.layer({ ...fastTcp, nodeId: NodeId.make(config.id), port: config.port, secret, seeds })),
  Layer.provide(StatePersistence.layerMemory)
)
const web = WebReplicas.layer({ key: Redacted.make(config.key), states: [Fixtures.Counter, Fixtures.NodeResource] })
const served = HttpOperations.layer({ port: config.httpPort }).pipe(Layer.provideMerge(web), Layer.provideMerge(node))

const print = (message: object) => Effect.sync(() => process.stdout.write(`${JSON.stringify(message)}\n`))

interface Command {
  readonly id: number
  readonly op: "set" | "token"
  readonly value?: number
  readonly states?: ReadonlyArray<string> | "*"
  readonly status?: boolean
  readonly ttlMillis?: number
}

const program = Effect.gen(function*() {
  const registry = yield* StateRegistry.StateRegistry
  const counter = yield* registry.register(Fixtures.Counter, { strategy: SyncStrategy.activePush() })
  yield* registry.register(Fixtures.NodeResource, { strategy: SyncStrategy.activePush() })
  const http = yield* HttpOperations.HttpOperations
  const replicas = yield* WebReplicas.WebReplicas
  const transport = yield* TcpRuntime.TcpTransport
  yield* print({ event: "ready", node: config.id, port: transport.address.port, httpPort: http.address.port, url: http.url })

  const handle = (command: Command) => {
    switch (command.op) {
      case "set":
        return Effect.map(counter.mutate(() => ({ value: command.value ?? 0 })), (committed) => ({ generation: committed.generation }))
      case "token":
        return Effect.map(
          replicas.issue({ states: command.states ?? "*", status: command.status ?? true, ttl: Duration.millis(command.ttlMillis ?? 600_000) }),
          (token) => ({ token })
        )
    }
  }

  const commands = yield* Queue.unbounded<string, Cause.Done>()
  const lines = createInterface({ input: process.stdin })
  lines.on("line", (line) => Queue.offerUnsafe(commands, line))
  lines.on("close", () => Queue.endUnsafe(commands))
  yield* Queue.take(commands).pipe(
    Effect.flatMap((line) => {
      const command = JSON.parse(line) as Command
      return (handle(command) as Effect.Effect<object, { readonly _tag: string }>).pipe(
        Effect.map((reply) => ({ id: command.id, ok: true, ...reply })),
        Effect.catch((error) => Effect.succeed({ id: command.id, ok: false, error: error._tag })),
        Effect.flatMap(print)
      )
    }),
    Effect.forever,
    Effect.catchTag("Done", () => Effect.void)
  )
})

NodeRuntime.runMain(Effect.scoped(program).pipe(Effect.provide(served), Effect.provideService(Logger.LogToStderr, true)))

/**
 * The operations endpoints over real HTTP on loopback, on real TCP nodes:
 * the status codes of `/healthz` and `/readyz` while a node starts, once it
 * is ready, while it drains, with a failing store and with a stuck one; the
 * Prometheus text parsed back with exact counters after a known workload;
 * the bearer token; `/status` decoded by its Schema with exact values.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Redacted, Schema, Scope } from "effect"
import { NodeId, StatePersistence, StateRegistry, SyncStrategy } from "dstate"
import { HttpOperations } from "dstate/http"
import { TcpRuntime } from "dstate/node"
import { Fixtures, InMemoryPersistence } from "dstate/testing"
import { eventually } from "./support/Eventually.ts"
import { buildInOwnScope, fastTimings, secret } from "./support/RealNodes.ts"

const fast = {
  heartbeat: { interval: "100 millis", detector: TcpRuntime.fixedTimeout("2 seconds"), checkInterval: "50 millis" },
  ...fastTimings
} satisfies Partial<TcpRuntime.Options>

let nodeCounter = 0
const nextId = () => NodeId.make(`http-${String(++nodeCounter).padStart(3, "0")}`)

interface StartOptions {
  readonly seeds?: ReadonlyArray<TcpRuntime.Address>
  readonly persistence?: Layer.Layer<StatePersistence.StatePersistence>
  readonly http?: HttpOperations.Options
}

/** A TCP node with its registry and operations endpoints, in a closeable scope of its own. */
const startNode = (options: StartOptions = {}) =>
  Effect.gen(function*() {
    const id = nextId()
    const node = StateRegistry.layer.pipe(
      Layer.provideMerge(TcpRuntime.layer({ ...fast, nodeId: id, secret, seeds: options.seeds ?? [] })),
      Layer.provide(options.persistence ?? StatePersistence.layerMemory)
    )
    const { context, scope } = yield* buildInOwnScope(HttpOperations.layer(options.http).pipe(Layer.provideMerge(node)))
    return {
      id,
      scope,
      url: Context.get(context, HttpOperations.HttpOperations).url,
      address: Context.get(context, TcpRuntime.TcpTransport).address,
      registry: Context.get(context, StateRegistry.StateRegistry)
    }
  })

interface Reply {
  readonly status: number
  readonly body: string
  readonly contentType: string | null
}

/** One GET over real HTTP (the endpoints are what is tested, not a client). */
const get = (url: string, token?: string) =>
  Effect.promise(async (): Promise<Reply> => {
    const response = await fetch(url, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } })
    return { status: response.status, body: await response.text(), contentType: response.headers.get("content-type") }
  })

const decodeReady = Schema.decodeUnknownSync(Schema.fromJsonString(HttpOperations.Ready))
const decodeHealth = Schema.decodeUnknownSync(Schema.fromJsonString(HttpOperations.Health))
const decodeStatus = Schema.decodeUnknownSync(Schema.fromJsonString(HttpOperations.Status))

/** The samples of a Prometheus text: `name{labels} value` lines, keyed by name and sorted labels. */
const parsePrometheus = (text: string) => {
  const samples = new Map<string, number>()
  const types = new Map<string, string>()
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ")
      types.set(name, type)
      continue
    }
    if (line.length === 0 || line.startsWith("#")) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (.+)$/.exec(line)
    assert.isNotNull(match, `a sample line: ${line}`)
    const [, name, labels, value] = match!
    const sortedLabels = (labels ?? "").split(",").filter((l) => l.length > 0).sort().join(",")
    samples.set(`${name}{${sortedLabels}}`, Number(value))
  }
  return { samples, types }
}

const resourceOptions = { strategy: SyncStrategy.activePush() } as const

describe("HttpOperations", () => {
  it.live("starting, then ready: /readyz is 503 with its reasons until a state is registered and the peers are seen", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ http: { minPeers: 1 } })
      // Starting: the endpoints listen before any state is registered.
      assert.strictEqual((yield* get(`${a.url}/healthz`)).status, 200)
      const starting = yield* get(`${a.url}/readyz`)
      assert.strictEqual(starting.status, 503)
      assert.deepStrictEqual(decodeReady(starting.body), {
        ready: false,
        draining: false,
        reasons: ["no state is registered yet", "sees 0 of the 1 peers required"]
      })
      yield* a.registry.register(Fixtures.NodeResource, resourceOptions)
      assert.deepStrictEqual(decodeReady((yield* get(`${a.url}/readyz`)).body).reasons, ["sees 0 of the 1 peers required"])

      const b = yield* startNode({ seeds: [a.address], http: { minPeers: 1 } })
      yield* b.registry.register(Fixtures.NodeResource, resourceOptions)
      for (const node of [a, b]) {
        const reply = yield* eventually(
          Effect.map(get(`${node.url}/readyz`), (reply) => reply.status === 200 && reply),
          { timeout: "10 seconds", what: `${node.id} ready` }
        )
        assert.deepStrictEqual(decodeReady(reply.body), { ready: true, draining: false, reasons: [] })
        const health = yield* get(`${node.url}/healthz`)
        assert.strictEqual(health.status, 200)
        assert.deepStrictEqual(decodeHealth(health.body), { alive: true, shuttingDown: false, failing: [] })
      }
      // Unknown paths and methods are not endpoints.
      assert.strictEqual((yield* get(`${a.url}/nope`)).status, 404)
    }), { timeout: 30_000 })

  it.live("draining: from the start of the shutdown /readyz is 503 (draining) while /healthz stays 200", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ http: { drainDelay: "3 seconds" } })
      yield* a.registry.register(Fixtures.Counter)
      assert.strictEqual((yield* get(`${a.url}/readyz`)).status, 200)
      const stopping = yield* Effect.forkChild(Scope.close(a.scope, Exit.void))
      const reply = yield* eventually(
        Effect.map(get(`${a.url}/readyz`), (reply) => reply.status === 503 && reply),
        { timeout: "2 seconds", what: "readyz draining" }
      )
      assert.deepStrictEqual(decodeReady(reply.body), { ready: false, draining: true, reasons: ["the node is draining"] })
      assert.strictEqual((yield* get(`${a.url}/healthz`)).status, 200)
      yield* Fiber.join(stopping)
      const refused = yield* Effect.exit(get(`${a.url}/healthz`))
      assert.isTrue(Exit.isFailure(refused), "the server is closed once the node stopped")
    }), { timeout: 30_000 })

  it.live("a failing store: /readyz is 503 naming the failed save until a save succeeds; /healthz stays 200", () =>
    Effect.gen(function*() {
      const store = InMemoryPersistence.makeStore()
      const a = yield* startNode({ persistence: InMemoryPersistence.layer(store) })
      const counter = yield* a.registry.register(Fixtures.Counter)
      assert.strictEqual((yield* get(`${a.url}/readyz`)).status, 200)
      store.failSaves = true
      const failed = yield* Effect.exit(counter.mutate((s) => ({ value: s.value + 1 })))
      assert.isTrue(Exit.isFailure(failed))
      const reply = yield* get(`${a.url}/readyz`)
      assert.strictEqual(reply.status, 503)
      assert.deepStrictEqual(decodeReady(reply.body), {
        ready: false,
        draining: false,
        reasons: ["save of state \"counter\" failed: save failure injected by the test store"]
      })
      assert.strictEqual((yield* get(`${a.url}/healthz`)).status, 200)
      InMemoryPersistence.heal(store)
      yield* counter.mutate((s) => ({ value: s.value + 1 }))
      assert.strictEqual((yield* get(`${a.url}/readyz`)).status, 200)
    }), { timeout: 30_000 })

  it.live("a stuck store: the state's actor does not answer the probe and /healthz is 503 naming it", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      let hold = false
      const memory = yield* Layer.build(StatePersistence.layerMemory).pipe(
        Effect.map((context) => Context.get(context, StatePersistence.StatePersistence))
      )
      const stuck = Layer.succeed(StatePersistence.StatePersistence, {
        load: memory.load,
        save: (name, record, change) =>
          Effect.andThen(hold ? Deferred.await(gate) : Effect.void, memory.save(name, record, change))
      })
      const a = yield* startNode({ persistence: stuck, http: { livenessTimeout: "200 millis" } })
      const counter = yield* a.registry.register(Fixtures.Counter)
      assert.strictEqual((yield* get(`${a.url}/healthz`)).status, 200)
      hold = true
      const mutation = yield* Effect.forkChild(counter.mutate((s) => ({ value: s.value + 1 })))
      const reply = yield* eventually(
        Effect.map(get(`${a.url}/healthz`), (reply) => reply.status === 503 && reply),
        { timeout: "5 seconds", what: "healthz failing" }
      )
      assert.deepStrictEqual(decodeHealth(reply.body), { alive: false, shuttingDown: false, failing: ["counter"] })
      hold = false
      yield* Deferred.succeed(gate, undefined)
      assert.deepStrictEqual((yield* Fiber.join(mutation)).state, { value: 1 })
      assert.strictEqual((yield* get(`${a.url}/healthz`)).status, 200)
    }), { timeout: 30_000 })

  it.live("the token: /metrics and /status answer 401 without it or with a wrong one, 200 with it; probes need none", () =>
    Effect.gen(function*() {
      const a = yield* startNode({ http: { token: Redacted.make("s3cret-token") } })
      yield* a.registry.register(Fixtures.Counter)
      for (const path of ["/metrics", "/status"]) {
        const without = yield* get(`${a.url}${path}`)
        assert.strictEqual(without.status, 401, `${path} without a token`)
        assert.strictEqual((yield* get(`${a.url}${path}`, "s3cret-tokeN")).status, 401, `${path} with a wrong token`)
        assert.strictEqual((yield* get(`${a.url}${path}`, "s3cret")).status, 401, `${path} with a prefix of the token`)
        assert.strictEqual((yield* get(`${a.url}${path}`, "s3cret-token")).status, 200, `${path} with the token`)
      }
      assert.strictEqual((yield* get(`${a.url}/healthz`)).status, 200)
      assert.strictEqual((yield* get(`${a.url}/readyz`)).status, 200)
    }), { timeout: 30_000 })

  it.live("/metrics and /status after a known workload: exact counters, generations and members", () =>
    Effect.gen(function*() {
      const a = yield* startNode()
      const b = yield* startNode({ seeds: [a.address] })
      const onA = yield* a.registry.register(Fixtures.NodeResource, resourceOptions)
      const onB = yield* b.registry.register(Fixtures.NodeResource, resourceOptions)
      // Both hold both views: the join exchange is done.
      for (const node of [a, b]) {
        yield* eventually(
          Effect.map(get(`${node.url}/readyz`), (reply) => reply.status === 200),
          { timeout: "10 seconds", what: `${node.id} ready` }
        )
      }
      const before = yield* onA.metrics
      const beforeB = yield* onB.metrics
      const mutations = 5
      for (let i = 1; i <= mutations; i++) {
        // Memory moves only: default urgency, one delta per mutation to the one peer.
        const committed = yield* onA.mutateWithDelta((s) => Fixtures.updateResource(s, { memoryUsedMiB: 100 + i }))
        yield* eventually(
          Effect.map(onB.snapshot, (views) => views.get(a.id)?.generation.age === committed.generation.age),
          { timeout: "5 seconds", what: `mutation ${i} on ${b.id}` }
        )
      }
      const afterA = yield* onA.metrics
      const afterB = yield* onB.metrics
      assert.strictEqual(afterA.mutations - before.mutations, mutations)
      assert.strictEqual(afterA.deltasSent - before.deltasSent, mutations)
      assert.strictEqual(afterB.deltasReceived - beforeB.deltasReceived, mutations)

      // The Prometheus text of a says exactly what its handle says, with the labels of a's series only.
      const metrics = yield* get(`${a.url}/metrics`)
      assert.strictEqual(metrics.status, 200)
      assert.strictEqual(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8")
      const { samples, types } = parsePrometheus(metrics.body)
      const labels = `node="${a.id}",state="node_resource"`
      assert.strictEqual(types.get("dstate_mutations"), "counter")
      assert.strictEqual(types.get("dstate_members"), "gauge")
      assert.strictEqual(types.get("dstate_save_latency_ms"), "histogram")
      assert.strictEqual(samples.get(`dstate_mutations{${labels}}`), afterA.mutations)
      assert.strictEqual(samples.get(`dstate_mutations{${labels}}`), mutations)
      assert.strictEqual(samples.get(`dstate_deltas_sent{${labels}}`), afterA.deltasSent)
      assert.strictEqual(samples.get(`dstate_snapshots_sent{${labels}}`), afterA.snapshotsSent)
      assert.strictEqual(samples.get(`dstate_members{node="${a.id}"}`), 2)
      assert.strictEqual(samples.get(`dstate_save_latency_ms_count{${labels}}`), mutations)
      // Every counter of the state, by its documented name (`dstate_` + the field in snake case).
      for (const key of Object.keys(afterA) as Array<keyof typeof afterA>) {
        const name = `dstate_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`
        assert.strictEqual(samples.get(`${name}{${labels}}`), afterA[key], name)
      }
      for (const key of samples.keys()) assert.notInclude(key, `node="${b.id}"`, "b's series are not a's")
      const received = parsePrometheus((yield* get(`${b.url}/metrics`)).body).samples
      assert.strictEqual(received.get(`dstate_deltas_received{node="${b.id}",state="node_resource"}`), afterB.deltasReceived)

      // /status decoded by its Schema: the generations every node holds, exact.
      const status = decodeStatus((yield* get(`${b.url}/status`)).body)
      const held = yield* onB.snapshot
      assert.strictEqual(status.node, b.id)
      assert.deepStrictEqual(status.members, [a.id])
      assert.isTrue(status.ready)
      assert.isFalse(status.draining)
      assert.deepStrictEqual(status.reasons, [])
      assert.strictEqual(status.states.length, 1)
      const state = status.states[0]
      assert.strictEqual(state.name, "node_resource")
      assert.strictEqual(state.health, "Healthy")
      assert.deepStrictEqual(state.generation, held.get(b.id)!.generation)
      assert.deepStrictEqual(state.views.map((v) => [v.node, v.generation]), [
        [a.id, held.get(a.id)!.generation],
        [b.id, held.get(b.id)!.generation]
      ].sort((x, y) => (x[0] as string) < (y[0] as string) ? -1 : 1))
      assert.strictEqual(held.get(a.id)!.generation.age, mutations)
      const own = state.views.find((v) => v.node === b.id)!
      assert.strictEqual(own.stalenessMillis, 0)
      const ofA = state.views.find((v) => v.node === a.id)!
      assert.isTrue(ofA.stalenessMillis >= 0 && ofA.stalenessMillis < 10_000)
      assert.deepStrictEqual(state.awaiting, [])
      assert.deepStrictEqual(state.counters, yield* onB.metrics)
      assert.deepStrictEqual(state.syncStatus.map((s) => [s.node, s.remoteAge, s.gapCount]), [[a.id, mutations, 0]])
      assert.isUndefined(state.lastSaveFailure)
    }), { timeout: 30_000 })

  it.effect("bad options fail the layer with InvalidOptions", () =>
    Effect.gen(function*() {
      const attempt = (options: HttpOperations.Options) =>
        Effect.gen(function*() {
          const node = StateRegistry.layer.pipe(
            Layer.provideMerge(TcpRuntime.layer({ nodeId: nextId(), secret }))
          )
          return yield* Effect.flip(Layer.build(HttpOperations.layer(options).pipe(Layer.provide(node))))
        }).pipe(Effect.scoped)
      const port = yield* attempt({ port: 70_000 })
      assert.strictEqual(port._tag, "InvalidOptions")
      assert.strictEqual(port._tag === "InvalidOptions" && port.option, "port")
      const timeout = yield* attempt({ livenessTimeout: 0 })
      assert.strictEqual(timeout._tag === "InvalidOptions" && timeout.option, "livenessTimeout")
      const peers = yield* attempt({ minPeers: -1 })
      assert.strictEqual(peers._tag === "InvalidOptions" && peers.option, "minPeers")
      const token = yield* attempt({ token: Redacted.make("") })
      assert.strictEqual(token._tag === "InvalidOptions" && token.option, "token")
    }))
})

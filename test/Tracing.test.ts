/**
 * Traces of the data path: one mutation is one trace across nodes
 * (mutate → persist, publish, send on the owner; apply on each receiver, a
 * child of the send), on simulated time and over real TCP, with an
 * in-memory tracer; no spans without a tracer or with tracing disabled; a
 * TCP peer that does not announce the trace context gets plain frames.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Option, References, Tracer } from "effect"
import { TestClock } from "effect/testing"
import { NodeId, StatePersistence, StateRegistry } from "dstate"
import { TcpRuntime } from "dstate/node"
import { Fixtures, TestCluster } from "dstate/testing"
import { execFile } from "node:child_process"
import * as Http from "node:http"
import { crc32 } from "node:zlib"
import * as Protocol from "../src/node/internal/protocol.ts"
import { onNode } from "./fixtures/persistenceNode.ts"
import { handleOn, mutateOn } from "./helpers.ts"
import { eventuallyWithin } from "./support/Eventually.ts"
import { messagesOf, rawAuthenticated } from "./support/RawClient.ts"
import { awaitMesh, buildInOwnScope, fastTimings, secret } from "./support/RealNodes.ts"

const { Counter, NodeResource } = Fixtures
const bump = (s: { readonly value: number }) => ({ value: s.value + 1 })

/** A tracer that keeps every span it makes. */
const recorder = () => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span: (options) => {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { spans, tracer }
}

const parentOf = (span: Tracer.NativeSpan) => Option.getOrUndefined(span.parent)
const named = (spans: ReadonlyArray<Tracer.NativeSpan>, name: string) => spans.filter((s) => s.name === name)
const only = (spans: ReadonlyArray<Tracer.NativeSpan>, name: string, node?: string) => {
  const found = named(spans, name).filter((s) => node === undefined || s.attributes.get("dstate.node") === node)
  assert.strictEqual(found.length, 1, `one ${name}${node === undefined ? "" : ` on ${node}`}: ${found.length}`)
  return found[0]
}
const attributes = (span: Tracer.NativeSpan) => Object.fromEntries(span.attributes)

describe("traces", () => {
  it.effect("a persisted mutation: mutate → persist, publish, send on the owner; apply on the peer is the send's child", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recorder()
      yield* Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) })
        const [a, b] = cluster.nodes
        yield* cluster.settle
        spans.length = 0
        yield* mutateOn(cluster, a, Counter, bump)
        yield* cluster.settle

        const mutate = only(spans, "dstate.mutate")
        const generation = `${(yield* cluster.run(a, Effect.flatMap(StateRegistry.lookup(Counter), (c) => c.local))).generation.incarnation}.1`
        assert.deepStrictEqual(attributes(mutate), { "dstate.state": "counter", "dstate.node": a.id, "dstate.generation": generation })
        assert.strictEqual(mutate.kind, "producer")
        assert.strictEqual(mutate.status._tag, "Ended")

        const persist = only(spans, "dstate.persist")
        assert.strictEqual(parentOf(persist), mutate)
        assert.deepStrictEqual(attributes(persist), { "dstate.state": "counter", "dstate.generation": generation, "dstate.mutations": 1 })
        const publish = only(spans, "dstate.publish")
        assert.strictEqual(parentOf(publish), mutate)
        const send = only(spans, "dstate.send")
        assert.strictEqual(parentOf(send), mutate)
        assert.deepStrictEqual(
          { ...attributes(send), "dstate.bytes": typeof send.attributes.get("dstate.bytes") },
          { "dstate.state": "counter", "dstate.generation": generation, "dstate.kind": "snapshot", "dstate.peers": 1, "dstate.bytes": "number" }
        )

        const apply = only(spans, "dstate.apply")
        const remote = parentOf(apply)
        assert(remote !== undefined && remote._tag === "ExternalSpan")
        assert.strictEqual(remote.spanId, send.spanId)
        assert.strictEqual(apply.traceId, mutate.traceId)
        assert.strictEqual(apply.kind, "consumer")
        assert.deepStrictEqual(
          { ...attributes(apply), "dstate.bytes": typeof apply.attributes.get("dstate.bytes") },
          {
            "dstate.state": "counter",
            "dstate.node": b.id,
            "dstate.owner": a.id,
            "dstate.generation": generation,
            "dstate.accepted": true,
            "dstate.bytes": "number"
          }
        )
        // Nothing else was traced: one span of each kind for one mutation to one peer.
        assert.deepStrictEqual(spans.map((s) => s.name).sort(), [
          "dstate.apply",
          "dstate.mutate",
          "dstate.persist",
          "dstate.publish",
          "dstate.send"
        ])
      }).pipe(Effect.withTracer(tracer))
    }))

  it.effect("one save for a batch: its span is the newest mutation's child and links to the others", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recorder()
      // Once the state is registered, every save takes one simulated second, so mutations made during a
      // save wait for the next one.
      let slowSaves = false
      const slow = Layer.effect(StatePersistence.StatePersistence)(
        Effect.map(Effect.service(StatePersistence.StatePersistence), (store) => ({
          ...store,
          save: (name: string, record: StatePersistence.StoredState, change?: StatePersistence.StoredChange) =>
            Effect.andThen(slowSaves ? Effect.sleep("1 second") : Effect.void, store.save(name, record, change))
        }))
      ).pipe(Layer.provide(StatePersistence.layerMemory))
      yield* onNode(slow, Effect.gen(function*() {
        const counter = yield* StateRegistry.register(Counter)
        slowSaves = true
        spans.length = 0
        const writers = yield* Effect.forEach([1, 2, 3, 4], () => Effect.forkChild(counter.mutate(bump)))
        yield* TestClock.adjust("2 seconds")
        yield* Fiber.joinAll(writers)
      })).pipe(Effect.withTracer(tracer))
      const mutates = named(spans, "dstate.mutate")
      assert.strictEqual(mutates.length, 4)
      const persists = named(spans, "dstate.persist")
      // The first save covers the first mutation; the three staged while it ran share the second.
      assert.deepStrictEqual(persists.map((p) => p.attributes.get("dstate.mutations")), [1, 3])
      assert.strictEqual(parentOf(persists[0]), mutates[0])
      assert.strictEqual(parentOf(persists[1]), mutates[3])
      assert.deepStrictEqual(persists[1].links.map((l) => l.span), [mutates[1], mutates[2]])
      assert.strictEqual(persists[1].attributes.get("dstate.generation"), mutates[3].attributes.get("dstate.generation"))
      // Each mutation was published in its own span under its own mutate span.
      assert.deepStrictEqual(named(spans, "dstate.publish").map(parentOf), mutates)
    }))

  it.effect("a delta state without persistence: the delta's send carries the trace to every peer", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recorder()
      yield* Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 3, persistence: "none", setup: StateRegistry.register(NodeResource) })
        const [a, b, c] = cluster.nodes
        yield* cluster.settle
        spans.length = 0
        const resource = yield* handleOn(cluster, a, NodeResource)
        yield* resource.mutateWithDelta((s) => Fixtures.updateResource(s, { cpuPercent: 5 }))
        yield* cluster.settle
        const mutate = only(spans, "dstate.mutate")
        assert.deepStrictEqual(named(spans, "dstate.persist"), [])
        const send = only(spans, "dstate.send")
        assert.strictEqual(send.attributes.get("dstate.kind"), "delta")
        assert.strictEqual(send.attributes.get("dstate.peers"), 2)
        for (const node of [b, c]) {
          const apply = only(spans, "dstate.apply", node.id)
          assert.strictEqual(apply.traceId, mutate.traceId)
          assert.strictEqual((parentOf(apply) as Tracer.ExternalSpan).spanId, send.spanId)
        }
      }).pipe(Effect.withTracer(tracer))
    }))

  it.effect("with tracing disabled the installed tracer gets no dstate span", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recorder()
      yield* Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ nodes: 2, setup: StateRegistry.register(Counter) })
        yield* cluster.settle
        yield* mutateOn(cluster, cluster.nodes[0], Counter, bump)
        yield* cluster.settle
        const counter = yield* handleOn(cluster, cluster.nodes[1], Counter)
        assert.strictEqual((yield* counter.snapshot).get(cluster.nodes[0].id)?.value.value, 1)
      }).pipe(Effect.withTracer(tracer), Effect.provideService(References.TracerEnabled, false))
      assert.deepStrictEqual(spans.filter((s) => s.name.startsWith("dstate.")).map((s) => s.name), [])
    }))
})

// ---- over TCP -------------------------------------------------------------------------------------

const poll = eventuallyWithin("8 seconds")
const fast = { ...fastTimings, host: "127.0.0.1", port: 0, heartbeat: { interval: "200 millis" } } as const
let ids = 0

/** A TCP node with the counter registered, built with `tracer`. */
const tcpNode = (tracer: Tracer.Tracer, seeds: ReadonlyArray<TcpRuntime.Address>) =>
  Effect.gen(function*() {
    const id = NodeId.make(`trace-${process.pid}-${++ids}`)
    const layer = StateRegistry.layer.pipe(Layer.provideMerge(TcpRuntime.layer({ ...fast, nodeId: id, secret, seeds })))
    const node = yield* buildInOwnScope(layer).pipe(Effect.withTracer(tracer))
    const counter = yield* StateRegistry.register(Counter).pipe(
      Effect.provideContext(node.context),
      Effect.withTracer(tracer)
    )
    return { id, ...node, counter, address: Context.get(node.context, TcpRuntime.TcpTransport).address }
  })

describe("traces over TCP", () => {
  it.live("one mutation is one trace across two processes' worth of nodes on loopback", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recorder()
      const a = yield* tcpNode(tracer, [])
      const b = yield* tcpNode(tracer, [a.address])
      yield* awaitMesh([a, b], "8 seconds")
      yield* poll(Effect.gen(function*() {
        assert.isTrue((yield* b.counter.snapshot).has(a.id))
      }))
      spans.length = 0
      yield* a.counter.mutate(bump).pipe(Effect.withTracer(tracer))
      const apply = yield* poll(Effect.sync(() => only(spans, "dstate.apply", b.id)))
      const mutate = only(spans, "dstate.mutate", a.id)
      const send = only(spans, "dstate.send")
      assert.strictEqual(apply.traceId, mutate.traceId)
      assert.strictEqual((parentOf(apply) as Tracer.ExternalSpan).spanId, send.spanId)
      assert.strictEqual(apply.attributes.get("dstate.owner"), a.id)
      assert.strictEqual(apply.attributes.get("dstate.accepted"), true)
    }), 20_000)

  it.live("a peer that does not announce the trace context gets plain Delivers; one that does gets the send's", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recorder()
      const a = yield* tcpNode(tracer, [])
      const old = yield* rawAuthenticated(a.address, "old-peer", ["dstate/state/counter"])
      const current = yield* rawAuthenticated(a.address, "new-peer", ["dstate/state/counter"], [Protocol.traceContextFeature])
      yield* poll(Effect.gen(function*() {
        const peers = yield* Context.get(a.context, TcpRuntime.TcpTransport).peers
        assert.strictEqual(peers.length, 2)
      }))
      spans.length = 0
      yield* a.counter.mutate(bump).pipe(Effect.withTracer(tracer))
      const send = only(spans, "dstate.send")
      const deliversTo = (client: typeof old) =>
        poll(Effect.sync(() => {
          const delivers = messagesOf(client.received).filter((m) => m._tag === "Deliver")
          assert.isAbove(delivers.length, 0)
          return delivers
        }))
      const last = (delivers: ReadonlyArray<Protocol.TransportMessage>) => delivers[delivers.length - 1] as typeof Protocol.Deliver.Type
      yield* poll(Effect.gen(function*() {
        const traced = last(yield* deliversTo(current))
        assert.deepStrictEqual(traced.trace, { traceId: send.traceId, spanId: send.spanId, sampled: true })
      }))
      const plain = yield* deliversTo(old)
      assert.deepStrictEqual(plain.map((d) => (d as typeof Protocol.Deliver.Type).trace), plain.map(() => undefined))
    }), 20_000)
})

describe("traced Deliver frames", () => {
  const payload = new Uint8Array([1, 2, 3, 4])
  const trace = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331", sampled: false }
  const frame = (parts: readonly [Uint8Array, Uint8Array]) => {
    const bytes = new Uint8Array(parts[0].length + parts[1].length)
    bytes.set(parts[0])
    bytes.set(parts[1], parts[0].length)
    return bytes
  }

  it("round-trip: the registry frame and the trace context come back as sent", () => {
    const encoded = Protocol.encodeTracedDeliver(payload, trace, 1024)
    assert(encoded !== undefined && encoded._tag === "Success")
    const decoded = Protocol.decode(frame(encoded.success))
    assert(decoded._tag === "Success")
    assert.deepStrictEqual(decoded.success, { _tag: "Deliver", payload, trace })
  })

  it("ids that cannot be carried send the frame without them; a frame over the limit is refused", () => {
    assert.isUndefined(Protocol.encodeTracedDeliver(payload, { ...trace, traceId: "" }, 1024))
    assert.isUndefined(Protocol.encodeTracedDeliver(payload, { ...trace, spanId: "x".repeat(65) }, 1024))
    assert.isUndefined(Protocol.encodeTracedDeliver(payload, { ...trace, spanId: "é" }, 1024))
    const size = Protocol.headerBytes + 3 + trace.traceId.length + trace.spanId.length + payload.length
    assert(Protocol.encodeTracedDeliver(payload, trace, size)?._tag === "Success")
    const over = Protocol.encodeTracedDeliver(payload, trace, size - 1)
    assert(over !== undefined && over._tag === "Failure")
    assert.strictEqual(over.failure._tag, "MessageTooLarge")
  })

  it("a damaged trace context is refused as malformed, naming what is wrong", () => {
    const encoded = Protocol.encodeTracedDeliver(payload, trace, 1024)
    assert(encoded !== undefined && encoded._tag === "Success")
    const bytes = frame(encoded.success)
    const damaged = (mutate: (b: Uint8Array) => void) => {
      const copy = bytes.slice()
      mutate(copy)
      // Re-seal the checksum so that only the trace context is wrong.
      const body = copy.subarray(Protocol.headerBytes)
      new DataView(copy.buffer).setUint32(5, crc32(body))
      const decoded = Protocol.decode(copy)
      assert(decoded._tag === "Failure")
      return decoded.failure.reason
    }
    assert.strictEqual(damaged((b) => (b[Protocol.headerBytes] = 2)), "traced deliver: unknown flags 2")
    assert.strictEqual(damaged((b) => (b[Protocol.headerBytes + 1] = 250)), "traced deliver: shorter than its trace id")
    assert.strictEqual(
      damaged((b) => (b[Protocol.headerBytes + 2] = 0x20)),
      "traced deliver: ids must be 1 to 64 printable ASCII characters"
    )
  })
})

// ---- the OTLP example -----------------------------------------------------------------------------

/** One span as OTLP/HTTP JSON carries it, with the service that exported it. */
interface OtlpSpan {
  readonly service: string
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
}

interface OtlpExport {
  readonly resourceSpans: ReadonlyArray<{
    readonly resource: { readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: { readonly stringValue?: string } }> }
    readonly scopeSpans: ReadonlyArray<{
      readonly spans: ReadonlyArray<{ readonly name: string; readonly traceId: string; readonly spanId: string; readonly parentSpanId?: string }>
    }>
  }>
}

/** A minimal OTLP/HTTP collector on loopback: it keeps every span posted to `/v1/traces`. */
const collector = Effect.acquireRelease(
  Effect.callback<{ readonly server: Http.Server; readonly spans: Array<OtlpSpan>; readonly paths: Array<string> }>((resume) => {
    const spans: Array<OtlpSpan> = []
    const paths: Array<string> = []
    const server = Http.createServer((request, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => {
        chunks.push(chunk)
      })
      request.on("end", () => {
        paths.push(`${request.method} ${request.url} ${request.headers["content-type"]}`)
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as OtlpExport
        for (const resource of body.resourceSpans) {
          const service = resource.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? ""
          for (const scope of resource.scopeSpans) {
            for (const span of scope.spans) {
              spans.push({ service, name: span.name, traceId: span.traceId, spanId: span.spanId, parentSpanId: span.parentSpanId })
            }
          }
        }
        response.writeHead(200, { "content-type": "application/json" })
        response.end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, spans, paths })))
  }),
  ({ server }) =>
    Effect.callback<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

/** Runs `examples/05_tracing.ts` with `args` to its exit. */
const runExample = (args: ReadonlyArray<string>) =>
  Effect.callback<{ readonly code: number; readonly stderr: string }>((resume) => {
    execFile(process.execPath, ["examples/05_tracing.ts", ...args], { timeout: 60_000 }, (error, _stdout, stderr) => {
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stderr }))
    })
  })

describe("the OTLP example", () => {
  it.live("examples/05_tracing.ts exports one trace per mutation, alpha's send the parent of beta's apply", () =>
    Effect.scoped(Effect.gen(function*() {
      const { paths, server, spans } = yield* collector
      const port = (server.address() as { readonly port: number }).port
      const run = yield* runExample(["--otlp-url", `http://127.0.0.1:${port}/v1/traces`, "--mutations", "3"])
      assert.strictEqual(run.code, 0, run.stderr)
      assert.isTrue(paths.every((p) => p === "POST /v1/traces application/json"), paths.join(", "))
      const mutates = spans.filter((s) => s.name === "dstate.mutate")
      assert.deepStrictEqual(mutates.map((s) => s.service), ["alpha", "alpha", "alpha"])
      assert.strictEqual(new Set(mutates.map((s) => s.traceId)).size, 3)
      for (const mutate of mutates) {
        const trace = spans.filter((s) => s.traceId === mutate.traceId)
        const bump = trace.find((s) => s.name === "example.bump")
        assert.strictEqual(mutate.parentSpanId, bump?.spanId)
        const children = trace.filter((s) => s.parentSpanId === mutate.spanId).map((s) => `${s.service} ${s.name}`).sort()
        assert.deepStrictEqual(children, ["alpha dstate.persist", "alpha dstate.publish", "alpha dstate.send"])
        const send = trace.find((s) => s.name === "dstate.send")!
        const applies = trace.filter((s) => s.name === "dstate.apply")
        assert.deepStrictEqual(applies.map((s) => [s.service, s.parentSpanId]), [["beta", send.spanId]])
      }
    })), 60_000)

  it.live("a bad flag prints the usage and exits 1", () =>
    Effect.gen(function*() {
      const run = yield* runExample(["--mutations", "0"])
      assert.strictEqual(run.code, 1)
      assert.include(run.stderr + "", "a count from 1 to 1000")
    }), 30_000)
})

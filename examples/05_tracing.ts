/**
 * Traces of replication, exported with effect's OTLP exporter.
 *
 * Two TCP nodes run in this process on loopback, each with its own OTLP
 * tracer (its service name is the node id), as two processes would. Node
 * `alpha` bumps its counter a few times; `beta` applies each change. Every
 * mutation is one trace across both nodes:
 *
 * ```text
 * dstate.mutate   (alpha)
 * ├─ dstate.persist
 * ├─ dstate.publish
 * └─ dstate.send
 *    └─ dstate.apply (beta: a child of alpha's send, carried in the frame)
 * ```
 *
 * Point it at an OpenTelemetry collector or any OTLP/HTTP endpoint that takes
 * JSON (Jaeger, Tempo, Honeycomb, ...):
 *
 * ```sh
 * node examples/05_tracing.ts --otlp-url http://127.0.0.1:4318/v1/traces --mutations 3
 * ```
 *
 * Options (`--help` lists them):
 * - `--otlp-url URL` (default `http://127.0.0.1:4318/v1/traces`): where spans are posted, as OTLP JSON.
 * - `--mutations N` (default 3): how many mutations (and so traces) alpha makes.
 *
 * The spans of each node are flushed when its scope closes, before the
 * program prints the trace ids and exits. Without a tracer installed (or with
 * tracing disabled) dstate makes no spans and pays only a check per mutation.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Context, Effect, Layer, Redacted, Schema, Stream } from "effect"
import { CliConfig, Command, Flag, GlobalFlag } from "effect/cli"
import { FetchHttpClient } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { DistributedState, NodeId, StatePersistence, StateRegistry } from "dstate"
import { TcpRuntime } from "dstate/node"

const Counter = DistributedState.make({
  name: "counter",
  schema: Schema.Struct({ value: Schema.Int }),
  initial: () => ({ value: 0 }),
  wireVersion: 1,
  storageVersion: 1
})

const secret = Redacted.make("dstate-tracing-example-secret")

/**
 * One node: the OTLP tracer under the registry, so that every fiber of the
 * node (its state actors, its connections) makes spans with it.
 */
const nodeLayer = (id: string, url: string, seeds: ReadonlyArray<TcpRuntime.Address>) =>
  StateRegistry.layer.pipe(
    Layer.provideMerge(TcpRuntime.layer({ nodeId: NodeId.make(id), host: "127.0.0.1", port: 0, secret, seeds })),
    Layer.provide(StatePersistence.layerMemory),
    Layer.provideMerge(
      OtlpTracer.layer({ url, resource: { serviceName: id }, exportInterval: "1 second" }).pipe(
        Layer.provide([OtlpSerialization.layerJson, FetchHttpClient.layer])
      )
    )
  )

const run = Effect.fnUntraced(function*(options: { readonly url: string; readonly mutations: number }) {
  const traceIds: Array<string> = []
  // Each node in a scope of its own, closed (and so flushed) before the program ends.
  yield* Effect.scoped(Effect.gen(function*() {
    const alpha = yield* Layer.build(nodeLayer("alpha", options.url, []))
    const address = Context.get(alpha, TcpRuntime.TcpTransport).address
    const beta = yield* Layer.build(nodeLayer("beta", options.url, [address]))
    const onAlpha = yield* StateRegistry.register(Counter).pipe(Effect.provideContext(alpha))
    const onBeta = yield* StateRegistry.register(Counter).pipe(Effect.provideContext(beta))
    const sees = (value: number) =>
      onBeta.changes.pipe(
        Stream.filter((views) => views.get(NodeId.make("alpha"))?.value.value === value),
        Stream.take(1),
        Stream.runDrain,
        Effect.timeout("10 seconds")
      )
    yield* sees(0)
    for (let i = 1; i <= options.mutations; i++) {
      // A span of the application's own around the mutation: dstate.mutate becomes its child.
      yield* Effect.gen(function*() {
        const span = yield* Effect.currentSpan
        traceIds.push(span.traceId)
        yield* onAlpha.mutate((s) => ({ value: s.value + 1 }))
        yield* sees(i)
      }).pipe(Effect.withSpan("example.bump", { attributes: { i } }), Effect.provideContext(alpha))
    }
    // Beta's actor ends its apply span just after it publishes the view; a liveness probe queues behind it,
    // so once it is answered every span of beta has ended and is in the exporter's batch.
    yield* Effect.flatMap(StateRegistry.StateRegistry, (registry) => registry.liveness("5 seconds")).pipe(
      Effect.provideContext(beta)
    )
  }))
  yield* Effect.log(`exported ${traceIds.length} traces to ${options.url}: ${traceIds.join(" ")}`)
})

const command = Command.make("05_tracing", {
  otlpUrl: Flag.String("otlp-url").pipe(
    Flag.withMetavar("URL"),
    Flag.withDescription("the OTLP/HTTP traces endpoint, posted JSON (default http://127.0.0.1:4318/v1/traces)"),
    Flag.withDefault("http://127.0.0.1:4318/v1/traces")
  ),
  mutations: Flag.Int("mutations").pipe(
    Flag.withMetavar("N"),
    Flag.withDescription("how many mutations (and traces) alpha makes, 1 to 1000 (default 3)"),
    Flag.withDefault(3),
    Flag.filter((n) => n >= 1 && n <= 1000, () => "a count from 1 to 1000")
  )
}, ({ mutations, otlpUrl }) =>
  run({ url: otlpUrl, mutations }).pipe(
    Effect.tapCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logError(cause))
  )).pipe(Command.withDescription("Two TCP nodes whose replication is traced and exported over OTLP."))

if (import.meta.main) {
  NodeRuntime.runMain(
    command.pipe(
      Command.run({ version: "0.1.0" }),
      Effect.provide(Layer.mergeAll(NodeServices.layer, CliConfig.layer({ builtIns: [GlobalFlag.Help] })))
    ),
    { disableErrorReporting: true }
  )
}

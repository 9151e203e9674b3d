/**
 * dstate inside an Effect cluster application.
 *
 * Three Effect cluster runners (socket runners on 127.0.0.1, ports 34431 to
 * 34433, sharing one in-memory `RunnerStorage`, as three processes would share
 * `SqlRunnerStorage`) each run dstate through `ClusterRuntime`: the runners are
 * the dstate nodes, with ids "127.0.0.1:34431"..., and membership comes from
 * the cluster's runner registry, so no seeds are configured. dstate's own
 * connections use the runner port + 1000.
 *
 * Every runner owns one `worker_load` state (how many jobs it is running).
 * A cluster entity, `Dispatcher`, lives on whichever runner the cluster's
 * sharding assigns it to; to place a job it queries the replicated loads in
 * its own runner's memory (no call to the other runners) and picks the least
 * loaded one. Then the chosen runner is stopped: the others see it leave, its
 * view disappears, and the next placement goes elsewhere.
 *
 * Run with `npx node examples/04_effect_cluster.ts`; it stops by itself.
 */
import { NodeClusterSocket, NodeRuntime } from "@effect/platform-node"
import { Clock, Context, Effect, Exit, Layer, Option, PubSub, Redacted, References, Schema, Scope, Stream } from "effect"
import { Entity, MessageStorage, RunnerAddress, RunnerStorage, ShardingConfig } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { ClusterEvents, DistributedState, StateRegistry } from "dstate"
import { ClusterRuntime } from "dstate/cluster"

// ---- the replicated state ------------------------------------------------------------------------

const WorkerLoad = DistributedState.make({
  name: "worker_load",
  schema: Schema.Struct({ activeJobs: Schema.Int }),
  initial: () => ({ activeJobs: 0 }),
  wireVersion: 1,
  storageVersion: 1
})

// ---- a cluster entity that reads it --------------------------------------------------------------

const Place = Rpc.make("Place", {
  payload: { job: Schema.String },
  success: Schema.Struct({ runner: Schema.String, decidedOn: Schema.String, candidates: Schema.Int })
})

const Dispatcher = Entity.make("Dispatcher", [Place])

/** The handler runs on the runner that owns the entity's shard and reads that runner's replicas. */
const DispatcherLive = Dispatcher.toLayer(Effect.gen(function*() {
  const registry = yield* StateRegistry.StateRegistry
  return Dispatcher.of({
    Place: () =>
      Effect.gen(function*() {
        const load = yield* StateRegistry.lookup(WorkerLoad)
        // Local read: fails with StalePeer only if a replica is older than 2 s and cannot be pulled.
        const [runner, candidates] = yield* load.query({ maxStaleness: "2 seconds" }, (views) => {
          const ranked = [...views.values()].sort((a, b) => a.value.activeJobs - b.value.activeJobs)
          return [String(ranked[0].source), ranked.length] as const
        })
        return { runner, decidedOn: String(registry.nodeId), candidates }
      }).pipe(Effect.provideService(StateRegistry.StateRegistry, registry), Effect.orDie)
  })
}))

// ---- one runner ----------------------------------------------------------------------------------

const secret = Redacted.make("dstate-local-demo-secret")

/**
 * An Effect cluster runner with dstate on it: the socket runner (Sharding), the
 * dstate runtime whose membership is the cluster's RunnerStorage, the registry,
 * and the entity. `Layer.fresh` makes each call a separate runner.
 */
const runnerLayer = (storage: RunnerStorage.RunnerStorage["Service"], port: number) => {
  const shardingConfig = { runnerAddress: Option.some(RunnerAddress.make("127.0.0.1", port)), shardsPerGroup: 30 }
  const Storage = Layer.merge(Layer.succeed(RunnerStorage.RunnerStorage, storage), MessageStorage.layerMemory).pipe(
    Layer.provideMerge(ShardingConfig.layer(shardingConfig))
  )
  const Cluster = NodeClusterSocket.layer({ storage: "byo", shardingConfig }).pipe(Layer.provideMerge(Storage))
  const DState = StateRegistry.layer.pipe(
    Layer.provideMerge(ClusterRuntime.layer({ secret, pollInterval: "200 millis" }))
  )
  return DispatcherLive.pipe(
    Layer.provideMerge(DState),
    Layer.provideMerge(Cluster),
    Layer.provide(Layer.succeed(References.MinimumLogLevel, "Warn")),
    Layer.fresh
  )
}

/** Starts a runner in its own scope and registers its `worker_load` at `activeJobs`. */
const startRunner = (storage: RunnerStorage.RunnerStorage["Service"], port: number, activeJobs: number) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(runnerLayer(storage, port), scope)
    const load = yield* StateRegistry.register(WorkerLoad).pipe(Effect.provideContext(context), Scope.provide(scope))
    yield* load.mutate(() => ({ activeJobs }))
    return { id: ClusterRuntime.nodeId(RunnerAddress.make("127.0.0.1", port)), scope, context, load }
  })

type Runner = Effect.Success<ReturnType<typeof startRunner>>

/** Waits (on the view-map stream, no polling) until `runner` holds exactly the views of `expected`. */
const awaitViews = (runner: Runner, expected: ReadonlyArray<Runner>) =>
  runner.load.changes.pipe(
    Stream.filter((views) => views.size === expected.length && expected.every((r) => views.has(r.id))),
    Stream.take(1),
    Stream.runDrain
  )

const placeJob = (from: Runner, job: string) =>
  Effect.gen(function*() {
    const clientFor = yield* Dispatcher.client
    const placed = yield* clientFor("dispatcher").Place({ job })
    yield* Effect.log(
      `${job}: run it on ${placed.runner} (decided by the Dispatcher on ${placed.decidedOn}, from ${placed.candidates} local replicas)`
    )
    return placed
  }).pipe(Effect.provideContext(from.context))

// ---- the application -----------------------------------------------------------------------------

const program = Effect.gen(function*() {
  const storage = yield* RunnerStorage.makeMemory
  const loads = [5, 2, 7]
  const runners = yield* Effect.forEach(loads, (jobs, i) => startRunner(storage, 34431 + i, jobs))
  yield* Effect.forEach(runners, (runner) => awaitViews(runner, runners), { concurrency: "unbounded", discard: true })
  for (const runner of runners) {
    const views = yield* runner.load.snapshot
    const row = [...views.values()].map((v) => `${v.source}=${v.value.activeJobs}`).join("  ")
    yield* Effect.log(`${runner.id} sees: ${row}`)
  }

  const first = yield* placeJob(runners[0], "job-1")

  // Stop the chosen runner, as a deployment would. The others see it leave.
  const chosen = runners.find((r) => String(r.id) === first.runner)!
  const rest = runners.filter((r) => r !== chosen)
  const subscriptions = yield* Effect.forEach(rest, (runner) =>
    Context.get(runner.context, ClusterEvents.ClusterEvents).subscribe)
  const stoppedAt = yield* Clock.currentTimeMillis
  yield* Scope.close(chosen.scope, Exit.void)
  yield* Effect.forEach(subscriptions, (subscription) =>
    PubSub.take(subscription).pipe(
      Effect.repeat({ until: (event) => event._tag === "NodeLeft" && event.node === chosen.id })
    ), { discard: true })
  yield* Effect.log(`${chosen.id} stopped: NodeLeft seen after ${(yield* Clock.currentTimeMillis) - stoppedAt} ms`)
  yield* Effect.forEach(rest, (runner) => awaitViews(runner, rest), { concurrency: "unbounded", discard: true })

  // The Dispatcher may have moved with its shard; wherever it runs now, it no longer sees the stopped runner.
  yield* placeJob(rest[0], "job-2")
  yield* Effect.forEach(rest, (runner) => Scope.close(runner.scope, Exit.void), { discard: true })
})

NodeRuntime.runMain(program.pipe(Effect.scoped, Effect.timeout("60 seconds")))

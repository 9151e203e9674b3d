/**
 * `TestCluster`: N nodes in one process on simulated time. Each node has its
 * own in-process runtime, membership, optional memory persistence and
 * registry; `setup` runs on every node when it starts (and restarts), and
 * `run` executes any effect on a chosen node. `settle` delivers everything in
 * flight, moving the `TestClock` only as far as deliveries need. One seed
 * drives the network and every node's store; each node's wall clock may be
 * offset from simulated time (and stepped, e.g. back across a restart); an
 * observer sees every node's published view maps and rejected frames.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Exit, Layer, Scope } from "effect"
import type { Duration } from "effect"
import { type ActorRef, ActorRuntime, type MailboxCapacity } from "../ActorRuntime.ts"
import type { ClusterEvents } from "../ClusterEvents.ts"
import * as NodeId from "../NodeId.ts"
import { InvalidOptions } from "../DStateError.ts"
import { checkSettings } from "../internal/registration.ts"
import {
  layer as registryLayerDefault,
  layerWith as registryLayerWith,
  Observer as RegistryObserver,
  Settings as RegistrySettingsService,
  type Settings as RegistrySettings,
  StateRegistry
} from "../StateRegistry.ts"
import { ackProtocolVersion, MaxFrameBytes, protocolVersion } from "../SyncMessage.ts"
import * as InMemoryPersistence from "./InMemoryPersistence.ts"
import * as InProcessRuntime from "./InProcessRuntime.ts"
import * as Prng from "./Prng.ts"
import type { Endpoint } from "./SimNetwork.ts"
import * as SimDetector from "./SimDetector.ts"
import * as SimNetwork from "./SimNetwork.ts"

/**
 * A node of the test cluster.
 *
 * @category models
 * @since 0.1.0
 */
export interface TestNode {
  readonly id: NodeId.NodeId
  /** The node's persistent store (survives crashes; `undefined` with `persistence: "none"`). */
  readonly store: InMemoryPersistence.Store | undefined
  /**
   * How far (ms) this node's wall clock is ahead of simulated time (negative:
   * behind); default 0. Read on every clock reading, so changing it steps the
   * node's wall clock, e.g. back before a `restart`. Monotonic time, sleeps
   * and the network's delays are not affected.
   */
  clockOffsetMillis: number
  /**
   * The highest sync frame protocol the node speaks when it (re)starts: `2`
   * (`SyncMessage.ackProtocolVersion`, the default) or `1`, a node of the
   * version before acknowledgements. Change it before a `restart` to upgrade
   * or downgrade the node.
   */
  syncProtocol: number
}

/**
 * What sees every node's published view maps and rejected frames
 * (`StateRegistry.Observer`).
 *
 * @category models
 * @since 0.1.0
 */
export type Observer = typeof RegistryObserver extends Context.Reference<infer A> ? NonNullable<A> : never

/**
 * The services an effect run on a node may use.
 *
 * @category models
 * @since 0.1.0
 */
export type NodeServices = StateRegistry | ActorRuntime | ClusterEvents

/**
 * Options of `make`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options<E> {
  /** Initial number of nodes. */
  readonly nodes: number
  /** Runs on every node when it starts or restarts (typically registers states). */
  readonly setup?: Effect.Effect<unknown, E, StateRegistry> | undefined
  /** `"memory"` (default): each node keeps a store that survives its crash; `"none"`: nothing is persisted. */
  readonly persistence?: "memory" | "none" | undefined
  /** Registry configuration for every node. */
  readonly registry?: Partial<RegistrySettings> | undefined
  /** Upper bound of scheduling steps in one `settle` (default 1,000,000). */
  readonly maxSettleSteps?: number | undefined
  /** Root seed of the network's and the stores' random streams (default: network seed 1, store seeds 1). */
  readonly seed?: number | undefined
  /** Options of the network (its seed comes from `seed` when that is set; its detector from `detector`). */
  readonly network?: Omit<SimNetwork.Options, "seed" | "detector"> | undefined
  /**
   * A simulated failure detector (`SimDetector`; default none: membership is an oracle, a crash is `NodeLeft`
   * at once). With it, a cut link, a paused or a crashed node makes members unreachable after `detectAfter`,
   * down after `downAfter`; a graceful `removeNode` is still `NodeLeft` at once.
   * @since 0.2.0
   */
  readonly detector?: SimDetector.Options | undefined
  /** Installed on every node (simulation checkers), or on those `observe` accepts. */
  readonly observer?: Observer | undefined
  /**
   * The nodes `observer` is installed on (default all): a checker of a large cluster watches a sample,
   * and the others publish their view maps without handing them out.
   * @since 0.2.0
   */
  readonly observe?: ((node: NodeId.NodeId) => boolean) | undefined
  /**
   * Called with every actor a node spawns, its mailbox capacity and its
   * handle (simulation checkers watch mailbox sizes through it).
   */
  readonly onSpawn?: ((node: NodeId.NodeId, actor: SpawnedActor) => void) | undefined
  /**
   * The sync frame protocol of each initial node, by index (see `TestNode.syncProtocol`); nodes
   * beyond the list, and nodes added later, speak the current one. Each must be `1` or `2`.
   */
  readonly syncProtocols?: ReadonlyArray<number> | undefined
}

/**
 * An actor spawned on a node, as `onSpawn` reports it.
 *
 * @category models
 * @since 0.1.0
 */
export interface SpawnedActor {
  readonly name: string
  readonly mailbox: MailboxCapacity
  readonly ref: ActorRef<never>
}

/**
 * A running test cluster.
 *
 * @category models
 * @since 0.1.0
 */
export interface TestCluster<E> {
  /** The nodes that are up, in creation order. */
  readonly nodes: ReadonlyArray<TestNode>
  /** The network, for cutting links and inspecting traffic. */
  readonly network: SimNetwork.SimNetwork
  /** Runs an effect on a node that is up. */
  readonly run: <A, E2>(node: TestNode, effect: Effect.Effect<A, E2, NodeServices>) => Effect.Effect<A, E2>
  /** Delivers everything in flight and lets every actor go idle. */
  readonly settle: Effect.Effect<void>
  /** Starts a new node (it joins and runs `setup`), speaking `syncProtocol` (default the current one). */
  readonly addNode: (options?: { readonly syncProtocol?: 1 | 2 | undefined }) => Effect.Effect<TestNode, E>
  /** Graceful leave: the node's layers close and peers see it leave. */
  readonly removeNode: (node: TestNode) => Effect.Effect<void>
  /** Crash: frames in flight to and from the node are dropped, then it stops. */
  readonly crash: (node: TestNode) => Effect.Effect<void>
  /** Starts a stopped node again with the same id (and store). */
  readonly restart: (node: TestNode) => Effect.Effect<void, E>
  /** Whether the node is up. */
  readonly isUp: (node: TestNode) => boolean
}

interface Running {
  readonly scope: Scope.Closeable
  readonly context: Context.Context<NodeServices>
  endpoint: Endpoint | undefined
}

/**
 * Starts a cluster in the current scope; closing the scope stops every node.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { DistributedState, StateRegistry, SyncStrategy } from "dstate"
 * import { TestCluster } from "dstate/testing"
 *
 * const Counter = DistributedState.make({ name: "counter", schema: Schema.Struct({ value: Schema.Int }), initial: () => ({ value: 0 }) })
 *
 * const program = Effect.gen(function*() {
 *   const setup = StateRegistry.register(Counter, { strategy: SyncStrategy.activePush() })
 *   const cluster = yield* TestCluster.make({ nodes: 3, setup })
 *   const [a, b] = cluster.nodes
 *   yield* cluster.run(a, Effect.flatMap(StateRegistry.lookup(Counter), (c) => c.mutate((s) => ({ value: s.value + 1 }))))
 *   yield* cluster.settle
 *   return yield* cluster.run(b, Effect.flatMap(StateRegistry.lookup(Counter), (c) => c.snapshot))
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*<E = never>(
  options: Options<E>
): Effect.fn.Return<TestCluster<E>, E | InvalidOptions, Scope.Scope> {
  const root = options.seed === undefined ? undefined : Prng.make(options.seed)
  const detector = options.detector === undefined ? undefined : yield* SimDetector.settings(options.detector)
  const network = yield* SimNetwork.makeWith({
    ...options.network,
    ...(detector === undefined ? {} : { detector }),
    ...(root === undefined ? {} : { seed: root.derive("network").seed })
  })
  const nodes: Array<TestNode> = []
  const running = new Map<NodeId.NodeId, Running>()
  const persistence = options.persistence ?? "memory"
  // Settings are checked once here, so a node's registry layer cannot fail on them later.
  if (options.registry !== undefined) {
    yield* checkSettings({ ...RegistrySettingsService.defaultValue(), ...options.registry }, MaxFrameBytes.defaultValue())
  }
  const registryLayer = Layer.orDie(
    options.registry === undefined ? registryLayerDefault : registryLayerWith(options.registry)
  )
  const maxSteps = options.maxSettleSteps ?? 1_000_000
  for (const [index, protocol] of (options.syncProtocols ?? []).entries()) {
    if (protocol !== protocolVersion && protocol !== ackProtocolVersion) {
      return yield* new InvalidOptions({
        module: "TestCluster",
        option: `syncProtocols[${index}]`,
        value: protocol,
        reason: `must be ${protocolVersion} or ${ackProtocolVersion}`
      })
    }
  }
  let counter = 0

  yield* Effect.addFinalizer(() =>
    Effect.forEach([...running.values()].reverse(), (r) => Scope.close(r.scope, Exit.void), { discard: true })
  )

  const start = Effect.fnUntraced(function*(node: TestNode) {
    if (running.has(node.id)) return yield* Effect.die(new Error(`node ${node.id} is already up`))
    const scope = yield* Scope.make()
    const entry: { endpoint: Endpoint | undefined } = { endpoint: undefined }
    const runtimeLayer = InProcessRuntime.layer(network, node.id, {
      onEndpoint: (endpoint) => {
        entry.endpoint = endpoint
      },
      syncProtocol: node.syncProtocol
    })
    const onSpawn = options.onSpawn
    const watched = onSpawn === undefined ? runtimeLayer : Layer.effectContext(
      Effect.map(Layer.build(runtimeLayer), (built) => {
        const runtime = Context.get(built, ActorRuntime)
        return Context.add(built, ActorRuntime, ActorRuntime.of({
          ...runtime,
          spawn: (spawnOptions) =>
            Effect.tap(runtime.spawn(spawnOptions), (ref) =>
              Effect.sync(() =>
                onSpawn(node.id, { name: spawnOptions.name, mailbox: spawnOptions.mailbox ?? "unbounded", ref })
              ))
        }))
      })
    )
    const replicated = registryLayer.pipe(Layer.provideMerge(watched))
    const observed = options.observer === undefined || (options.observe !== undefined && !options.observe(node.id))
      ? replicated
      : replicated.pipe(Layer.provide(Layer.succeed(RegistryObserver, options.observer)))
    const base = node.store === undefined
      ? observed
      : observed.pipe(Layer.provide(InMemoryPersistence.layer(node.store)))
    // The node's wall clock, for its layers, its setup and every effect run on it.
    const clock = offsetClock(yield* Clock.Clock, node)
    const built = yield* Layer.buildWithScope(base, scope).pipe(Effect.provideService(Clock.Clock, clock))
    const context = Context.add(built, Clock.Clock, clock)
    const r: Running = { scope, context, endpoint: entry.endpoint }
    running.set(node.id, r)
    if (options.setup !== undefined) {
      const setupExit = yield* Effect.exit(Effect.provideContext(options.setup, context))
      if (Exit.isFailure(setupExit)) {
        running.delete(node.id)
        yield* Scope.close(scope, Exit.void)
        return yield* setupExit
      }
    }
  })

  const stop = Effect.fnUntraced(function*(node: TestNode, crashed: boolean) {
    const r = running.get(node.id)
    if (r === undefined) return
    if (crashed && r.endpoint !== undefined) r.endpoint.alive = false
    running.delete(node.id)
    yield* Scope.close(r.scope, Exit.void)
  })

  const addNode = Effect.fnUntraced(function*(addOptions?: { readonly syncProtocol?: 1 | 2 | undefined }) {
    const syncProtocol = addOptions?.syncProtocol ?? options.syncProtocols?.[counter] ?? ackProtocolVersion
    counter++
    const id = NodeId.make(`node-${counter}`)
    const node: TestNode = {
      id,
      store: persistence === "memory"
        ? InMemoryPersistence.makeStore(root === undefined ? undefined : { seed: root.derive(`store/${id}`).seed })
        : undefined,
      clockOffsetMillis: 0,
      syncProtocol
    }
    nodes.push(node)
    yield* start(node)
    return node
  })

  for (let i = 0; i < options.nodes; i++) yield* addNode()

  const settle = SimNetwork.settle(network, maxSteps)

  const cluster: TestCluster<E> = {
    get nodes() {
      return nodes.filter((n) => running.has(n.id))
    },
    network,
    run: (node, effect) =>
      Effect.suspend(() => {
        const r = running.get(node.id)
        if (r === undefined) return Effect.die(new Error(`node ${node.id} is not up`))
        return Effect.provideContext(effect, r.context)
      }),
    settle,
    addNode,
    removeNode: (node) => stop(node, false),
    crash: (node) => stop(node, true),
    restart: (node) => start(node),
    isUp: (node) => running.has(node.id)
  }
  return cluster
})

/** A node's clock: simulated wall time plus the node's offset; monotonic time and sleeps unchanged. */
const offsetClock = (base: Clock.Clock, node: TestNode): Clock.Clock => {
  const millis = () => base.currentTimeMillisUnsafe() + node.clockOffsetMillis
  const nanos = () => base.currentTimeNanosUnsafe() + BigInt(Math.round(node.clockOffsetMillis * 1_000_000))
  return {
    currentTimeMillisUnsafe: millis,
    currentTimeMillis: Effect.sync(millis),
    currentTimeNanosUnsafe: nanos,
    currentTimeNanos: Effect.sync(nanos),
    monotonicTimeNanosUnsafe: () => base.monotonicTimeNanosUnsafe(),
    monotonicTimeNanos: base.monotonicTimeNanos,
    sleep: (duration: Duration.Duration) => base.sleep(duration)
  }
}

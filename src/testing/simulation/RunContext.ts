/**
 * What one run shares among its workload, faults, hostile frames and checks:
 * the cluster on its `TestClock` (started by `make`, with the checker's
 * observer on every node and its trace on the network), the run's random
 * streams, which nodes are paused, what each owner acknowledged, the
 * workload's counts, and the few effects every part uses (run an effect on a
 * node with defects logged, look up a state's handle, advance time, fork a
 * workload effect).
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Exit, type Fiber, Logger, References } from "effect"
import { TestClock } from "effect/testing"
import * as NodeId from "../../NodeId.ts"
import * as StateRegistry from "../../StateRegistry.ts"
import * as Fixtures from "../Fixtures.ts"
import * as Prng from "../Prng.ts"
import type * as SimNetwork from "../SimNetwork.ts"
import * as TestCluster from "../TestCluster.ts"
import * as Checker from "./Checker.ts"
import type { AnyHandle, ResolvedScenario, StateName } from "./Scenario.ts"
import { ResourceV1, ResourceV2, strategyOf, timing } from "./Scenario.ts"

/** The wall clock of every run at its start (ms). */
export const startTime = 1_700_000_000_000

/** What the run knows of one owner. */
export interface NodeMeta {
  /** Last acknowledged state and generation, per state. */
  readonly acked: Map<string, Checker.Acknowledged>
  /** The store was rolled back, wiped or failed a load: durability is judged at the end only. */
  tampered: boolean
}

/** One run's shared state and helpers. */
export interface RunContext {
  readonly scenario: ResolvedScenario
  /** The stream of fault choices (victims, partitions, timings). */
  readonly fr: Prng.Prng
  /** The stream of the workload (owners, states, changes, pauses between steps). */
  readonly work: Prng.Prng
  readonly checker: Checker.Checker
  readonly cluster: TestCluster.TestCluster<unknown>
  readonly network: SimNetwork.SimNetwork
  /** The wall clock (ms). */
  readonly now: () => number
  /** The monotonic clock (ms). */
  readonly monotonic: () => number
  /** Every node the run started, including those that are down or away. */
  readonly all: Array<TestCluster.TestNode>
  readonly paused: Set<NodeId.NodeId>
  readonly mutations: { attempted: number; acknowledged: number; failed: number }
  readonly acks: {
    awaited: number
    acknowledged: number
    timedOut: number
    unsatisfiable: number
    probes: number
    probesAcknowledged: number
  }
  readonly reads: { ok: number; stalePeer: number }
  readonly mailboxes: { actors: number; samples: number; peak: number }
  /** Every workload effect forked so far. */
  readonly fibers: Array<Fiber.Fiber<unknown, unknown>>
  /** When each node last came up (wall clock, ms). */
  readonly upSince: Map<NodeId.NodeId, number>
  readonly metaOf: (node: TestCluster.TestNode) => NodeMeta
  /** Runs an effect with error logs reported as defects. */
  readonly logging: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  readonly handleOn: (node: TestCluster.TestNode, state: StateName) => Effect.Effect<AnyHandle>
  /** The nodes that are up and not paused. */
  readonly live: () => ReadonlyArray<TestCluster.TestNode>
  readonly advance: (millis: number) => Effect.Effect<void>
  /** Reports a died exit as a `Defect`; whether it died. */
  readonly defectOf: (exit: Exit.Exit<unknown, unknown>, what: string) => boolean
  /** Forks a workload effect, to be polled for defects at the end. */
  readonly fork: (effect: Effect.Effect<void>) => Effect.Effect<void>
  /** Records that a node came up. */
  readonly markUp: (node: TestCluster.TestNode) => void
}

/** The ids of `scenario.observed` of the first nodes, drawn from `random`; `undefined` when all are watched. */
const watchedSample = (scenario: ResolvedScenario, random: Prng.Prng): ReadonlySet<NodeId.NodeId> | undefined => {
  if (scenario.observed >= scenario.nodes) return undefined
  const ids = Array.from({ length: scenario.nodes }, (_, i) => NodeId.make(`node-${i + 1}`))
  for (let i = 0; i < scenario.observed; i++) {
    const j = random.int(i, ids.length - 1)
    const t = ids[i]
    ids[i] = ids[j]
    ids[j] = t
  }
  return new Set(ids.slice(0, scenario.observed))
}

/**
 * Sets the clock to `startTime` and starts the scenario's cluster, seeded by
 * `seed`, with the checker installed.
 */
export const make = Effect.fnUntraced(function*(scenario: ResolvedScenario, seed: number) {
  const root = Prng.make(seed)
  const fr = root.derive("faults")
  const work = root.derive("workload")
  const clock = yield* TestClock.testClockWith(Effect.succeed)
  yield* TestClock.setTime(startTime)
  const now = () => clock.currentTimeMillisUnsafe()
  const monotonic = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
  const checker = Checker.make(() => now() - startTime)
  let network: SimNetwork.SimNetwork | undefined
  checker.setAttached(() => network?.nodes() ?? [])
  // The cluster names its first nodes node-1..node-N; they exchange views while it starts.
  for (let i = 1; i <= scenario.nodes; i++) checker.known.add(NodeId.make(`node-${i}`))
  // A large run watches a seeded sample of its first nodes (every node otherwise).
  const watched = watchedSample(scenario, root.derive("observed"))
  const watches = watched === undefined ? () => true : (node: NodeId.NodeId) => watched.has(node)
  checker.setWatched(watches)
  const logger = Logger.make((options) => {
    if (options.logLevel === "Error" || options.logLevel === "Fatal") {
      const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
      checker.violation("Defect", `error log: ${message}`)
    }
  })
  const logging = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      Effect.provideService(Logger.CurrentLoggers, new Set([logger])),
      Effect.provideService(References.MinimumLogLevel, "Error")
    )

  const { fault, strategy, nodes: size } = scenario
  const registration = {
    strategy: strategyOf(strategy),
    pullTimeout: Duration.millis(timing.pullTimeout),
    mailbox: fault === "slowPeer" ? 32 : 1024
  }
  const setup = Effect.gen(function*() {
    const registry = yield* StateRegistry.StateRegistry
    yield* registry.register(Fixtures.Counter, registration)
    const index = Number(registry.nodeId.slice("node-".length))
    const resource = fault !== "versionSkew" ? Fixtures.NodeResource : index % 2 === 0 ? ResourceV2 : ResourceV1
    yield* registry.register(resource, registration)
  })
  const persistence = fault === "crash" ? "none" : "memory"
  const actors = new Map<NodeId.NodeId, Array<TestCluster.SpawnedActor>>()
  const mailboxes = { actors: 0, samples: 0, peak: 0 }
  /**
   * Every bounded mailbox of `node` stays within its capacity: sampled each
   * time the network hands the node a frame, while its actors are busy.
   */
  const checkMailboxes = (node: NodeId.NodeId) => {
    for (const actor of actors.get(node) ?? []) {
      // A queue's size is read synchronously (Queue.size does nothing else).
      const size = Effect.runSync(actor.ref.mailboxSize)
      mailboxes.samples++
      if (actor.mailbox === "unbounded") continue
      const fill = size / actor.mailbox
      if (fill > mailboxes.peak) mailboxes.peak = fill
      if (fill > 1) {
        checker.violation("MailboxOverCap", `${node} actor ${actor.name} holds ${size} messages, capacity ${actor.mailbox}`)
      }
    }
  }
  const cluster = yield* logging(TestCluster.make({
    onSpawn: (node, actor) => {
      mailboxes.actors++
      // A restarted node's new actors replace those of its previous life.
      const list = actors.get(node) ?? []
      actors.set(node, [...list.filter((a) => a.name !== actor.name), actor])
    },
    nodes: size,
    // versionSkew: the odd nodes (those sending wire version 1) also speak only sync protocol 1.
    ...(fault === "versionSkew" ? { syncProtocols: Array.from({ length: size }, (_, i) => (i + 1) % 2 === 1 ? 1 : 2) } : {}),
    setup,
    seed,
    persistence,
    observer: checker.observer,
    ...(watched === undefined ? {} : { observe: watches }),
    network: {
      log: false,
      trace: (event) => {
        checker.trace(event)
        if (event._tag === "Delivered") checkMailboxes(event.frame.to)
      }
    },
    registry: { changeFeedFlush: Duration.millis(timing.feedFlush) },
    ...(scenario.detector ? { detector: timing.detector } : {})
  })).pipe(Effect.orDie)
  network = cluster.network
  const meta = new Map<NodeId.NodeId, NodeMeta>()
  const metaOf = (node: TestCluster.TestNode) => {
    let m = meta.get(node.id)
    if (m === undefined) {
      m = { acked: new Map(), tampered: false }
      meta.set(node.id, m)
    }
    return m
  }
  const paused = new Set<NodeId.NodeId>()
  const fibers: Array<Fiber.Fiber<unknown, unknown>> = []
  const upSince = new Map<NodeId.NodeId, number>()

  const context: RunContext = {
    scenario,
    fr,
    work,
    checker,
    cluster,
    network: cluster.network,
    now,
    monotonic,
    all: [...cluster.nodes],
    paused,
    mutations: { attempted: 0, acknowledged: 0, failed: 0 },
    acks: { awaited: 0, acknowledged: 0, timedOut: 0, unsatisfiable: 0, probes: 0, probesAcknowledged: 0 },
    reads: { ok: 0, stalePeer: 0 },
    mailboxes,
    fibers,
    upSince,
    metaOf,
    logging,
    handleOn: (node, state) =>
      cluster.run(
        node,
        StateRegistry.lookup(state === Fixtures.Counter.name ? Fixtures.Counter : Fixtures.NodeResource)
      ).pipe(Effect.orDie, Effect.map((h) => h as unknown as AnyHandle)),
    live: () => cluster.nodes.filter((n) => !paused.has(n.id)),
    advance: (millis) => TestClock.adjust(Duration.millis(millis)),
    defectOf: (exit, what) => {
      if (Exit.isFailure(exit) && Cause.hasDies(exit.cause)) {
        checker.violation("Defect", `${what} died: ${Cause.pretty(exit.cause).split("\n")[0]}`)
        return true
      }
      return false
    },
    fork: (effect) => Effect.flatMap(logging(Effect.forkChild(effect)), (fiber) => Effect.sync(() => fibers.push(fiber))),
    markUp: (node) => {
      checker.nodeUp(node.id)
      upSince.set(node.id, now())
    }
  }
  return context
})

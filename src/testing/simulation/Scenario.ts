/**
 * What a simulation run is: a strategy shape × a cluster size × a fault,
 * with the timings every run uses, the liveness bound each shape promises,
 * the sync strategy of each shape, seed derivation, and the two states a
 * run replicates (a simple counter and a delta-aware resource, sent in wire
 * version 1 or 2 under `versionSkew`).
 *
 * @since 0.1.0
 */
import { Duration, Schedule } from "effect"
import * as DistributedState from "../../DistributedState.ts"
import type * as StateRegistry from "../../StateRegistry.ts"
import type { SyncStrategy } from "../../SyncStrategy.ts"
import * as Strategies from "../../SyncStrategy.ts"
import * as Fixtures from "../Fixtures.ts"
import * as Prng from "../Prng.ts"


/**
 * The five strategy shapes: active push, active push plus a periodic full
 * sync, the change feed, the feed plus a periodic full sync, periodic sync
 * only. Every shape pulls on stale queries.
 *
 * @category models
 * @since 0.1.0
 */
export type StrategyShape = "push" | "push+periodic" | "feed" | "feed+periodic" | "periodic"

/**
 * Every strategy shape, in table order.
 *
 * @category constructors
 * @since 0.1.0
 */
export const strategyShapes: ReadonlyArray<StrategyShape> = ["push", "push+periodic", "feed", "feed+periodic", "periodic"]

/**
 * The cluster sizes of the fault matrix.
 *
 * @category constructors
 * @since 0.1.0
 */
export const clusterSizes: ReadonlyArray<number> = [1, 2, 3, 5, 10]

/**
 * The large clusters of the scale matrix (`npm run sim -- --scale`), each run with `scaleFaults` and a
 * checker watching `scaleObserved` nodes.
 *
 * @category constructors
 * @since 0.2.0
 */
export const scaleSizes: ReadonlyArray<number> = [100, 500]

/**
 * The faults of the scale matrix.
 *
 * @category constructors
 * @since 0.2.0
 */
export const scaleFaults: ReadonlyArray<Fault> = ["none", "loss", "partition", "churn", "crash"]

/**
 * How many nodes the checker watches in a scale run (see `Scenario.observed`).
 *
 * @category constructors
 * @since 0.2.0
 */
export const scaleObserved = 8

/**
 * The faults a run can inject (each between the first quarter of the
 * workload and the final heal):
 *
 * - `none`; `loss` (20 % of frames); `duplication` (30 %); `delay` (0–200 ms
 *   per frame, so frames reorder); `corruption` (20 % of frames get a bit flip
 *   or are truncated);
 * - `partition` (one node isolated, a majority/minority split, or random
 *   groups); `asymmetricPartition` (a random set of one-way cuts);
 *   `clog` (random links clogged for up to 600 ms, and one node's links
 *   flapping every step);
 * - `crash` (a node crashes and restarts without persistence);
 *   `crashPersistent` (a node crashes twice and restarts from its store);
 *   `persistence` (saves failing with probability 0.3 then a restart, a failed
 *   load, or an older snapshot brought back before a restart);
 * - `pause` (one node stops processing, its timers frozen, until the heal);
 *   `clockSkew` (every node's wall clock offset by up to ±5 s, and one node
 *   restarted without its state with its clock stepped back by a minute);
 * - `hostile` (every node receives a huge length prefix, an unknown message
 *   tag, an unknown state, a wrong protocol version, a wrong wire version, a
 *   forged source, a truncated and a bit-flipped frame);
 * - `versionSkew` (half the nodes send the delta-aware state in wire version
 *   2, the others in version 1, each reading both; the same odd nodes speak
 *   only sync frame protocol 1, without acknowledgements, so old and new
 *   nodes run side by side);
 * - `churn` (join and leave cycles, `churnCycles` of them, rejoining with the
 *   same id or as new nodes); `slowPeer` (one node's links delayed by 300–900 ms with
 *   room for 8 frames, its mailboxes small, and the node pausing every other
 *   step); `mix` (three of the link and node faults at once);
 * - `lostLastWrite` (no faults during the workload; then one owner's last
 *   mutation is committed while its links are cut, and the links heal right
 *   after: only anti-entropy can repair it; readers off except for `feed`);
 * - `flap` (one node isolated for four steps, then connected for four, over
 *   and over: with the failure detector, unreachable and reachable again).
 *
 * @category models
 * @since 0.1.0
 */
export type Fault =
  | "none"
  | "loss"
  | "duplication"
  | "delay"
  | "partition"
  | "asymmetricPartition"
  | "clog"
  | "crash"
  | "crashPersistent"
  | "persistence"
  | "pause"
  | "clockSkew"
  | "corruption"
  | "hostile"
  | "versionSkew"
  | "churn"
  | "slowPeer"
  | "mix"
  | "lostLastWrite"
  | "flap"

/**
 * Every fault, in table order.
 *
 * @category constructors
 * @since 0.1.0
 */
export const faults: ReadonlyArray<Fault> = [
  "none",
  "loss",
  "duplication",
  "delay",
  "partition",
  "asymmetricPartition",
  "clog",
  "crash",
  "crashPersistent",
  "persistence",
  "pause",
  "clockSkew",
  "corruption",
  "hostile",
  "versionSkew",
  "churn",
  "slowPeer",
  "mix",
  "lostLastWrite",
  "flap"
]

/**
 * One cell of the matrix.
 *
 * @category models
 * @since 0.1.0
 */
export interface Scenario {
  readonly strategy: StrategyShape
  /** Nodes at the start (and at least at the end). */
  readonly nodes: number
  readonly fault: Fault
  /** Mutations of the workload (default 24). */
  readonly mutations?: number | undefined
  /** Whether every node reads with a staleness bound during the quiet window (default: on, except for `lostLastWrite`). */
  readonly readers?: boolean | undefined
  /** Join/leave cycles of `churn` (default 60). */
  readonly churnCycles?: number | undefined
  /**
   * Awaited writes (default off): half the workload's mutations await
   * acknowledgements (`"majority"`, `"all"` or 1 peer, `timing.ackTimeout`),
   * each acknowledgement is checked against the acknowledgers' views, and
   * after the final heal every node's awaited write must be acknowledged by
   * every member that speaks acknowledgements.
   */
  readonly awaits?: boolean | undefined
  /**
   * The simulated failure detector (default off: membership is an oracle). On, with `timing.detector`: cut
   * links, paused and crashed nodes make members unreachable, then down and re-joined; reads expect the
   * views of the members the reader knows of.
   * @since 0.2.0
   */
  readonly detector?: boolean | undefined
  /**
   * How many nodes the checker watches (default: all). In a large cluster every rule is checked on a
   * seeded sample of this many of the first nodes: their published view maps, the frames they reject,
   * the acknowledgements they send; in the quiet window only they read, and convergence at the end is
   * judged on their view maps (each must hold every live owner's own view). Durability is still judged
   * on every owner.
   * @since 0.2.0
   */
  readonly observed?: number | undefined
}

/**
 * The timings every run uses (ms, simulated).
 *
 * @category constructors
 * @since 0.1.0
 */
export const timing = {
  /** Period of the periodic full sync of the periodic shapes. */
  period: 1000,
  /** Change-feed flush interval. */
  feedFlush: 1000,
  /** Pull timeout of every registration. */
  pullTimeout: 1000,
  /** How often each node reads each state in the quiet window. */
  readInterval: 2000,
  /** The staleness bound of every read. */
  maxStaleness: 2000,
  /** The largest one-way delay a fault sets (the slow peer's). */
  maxDelay: 900,
  /** Length of the quiet window after the final heal. */
  quietWindow: 8000,
  /** The timeout of awaited writes. */
  ackTimeout: 1500,
  /** The failure detector of scenarios with `detector`: probes, silence to unreachable, unreachable to down. */
  detector: { probeInterval: 100, detectAfter: 300, downAfter: 1200 }
} as const

/**
 * The liveness bound of a strategy (ms after the final heal), or `undefined`
 * when the strategy has none: with readers every shape converges within
 * `readInterval + maxStaleness + pullTimeout + maxDelay`; without readers
 * the periodic shapes converge within `period + maxDelay` of a change that no
 * periodic snapshot covered yet, and push and feed have no bound. With the
 * failure detector, one probe interval more (members declared down re-join
 * at the first probe round after the heal).
 *
 * @category combinators
 * @since 0.1.0
 */
export const livenessBound = (strategy: StrategyShape, readers: boolean, detector = false): number | undefined => {
  const rejoin = detector ? timing.detector.probeInterval : 0
  if (readers) return timing.readInterval + timing.maxStaleness + timing.pullTimeout + timing.maxDelay + rejoin
  return strategy === "push" || strategy === "feed" ? undefined : timing.period + timing.maxDelay + rejoin
}

/**
 * The sync strategy of a shape (periodic shapes use `timing.period`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const strategyOf = (shape: StrategyShape): SyncStrategy => {
  switch (shape) {
    case "push":
      return Strategies.activePush()
    case "push+periodic":
      return { ...Strategies.activePush(), periodicFullSync: Schedule.spaced(Duration.millis(timing.period)) }
    case "feed":
      return Strategies.feedLazyPull()
    case "feed+periodic":
      return Strategies.feedWithPeriodicSync(Duration.millis(timing.period))
    case "periodic":
      return Strategies.periodicOnly(Duration.millis(timing.period))
  }
}

/**
 * A sub-seed of a root seed, by label (`"network"`, `"faults"`,
 * `"workload"`, `"cell/push/3/loss/7"`...).
 *
 * @category constructors
 * @since 0.1.0
 */
export const deriveSeed = (root: number, label: string): number => Prng.make(root).derive(label).seed

/**
 * A scenario with every default filled in.
 *
 * @category models
 * @since 0.1.0
 */
export interface ResolvedScenario {
  readonly strategy: StrategyShape
  readonly nodes: number
  readonly fault: Fault
  readonly mutations: number
  readonly readers: boolean
  readonly churnCycles: number
  readonly awaits: boolean
  readonly detector: boolean
  readonly observed: number
}

/**
 * Fills in a scenario's defaults.
 *
 * @category constructors
 * @since 0.1.0
 */
export const resolve = (scenario: Scenario): ResolvedScenario => ({
  strategy: scenario.strategy,
  nodes: scenario.nodes,
  fault: scenario.fault,
  mutations: scenario.mutations ?? 24,
  readers: scenario.readers ?? (scenario.fault !== "lostLastWrite" || scenario.strategy === "feed"),
  churnCycles: scenario.churnCycles ?? 60,
  awaits: scenario.awaits ?? false,
  detector: scenario.detector ?? false,
  observed: Math.min(scenario.observed ?? scenario.nodes, scenario.nodes)
})

// ---------------------------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------------------------

const resourceDecoders = { view: Fixtures.NodeResourceView, delta: Fixtures.NodeResourceDelta }

/** The delta-aware state as sent by a node that speaks wire version 1 or 2 (and reads both). */
const resourceAt = (wireVersion: 1 | 2) =>
  DistributedState.makeDelta({
    ...Fixtures.NodeResource,
    wireVersion,
    wireDecoders: wireVersion === 1 ? { 2: resourceDecoders } : { 1: resourceDecoders }
  })
/** The delta-aware state in wire version 1 (`versionSkew`: odd nodes). */
export const ResourceV1 = resourceAt(1)
/** The delta-aware state in wire version 2 (`versionSkew`: even nodes). */
export const ResourceV2 = resourceAt(2)

/** The names of the states every run replicates. */
export const stateNames = [Fixtures.Counter.name, Fixtures.NodeResource.name] as const
/** The name of a state a run replicates. */
export type StateName = typeof stateNames[number]

/** A handle of either state, with its types erased. */
export type AnyHandle = StateRegistry.StateHandle<unknown, unknown>

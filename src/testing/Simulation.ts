/**
 * Deterministic cluster simulation: one root seed drives a whole run of a
 * `TestCluster` (network, faults, workload and every node's store derive
 * their own streams from it), and the run is checked on every step.
 *
 * A scenario is a strategy shape × a cluster size × a fault. A run starts the
 * cluster on its own `TestClock`, drives a seeded workload of mutations of a
 * simple state (`Fixtures.Counter`) and a delta-aware one
 * (`Fixtures.NodeResource`) with bounded reads in between, injects the
 * fault's schedule, heals everything, and waits a quiet window in which every
 * node keeps reading with a staleness bound (`readers`). The result reports:
 *
 * - **safety**, checked on every published view map and every frame: per
 *   (observer, owner) accepted generations never decrease; a departed node's
 *   view never reappears while it is away; no defects (an actor handler that
 *   died, an error log, a workload effect that died); every corrupted frame is
 *   rejected as it is delivered and every hostile frame exactly as expected,
 *   leaving every view map untouched; view maps hold only nodes that exist,
 *   never more entries than there are nodes; a read that succeeds never
 *   returns a view older than its `maxStaleness` or with a pending change,
 *   and never lacks a member that has been up (with the reader) for longer
 *   than `pullTimeout`;
 * - **liveness**: at the end of the quiet window every live node's view of
 *   every owner equals the owner's own view (generation and value), within
 *   `livenessBound` of the final heal;
 * - **durability**: an owner restarted from an intact store comes back with a
 *   generation at least as high as any peer accepted from it and with its last
 *   acknowledged state; one restarted from a tampered store (failed load,
 *   rolled back, wiped) ends the run above every generation peers accepted;
 * - **acknowledgements** (scenarios with `awaits`): half the mutations await
 *   acknowledgements; an acknowledged write must be held (at its generation
 *   or newer) by every acknowledger that is up when the call returns
 *   (`AcknowledgedNotHeld`), and after the final heal each node's awaited
 *   write must be acknowledged by every member that speaks acknowledgements
 *   (`AckNotLive`); timeouts during faults are counted, not violations;
 * - the convergence time (simulated), messages per mutation, and a hash of
 *   the whole history: the same seed gives the same hash, bit for bit.
 *
 * **Liveness bounds** (`livenessBound`). With readers, every strategy
 * converges within `readInterval + maxStaleness + pullTimeout + maxDelay`
 * of the heal (links are perfect after it; a frame delayed before it lands
 * within `maxDelay`): a view that missed changes stops being fresh after
 * `maxStaleness`, the next read pulls it. Without readers only the periodic
 * shapes have a bound, `period + maxDelay`, and only for a change that was
 * not yet covered by a periodic snapshot: a periodic snapshot lost in a fault
 * is resent with the next change only. Pure active push without reads has no
 * bound at all: **the last write before quiescence, if lost, is never
 * repaired** (`lostLastWrite` asserts exactly that).
 *
 * The parts live in `simulation/`: `Scenario` (shapes, sizes, faults,
 * timing, bounds, seeds), `Workload` (mutations and checked reads), `Faults`
 * (each fault's plan and the node faults), `Hostile` (hostile frames),
 * `Checker` (violations, the safety, durability and liveness checks, the
 * result), `HistoryHash` and `RunContext` (what one run shares). This module
 * re-exports their public names and runs the script: start, workload with
 * the fault, heal, quiet window, verdicts.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import type * as Generation from "../Generation.ts"
import type * as NodeId from "../NodeId.ts"
import type { StateView } from "../StateView.ts"
import * as Fixtures from "./Fixtures.ts"
import type * as TestCluster from "./TestCluster.ts"
import * as Checker from "./simulation/Checker.ts"
import type { RunResult } from "./simulation/Checker.ts"
import * as Faults from "./simulation/Faults.ts"
import * as Hostile from "./simulation/Hostile.ts"
import * as RunContext from "./simulation/RunContext.ts"
import type { ResolvedScenario, Scenario } from "./simulation/Scenario.ts"
import { resolve, stateNames, timing } from "./simulation/Scenario.ts"
import * as Workload from "./simulation/Workload.ts"

/** @since 0.1.0 */
export {
  clusterSizes,
  deriveSeed,
  type Fault,
  faults,
  livenessBound,
  resolve,
  type ResolvedScenario,
  scaleFaults,
  scaleObserved,
  scaleSizes,
  type Scenario,
  type StrategyShape,
  strategyOf,
  strategyShapes,
  timing
} from "./simulation/Scenario.ts"
/** @since 0.1.0 */
export { describe, type RunResult, type Violation } from "./simulation/Checker.ts"
/** @since 0.1.0 */
export { frameWithBody, hostileFrames } from "./simulation/Hostile.ts"
/** @since 0.2.0 */
export { lifeguard, type LifeguardOptions, type LifeguardResult } from "./simulation/Lifeguard.ts"

/**
 * Runs one scenario with one seed, on its own `TestClock`, in its own scope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Simulation } from "dstate/testing"
 *
 * const program = Effect.gen(function*() {
 *   const result = yield* Simulation.run({ strategy: "push+periodic", nodes: 3, fault: "loss" }, 42)
 *   if (!result.ok) yield* Effect.logError(Simulation.describe(result))
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const run = (scenario: Scenario, seed: number): Effect.Effect<RunResult> =>
  runScoped(resolve(scenario), seed >>> 0).pipe(
    Effect.scoped,
    Effect.provide(TestClock.layer({ warningDelay: "1 hour" }))
  )

const runScoped = Effect.fnUntraced(function*(scenario: ResolvedScenario, seed: number) {
  const ctx = yield* RunContext.make(scenario, seed)
  const { checker, cluster, network, work } = ctx
  const { fault } = scenario
  const now = () => ctx.now() - RunContext.startTime

  // ---- the script --------------------------------------------------------------------------
  for (const n of ctx.all) ctx.markUp(n)
  yield* ctx.advance(100)
  const plan = Faults.planOf(ctx, fault)
  const faultFrom = Math.floor(scenario.mutations / 4)
  for (let i = 0; i < scenario.mutations; i++) {
    if (i === faultFrom) {
      yield* ctx.logging(plan.start)
      if (fault === "hostile") yield* ctx.logging(Hostile.inject(ctx))
    }
    if (i >= faultFrom) yield* ctx.logging(plan.step(i))
    const candidates = ctx.live()
    if (candidates.length > 0) {
      yield* ctx.fork(Workload.mutate(ctx, work.pick(candidates), Workload.pickState(ctx)))
      if (work.chance(0.35)) yield* ctx.fork(Workload.read(ctx, work.pick(candidates), Workload.pickState(ctx)))
    }
    yield* ctx.advance(work.int(40, 240))
  }
  yield* ctx.logging(plan.heal)
  yield* Faults.healLinks(ctx)
  for (const n of [...cluster.nodes]) yield* Faults.resume(ctx, n)

  let lostWrite: { readonly owner: TestCluster.TestNode; readonly generation: Generation.Generation } | undefined
  if (fault === "lostLastWrite" && cluster.nodes.length >= 1) {
    yield* ctx.advance(timing.period + 100)
    const owner = work.pick(cluster.nodes)
    for (const other of cluster.nodes) if (other !== owner) network.cut(owner.id, other.id)
    yield* Workload.mutate(ctx, owner, Fixtures.Counter.name, false)
    // Heal as soon as the commit's own sends are dropped, in the same instant: a periodic snapshot
    // due later goes through (one lost as well would only be resent with a next change).
    for (let i = 0; i < 10_000 && network.busyActors() > 0; i++) yield* Effect.yieldNow
    network.heal()
    const acked = ctx.metaOf(owner).acked.get(Fixtures.Counter.name)
    if (acked !== undefined) lostWrite = { owner, generation: acked.generation }
  }
  const healAt = now()
  const workloadFrames = network.stats().sent
  checker.startTracking()

  // ---- the quiet window --------------------------------------------------------------------
  for (let t = 0; t < timing.quietWindow; t += timing.readInterval) {
    if (scenario.readers) {
      for (const n of cluster.nodes) {
        if (!checker.watches(n.id)) continue
        for (const s of stateNames) yield* ctx.fork(Workload.read(ctx, n, s))
      }
    }
    yield* ctx.advance(timing.readInterval)
  }
  yield* cluster.settle
  checker.settleDelivery()

  // ---- verdicts ----------------------------------------------------------------------------
  const up = cluster.nodes
  const divergent: Array<string> = []
  const upIds = new Set(up.map((n) => n.id))
  for (const s of stateNames) {
    const owners = new Map<NodeId.NodeId, StateView<unknown>>()
    for (const o of up) owners.set(o.id, yield* (yield* ctx.handleOn(o, s)).local)
    for (const n of up) {
      // A large run judges convergence where it reads: on its watched nodes (all of them otherwise).
      if (!checker.watches(n.id)) continue
      const map = yield* (yield* ctx.handleOn(n, s)).snapshot
      divergent.push(...Checker.divergence(s, n.id, map, owners, upIds))
    }
    Checker.checkEnd(checker, s, owners)
  }
  const liveness = Checker.liveness(checker, scenario, {
    divergent,
    nodesUp: up.length,
    lostWrite: lostWrite !== undefined,
    healedAt: healAt
  })

  // Outstanding workload effects (on nodes that crashed mid-way) end with the scope.
  for (const fiber of ctx.fibers) {
    const exit = fiber.pollUnsafe()
    if (exit !== undefined) ctx.defectOf(exit, "workload")
  }
  // ---- awaited writes after the heal --------------------------------------------------------
  if (scenario.awaits) yield* ctx.logging(Workload.probeAcks(ctx))

  Checker.checkTotals(checker)
  const stats = network.stats()
  checker.hash.num(stats.sent)
  checker.hash.num(stats.delivered)
  checker.hash.num(stats.dropped)
  checker.hash.num(ctx.mutations.acknowledged)
  const safety = [...checker.safety]
  const durability = checker.durability
  const mutations = ctx.mutations
  return {
    seed,
    scenario,
    safety,
    durability,
    liveness,
    mutations,
    acks: { ...ctx.acks },
    reads: ctx.reads,
    frames: {
      sent: stats.sent,
      delivered: stats.delivered,
      dropped: stats.dropped,
      corruptedDelivered: checker.counts.corruptedDelivered,
      corruptedRejected: checker.counts.corruptedRejected,
      replyRejected: checker.counts.replyRejected,
      hostileInjected: checker.counts.hostileExpected,
      hostileRejected: checker.counts.hostileRejected
    },
    messagesPerMutation: mutations.acknowledged === 0 ? 0 : workloadFrames / mutations.acknowledged,
    lostWrite: lostWrite === undefined ? undefined : { owner: lostWrite.owner.id, generation: lostWrite.generation },
    mailboxes: { ...ctx.mailboxes },
    departedPeak: checker.departedPeak(),
    detector: network.detector?.stats(),
    historyHash: checker.hash.digest(),
    simulatedMillis: now(),
    ok: safety.length === 0 && durability.length === 0 && liveness.ok
  } satisfies RunResult
})

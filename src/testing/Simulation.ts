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
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Exit, Fiber, Logger, References, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Generation from "../Generation.ts"
import * as NodeId from "../NodeId.ts"
import * as StateRegistry from "../StateRegistry.ts"
import type { StateView } from "../StateView.ts"
import * as Fixtures from "./Fixtures.ts"
import * as InMemoryPersistence from "./InMemoryPersistence.ts"
import * as Prng from "./Prng.ts"
import type * as SimNetwork from "./SimNetwork.ts"
import * as TestCluster from "./TestCluster.ts"
import * as Checker from "./simulation/Checker.ts"
import { type RunResult, same } from "./simulation/Checker.ts"
import { hostileFrames } from "./simulation/Hostile.ts"
import type { AnyHandle, Fault, ResolvedScenario, Scenario, StateName } from "./simulation/Scenario.ts"
import { resolve, ResourceV1, ResourceV2, STATES, strategyOf, timing } from "./simulation/Scenario.ts"

/** @since 0.1.0 */
export {
  clusterSizes,
  deriveSeed,
  type Fault,
  faults,
  livenessBound,
  resolve,
  type ResolvedScenario,
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

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

const START = 1_700_000_000_000

interface NodeMeta {
  /** Last acknowledged state and generation, per state. */
  readonly acked: Map<string, Checker.Acknowledged>
  /** The store was rolled back, wiped or failed a load: durability is judged at the end only. */
  tampered: boolean
}

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

const runScoped = (scenario: ResolvedScenario, seed: number): Effect.Effect<RunResult, never, Scope.Scope> =>
  Effect.gen(function*() {
    const root = Prng.make(seed)
    const fr = root.derive("faults")
    const work = root.derive("workload")
    const clock = yield* TestClock.testClockWith(Effect.succeed)
    yield* TestClock.setTime(START)
    const now = () => clock.currentTimeMillisUnsafe()
    const monotonic = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000
    const checker = Checker.make(() => now() - START)
    let network: SimNetwork.SimNetwork | undefined
    checker.setAttached(() => network?.nodes() ?? [])
    // The cluster names its first nodes node-1..node-N; they exchange views while it starts.
    for (let i = 1; i <= scenario.nodes; i++) checker.known.add(NodeId.make(`node-${i}`))
    const errors: Array<string> = []
    const logger = Logger.make((options) => {
      if (options.logLevel === "Error" || options.logLevel === "Fatal") {
        const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
        errors.push(message)
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
      setup,
      seed,
      persistence,
      observer: checker.observer,
      network: {
        log: false,
        trace: (event) => {
          checker.trace(event)
          if (event._tag === "Delivered") checkMailboxes(event.frame.to)
        }
      },
      registry: { changeFeedFlush: Duration.millis(timing.feedFlush) }
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
    const all: Array<TestCluster.TestNode> = [...cluster.nodes]
    const paused = new Set<NodeId.NodeId>()
    const mutations = { attempted: 0, acknowledged: 0, failed: 0 }
    const reads = { ok: 0, stalePeer: 0 }
    const fibers: Array<Fiber.Fiber<unknown, unknown>> = []

    const handleOn = (node: TestCluster.TestNode, state: StateName) =>
      cluster.run(
        node,
        StateRegistry.lookup(state === Fixtures.Counter.name ? Fixtures.Counter : Fixtures.NodeResource)
      ).pipe(Effect.orDie, Effect.map((h) => h as unknown as AnyHandle))

    const live = () => cluster.nodes.filter((n) => !paused.has(n.id))
    const advance = (millis: number) => TestClock.adjust(Duration.millis(millis))

    const defectOf = (exit: Exit.Exit<unknown, unknown>, what: string) => {
      if (Exit.isFailure(exit) && Cause.hasDies(exit.cause)) {
        checker.violation("Defect", `${what} died: ${Cause.pretty(exit.cause).split("\n")[0]}`)
        return true
      }
      return false
    }

    const fork = (effect: Effect.Effect<void>) =>
      Effect.flatMap(logging(Effect.forkChild(effect)), (fiber) => Effect.sync(() => fibers.push(fiber)))

    // ---- workload --------------------------------------------------------------------------
    const mutate = (node: TestCluster.TestNode, state: StateName) =>
      Effect.gen(function*() {
        mutations.attempted++
        const h = yield* handleOn(node, state)
        const m = metaOf(node)
        const change: Fixtures.NodeResourceChange = {
          cpuPercent: work.int(0, 100),
          ...(work.chance(0.5) ? { memoryUsedMiB: work.int(0, 4096) } : {}),
          ...(work.chance(0.2) ? { tags: [work.pick(["a", "b", "gpu", "eu"])] } : {})
        }
        const effect = state === Fixtures.Counter.name
          ? (h as unknown as StateRegistry.SimpleHandle<{ readonly value: number }>).mutate((s) => ({ value: s.value + 1 }))
          : (h as unknown as StateRegistry.DeltaHandle<Fixtures.NodeResourceState, Fixtures.NodeResourceView, Fixtures.NodeResourceChange>)
            .mutateWithDelta((s) => Fixtures.updateResource(s, change))
        const exit = yield* Effect.exit(effect as Effect.Effect<StateRegistry.Committed<unknown>, unknown>)
        checker.hash.str(`mutate ${node.id} ${state} ${Exit.isSuccess(exit) ? Generation.format(exit.value.generation) : "failed"}`)
        if (Exit.isSuccess(exit)) {
          mutations.acknowledged++
          m.acked.set(state, { generation: exit.value.generation, state: exit.value.state })
        } else if (!defectOf(exit, `mutate on ${node.id}`)) mutations.failed++
      })

    /** When each node last came up (simulated ms). */
    const upSince = new Map<NodeId.NodeId, number>()
    const markUp = (node: TestCluster.TestNode) => {
      checker.nodeUp(node.id)
      upSince.set(node.id, now())
    }
    const read = (node: TestCluster.TestNode, state: StateName) =>
      Effect.gen(function*() {
        const h = yield* handleOn(node, state)
        const started = now()
        // Members up (with the reader) for a while before the read: their views must be in a fresh answer.
        const settled = (id: NodeId.NodeId) => (upSince.get(id) ?? Infinity) <= started - timing.pullTimeout
        const expectedMembers = settled(node.id) ? cluster.nodes.map((n) => n.id).filter(settled) : []
        const exit = yield* Effect.exit(h.query({ maxStaleness: Duration.millis(timing.maxStaleness) }, (views) => {
          for (const member of expectedMembers) {
            // Still up, without a restart, since before the read: one that left and came back meanwhile is new.
            if (!views.has(member) && cluster.nodes.some((n) => n.id === member) && settled(member)) {
              checker.violation("ReadMissedMember", `${node.id} read its ${state} views without member ${member}`)
            }
          }
          const t = monotonic()
          for (const entry of views.values()) {
            if (entry.source === node.id) continue
            if (t - entry.syncedAt > timing.maxStaleness || entry.pendingRemote !== undefined) {
              checker.violation(
                "StaleRead",
                `${node.id} read ${entry.source}'s ${state} synced ${t - entry.syncedAt} ms ago${
                  entry.pendingRemote === undefined ? "" : " with a pending change"
                }`
              )
            }
          }
          return views.size
        }))
        checker.hash.str(`read ${node.id} ${state} ${Exit.isSuccess(exit) ? exit.value : "stale"}`)
        if (Exit.isSuccess(exit)) reads.ok++
        else if (!defectOf(exit, `read on ${node.id}`)) reads.stalePeer++
      })

    const pickState = (): StateName => work.chance(0.5) ? Fixtures.Counter.name : Fixtures.NodeResource.name

    // ---- node faults -------------------------------------------------------------------------
    const crash = (node: TestCluster.TestNode) =>
      Effect.gen(function*() {
        if (!cluster.isUp(node)) return
        if (paused.has(node.id)) yield* resume(node)
        yield* logging(cluster.crash(node))
        checker.nodeDown(node.id)
      })

    const restart = (node: TestCluster.TestNode) =>
      Effect.gen(function*() {
        if (cluster.isUp(node)) return
        const m = metaOf(node)
        if (node.store !== undefined && (node.store.failLoads || node.store.failNextLoads > 0)) m.tampered = true
        yield* logging(cluster.restart(node)).pipe(Effect.orDie)
        markUp(node)
        if (node.store === undefined || m.tampered) return
        // Durability: back from an intact store at or above everything acknowledged and accepted.
        for (const state of STATES) {
          const h = yield* handleOn(node, state)
          const local = yield* h.local
          Checker.checkRestartAccepted(checker, node.id, state, local.generation)
          const acked = m.acked.get(state)
          if (acked === undefined) continue
          const owned = yield* h.state
          Checker.checkRestartAcknowledged(checker, node.id, state, local.generation, owned, acked)
        }
      })

    const pause = (node: TestCluster.TestNode) =>
      Effect.gen(function*() {
        if (!cluster.isUp(node) || paused.has(node.id)) return
        paused.add(node.id)
        yield* network.pause(node.id)
      })
    const resume = (node: TestCluster.TestNode) =>
      Effect.gen(function*() {
        if (!paused.delete(node.id)) return
        yield* network.resume(node.id)
      })

    // ---- the fault schedule --------------------------------------------------------------------
    interface Plan {
      readonly start: Effect.Effect<void>
      readonly step: (i: number) => Effect.Effect<void>
      readonly heal: Effect.Effect<void>
    }
    const noop: Plan = { start: Effect.void, step: () => Effect.void, heal: Effect.void }
    const ids = () => cluster.nodes.map((n) => n.id)
    const shuffled = <A>(items: ReadonlyArray<A>): Array<A> => {
      const out = [...items]
      for (let i = out.length - 1; i > 0; i--) {
        const j = fr.int(0, i)
        const t = out[i]
        out[i] = out[j]
        out[j] = t
      }
      return out
    }
    const victim = () => fr.pick(cluster.nodes)
    const healLinks = Effect.sync(() => {
      network.resetLinks()
      network.heal()
    })
    /** A fault of one random node, from the start of the window to the heal. */
    const around = (
      start: (node: TestCluster.TestNode) => Effect.Effect<void>,
      end: (node: TestCluster.TestNode) => Effect.Effect<void>
    ): Plan => {
      const node = victim()
      return { ...noop, start: start(node), heal: end(node) }
    }
    const linkFault = (faults: Partial<SimNetwork.LinkFaults>): Plan => ({
      ...noop,
      start: Effect.sync(() => network.setDefaultLink(faults)),
      heal: healLinks
    })

    const planOf = (f: Fault): Plan => {
      switch (f) {
        case "none":
        case "versionSkew":
        case "lostLastWrite":
        case "hostile":
          return noop
        case "loss":
          return linkFault({ loss: 0.2 })
        case "duplication":
          return linkFault({ duplicate: 0.3 })
        case "delay":
          return linkFault({ delay: { min: 0, max: 200 } })
        case "corruption":
          return linkFault({ corrupt: 0.2 })
        case "partition":
          return {
            ...noop,
            start: Effect.sync(() => {
              const order = shuffled(ids())
              const shape = fr.int(0, 2)
              if (order.length < 2) return
              if (shape === 0) network.isolate(order[0])
              else if (shape === 1) {
                const cut = Math.floor(order.length / 2)
                network.partition(order.slice(0, Math.max(1, cut)), order.slice(Math.max(1, cut)))
              } else {
                const groups: Array<Array<NodeId.NodeId>> = [[], [], []]
                for (const id of order) groups[fr.int(0, 2)].push(id)
                network.partitionGroups(groups.filter((g) => g.length > 0))
              }
            }),
            heal: healLinks
          }
        case "asymmetricPartition":
          return {
            ...noop,
            start: Effect.sync(() => {
              const list = ids()
              for (const a of list) {
                for (const b of list) if (a !== b && fr.chance(0.4)) network.cut(a, b)
              }
            }),
            heal: healLinks
          }
        case "clog": {
          const flapper = victim()
          return {
            ...noop,
            step: (i) =>
              Effect.gen(function*() {
                const list = ids()
                if (list.length >= 2) {
                  for (let k = 0; k < 2; k++) {
                    const [a, b] = shuffled(list)
                    yield* network.clog(a, b, Duration.millis(fr.int(100, 600)))
                  }
                }
                if (i % 2 === 0) network.isolate(flapper.id)
                else network.heal()
              }),
            heal: healLinks
          }
        }
        case "crash":
          return around(crash, restart)
        case "crashPersistent": {
          const node = victim()
          return {
            ...noop,
            start: crash(node),
            step: (i) => i % 3 === 1 ? restart(node) : i % 3 === 0 ? crash(node) : Effect.void,
            heal: restart(node)
          }
        }
        case "persistence": {
          const node = victim()
          const store = node.store!
          const variant = fr.int(0, 2)
          if (variant === 0) {
            return {
              ...noop,
              start: Effect.sync(() => {
                store.saveFailureRate = 0.3
              }),
              heal: Effect.gen(function*() {
                InMemoryPersistence.heal(store)
                yield* crash(node)
                yield* restart(node)
              })
            }
          }
          return {
            ...noop,
            start: crash(node),
            heal: Effect.gen(function*() {
              if (variant === 1) store.failNextLoads = 1
              else if (InMemoryPersistence.rollback(store, 2).length > 0) metaOf(node).tampered = true
              yield* restart(node)
              InMemoryPersistence.heal(store)
            })
          }
        }
        case "pause":
          return around(pause, resume)
        case "clockSkew": {
          const node = victim()
          return {
            ...noop,
            start: Effect.gen(function*() {
              for (const n of cluster.nodes) n.clockOffsetMillis = fr.int(-5000, 5000)
              yield* crash(node)
            }),
            heal: Effect.gen(function*() {
              // Back without its state, its clock a minute behind: the new incarnation must still win.
              node.clockOffsetMillis -= 60_000
              if (node.store !== undefined) {
                InMemoryPersistence.wipe(node.store)
                metaOf(node).tampered = true
              }
              yield* restart(node)
            })
          }
        }
        case "churn":
          return churnPlan()
        case "slowPeer": {
          const node = victim()
          return {
            ...noop,
            start: Effect.sync(() => {
              for (const other of ids()) {
                if (other === node.id) continue
                network.setLink(other, node.id, { delay: { min: 300, max: timing.maxDelay }, capacity: 8 })
                network.setLink(node.id, other, { delay: { min: 300, max: timing.maxDelay } })
              }
            }),
            step: (i) => i % 2 === 0 ? pause(node) : resume(node),
            heal: Effect.andThen(resume(node), healLinks)
          }
        }
        case "mix": {
          const pool: ReadonlyArray<Fault> = [
            "loss",
            "duplication",
            "delay",
            "partition",
            "asymmetricPartition",
            "clog",
            "crashPersistent",
            "pause",
            "corruption",
            "persistence"
          ]
          const chosen = shuffled(pool).slice(0, 3)
          checker.hash.str(`mix ${chosen.join(",")}`)
          // Link faults compose: each sets its own part of the default link.
          const plans = chosen.map(planOf)
          return {
            start: Effect.forEach(plans, (p) => p.start, { discard: true }),
            step: (i) => Effect.forEach(plans, (p) => p.step(i), { discard: true }),
            heal: Effect.forEach(plans, (p) => p.heal, { discard: true })
          }
        }
      }
    }

    const churnPlan = (): Plan => {
      const away: Array<TestCluster.TestNode> = []
      const cyclesPerStep = Math.ceil(scenario.churnCycles / Math.max(1, scenario.mutations - Math.floor(scenario.mutations / 4)))
      let done = 0
      return {
        ...noop,
        step: () =>
          Effect.gen(function*() {
            for (let k = 0; k < cyclesPerStep && done < scenario.churnCycles; k++, done++) {
              const up = cluster.nodes
              if (up.length > 1 && (away.length === 0 || fr.chance(0.5))) {
                const leaving = fr.pick(up)
                yield* logging(cluster.removeNode(leaving))
                checker.nodeDown(leaving.id)
                away.push(leaving)
              } else if (away.length > 0 && fr.chance(0.7)) {
                const back = away.splice(fr.int(0, away.length - 1), 1)[0]
                yield* restart(back)
              } else {
                const added = yield* logging(cluster.addNode()).pipe(Effect.orDie)
                all.push(added)
                markUp(added)
              }
              yield* advance(fr.int(2, 20))
            }
          }),
        heal: Effect.gen(function*() {
          while (cluster.nodes.length < size && away.length > 0) yield* restart(away.shift()!)
        })
      }
    }

    // ---- hostile frames ----------------------------------------------------------------------
    const injectHostile = Effect.gen(function*() {
      yield* cluster.settle
      checker.setInjecting(true)
      const targets = cluster.nodes
      const before = yield* Effect.forEach(targets, (t) =>
        Effect.gen(function*() {
          const registry = yield* cluster.run(t, StateRegistry.StateRegistry)
          const inbound = yield* registry.inboundMetrics
          const counter = yield* (yield* handleOn(t, Fixtures.Counter.name)).metrics
          const maps = STATES.map((s) => checker.latest.get(s)!.get(t.id))
          return { inbound, unsupported: counter.unsupportedVersion, maps }
        }))
      let expectedRejected = 0
      for (const target of targets) {
        const peers = targets.filter((n) => n !== target)
        const from = peers.length > 0 ? fr.pick(peers).id : NodeId.make("node-stranger")
        const frames = hostileFrames(from, fr)
        for (const hostile of frames) {
          if (hostile.outcome === "rejected") expectedRejected++
          yield* network.inject(from, target.id, hostile.frame)
        }
      }
      yield* cluster.settle
      for (const [i, target] of targets.entries()) {
        const registry = yield* cluster.run(target, StateRegistry.StateRegistry)
        const inbound = yield* registry.inboundMetrics
        const counter = yield* (yield* handleOn(target, Fixtures.Counter.name)).metrics
        const b = before[i]
        const delta = {
          rejected: inbound.framesRejected - b.inbound.framesRejected,
          tooLarge: inbound.tooLarge - b.inbound.tooLarge,
          malformed: inbound.malformed - b.inbound.malformed,
          unknownState: inbound.unknownState - b.inbound.unknownState,
          unsupported: counter.unsupportedVersion - b.unsupported
        }
        const expected = { rejected: 6, tooLarge: 1, malformed: 5, unknownState: 1, unsupported: 1 }
        if (!same(delta, expected)) {
          checker.violation("HostileFrameCount", `${target.id}: ${JSON.stringify(delta)}, expected ${JSON.stringify(expected)}`)
        }
        for (const [k, s] of STATES.entries()) {
          if (checker.latest.get(s)!.get(target.id) !== b.maps[k]) {
            checker.violation("HostileFrameChangedState", `${target.id}'s ${s} views changed`)
          }
        }
      }
      checker.counts.hostileExpected += expectedRejected
      if (checker.counts.hostileRejected !== checker.counts.hostileExpected) {
        checker.violation(
          "HostileFrameCount",
          `observer saw ${checker.counts.hostileRejected} rejections of ${checker.counts.hostileExpected} hostile frames`
        )
      }
      checker.setInjecting(false)
    })

    // ---- the script --------------------------------------------------------------------------
    for (const n of all) markUp(n)
    yield* advance(100)
    const plan = planOf(fault)
    const faultFrom = Math.floor(scenario.mutations / 4)
    for (let i = 0; i < scenario.mutations; i++) {
      if (i === faultFrom) {
        yield* logging(plan.start)
        if (fault === "hostile") yield* logging(injectHostile)
      }
      if (i >= faultFrom) yield* logging(plan.step(i))
      const candidates = live()
      if (candidates.length > 0) {
        yield* fork(mutate(work.pick(candidates), pickState()))
        if (work.chance(0.35)) yield* fork(read(work.pick(candidates), pickState()))
      }
      yield* advance(work.int(40, 240))
    }
    yield* logging(plan.heal)
    yield* healLinks
    for (const n of [...cluster.nodes]) yield* resume(n)

    let lostWrite: { readonly owner: TestCluster.TestNode; readonly generation: Generation.Generation } | undefined
    if (fault === "lostLastWrite" && cluster.nodes.length >= 1) {
      yield* advance(timing.period + 100)
      const owner = work.pick(cluster.nodes)
      for (const other of cluster.nodes) if (other !== owner) network.cut(owner.id, other.id)
      yield* mutate(owner, Fixtures.Counter.name)
      // Heal as soon as the commit's own sends are dropped, in the same instant: a periodic snapshot
      // due later goes through (one lost as well would only be resent with a next change).
      for (let i = 0; i < 10_000 && network.busyActors() > 0; i++) yield* Effect.yieldNow
      network.heal()
      const acked = metaOf(owner).acked.get(Fixtures.Counter.name)
      if (acked !== undefined) lostWrite = { owner, generation: acked.generation }
    }
    const healAt = now()
    const workloadFrames = network.stats().sent
    checker.startTracking()

    // ---- the quiet window --------------------------------------------------------------------
    for (let t = 0; t < timing.quietWindow; t += timing.readInterval) {
      if (scenario.readers) {
        for (const n of cluster.nodes) for (const s of STATES) yield* fork(read(n, s))
      }
      yield* advance(timing.readInterval)
    }
    yield* cluster.settle
    checker.settleDelivery()

    // ---- verdicts ----------------------------------------------------------------------------
    const up = cluster.nodes
    const divergent: Array<string> = []
    const upIds = new Set(up.map((n) => n.id))
    for (const s of STATES) {
      const owners = new Map<NodeId.NodeId, StateView<unknown>>()
      for (const o of up) owners.set(o.id, yield* (yield* handleOn(o, s)).local)
      for (const n of up) {
        const map = yield* (yield* handleOn(n, s)).snapshot
        divergent.push(...Checker.divergence(s, n.id, map, owners, upIds))
      }
      Checker.checkEnd(checker, s, owners)
    }
    const liveness = Checker.liveness(checker, scenario, {
      divergent,
      nodesUp: up.length,
      lostWrite: lostWrite !== undefined,
      healedAt: healAt - START
    })

    // Outstanding workload effects (on nodes that crashed mid-way) end with the scope.
    for (const fiber of fibers) {
      const exit = fiber.pollUnsafe()
      if (exit !== undefined) defectOf(exit, "workload")
    }
    Checker.checkTotals(checker)
    const stats = network.stats()
    checker.hash.num(stats.sent)
    checker.hash.num(stats.delivered)
    checker.hash.num(stats.dropped)
    checker.hash.num(mutations.acknowledged)
    const safety = [...checker.safety]
    const durability = checker.durability
    return {
      seed,
      scenario,
      safety,
      durability,
      liveness,
      mutations,
      reads,
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
      mailboxes: { ...mailboxes },
      departedPeak: checker.departedPeak(),
      historyHash: checker.hash.digest(),
      simulatedMillis: now() - START,
      ok: safety.length === 0 && durability.length === 0 && liveness.ok
    } satisfies RunResult
  })

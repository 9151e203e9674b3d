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
import { Cause, Duration, Effect, Exit, Fiber, Logger, References, Result, Scope } from "effect"
import { TestClock } from "effect/testing"
import { crc32 } from "node:zlib"
import * as Generation from "../Generation.ts"
import { encodeFrame } from "../internal/codec.ts"
import * as NodeId from "../NodeId.ts"
import * as StateRegistry from "../StateRegistry.ts"
import type { StateView, ViewMap } from "../StateView.ts"
import { FRAME_HEADER_BYTES, FullSnapshot, PROTOCOL_VERSION, RequestSnapshot } from "../SyncMessage.ts"
import * as Fixtures from "./Fixtures.ts"
import * as InMemoryPersistence from "./InMemoryPersistence.ts"
import * as Prng from "./Prng.ts"
import type * as SimNetwork from "./SimNetwork.ts"
import * as TestCluster from "./TestCluster.ts"
import * as HistoryHash from "./simulation/HistoryHash.ts"
import type { AnyHandle, Fault, ResolvedScenario, Scenario, StateName } from "./simulation/Scenario.ts"
import { livenessBound, resolve, ResourceV1, ResourceV2, STATES, strategyOf, timing } from "./simulation/Scenario.ts"

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

/**
 * A broken guarantee, with the simulated time it was seen at.
 *
 * @category models
 * @since 0.1.0
 */
export interface Violation {
  readonly kind:
    | "GenerationDecreased"
    | "DepartedViewReappeared"
    | "Defect"
    | "CorruptedFrameAccepted"
    | "ValidFrameRejected"
    | "HostileFrameCount"
    | "HostileFrameChangedState"
    | "ViewMapOverCap"
    | "MailboxOverCap"
    | "DepartedSetOverCap"
    | "StaleRead"
    | "ReadMissedMember"
    | "RestartBelowAccepted"
    | "AcknowledgedMutationLost"
    | "EndedBelowAccepted"
  readonly at: number
  readonly detail: string
}

/**
 * What a run found.
 *
 * @category models
 * @since 0.1.0
 */
export interface RunResult {
  readonly seed: number
  readonly scenario: ResolvedScenario
  readonly safety: ReadonlyArray<Violation>
  readonly durability: ReadonlyArray<Violation>
  readonly liveness: {
    /** Whether the strategy is expected to converge in this scenario. */
    readonly expected: boolean
    readonly converged: boolean
    /** Simulated ms from the final heal to the last change of any view map (when converged). */
    readonly convergenceMillis: number | undefined
    readonly boundMillis: number | undefined
    /** Converged as expected, within the bound. */
    readonly ok: boolean
    /** Every (observer, owner, state) whose view differs from the owner's at the end. */
    readonly divergent: ReadonlyArray<string>
  }
  readonly mutations: { readonly attempted: number; readonly acknowledged: number; readonly failed: number }
  readonly reads: { readonly ok: number; readonly stalePeer: number }
  readonly frames: {
    readonly sent: number
    readonly delivered: number
    readonly dropped: number
    readonly corruptedDelivered: number
    readonly corruptedRejected: number
    readonly replyRejected: number
    readonly hostileInjected: number
    readonly hostileRejected: number
  }
  /** Frames sent from the start to the final heal, per acknowledged mutation (the quiet window's reads not counted). */
  readonly messagesPerMutation: number
  /** The mutation `lostLastWrite` committed behind cut links: its owner and generation. */
  readonly lostWrite: { readonly owner: NodeId.NodeId; readonly generation: Generation.Generation } | undefined
  /**
   * Mailboxes watched: every actor the nodes spawned (`actors`), sampled each
   * time its node is handed a frame (`samples`); `peak` is the fullest a
   * bounded one was seen, as a fraction of its capacity (above 1 is a
   * `MailboxOverCap` violation).
   */
  readonly mailboxes: { readonly actors: number; readonly samples: number; readonly peak: number }
  /**
   * The largest departed set any shard held (each is capped by the
   * registry's `departedCapacity`; above it is a `DepartedSetOverCap` violation).
   */
  readonly departedPeak: number
  /** Hash of every frame, view map, rejection and workload outcome, in order. */
  readonly historyHash: string
  /** Simulated time at the end of the run, from its start. */
  readonly simulatedMillis: number
  /** No safety or durability violation, liveness as expected. */
  readonly ok: boolean
}

/**
 * A one-line account of a run, seed first, for failure messages.
 *
 * @category combinators
 * @since 0.1.0
 */
export const describe = (result: RunResult): string => {
  const s = result.scenario
  const parts = [
    `seed=${result.seed}`,
    `${s.strategy}/${s.nodes}/${s.fault}`,
    result.ok ? "ok" : "FAILED",
    `converged=${result.liveness.converged} (expected ${result.liveness.expected}) in ${
      result.liveness.convergenceMillis ?? "-"
    } ms (bound ${result.liveness.boundMillis ?? "none"})`,
    `mutations=${result.mutations.acknowledged}/${result.mutations.attempted}`,
    `frames=${result.frames.sent}`,
    `hash=${result.historyHash}`
  ]
  const problems = [...result.safety, ...result.durability].slice(0, 5).map((v) => `${v.kind}@${v.at}: ${v.detail}`)
  if (result.liveness.divergent.length > 0) problems.push(`divergent: ${result.liveness.divergent.slice(0, 5).join("; ")}`)
  return problems.length === 0 ? parts.join(" ") : `${parts.join(" ")} | ${problems.join(" | ")}`
}

// ---------------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------------

interface PendingDelivery {
  readonly from: NodeId.NodeId
  readonly to: NodeId.NodeId
  readonly kind: SimNetwork.SentFrame["kind"]
  readonly corrupted: boolean
  readonly at: number
  rejected: boolean
}

const key3 = (state: string, observer: string, owner: string) => `${state}\u0000${observer}\u0000${owner}`
const key2 = (state: string, owner: string) => `${state}\u0000${owner}`

const makeChecker = (now: () => number) => {
  const hash = HistoryHash.make()
  const safety: Array<Violation> = []
  const violation = (kind: Violation["kind"], detail: string) => {
    if (safety.length < 1000) safety.push({ kind, at: now(), detail })
  }
  /** state → observer → last published map. */
  const latest = new Map<string, Map<NodeId.NodeId, ViewMap<unknown>>>()
  for (const s of STATES) latest.set(s, new Map())
  /** Highest generation each observer accepted of each owner, across departures. */
  const highWater = new Map<string, Generation.Generation>()
  /** Highest generation any peer accepted of each owner. */
  const accepted = new Map<string, Generation.Generation>()
  /** Observers that dropped a departed owner's view (while it is away). */
  const removed = new Set<string>()
  const known = new Set<NodeId.NodeId>()
  let attached: () => ReadonlyArray<NodeId.NodeId> = () => []
  const isKnown = (node: NodeId.NodeId) => known.has(node) || attached().includes(node)
  const down = new Set<NodeId.NodeId>()
  let tracking = false
  let lastChange = 0
  const counts = {
    corruptedDelivered: 0,
    corruptedRejected: 0,
    replyRejected: 0,
    corruptedReplies: 0,
    hostileExpected: 0,
    hostileRejected: 0,
    rejectedTotal: 0
  }
  let pending: PendingDelivery | undefined
  let injecting = false
  /** The largest departed set any shard reported. */
  let departedPeak = 0

  const settleDelivery = () => {
    const p = pending
    pending = undefined
    if (p === undefined || !p.corrupted) return
    if (p.kind === "reply") {
      counts.corruptedReplies++
      return
    }
    counts.corruptedDelivered++
    if (p.rejected) counts.corruptedRejected++
    else if (!down.has(p.to)) violation("CorruptedFrameAccepted", `${p.kind} ${p.from}→${p.to} delivered at ${p.at}`)
  }

  const observer: TestCluster.Observer = {
    onViews: (stateName, node, views) => {
      const t = now()
      hash.str(stateName)
      hash.str(node)
      hash.num(t)
      const byNode = latest.get(stateName)
      if (byNode === undefined) return
      const previous = byNode.get(node)
      for (const [source, entry] of views) {
        const before = previous?.get(source)
        if (before === entry) continue
        hash.str(source)
        hash.num(entry.generation.incarnation)
        hash.num(entry.generation.age)
        hash.num(entry.syncedAt)
        hash.str(JSON.stringify(entry.value))
        if (tracking && (before === undefined || !Generation.equals(before.generation, entry.generation))) lastChange = t
        if (!isKnown(source)) violation("ViewMapOverCap", `${node} holds a view of unknown node ${source} (${stateName})`)
        if (source === node) continue
        const k = key3(stateName, node, source)
        const high = highWater.get(k)
        if (high !== undefined && Generation.isNewer(high, entry.generation)) {
          violation(
            "GenerationDecreased",
            `${node} went from ${Generation.format(high)} to ${Generation.format(entry.generation)} of ${source} (${stateName})`
          )
        } else {
          highWater.set(k, entry.generation)
        }
        const a = key2(stateName, source)
        const max = accepted.get(a)
        if (max === undefined || Generation.isNewer(entry.generation, max)) accepted.set(a, entry.generation)
        if (down.has(source) && removed.has(k)) {
          violation("DepartedViewReappeared", `${node} holds ${Generation.format(entry.generation)} of departed ${source} (${stateName})`)
        }
      }
      if (previous !== undefined && tracking) {
        for (const source of previous.keys()) if (!views.has(source)) lastChange = t
      }
      for (const d of down) if (!views.has(d)) removed.add(key3(stateName, node, d))
      if (views.size > known.size && views.size > attached().length) {
        violation("ViewMapOverCap", `${node} holds ${views.size} views of ${known.size} nodes`)
      }
      byNode.set(node, views)
    },
    onRejectedFrame: (node, from, error) => {
      counts.rejectedTotal++
      hash.str("rejected")
      hash.str(node)
      hash.str(from)
      hash.str(error._tag)
      if (injecting) {
        counts.hostileRejected++
        return
      }
      const p = pending
      if (p !== undefined && p.to === node && p.from === from && !p.rejected && p.kind !== "reply") {
        p.rejected = true
        if (!p.corrupted) violation("ValidFrameRejected", `${p.kind} ${from}→${node}: ${error.message}`)
        return
      }
      counts.replyRejected++
    },
    onDeparted: (stateName, node, sizes) => {
      if (sizes.departed > departedPeak) departedPeak = sizes.departed
      if (sizes.departed > sizes.capacity || sizes.remembered > sizes.capacity) {
        violation(
          "DepartedSetOverCap",
          `${node} (${stateName}) remembers ${sizes.departed} departed and ${sizes.remembered} last-seen peers, capacity ${sizes.capacity}`
        )
      }
    }
  }

  const trace = (event: SimNetwork.TraceEvent) => {
    hash.str(event._tag)
    hash.num(event.at)
    hash.str(event.frame.from)
    hash.str(event.frame.to)
    hash.str(event.frame.kind)
    switch (event._tag) {
      case "Sent":
        return hash.bytes(event.frame.frame)
      case "Dropped":
        return hash.str(event.reason)
      case "Delivered": {
        settleDelivery()
        if (event.corrupted) hash.bytes(event.bytes)
        pending = {
          from: event.frame.from,
          to: event.frame.to,
          kind: event.frame.kind,
          corrupted: event.corrupted,
          at: event.at,
          rejected: false
        }
      }
    }
  }

  return {
    hash,
    safety,
    violation,
    observer,
    departedPeak: () => departedPeak,
    trace,
    counts,
    latest,
    accepted,
    known,
    settleDelivery,
    setAttached: (nodes: () => ReadonlyArray<NodeId.NodeId>) => {
      attached = nodes
    },
    acceptedOf: (state: string, owner: NodeId.NodeId) => accepted.get(key2(state, owner)),
    nodeUp: (node: NodeId.NodeId) => {
      known.add(node)
      down.delete(node)
      for (const k of [...removed]) if (k.endsWith(`\u0000${node}`)) removed.delete(k)
      // A restarted node is a new observer: replicas are not persisted, what it accepted before is gone.
      for (const k of [...highWater.keys()]) if (k.split("\u0000")[1] === node) highWater.delete(k)
    },
    /** The highest generation of `owner` held by an observer that is up now (in its current life). */
    acceptedNow: (state: string, owner: NodeId.NodeId) => {
      let max: Generation.Generation | undefined
      for (const [k, g] of highWater) {
        const [s, observer, source] = k.split("\u0000")
        if (s !== state || source !== owner || down.has(observer as NodeId.NodeId)) continue
        if (max === undefined || Generation.isNewer(g, max)) max = g
      }
      return max
    },
    nodeDown: (node: NodeId.NodeId) => {
      down.add(node)
      for (const byNode of latest.values()) byNode.delete(node)
    },
    startTracking: () => {
      tracking = true
      lastChange = now()
    },
    lastChange: () => lastChange,
    setInjecting: (on: boolean) => {
      settleDelivery()
      injecting = on
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile frames
// ---------------------------------------------------------------------------------------------

/**
 * A frame around arbitrary message bytes with a correct length prefix,
 * protocol version and checksum, so that the bytes reach the message decoder
 * (for hostile-frame and fuzzing tests).
 *
 * @category constructors
 * @since 0.1.0
 */
export const frameWithBody = (body: Uint8Array, version: number = PROTOCOL_VERSION): Uint8Array => {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + body.length)
  const view = new DataView(frame.buffer)
  view.setUint32(0, frame.length - 4)
  frame[4] = version
  view.setUint32(5, crc32(body))
  frame.set(body, FRAME_HEADER_BYTES)
  return frame
}

const frameOf = (message: FullSnapshot | RequestSnapshot): Uint8Array =>
  Result.getOrThrow(encodeFrame(message, Number.MAX_SAFE_INTEGER))

/**
 * The hostile frames `hostile` sends from `from` to every node, with how each
 * must be handled: `rejected` (counted by the registry and seen by the
 * observer), `unknownState` (counted, ignored) or `unsupportedVersion`
 * (counted by the counter's shard, the held view kept).
 *
 * @category constructors
 * @since 0.1.0
 */
export const hostileFrames = (
  from: NodeId.NodeId,
  random: Prng.Prng
): ReadonlyArray<{ readonly name: string; readonly frame: Uint8Array; readonly outcome: "rejected" | "unknownState" | "unsupportedVersion" }> => {
  const snapshot = (stateName: string, wireVersion: number, source: NodeId.NodeId = from) =>
    new FullSnapshot({
      stateName,
      source,
      generation: Generation.make(Number.MAX_SAFE_INTEGER - 1, 1_000_000),
      wireVersion,
      createdAt: 0,
      modifiedAt: 0,
      payload: new Uint8Array([1, 2, 3])
    })
  const huge = new Uint8Array(FRAME_HEADER_BYTES)
  new DataView(huge.buffer).setUint32(0, 0xffff_fff0)
  huge[4] = PROTOCOL_VERSION
  const valid = frameOf(new RequestSnapshot({ stateName: Fixtures.Counter.name, source: from, wireVersion: 1 }))
  // A valid body whose first byte, the message tag, names no message.
  const unknownTag = valid.slice(FRAME_HEADER_BYTES)
  unknownTag[0] = 0x7f
  const wrongProtocol = valid.slice()
  wrongProtocol[4] = PROTOCOL_VERSION + 1
  const flipped = valid.slice()
  const bit = random.int(FRAME_HEADER_BYTES * 8, flipped.length * 8 - 1)
  flipped[bit >>> 3] ^= 1 << (bit & 7)
  return [
    { name: "huge length prefix", frame: huge, outcome: "rejected" },
    { name: "unknown message tag", frame: frameWithBody(unknownTag), outcome: "rejected" },
    { name: "wrong protocol version", frame: wrongProtocol, outcome: "rejected" },
    { name: "forged source", frame: frameOf(snapshot(Fixtures.Counter.name, 1, NodeId.make("node-forged"))), outcome: "rejected" },
    { name: "truncated", frame: valid.slice(0, random.int(1, valid.length - 1)), outcome: "rejected" },
    { name: "bit flip", frame: flipped, outcome: "rejected" },
    { name: "unknown state", frame: frameOf(snapshot("no_such_state", 1)), outcome: "unknownState" },
    { name: "unknown wire version", frame: frameOf(snapshot(Fixtures.Counter.name, 99)), outcome: "unsupportedVersion" }
  ]
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

const START = 1_700_000_000_000

/** Structural equality of JSON-like values. */
const same = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  for (const k of ka) if (!same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  return true
}

interface NodeMeta {
  /** Last acknowledged state and generation, per state. */
  readonly acked: Map<string, { readonly generation: Generation.Generation; readonly state: unknown }>
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
    const checker = makeChecker(() => now() - START)
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
    const durability: Array<Violation> = []
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
          const accepted = checker.acceptedOf(state, node.id)
          if (accepted !== undefined && Generation.isNewer(accepted, local.generation)) {
            durability.push({
              kind: "RestartBelowAccepted",
              at: now() - START,
              detail: `${node.id} restarted at ${Generation.format(local.generation)} of ${state}, a peer accepted ${
                Generation.format(accepted)
              }`
            })
          }
          const acked = m.acked.get(state)
          if (acked === undefined) continue
          const owned = yield* h.state
          if (
            Generation.isNewer(acked.generation, local.generation) ||
            (Generation.equals(acked.generation, local.generation) && !same(owned, acked.state))
          ) {
            durability.push({
              kind: "AcknowledgedMutationLost",
              at: now() - START,
              detail: `${node.id} restarted at ${Generation.format(local.generation)} of ${state}, acknowledged ${
                Generation.format(acked.generation)
              }`
            })
          }
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
        for (const [o, own] of owners) {
          const held = map.get(o)
          if (held === undefined) divergent.push(`${n.id} has no view of ${o} (${s})`)
          else if (!Generation.equals(held.generation, own.generation) || !same(held.value, own.value)) {
            divergent.push(
              `${n.id} holds ${Generation.format(held.generation)} of ${o}, owner at ${Generation.format(own.generation)} (${s})`
            )
          }
        }
        for (const k of map.keys()) if (!upIds.has(k)) divergent.push(`${n.id} still holds departed ${k} (${s})`)
      }
      // Durability at the end: every owner at or above what its live peers accepted of it (a peer that
      // restarted since forgot, and an owner whose store was rolled back has no one to tell it).
      for (const [o, own] of owners) {
        const accepted = checker.acceptedNow(s, o)
        if (accepted !== undefined && Generation.isNewer(accepted, own.generation)) {
          durability.push({
            kind: "EndedBelowAccepted",
            at: now() - START,
            detail: `${o} ends at ${Generation.format(own.generation)} of ${s}, a peer accepted ${Generation.format(accepted)}`
          })
        }
      }
    }
    const converged = divergent.length === 0
    const expected = !(strategy === "push" && !scenario.readers && fault === "lostLastWrite" && up.length >= 2 &&
      lostWrite !== undefined)
    const boundMillis = livenessBound(strategy, scenario.readers)
    const convergenceMillis = converged ? Math.max(0, checker.lastChange() - (healAt - START)) : undefined
    const livenessOk = converged === expected &&
      (!converged || !expected || boundMillis === undefined || (convergenceMillis ?? 0) <= boundMillis)

    // Outstanding workload effects (on nodes that crashed mid-way) end with the scope.
    for (const fiber of fibers) {
      const exit = fiber.pollUnsafe()
      if (exit !== undefined) defectOf(exit, "workload")
    }
    if (checker.counts.corruptedRejected !== checker.counts.corruptedDelivered) {
      // Already reported one by one; keep the totals in the history.
      checker.hash.str(`corrupted ${checker.counts.corruptedDelivered} rejected ${checker.counts.corruptedRejected}`)
    }
    if (checker.counts.replyRejected > checker.counts.corruptedReplies) {
      checker.violation(
        "ValidFrameRejected",
        `${checker.counts.replyRejected} rejected replies, only ${checker.counts.corruptedReplies} corrupted`
      )
    }
    const stats = network.stats()
    checker.hash.num(stats.sent)
    checker.hash.num(stats.delivered)
    checker.hash.num(stats.dropped)
    checker.hash.num(mutations.acknowledged)
    const safety = [...checker.safety]
    return {
      seed,
      scenario,
      safety,
      durability,
      liveness: { expected, converged, convergenceMillis, boundMillis, ok: livenessOk, divergent },
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
      ok: safety.length === 0 && durability.length === 0 && livenessOk
    } satisfies RunResult
  })

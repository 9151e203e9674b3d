/**
 * The checker of a run: the guarantees it checks (`Violation`), what a run
 * found (`RunResult`, `describe`), and the checks themselves. Safety is
 * checked online, on every published view map, every frame the network
 * traces and every rejection a registry reports (`make`); durability when an
 * owner restarts from an intact store (`checkRestart`) and at the end
 * (`checkEnd`); liveness at the end of the quiet window (`divergence`,
 * `liveness`). Everything it sees also goes into the run's history hash.
 *
 * @since 0.1.0
 */
import { Result } from "effect"
import * as Generation from "../../Generation.ts"
import { decodeFrame } from "../../internal/codec.ts"
import { ackProtocolVersion, MaxFrameBytes } from "../../SyncMessage.ts"
import type * as NodeId from "../../NodeId.ts"
import type { StateView, ViewMap } from "../../StateView.ts"
import type * as SimDetector from "../SimDetector.ts"
import type * as SimNetwork from "../SimNetwork.ts"
import type * as TestCluster from "../TestCluster.ts"
import * as HistoryHash from "./HistoryHash.ts"
import type { ResolvedScenario } from "./Scenario.ts"
import { livenessBound, stateNames } from "./Scenario.ts"

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
    | "AcknowledgedNotHeld"
    | "AckNotLive"
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
  /**
   * Awaited writes (scenarios with `awaits`): how many awaited acknowledgements, how many returned
   * acknowledged, timed out or could not be satisfied, and the probes after the final heal (each
   * node's awaited write, which must be acknowledged: `AckNotLive` otherwise).
   */
  readonly acks: {
    readonly awaited: number
    readonly acknowledged: number
    readonly timedOut: number
    readonly unsatisfiable: number
    readonly probes: number
    readonly probesAcknowledged: number
  }
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
  /** What the failure detector did (scenarios with `detector`; `undefined` without one). */
  readonly detector: SimDetector.Stats | undefined
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

/** Structural equality of JSON-like values. */
export const same = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  for (const k of ka) if (!same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  return true
}

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

/**
 * A run's checker, on the run's simulated time (ms from its start): install
 * `observer` on every node and `trace` on the network, report nodes going up
 * and down, and read the violations and counts it gathered.
 */
export const make = (now: () => number) => {
  const hash = HistoryHash.make()
  const safety: Array<Violation> = []
  const violation = (kind: Violation["kind"], detail: string) => {
    if (safety.length < 1000) safety.push({ kind, at: now(), detail })
  }
  const durability: Array<Violation> = []
  const durable = (kind: Violation["kind"], detail: string) => {
    durability.push({ kind, at: now(), detail })
  }
  /** state → observer → last published map. */
  const latest = new Map<string, Map<NodeId.NodeId, ViewMap<unknown>>>()
  for (const s of stateNames) latest.set(s, new Map())
  /** Highest generation each observer accepted of each owner, across departures: by state and owner, then by observer. */
  const highWater = new Map<string, Map<NodeId.NodeId, Generation.Generation>>()
  /** Highest generation any peer accepted of each owner. */
  const accepted = new Map<string, Generation.Generation>()
  /** Observers that dropped a departed owner's view (while it is away). */
  const removed = new Set<string>()
  const known = new Set<NodeId.NodeId>()
  let attached: () => ReadonlyArray<NodeId.NodeId> = () => []
  /** The nodes the checker watches (all unless a large run samples them). */
  let watches: (node: NodeId.NodeId) => boolean = () => true
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
  /** (state, acknowledger, owner) → the newest generation the acknowledger ever acknowledged to the owner. */
  const acksSent = new Map<string, { readonly generation: Generation.Generation; readonly life: number }>()
  /** How many times each node came up: an acknowledgement made in an earlier life vouches for no view held now. */
  const lives = new Map<NodeId.NodeId, number>()

  /**
   * An `Acknowledge` leaving a peer: at that moment the peer must hold the owner's view at the generation it
   * acknowledges or newer, in the map it published last (it publishes before it acknowledges).
   */
  const ackSent = (sent: SimNetwork.SentFrame) => {
    if (!watches(sent.from)) return
    if (sent.frame.length <= 4 || sent.frame[4] !== ackProtocolVersion) return
    const decoded = decodeFrame(sent.frame, MaxFrameBytes.defaultValue(), sent.from)
    if (Result.isFailure(decoded) || decoded.success._tag !== "Acknowledge") return
    const { generation, stateName } = decoded.success
    const held = latest.get(stateName)?.get(sent.from)?.get(sent.to)
    if (held === undefined || Generation.isNewer(generation, held.generation)) {
      violation(
        "AcknowledgedNotHeld",
        `${sent.from} acknowledged ${Generation.format(generation)} of ${sent.to} (${stateName}) holding ${
          held === undefined ? "no view" : Generation.format(held.generation)
        }`
      )
    }
    const k = key3(stateName, sent.from, sent.to)
    const before = acksSent.get(k)
    if (before === undefined || Generation.isNewer(generation, before.generation)) {
      acksSent.set(k, { generation, life: lives.get(sent.from) ?? 0 })
    }
  }

  const settleDelivery = () => {
    const p = pending
    pending = undefined
    if (p === undefined || !p.corrupted) return
    if (p.kind === "reply") {
      counts.corruptedReplies++
      return
    }
    if (!watches(p.to)) return
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
        const a = key2(stateName, source)
        let observers = highWater.get(a)
        if (observers === undefined) highWater.set(a, observers = new Map())
        const high = observers.get(node)
        if (high !== undefined && Generation.isNewer(high, entry.generation)) {
          violation(
            "GenerationDecreased",
            `${node} went from ${Generation.format(high)} to ${Generation.format(entry.generation)} of ${source} (${stateName})`
          )
        } else {
          observers.set(node, entry.generation)
        }
        const max = accepted.get(a)
        if (max === undefined || Generation.isNewer(entry.generation, max)) accepted.set(a, entry.generation)
        if (down.has(source) && removed.has(k)) {
          violation("DepartedViewReappeared", `${node} holds ${Generation.format(entry.generation)} of departed ${source} (${stateName})`)
        }
      }
      if (previous !== undefined && tracking) {
        for (const source of previous.keys()) if (!views.has(source)) lastChange = t
      }
      // Dropped: the observer held the departed node's view and no longer does. One that never held it
      // (its join snapshot still queued when the node left) may apply that snapshot before it hears of the
      // leave, which is a first appearance, not a reappearance.
      for (const d of down) if (!views.has(d) && previous?.has(d) === true) removed.add(key3(stateName, node, d))
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
        ackSent(event.frame)
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
    durability,
    durable,
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
    /** Restricts the rules judged at each node to the nodes `watched` accepts (a sample of a large cluster). */
    setWatched: (watched: (node: NodeId.NodeId) => boolean) => {
      watches = watched
    },
    watches: (node: NodeId.NodeId) => watches(node),
    acceptedOf: (state: string, owner: NodeId.NodeId) => accepted.get(key2(state, owner)),
    /**
     * An awaited write of `owner` returned acknowledged by `acknowledgers`: each of them sent `owner` an
     * acknowledgement of `generation` or newer (checked against its views as it left, by `trace`), and
     * each of them that is up still holds the owner's view at that generation or newer, unless it
     * restarted since (a new life starts without views). `AcknowledgedNotHeld` if not.
     */
    acknowledged: (
      state: string,
      owner: NodeId.NodeId,
      generation: Generation.Generation,
      acknowledgers: ReadonlyArray<NodeId.NodeId>
    ) => {
      hash.str(`acknowledged ${owner} ${state} ${Generation.format(generation)} by ${acknowledgers.join(",")}`)
      for (const node of acknowledgers) {
        const sent = acksSent.get(key3(state, node, owner))
        if (sent === undefined || Generation.isNewer(generation, sent.generation)) {
          violation(
            "AcknowledgedNotHeld",
            `${owner} counted ${node} for ${Generation.format(generation)} (${state}), which acknowledged ${
              sent === undefined ? "nothing" : Generation.format(sent.generation)
            }`
          )
          continue
        }
        if (down.has(node) || sent.life !== (lives.get(node) ?? 0)) continue
        const held = latest.get(state)?.get(node)?.get(owner)
        if (held === undefined || Generation.isNewer(generation, held.generation)) {
          violation(
            "AcknowledgedNotHeld",
            `${node} acknowledged ${Generation.format(generation)} of ${owner} (${state}) but holds ${
              held === undefined ? "no view" : Generation.format(held.generation)
            }`
          )
        }
      }
    },
    nodeUp: (node: NodeId.NodeId) => {
      lives.set(node, (lives.get(node) ?? 0) + 1)
      known.add(node)
      down.delete(node)
      for (const k of [...removed]) if (k.endsWith(`\u0000${node}`)) removed.delete(k)
      // A restarted node is a new observer: replicas are not persisted, what it accepted before is gone.
      for (const observers of highWater.values()) observers.delete(node)
    },
    /** The highest generation of `owner` held by an observer that is up now (in its current life). */
    acceptedNow: (state: string, owner: NodeId.NodeId) => {
      let max: Generation.Generation | undefined
      for (const [observer, g] of highWater.get(key2(state, owner)) ?? []) {
        if (down.has(observer)) continue
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

/**
 * A run's checker.
 */
export type Checker = ReturnType<typeof make>

// ---------------------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------------------

/** A mutation its owner acknowledged: the generation and state the commit returned. */
export interface Acknowledged {
  readonly generation: Generation.Generation
  readonly state: unknown
}

/**
 * On a restart from an intact store: the owner is back at or above every
 * generation a peer accepted of it.
 */
export const checkRestartAccepted = (
  checker: Checker,
  node: NodeId.NodeId,
  state: string,
  local: Generation.Generation
): void => {
  const accepted = checker.acceptedOf(state, node)
  if (accepted !== undefined && Generation.isNewer(accepted, local)) {
    checker.durable(
      "RestartBelowAccepted",
      `${node} restarted at ${Generation.format(local)} of ${state}, a peer accepted ${Generation.format(accepted)}`
    )
  }
}

/**
 * On a restart from an intact store: the owner is back with its last
 * acknowledged mutation (`owned` is its state, at generation `local`).
 */
export const checkRestartAcknowledged = (
  checker: Checker,
  node: NodeId.NodeId,
  state: string,
  local: Generation.Generation,
  owned: unknown,
  acked: Acknowledged
): void => {
  if (
    Generation.isNewer(acked.generation, local) ||
    (Generation.equals(acked.generation, local) && !same(owned, acked.state))
  ) {
    checker.durable(
      "AcknowledgedMutationLost",
      `${node} restarted at ${Generation.format(local)} of ${state}, acknowledged ${Generation.format(acked.generation)}`
    )
  }
}

/**
 * At the end: every owner at or above what its live peers accepted of it (a
 * peer that restarted since forgot, and an owner whose store was rolled back
 * has no one to tell it). `owners` maps each live owner to its own view.
 */
export const checkEnd = (
  checker: Checker,
  state: string,
  owners: ReadonlyMap<NodeId.NodeId, StateView<unknown>>
): void => {
  for (const [o, own] of owners) {
    const accepted = checker.acceptedNow(state, o)
    if (accepted !== undefined && Generation.isNewer(accepted, own.generation)) {
      checker.durable(
        "EndedBelowAccepted",
        `${o} ends at ${Generation.format(own.generation)} of ${state}, a peer accepted ${Generation.format(accepted)}`
      )
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Liveness
// ---------------------------------------------------------------------------------------------

/**
 * Where `observer`'s view map of `state` differs from the owners' own views
 * (`owners`, every live node): a missing or different view, or a view of a
 * node that is no longer up.
 */
export const divergence = (
  state: string,
  observer: NodeId.NodeId,
  map: ViewMap<unknown>,
  owners: ReadonlyMap<NodeId.NodeId, StateView<unknown>>,
  up: ReadonlySet<NodeId.NodeId>
): Array<string> => {
  const divergent: Array<string> = []
  for (const [o, own] of owners) {
    const held = map.get(o)
    if (held === undefined) divergent.push(`${observer} has no view of ${o} (${state})`)
    else if (!Generation.equals(held.generation, own.generation) || !same(held.value, own.value)) {
      divergent.push(
        `${observer} holds ${Generation.format(held.generation)} of ${o}, owner at ${Generation.format(own.generation)} (${state})`
      )
    }
  }
  for (const k of map.keys()) if (!up.has(k)) divergent.push(`${observer} still holds departed ${k} (${state})`)
  return divergent
}

/**
 * The liveness verdict at the end of the quiet window: whether the scenario
 * was expected to converge (pure active push without readers never repairs
 * a lost last write), whether it did, and how long after the final heal
 * (`healedAt`, run time) the last view changed, against the shape's bound.
 */
export const liveness = (
  checker: Checker,
  scenario: ResolvedScenario,
  outcome: {
    readonly divergent: ReadonlyArray<string>
    readonly nodesUp: number
    readonly lostWrite: boolean
    readonly healedAt: number
  }
): RunResult["liveness"] => {
  const { fault, readers, strategy } = scenario
  const divergent = outcome.divergent
  const converged = divergent.length === 0
  const expected = !(strategy === "push" && !readers && fault === "lostLastWrite" && outcome.nodesUp >= 2 &&
    outcome.lostWrite)
  const boundMillis = livenessBound(strategy, readers, scenario.detector)
  const convergenceMillis = converged ? Math.max(0, checker.lastChange() - outcome.healedAt) : undefined
  const ok = converged === expected &&
    (!converged || !expected || boundMillis === undefined || (convergenceMillis ?? 0) <= boundMillis)
  return { expected, converged, convergenceMillis, boundMillis, ok, divergent }
}

/**
 * The totals at the end of a run: corrupted frames (already reported one by
 * one) enter the history hash, and more rejected replies than corrupted
 * ones is a `ValidFrameRejected`.
 */
export const checkTotals = (checker: Checker): void => {
  const counts = checker.counts
  if (counts.corruptedRejected !== counts.corruptedDelivered) {
    checker.hash.str(`corrupted ${counts.corruptedDelivered} rejected ${counts.corruptedRejected}`)
  }
  if (counts.replyRejected > counts.corruptedReplies) {
    checker.violation("ValidFrameRejected", `${counts.replyRejected} rejected replies, only ${counts.corruptedReplies} corrupted`)
  }
}

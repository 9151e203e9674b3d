/**
 * The faults of a run, drawn from its `faults` stream: what each `Fault`
 * does to the network and the nodes as a `Plan` (started at the first
 * quarter of the workload, stepped with every mutation after that, healed at
 * the end), and the node faults plans are made of: crash, restart (checking
 * durability when the node's store is intact), pause and resume.
 *
 * @since 0.1.0
 */
import { Duration, Effect } from "effect"
import type * as NodeId from "../../NodeId.ts"
import * as InMemoryPersistence from "../InMemoryPersistence.ts"
import type * as SimNetwork from "../SimNetwork.ts"
import type * as TestCluster from "../TestCluster.ts"
import * as Checker from "./Checker.ts"
import type { RunContext } from "./RunContext.ts"
import type { Fault } from "./Scenario.ts"
import { stateNames, timing } from "./Scenario.ts"

// ---------------------------------------------------------------------------------------------
// Node faults
// ---------------------------------------------------------------------------------------------

/** Crashes a node that is up (resuming it first if it is paused). */
export const crash = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode) {
  if (!ctx.cluster.isUp(node)) return
  if (ctx.paused.has(node.id)) yield* resume(ctx, node)
  yield* ctx.logging(ctx.cluster.crash(node))
  ctx.checker.nodeDown(node.id)
})

/**
 * Restarts a node that is down; back from an intact store, it must be at or
 * above everything it acknowledged and its peers accepted.
 */
export const restart = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode) {
  const { checker, cluster } = ctx
  if (cluster.isUp(node)) return
  const m = ctx.metaOf(node)
  if (node.store !== undefined && (node.store.failLoads || node.store.failNextLoads > 0)) m.tampered = true
  // Up for the checker before it starts: while it starts, its first snapshots may already be applied by
  // peers (in a large cluster its start takes more than one scheduler turn), and they are no departed views.
  checker.nodeUp(node.id)
  yield* ctx.logging(cluster.restart(node)).pipe(Effect.orDie)
  ctx.upSince.set(node.id, ctx.now())
  if (node.store === undefined || m.tampered) return
  for (const state of stateNames) {
    const h = yield* ctx.handleOn(node, state)
    const local = yield* h.local
    Checker.checkRestartAccepted(checker, node.id, state, local.generation)
    const acked = m.acked.get(state)
    if (acked === undefined) continue
    const owned = yield* h.state
    Checker.checkRestartAcknowledged(checker, node.id, state, local.generation, owned, acked)
  }
})

/** Stops a node that is up from processing, its timers frozen. */
export const pause = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode) {
  if (!ctx.cluster.isUp(node) || ctx.paused.has(node.id)) return
  ctx.paused.add(node.id)
  yield* ctx.network.pause(node.id)
})

/** Lets a paused node go on. */
export const resume = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode) {
  if (!ctx.paused.delete(node.id)) return
  yield* ctx.network.resume(node.id)
})

/** Every link back to perfect, every cut and partition healed. */
export const healLinks = (ctx: RunContext): Effect.Effect<void> =>
  Effect.sync(() => {
    ctx.network.resetLinks()
    ctx.network.heal()
  })

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

/** A fault's schedule: `start` once, `step` with every later mutation, `heal` at the end. */
export interface Plan {
  readonly start: Effect.Effect<void>
  readonly step: (i: number) => Effect.Effect<void>
  readonly heal: Effect.Effect<void>
}

const noop: Plan = { start: Effect.void, step: () => Effect.void, heal: Effect.void }

const shuffled = <A>(ctx: RunContext, items: ReadonlyArray<A>): Array<A> => {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = ctx.fr.int(0, i)
    const t = out[i]
    out[i] = out[j]
    out[j] = t
  }
  return out
}

const ids = (ctx: RunContext) => ctx.cluster.nodes.map((n) => n.id)

const victim = (ctx: RunContext) => ctx.fr.pick(ctx.cluster.nodes)

/** A fault of one random node, from the start of the window to the heal. */
const around = (
  ctx: RunContext,
  start: (ctx: RunContext, node: TestCluster.TestNode) => Effect.Effect<void>,
  end: (ctx: RunContext, node: TestCluster.TestNode) => Effect.Effect<void>
): Plan => {
  const node = victim(ctx)
  return { ...noop, start: start(ctx, node), heal: end(ctx, node) }
}

const linkFault = (ctx: RunContext, faults: Partial<SimNetwork.LinkFaults>): Plan => ({
  ...noop,
  start: Effect.sync(() => ctx.network.setDefaultLink(faults)),
  heal: healLinks(ctx)
})

/** The plan of a fault; its random choices (victims, variants) are drawn now, in this order. */
export const planOf = (ctx: RunContext, f: Fault): Plan => {
  const { checker, cluster, fr, network } = ctx
  switch (f) {
    case "none":
    case "versionSkew":
    case "lostLastWrite":
    case "hostile":
      return noop
    case "loss":
      return linkFault(ctx, { loss: 0.2 })
    case "duplication":
      return linkFault(ctx, { duplicate: 0.3 })
    case "delay":
      return linkFault(ctx, { delay: { min: 0, max: 200 } })
    case "corruption":
      return linkFault(ctx, { corrupt: 0.2 })
    case "partition":
      return {
        ...noop,
        start: Effect.sync(() => {
          const order = shuffled(ctx, ids(ctx))
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
        heal: healLinks(ctx)
      }
    case "asymmetricPartition":
      return {
        ...noop,
        start: Effect.sync(() => {
          const list = ids(ctx)
          for (const a of list) {
            for (const b of list) if (a !== b && fr.chance(0.4)) network.cut(a, b)
          }
        }),
        heal: healLinks(ctx)
      }
    case "clog": {
      const flapper = victim(ctx)
      return {
        ...noop,
        step: Effect.fnUntraced(function*(i) {
          const list = ids(ctx)
          if (list.length >= 2) {
            for (let k = 0; k < 2; k++) {
              const [a, b] = shuffled(ctx, list)
              yield* network.clog(a, b, Duration.millis(fr.int(100, 600)))
            }
          }
          if (i % 2 === 0) network.isolate(flapper.id)
          else network.heal()
        }),
        heal: healLinks(ctx)
      }
    }
    case "crash":
      return around(ctx, crash, restart)
    case "crashPersistent": {
      const node = victim(ctx)
      return {
        ...noop,
        start: crash(ctx, node),
        step: (i) => i % 3 === 1 ? restart(ctx, node) : i % 3 === 0 ? crash(ctx, node) : Effect.void,
        heal: restart(ctx, node)
      }
    }
    case "persistence": {
      const node = victim(ctx)
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
            yield* crash(ctx, node)
            yield* restart(ctx, node)
          })
        }
      }
      return {
        ...noop,
        start: crash(ctx, node),
        heal: Effect.gen(function*() {
          if (variant === 1) store.failNextLoads = 1
          else if (InMemoryPersistence.rollback(store, 2).length > 0) ctx.metaOf(node).tampered = true
          yield* restart(ctx, node)
          InMemoryPersistence.heal(store)
        })
      }
    }
    case "pause":
      return around(ctx, pause, resume)
    case "clockSkew": {
      const node = victim(ctx)
      return {
        ...noop,
        start: Effect.gen(function*() {
          for (const n of cluster.nodes) n.clockOffsetMillis = fr.int(-5000, 5000)
          yield* crash(ctx, node)
        }),
        heal: Effect.gen(function*() {
          // Back without its state, its clock a minute behind: the new incarnation must still win.
          node.clockOffsetMillis -= 60_000
          if (node.store !== undefined) {
            InMemoryPersistence.wipe(node.store)
            ctx.metaOf(node).tampered = true
          }
          yield* restart(ctx, node)
        })
      }
    }
    case "churn":
      return churnPlan(ctx)
    case "flap": {
      const node = victim(ctx)
      return {
        ...noop,
        step: (i) => Effect.sync(() => (i % 8 < 4 ? network.isolate(node.id) : network.heal())),
        heal: healLinks(ctx)
      }
    }
    case "slowPeer": {
      const node = victim(ctx)
      return {
        ...noop,
        start: Effect.sync(() => {
          for (const other of ids(ctx)) {
            if (other === node.id) continue
            network.setLink(other, node.id, { delay: { min: 300, max: timing.maxDelay }, capacity: 8 })
            network.setLink(node.id, other, { delay: { min: 300, max: timing.maxDelay } })
          }
        }),
        step: (i) => i % 2 === 0 ? pause(ctx, node) : resume(ctx, node),
        heal: Effect.andThen(resume(ctx, node), healLinks(ctx))
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
      const chosen = shuffled(ctx, pool).slice(0, 3)
      checker.hash.str(`mix ${chosen.join(",")}`)
      // Link faults compose: each sets its own part of the default link.
      const plans = chosen.map((c) => planOf(ctx, c))
      return {
        start: Effect.forEach(plans, (p) => p.start, { discard: true }),
        step: (i) => Effect.forEach(plans, (p) => p.step(i), { discard: true }),
        heal: Effect.forEach(plans, (p) => p.heal, { discard: true })
      }
    }
  }
}

/**
 * `churn`: nodes leave (gracefully), come back with the same id, or join as
 * new nodes, `churnCycles` times over the fault window; the heal brings back
 * nodes that are away until the cluster has its starting size.
 */
const churnPlan = (ctx: RunContext): Plan => {
  const { checker, cluster, fr, scenario } = ctx
  const away: Array<TestCluster.TestNode> = []
  const cyclesPerStep = Math.ceil(scenario.churnCycles / Math.max(1, scenario.mutations - Math.floor(scenario.mutations / 4)))
  let done = 0
  return {
    ...noop,
    step: Effect.fnUntraced(function*() {
      for (let k = 0; k < cyclesPerStep && done < scenario.churnCycles; k++, done++) {
        const up = cluster.nodes
        if (up.length > 1 && (away.length === 0 || fr.chance(0.5))) {
          const leaving = fr.pick(up)
          yield* ctx.logging(cluster.removeNode(leaving))
          checker.nodeDown(leaving.id)
          away.push(leaving)
        } else if (away.length > 0 && fr.chance(0.7)) {
          const back = away.splice(fr.int(0, away.length - 1), 1)[0]
          yield* restart(ctx, back)
        } else {
          const added = yield* ctx.logging(cluster.addNode()).pipe(Effect.orDie)
          ctx.all.push(added)
          ctx.markUp(added)
        }
        yield* ctx.advance(fr.int(2, 20))
      }
    }),
    heal: Effect.gen(function*() {
      while (cluster.nodes.length < scenario.nodes && away.length > 0) yield* restart(ctx, away.shift()!)
    })
  }
}

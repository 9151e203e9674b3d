/**
 * The workload of a run, drawn from its `workload` stream: mutations of
 * either state on a node (the counter incremented, the resource changed by a
 * random delta), recorded as acknowledged or failed, and bounded-staleness
 * reads, each checked as it answers: a read that succeeds returns no view
 * older than `maxStaleness` or with a pending change, and lacks no member
 * that has been up, with the reader, for longer than `pullTimeout`.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Exit } from "effect"
import * as Generation from "../../Generation.ts"
import type * as NodeId from "../../NodeId.ts"
import type * as StateRegistry from "../../StateRegistry.ts"
import * as Fixtures from "../Fixtures.ts"
import type * as TestCluster from "../TestCluster.ts"
import type { RunContext } from "./RunContext.ts"
import type { StateName } from "./Scenario.ts"
import { timing } from "./Scenario.ts"

/** One mutation of `state` on `node`, counted and hashed; an acknowledged one is remembered for durability. */
export const mutate = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode, state: StateName) {
  const { checker, mutations, work } = ctx
  mutations.attempted++
  const h = yield* ctx.handleOn(node, state)
  const m = ctx.metaOf(node)
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
  } else if (!ctx.defectOf(exit, `mutate on ${node.id}`)) mutations.failed++
})

/** One bounded-staleness read of `state` on `node`, checked as it answers, counted and hashed. */
export const read = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode, state: StateName) {
  const { checker, cluster, upSince } = ctx
  const h = yield* ctx.handleOn(node, state)
  const started = ctx.now()
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
    const t = ctx.monotonic()
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
  if (Exit.isSuccess(exit)) ctx.reads.ok++
  else if (!ctx.defectOf(exit, `read on ${node.id}`)) ctx.reads.stalePeer++
})

/** Either state, evenly. */
export const pickState = (ctx: RunContext): StateName => ctx.work.chance(0.5) ? Fixtures.Counter.name : Fixtures.NodeResource.name

/**
 * The workload of a run, drawn from its `workload` stream: mutations of
 * either state on a node (the counter incremented, the resource changed by a
 * random delta), recorded as acknowledged or failed (with `awaits`, half of
 * them await acknowledgements, each checked against the acknowledgers'
 * views as it returns), and bounded-staleness
 * reads, each checked as it answers: a read that succeeds returns no view
 * older than `maxStaleness` or with a pending change, and lacks no member
 * that has been up, with the reader, for longer than `pullTimeout` (with the
 * failure detector: and that the reader held as a member before and after
 * the read, since a member it declared down is not one it must answer for).
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Exit, Fiber, Option } from "effect"
import { ClusterEvents } from "../../ClusterEvents.ts"
import * as Generation from "../../Generation.ts"
import type * as NodeId from "../../NodeId.ts"
import type * as StateRegistry from "../../StateRegistry.ts"
import * as SyncMessage from "../../SyncMessage.ts"
import * as Fixtures from "../Fixtures.ts"
import type * as TestCluster from "../TestCluster.ts"
import type { RunContext } from "./RunContext.ts"
import type { StateName } from "./Scenario.ts"
import { timing } from "./Scenario.ts"

/**
 * One mutation of `state` on `node`, counted and hashed; an acknowledged one is remembered for durability.
 * `awaitable: false` never awaits acknowledgements (a mutation the script runs in line, behind cut links).
 */
export const mutate = Effect.fnUntraced(function*(
  ctx: RunContext,
  node: TestCluster.TestNode,
  state: StateName,
  awaitable: boolean = true
) {
  const { checker, mutations, work } = ctx
  mutations.attempted++
  const h = yield* ctx.handleOn(node, state)
  const m = ctx.metaOf(node)
  const change: Fixtures.NodeResourceChange = {
    cpuPercent: work.int(0, 100),
    ...(work.chance(0.5) ? { memoryUsedMiB: work.int(0, 4096) } : {}),
    ...(work.chance(0.2) ? { tags: [work.pick(["a", "b", "gpu", "eu"])] } : {})
  }
  // Drawn only in runs with awaited writes: the workload stream of the others stays as it was.
  const awaited: StateRegistry.MutateOptions | undefined = ctx.scenario.awaits && awaitable && work.chance(0.5)
    ? { await: { peers: work.pick<StateRegistry.AwaitOptions["peers"]>(["majority", "all", 1]), timeout: timing.ackTimeout } }
    : undefined
  const simple = h as unknown as StateRegistry.SimpleHandle<{ readonly value: number }>
  const delta = h as unknown as StateRegistry.DeltaHandle<
    Fixtures.NodeResourceState,
    Fixtures.NodeResourceView,
    Fixtures.NodeResourceChange
  >
  const increment = (s: { readonly value: number }) => ({ value: s.value + 1 })
  const update = (s: Fixtures.NodeResourceState) => Fixtures.updateResource(s, change)
  const effect = state === Fixtures.Counter.name
    ? (awaited === undefined ? simple.mutate(increment) : simple.mutate(increment, awaited))
    : (awaited === undefined ? delta.mutateWithDelta(update) : delta.mutateWithDelta(update, awaited))
  const exit = yield* Effect.exit(effect as Effect.Effect<StateRegistry.Committed<unknown>, unknown>)
  checker.hash.str(`mutate ${node.id} ${state} ${Exit.isSuccess(exit) ? Generation.format(exit.value.generation) : "failed"}`)
  if (awaited !== undefined) awaitedOutcome(ctx, node, state, exit)
  if (Exit.isSuccess(exit)) {
    mutations.acknowledged++
    m.acked.set(state, { generation: exit.value.generation, state: exit.value.state })
  } else if (!ctx.defectOf(exit, `mutate on ${node.id}`)) mutations.failed++
})

/** Counts an awaited write's outcome and checks that its acknowledgers hold it. */
const awaitedOutcome = (
  ctx: RunContext,
  node: TestCluster.TestNode,
  state: StateName,
  exit: Exit.Exit<StateRegistry.Committed<unknown>, unknown>
): void => {
  ctx.acks.awaited++
  if (Exit.isSuccess(exit)) {
    const result = exit.value as StateRegistry.Acknowledged<unknown>
    ctx.acks.acknowledged++
    ctx.checker.acknowledged(state, node.id, result.generation, result.acknowledgedBy)
    return
  }
  const error = Cause.findErrorOption(exit.cause)
  if (Option.isSome(error)) {
    const tag = (error.value as { readonly _tag?: string })._tag
    if (tag === "AckTimeout") ctx.acks.timedOut++
    else if (tag === "AckUnsatisfiable") ctx.acks.unsatisfiable++
  }
}

/**
 * After the final heal, every node's awaited write to the counter must be acknowledged by every other
 * member that speaks acknowledgements (`AckNotLive` otherwise): links are perfect by then, so it needs
 * one round trip; it is given the ack timeout.
 */
export const probeAcks = Effect.fnUntraced(function*(ctx: RunContext) {
  const { checker, cluster } = ctx
  const up = cluster.nodes
  for (const node of up) {
    if (node.syncProtocol < SyncMessage.ackProtocolVersion) continue
    const peers = up.filter((n) => n !== node && n.syncProtocol >= SyncMessage.ackProtocolVersion).length
    if (peers === 0) continue
    ctx.acks.probes++
    const h = (yield* ctx.handleOn(node, Fixtures.Counter.name)) as unknown as StateRegistry.SimpleHandle<{ readonly value: number }>
    const fiber = yield* Effect.forkChild(
      h.mutate((s) => ({ value: s.value + 1 }), { await: { peers, timeout: timing.ackTimeout } })
    )
    yield* cluster.settle
    if (fiber.pollUnsafe() === undefined) yield* ctx.advance(timing.ackTimeout)
    const exit = yield* Fiber.await(fiber)
    checker.hash.str(`probe ${node.id} ${Exit.isSuccess(exit) ? exit.value.acknowledged : "failed"}`)
    if (Exit.isSuccess(exit)) {
      ctx.acks.probesAcknowledged++
      checker.acknowledged(Fixtures.Counter.name, node.id, exit.value.generation, exit.value.acknowledgedBy)
      ctx.metaOf(node).acked.set(Fixtures.Counter.name, { generation: exit.value.generation, state: exit.value.state })
    } else {
      checker.violation("AckNotLive", `${node.id}'s awaited write after the heal failed: ${Cause.pretty(exit.cause).split("\n")[0]}`)
    }
  }
})

/** One bounded-staleness read of `state` on `node`, checked as it answers, counted and hashed. */
export const read = Effect.fnUntraced(function*(ctx: RunContext, node: TestCluster.TestNode, state: StateName) {
  const { checker, cluster, upSince } = ctx
  const h = yield* ctx.handleOn(node, state)
  const started = ctx.now()
  // Members up (with the reader) for a while before the read: their views must be in a fresh answer.
  const settled = (id: NodeId.NodeId) => (upSince.get(id) ?? Infinity) <= started - timing.pullTimeout
  const expectedMembers = settled(node.id) ? cluster.nodes.map((n) => n.id).filter(settled) : []
  // With the failure detector, the members the reader knows of: checked once the read answered.
  const membersOf = cluster.run(node, Effect.flatMap(ClusterEvents, (events) => events.members))
  const before = ctx.scenario.detector ? yield* membersOf : undefined
  let answered: ReadonlyMap<NodeId.NodeId, unknown> | undefined
  const exit = yield* Effect.exit(h.query({ maxStaleness: Duration.millis(timing.maxStaleness) }, (views) => {
    if (before !== undefined) answered = views
    for (const member of before === undefined ? expectedMembers : []) {
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
  if (before !== undefined && answered !== undefined && cluster.isUp(node)) {
    const after = yield* membersOf
    for (const member of expectedMembers) {
      if (member === node.id || !before.has(member) || !after.has(member) || answered.has(member)) continue
      if (!cluster.nodes.some((n) => n.id === member) || !settled(member)) continue
      checker.violation("ReadMissedMember", `${node.id} read its ${state} views without member ${member}`)
    }
  }
  checker.hash.str(`read ${node.id} ${state} ${Exit.isSuccess(exit) ? exit.value : "stale"}`)
  if (Exit.isSuccess(exit)) ctx.reads.ok++
  else if (!ctx.defectOf(exit, `read on ${node.id}`)) ctx.reads.stalePeer++
})

/** Either state, evenly. */
export const pickState = (ctx: RunContext): StateName => ctx.work.chance(0.5) ? Fixtures.Counter.name : Fixtures.NodeResource.name

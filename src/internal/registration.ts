/**
 * What the registry does for one `register` call besides making the shard:
 * checking the definition and the options (`InvalidOptions` for anything out
 * of range), and building the typed handle over the shard; also the worst
 * of several health statuses.
 * @internal
 */
import { Duration, Effect, Schedule } from "effect"
import type { HealthStatus } from "../Diagnostics.ts"
import type * as DistributedState from "../DistributedState.ts"
import type { NodeId } from "../NodeId.ts"
import type { MutateOptions, RegisterOptions, Settings } from "../StateRegistry.ts"
import * as SyncStrategy from "../SyncStrategy.ts"
import * as Check from "./options.ts"
import type * as Shard from "./shard.ts"

/** A definition `register` can run: a name of 1 to 256 characters, `change` and `applyChange` both or neither. */
export const checkDefinition = Effect.fnUntraced(function*(definition: DistributedState.Any) {
  const checker = { module: "DistributedState", stateName: definition.name }
  const name = definition.name
  if (typeof name !== "string" || name.length === 0 || name.length > 256) {
    return yield* Check.invalid(checker, "name", name, "must have 1 to 256 characters")
  }
  if (definition._tag === "Delta" && (definition.change === undefined) !== (definition.applyChange === undefined)) {
    return yield* definition.change === undefined
      ? Check.invalid(checker, "change", undefined, "must be given with applyChange")
      : Check.invalid(checker, "applyChange", undefined, "must be given with change")
  }
})

/** The shard options of `register`'s options, or `InvalidOptions` for one out of range. */
export const checkOptions = Effect.fnUntraced(function*(stateName: string, options: RegisterOptions | undefined) {
  const checker = { module: "StateRegistry.register", stateName }
  const versionMismatchPolicy = options?.versionMismatchPolicy ?? "KeepStale"
  if (versionMismatchPolicy !== "KeepStale" && versionMismatchPolicy !== "DropAndWait") {
    return yield* Check.invalid(checker, "versionMismatchPolicy", versionMismatchPolicy, "must be \"KeepStale\" or \"DropAndWait\"")
  }
  const shardOptions: Shard.ShardOptions = {
    strategy: options?.strategy ?? SyncStrategy.activePush(),
    persist: options?.persist ?? true,
    pullTimeout: yield* Check.duration(checker, "pullTimeout", options?.pullTimeout ?? "5 seconds", "positive"),
    versionMismatchPolicy,
    mailbox: yield* Check.mailbox(checker, "mailbox", options?.mailbox ?? 10_000)
  }
  return shardOptions
})

/** The await of a mutation's options, or `InvalidOptions` (nothing is committed then). */
export const checkAwait = Effect.fnUntraced(function*(stateName: string, options: MutateOptions) {
  const checker = { module: "StateHandle.mutate", stateName }
  const spec = options?.await
  if (spec === undefined || spec === null || typeof spec !== "object") {
    return yield* Check.invalid(checker, "await", spec, "must be an object with peers and timeout")
  }
  const peers = spec.peers
  if (peers !== "majority" && peers !== "all") {
    if (typeof peers !== "number") {
      return yield* Check.invalid(checker, "await.peers", peers, "must be a positive integer, \"majority\" or \"all\"")
    }
    yield* Check.integer(checker, "await.peers", peers, 1)
  }
  const timeout = yield* Check.duration(checker, "await.timeout", spec.timeout, "positive")
  const awaited: Shard.AwaitSpec = { peers, timeoutMillis: Duration.toMillis(timeout) }
  return awaited
})

const severity: Record<HealthStatus, number> = { Healthy: 0, Degraded: 1, Unhealthy: 2 }
export const worst = (statuses: ReadonlyArray<HealthStatus>): HealthStatus =>
  statuses.reduce<HealthStatus>((acc, s) => severity[s] > severity[acc] ? s : acc, "Healthy")

export const makeHandle = (shard: Shard.Shard<any, any, any>, nodeId: NodeId): unknown => {
  const common = {
    name: shard.name,
    nodeId,
    query: shard.query,
    snapshot: shard.snapshot,
    changes: shard.changes,
    changesOf: shard.changesOf,
    diffs: shard.diffs,
    local: shard.local,
    state: shard.state,
    syncStatus: shard.syncStatus,
    metrics: shard.metrics
  }
  return shard.definition._tag === "Simple"
    ? {
      ...common,
      _tag: "Simple",
      mutate: (f: (state: unknown) => unknown, options?: MutateOptions) => {
        const apply = (state: unknown) => ({ state: f(state), change: undefined })
        return options === undefined
          ? shard.mutate(apply)
          : Effect.flatMap(checkAwait(shard.name, options), (spec) => shard.mutateAwait(apply, spec))
      }
    }
    : {
      ...common,
      _tag: "Delta",
      mutateWithDelta: (
        f: (state: unknown) => { readonly state: unknown; readonly change: unknown },
        options?: MutateOptions
      ) =>
        options === undefined
          ? shard.mutate(f)
          : Effect.flatMap(checkAwait(shard.name, options), (spec) => shard.mutateAwait(f, spec))
    }
}

/** The settings and frame limit in force, each checked: a value out of range fails the layer with `InvalidOptions`. */
export const checkSettings = Effect.fnUntraced(function*(config: Settings, maxFrameBytes: number) {
  const checker = { module: "StateRegistry" }
  yield* Check.integer(checker, "departedCapacity", config.departedCapacity, 1)
  yield* Check.integer(checker, "maxFrameBytes", maxFrameBytes, 1)
  const healthStaleAfterMillis = config.healthStaleAfter === undefined
    ? Number.POSITIVE_INFINITY
    : Duration.toMillis(yield* Check.duration(checker, "healthStaleAfter", config.healthStaleAfter, "positive"))
  if (!Schedule.isSchedule(config.changeFeedFlush)) {
    yield* Check.duration(checker, "changeFeedFlush", config.changeFeedFlush as Duration.Input, "positive")
  }
  return { config, healthStaleAfterMillis, maxFrameBytes }
})

/**
 * Fixture states for tests and examples: a simple counter and a delta-aware
 * resource state with private fields, plus a checker for the delta law
 * `applyDelta(projectView(s), projectDelta(c)) = projectView(s')`.
 *
 * @since 0.1.0
 */
import { Result, Schema } from "effect"
import { SchemaBinary } from "effect/encoding"
import * as DistributedState from "../DistributedState.ts"
import * as SyncUrgency from "../SyncUrgency.ts"

/**
 * A simple counter.
 *
 * @category testing
 * @since 0.1.0
 */
export const Counter = DistributedState.make({
  name: "counter",
  schema: Schema.Struct({ value: Schema.Int }),
  initial: () => ({ value: 0 }),
  wireVersion: 1,
  storageVersion: 1
})

/**
 * The private state of a node's resources: the public figures plus sampling
 * bookkeeping that never leaves the owner.
 *
 * @category testing
 * @since 0.1.0
 */
export const NodeResourceState = Schema.Struct({
  cpuPercent: Schema.Finite,
  memoryUsedMiB: Schema.Finite,
  tags: Schema.Array(Schema.String),
  samples: Schema.Int,
  lastRawCpuTicks: Schema.Finite
})

/**
 * @category testing
 * @since 0.1.0
 */
export type NodeResourceState = typeof NodeResourceState.Type

/**
 * What peers see.
 *
 * @category testing
 * @since 0.1.0
 */
export const NodeResourceView = Schema.Struct({
  cpuPercent: Schema.Finite,
  memoryUsedMiB: Schema.Finite,
  tags: Schema.Array(Schema.String)
})

/**
 * @category testing
 * @since 0.1.0
 */
export type NodeResourceView = typeof NodeResourceView.Type

/**
 * A view-level delta: only the fields that changed.
 *
 * @category testing
 * @since 0.1.0
 */
export const NodeResourceDelta = Schema.Struct({
  cpuPercent: Schema.optionalKey(Schema.Finite),
  memoryUsedMiB: Schema.optionalKey(Schema.Finite),
  tags: Schema.optionalKey(Schema.Array(Schema.String))
})

/**
 * @category testing
 * @since 0.1.0
 */
export type NodeResourceDelta = typeof NodeResourceDelta.Type

/**
 * What a mutation says it changed.
 *
 * @category testing
 * @since 0.1.0
 */
export interface NodeResourceChange {
  readonly cpuPercent?: number
  readonly memoryUsedMiB?: number
  readonly tags?: ReadonlyArray<string>
}

/**
 * A delta-aware resource state. A CPU move of 20 points or more is sent
 * immediately.
 *
 * @category testing
 * @since 0.1.0
 */
export const NodeResource = DistributedState.makeDelta({
  name: "node_resource",
  state: NodeResourceState,
  view: NodeResourceView,
  delta: NodeResourceDelta,
  initial: (): NodeResourceState => ({ cpuPercent: 0, memoryUsedMiB: 0, tags: [], samples: 0, lastRawCpuTicks: 0 }),
  projectView: (s): NodeResourceView => ({ cpuPercent: s.cpuPercent, memoryUsedMiB: s.memoryUsedMiB, tags: s.tags }),
  projectDelta: (change: NodeResourceChange): NodeResourceDelta => ({ ...change }),
  applyDelta: (view, delta): NodeResourceView => ({ ...view, ...delta }),
  syncUrgency: (oldView, newView) =>
    Math.abs(newView.cpuPercent - oldView.cpuPercent) >= 20 ? SyncUrgency.Immediate : SyncUrgency.Default,
  wireVersion: 1,
  storageVersion: 1
})

/**
 * Applies one change to a resource state and returns it with the change,
 * the way an application's `mutateWithDelta` callback would.
 *
 * @category testing
 * @since 0.1.0
 */
export const updateResource = (
  state: NodeResourceState,
  change: NodeResourceChange
): { readonly state: NodeResourceState; readonly change: NodeResourceChange } => ({
  state: { ...state, ...change, samples: state.samples + 1 },
  change
})

/**
 * Checks the delta law for one mutation, through the real binary codec:
 * projects the change to a delta, encodes and decodes it, applies it to the
 * old view, and compares with the new state's view. Returns the two views.
 *
 * @category testing
 * @since 0.1.0
 */
export const deltaRoundTrip = <S, V, D, C>(
  definition: DistributedState.Delta<S, V, D, C>,
  before: S,
  after: S,
  change: C
): { readonly applied: V; readonly projected: V } => {
  const codec = SchemaBinary.toCodec(definition.delta)
  const encoded = Schema.encodeUnknownResult(codec)(definition.projectDelta(change))
  const bytes = Result.getOrThrow(encoded)
  const decoded = Result.getOrThrow(Schema.decodeUnknownResult(codec)(bytes.slice()))
  return { applied: definition.applyDelta(definition.projectView(before), decoded), projected: definition.projectView(after) }
}

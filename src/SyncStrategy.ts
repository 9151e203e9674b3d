/**
 * Sync strategies: how a state's changes travel from its owner to the other
 * nodes. A strategy combines a push mode (active push of every change, a
 * batched change feed of notices with lazy pull, or nothing), an optional
 * periodic full sync driven by any `Schedule`, and whether a stale query may
 * pull fresh views on demand.
 *
 * @since 0.1.0
 */
import { Duration, Schedule } from "effect"

/**
 * How changes are announced when they happen.
 *
 * - `ActivePush`: every committed change is sent to every peer at once: a
 *   delta for delta-aware states; a full snapshot for simple ones, sent when
 *   the mutating fiber yields (the mutations of one turn go out as one
 *   snapshot of the newest generation).
 * - `FeedLazyPull`: only a notice `(state, source, generation)` is sent, batched
 *   per node; peers mark the view stale and pull it when a query needs it.
 * - `None`: nothing is sent on change; only periodic full sync (and pulls)
 *   move data.
 *
 * @category models
 * @since 0.1.0
 */
export type PushMode = "ActivePush" | "FeedLazyPull" | "None"

/**
 * A sync strategy.
 *
 * @category models
 * @since 0.1.0
 */
export interface SyncStrategy {
  /** How changes are announced when they happen. */
  readonly pushMode: PushMode
  /** When set, a full snapshot is sent to every peer at each recurrence (only when something changed since the last one). */
  readonly periodicFullSync: Schedule.Schedule<unknown, unknown, unknown> | undefined
  /** Whether a query that finds a stale view may pull the peer's current snapshot. */
  readonly pullOnQuery: boolean
}

/**
 * Options shared by the constructors.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Overrides the strategy's default for pulling on stale queries (`true`). */
  readonly pullOnQuery?: boolean | undefined
}

const toSchedule = (
  input: Schedule.Schedule<unknown, unknown, unknown> | Duration.Input
): Schedule.Schedule<unknown, unknown, unknown> =>
  Schedule.isSchedule(input) ? input as Schedule.Schedule<unknown, unknown, unknown> : Schedule.spaced(input as Duration.Input)

/**
 * Push every committed change to every peer as it happens.
 *
 * **When to use**: small clusters, low mutation rates, views that must be fresh
 * everywhere without asking.
 *
 * **Gotchas**: a simple state's mutations made in one turn of a fiber (no
 * yield between them) reach peers as one snapshot of the last of them. A
 * change lost in transit is only repaired by the next change
 * (a gap triggers a snapshot request) or a pull; the last write before a quiet
 * period can stay lost. Add a periodic full sync when that matters.
 *
 * @example
 * ```ts
 * import { SyncStrategy } from "dstate"
 * const strategy = SyncStrategy.activePush()
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const activePush = (options?: Options): SyncStrategy => ({
  pushMode: "ActivePush",
  periodicFullSync: undefined,
  pullOnQuery: options?.pullOnQuery ?? true
})

/**
 * Announce changes through the node's batched change feed; peers pull the view
 * when a query needs it.
 *
 * @category constructors
 * @since 0.1.0
 */
export const feedLazyPull = (options?: Options): SyncStrategy => ({
  pushMode: "FeedLazyPull",
  periodicFullSync: undefined,
  pullOnQuery: options?.pullOnQuery ?? true
})

/**
 * The change feed plus a periodic full sync (a `Schedule`, or a duration for a
 * fixed spacing).
 *
 * @category constructors
 * @since 0.1.0
 */
export const feedWithPeriodicSync = (
  schedule: Schedule.Schedule<unknown, unknown, unknown> | Duration.Input,
  options?: Options
): SyncStrategy => ({
  pushMode: "FeedLazyPull",
  periodicFullSync: toSchedule(schedule),
  pullOnQuery: options?.pullOnQuery ?? true
})

/**
 * Only the periodic full sync moves data (a `Schedule`, or a duration for a
 * fixed spacing).
 *
 * @category constructors
 * @since 0.1.0
 */
export const periodicOnly = (
  schedule: Schedule.Schedule<unknown, unknown, unknown> | Duration.Input,
  options?: Options
): SyncStrategy => ({
  pushMode: "None",
  periodicFullSync: toSchedule(schedule),
  pullOnQuery: options?.pullOnQuery ?? true
})

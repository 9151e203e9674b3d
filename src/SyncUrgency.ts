/**
 * How urgently one mutation's change must reach the peers. A delta-aware
 * state's `syncUrgency` function returns one of these per mutation, so that a
 * large change can be sent at once while noise is held back.
 *
 * @since 0.1.0
 */
import { Duration, Option } from "effect"
import { InvalidOptions } from "./DStateError.ts"

/**
 * Follow the state's sync strategy.
 *
 * @category models
 * @since 0.1.0
 */
export interface Default {
  readonly _tag: "Default"
}

/**
 * Send now, whatever the strategy.
 *
 * @category models
 * @since 0.1.0
 */
export interface Immediate {
  readonly _tag: "Immediate"
}

/**
 * Send within `duration`; later mutations inside the window coalesce into the
 * same send.
 *
 * @category models
 * @since 0.1.0
 */
export interface Delayed {
  readonly _tag: "Delayed"
  readonly duration: Duration.Duration
}

/**
 * Send nothing now; the next update that is sent carries the cumulative
 * effect of every suppressed change.
 *
 * @category models
 * @since 0.1.0
 */
export interface Suppress {
  readonly _tag: "Suppress"
}

/**
 * @category models
 * @since 0.1.0
 */
export type SyncUrgency = Default | Immediate | Delayed | Suppress

/**
 * @category constructors
 * @since 0.1.0
 */
export const Default: SyncUrgency = { _tag: "Default" }

/**
 * @category constructors
 * @since 0.1.0
 */
export const Immediate: SyncUrgency = { _tag: "Immediate" }

/**
 * @category constructors
 * @since 0.1.0
 */
export const Suppress: SyncUrgency = { _tag: "Suppress" }

/**
 * Send within `duration` (finite, zero or more). Any other input throws a
 * typed `InvalidOptions` (module `SyncUrgency`, option `Delayed`); thrown from
 * a state's `syncUrgency`, it is logged with the error and the mutation
 * follows the strategy (it is committed and published either way).
 *
 * @example
 * ```ts
 * import { SyncUrgency } from "dstate"
 * const urgency = SyncUrgency.Delayed("500 millis")
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const Delayed = (duration: Duration.Input): SyncUrgency => {
  const parsed = typeof duration === "number" && Number.isNaN(duration) ? Option.none() : Duration.fromInput(duration)
  if (Option.isNone(parsed) || !Duration.isFinite(parsed.value) || Duration.toMillis(parsed.value) < 0) {
    throw new InvalidOptions({
      module: "SyncUrgency",
      option: "Delayed",
      value: duration,
      reason: "must be a finite non-negative duration"
    })
  }
  return { _tag: "Delayed", duration: parsed.value }
}

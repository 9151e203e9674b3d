/**
 * Checks of user options: each turns a value outside its range into a typed
 * `InvalidOptions` naming who refused it, the option, the value and what is
 * allowed. Shared by the layers and by `StateRegistry.register`.
 * @internal
 */
import { Duration, Effect, Option } from "effect"
import { InvalidOptions } from "../DStateError.ts"

/** Who checks: the `module` of the errors, and the state concerned if any. */
export interface Checker {
  readonly module: string
  readonly stateName?: string | undefined
}

/** The error for `option` set to `value`. */
export const invalid = (checker: Checker, option: string, value: unknown, reason: string): InvalidOptions =>
  new InvalidOptions({
    module: checker.module,
    option,
    value,
    reason,
    ...(checker.stateName === undefined ? {} : { stateName: checker.stateName })
  })

/** `value` unless it is not an integer from `min` to `max`. */
export const integer = (
  checker: Checker,
  option: string,
  value: number,
  min: number,
  max: number = Number.MAX_SAFE_INTEGER
): Effect.Effect<number, InvalidOptions> =>
  Number.isSafeInteger(value) && value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(invalid(checker, option, value, integerRange(min, max)))

const integerRange = (min: number, max: number) =>
  max !== Number.MAX_SAFE_INTEGER
    ? `must be an integer from ${min} to ${max}`
    : min === 1
    ? "must be a positive integer"
    : min === 0
    ? "must be a non-negative integer"
    : `must be an integer of at least ${min}`

/** `value` unless it is not a finite number above `0` (`"positive"`) or at least `0` (`"nonNegative"`). */
export const number = (
  checker: Checker,
  option: string,
  value: number,
  range: "positive" | "nonNegative"
): Effect.Effect<number, InvalidOptions> =>
  typeof value === "number" && Number.isFinite(value) && (range === "positive" ? value > 0 : value >= 0)
    ? Effect.succeed(value)
    : Effect.fail(invalid(checker, option, value, `must be a finite ${range === "positive" ? "positive" : "non-negative"} number`))

/**
 * The duration `input` stands for, unless it is not a duration, is infinite,
 * negative, or (for `"positive"`) zero.
 */
export const duration = (
  checker: Checker,
  option: string,
  input: Duration.Input,
  range: "positive" | "nonNegative"
): Effect.Effect<Duration.Duration, InvalidOptions> => {
  const reason = `must be a finite ${range === "positive" ? "positive" : "non-negative"} duration`
  // `Duration` reads NaN milliseconds as zero: refuse it before.
  const parsed = typeof input === "number" && Number.isNaN(input) ? Option.none() : Duration.fromInput(input)
  if (Option.isNone(parsed)) return Effect.fail(invalid(checker, option, input, reason))
  const d = parsed.value
  const millis = Duration.toMillis(d)
  return Duration.isFinite(d) && (range === "positive" ? millis > 0 : millis >= 0)
    ? Effect.succeed(d)
    : Effect.fail(invalid(checker, option, input, reason))
}

/** A mailbox capacity: a positive integer or `"unbounded"`. */
export const mailbox = (
  checker: Checker,
  option: string,
  value: number | "unbounded"
): Effect.Effect<number | "unbounded", InvalidOptions> =>
  value === "unbounded" || (Number.isSafeInteger(value) && value >= 1)
    ? Effect.succeed(value)
    : Effect.fail(invalid(checker, option, value, "must be a positive integer or \"unbounded\""))

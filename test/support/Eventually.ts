/**
 * Waiting for a condition on the real clock: `eventually` polls an effect
 * until it holds and fails with a clear message at a deadline. Real-socket
 * tests wait with it and then assert exact values; they never sleep a fixed
 * time and count. Simulated tests have no use for it: they run on the
 * `TestClock` and settle instead.
 */
import { Cause, Clock, Duration, Effect, Exit } from "effect"

/** Options of `eventually`. */
export interface EventuallyOptions {
  /** How long the condition may take to hold. */
  readonly timeout: Duration.Input
  /** Pause between two attempts (default 20 ms). */
  readonly interval?: Duration.Input | undefined
  /** What is awaited, for the message at the deadline (default "the condition"). */
  readonly what?: string | undefined
}

/**
 * Runs `condition` until it holds: it succeeds with anything but `false`. A
 * failure, a defect (such as a failed `assert`) or `false` means "not yet":
 * it is retried every `interval`. At the deadline it runs once more, and if
 * it still does not hold the effect dies with an error naming what was
 * awaited, how long and the last outcome (a failed assertion is its
 * `cause`). An interruption is not retried.
 *
 * Real clock only: on the `TestClock` the pauses never end.
 */
export const eventually = <A, E, R>(
  condition: Effect.Effect<A, E, R>,
  options: EventuallyOptions
): Effect.Effect<Exclude<A, false>, never, R> =>
  Effect.gen(function*() {
    const timeoutMillis = Duration.toMillis(Duration.fromInputUnsafe(options.timeout))
    const interval = Duration.fromInputUnsafe(options.interval ?? "20 millis")
    const deadline = (yield* Clock.currentTimeMillis) + timeoutMillis
    let attempts = 0
    while (true) {
      const last = (yield* Clock.currentTimeMillis) >= deadline
      attempts++
      const exit = yield* Effect.exit(condition)
      if (Exit.isSuccess(exit) && exit.value !== false) return exit.value as Exclude<A, false>
      if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
      if (last) {
        const what = options.what ?? "the condition"
        const outcome = Exit.isSuccess(exit) ? "it returned false" : describe(Cause.squash(exit.cause))
        return yield* Effect.die(
          new Error(`eventually: ${what} did not hold within ${timeoutMillis} ms (${attempts} attempts); last: ${outcome}`, {
            cause: Exit.isSuccess(exit) ? undefined : Cause.squash(exit.cause)
          })
        )
      }
      yield* Effect.sleep(interval)
    }
  })

/** `eventually` with a fixed timeout, as a function of the condition (for a test file's or a backend's default). */
export const eventuallyWithin = (timeout: Duration.Input) =>
<A, E, R>(condition: Effect.Effect<A, E, R>): Effect.Effect<Exclude<A, false>, never, R> =>
  eventually(condition, { timeout })

const describe = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error) ?? String(error)

/**
 * The log of refused and failed connections, bounded whatever an attacker
 * sends: the first connection of each reason is logged in full (with its
 * detail and the peer's address), later ones of that reason are only counted
 * until the end of the interval, when one line sums up everything held back
 * ("rejected 3,812 connections: malformed 2,901, too-large 911"). A reason
 * that had nothing held back in an interval is logged in full again the next
 * time. The transport's counters carry the exact numbers either way; this
 * only bounds the log: at most one full line per reason and one summary per
 * interval.
 *
 * Time is the interval's `Effect.sleep` (the `Clock`), so it runs on the
 * `TestClock` in tests. What is held back is logged when the scope closes.
 * @internal
 */
import { type Duration, Effect, type Scope } from "effect"

export interface Rejections {
  /**
   * Records one refused or failed connection: logged in full (`message`,
   * `annotations`) when it is the first of its reason, else held back for
   * the summary.
   */
  readonly record: (reason: string, message: string, annotations: Readonly<Record<string, unknown>>) => Effect.Effect<void>
  /** Logs the summary of what was held back, if anything, and starts a new interval. */
  readonly flush: Effect.Effect<void>
}

const format = (n: number) => n.toLocaleString("en-US")

/** Starts the interval in the current scope; `annotate` adds the node's annotations to every line. */
export const make = Effect.fnUntraced(function*(options: {
  readonly interval: Duration.Duration
  readonly annotate: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}): Effect.fn.Return<Rejections, never, Scope.Scope> {
  /** Reasons logged in full since they last had nothing held back. */
  const armed = new Set<string>()
  /** Per reason, connections held back in this interval (in the order the reasons first came). */
  const held = new Map<string, number>()

  const record = (reason: string, message: string, annotations: Readonly<Record<string, unknown>>) =>
    Effect.suspend(() => {
      if (!armed.has(reason)) {
        armed.add(reason)
        return Effect.logWarning(message).pipe(Effect.annotateLogs({ ...annotations, reason }), options.annotate)
      }
      held.set(reason, (held.get(reason) ?? 0) + 1)
      return Effect.void
    })

  const flush = Effect.suspend(() => {
    // A reason with nothing held back this interval is logged in full again next time.
    for (const reason of armed) if (!held.has(reason)) armed.delete(reason)
    if (held.size === 0) return Effect.void
    let total = 0
    const parts: Array<string> = []
    const counts: Record<string, number> = {}
    for (const [reason, n] of held) {
      total += n
      parts.push(`${reason} ${format(n)}`)
      counts[reason] = n
    }
    held.clear()
    return Effect.logWarning(`rejected ${format(total)} ${total === 1 ? "connection" : "connections"}: ${parts.join(", ")}`).pipe(
      Effect.annotateLogs({ rejected: total, ...counts }),
      options.annotate
    )
  })

  yield* Effect.addFinalizer(() => flush)
  yield* Effect.sleep(options.interval).pipe(Effect.andThen(flush), Effect.forever, Effect.forkScoped)
  return { record, flush }
})

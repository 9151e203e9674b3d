/**
 * Failure detectors: pure state machines fed with the arrival times of a
 * peer's frames (monotonic milliseconds) and asked whether the peer is silent.
 * A silent peer is *unreachable*, not down: membership (`membership.ts`, with
 * `internal/membership/core.ts`) declares it down only after `downAfter`.
 *
 * `failed` takes a multiplier of its timeouts (1 by default): the place where
 * a local-health score (Lifeguard: memberlist's `awareness.go`) stretches them
 * while this node itself is slow to process its input.
 *
 * - Fixed timeout: the peer is silent once nothing was heard for `timeout`.
 * - Phi accrual (Hayashibara et al.; the variant used by Akka and Cassandra):
 *   the suspicion level `phi` grows with the silence relative to the observed
 *   distribution of heartbeat intervals; the peer is silent once `phi` exceeds
 *   the threshold, or once the silence exceeds `maxSilence` whatever the
 *   history (so that the bound stays configurable).
 * @internal
 */

/** The settings of a detector, in milliseconds. */
export type DetectorSettings =
  | { readonly _tag: "FixedTimeout"; readonly timeoutMillis: number }
  | {
    readonly _tag: "PhiAccrual"
    readonly threshold: number
    readonly minStdDeviationMillis: number
    readonly acceptablePauseMillis: number
    readonly maxSampleSize: number
    readonly firstHeartbeatEstimateMillis: number
    readonly maxSilenceMillis: number
  }

/** One peer's detector. */
export interface Detector {
  /** Any frame arrived at `now`. */
  readonly heard: (now: number) => void
  /** A heartbeat arrived at `now` (also counts as heard). */
  readonly heartbeat: (now: number) => void
  /** The current suspicion level (0 for a fixed timeout that has not expired, Infinity once expired). */
  readonly phi: (now: number) => number
  /** Whether the peer is silent at `now`, its timeouts scaled by `multiplier` (local health; 1 by default). */
  readonly failed: (now: number, multiplier?: number) => boolean
  /** Milliseconds since the last frame. */
  readonly silence: (now: number) => number
}

/** Creates a detector whose history starts at `now`. */
export const make = (settings: DetectorSettings, now: number): Detector => {
  let lastHeard = now
  if (settings._tag === "FixedTimeout") {
    const timeout = settings.timeoutMillis
    return {
      heard: (t) => {
        if (t > lastHeard) lastHeard = t
      },
      heartbeat: (t) => {
        if (t > lastHeard) lastHeard = t
      },
      phi: (t) => (t - lastHeard > timeout ? Number.POSITIVE_INFINITY : 0),
      failed: (t, multiplier = 1) => t - lastHeard > timeout * multiplier,
      silence: (t) => t - lastHeard
    }
  }
  const s = settings
  // Ring buffer of heartbeat intervals, seeded as Akka does with a guess.
  const intervals: Array<number> = []
  let sum = 0
  let sumSquares = 0
  let lastHeartbeat: number | undefined
  const addInterval = (interval: number) => {
    if (intervals.length >= s.maxSampleSize) {
      const dropped = intervals.shift()!
      sum -= dropped
      sumSquares -= dropped * dropped
    }
    intervals.push(interval)
    sum += interval
    sumSquares += interval * interval
  }
  const first = s.firstHeartbeatEstimateMillis
  addInterval(first - first / 4)
  addInterval(first + first / 4)

  const phi = (t: number): number => {
    const elapsed = t - lastHeard
    const n = intervals.length
    const mean = sum / n + s.acceptablePauseMillis
    const variance = Math.max(0, sumSquares / n - (sum / n) * (sum / n))
    const std = Math.max(Math.sqrt(variance), s.minStdDeviationMillis)
    // Logistic approximation of the normal CDF (Akka's PhiAccrualFailureDetector).
    const y = (elapsed - mean) / std
    const e = Math.exp(-y * (1.5976 + 0.070566 * y * y))
    const p = elapsed > mean ? e / (1 + e) : 1 - 1 / (1 + e)
    return p <= 0 ? Number.POSITIVE_INFINITY : -Math.log10(p)
  }
  return {
    heard: (t) => {
      if (t > lastHeard) lastHeard = t
    },
    heartbeat: (t) => {
      if (lastHeartbeat !== undefined && t > lastHeartbeat) addInterval(t - lastHeartbeat)
      lastHeartbeat = t
      if (t > lastHeard) lastHeard = t
    },
    phi,
    failed: (t, multiplier = 1) => t - lastHeard > s.maxSilenceMillis * multiplier || phi(t) > s.threshold * multiplier,
    silence: (t) => t - lastHeard
  }
}

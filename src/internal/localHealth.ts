/**
 * Local health awareness (memberlist's `awareness.go`, from the Lifeguard
 * paper): a node that is itself in trouble (its own timers fire late, most of
 * its probes go unanswered) is a poor judge of others, so instead of declaring
 * them unreachable or down it waits longer. A score from 0 to `max` rises by
 * one for each late timer and each probe round in which most probes went
 * unanswered, falls by one for each round in which every probe was answered;
 * every suspicion timeout is multiplied by `1 + score`. Immutable values and
 * pure functions only, shared by every failure detector (the simulated one of
 * the in-process runtime, the TCP transport's).
 * @internal
 */

/** A node's local health: `score` in `[0, max]`, 0 healthy. */
export interface LocalHealth {
  readonly score: number
  readonly max: number
}

/** The default bound of the score (memberlist's `AwarenessMaxMultiplier` is 8): timeouts grow up to 9-fold. */
export const defaultMax = 8

/** A healthy node (score 0) whose score is bounded by `max` (a non-negative integer, default 8). */
export const make = (max: number = defaultMax): LocalHealth => ({ score: 0, max })

/** The score moved by `delta`, kept within `[0, max]`. */
export const apply = (health: LocalHealth, delta: number): LocalHealth => {
  const score = Math.min(health.max, Math.max(0, health.score + delta))
  return score === health.score ? health : { score, max: health.max }
}

/**
 * A periodic timer fired `lateMillis` after it was due (its period being `intervalMillis`): later than half a
 * period counts against the node's health; on time changes nothing (answered probes bring the score down).
 */
export const timerFired = (health: LocalHealth, lateMillis: number, intervalMillis: number): LocalHealth =>
  lateMillis > intervalMillis / 2 ? apply(health, 1) : health

/**
 * A round of `sent` probes of which `answered` were answered in time: every one answered lowers the score by
 * one; fewer than half answered raises it by one (a node that hears almost nobody is more likely the one in
 * trouble); in between, or with nothing sent, it stays.
 */
export const probeRound = (health: LocalHealth, sent: number, answered: number): LocalHealth =>
  sent === 0 ? health : answered === sent ? apply(health, -1) : answered * 2 < sent ? apply(health, 1) : health

/** The factor every suspicion timeout is multiplied by: `1 + score`. */
export const multiplier = (health: LocalHealth): number => 1 + health.score

/** A timeout (ms) scaled by the node's health. */
export const scale = (health: LocalHealth, millis: number): number => millis * (1 + health.score)

/**
 * False downs under an overloaded node, with and without local health
 * awareness (memberlist's Lifeguard). A cluster runs the simulated failure
 * detector at its defaults (probes every second, unreachable after 5 s,
 * down after 30 s). One node, drawn from the seed, goes through overload
 * episodes (its own probe timer fires late and its probes' answers come too
 * late to count) separated by healthy spells; every other node stays healthy
 * and connected. Every down it declares is a false one. Halfway through, a
 * healthy node crashes for good: how long its peers take to declare it down
 * shows what awareness costs a real failure.
 *
 * @since 0.2.0
 */
import { Effect } from "effect"
import { ClusterEvents } from "../../ClusterEvents.ts"
import { TestClock } from "effect/testing"
import * as Prng from "../Prng.ts"
import * as SimDetector from "../SimDetector.ts"
import * as TestCluster from "../TestCluster.ts"

/**
 * Options of `lifeguard`.
 *
 * @category models
 * @since 0.2.0
 */
export interface LifeguardOptions {
  /** Nodes (default 5, at least 3). */
  readonly nodes?: number | undefined
  /** Simulated time of a run, ms (default 30 minutes). */
  readonly durationMillis?: number | undefined
  /** Local health awareness on the detector (bound 8). */
  readonly localHealth: boolean
}

/**
 * What one seeded run saw.
 *
 * @category models
 * @since 0.2.0
 */
export interface LifeguardResult {
  readonly seed: number
  readonly localHealth: boolean
  /** Overload episodes and their total length (ms). */
  readonly episodes: number
  readonly overloadedMillis: number
  /** The detector's counters (false alarms: of healthy, connected nodes). */
  readonly stats: SimDetector.Stats
  /** Ms from the crash of a healthy node to its `NodeLeft` on a healthy peer (to the second). */
  readonly crashDetectedMillis: number | undefined
}

/**
 * One seeded run (on its own `TestClock`).
 *
 * @category constructors
 * @since 0.2.0
 */
export const lifeguard = (options: LifeguardOptions, seed: number): Effect.Effect<LifeguardResult> =>
  run(options, seed).pipe(Effect.scoped, Effect.provide(TestClock.layer({ warningDelay: "1 hour" })))

const run = Effect.fnUntraced(function*(options: LifeguardOptions, seed: number) {
  const random = Prng.make(seed).derive("lifeguard")
  const duration = options.durationMillis ?? 30 * 60_000
  const cluster = yield* TestCluster.make({
    nodes: Math.max(3, options.nodes ?? 5),
    seed,
    network: { log: false },
    detector: { localHealth: options.localHealth }
  }).pipe(Effect.orDie)
  const control = cluster.network.detector!
  const overloaded = cluster.nodes[0].id
  const observer = cluster.nodes[1]
  const victim = cluster.nodes[cluster.nodes.length - 1]
  const victimGone = cluster.run(
    observer,
    Effect.flatMap(ClusterEvents, (events) => Effect.map(events.members, (members) => !members.has(victim.id)))
  )
  let now = 0
  let episodes = 0
  let overloadedMillis = 0
  let crashedAt: number | undefined
  let detected: number | undefined
  const advance = Effect.fnUntraced(function*(millis: number) {
    // Second by second once the victim crashed, to time its detection.
    const step = crashedAt !== undefined && detected === undefined ? 1_000 : millis
    for (let done = 0; done < millis; done += step) {
      yield* TestClock.adjust(Math.min(step, millis - done))
      now += Math.min(step, millis - done)
      if (crashedAt !== undefined && detected === undefined && (yield* victimGone)) detected = now - crashedAt
    }
  })
  while (now < duration) {
    yield* advance(random.int(10, 60) * 1_000)
    if (crashedAt === undefined && now >= duration / 2) {
      yield* cluster.crash(victim)
      crashedAt = now
    }
    const length = random.int(5, 300) * 1_000
    control.overload(overloaded, true)
    episodes++
    overloadedMillis += length
    yield* advance(length)
    control.overload(overloaded, false)
  }
  return {
    seed,
    localHealth: options.localHealth,
    episodes,
    overloadedMillis,
    stats: control.stats(),
    crashDetectedMillis: detected
  } satisfies LifeguardResult
})

/**
 * Closing a store's queue of waiting saves: takes what is still queued and
 * shuts the queue down, so that later offers are refused.
 * @internal
 */
import { Effect, Queue } from "effect"

/** The items still in `queue`, which is shut down (offers fail from now on). */
export const closeQueue = <A>(queue: Queue.Queue<A>): Effect.Effect<ReadonlyArray<A>> =>
  Effect.tap(Queue.clear(queue), () => Queue.shutdown(queue))

/**
 * The ChangeFeedAggregator: one per node. Local mutations under a feed
 * strategy leave a notice `(state, source, generation)` here; notices are
 * deduplicated per (state, source), keeping the newest generation, and
 * flushed as one `BatchedChangeFeed` for every state type once per interval.
 * @internal
 */
import { Effect, Result } from "effect"
import * as Generation from "../Generation.ts"
import type { NodeId } from "../NodeId.ts"
import { BatchedChangeFeed, type ChangeNotice } from "../SyncMessage.ts"
import { encodeFrame } from "./codec.ts"

export interface ChangeFeed {
  readonly notify: (notice: ChangeNotice) => void
  /** Takes the pending notices as one frame, or `undefined` when there are none. */
  readonly drain: () => Result.Result<{ readonly frame: Uint8Array; readonly notices: number }, { readonly message: string }> | undefined
  readonly pending: () => number
}

export const make = (self: NodeId, maxFrameBytes: number): ChangeFeed => {
  let pending = new Map<string, ChangeNotice>()
  return {
    notify: (notice) => {
      const key = `${notice.stateName}\u0000${notice.source}`
      const held = pending.get(key)
      if (held === undefined || Generation.isNewer(notice.generation, held.generation)) pending.set(key, notice)
    },
    drain: () => {
      if (pending.size === 0) return undefined
      const notices = [...pending.values()]
      pending = new Map()
      const frame = encodeFrame(new BatchedChangeFeed({ source: self, notices }), maxFrameBytes)
      return Result.isSuccess(frame)
        ? Result.succeed({ frame: frame.success, notices: notices.length })
        : Result.fail(frame.failure)
    },
    pending: () => pending.size
  }
}

/** Flushes the feed to a group; logs (and drops) a batch that cannot be framed. */
export const flush = (
  feed: ChangeFeed,
  broadcast: (frame: Uint8Array) => Effect.Effect<void>,
  sent: (notices: number) => void
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const drained = feed.drain()
    if (drained === undefined) return Effect.void
    if (Result.isFailure(drained)) {
      return Effect.logError("cannot send the change feed batch").pipe(Effect.annotateLogs({ error: drained.failure.message }))
    }
    sent(drained.success.notices)
    return broadcast(drained.success.frame)
  })

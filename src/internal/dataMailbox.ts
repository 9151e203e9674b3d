/**
 * The bound on a state actor's data messages (mutations and inbound sync
 * messages): how many wait, the `MailboxFull` a caller gets past the bound,
 * and the peers whose messages were dropped meanwhile, to be resynced once
 * the mailbox drains. Control messages (membership, timers, feed notices)
 * bypass the bound: losing a leave would leave a ghost view behind.
 * @internal
 */
import { Effect } from "effect"
import type { ActorStopped, MailboxFull } from "../DStateError.ts"
import type { NodeId } from "../NodeId.ts"

export interface DataMailbox {
  /** Hands a data message over through `send`, within the bound. */
  readonly via: <M>(
    send: (message: M) => Effect.Effect<void, MailboxFull | ActorStopped>
  ) => (message: M) => Effect.Effect<void, MailboxFull | ActorStopped>
  /** Data messages waiting (told and not yet taken). */
  readonly size: () => number
  /** A data message was taken out of the mailbox. */
  readonly taken: () => void
  /** A message from `from` was dropped: a request (we owe it a snapshot) or a snapshot or delta (we miss its view). */
  readonly dropped: (from: NodeId, request: boolean) => void
  /** Whether peers wait for a resync. */
  readonly resyncPending: () => boolean
  /** The peers to resync, once nothing waits in the mailbox (`undefined` before then or when there are none). */
  readonly takeResync: () => { readonly to: ReadonlyArray<NodeId>; readonly from: ReadonlyArray<NodeId> } | undefined
}

export const make = (capacity: number, full: MailboxFull): DataMailbox => {
  let pending = 0
  const resyncFrom = new Set<NodeId>()
  const resyncTo = new Set<NodeId>()
  const untold = Effect.sync(() => {
    pending--
  })
  return {
    via: (send) => (message) =>
      Effect.suspend(() => {
        if (pending >= capacity) return Effect.fail(full)
        pending++
        return send(message).pipe(Effect.tapError(() => untold))
      }),
    size: () => pending,
    taken: () => {
      pending--
    },
    dropped: (from, request) => {
      if (request) resyncTo.add(from)
      else resyncFrom.add(from)
    },
    resyncPending: () => resyncTo.size > 0 || resyncFrom.size > 0,
    takeResync: () => {
      if (pending > 0 || (resyncFrom.size === 0 && resyncTo.size === 0)) return undefined
      const peers = { to: [...resyncTo], from: [...resyncFrom] }
      resyncFrom.clear()
      resyncTo.clear()
      return peers
    }
  }
}

/**
 * A peer's outbound queue: an Effect `Queue` of encoded transport frames with
 * a cap in bytes and in frames. When the peer reads slower than this node
 * writes, the queue does not grow past its caps:
 *
 * - supersede: the caller says what a frame supersedes (`Supersede` of
 *   `ActorRuntime`, memberlist's named broadcasts): a frame that `replaces`
 *   drops every queued frame with the same key (a state's snapshot carries
 *   all its queued snapshots and deltas said); a frame that does not replace
 *   is kept under its key until such a frame follows. The queue never looks
 *   inside a frame;
 * - at a cap, the tail: a frame with a key that does not replace, arriving
 *   when the queue is full, takes the place of the newest queued frame of its
 *   key (its bytes are dropped, `replacedAtCap`). A peer that has stopped
 *   reading then costs one frame per offer and no churn at all: the queued
 *   frames stay as they are (no item allocated, none dropped, nothing
 *   promoted to the old generation only to die there), and when the peer
 *   reads again it finds the older frames, then a gap before the newest one,
 *   and asks for a snapshot (the repair of a peer that cannot keep up);
 * - drop oldest: otherwise, when a new frame would exceed a cap, the oldest
 *   queued frames are dropped until it fits (a receiver that misses a delta
 *   sees a gap and asks for a snapshot; a missed heartbeat is repeated).
 *
 * Superseded frames stay in the `Queue` as tombstones without their bytes
 * until the writer reaches them; they count against the frame cap, so the
 * queue's length stays bounded as well as its bytes.
 *
 * Backpressure (`backpressure`): before a sequence frame would have to take
 * another's place, the sender can wait while the peer is keeping up. The
 * queue says when it is past its high-water mark (`pressed`), and `relieved`
 * waits until it is back under half of that mark, or until the peer has
 * written nothing for the stall timeout (a peer that stopped reading is left
 * to the caps and repairs its gaps with a snapshot).
 * @internal
 */
import { Clock, Deferred, Duration, Effect, Queue } from "effect"
import type { Supersede } from "../../ActorRuntime.ts"
import type { OutboundStats } from "../TcpRuntime.ts"

/** A frame, or the parts of one written one after the other (a header and a payload that is not copied). */
export type Frame = Uint8Array | ReadonlyArray<Uint8Array>

const sizeOf = (frame: Frame): number => {
  if (frame instanceof Uint8Array) return frame.length
  let size = 0
  for (const part of frame) size += part.length
  return size
}

interface Item {
  frame: Frame | undefined
  size: number
  readonly supersede: Supersede | undefined
  readonly written: Deferred.Deferred<void> | undefined
}

export interface Outbound {
  /** Enqueues a frame (never blocks). */
  readonly offer: (frame: Frame, supersede?: Supersede, written?: Deferred.Deferred<void>) => void
  /** Waits for at least one frame and returns up to `max` of them (as the byte arrays to write), marking their bytes in flight. */
  readonly take: (max: number) => Effect.Effect<ReadonlyArray<Uint8Array>>
  /** The batch returned by the last `take` reached the socket. */
  readonly written: Effect.Effect<void>
  /** Drops everything queued. */
  readonly clear: () => void
  readonly stats: () => OutboundStats
  /**
   * Whether a sender should wait for this peer: the queue is at or past its high-water mark (frames or
   * bytes) and the peer has written something within the stall timeout.
   */
  readonly pressed: () => boolean
  /**
   * Waits until the queue is back under half of its high-water mark (`"drained"`), or until the peer has
   * written nothing for the stall timeout (`"stalled"`).
   */
  readonly relieved: Effect.Effect<"drained" | "stalled">
}

/** When a sender waits for a peer: the high-water mark (frames, bytes), and when a peer counts as stalled. */
export interface Backpressure {
  readonly frames: number
  readonly bytes: number
  readonly stallMillis: number
}

/** Creates an empty queue with the given caps. */
export const make = Effect.fnUntraced(function*(
  caps: { readonly maxBytes: number; readonly maxFrames: number },
  backpressure: Backpressure
): Effect.fn.Return<Outbound> {
  const queue = yield* Queue.unbounded<Item>()
  const clock = yield* Clock.Clock
  const nowMillis = () => Number(clock.monotonicTimeNanosUnsafe() / 1_000_000n)
  /** When a batch last reached the socket (or the queue was made). */
  let lastProgress = nowMillis()
  /** Completed (and replaced) each time a batch reaches the socket. */
  let progress = Deferred.makeUnsafe<void>()
  const index = new Map<string, Array<Item>>()
  let queuedBytes = 0
  let queuedFrames = 0
  let inFlightBytes = 0
  let inFlight: Array<Item> = []
  let peakQueuedBytes = 0
  let framesEnqueued = 0
  let framesWritten = 0
  let bytesWritten = 0
  let superseded = 0
  let droppedOldest = 0
  let replacedAtCap = 0

  const unindex = (item: Item) => {
    if (item.supersede === undefined) return
    const list = index.get(item.supersede.key)
    if (list === undefined) return
    if (list[0] === item) list.shift()
    else {
      const i = list.indexOf(item)
      if (i >= 0) list.splice(i, 1)
    }
    if (list.length === 0) index.delete(item.supersede.key)
  }

  /** Removes an item's bytes from the queue (it stays as a tombstone if still queued). */
  const discard = (item: Item) => {
    if (item.frame === undefined) return
    item.frame = undefined
    queuedBytes -= item.size
    queuedFrames--
    if (item.written !== undefined) Deferred.doneUnsafe(item.written, Effect.void)
  }

  const full = (size: number) => queuedBytes + size > caps.maxBytes || Queue.sizeUnsafe(queue) + 1 > caps.maxFrames

  /**
   * At a cap, puts `frame` in the place of the newest queued frame of its key, when there is one that
   * nobody waits on and the bytes then fit; returns whether it did.
   */
  const replaceTail = (frame: Frame, size: number, key: string): boolean => {
    const list = index.get(key)
    const tail = list === undefined ? undefined : list[list.length - 1]
    if (tail === undefined || tail.frame === undefined || tail.written !== undefined) return false
    if (queuedBytes - tail.size + size > caps.maxBytes) return false
    tail.frame = frame
    queuedBytes += size - tail.size
    tail.size = size
    replacedAtCap++
    framesEnqueued++
    return true
  }

  const offer = (frame: Frame, supersede?: Supersede, written?: Deferred.Deferred<void>) => {
    const size = sizeOf(frame)
    if (
      supersede !== undefined && !supersede.replaces && written === undefined && full(size) &&
      replaceTail(frame, size, supersede.key)
    ) return
    const item: Item = { frame, size, supersede, written }
    if (supersede !== undefined) {
      const list = index.get(supersede.key)
      if (supersede.replaces) {
        if (list !== undefined) {
          for (const old of list) {
            discard(old)
            superseded++
          }
        }
        index.set(supersede.key, [item])
      } else if (list === undefined) index.set(supersede.key, [item])
      else list.push(item)
    }
    // Drop the oldest frames until this one fits under both caps.
    while (Queue.sizeUnsafe(queue) > 0 && full(item.size)) {
      const head = Queue.takeUnsafe(queue)
      if (head === undefined || head._tag !== "Success") break
      if (head.value.frame !== undefined) droppedOldest++
      discard(head.value)
      unindex(head.value)
    }
    Queue.offerUnsafe(queue, item)
    queuedBytes += item.size
    queuedFrames++
    framesEnqueued++
    if (queuedBytes > peakQueuedBytes) peakQueuedBytes = queuedBytes
  }

  const take = Effect.fnUntraced(function*(max: number) {
    while (true) {
      const items = yield* Queue.takeBetween(queue, 1, max)
      const live: Array<Item> = []
      const frames: Array<Uint8Array> = []
      for (const item of items) {
        unindex(item)
        if (item.frame === undefined) continue
        if (item.frame instanceof Uint8Array) frames.push(item.frame)
        else for (const part of item.frame) frames.push(part)
        live.push(item)
        queuedBytes -= item.size
        queuedFrames--
        inFlightBytes += item.size
      }
      if (frames.length === 0) continue
      inFlight = live
      return frames
    }
  })

  /** Wakes the senders waiting on this queue (they check it again). */
  const wakeWaiters = () => {
    const wake = progress
    progress = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(wake, Effect.void)
  }

  const written = Effect.sync(() => {
    lastProgress = nowMillis()
    wakeWaiters()
    for (const item of inFlight) {
      inFlightBytes -= item.size
      framesWritten++
      bytesWritten += item.size
      item.frame = undefined
      if (item.written !== undefined) Deferred.doneUnsafe(item.written, Effect.void)
    }
    inFlight = []
  })

  const clear = () => {
    while (Queue.sizeUnsafe(queue) > 0) {
      const head = Queue.takeUnsafe(queue)
      if (head === undefined || head._tag !== "Success") break
      discard(head.value)
    }
    index.clear()
    // A peer that left is not waited for.
    wakeWaiters()
    for (const item of inFlight) {
      inFlightBytes -= item.size
      if (item.written !== undefined) Deferred.doneUnsafe(item.written, Effect.void)
    }
    inFlight = []
  }

  const pressed = () =>
    (queuedFrames >= backpressure.frames || queuedBytes >= backpressure.bytes) &&
    nowMillis() - lastProgress < backpressure.stallMillis
  const relieved: Effect.Effect<"drained" | "stalled"> = Effect.suspend(function loop(): Effect.Effect<"drained" | "stalled"> {
    if (queuedFrames < backpressure.frames / 2 && queuedBytes < backpressure.bytes / 2) return Effect.succeed("drained")
    const quiet = nowMillis() - lastProgress
    if (quiet >= backpressure.stallMillis) return Effect.succeed("stalled")
    return Effect.raceFirst(Deferred.await(progress), Effect.sleep(Duration.millis(backpressure.stallMillis - quiet))).pipe(
      Effect.andThen(Effect.suspend(loop))
    )
  })

  return {
    offer,
    take,
    written,
    clear,
    pressed,
    relieved,
    stats: () => ({
      queuedBytes,
      queuedFrames,
      inFlightBytes,
      peakQueuedBytes,
      framesEnqueued,
      framesWritten,
      bytesWritten,
      superseded,
      droppedOldest,
      replacedAtCap
    })
  }
})

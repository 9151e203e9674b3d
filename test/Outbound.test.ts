import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import * as Outbound from "../src/node/internal/outbound.ts"

const caps = { maxBytes: 1024 * 1024, maxFrames: 1000 }
/** A mark no test here reaches. */
const noBackpressure = { frames: Number.MAX_SAFE_INTEGER, bytes: Number.MAX_SAFE_INTEGER, stallMillis: 1000 }

/** A frame whose first byte says which one it is. */
const frame = (id: number) => new Uint8Array([id, 0, 0, 0])

/** Takes everything queued and returns the ids of the frames, in order. */
const drain = (queue: Outbound.Outbound, frames: number) =>
  Effect.gen(function*() {
    const out: Array<number> = []
    while (out.length < frames) {
      for (const bytes of yield* queue.take(64)) out.push(bytes[0])
      yield* queue.written
    }
    return out
  })

describe("Outbound: caller-given supersede keys", () => {
  it.effect("a replacing frame drops every queued frame of its key and none of another key", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make(caps, noBackpressure)
      queue.offer(frame(1), { key: "a", replaces: true })
      queue.offer(frame(2), { key: "a", replaces: false })
      queue.offer(frame(3), { key: "b", replaces: false })
      queue.offer(frame(4), { key: "a", replaces: false })
      queue.offer(frame(5)) // no key: never superseded
      queue.offer(frame(6), { key: "b", replaces: true })
      queue.offer(frame(7), { key: "a", replaces: true })
      const stats = queue.stats()
      assert.strictEqual(stats.superseded, 4) // 3 (by 6) and 1, 2, 4 (by 7)
      assert.strictEqual(stats.queuedFrames, 3)
      assert.strictEqual(stats.queuedBytes, 12)
      assert.strictEqual(stats.framesEnqueued, 7)
      assert.deepStrictEqual(yield* drain(queue, 3), [5, 6, 7])
    }))

  it.effect("frames that do not replace are all kept, in order, until a replacing one follows", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make(caps, noBackpressure)
      queue.offer(frame(1), { key: "a", replaces: false })
      queue.offer(frame(2), { key: "a", replaces: false })
      queue.offer(frame(3), { key: "a", replaces: false })
      assert.strictEqual(queue.stats().superseded, 0)
      assert.deepStrictEqual(yield* drain(queue, 3), [1, 2, 3])
    }))

  it.effect("a frame already taken by the writer is not superseded", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make(caps, noBackpressure)
      queue.offer(frame(1), { key: "a", replaces: false })
      assert.deepStrictEqual(yield* drain(queue, 1), [1])
      queue.offer(frame(2), { key: "a", replaces: false })
      queue.offer(frame(3), { key: "a", replaces: true })
      assert.strictEqual(queue.stats().superseded, 1)
      assert.deepStrictEqual(yield* drain(queue, 1), [3])
      assert.strictEqual(queue.stats().framesWritten, 2)
    }))

  it.effect("a frame dropped for the cap is no longer indexed under its key", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 1024, maxFrames: 2 }, noBackpressure)
      queue.offer(frame(1), { key: "a", replaces: false })
      queue.offer(frame(2), { key: "b", replaces: false })
      queue.offer(frame(3), { key: "c", replaces: false }) // no queued frame of "c" to take the place of: drops 1, the oldest
      queue.offer(frame(4), { key: "a", replaces: true }) // drops 2 for the cap; nothing of "a" is left to supersede
      const stats = queue.stats()
      assert.strictEqual(stats.droppedOldest, 2)
      assert.strictEqual(stats.superseded, 0)
      assert.deepStrictEqual(yield* drain(queue, 2), [3, 4])
    }))

  it.effect("at the frame cap, a frame that does not replace takes the place of the newest queued frame of its key", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 1024, maxFrames: 3 }, noBackpressure)
      queue.offer(frame(1), { key: "a", replaces: false })
      queue.offer(frame(2), { key: "b", replaces: false })
      queue.offer(frame(3), { key: "a", replaces: false })
      // Full: 4 and then 5 take the place of 3 (the newest of "a"); 1 and 2 stay, nothing is dropped at the head.
      queue.offer(frame(4), { key: "a", replaces: false })
      queue.offer(frame(5), { key: "a", replaces: false })
      let stats = queue.stats()
      assert.deepStrictEqual([stats.replacedAtCap, stats.droppedOldest, stats.queuedFrames, stats.framesEnqueued], [2, 0, 3, 5])
      // A key with no queued frame of its own still makes room by dropping the oldest.
      queue.offer(frame(6), { key: "c", replaces: false })
      stats = queue.stats()
      assert.deepStrictEqual([stats.replacedAtCap, stats.droppedOldest, stats.queuedFrames, stats.queuedBytes], [2, 1, 3, 12])
      assert.deepStrictEqual(yield* drain(queue, 3), [2, 5, 6])
    }))

  it.effect("at the byte cap the same, when the newer frame fits in the place of the older one; else the oldest go", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 12, maxFrames: 100 }, noBackpressure)
      queue.offer(frame(1), { key: "a", replaces: false })
      queue.offer(frame(2), { key: "a", replaces: false })
      queue.offer(frame(3), { key: "a", replaces: false }) // 12 bytes: at the cap
      queue.offer(frame(4), { key: "a", replaces: false }) // takes the place of 3
      assert.deepStrictEqual([queue.stats().replacedAtCap, queue.stats().queuedBytes], [1, 12])
      // 8 bytes do not fit in the place of a 4-byte frame: the oldest are dropped until they fit.
      queue.offer(new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0]), { key: "a", replaces: false })
      const stats = queue.stats()
      assert.deepStrictEqual([stats.replacedAtCap, stats.droppedOldest, stats.queuedBytes], [1, 2, 12])
      assert.deepStrictEqual(yield* drain(queue, 2), [4, 5])
    }))

  it.effect("a frame somebody waits to see written is never replaced at the cap, nor does one replace another", () =>
    Effect.gen(function*() {
      const queue = yield* Outbound.make({ maxBytes: 1024, maxFrames: 2 }, noBackpressure)
      const written = Deferred.makeUnsafe<void>()
      queue.offer(frame(1), { key: "a", replaces: false })
      queue.offer(frame(2), { key: "a", replaces: false }, written)
      queue.offer(frame(3), { key: "a", replaces: false }) // the tail is awaited: 1 is dropped instead
      assert.deepStrictEqual([queue.stats().replacedAtCap, queue.stats().droppedOldest], [0, 1])
      assert.deepStrictEqual(yield* drain(queue, 2), [2, 3])
      assert.isTrue(Deferred.isDoneUnsafe(written))
    }))
})

/**
 * Group commit on its own: staged mutations, one save per batch, commits in order once durable, and a
 * failed save that fails every mutation it covered and commits none of them.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Result } from "effect"
import { Generation } from "dstate"
import { MailboxFull, PersistenceFailed } from "../src/DStateError.ts"
import * as GroupCommit from "../src/internal/groupCommit.ts"
import type { Owner } from "../src/internal/sync/types.ts"

const owner = (age: number): Owner<number, number> => ({
  generation: Generation.make(1, age),
  state: age,
  view: age,
  createdAt: 0,
  modifiedAt: 0
})

const setup = (capacity = 100) =>
  Effect.gen(function*() {
    let durable = owner(0)
    const saves: Array<{ readonly age: number; readonly change: number | undefined }> = []
    const commits: Array<number> = []
    const failures: Array<number> = []
    let gate: Deferred.Deferred<void> | undefined = yield* Deferred.make<void>()
    let failNext = false
    const flushes: Array<Fiber.Fiber<void>> = []
    const group: GroupCommit.GroupCommit<number, number> = GroupCommit.make<number, number, number>({
      capacity,
      full: new MailboxFull({ actor: "state/test", capacity }),
      prepare: (apply, base) => {
        const { change, state } = apply(base.state)
        return Result.succeed({ next: { ...owner(base.generation.age + 1), state, view: state }, change })
      },
      durable: () => durable,
      save: (next, change) =>
        Effect.gen(function*() {
          saves.push({ age: next.generation.age, change })
          if (gate !== undefined) yield* Deferred.await(gate)
          if (failNext) {
            failNext = false
            return yield* new PersistenceFailed({ stateName: "test", operation: "save", reason: "injected" })
          }
        }),
      commit: (next, _change, done) =>
        Effect.sync(() => {
          durable = next
          commits.push(next.generation.age)
          Deferred.doneUnsafe(done, Effect.succeed({ generation: next.generation, state: next.state }))
        }),
      failed: (_error, size) => Effect.sync(() => failures.push(size)),
      // The actor: each flush runs in a fiber of its own, one after the other.
      tellFlush: Effect.suspend(() => {
        const previous = flushes.at(-1)
        return Effect.asVoid(Effect.tap(
          Effect.forkDetach((previous === undefined ? Effect.void : Fiber.await(previous)).pipe(Effect.andThen(group.flush))),
          (fiber) => Effect.sync(() => flushes.push(fiber))
        ))
      })
    })
    const open = Effect.suspend(() => {
      const g = gate
      gate = undefined
      return g === undefined ? Effect.void : Deferred.succeed(g, undefined)
    })
    const settle = Effect.gen(function*() {
      for (let i = 0; i < 200; i++) yield* Effect.yieldNow
    })
    return {
      group,
      saves,
      commits,
      failures,
      open,
      settle,
      failNextSave: () => (failNext = true),
      durable: () => durable
    }
  })

const add = (n: number) => (s: number) => ({ state: s + n, change: n })

describe("group commit", () => {
  it.effect("mutations staged while a save is in flight are covered by the next save, committed in order", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      const first = yield* Effect.forkChild(t.group.mutate(add(1), 0, undefined))
      yield* t.settle
      assert.deepStrictEqual(t.saves, [{ age: 1, change: 1 }])
      const rest = yield* Effect.forEach([2, 3, 4, 5], (n) => Effect.forkChild(t.group.mutate(add(n), 0, undefined)))
      yield* t.settle
      // Still one save: the others wait, applied nowhere yet.
      assert.strictEqual(t.saves.length, 1)
      assert.deepStrictEqual(t.commits, [])
      assert.strictEqual(t.group.size(), 4)
      yield* t.open
      const results = yield* Effect.forEach([first, ...rest], Fiber.join)
      assert.deepStrictEqual(results.map((r) => r.generation.age), [1, 2, 3, 4, 5])
      assert.deepStrictEqual(results.map((r) => r.state), [1, 3, 6, 10, 15])
      // Two saves for five mutations: the second covers four, as one record with no change logged.
      assert.deepStrictEqual(t.saves, [{ age: 1, change: 1 }, { age: 5, change: undefined }])
      assert.deepStrictEqual(t.commits, [1, 2, 3, 4, 5])
      assert.strictEqual(t.group.size(), 0)
    }))

  it.effect("a failed save fails every mutation it covered and commits none; the next starts from the last durable", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      const first = yield* Effect.forkChild(t.group.mutate(add(1), 0, undefined))
      yield* t.settle
      const covered = yield* Effect.forEach([2, 3, 4], (n) => Effect.forkChild(t.group.mutate(add(n), 0, undefined)))
      yield* t.settle
      yield* t.open
      assert.strictEqual((yield* Fiber.join(first)).generation.age, 1)
      // The first batch was durable; now make the save of the three waiting ones fail.
      t.failNextSave()
      yield* t.settle
      for (const fiber of covered) {
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit) && Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" && o.value._tag === "PersistenceFailed"))
      }
      assert.deepStrictEqual(t.commits, [1])
      assert.deepStrictEqual(t.failures, [3])
      assert.strictEqual(t.durable().generation.age, 1)
      const after = yield* t.group.mutate(add(10), 0, undefined)
      assert.deepStrictEqual([after.generation.age, after.state], [2, 11])
      assert.deepStrictEqual(t.commits, [1, 2])
    }))

  it.effect("capacity: that many mutations may wait, one more fails with MailboxFull", () =>
    Effect.gen(function*() {
      const t = yield* setup(3)
      yield* Effect.forkChild(t.group.mutate(add(1), 0, undefined)) // taken by the first flush
      yield* t.settle
      yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(t.group.mutate(add(1), 0, undefined)))
      yield* t.settle
      assert.strictEqual(t.group.size(), 3)
      const refused = yield* Effect.flip(t.group.mutate(add(1), 0, undefined))
      assert.strictEqual(refused._tag, "MailboxFull")
    }))
})

import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import { Generation } from "dstate"

const g = Generation.make

describe("Generation", () => {
  describe("constructors", () => {
    it("make and initial", () => {
      assert.deepStrictEqual(g(3, 7), { incarnation: 3, age: 7 })
      assert.deepStrictEqual(Generation.initial(42), { incarnation: 42, age: 0 })
    })

    it("next increments the age only", () => {
      assert.deepStrictEqual(Generation.next(g(3, 7)), { incarnation: 3, age: 8 })
      assert.deepStrictEqual(Generation.next(Generation.initial(9)), { incarnation: 9, age: 1 })
      assert.deepStrictEqual(Generation.next(Generation.next(g(0, 0))), { incarnation: 0, age: 2 })
    })

    it("next does not mutate its input", () => {
      const before = g(1, 1)
      Generation.next(before)
      assert.deepStrictEqual(before, { incarnation: 1, age: 1 })
    })

    it("format renders incarnation.age", () => {
      assert.strictEqual(Generation.format(g(1700000000000, 12)), "1700000000000.12")
    })
  })

  describe("order", () => {
    it("compares incarnation first", () => {
      assert.strictEqual(Generation.order(g(1, 100), g(2, 0)), -1)
      assert.strictEqual(Generation.order(g(2, 0), g(1, 100)), 1)
    })

    it("compares age within one incarnation", () => {
      assert.strictEqual(Generation.order(g(5, 1), g(5, 2)), -1)
      assert.strictEqual(Generation.order(g(5, 2), g(5, 1)), 1)
    })

    it("is 0 for equal generations", () => {
      assert.strictEqual(Generation.order(g(5, 2), g(5, 2)), 0)
      assert.strictEqual(Generation.order(g(0, 0), g(0, 0)), 0)
    })

    it("sorts a list lexicographically", () => {
      const sorted = [g(2, 0), g(1, 5), g(1, 0), g(3, 1), g(2, 9), g(1, 5)].sort(Generation.order)
      assert.deepStrictEqual(sorted, [g(1, 0), g(1, 5), g(1, 5), g(2, 0), g(2, 9), g(3, 1)])
    })
  })

  describe("guards", () => {
    it("isNewer is strict", () => {
      assert.isTrue(Generation.isNewer(g(2, 0), g(1, 100)))
      assert.isTrue(Generation.isNewer(g(1, 1), g(1, 0)))
      assert.isFalse(Generation.isNewer(g(1, 0), g(1, 0)))
      assert.isFalse(Generation.isNewer(g(1, 0), g(1, 1)))
      assert.isFalse(Generation.isNewer(g(1, 100), g(2, 0)))
    })

    it("equals compares both fields", () => {
      assert.isTrue(Generation.equals(g(1, 2), g(1, 2)))
      assert.isFalse(Generation.equals(g(1, 2), g(1, 3)))
      assert.isFalse(Generation.equals(g(1, 2), g(2, 2)))
      assert.isFalse(Generation.equals(g(1, 2), g(2, 1)))
    })

    it.effect.prop(
      "order is antisymmetric and agrees with isNewer and equals",
      [Generation.Generation, Generation.Generation],
      ([a, b]) =>
        Effect.sync(() => {
          const ab = Generation.order(a, b)
          const expected = a.incarnation !== b.incarnation
            ? (a.incarnation < b.incarnation ? -1 : 1)
            : a.age === b.age
            ? 0
            : (a.age < b.age ? -1 : 1)
          assert.strictEqual(ab, expected)
          assert.strictEqual(Generation.order(b, a), -ab)
          assert.strictEqual(Generation.isNewer(a, b), ab > 0)
          assert.strictEqual(Generation.equals(a, b), ab === 0)
          assert.isTrue(Generation.isNewer(Generation.next(a), a))
        }),
      { arbitrary: { seed: 11, runs: 300 } }
    )
  })

  describe("schema", () => {
    it("accepts non-negative integers and rejects the rest", () => {
      const decode = Schema.decodeUnknownResult(Generation.Generation)
      assert.deepStrictEqual(Result.getOrThrow(decode({ incarnation: 3, age: 0 })), { incarnation: 3, age: 0 })
      assert.isTrue(Result.isFailure(decode({ incarnation: -1, age: 0 })))
      assert.isTrue(Result.isFailure(decode({ incarnation: 1, age: -1 })))
      assert.isTrue(Result.isFailure(decode({ incarnation: 1.5, age: 0 })))
      assert.isTrue(Result.isFailure(decode({ incarnation: 1 })))
    })
  })

  describe("nextIncarnation", () => {
    it("is floor(now) when nothing is known", () => {
      assert.strictEqual(Generation.nextIncarnation(1_700_000_000_000, undefined), 1_700_000_000_000)
      assert.strictEqual(Generation.nextIncarnation(1_700_000_000_000.9, undefined), 1_700_000_000_000)
      assert.strictEqual(Generation.nextIncarnation(0, undefined), 0)
    })

    it("is floor(now) when the clock is ahead of the last known incarnation", () => {
      assert.strictEqual(Generation.nextIncarnation(2000, 1000), 2000)
      assert.strictEqual(Generation.nextIncarnation(1001, 1000), 1001)
      assert.strictEqual(Generation.nextIncarnation(1001.7, 1000), 1001)
    })

    it("is lastKnown + 1 when the clock stepped back or stands still", () => {
      assert.strictEqual(Generation.nextIncarnation(500, 1000), 1001)
      assert.strictEqual(Generation.nextIncarnation(0, 1000), 1001)
      assert.strictEqual(Generation.nextIncarnation(1000, 1000), 1001)
      // floor(1000.5) = 1000 is not greater than 1000
      assert.strictEqual(Generation.nextIncarnation(1000.5, 1000), 1001)
    })

    const Millis = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4_000_000_000_000 }))

    it.effect.prop(
      "is always greater than lastKnown, and floor(now) whenever that is greater",
      [Millis, Millis, Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 0.999 }))],
      ([now, lastKnown, fraction]) =>
        Effect.sync(() => {
          const clock = now + fraction
          const result = Generation.nextIncarnation(clock, lastKnown)
          assert.isTrue(result > lastKnown)
          assert.isTrue(Number.isInteger(result))
          assert.strictEqual(result, now > lastKnown ? now : lastKnown + 1)
        }),
      { arbitrary: { seed: 12345, runs: 500 } }
    )

    it.effect.prop(
      "after a clock step back, repeated restarts keep increasing",
      [Millis, Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))],
      ([start, stepBack]) =>
        Effect.sync(() => {
          const first = Generation.nextIncarnation(start, undefined)
          const clockAfterStepBack = Math.max(0, start - stepBack)
          const second = Generation.nextIncarnation(clockAfterStepBack, first)
          const third = Generation.nextIncarnation(clockAfterStepBack, second)
          assert.strictEqual(first, start)
          assert.strictEqual(second, first + 1)
          assert.strictEqual(third, first + 2)
        }),
      { arbitrary: { seed: 54321, runs: 200 } }
    )
  })
})

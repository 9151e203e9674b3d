import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Generation } from "dstate"
import * as Acceptance from "../src/internal/sync/acceptance.ts"

const accept: Acceptance.Verdict = { _tag: "Accept" }
const duplicate: Acceptance.Verdict = { _tag: "Duplicate" }
const stale: Acceptance.Verdict = { _tag: "Stale" }
const gap = (reason: Acceptance.GapReason): Acceptance.Verdict => ({ _tag: "Gap", reason })

const held = Generation.make(5, 10)

// One row per line of the table in src/internal/acceptance.ts:
// [row, held, incoming, snapshot verdict, delta verdict]
const table: ReadonlyArray<
  readonly [string, Generation.Generation | undefined, Generation.Generation, Acceptance.Verdict, Acceptance.Verdict]
> = [
  ["nothing held", undefined, Generation.make(5, 10), accept, gap("NoBase")],
  ["nothing held, age 0", undefined, Generation.make(0, 0), accept, gap("NoBase")],
  ["lower incarnation held (incoming newer incarnation, age 0)", held, Generation.make(6, 0), accept, gap("NewIncarnation")],
  ["lower incarnation held (incoming newer incarnation, higher age)", held, Generation.make(6, 11), accept, gap("NewIncarnation")],
  ["lower incarnation held (incoming newer incarnation, lower age)", held, Generation.make(6, 3), accept, gap("NewIncarnation")],
  ["higher incarnation held (incoming older incarnation, lower age)", held, Generation.make(4, 3), stale, stale],
  ["higher incarnation held (incoming older incarnation, same age)", held, Generation.make(4, 10), stale, stale],
  ["higher incarnation held (incoming older incarnation, higher age)", held, Generation.make(4, 11), stale, stale],
  ["same incarnation, age < held", held, Generation.make(5, 9), stale, stale],
  ["same incarnation, age 0 < held", held, Generation.make(5, 0), stale, stale],
  ["same incarnation, age = held", held, Generation.make(5, 10), duplicate, duplicate],
  ["same incarnation, age = held + 1", held, Generation.make(5, 11), accept, accept],
  ["same incarnation, age = held + 2", held, Generation.make(5, 12), accept, gap("MissingAges")],
  ["same incarnation, age far above held", held, Generation.make(5, 1000), accept, gap("MissingAges")]
]

describe("acceptance", () => {
  describe("snapshot", () => {
    for (const [row, h, incoming, expected] of table) {
      it(row, () => {
        assert.deepStrictEqual(Acceptance.snapshot(h, incoming), expected)
      })
    }

    it("age 0 held, same incarnation: age 0 is Duplicate, age 1 Accept", () => {
      assert.deepStrictEqual(Acceptance.snapshot(Generation.make(7, 0), Generation.make(7, 0)), duplicate)
      assert.deepStrictEqual(Acceptance.snapshot(Generation.make(7, 0), Generation.make(7, 1)), accept)
    })
  })

  describe("delta", () => {
    for (const [row, h, incoming, , expected] of table) {
      it(row, () => {
        assert.deepStrictEqual(Acceptance.delta(h, incoming), expected)
      })
    }

    it("age 0 held, same incarnation: age 1 Accept, age 2 Gap(MissingAges)", () => {
      assert.deepStrictEqual(Acceptance.delta(Generation.make(7, 0), Generation.make(7, 1)), accept)
      assert.deepStrictEqual(Acceptance.delta(Generation.make(7, 0), Generation.make(7, 2)), gap("MissingAges"))
    })
  })

  // Small ranges so that equal incarnations and equal ages come up often.
  const SmallInt = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3 }))
  const SmallGeneration = Schema.Struct({ incarnation: SmallInt, age: SmallInt })

  it.effect.prop(
    "snapshot is Accept iff newer, Duplicate iff equal, Stale iff older",
    [SmallGeneration, SmallGeneration],
    ([a, b]) =>
      Effect.sync(() => {
        const verdict = Acceptance.snapshot(a, b)
        const cmp = Generation.order(b, a)
        const expected = cmp > 0 ? accept : cmp === 0 ? duplicate : stale
        assert.deepStrictEqual(verdict, expected)
        assert.strictEqual(verdict._tag === "Accept", Generation.isNewer(b, a))
        assert.strictEqual(verdict._tag === "Duplicate", Generation.equals(a, b))
        assert.strictEqual(verdict._tag === "Stale", Generation.isNewer(a, b))
      }),
    { arbitrary: { seed: 20240601, runs: 500 } }
  )

  it.effect.prop(
    "snapshot ordering holds for unbounded generations",
    [Generation.Generation, Generation.Generation],
    ([a, b]) =>
      Effect.sync(() => {
        const cmp = Generation.order(b, a)
        assert.deepStrictEqual(Acceptance.snapshot(a, b), cmp > 0 ? accept : cmp === 0 ? duplicate : stale)
      }),
    { arbitrary: { seed: 7, runs: 300 } }
  )

  it.effect.prop(
    "delta: Accept only for the next age of the same incarnation; never Accept what snapshot rejects",
    [SmallGeneration, SmallGeneration],
    ([a, b]) =>
      Effect.sync(() => {
        const verdict = Acceptance.delta(a, b)
        assert.strictEqual(verdict._tag === "Accept", b.incarnation === a.incarnation && b.age === a.age + 1)
        const snap = Acceptance.snapshot(a, b)
        if (snap._tag !== "Accept") assert.deepStrictEqual(verdict, snap)
      }),
    { arbitrary: { seed: 99, runs: 500 } }
  )
})

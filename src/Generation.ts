/**
 * Generations order the versions of one owner's state. A generation is an
 * `{ incarnation, age }` pair compared lexicographically: the incarnation
 * changes whenever the owner loses its state (a restart without persistence,
 * a failed load), the age grows by one per committed mutation.
 *
 * @since 0.1.0
 */
import { type Order, Schema } from "effect"
import * as Pure from "./internal/sync/generation.ts"

/**
 * The version of one owner's state.
 *
 * - `incarnation`: chosen when the owner starts with fresh state; strictly
 *   greater than any earlier incarnation of that node.
 * - `age`: the number of mutations committed in this incarnation.
 *
 * @category models
 * @since 0.1.0
 */
export const Generation = Schema.Struct({
  incarnation: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  age: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
})

/**
 * @category models
 * @since 0.1.0
 */
export interface Generation {
  readonly incarnation: number
  readonly age: number
}

/**
 * Builds a generation.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (incarnation: number, age: number): Generation => ({ incarnation, age })

/**
 * The first generation of an incarnation (age 0).
 *
 * @category constructors
 * @since 0.1.0
 */
export const initial = (incarnation: number): Generation => ({ incarnation, age: 0 })

/**
 * The generation after one more committed mutation.
 *
 * @category combinators
 * @since 0.1.0
 */
export const next = (self: Generation): Generation => ({ incarnation: self.incarnation, age: self.age + 1 })

/**
 * Lexicographic order: incarnation first, then age.
 *
 * @category models
 * @since 0.1.0
 */
export const order: Order.Order<Generation> = Pure.compare

/**
 * `true` when `a` is strictly newer than `b`.
 *
 * @category guards
 * @since 0.1.0
 */
export const isNewer: (a: Generation, b: Generation) => boolean = Pure.isNewer

/**
 * `true` when both generations are the same version.
 *
 * @category guards
 * @since 0.1.0
 */
export const equals: (a: Generation, b: Generation) => boolean = Pure.equals

/**
 * Chooses a new incarnation: the current wall-clock time in milliseconds, or
 * one more than the highest incarnation known for this node when the clock is
 * behind it (a clock stepped back must never produce an older incarnation).
 *
 * @category constructors
 * @since 0.1.0
 */
export const nextIncarnation = (nowMillis: number, lastKnown: number | undefined): number =>
  Math.max(Math.floor(nowMillis), lastKnown === undefined ? 0 : lastKnown + 1)

/**
 * Renders a generation as `incarnation.age`, for logs.
 *
 * @category combinators
 * @since 0.1.0
 */
export const format: (self: Generation) => string = Pure.format

/**
 * The order of generations as plain functions, for the sync core (which
 * imports nothing from `effect`); `Generation.ts` exposes the same functions
 * to users.
 * @internal
 */
import type { Generation } from "../../Generation.ts"

export const compare = (a: Generation, b: Generation): -1 | 0 | 1 =>
  a.incarnation < b.incarnation
    ? -1
    : a.incarnation > b.incarnation
    ? 1
    : a.age < b.age
    ? -1
    : a.age > b.age
    ? 1
    : 0

export const isNewer = (a: Generation, b: Generation): boolean => compare(a, b) > 0

export const equals = (a: Generation, b: Generation): boolean => a.incarnation === b.incarnation && a.age === b.age

/** `true` when `next` is the generation right after `base` (same incarnation, one more age). */
export const follows = (next: Generation, base: Generation): boolean =>
  next.incarnation === base.incarnation && next.age === base.age + 1

export const format = (self: Generation): string => `${self.incarnation}.${self.age}`

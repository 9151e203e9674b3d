/**
 * The ordering rules for inbound snapshots and deltas.
 *
 * | held \ incoming         | snapshot    | delta                      |
 * |-------------------------|-------------|----------------------------|
 * | nothing                 | Accept      | Gap (no base)              |
 * | lower incarnation       | Accept      | Gap (new incarnation)      |
 * | higher incarnation      | Stale       | Stale                      |
 * | same inc, age < held    | Stale       | Stale                      |
 * | same inc, age = held    | Duplicate   | Duplicate                  |
 * | same inc, age = held+1  | Accept      | Accept                     |
 * | same inc, age > held+1  | Accept      | Gap (missing ages)         |
 * @internal
 */
import type { Generation } from "../../Generation.ts"

export type GapReason = "NoBase" | "NewIncarnation" | "MissingAges"

export type Verdict =
  | { readonly _tag: "Accept" }
  | { readonly _tag: "Duplicate" }
  | { readonly _tag: "Stale" }
  | { readonly _tag: "Gap"; readonly reason: GapReason }

const accept: Verdict = { _tag: "Accept" }
const duplicate: Verdict = { _tag: "Duplicate" }
const stale: Verdict = { _tag: "Stale" }
const gap = (reason: GapReason): Verdict => ({ _tag: "Gap", reason })

export const snapshot = (held: Generation | undefined, incoming: Generation): Verdict => {
  if (held === undefined || incoming.incarnation > held.incarnation) return accept
  if (incoming.incarnation < held.incarnation || incoming.age < held.age) return stale
  return incoming.age === held.age ? duplicate : accept
}

export const delta = (held: Generation | undefined, incoming: Generation): Verdict => {
  if (held === undefined) return gap("NoBase")
  if (incoming.incarnation > held.incarnation) return gap("NewIncarnation")
  if (incoming.incarnation < held.incarnation || incoming.age < held.age) return stale
  if (incoming.age === held.age) return duplicate
  return incoming.age === held.age + 1 ? accept : gap("MissingAges")
}

/**
 * The departed set of one state: for each peer that left, the highest
 * incarnation whose messages are ignored from then on (a peer that left
 * without a held view is ignored entirely until it joins again), and the
 * newest generation accepted from each peer whose view was removed, which
 * still bounds what may be accepted when it comes back. Both are bounded by
 * `departedCapacity`, forgetting the oldest departure first. Plain data.
 * @internal
 */
import type { Generation } from "../../Generation.ts"
import type { NodeId } from "../../NodeId.ts"
import { BoundedLru } from "../lru.ts"
import type { DepartedSizes } from "./types.ts"

/** The incarnation recorded for a peer that left before any of its views arrived: every one is ignored. */
export const everyIncarnation = Number.MAX_SAFE_INTEGER

export class Departed {
  readonly #incarnations: BoundedLru<NodeId, number>
  readonly #lastSeen: BoundedLru<NodeId, Generation>
  readonly #report: ((sizes: DepartedSizes) => void) | undefined

  constructor(capacity: number, report: ((sizes: DepartedSizes) => void) | undefined) {
    this.#incarnations = new BoundedLru(capacity)
    this.#lastSeen = new BoundedLru(capacity)
    this.#report = report
  }

  /** Whether a message of `generation` from `node` belongs to a departed incarnation. */
  ignores(node: NodeId, generation: Generation): boolean {
    const incarnation = this.#incarnations.get(node)
    return incarnation !== undefined && generation.incarnation <= incarnation
  }

  has(node: NodeId): boolean {
    return this.#incarnations.has(node)
  }

  /** `node` left: its incarnations up to `incarnation` are ignored from now on. */
  left(node: NodeId, incarnation: number): void {
    this.#incarnations.set(node, incarnation)
    this.#changed()
  }

  /** `node` joined again: its new incarnation is welcome. */
  rejoined(node: NodeId): void {
    this.#incarnations.delete(node)
  }

  /** The newest generation accepted from `node`, recorded as its view is removed. */
  remember(node: NodeId, generation: Generation): void {
    this.#lastSeen.set(node, generation)
    this.#changed()
  }

  lastSeen(node: NodeId): Generation | undefined {
    return this.#lastSeen.get(node)
  }

  get sizes(): DepartedSizes {
    return { departed: this.#incarnations.size, remembered: this.#lastSeen.size, capacity: this.#incarnations.capacity }
  }

  #changed(): void {
    this.#report?.(this.sizes)
  }
}

/**
 * A small, fast, seedable pseudo-random generator for simulations: one root
 * seed derives independent streams (network, faults, workload, each node) by
 * label, so that the same seed reproduces the same run bit for bit and adding
 * a consumer of randomness does not shift the others.
 *
 * @since 0.1.0
 */

/**
 * A deterministic random stream.
 *
 * @category models
 * @since 0.1.0
 */
export interface Prng {
  /** The seed this stream was made from. */
  readonly seed: number
  /** A float in [0, 1). */
  readonly next: () => number
  /** An integer in [min, max] (inclusive). */
  readonly int: (min: number, max: number) => number
  /** `true` with probability `p`. */
  readonly chance: (p: number) => boolean
  /** One element of a non-empty array. */
  readonly pick: <A>(items: ReadonlyArray<A>) => A
  /** An independent stream derived from this one's seed and a label. */
  readonly derive: (label: string) => Prng
}

const hashString = (s: string, h: number): number => {
  let x = h >>> 0
  for (let i = 0; i < s.length; i++) {
    x = Math.imul(x ^ s.charCodeAt(i), 0x9e3779b1)
    x = (x ^ (x >>> 15)) >>> 0
  }
  return x >>> 0
}

/**
 * A stream from a 32-bit seed (sfc32 seeded by splitmix32).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (seed: number): Prng => {
  let s = seed >>> 0
  const splitmix = () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = splitmix()
  let b = splitmix()
  let c = splitmix()
  let d = splitmix()
  const next = () => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) >>> 0
    return t / 4294967296
  }
  for (let i = 0; i < 12; i++) next()
  const prng: Prng = {
    seed: seed >>> 0,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    chance: (p) => p > 0 && next() < p,
    pick: (items) => items[Math.floor(next() * items.length)],
    derive: (label) => make(hashString(label, seed ^ 0x5bd1e995))
  }
  return prng
}

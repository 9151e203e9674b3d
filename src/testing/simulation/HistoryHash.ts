/**
 * The history hash of a run: two FNV-1a streams over every frame, view map,
 * rejection and workload outcome, in order, so that the same seed gives the
 * same digest bit for bit and any divergence in a replay shows at once.
 * Byte arrays enter as their length and CRC-32.
 *
 * @since 0.1.0
 */
import { crc32 } from "node:zlib"

/** Feeds values into the hash, in order; `digest` reads it as 16 hex digits. */
export interface Hasher {
  str: (s: string) => void
  num: (n: number) => void
  bytes: (b: Uint8Array) => void
  digest: () => string
}

/** A hasher at its initial state. */
export const make = (): Hasher => {
  let h1 = 0x811c9dc5
  let h2 = 0x01000193 ^ 0x9e3779b9
  const byte = (b: number) => {
    h1 = Math.imul(h1 ^ b, 0x01000193)
    h2 = Math.imul(h2 ^ b, 0x5bd1e995) ^ (h2 >>> 13)
  }
  const num = (n: number) => {
    const s = String(n)
    for (let i = 0; i < s.length; i++) byte(s.charCodeAt(i) & 0xff)
    byte(0x2c)
  }
  return {
    str: (s) => {
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i)
        byte(c & 0xff)
        if (c > 0xff) byte(c >>> 8)
      }
      byte(0)
    },
    num,
    bytes: (b) => {
      num(b.length)
      num(crc32(b))
    },
    digest: () => (h1 >>> 0).toString(16).padStart(8, "0") + (h2 >>> 0).toString(16).padStart(8, "0")
  }
}

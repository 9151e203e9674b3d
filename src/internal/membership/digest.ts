/**
 * Anti-entropy: the periodic exchange with one random peer that repairs what
 * gossip missed (chitchat's digest and delta, with a first round of hashes so
 * that a steady cluster exchanges a few bytes, not its member list).
 *
 * The live records (alive or suspect) of a node are split into buckets by a
 * hash of the member's id; a bucket's hash is the sum of its records' version
 * hashes, so it does not depend on the order the records were learned in.
 *
 * 1. A sends B its bucket hashes (`hashes`).
 * 2. B compares them with its own over the same number of buckets; for the
 *    buckets that differ, it sends A the versions of its live records there
 *    (`digest`).
 * 3. A answers with the records B lacks or holds older (`delta`: tombstones
 *    included, so that a leave or a down missed by B reaches it); when B's
 *    digest lists records A lacks or holds older, A also sends B its own
 *    digest of those buckets, which B answers with a delta in turn.
 *
 * Tombstones are not hashed: two nodes agree once they hold the same live
 * records, whatever tombstones each still remembers.
 *
 * Pure and deterministic.
 * @internal
 */
import { isLive, type Member, supersedes, type Version } from "./member.ts"

/** Records per bucket the sender of hashes aims at. */
const recordsPerBucket = 8

/** The most buckets a hash round lists. */
export const maxBuckets = 64

/** FNV-1a, 32 bits, of a string. */
const fnv = (s: string, seed = 0x811c9dc5): number => {
  let h = seed >>> 0
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

/** The bucket of a member among `buckets`. */
export const bucketOf = (node: string, buckets: number): number => fnv(node, 0x2545f491) % buckets

/** The hash of one record's version. */
const versionHash = (v: Version): number => fnv(`${v.node}\u0000${v.session}\u0000${v.started}\u0000${v.incarnation}\u0000${v.status}`)

/** How many buckets to hash `live` records into. */
export const bucketCount = (live: number): number => Math.min(maxBuckets, Math.max(1, Math.ceil(live / recordsPerBucket)))

/** The hash of each bucket of the live records. */
export const hashes = (records: Iterable<Member>, buckets: number): Array<number> => {
  const out = new Array<number>(buckets).fill(0)
  for (const m of records) {
    if (!isLive(m)) continue
    const b = bucketOf(m.node, buckets)
    out[b] = (out[b] + versionHash(m)) >>> 0
  }
  return out
}

/** The versions of the live records in `buckets` (of `count` buckets). */
export const digest = (records: Iterable<Member>, count: number, buckets: ReadonlyArray<number>): Array<Version> => {
  const wanted = new Set(buckets)
  const out: Array<Version> = []
  for (const m of records) {
    if (!isLive(m) || !wanted.has(bucketOf(m.node, count))) continue
    out.push({ node: m.node, session: m.session, started: m.started, incarnation: m.incarnation, status: m.status })
  }
  return out
}

/**
 * Compares a peer's digest of `buckets` (of `count`) with this node's records: the records to send it
 * (`delta`), and whether it holds records this node lacks or holds older (`behind`).
 */
export const compare = (
  records: ReadonlyMap<string, Member>,
  theirs: ReadonlyArray<Version>,
  count: number,
  buckets: ReadonlyArray<number>
): { readonly delta: Array<Member>; readonly behind: boolean } => {
  const wanted = new Set(buckets)
  const listed = new Map<string, Version>()
  let behind = false
  for (const v of theirs) {
    if (!wanted.has(bucketOf(v.node, count))) continue
    listed.set(v.node, v)
    const mine = records.get(v.node)
    if (mine === undefined || supersedes(v, mine)) behind = true
  }
  const delta: Array<Member> = []
  for (const m of records.values()) {
    if (!wanted.has(bucketOf(m.node, count))) continue
    const other = listed.get(m.node)
    if (other === undefined ? isLive(m) : supersedes(m, other)) delta.push(m)
  }
  return { delta, behind }
}

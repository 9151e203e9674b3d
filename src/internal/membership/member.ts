/**
 * A member record as gossiped, and the order that says which of two records
 * about the same node is newer (memberlist's `state.go` rules, with sessions).
 *
 * A record is about one session (process lifetime) of a node. Records of
 * different sessions are ordered by the session's start (`started`, wall-clock
 * milliseconds, then the session id): a newer session replaces an older one.
 * Within a session, `left` is final (the node said goodbye); otherwise the
 * higher incarnation wins, and at the same incarnation `down` beats `suspect`
 * beats `alive` (so only the node itself, by raising its incarnation, can
 * refute a suspicion or a down). A node's groups travel in its record; its
 * incarnation doubles as the version of its groups (every change of its groups
 * raises it).
 * @internal
 */

/** What a record says of its member. `suspect` is gossiped for a member some node's detector finds silent. */
export type Status = "alive" | "suspect" | "down" | "left"

/** One node's record. */
export interface Member {
  readonly node: string
  readonly session: string
  /** When the session started (wall-clock milliseconds): orders sessions of one node. */
  readonly started: number
  readonly incarnation: number
  readonly status: Status
  readonly host: string
  readonly port: number
  readonly groups: ReadonlyArray<string>
}

/** What a digest lists of a record: enough to tell which of two records is newer. */
export interface Version {
  readonly node: string
  readonly session: string
  readonly started: number
  readonly incarnation: number
  readonly status: Status
}

const rank: Record<Status, number> = { alive: 0, suspect: 1, down: 2, left: 3 }

/** Whether the record is of a member (alive or suspect), not a tombstone (down or left). */
export const isLive = (m: Version): boolean => m.status === "alive" || m.status === "suspect"

/** Compares the sessions of two records of one node: negative when `a`'s is older. */
export const compareSessions = (a: Version, b: Version): number =>
  a.started !== b.started ? a.started - b.started : a.session < b.session ? -1 : a.session > b.session ? 1 : 0

/** Whether `a` supersedes `b` (two records of the same node). */
export const supersedes = (a: Version, b: Version): boolean => {
  const sessions = compareSessions(a, b)
  if (sessions !== 0) return sessions > 0
  if (b.status === "left") return false
  if (a.status === "left") return true
  if (a.incarnation !== b.incarnation) return a.incarnation > b.incarnation
  return rank[a.status] > rank[b.status]
}

/** The version of a record. */
export const version = (m: Member): Version => ({
  node: m.node,
  session: m.session,
  started: m.started,
  incarnation: m.incarnation,
  status: m.status
})

/** Whether two lists of groups hold the same names in the same order. */
export const sameGroups = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((g, i) => g === b[i])

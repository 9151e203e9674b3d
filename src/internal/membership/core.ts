/**
 * The membership of one node as a plain state machine, apart from any I/O
 * (chitchat's `ClusterState` and failure detector, memberlist's `state.go`):
 * the table of member records, the changes waiting to be gossiped, the local
 * reachability of members, and the rules that merge what peers say. A shell
 * (the TCP transport, the membership bench) feeds it frames, detector
 * judgments and the time, sends what it returns and publishes its events.
 * Time is passed in (monotonic milliseconds); the core draws no randomness.
 *
 * How a member's state changes, as this node sees it:
 *
 * - **Joined**: a live record of a node (or of a newer session of it) is
 *   learned, from gossip, a digest repair or a direct handshake
 *   (`Discovered`).
 * - **Unreachable**: only this node's own failure detector makes a member
 *   unreachable (`silent`), and only its own detector makes it reachable
 *   again (`heard`). Reachability is a local observation: a member one node
 *   cannot hear may be healthy for the others. On `silent` the core also
 *   gossips the member as `suspect`; a gossiped suspicion changes no other
 *   node's reachability, but the suspected node, on hearing it, refutes it
 *   (raises its incarnation and gossips itself alive), as in memberlist.
 * - **Down**: a member unreachable here for `downAfter` without interruption
 *   is declared down by this node, which gossips `down` at the member's
 *   incarnation; every node that hears it drops the member (`Gone`), except
 *   the member itself, which refutes it with a higher incarnation and so
 *   joins again. A graceful leave gossips `left`, final for the session.
 * - A record of a newer session of a node replaces the old one: the old
 *   session is gone (`restarted`), the new one discovered.
 *
 * The suspicion timeout (`downAfter`) is scaled by the multiplier passed to
 * `tick` (1 by default): the place where a local-health score (Lifeguard)
 * lengthens timeouts while this node itself is slow.
 * @internal
 */
import * as Broadcasts from "./broadcasts.ts"
import * as Digest from "./digest.ts"
import { isLive, type Member, sameGroups, supersedes, type Version } from "./member.ts"

export type { Member, Status, Version } from "./member.ts"

/** What the core tells its shell. */
export type Event =
  /** A live record of a node or of a newer session of it: a member to connect to. */
  | { readonly _tag: "Discovered"; readonly member: Member }
  /** A live member's groups or address changed. */
  | { readonly _tag: "Updated"; readonly member: Member }
  /** This node's detector finds the member silent (at `since`, monotonic milliseconds). */
  | { readonly _tag: "Unreachable"; readonly node: string; readonly since: number }
  /** The member answers again. */
  | { readonly _tag: "Reachable"; readonly node: string }
  /** The member is no longer one: it left, was declared down, or restarted as a newer session. */
  | { readonly _tag: "Gone"; readonly member: Member; readonly reason: "left" | "down" | "restarted" }

export interface Config {
  /** How long a member stays unreachable before this node declares it down, in milliseconds. */
  readonly downAfterMillis: number
  /** memberlist's `RetransmitMult`: a change is gossiped `multiplier × ⌈log10(n + 1)⌉` times by each node. */
  readonly retransmitMultiplier: number
  /** How many tombstones (down or left records) are remembered, the oldest forgotten first. */
  readonly maxTombstones: number
}

export const defaultConfig: Config = { downAfterMillis: 30_000, retransmitMultiplier: 4, maxTombstones: 1024 }

/** The membership of one node. */
export interface Core {
  readonly self: () => Member
  /** Every record held, this node's included, tombstones included. */
  readonly records: () => ReadonlyMap<string, Member>
  /** The live members other than this node. */
  readonly members: () => Array<Member>
  /** The members this node's detector finds silent, with since when. */
  readonly unreachable: () => ReadonlyMap<string, number>
  /** Merges gossiped records; a new one is gossiped on (`relay`), a refutation of this node's always is. */
  readonly receive: (records: ReadonlyArray<Member>, now: number, relay?: boolean) => Array<Event>
  /**
   * A member proved itself alive over a direct connection (its handshake record): a newer session replaces
   * the old one, and a live session held as down or suspect is taken back as alive, gossiped at a higher
   * incarnation on its behalf (it adopts the incarnation when it hears it).
   */
  readonly direct: (record: Member, now: number) => Array<Event>
  /** This node's detector finds `node` silent. */
  readonly silent: (node: string, now: number) => Array<Event>
  /** This node's detector hears `node` again. */
  readonly heard: (node: string, now: number) => Array<Event>
  /** Declares down the members unreachable for `downAfter × multiplier` (`multiplier`: local health). */
  readonly tick: (now: number, multiplier?: number) => Array<Event>
  /** This node's groups changed: its incarnation rises and the new record is gossiped. */
  readonly setGroups: (groups: ReadonlyArray<string>) => Member
  /** This node leaves gracefully: its `left` record is gossiped. */
  readonly leave: () => Member
  /** The records for one gossip frame, within `budget` bytes (at least one when any waits). */
  readonly gossip: (budget: number) => Array<Member>
  /** How many changes wait to be gossiped. */
  readonly pending: () => number
  /** Forgets a node's record without a trace (a node an external membership no longer lists). */
  readonly forget: (node: string) => void
  /** The first round of anti-entropy: this node's bucket hashes. */
  readonly hashes: () => Array<number>
  /** A peer's bucket hashes: the digest of the buckets that differ (undefined when none do). */
  readonly onHashes: (theirs: ReadonlyArray<number>) => { readonly buckets: Array<number>; readonly digest: Array<Version> } | undefined
  /**
   * A peer's digest of `buckets` (of `count`): the records it lacks, and (when `reply` and it holds records
   * this node lacks) this node's own digest of those buckets for it to answer.
   */
  readonly onDigest: (
    theirs: ReadonlyArray<Version>,
    count: number,
    buckets: ReadonlyArray<number>,
    reply: boolean
  ) => { readonly delta: Array<Member>; readonly digest: Array<Version> | undefined }
  /** Records a peer sent in answer to a digest: merged (not gossiped on); returns the events and the corrections to send back. */
  readonly onDelta: (records: ReadonlyArray<Member>, now: number) => { readonly events: Array<Event>; readonly corrections: Array<Member> }
}

/** A core whose own record is `self` (alive). `sizeOf` is the encoded size of a record in a gossip frame. */
export const make = (self: Member, config: Config, sizeOf: (m: Member) => number): Core => {
  const table = new Map<string, Member>([[self.node, self]])
  let own = self
  const queue = Broadcasts.make<Member>(config.retransmitMultiplier)
  /** Members this node's detector finds silent, with since when. */
  const silentSince = new Map<string, number>()
  /** Tombstones in the order they were made, oldest first. */
  const tombstones = new Set<string>()
  let live = 1

  const broadcast = (m: Member) => queue.queue(m.node, m, sizeOf(m))

  /** The bucket hashes last computed, until the table changes. */
  let cached: { readonly count: number; readonly hashes: Array<number> } | undefined
  const hashesOver = (count: number) => {
    if (cached === undefined || cached.count !== count) cached = { count, hashes: Digest.hashes(table.values(), count) }
    return cached.hashes
  }

  const store = (m: Member) => {
    cached = undefined
    const before = table.get(m.node)
    if (before !== undefined && isLive(before)) live--
    if (isLive(m)) live++
    table.set(m.node, m)
    tombstones.delete(m.node)
    if (!isLive(m)) {
      tombstones.add(m.node)
      if (tombstones.size > config.maxTombstones) {
        const oldest = tombstones.values().next().value!
        tombstones.delete(oldest)
        table.delete(oldest)
      }
    }
  }

  const setOwn = (m: Member) => {
    own = m
    store(m)
    broadcast(m)
  }

  /** A record about this node: refuted when it says less than this node would, adopted when only its incarnation is ahead. */
  const aboutSelf = (m: Member) => {
    if (m.session !== own.session || own.status === "left") return
    if (m.incarnation < own.incarnation) return
    const same = m.status === "alive" && m.host === own.host && m.port === own.port && sameGroups(m.groups, own.groups)
    if (same) {
      if (m.incarnation > own.incarnation) {
        own = { ...own, incarnation: m.incarnation }
        store(own)
      }
      return
    }
    setOwn({ ...own, status: "alive", incarnation: m.incarnation + 1 })
  }

  /** Stores `m`, superseding `before`; the events it makes. */
  const replace = (m: Member, before: Member | undefined, events: Array<Event>) => {
    store(m)
    if (before !== undefined && isLive(before)) {
      if (before.session !== m.session) {
        silentSince.delete(m.node)
        events.push({ _tag: "Gone", member: before, reason: "restarted" })
        if (isLive(m)) events.push({ _tag: "Discovered", member: m })
        else events.push({ _tag: "Gone", member: m, reason: m.status === "left" ? "left" : "down" })
        return
      }
      if (!isLive(m)) {
        silentSince.delete(m.node)
        events.push({ _tag: "Gone", member: m, reason: m.status === "left" ? "left" : "down" })
        return
      }
      if (!sameGroups(before.groups, m.groups) || before.host !== m.host || before.port !== m.port) {
        events.push({ _tag: "Updated", member: m })
      }
      return
    }
    if (isLive(m)) events.push({ _tag: "Discovered", member: m })
  }

  const merge = (m: Member, relay: boolean, events: Array<Event>): boolean => {
    if (m.node === own.node) {
      aboutSelf(m)
      return false
    }
    const before = table.get(m.node)
    if (before !== undefined && !supersedes(m, before)) return false
    replace(m, before, events)
    if (relay) broadcast(m)
    return true
  }

  const receive = (records: ReadonlyArray<Member>, _now: number, relay = true) => {
    const events: Array<Event> = []
    for (const m of records) merge(m, relay, events)
    return events
  }

  const direct = (record: Member, _now: number) => {
    const events: Array<Event> = []
    if (record.node === own.node) return events
    const before = table.get(record.node)
    if (before === undefined || before.session !== record.session) {
      // A direct connection is the newest word on which session runs.
      replace(record, before, events)
      broadcast(record)
      return events
    }
    if (before.status === "left") return events
    if (supersedes(record, before)) {
      replace(record, before, events)
      broadcast(record)
      return events
    }
    if (before.status !== "alive") {
      const taken = { ...before, status: "alive" as const, incarnation: before.incarnation + 1 }
      replace(taken, before, events)
      broadcast(taken)
    }
    return events
  }

  const silent = (node: string, now: number) => {
    const m = table.get(node)
    if (m === undefined || !isLive(m) || node === own.node || silentSince.has(node)) return []
    silentSince.set(node, now)
    if (m.status === "alive") {
      const suspect = { ...m, status: "suspect" as const }
      store(suspect)
      broadcast(suspect)
    }
    return [{ _tag: "Unreachable", node, since: now } as const]
  }

  const heard = (node: string, _now: number) => {
    if (!silentSince.delete(node)) return []
    return [{ _tag: "Reachable", node } as const]
  }

  const tick = (now: number, multiplier = 1) => {
    const events: Array<Event> = []
    const limit = config.downAfterMillis * multiplier
    for (const [node, since] of [...silentSince]) {
      if (now - since < limit) continue
      silentSince.delete(node)
      const m = table.get(node)
      if (m === undefined || !isLive(m)) continue
      const down = { ...m, status: "down" as const }
      replace(down, m, events)
      broadcast(down)
    }
    return events
  }

  return {
    self: () => own,
    records: () => table,
    members: () => {
      const out: Array<Member> = []
      for (const m of table.values()) if (m.node !== own.node && isLive(m)) out.push(m)
      return out
    },
    unreachable: () => silentSince,
    receive,
    direct,
    silent,
    heard,
    tick,
    setGroups: (groups) => {
      setOwn({ ...own, groups: [...groups], incarnation: own.incarnation + 1 })
      return own
    },
    leave: () => {
      setOwn({ ...own, status: "left" })
      return own
    },
    gossip: (budget) => queue.take(budget, live),
    pending: () => queue.size(),
    forget: (node) => {
      const m = table.get(node)
      if (m === undefined || node === own.node) return
      if (isLive(m)) live--
      cached = undefined
      table.delete(node)
      tombstones.delete(node)
      silentSince.delete(node)
      queue.drop(node)
    },
    hashes: () => hashesOver(Digest.bucketCount(live)),
    onHashes: (theirs) => {
      if (theirs.length === 0 || theirs.length > Digest.maxBuckets) return undefined
      const mine = hashesOver(theirs.length)
      const buckets: Array<number> = []
      for (let b = 0; b < theirs.length; b++) if (mine[b] !== theirs[b]) buckets.push(b)
      if (buckets.length === 0) return undefined
      return { buckets, digest: Digest.digest(table.values(), theirs.length, buckets) }
    },
    onDigest: (theirs, count, buckets, reply) => {
      if (count < 1 || count > Digest.maxBuckets) return { delta: [], digest: undefined }
      const { behind, delta } = Digest.compare(table, theirs, count, buckets)
      return { delta, digest: reply && behind ? Digest.digest(table.values(), count, buckets) : undefined }
    },
    onDelta: (records, _now) => {
      const events: Array<Event> = []
      const corrections: Array<Member> = []
      for (const m of records) {
        if (m.node === own.node) {
          aboutSelf(m)
          continue
        }
        const before = table.get(m.node)
        if (before !== undefined && !supersedes(m, before)) {
          if (supersedes(before, m)) corrections.push(before)
          continue
        }
        replace(m, before, events)
      }
      return { events, corrections }
    }
  }
}

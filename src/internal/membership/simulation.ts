/**
 * Membership cores over a simulated network in virtual time, for the
 * membership bench and its tests: every node runs the same rounds as the TCP
 * transport (a pulse to every member each round, one gossip frame to
 * `fanout` random members while changes wait, one digest exchange with a
 * random member), frames are delivered within the round or lost with a seeded
 * probability, and every frame sent is counted at its size on the wire (the
 * caller's `sizeOf`, the real encoding in the bench).
 *
 * Deterministic: the same seed, sizes and schedule give the same run.
 * @internal
 */
import * as Core from "./core.ts"
import type { Member, Version } from "./member.ts"

/** The frames of gossip membership, shaped as the TCP transport's messages. */
export type Frame =
  | { readonly _tag: "Pulse" }
  | { readonly _tag: "Leave" }
  | { readonly _tag: "Gossip"; readonly records: ReadonlyArray<Member> }
  | { readonly _tag: "DigestHashes"; readonly hashes: ReadonlyArray<number> }
  | {
    readonly _tag: "Digest"
    readonly count: number
    readonly buckets: ReadonlyArray<number>
    readonly versions: ReadonlyArray<Version>
    readonly reply: boolean
  }
  | { readonly _tag: "Delta"; readonly records: ReadonlyArray<Member>; readonly final: boolean }

export interface Options {
  /** Milliseconds per round (the heartbeat interval). */
  readonly roundMillis: number
  /** Members sent each gossip frame per round. */
  readonly fanout: number
  /** Bytes of changes per gossip frame. */
  readonly gossipBudget: number
  /** Probability that a frame is lost. */
  readonly loss: number
  /** Whether nodes send pulses and run failure detectors. */
  readonly pulses: boolean
  /** Silence after which a detector finds a member silent, in milliseconds. */
  readonly detectorMillis: number
  readonly config: Core.Config
  /** A frame's size on the wire. */
  readonly sizeOf: (frame: Frame) => number
  /** A float in [0, 1) (seeded). */
  readonly random: () => number
}

export interface SimNode {
  readonly id: string
  readonly core: Core.Core
  /** Bytes sent, by frame tag. */
  readonly sent: Map<string, number>
  /** When each member was last heard (pulses), monotonic milliseconds. */
  readonly lastHeard: Map<string, number>
  running: boolean
}

export interface Network {
  readonly nodes: Map<string, SimNode>
  readonly now: () => number
  /** Starts a node; with `seed`, it joins through that node (a direct contact, then the seed's records). */
  readonly start: (id: string, seed?: string) => SimNode
  /** Stops a node gracefully: it gossips its leave and tells every member. */
  readonly leave: (id: string) => void
  /** Stops a node abruptly. */
  readonly crash: (id: string) => void
  /** Runs one round. */
  readonly round: () => void
  /** Bytes sent by running nodes, by frame tag, since the last reset. */
  readonly bytes: () => Map<string, number>
  readonly resetBytes: () => void
}

export const make = (options: Options): Network => {
  const nodes = new Map<string, SimNode>()
  let now = 0
  let started = 1
  const pending: Array<{ readonly from: string; readonly to: string; readonly frame: Frame }> = []
  const pulseSize = options.sizeOf({ _tag: "Pulse" })
  const emptyGossip = options.sizeOf({ _tag: "Gossip", records: [] })
  const recordSize = (m: Member) => options.sizeOf({ _tag: "Gossip", records: [m] }) - emptyGossip

  const count = (from: SimNode, tag: string, size: number) => from.sent.set(tag, (from.sent.get(tag) ?? 0) + size)

  const send = (from: SimNode, to: string, frame: Frame, size = options.sizeOf(frame)) => {
    count(from, frame._tag, size)
    if (options.loss > 0 && options.random() < options.loss) return
    pending.push({ from: from.id, to, frame })
  }

  const pick = (from: SimNode, k: number): Array<string> => {
    const members = from.core.members().map((m) => m.node)
    const out: Array<string> = []
    for (let i = 0; i < k && members.length > 0; i++) {
      const j = Math.floor(options.random() * members.length)
      out.push(members[j])
      members[j] = members[members.length - 1]
      members.pop()
    }
    return out
  }

  const deliver = (from: string, to: SimNode, frame: Frame) => {
    switch (frame._tag) {
      case "Pulse":
        to.lastHeard.set(from, now)
        to.core.heard(from, now)
        return
      case "Leave": {
        const m = to.core.records().get(from)
        if (m !== undefined) to.core.receive([{ ...m, status: "left" }], now)
        return
      }
      case "Gossip":
        to.core.receive(frame.records, now)
        return
      case "DigestHashes": {
        const answer = to.core.onHashes(frame.hashes)
        if (answer !== undefined) {
          send(to, from, { _tag: "Digest", count: frame.hashes.length, buckets: answer.buckets, versions: answer.digest, reply: true })
        }
        return
      }
      case "Digest": {
        const { delta, digest } = to.core.onDigest(frame.versions, frame.count, frame.buckets, frame.reply)
        if (delta.length > 0) send(to, from, { _tag: "Delta", records: delta, final: false })
        if (digest !== undefined) {
          send(to, from, { _tag: "Digest", count: frame.count, buckets: frame.buckets, versions: digest, reply: false })
        }
        return
      }
      case "Delta": {
        const { corrections } = to.core.onDelta(frame.records, now)
        if (corrections.length > 0 && !frame.final) send(to, from, { _tag: "Delta", records: corrections, final: true })
        return
      }
    }
  }

  const flush = () => {
    // By index: frames delivered may send more, appended to the same list.
    for (let i = 0; i < pending.length; i++) {
      const { from, frame, to } = pending[i]
      const target = nodes.get(to)
      if (target === undefined || !target.running) continue
      deliver(from, target, frame)
    }
    pending.length = 0
  }

  const start = (id: string, seed?: string) => {
    const self: Member = {
      node: id,
      session: `${id}-s${started}`,
      started: started++,
      incarnation: 0,
      status: "alive",
      host: "10.0.0.1",
      port: 7000 + (started % 1000),
      groups: ["dstate/state/orders"]
    }
    const node: SimNode = {
      id,
      core: Core.make(self, options.config, recordSize),
      sent: new Map(),
      lastHeard: new Map(),
      running: true
    }
    nodes.set(id, node)
    if (seed !== undefined) {
      const s = nodes.get(seed)!
      // The handshake: each side's own record; then the seed's records, as a delta.
      s.core.direct(self, now)
      node.core.direct(s.core.self(), now)
      send(s, id, { _tag: "Delta", records: [...s.core.records().values()], final: true })
      flush()
    }
    return node
  }

  const round = () => {
    now += options.roundMillis
    const running = [...nodes.values()].filter((n) => n.running)
    for (const node of running) {
      if (options.pulses) {
        for (const m of node.core.members()) send(node, m.node, { _tag: "Pulse" }, pulseSize)
      }
      if (node.core.pending() > 0) {
        for (const to of pick(node, options.fanout)) {
          const records = node.core.gossip(options.gossipBudget)
          if (records.length === 0) break
          send(node, to, { _tag: "Gossip", records })
        }
      }
      const [peer] = pick(node, 1)
      if (peer !== undefined) send(node, peer, { _tag: "DigestHashes", hashes: node.core.hashes() })
    }
    flush()
    for (const node of running) {
      if (!node.running) continue
      if (options.pulses) {
        for (const m of node.core.members()) {
          const last = node.lastHeard.get(m.node) ?? now
          if (!node.lastHeard.has(m.node)) node.lastHeard.set(m.node, now)
          if (now - last > options.detectorMillis) node.core.silent(m.node, now)
        }
      }
      node.core.tick(now)
    }
  }

  return {
    nodes,
    now: () => now,
    start,
    leave: (id) => {
      const node = nodes.get(id)!
      const left = node.core.leave()
      for (const m of node.core.members()) send(node, m.node, { _tag: "Leave" })
      for (const to of pick(node, options.fanout)) send(node, to, { _tag: "Gossip", records: [left] })
      flush()
      node.running = false
    },
    crash: (id) => {
      nodes.get(id)!.running = false
    },
    round,
    bytes: () => {
      const out = new Map<string, number>()
      for (const node of nodes.values()) for (const [tag, n] of node.sent) out.set(tag, (out.get(tag) ?? 0) + n)
      return out
    },
    resetBytes: () => {
      for (const node of nodes.values()) node.sent.clear()
    }
  }
}

/** Whether every running node holds exactly the running nodes as its live members. */
export const converged = (network: Network): boolean => {
  const running = [...network.nodes.values()].filter((n) => n.running)
  const expected = running.map((n) => n.id).sort().join(",")
  return running.every((n) => [n.id, ...n.core.members().map((m) => m.node)].sort().join(",") === expected)
}

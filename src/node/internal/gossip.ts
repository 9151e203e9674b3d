/**
 * Gossip membership over TCP: each heartbeat round, the changes waiting in
 * the membership core are sent to `fanout` random connected members, and one
 * random member is sent this node's digest hashes (anti-entropy,
 * `internal/membership/digest.ts`); what peers send back is merged here.
 * Only peers that listed `Protocol.gossipMembershipFeature` take part.
 *
 * Lives here: the gossip round, and what a received `Gossip`, `DigestHashes`,
 * `Digest` or `Delta` does.
 * @internal
 */
import { Effect, Random } from "effect"
import type * as Core from "../../internal/membership/core.ts"
import type { Membership } from "./membership.ts"
import { monotonicMillis, type Node, type Peer } from "./node.ts"
import type * as Protocol from "./protocol.ts"

/** Members each round's gossip frame goes to (memberlist's `GossipNodes`). */
export const fanout = 3

/** Bytes of changes in one gossip frame (memberlist fits them in a UDP packet of 1400 bytes). */
export const gossipBudget = 1200

export interface Gossip {
  /** One round: gossip to `fanout` random members, digest hashes to one. */
  readonly round: Effect.Effect<void>
  /** A membership frame from `peer` (`Gossip`, `DigestHashes`, `Digest` or `Delta`). */
  readonly received: (
    peer: Peer,
    message:
      | typeof Protocol.Gossip.Type
      | typeof Protocol.DigestHashes.Type
      | typeof Protocol.Digest.Type
      | typeof Protocol.Delta.Type
  ) => Effect.Effect<void>
}

const asRecords = (records: ReadonlyArray<Core.Member>) => records as ReadonlyArray<Protocol.MemberRecord>
const asVersions = (versions: ReadonlyArray<Core.Version>) => versions as ReadonlyArray<typeof Protocol.MemberVersion.Type>

export const make = (node: Node, membership: Membership): Gossip => {
  const { core } = membership

  /** Up to `k` distinct connected gossiping peers, at random. */
  const pick = Effect.fnUntraced(function*(k: number) {
    const candidates = [...node.peers.values()].filter((p) => p.gossip && p.active !== undefined && !p.unreachable)
    const out: Array<Peer> = []
    while (out.length < k && candidates.length > 0) {
      const i = yield* Random.nextIntBetween(0, candidates.length - 1)
      out.push(candidates[i])
      candidates[i] = candidates[candidates.length - 1]
      candidates.pop()
    }
    return out
  })

  const round = Effect.gen(function*() {
    if (core.pending() > 0) {
      for (const peer of yield* pick(fanout)) {
        const records = core.gossip(gossipBudget)
        if (records.length === 0) break
        membership.send(peer, { _tag: "Gossip", records: asRecords(records) })
      }
    }
    const [peer] = yield* pick(1)
    if (peer !== undefined) membership.send(peer, { _tag: "DigestHashes", hashes: core.hashes() })
  })

  const received: Gossip["received"] = (peer, message) =>
    Effect.gen(function*() {
      const now = yield* monotonicMillis
      switch (message._tag) {
        case "Gossip": {
          yield* membership.apply(core.receive(message.records, now))
          return
        }
        case "DigestHashes": {
          const answer = core.onHashes(message.hashes)
          if (answer === undefined) return
          membership.send(peer, {
            _tag: "Digest",
            count: message.hashes.length,
            buckets: answer.buckets,
            versions: asVersions(answer.digest),
            reply: true
          })
          return
        }
        case "Digest": {
          const { delta, digest } = core.onDigest(message.versions, message.count, message.buckets, message.reply)
          if (delta.length > 0) membership.send(peer, { _tag: "Delta", records: asRecords(delta), final: false })
          if (digest !== undefined) {
            membership.send(peer, {
              _tag: "Digest",
              count: message.count,
              buckets: message.buckets,
              versions: asVersions(digest),
              reply: false
            })
          }
          return
        }
        case "Delta": {
          const { corrections, events } = core.onDelta(message.records, now)
          if (corrections.length > 0 && !message.final) {
            membership.send(peer, { _tag: "Delta", records: asRecords(corrections), final: true })
          }
          yield* membership.apply(events)
          return
        }
      }
    })

  return { round, received }
}

/**
 * Gossip membership as pure state machines (`src/internal/membership/`): the
 * merge rules and local reachability of one core, the bounded retransmission
 * queue, and convergence of many cores over a lossy simulated network, with
 * frames sized by the real wire encoding.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as Broadcasts from "../src/internal/membership/broadcasts.ts"
import * as Core from "../src/internal/membership/core.ts"
import * as Simulation from "../src/internal/membership/simulation.ts"
import * as Protocol from "../src/node/internal/protocol.ts"
import { make as makePrng } from "../src/testing/Prng.ts"

const member = (node: string, over: Partial<Core.Member> = {}): Core.Member => ({
  node,
  session: `${node}-1`,
  started: 1,
  incarnation: 0,
  status: "alive",
  host: "127.0.0.1",
  port: 7000,
  groups: [],
  ...over
})

const config: Core.Config = { ...Core.defaultConfig, downAfterMillis: 30_000 }
const core = (node = "a") => Core.make(member(node), config, () => 50)
const tags = (events: ReadonlyArray<Core.Event>) =>
  events.map((e) => `${e._tag} ${"member" in e ? e.member.node : e.node}${e._tag === "Gone" ? ` ${e.reason}` : ""}`)

const sizeOf = (frame: Simulation.Frame): number => {
  const encoded = Protocol.encode(frame as Protocol.TransportMessage, 1 << 24)
  if (Result.isFailure(encoded)) throw new Error(encoded.failure.message)
  return encoded.success.length
}

describe("Membership: one core", () => {
  it("a silent member is unreachable, and reachable again with its record kept when heard before downAfter", () => {
    const a = core()
    assert.deepStrictEqual(tags(a.receive([member("b")], 0)), ["Discovered b"])
    assert.deepStrictEqual(a.silent("b", 1000), [{ _tag: "Unreachable", node: "b", since: 1000 }])
    // Judged once: a second silent check changes nothing.
    assert.deepStrictEqual(a.silent("b", 1500), [])
    assert.deepStrictEqual(a.tick(1000 + 29_999), [])
    assert.deepStrictEqual(a.heard("b", 1000 + 29_999), [{ _tag: "Reachable", node: "b" }])
    assert.deepStrictEqual(a.members().map((m) => m.node), ["b"])
    assert.deepStrictEqual(a.tick(1000 + 60_000), [])
    assert.strictEqual(a.unreachable().size, 0)
  })

  it("an unreachable member is down after downAfter exactly, and its down is gossiped", () => {
    const a = core()
    a.receive([member("b")], 0)
    while (a.gossip(10_000).length > 0) { /* drain */ }
    a.silent("b", 1000)
    assert.deepStrictEqual(a.tick(30_999), [])
    assert.deepStrictEqual(tags(a.tick(31_000)), ["Gone b down"])
    assert.deepStrictEqual(a.members(), [])
    const gossiped = a.gossip(10_000)
    assert.deepStrictEqual(gossiped.map((m) => `${m.node} ${m.status} ${m.incarnation}`), ["b down 0"])
  })

  it("the local-health multiplier lengthens downAfter", () => {
    const a = core()
    a.receive([member("b")], 0)
    a.silent("b", 0)
    assert.deepStrictEqual(a.tick(59_999, 2), [])
    assert.deepStrictEqual(tags(a.tick(60_000, 2)), ["Gone b down"])
  })

  it("a graceful leave is final at once; later alive gossip of that session is ignored", () => {
    const a = core()
    a.receive([member("b", { incarnation: 3 })], 0)
    assert.deepStrictEqual(tags(a.receive([member("b", { status: "left", incarnation: 3 })], 1)), ["Gone b left"])
    assert.deepStrictEqual(a.receive([member("b", { incarnation: 9 })], 2), [])
    assert.deepStrictEqual(a.members(), [])
  })

  it("a node hearing itself suspected or down refutes it with a higher incarnation", () => {
    const a = core()
    a.receive([member("a", { status: "suspect", incarnation: 0 })], 0)
    assert.strictEqual(a.self().incarnation, 1)
    assert.strictEqual(a.self().status, "alive")
    a.receive([member("a", { status: "down", incarnation: 1 })], 0)
    assert.strictEqual(a.self().incarnation, 2)
    assert.deepStrictEqual(a.gossip(10_000).map((m) => `${m.node} ${m.status} ${m.incarnation}`), ["a alive 2"])
    // Older news about itself changes nothing.
    a.receive([member("a", { status: "down", incarnation: 1 })], 0)
    assert.strictEqual(a.self().incarnation, 2)
  })

  it("a down member that refutes joins again; a newer session replaces the old one", () => {
    const a = core()
    a.receive([member("b")], 0)
    assert.deepStrictEqual(tags(a.receive([member("b", { status: "down" })], 1)), ["Gone b down"])
    assert.deepStrictEqual(tags(a.receive([member("b", { incarnation: 1 })], 2)), ["Discovered b"])
    assert.deepStrictEqual(
      tags(a.receive([member("b", { session: "b-2", started: 2 })], 3)),
      ["Gone b restarted", "Discovered b"]
    )
    // The older session's news is stale.
    assert.deepStrictEqual(a.receive([member("b", { incarnation: 5 })], 4), [])
  })

  it("a direct handshake of a member held as down takes it back at a higher incarnation", () => {
    const a = core()
    a.receive([member("b", { status: "down", incarnation: 2 })], 0)
    assert.deepStrictEqual(tags(a.direct(member("b", { incarnation: 2 }), 1)), ["Discovered b"])
    assert.strictEqual(a.records().get("b")!.incarnation, 3)
    // b adopts the incarnation gossiped on its behalf without raising it again.
    const b = Core.make(member("b", { incarnation: 2 }), config, () => 50)
    b.receive([a.records().get("b")!], 2)
    assert.strictEqual(b.self().incarnation, 3)
  })

  it("a groups change raises the incarnation and reaches a peer as Updated", () => {
    const a = core()
    const b = core("b")
    a.receive([b.self()], 0)
    const changed = b.setGroups(["g1"])
    assert.strictEqual(changed.incarnation, 1)
    assert.deepStrictEqual(tags(a.receive(b.gossip(10_000), 1)), ["Updated b"])
    assert.deepStrictEqual(a.records().get("b")!.groups, ["g1"])
  })

  it("the digest exchange repairs a missed join and a missed leave", () => {
    const a = core()
    const b = core("b")
    a.receive([member("c"), member("d")], 0)
    b.receive([member("c", { status: "left" }), member("e")], 0)
    // a -> b: hashes; b -> a: digest of the differing buckets; a -> b: delta (and its own digest); b -> a: delta.
    const answer = b.onHashes(a.hashes())!
    const count = a.hashes().length
    const fromA = a.onDigest(answer.digest, count, answer.buckets, true)
    const atB = b.onDelta(fromA.delta, 1)
    const fromB = b.onDigest(fromA.digest ?? [], count, answer.buckets, false)
    a.onDelta([...fromB.delta, ...atB.corrections], 1)
    const live = (x: Core.Core) => [x.self().node, ...x.members().map((m) => m.node)].sort()
    // One bucket for so few members: each also learns the other from its own record.
    assert.deepStrictEqual(live(a), ["a", "b", "d", "e"])
    assert.deepStrictEqual(live(b), ["a", "b", "d", "e"])
    assert.strictEqual(a.records().get("c")!.status, "left")
  })
})

describe("Membership: the retransmission queue", () => {
  it("sends each change multiplier × ⌈log10(n + 1)⌉ times, least sent first, a newer change replacing an older", () => {
    assert.strictEqual(Broadcasts.retransmitLimit(4, 9), 4)
    assert.strictEqual(Broadcasts.retransmitLimit(4, 10), 8)
    assert.strictEqual(Broadcasts.retransmitLimit(4, 500), 12)
    const q = Broadcasts.make<string>(2)
    q.queue("x", "x1", 10)
    q.queue("y", "y1", 10)
    q.queue("x", "x2", 10)
    assert.strictEqual(q.size(), 2)
    // n = 5: limit 2. A budget of 15 bytes takes one change per frame (at least one always).
    assert.deepStrictEqual(q.take(15, 5), ["x2"])
    assert.deepStrictEqual(q.take(15, 5), ["y1"])
    assert.deepStrictEqual(q.take(100, 5), ["x2", "y1"])
    assert.deepStrictEqual(q.take(100, 5), [])
  })
})

describe("Membership: many cores over a lossy network", () => {
  const lossy = (seed: number, loss: number) =>
    Simulation.make({
      roundMillis: 1000,
      fanout: 3,
      gossipBudget: 1200,
      loss,
      pulses: false,
      detectorMillis: 5000,
      config: Core.defaultConfig,
      sizeOf,
      random: makePrng(seed).next
    })

  for (const [seed, loss] of [[1, 0.1], [2, 0.2]] as const) {
    it(`50 nodes with ${loss * 100} % loss: every node holds the exact member set within 25 rounds, and a leave spreads within 15 (seed ${seed})`, () => {
      const net = lossy(seed, loss)
      net.start("n00")
      // Each joins through one earlier node: only gossip and digests tell the others.
      for (let i = 1; i < 50; i++) net.start(`n${String(i).padStart(2, "0")}`, `n${String(i - 1).padStart(2, "0")}`)
      let rounds = 0
      while (!Simulation.converged(net) && rounds < 25) {
        net.round()
        rounds++
      }
      assert.isTrue(Simulation.converged(net), `not converged after ${rounds} rounds (seed ${seed})`)
      for (const node of net.nodes.values()) assert.strictEqual(node.core.members().length, 49)
      net.leave("n17")
      rounds = 0
      while (!Simulation.converged(net) && rounds < 15) {
        net.round()
        rounds++
      }
      assert.isTrue(Simulation.converged(net), `leave not spread after ${rounds} rounds (seed ${seed})`)
      for (const node of net.nodes.values()) {
        if (!node.running) continue
        assert.strictEqual(node.core.members().length, 48)
        assert.strictEqual(node.core.records().get("n17")!.status, "left")
      }
    })
  }

  it("a live node declared down by one member refutes it: 30 nodes, 10 % loss, everyone holds it alive again within 15 rounds", () => {
    const net = lossy(4, 0.1)
    net.start("n00")
    for (let i = 1; i < 30; i++) net.start(`n${String(i).padStart(2, "0")}`, "n00")
    for (let i = 0; i < 15; i++) net.round()
    assert.isTrue(Simulation.converged(net))
    // n03 alone loses n07 (its link, say) for downAfter: it declares n07 down and gossips it.
    const n03 = net.nodes.get("n03")!.core
    n03.silent("n07", net.now())
    assert.deepStrictEqual(tags(n03.tick(net.now() + Core.defaultConfig.downAfterMillis)), ["Gone n07 down"])
    let rounds = 0
    do {
      net.round()
      rounds++
    } while (!Simulation.converged(net) && rounds < 15)
    assert.isTrue(Simulation.converged(net), `not converged after ${rounds} rounds`)
    const n07 = net.nodes.get("n07")!.core.self()
    assert.isAtLeast(n07.incarnation, 1)
    for (const node of net.nodes.values()) {
      const record = node.core.records().get("n07")!
      assert.strictEqual(record.status, "alive", node.id)
      assert.strictEqual(record.incarnation, n07.incarnation, node.id)
    }
  })

  it("with pulses, a crashed node is unreachable everywhere, then down after downAfter, and the rest agree", () => {
    const net = Simulation.make({
      roundMillis: 1000,
      fanout: 3,
      gossipBudget: 1200,
      loss: 0.1,
      pulses: true,
      detectorMillis: 5000,
      config: { ...Core.defaultConfig, downAfterMillis: 10_000 },
      sizeOf,
      random: makePrng(3).next
    })
    net.start("n0")
    for (let i = 1; i < 20; i++) net.start(`n${i}`, "n0")
    for (let i = 0; i < 10; i++) net.round()
    assert.isTrue(Simulation.converged(net))
    net.crash("n7")
    for (let i = 0; i < 7; i++) net.round()
    for (const node of net.nodes.values()) {
      if (node.running) assert.isTrue(node.core.unreachable().has("n7"), `${node.id} finds n7 unreachable`)
    }
    for (let i = 0; i < 15; i++) net.round()
    assert.isTrue(Simulation.converged(net))
    for (const node of net.nodes.values()) if (node.running) assert.strictEqual(node.core.records().get("n7")!.status, "down")
  })
})

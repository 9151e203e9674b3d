/**
 * The sync core on its own, without a runtime: every input is a plain value,
 * every step's commands are asserted exactly, and time is a number.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result, Schema } from "effect"
import { Generation, NodeId, SyncMessage } from "dstate"
import * as Sync from "../src/internal/sync/core.ts"

const self = NodeId.make("a")
const peer = NodeId.make("b")
const other = NodeId.make("c")

type Counts = Partial<Record<Sync.CounterKey, number>>

/** Views and deltas are numbers: a snapshot's payload is `[view]`, a delta's `[increment]`. */
const ports = (counts: Counts, overrides: Partial<Sync.Ports<number, number, number>> = {}): Sync.Ports<number, number, number> => ({
  decodeView: (payload) =>
    payload.length === 1
      ? Result.succeed(payload[0])
      : Result.fail({ _tag: "MalformedMessage", message: "undecodable", reason: "undecodable" }),
  decodeDelta: (payload) =>
    payload.length === 1
      ? Result.succeed(payload[0])
      : Result.fail({ _tag: "MalformedMessage", message: "undecodable", reason: "undecodable" }),
  applyDelta: (view, delta) => Result.succeed(view + delta),
  projectDelta: (change) => Result.succeed(change),
  syncUrgency: undefined,
  malformed: (_from, reason) => ({ _tag: "MalformedMessage", message: reason, reason }),
  count: (key, by = 1) => {
    counts[key] = (counts[key] ?? 0) + by
  },
  onDeparted: undefined,
  ...overrides
})

const config = (overrides: Partial<Sync.Config> = {}): Sync.Config => ({
  self,
  stateName: "counter",
  wireVersion: 1,
  delta: true,
  pushMode: "ActivePush",
  periodic: false,
  pullTimeoutMillis: 5_000,
  versionMismatchPolicy: "KeepStale",
  departedCapacity: 100,
  coalescePush: true,
  ...overrides
})

const owner = (incarnation: number, age: number, view = age): Sync.Owner<number, number> => ({
  generation: Generation.make(incarnation, age),
  state: view,
  view,
  createdAt: 0,
  modifiedAt: age
})

const make = (options: { readonly config?: Partial<Sync.Config>; readonly ports?: Partial<Sync.Ports<number, number, number>> } = {}) => {
  const counts: Counts = {}
  const core = Sync.make(config(options.config), ports(counts, options.ports), owner(1, 0), 0, false)
  /** One step; the commands are copied (the core reuses its array). */
  const step = (input: Sync.Input<number, number, number>, now = 0) => [...Sync.step(core, input, now)]
  return { core, counts, step }
}

const snapshot = (incarnation: number, age: number, view = age, source = peer) =>
  new SyncMessage.FullSnapshot({
    stateName: "counter",
    source,
    generation: Generation.make(incarnation, age),
    wireVersion: 1,
    createdAt: 0,
    modifiedAt: age,
    payload: new Uint8Array([view])
  })

const delta = (incarnation: number, age: number, increment = 1, source = peer) =>
  new SyncMessage.DeltaUpdate({
    stateName: "counter",
    source,
    generation: Generation.make(incarnation, age),
    wireVersion: 1,
    modifiedAt: age,
    payload: new Uint8Array([increment])
  })

const publish = { _tag: "Publish" }
const held = (core: Sync.SyncState<number, number, number, number>, node = peer) => {
  const view = core.views.get(node)
  return view === undefined ? undefined : { generation: Generation.format(view.generation), value: view.value }
}

/** A core that holds `b`'s view at generation 5.10 (value 10). */
const holding = () => {
  const t = make()
  t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 10) })
  for (const key of Object.keys(t.counts)) delete t.counts[key as Sync.CounterKey]
  return t
}

describe("sync core", () => {
  describe("the acceptance table (README), row by row", () => {
    it("nothing held: a snapshot is accepted and published", () => {
      const { core, counts, step } = make()
      assert.deepStrictEqual(step({ _tag: "Snapshot", from: peer, message: snapshot(5, 10) }, 7), [publish])
      assert.deepStrictEqual(held(core), { generation: "5.10", value: 10 })
      assert.strictEqual(core.views.get(peer)!.syncedAt, 7)
      assert.deepStrictEqual(counts, { snapshotsReceived: 1 })
    })

    it("nothing held: a delta is a gap and draws a snapshot request", () => {
      const { core, counts, step } = make()
      const commands = step({ _tag: "Delta", from: peer, message: delta(5, 11) })
      assert.deepStrictEqual(commands.map((c) => c._tag), ["Log", "SendRequest"])
      assert.deepStrictEqual(commands[1], { _tag: "SendRequest", to: peer, held: undefined })
      assert.strictEqual(held(core), undefined)
      assert.deepStrictEqual(counts, { gapsDetected: 1, snapshotRequestsSent: 1 })
      assert.strictEqual(core.peers.entry(peer)!.gapCount, 1)
    })

    it("lower incarnation held: a snapshot of the new incarnation wins; a delta of it is a gap", () => {
      const t = holding()
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(6, 0) }), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "6.0", value: 0 })
      const u = holding()
      const commands = u.step({ _tag: "Delta", from: peer, message: delta(6, 1) })
      assert.deepStrictEqual(commands.slice(1), [{ _tag: "SendRequest", to: peer, held: Generation.make(5, 10) }])
      assert.deepStrictEqual(u.counts, { gapsDetected: 1, snapshotRequestsSent: 1 })
      assert.deepStrictEqual(held(u.core), { generation: "5.10", value: 10 })
    })

    for (
      const [row, incoming] of [
        ["higher incarnation held", [4, 11]],
        ["same incarnation, lower age", [5, 9]]
      ] as const
    ) {
      it(`${row}: a snapshot or a delta is stale, counted, and draws one hint of what is held`, () => {
        const t = holding()
        assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(incoming[0], incoming[1]) }), [
          { _tag: "SendRequest", to: peer, held: Generation.make(5, 10) }
        ])
        // The hint is rate-limited to one per pull timeout, whatever carries the stale generation.
        assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(incoming[0], incoming[1]) }, 4_999), [])
        assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(incoming[0], incoming[1]) }, 5_000), [
          { _tag: "SendRequest", to: peer, held: Generation.make(5, 10) }
        ])
        assert.deepStrictEqual(t.counts, { staleDiscarded: 3, snapshotRequestsSent: 2 })
        assert.deepStrictEqual(held(t.core), { generation: "5.10", value: 10 })
      })
    }

    it("same generation: a duplicate snapshot refreshes syncedAt; a duplicate delta changes nothing", () => {
      const t = holding()
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 10) }, 42), [publish])
      assert.strictEqual(t.core.views.get(peer)!.syncedAt, 42)
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 10) }, 50), [])
      assert.strictEqual(t.core.views.get(peer)!.syncedAt, 42)
      assert.deepStrictEqual(t.counts, { staleDiscarded: 2 })
    })

    it("same incarnation, age + 1: a snapshot is accepted and a delta applied", () => {
      const t = holding()
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 11, 3) }), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.11", value: 13 })
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 12, 20) }), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.12", value: 20 })
      assert.deepStrictEqual(t.counts, { deltasReceived: 1, snapshotsReceived: 1 })
    })

    it("same incarnation, age > held + 1: a snapshot is accepted; a delta is a gap", () => {
      const t = holding()
      const commands = t.step({ _tag: "Delta", from: peer, message: delta(5, 12) })
      assert.deepStrictEqual(commands.map((c) => c._tag), ["Log", "SendRequest"])
      // A second gap within the pull timeout does not ask again.
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 13) }, 1).map((c) => c._tag), ["Log"])
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 13) }), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.13", value: 13 })
      assert.deepStrictEqual(t.counts, { gapsDetected: 2, snapshotRequestsSent: 1, snapshotsReceived: 1 })
    })

    it("an undecodable payload is counted against its sender and leaves the view", () => {
      const t = holding()
      const bad = new SyncMessage.FullSnapshot({ ...snapshot(5, 11), payload: new Uint8Array([1, 2]) })
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: bad }).map((c) => c._tag), ["Log"])
      assert.deepStrictEqual(t.counts, { syncFailures: 1, malformedReceived: 1 })
      assert.strictEqual(t.core.peers.entry(peer)!.consecutiveFailures, 1)
      assert.deepStrictEqual(held(t.core), { generation: "5.10", value: 10 })
    })

    it("an applyDelta that throws is malformed and draws a snapshot request", () => {
      const t = make({ ports: { applyDelta: () => Result.fail(new Error("boom")) } })
      t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 10) })
      const commands = t.step({ _tag: "Delta", from: peer, message: delta(5, 11) })
      assert.deepStrictEqual(commands.map((c) => c._tag), ["Log", "SendRequest"])
      assert.deepStrictEqual(held(t.core), { generation: "5.10", value: 10 })
    })

    it("a delta for a simple state is malformed", () => {
      const t = make({ config: { delta: false }, ports: { applyDelta: undefined, projectDelta: undefined } })
      t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 10) })
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 11) }).map((c) => c._tag), ["Log"])
      assert.strictEqual(t.counts.malformedReceived, 1)
    })

    it("a request for a newer generation of ours than we hold asks the shell to reincarnate", () => {
      const t = make()
      const request = (generation?: Generation.Generation) =>
        new SyncMessage.RequestSnapshot({ stateName: "counter", source: peer, wireVersion: 1, ...(generation ? { generation } : {}) })
      assert.deepStrictEqual(t.step({ _tag: "Request", from: peer, message: request(Generation.make(1, 0)) }), [
        { _tag: "SendSnapshot", to: peer }
      ])
      assert.deepStrictEqual(t.step({ _tag: "Request", from: peer, message: request(Generation.make(1, 3)) }), [
        { _tag: "Reincarnate", seen: Generation.make(1, 3), requester: peer }
      ])
      assert.deepStrictEqual(t.step({ _tag: "Reincarnated", owner: owner(9, 0), requester: peer }), [
        publish,
        { _tag: "SendSnapshot", to: undefined }
      ])
      assert.strictEqual(Generation.format(t.core.views.get(self)!.generation), "9.0")
      assert.deepStrictEqual(t.step({ _tag: "Reincarnated", owner: undefined, requester: peer }), [
        { _tag: "SendSnapshot", to: peer }
      ])
      assert.deepStrictEqual(t.counts, { snapshotRequestsReceived: 2, persistenceFailures: 1 })
    })
  })

  describe("departures", () => {
    it("a peer that left: its view goes, its incarnation is ignored, a new one after it rejoins is welcome", () => {
      const t = holding()
      assert.deepStrictEqual(t.step({ _tag: "PeerLeft", node: peer }), [publish])
      assert.strictEqual(held(t.core), undefined)
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 11) }), [])
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 11) }), [])
      assert.deepStrictEqual(t.step({ _tag: "Notice", source: peer, generation: Generation.make(5, 12) }), [])
      assert.deepStrictEqual(t.counts, { departedIgnored: 3 })
      t.step({ _tag: "PeerJoined", node: peer, member: true })
      // Remembered: the newest generation seen bounds what the returning peer may send.
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 9) }, 10_000), [
        { _tag: "SendRequest", to: peer, held: Generation.make(5, 10) }
      ])
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(6, 0) }), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "6.0", value: 0 })
    })

    it("the departed set forgets the oldest departure beyond its capacity", () => {
      const t = make({ config: { departedCapacity: 2 } })
      const nodes = ["p1", "p2", "p3"].map(NodeId.make)
      for (const node of nodes) {
        t.step({ _tag: "Snapshot", from: node, message: snapshot(1, 1, 1, node) })
        t.step({ _tag: "PeerLeft", node })
      }
      assert.deepStrictEqual(t.core.departed.sizes, { departed: 2, remembered: 2, capacity: 2 })
      assert.strictEqual(t.core.departed.ignores(nodes[0], Generation.make(1, 2)), false)
      assert.strictEqual(t.core.departed.ignores(nodes[1], Generation.make(1, 2)), true)
      assert.strictEqual(t.core.departed.ignores(nodes[2], Generation.make(1, 2)), true)
    })
  })

  describe("reachability", () => {
    it("unreachable: the view stays, marked with since when, published once; reachable: the mark goes, nothing is sent", () => {
      const t = holding()
      assert.deepStrictEqual(t.step({ _tag: "PeerUnreachable", node: peer, since: 1_000 }, 50), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.10", value: 10 })
      assert.strictEqual(t.core.views.get(peer)!.unreachableSince, 1_000)
      assert.deepStrictEqual([...t.core.unreachable], [[peer, 1_000]])
      // The same mark again changes nothing.
      assert.deepStrictEqual(t.step({ _tag: "PeerUnreachable", node: peer, since: 1_000 }, 60), [])
      assert.deepStrictEqual(t.step({ _tag: "PeerReachable", node: peer }, 70), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.10", value: 10 })
      assert.strictEqual(t.core.views.get(peer)!.unreachableSince, undefined)
      assert.strictEqual(t.core.views.get(peer)!.syncedAt, 0)
      assert.strictEqual(t.core.unreachable.size, 0)
      // Reachable again is not a join: nothing sent, nothing asked.
      assert.deepStrictEqual(t.step({ _tag: "PeerReachable", node: peer }, 80), [])
      assert.deepStrictEqual(t.counts, {})
    })

    it("a view accepted while its owner is unreachable keeps the mark; a gap still asks for a snapshot", () => {
      const t = holding()
      t.step({ _tag: "PeerUnreachable", node: peer, since: 5 })
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 11) }, 9), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.11", value: 11 })
      assert.strictEqual(t.core.views.get(peer)!.unreachableSince, 5)
      t.step({ _tag: "PeerReachable", node: peer })
      const gap = t.step({ _tag: "Delta", from: peer, message: delta(5, 13) }, 10)
      assert.deepStrictEqual(gap.map((c) => c._tag), ["Log", "SendRequest"])
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 13) }, 11), [publish])
      assert.deepStrictEqual(held(t.core), { generation: "5.13", value: 13 })
      assert.strictEqual(t.core.views.get(peer)!.unreachableSince, undefined)
    })

    it("down after unreachable is a departure like any other: view dropped, incarnation ignored, mark forgotten", () => {
      const t = holding()
      t.step({ _tag: "PeerUnreachable", node: peer, since: 5 })
      assert.deepStrictEqual(t.step({ _tag: "PeerLeft", node: peer }), [publish])
      assert.strictEqual(held(t.core), undefined)
      assert.strictEqual(t.core.unreachable.size, 0)
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 11) }), [])
      // A departed node is not marked (its membership ended).
      assert.deepStrictEqual(t.step({ _tag: "PeerUnreachable", node: peer, since: 6 }), [])
      assert.strictEqual(t.core.unreachable.size, 0)
      assert.deepStrictEqual(t.counts, { departedIgnored: 1 })
    })

    it("an awaited member that is unreachable is not asked until it answers; a join clears the mark", () => {
      const t = make()
      t.step({ _tag: "Started", others: [peer] })
      t.step({ _tag: "PeerUnreachable", node: peer, since: 3 })
      assert.deepStrictEqual(t.step({ _tag: "AwaitViewDue", node: peer, member: true }, 6_000), [{ _tag: "AwaitView", node: peer }])
      t.step({ _tag: "PeerReachable", node: peer })
      assert.deepStrictEqual(t.step({ _tag: "AwaitViewDue", node: peer, member: true }, 12_000), [
        { _tag: "SendRequest", to: peer, held: undefined },
        { _tag: "AwaitView", node: peer }
      ])
      t.step({ _tag: "PeerUnreachable", node: peer, since: 4 })
      t.step({ _tag: "PeerJoined", node: peer, member: true })
      assert.strictEqual(t.core.unreachable.size, 0)
    })

    const Event = Schema.Struct({
      kind: Schema.Literals(["unreachable", "reachable", "snapshot", "delta"]),
      at: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 9 }))
    })
    it.prop(
      "any sequence of reachability changes and messages: the value and generation are what the messages alone make",
      [Schema.Array(Event).check(Schema.isMaxLength(30))],
      ([events]) => {
        const marked = make()
        const plain = make()
        let age = 0
        events.forEach((e, i) => {
          if (e.kind === "unreachable") return void marked.step({ _tag: "PeerUnreachable", node: peer, since: e.at }, i)
          if (e.kind === "reachable") return void marked.step({ _tag: "PeerReachable", node: peer }, i)
          const input: Sync.Input<number, number, number> = e.kind === "snapshot"
            ? { _tag: "Snapshot", from: peer, message: snapshot(1, age = age + e.at) }
            : { _tag: "Delta", from: peer, message: delta(1, age = age + 1) }
          marked.step(input, i)
          plain.step(input, i)
          const mark = marked.core.unreachable.get(peer)
          const view = marked.core.views.get(peer)
          if (view !== undefined) assert.strictEqual(view.unreachableSince, mark)
        })
        assert.deepStrictEqual(held(marked.core), held(plain.core))
      },
      { arbitrary: { seed: 20261208, runs: 300 } }
    )
  })

  describe("the join exchange", () => {
    it("start: a snapshot to all, one request to all, and every other member awaited", () => {
      const t = make()
      assert.deepStrictEqual(t.step({ _tag: "Started", others: [peer, other] }), [
        { _tag: "SendSnapshot", to: undefined },
        { _tag: "SendRequest", to: undefined, held: undefined },
        { _tag: "AwaitView", node: peer },
        { _tag: "AwaitView", node: other }
      ])
      assert.deepStrictEqual([...t.core.awaited], [peer, other])
      t.step({ _tag: "Snapshot", from: peer, message: snapshot(2, 0) })
      assert.deepStrictEqual([...t.core.awaited], [other])
      // Asked again while it is a member and its view is missing; forgotten once it is not a member.
      assert.deepStrictEqual(t.step({ _tag: "AwaitViewDue", node: other, member: true }, 6_000), [
        { _tag: "SendRequest", to: other, held: undefined },
        { _tag: "AwaitView", node: other }
      ])
      assert.deepStrictEqual(t.step({ _tag: "AwaitViewDue", node: peer, member: true }), [])
      assert.deepStrictEqual(t.step({ _tag: "AwaitViewDue", node: other, member: false }), [])
      assert.deepStrictEqual([...t.core.awaited], [])
      assert.deepStrictEqual(t.counts, { snapshotRequestsSent: 3, snapshotsReceived: 1 })
    })

    it("a member joins: snapshots both ways; a node no longer in the group is left alone", () => {
      const t = make()
      assert.deepStrictEqual(t.step({ _tag: "PeerJoined", node: peer, member: true }), [
        { _tag: "SendSnapshot", to: peer },
        { _tag: "SendRequest", to: peer, held: undefined },
        { _tag: "AwaitView", node: peer }
      ])
      assert.deepStrictEqual(t.step({ _tag: "PeerJoined", node: other, member: false }), [])
    })
  })

  describe("the push engine", () => {
    it("active push of a simple state is coalesced: one scheduled push per burst, then the newest snapshot", () => {
      const t = make({ config: { delta: false }, ports: { applyDelta: undefined, projectDelta: undefined } })
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 1), change: undefined }), [publish, { _tag: "SchedulePush" }])
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 2), change: undefined }), [publish])
      assert.deepStrictEqual(t.step({ _tag: "PushDue" }), [{ _tag: "SendSnapshot", to: undefined }])
      assert.deepStrictEqual(t.step({ _tag: "PushDue" }), [])
      assert.deepStrictEqual(t.counts, { mutations: 2 })
    })

    it("active push of a delta state sends each delta that follows what peers hold, else a snapshot", () => {
      const t = make()
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 1), change: 4 }), [
        publish,
        { _tag: "BroadcastDelta", generation: Generation.make(1, 1), modifiedAt: 1, delta: 4 }
      ])
      // A change without a delta leaves peers a snapshot to get.
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 2), change: undefined }), [
        publish,
        { _tag: "SendSnapshot", to: undefined }
      ])
    })

    it("urgency: delayed sends wait for the earliest deadline, immediate ones cancel them, suppressed ones wait", () => {
      const urgencies: Array<Sync.Urgency> = [
        { _tag: "Delayed", millis: 500 },
        { _tag: "Delayed", millis: 900 },
        { _tag: "Suppress" },
        { _tag: "Immediate" }
      ]
      const t = make({ ports: { syncUrgency: () => Result.succeed(urgencies.shift()!) } })
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 1), change: 1 }, 0), [
        publish,
        { _tag: "StartDelay", millis: 500 }
      ])
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 2), change: 1 }, 100), [publish])
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 3), change: 1 }, 200), [publish])
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 4), change: 1 }, 300), [
        publish,
        { _tag: "CancelDelay" },
        { _tag: "SendSnapshot", to: undefined }
      ])
      assert.deepStrictEqual(t.step({ _tag: "DelayDue" }), [])
      assert.deepStrictEqual(t.counts, { mutations: 4, delayed: 2, suppressed: 1, immediate: 1 })
    })

    it("change feed: a notice per commit; periodic sync sends only what changed since the last one", () => {
      const t = make({ config: { pushMode: "FeedLazyPull", periodic: true } })
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 1), change: 1 }), [
        publish,
        { _tag: "Notify", generation: Generation.make(1, 1) }
      ])
      assert.deepStrictEqual(t.step({ _tag: "PeriodicDue" }), [{ _tag: "SendSnapshot", to: undefined }])
      assert.deepStrictEqual(t.step({ _tag: "PeriodicDue" }), [])
      assert.strictEqual(t.counts.periodicSyncs, 1)
    })

    it("a notice marks the held view pending until a snapshot of that generation arrives", () => {
      const t = holding()
      assert.deepStrictEqual(t.step({ _tag: "Notice", source: peer, generation: Generation.make(5, 12) }), [publish])
      assert.strictEqual(t.core.views.pendingPeers, 1)
      assert.deepStrictEqual(t.step({ _tag: "Notice", source: peer, generation: Generation.make(5, 11) }), [])
      t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 11) })
      assert.deepStrictEqual(t.core.views.get(peer)!.pendingRemote, Generation.make(5, 12))
      t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 12) })
      assert.strictEqual(t.core.views.get(peer)!.pendingRemote, undefined)
      assert.strictEqual(t.core.views.pendingPeers, 0)
    })
  })

  describe("properties", () => {
    const Small = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4 }))
    const Message = Schema.Struct({
      kind: Schema.Literals(["snapshot", "delta", "notice"]),
      incarnation: Small,
      age: Small
    })
    const Messages = Schema.Array(Message).check(Schema.isMaxLength(40))

    const feed = (t: ReturnType<typeof make>, m: typeof Message.Type, now: number) => {
      const input: Sync.Input<number, number, number> = m.kind === "snapshot"
        ? { _tag: "Snapshot", from: peer, message: snapshot(m.incarnation, m.age) }
        : m.kind === "delta"
        ? { _tag: "Delta", from: peer, message: delta(m.incarnation, m.age) }
        : { _tag: "Notice", source: peer, generation: Generation.make(m.incarnation, m.age) }
      return t.step(input, now)
    }

    it.prop("accepted generations never decrease", [Messages], ([messages]) => {
      const t = make()
      let last: Generation.Generation | undefined
      messages.forEach((m, i) => {
        feed(t, m, i)
        const now = t.core.views.get(peer)?.generation
        if (last !== undefined) assert.isDefined(now)
        if (last !== undefined && now !== undefined) assert.isFalse(Generation.isNewer(last, now))
        last = now
      })
    }, { arbitrary: { seed: 20261204, runs: 300 } })

    it.prop("a departed incarnation is never accepted again", [Small, Messages], ([incarnation, messages]) => {
      const t = make()
      t.step({ _tag: "Snapshot", from: peer, message: snapshot(incarnation, 0) })
      t.step({ _tag: "PeerLeft", node: peer })
      const before = t.counts.departedIgnored ?? 0
      let ignored = 0
      messages.forEach((m, i) => {
        const commands = feed(t, m, i)
        const view = t.core.views.get(peer)
        if (m.incarnation <= incarnation) {
          ignored++
          assert.deepStrictEqual(commands, [])
        }
        if (view !== undefined) assert.isAbove(view.generation.incarnation, incarnation)
      })
      assert.strictEqual((t.counts.departedIgnored ?? 0) - before, ignored)
    }, { arbitrary: { seed: 77, runs: 300 } })

    // An owner's history: ages 0..n of one incarnation, the view at age a being a (each delta adds 1).
    const History = Schema.Struct({
      last: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 12 })),
      // Each entry picks a message: its age and whether it is a snapshot; duplicates and any order allowed.
      picks: Schema.Array(Schema.Struct({ age: Small, snapshot: Schema.Boolean })).check(Schema.isMaxLength(40))
    })

    it.prop(
      "any interleaving of duplicate and reordered messages ends at the owner's view once its snapshot arrives",
      [History],
      ([{ last, picks }]) => {
        const t = make()
        picks.forEach((p, i) => {
          const age = Math.min(p.age, last)
          if (p.snapshot) t.step({ _tag: "Snapshot", from: peer, message: snapshot(3, age) }, i)
          else if (age > 0) t.step({ _tag: "Delta", from: peer, message: delta(3, age) }, i)
        })
        t.step({ _tag: "Snapshot", from: peer, message: snapshot(3, last) }, picks.length)
        assert.deepStrictEqual(held(t.core), { generation: `3.${last}`, value: last })
        // Deltas in order after it apply one by one and stay equal to the owner's view.
        for (let age = last + 1; age <= last + 3; age++) t.step({ _tag: "Delta", from: peer, message: delta(3, age) })
        assert.deepStrictEqual(held(t.core), { generation: `3.${last + 3}`, value: last + 3 })
      },
      { arbitrary: { seed: 4242, runs: 300 } }
    )
  })

  describe("acknowledgements", () => {
    const [d, e] = [NodeId.make("d"), NodeId.make("e")]
    const gen = (incarnation: number, age: number) => Generation.make(incarnation, age)
    const ack = (age: number, from: NodeId.NodeId, incarnation = 1) =>
      ({ _tag: "Ack", from, message: new SyncMessage.Acknowledge({ stateName: "counter", source: from, generation: gen(incarnation, age) }) }) as const
    const ackRequest = (incarnation: number, age: number, from: NodeId.NodeId = peer) =>
      ({ _tag: "AckRequest", from, message: new SyncMessage.AckRequest({ stateName: "counter", source: from, generation: gen(incarnation, age) }) }) as const
    const awaitInput = (
      peers: Sync.AwaitPeers,
      eligible: ReadonlyArray<NodeId.NodeId> = [peer, other, d, e],
      unsupported: ReadonlyArray<NodeId.NodeId> = [],
      id = 0,
      age = 1
    ): Sync.Input<number, number, number> => ({
      _tag: "Await",
      id,
      generation: gen(1, age),
      peers,
      eligible,
      unsupported,
      timeoutMillis: 1_000
    })
    /** An owner at 1.0 that committed a delta mutation to 1.1 (pushed at once under active push). */
    const committed = (options: Parameters<typeof make>[0] = {}) => {
      const t = make(options)
      t.step({ _tag: "Committed", owner: owner(1, 1), change: 1 })
      for (const key of Object.keys(t.counts)) delete t.counts[key as Sync.CounterKey]
      return t
    }
    const requests = (to: ReadonlyArray<NodeId.NodeId>, age = 1) =>
      to.map((node) => ({ _tag: "SendAckRequest" as const, to: node, generation: gen(1, age) }))
    const resolved = (
      outcome: Sync.AwaitOutcome,
      acknowledged: ReadonlyArray<NodeId.NodeId>,
      missing: ReadonlyArray<NodeId.NodeId>,
      required: number,
      eligible: ReadonlyArray<NodeId.NodeId> = [peer, other, d, e],
      unsupported: ReadonlyArray<NodeId.NodeId> = [],
      id = 0
    ) => ({ _tag: "ResolveAwait" as const, id, outcome, acknowledged, missing, required, eligible, unsupported })

    it("requiredOf: n as given, majority of the group counting the owner, all members", () => {
      assert.deepStrictEqual([0, 1, 2, 3, 4].map((m) => Sync.requiredOf("majority", m)), [0, 1, 1, 2, 2])
      assert.deepStrictEqual([0, 4].map((m) => Sync.requiredOf("all", m)), [0, 4])
      assert.strictEqual(Sync.requiredOf(3, 4), 3)
    })

    it("majority of 5: requests to the 4 peers, resolved at the second acknowledgement with exactly 2", () => {
      const t = committed()
      assert.deepStrictEqual(t.step(awaitInput("majority")), [
        ...requests([peer, other, d, e]),
        { _tag: "StartAwaitTimer", id: 0, millis: 1_000 },
          { _tag: "StartAwaitRetry", id: 0, millis: 333 }
      ])
      assert.deepStrictEqual(t.step(ack(1, other)), [])
      assert.deepStrictEqual(t.step(ack(1, other)), [])
      assert.deepStrictEqual(t.step(ack(1, e)), [resolved("Acknowledged", [other, e], [peer, d], 2)])
      assert.deepStrictEqual(t.step(ack(1, peer)), [])
      assert.strictEqual(t.core.awaits.size, 0)
      assert.deepStrictEqual(t.counts, { ackRequestsSent: 4, acksReceived: 4 })
      assert.deepStrictEqual(t.step({ _tag: "AwaitDue", id: 0 }), [])
    })

    it("all: resolved once every awaited peer acknowledged; n: once n did", () => {
      const t = committed()
      t.step(awaitInput("all"))
      for (const node of [peer, other, d]) assert.deepStrictEqual(t.step(ack(1, node)), [])
      assert.deepStrictEqual(t.step(ack(1, e)), [resolved("Acknowledged", [peer, other, d, e], [], 4)])
      const u = committed()
      u.step(awaitInput(3))
      u.step(ack(1, peer))
      u.step(ack(1, d))
      assert.deepStrictEqual(u.step(ack(1, e)), [resolved("Acknowledged", [peer, d, e], [other], 3)])
    })

    it("an acknowledgement of a newer generation covers older awaits; one the owner never reached is ignored", () => {
      const t = committed()
      t.step(awaitInput(1))
      assert.deepStrictEqual(t.step(ack(7, peer)), [])
      assert.deepStrictEqual(t.counts, { ackRequestsSent: 4 })
      t.step({ _tag: "Committed", owner: owner(1, 2), change: 1 })
      t.step(awaitInput(2, [peer, other, d, e], [], 1, 2))
      assert.deepStrictEqual(t.step(ack(2, peer)), [resolved("Acknowledged", [peer], [other, d, e], 1)])
      assert.deepStrictEqual(t.step(ack(2, other)), [resolved("Acknowledged", [peer, other], [d, e], 2, undefined, [], 1)])
      // Already acknowledged when it is awaited: resolved at once, nothing asked.
      assert.deepStrictEqual(t.step(awaitInput(2, [peer, other], [], 2, 2)), [
        resolved("Acknowledged", [peer, other], [], 2, [peer, other], [], 2)
      ])
    })

    it("while it waits, the peers that have not acknowledged get the snapshot and the request again, every retry interval", () => {
      assert.deepStrictEqual([Sync.retryMillisOf(5_000, 1_000), Sync.retryMillisOf(1_000, 60_000), Sync.retryMillisOf(5_000, 2)], [333, 1_000, 1])
      const t = committed()
      t.step(awaitInput("all"))
      t.step(ack(1, other))
      t.step(ack(1, d))
      assert.deepStrictEqual(t.step({ _tag: "AwaitRetryDue", id: 0 }), [
        { _tag: "SendSnapshot", to: peer },
        ...requests([peer]),
        { _tag: "SendSnapshot", to: e },
        ...requests([e]),
        { _tag: "StartAwaitRetry", id: 0, millis: 333 }
      ])
      assert.deepStrictEqual(t.counts, { ackRequestsSent: 6, acksReceived: 2 })
      t.step(ack(1, peer))
      t.step(ack(1, e))
      // Resolved: a retry still due finds nothing to do.
      assert.deepStrictEqual(t.step({ _tag: "AwaitRetryDue", id: 0 }), [])
    })

    it("the timeout resolves with who acknowledged and who is missing; a late acknowledgement changes nothing", () => {
      const t = committed()
      t.step(awaitInput("all"))
      t.step(ack(1, other))
      assert.deepStrictEqual(t.step({ _tag: "AwaitDue", id: 0 }), [resolved("TimedOut", [other], [peer, d, e], 4)])
      assert.deepStrictEqual(t.step(ack(1, peer)), [])
      assert.strictEqual(t.core.acked.get(peer)!.age, 1)
    })

    it("more acknowledgements than members able to give them: unsatisfiable at once, nothing sent", () => {
      assert.deepStrictEqual(committed().step(awaitInput(5)), [resolved("Unsatisfiable", [], [peer, other, d, e], 5)])
      // "all" with a member that speaks only the older wire version.
      assert.deepStrictEqual(committed().step(awaitInput("all", [peer, other, d], [e])), [
        resolved("Unsatisfiable", [], [peer, other, d], 4, [peer, other, d], [e])
      ])
      // That member still counts in the group's size for a majority, and is never asked.
      const t = committed()
      assert.deepStrictEqual(t.step(awaitInput("majority", [peer, other, d], [e])), [
        ...requests([peer, other, d]),
        { _tag: "StartAwaitTimer", id: 0, millis: 1_000 },
          { _tag: "StartAwaitRetry", id: 0, millis: 333 }
      ])
      // No peers at all: resolved at once with none.
      assert.deepStrictEqual(committed().step(awaitInput("majority", [], [])), [resolved("Acknowledged", [], [], 0, [], [])])
    })

    it("a member that leaves during the wait is not counted: all shrinks to who stays, n becomes unsatisfiable", () => {
      const t = committed()
      t.step(awaitInput("all"))
      t.step(ack(1, peer))
      t.step(ack(1, other))
      t.step(ack(1, d))
      // e leaves: "all" is now the three that stay, who all acknowledged.
      const left = t.step({ _tag: "PeerLeft", node: e })
      assert.deepStrictEqual(left, [resolved("Acknowledged", [peer, other, d], [], 3, [peer, other, d])])
      const u = committed()
      u.step(awaitInput(4))
      u.step(ack(1, peer))
      // An acknowledging member that leaves is not counted either.
      assert.deepStrictEqual(u.step({ _tag: "PeerLeft", node: peer }), [
        resolved("Unsatisfiable", [], [other, d, e], 4, [other, d, e])
      ])
    })

    it("active push: an await sends what peers were not sent yet (a coalesced push) before asking", () => {
      const t = make({ config: { delta: false } })
      assert.deepStrictEqual(t.step({ _tag: "Committed", owner: owner(1, 1), change: undefined }), [publish, { _tag: "SchedulePush" }])
      assert.deepStrictEqual(t.step(awaitInput(1, [peer])), [
        { _tag: "SendSnapshot", to: undefined },
        ...requests([peer]),
        { _tag: "StartAwaitTimer", id: 0, millis: 1_000 },
          { _tag: "StartAwaitRetry", id: 0, millis: 333 }
      ])
      assert.deepStrictEqual(t.step({ _tag: "PushDue" }), [])
    })

    for (const pushMode of ["FeedLazyPull", "None"] as const) {
      it(`${pushMode}: an await sends the snapshot to each awaited peer, then asks`, () => {
        const t = make({ config: { pushMode } })
        t.step({ _tag: "Committed", owner: owner(1, 1), change: 1 })
        assert.deepStrictEqual(t.step(awaitInput(2, [peer, other])), [
          { _tag: "SendSnapshot", to: peer },
          { _tag: "SendSnapshot", to: other },
          ...requests([peer, other]),
          { _tag: "StartAwaitTimer", id: 0, millis: 1_000 },
          { _tag: "StartAwaitRetry", id: 0, millis: 333 }
        ])
      })
    }

    it("peer side: a request for a generation held is acknowledged once per turn with the newest held", () => {
      const t = holding()
      assert.deepStrictEqual(t.step(ackRequest(5, 9)), [{ _tag: "ScheduleAck" }])
      assert.deepStrictEqual(t.step(ackRequest(5, 10)), [])
      assert.deepStrictEqual(t.step({ _tag: "AckDue" }), [{ _tag: "SendAck", to: peer, generation: gen(5, 10) }])
      assert.deepStrictEqual(t.step({ _tag: "AckDue" }), [])
      assert.deepStrictEqual(t.counts, { acksSent: 1 })
    })

    it("peer side: a request ahead of the view asks for the snapshot and is acknowledged once the view reaches it", () => {
      const t = holding()
      assert.deepStrictEqual(t.step(ackRequest(5, 12)), [{ _tag: "SendRequest", to: peer, held: gen(5, 10) }])
      assert.deepStrictEqual(t.step({ _tag: "Delta", from: peer, message: delta(5, 11) }), [publish])
      assert.deepStrictEqual(t.step({ _tag: "Snapshot", from: peer, message: snapshot(5, 13) }), [publish, { _tag: "ScheduleAck" }])
      assert.deepStrictEqual(t.step({ _tag: "AckDue" }), [{ _tag: "SendAck", to: peer, generation: gen(5, 13) }])
      assert.strictEqual(t.core.ackWanted.size, 0)
    })

    it("peer side: an owner that left is owed nothing, and a departed incarnation's request is ignored", () => {
      const t = holding()
      t.step(ackRequest(5, 10))
      t.step({ _tag: "PeerLeft", node: peer })
      assert.deepStrictEqual(t.step({ _tag: "AckDue" }), [])
      assert.deepStrictEqual(t.step(ackRequest(5, 11)), [])
      assert.strictEqual(t.counts.departedIgnored, 1)
    })
  })
})

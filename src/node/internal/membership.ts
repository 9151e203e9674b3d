/**
 * Membership of the TCP transport: the shell that drives the membership core
 * (`internal/membership/core.ts`: member records, gossip, refutation,
 * reachability and `downAfter`) and publishes what it decides.
 *
 * A node is a member (NodeJoined) from its first authenticated connection in
 * a session (one process lifetime). When its failure detector finds it silent
 * it is NodeUnreachable (its views stay); heard again, NodeReachable. It is
 * NodeLeft when it sends `Leave` (at once), when it was unreachable here for
 * `downAfter`, when another node's down or leave of it is gossiped here, or
 * when a newer session of the same node id appears (NodeLeft, then
 * NodeJoined). A broken connection alone does not make a node leave: the
 * dialer reconnects, and frames queued meanwhile wait.
 *
 * Membership changes spread by gossip (`gossip.ts`): heartbeats carry no
 * member list. The handshake carries the node's own record and a list of
 * up to 64 connected members (whom a newcomer dials at once; the digest
 * exchange brings it the others); a change of this node's
 * groups is sent to every peer at once (`Groups`, its version being the
 * node's incarnation) and gossiped. Nodes learned from gossip are dialed by
 * the smaller id. Peers that do not list `Protocol.gossipMembershipFeature`
 * are sent the frames of before: `Heartbeat` (groups, an empty member list)
 * and, when a node joins, `Members`. With `TcpRuntime.ExternalMembership`,
 * the listed set replaces discovery: only listed nodes are dialed or
 * admitted, one that drops out of the set is declared down at once, and a
 * silent one is unreachable, then down after `downAfter`, as with gossip.
 *
 * Lives here: the member list and node info, admitting a peer after its
 * handshake and announcing its join, reachability, declaring a peer down,
 * group bookkeeping (`groupJoins` included), acting on the core's events,
 * and following the external member set.
 * @internal
 */
import { Clock, Deferred, Duration, Effect, PubSub, Result, Stream } from "effect"
import type { GroupJoin } from "../../ActorRuntime.ts"
import * as Core from "../../internal/membership/core.ts"
import { BoundedLru } from "../../internal/lru.ts"
import * as MetricSeries from "../../internal/metricSeries.ts"
import * as Metrics from "../../Metrics.ts"
import type { NodeId } from "../../NodeId.ts"
import type { Handshake } from "./handshake.ts"
import * as Detector from "./detector.ts"
import {
  addressKey,
  type Address,
  type Conn,
  type ConnectionFailed,
  encode,
  fail,
  isDialerOf,
  monotonicMillis,
  type Node,
  type Peer
} from "./node.ts"
import * as Outbound from "./outbound.ts"
import * as Protocol from "./protocol.ts"

const leftSessionsRemembered = 1024

/**
 * The most members a handshake lists (besides this node): enough for a newcomer to start dialing, small
 * enough for `handshakeFrameBytes` in any cluster; the digest exchange brings the rest.
 */
const handshakeMembers = 64

/** memberlist's `RetransmitMult`: each node gossips a change `4 × ⌈log10(n + 1)⌉` times. */
const retransmitMultiplier = 4

export type DownReason = "left" | "failed" | "restarted" | "evicted"

export interface Membership {
  /** The membership core this shell drives. */
  readonly core: Core.Core
  /** With external membership: whether `node` is not listed (its connections are refused). */
  readonly refuses: (node: NodeId) => boolean
  /** This node and every connected member. */
  readonly memberList: () => Array<Protocol.MemberEntry>
  /** What this node tells a peer about itself in the handshake. */
  readonly nodeInfo: () => Protocol.NodeInfo
  /** Sends a membership frame to a peer, counting its bytes (`membershipBytesSent`). */
  readonly send: (peer: Peer, message: Protocol.TransportMessage) => void
  /** The periodic heartbeat to each connected peer: a `Pulse`, or to a peer of before a `Heartbeat`. */
  readonly heartbeat: () => void
  /** Makes the node of a completed handshake a member (a new peer, or a new connection of a known one). */
  readonly admit: (conn: Conn, hs: Handshake) => Effect.Effect<{ readonly peer: Peer; readonly joining: boolean }, ConnectionFailed>
  /** Announces a peer that was just admitted for the first time in its session. */
  readonly joined: (peer: Peer) => Effect.Effect<void>
  /** Ends a peer's membership (no-op when it is not the current member of its node). */
  readonly declareDown: (peer: Peer, reason: DownReason) => Effect.Effect<void>
  /** Consults the detectors (`multiplier`: local health, 1 by default): unreachable, reachable, down after `downAfter`. */
  readonly check: (multiplier?: number) => Effect.Effect<void>
  /** Acts on what the core decided. */
  readonly apply: (events: ReadonlyArray<Core.Event>) => Effect.Effect<void>
  /** Records a peer's groups; with `announce`, the groups it joined since are published as `groupJoins`. */
  readonly applyGroups: (peer: Peer, version: number, groups: ReadonlyArray<string>, announce: boolean) => void
  /** Learns of members from a peer's list (handshake, or a peer of before); starts dialing the ones this node is to dial. */
  readonly learn: (members: ReadonlyArray<Protocol.MemberEntry>) => Effect.Effect<void>
  readonly joinGroup: (group: string) => Effect.Effect<void>
  readonly leaveGroup: (group: string) => Effect.Effect<void>
  /** The nodes in a group, this node included when it joined. */
  readonly members: (group: string) => ReadonlyArray<NodeId>
  readonly groupJoins: Stream.Stream<GroupJoin>
  /**
   * Follows the external member set: dials every listed node (both sides dial; the tie-break keeps
   * one connection), and declares down the ones that are no longer listed.
   */
  readonly follow: (external: Stream.Stream<ReadonlyMap<NodeId, Address>>) => Effect.Effect<void>
}

/** What membership asks of the dialer. */
export interface Dialing {
  /** Keeps a connection to a node (dialing it while it is not connected). */
  readonly ensure: (node: NodeId) => Effect.Effect<void>
  /** Stops dialing a node. */
  readonly stop: (node: NodeId) => Effect.Effect<void>
}

export const make = Effect.fnUntraced(function*(
  node: Node,
  options: {
    readonly external: boolean
    readonly dialer: Dialing
    /** Called when a peer goes down, before NodeLeft is published (fails the requests waiting for it). */
    readonly onDown: (node: NodeId) => void
  }
) {
  const { counters, peers, addresses, self, annotate, settings } = node
  const { dialer, external } = options
  /** With external membership: the nodes the membership source currently lists. */
  const admitted = new Map<NodeId, Address>()
  const refuses = (other: NodeId) => external && !admitted.has(other)
  /** With external membership: listed nodes that left gracefully; not redialed (their next session dials in). */
  const departedListed = new Set<NodeId>()
  /** Sessions that left gracefully: gossip about them is stale. */
  const leftSessions = new BoundedLru<string, true>(leftSessionsRemembered)
  /** Peers seen joining a group after their registration (see `ActorRuntime.groupJoins`). */
  const groupJoins = yield* PubSub.unbounded<GroupJoin>()

  const emptyGossip = Protocol.encode({ _tag: "Gossip", records: [] }, node.frameLimit)
  const emptyGossipBytes = Result.isSuccess(emptyGossip) ? emptyGossip.success.length : Protocol.headerBytes
  const recordBytes = (m: Core.Member) => {
    const frame = Protocol.encode({ _tag: "Gossip", records: [m as Protocol.MemberRecord] }, node.frameLimit)
    return Result.isSuccess(frame) ? frame.success.length - emptyGossipBytes : node.frameLimit
  }
  const core = Core.make(
    {
      node: self,
      session: node.session,
      started: yield* Clock.currentTimeMillis,
      incarnation: 0,
      status: "alive",
      host: node.address.host,
      port: node.address.port,
      groups: []
    },
    {
      downAfterMillis: Duration.toMillis(settings.downAfter),
      retransmitMultiplier,
      maxTombstones: leftSessionsRemembered
    },
    recordBytes
  )
  /** This node's groups, and their version: its incarnation. */
  const localGroups = () => core.self().groups
  const groupsVersion = () => core.self().incarnation

  const send = (peer: Peer, message: Protocol.TransportMessage) => {
    const frame = encode(node, message)
    if (Result.isFailure(frame)) return
    counters.membershipBytesSent += frame.success.length
    peer.outbound.offer(frame.success)
  }

  /** Sends to every peer (connected or reconnecting) that `which` selects. */
  const sendAll = (message: Protocol.TransportMessage, which: (peer: Peer) => boolean) => {
    const frame = encode(node, message)
    if (Result.isFailure(frame)) return
    for (const peer of peers.values()) {
      if (!which(peer)) continue
      counters.membershipBytesSent += frame.success.length
      peer.outbound.offer(frame.success)
    }
  }

  const memberList = (): Array<Protocol.MemberEntry> => {
    const list: Array<Protocol.MemberEntry> = [{ node: self, session: node.session, host: node.address.host, port: node.address.port }]
    for (const peer of peers.values()) {
      list.push({ node: peer.node, session: peer.session, host: peer.address.host, port: peer.address.port })
    }
    return list
  }

  const features = [
    Protocol.traceContextFeature,
    Protocol.bareDeliverFeature,
    Protocol.gossipMembershipFeature,
    ...(settings.syncProtocol >= 2 ? [Protocol.syncProtocolFeature(2)] : [])
  ]

  const nodeInfo = (): Protocol.NodeInfo => ({
    host: node.address.host,
    port: node.address.port,
    groupsVersion: groupsVersion(),
    groups: [...localGroups()],
    members: memberList().slice(0, handshakeMembers + 1),
    features,
    self: core.self() as Protocol.MemberRecord
  })

  const heartbeat = () => {
    let pulse: Uint8Array | undefined
    let legacy: Uint8Array | undefined
    for (const peer of peers.values()) {
      if (peer.active === undefined) continue
      if (peer.gossip) {
        if (pulse === undefined) {
          const frame = encode(node, { _tag: "Pulse" })
          if (Result.isFailure(frame)) return
          pulse = frame.success
        }
        counters.membershipBytesSent += pulse.length
        peer.outbound.offer(pulse)
      } else {
        if (legacy === undefined) {
          const frame = encode(node, { _tag: "Heartbeat", groupsVersion: groupsVersion(), groups: [...localGroups()], members: [] })
          if (Result.isFailure(frame)) return
          legacy = frame.success
        }
        counters.membershipBytesSent += legacy.length
        peer.outbound.offer(legacy)
      }
      counters.heartbeatsSent++
    }
  }

  const declareDown = Effect.fnUntraced(function*(peer: Peer, reason: DownReason) {
    if (peers.get(peer.node) !== peer) return
    peers.delete(peer.node)
    peer.queueGauge.remove()
    peer.outbound.clear()
    options.onDown(peer.node)
    const record = core.records().get(peer.node)
    if (reason === "left") {
      leftSessions.set(`${peer.node}/${peer.session}`, true)
      addresses.delete(peer.node)
      if (external) departedListed.add(peer.node)
      // Gossiped on, for the members the leaving node could not tell itself.
      if (record !== undefined && record.session === peer.session) core.receive([{ ...record, status: "left" }], 0)
    }
    if (reason === "evicted") core.forget(peer.node)
    if (reason === "failed") counters.failuresDetected++
    counters.nodesLeft++
    yield* node.events.left(peer.node)
    yield* Effect.logInfo("node left").pipe(
      Effect.annotateLogs({ peer: peer.node, reason, session: peer.session }),
      annotate
    )
    // Last: closing a connection interrupts its reader, which may be the fiber running this.
    for (const conn of peer.conns) Deferred.doneUnsafe(conn.close, Effect.void)
  }, Effect.uninterruptible)

  const applyGroups = (peer: Peer, version: number, groups: ReadonlyArray<string>, announce: boolean) => {
    if (version <= peer.groupsVersion) return
    const before = peer.groups
    peer.groupsVersion = version
    peer.groups = new Set(groups)
    if (announce) for (const group of peer.groups) if (!before.has(group)) PubSub.publishUnsafe(groupJoins, { group, node: peer.node })
  }

  /** Dials a member learned of (when this node is the one to dial it). */
  const discovered = Effect.fnUntraced(function*(other: NodeId, session: string, address: Address) {
    if (external || other === self) return
    if (leftSessions.has(`${other}/${session}`)) return
    const known = peers.get(other)
    if (known !== undefined && known.session === session) return
    addresses.set(other, address)
    if (isDialerOf(node, other)) yield* dialer.ensure(other)
  })

  const apply = Effect.fnUntraced(function*(events: ReadonlyArray<Core.Event>) {
    for (const event of events) {
      switch (event._tag) {
        case "Discovered": {
          const m = event.member
          yield* discovered(m.node as NodeId, m.session, { host: m.host, port: m.port })
          break
        }
        case "Updated": {
          const peer = peers.get(event.member.node as NodeId)
          if (peer !== undefined && peer.session === event.member.session && peer.gossip) {
            applyGroups(peer, event.member.incarnation, event.member.groups, true)
          }
          break
        }
        case "Gone": {
          const peer = peers.get(event.member.node as NodeId)
          if (peer === undefined || peer.session !== event.member.session) break
          // A leave is final for the session; a down, heard from another node, ends this member here too.
          yield* declareDown(peer, event.reason === "left" ? "left" : event.reason === "restarted" ? "restarted" : "failed")
          break
        }
        case "Unreachable":
        case "Reachable":
          // Only from `silent` and `heard`, which `check` publishes itself.
          break
      }
    }
  })

  const learn = Effect.fnUntraced(function*(members: ReadonlyArray<Protocol.MemberEntry>) {
    for (const m of members) yield* discovered(m.node, m.session, { host: m.host, port: m.port })
  })

  const check = Effect.fnUntraced(function*(multiplier = 1) {
    const now = yield* monotonicMillis
    for (const peer of [...peers.values()]) {
      const silent = peer.detector.failed(now, multiplier)
      if (silent && !peer.unreachable) {
        peer.unreachable = true
        counters.nodesUnreachable++
        core.silent(peer.node, now)
        const since = (yield* Clock.currentTimeMillis) - peer.detector.silence(now)
        yield* node.events.unreachable(peer.node, since)
        yield* Effect.logWarning("failure detector: node is unreachable").pipe(
          Effect.annotateLogs({ peer: peer.node, silenceMillis: peer.detector.silence(now) }),
          annotate
        )
      } else if (!silent && peer.unreachable) {
        peer.unreachable = false
        counters.nodesReachable++
        core.heard(peer.node, now)
        yield* node.events.reachable(peer.node)
        yield* Effect.logInfo("node is reachable again").pipe(Effect.annotateLogs({ peer: peer.node }), annotate)
      }
    }
    const downs = core.tick(now, multiplier)
    for (const event of downs) {
      if (event._tag !== "Gone") continue
      const peer = peers.get(event.member.node as NodeId)
      if (peer === undefined || peer.session !== event.member.session) continue
      yield* Effect.logWarning("node is down: unreachable for downAfter").pipe(
        Effect.annotateLogs({ peer: peer.node, downAfterMillis: Duration.toMillis(settings.downAfter) }),
        annotate
      )
      yield* declareDown(peer, "failed")
    }
  })

  const admit = Effect.fnUntraced(function*(conn: Conn, hs: Handshake) {
    if (leftSessions.has(`${hs.node}/${hs.session}`)) return yield* fail("left", "this session already left")
    if (refuses(hs.node)) return yield* fail("not-member", `${hs.node} is not a member`)
    const now = yield* monotonicMillis
    let peer = peers.get(hs.node)
    if (peer !== undefined && peer.session !== hs.session) {
      yield* declareDown(peer, "restarted")
      peer = undefined
    }
    const joining = peer === undefined
    if (peer === undefined) {
      const outbound = yield* Outbound.make(
        { maxBytes: settings.maxQueuedBytes, maxFrames: settings.maxQueuedFrames },
        {
          frames: settings.backpressureFrames,
          bytes: settings.backpressureBytes,
          stallMillis: Duration.toMillis(settings.stallTimeout)
        }
      )
      peer = {
        node: hs.node,
        session: hs.session,
        address: { host: hs.info.host, port: hs.info.port },
        active: undefined,
        conns: new Set(),
        outbound,
        groups: new Set(),
        groupsVersion: -1,
        traceContext: false,
        bareDeliver: false,
        syncProtocol: 1,
        detector: Detector.make(settings.detector, now),
        gossip: false,
        unreachable: false,
        queueGauge: MetricSeries.gauge(
          Metrics.outboundQueueBytes,
          MetricSeries.labelled(node.metricContext, { peer: hs.node }),
          () => outbound.stats().queuedBytes
        )
      }
      peers.set(hs.node, peer)
    }
    peer.address = { host: hs.info.host, port: hs.info.port }
    peer.traceContext = hs.info.features?.includes(Protocol.traceContextFeature) ?? false
    peer.bareDeliver = hs.info.features?.includes(Protocol.bareDeliverFeature) ?? false
    peer.gossip = (hs.info.features?.includes(Protocol.gossipMembershipFeature) ?? false) && hs.info.self !== undefined &&
      hs.info.self.node === hs.node && hs.info.self.session === hs.session
    peer.syncProtocol = Protocol.negotiateSyncProtocol(settings.syncProtocol, hs.info.features)
    addresses.set(hs.node, peer.address)
    peer.conns.add(conn)
    peer.detector.heard(now)
    // The core learns the member from the connection itself: the newest word on its session and liveness.
    // A peer of before has no record: its groups version stands for its incarnation.
    const record: Core.Member = peer.gossip && hs.info.self !== undefined
      ? hs.info.self
      : {
        node: hs.node,
        session: hs.session,
        started: core.records().get(hs.node)?.session === hs.session
          ? core.records().get(hs.node)!.started
          : yield* Clock.currentTimeMillis,
        incarnation: Math.max(0, hs.info.groupsVersion),
        status: "alive",
        host: hs.info.host,
        port: hs.info.port,
        groups: hs.info.groups
      }
    core.direct(record, now)
    // A peer seen before (a new connection of the same session) may have joined groups meanwhile.
    applyGroups(peer, hs.info.groupsVersion, hs.info.groups, !joining)
    counters.handshakesCompleted++
    return { peer, joining }
  })

  const joined = Effect.fnUntraced(function*(peer: Peer) {
    departedListed.delete(peer.node)
    // Our groups first: the handshake may predate a group joined since, and what our states send
    // next must not reach a peer that does not count us in their group yet.
    send(peer, { _tag: "Groups", version: groupsVersion(), groups: [...localGroups()] })
    counters.nodesJoined++
    yield* node.events.joined(peer.node)
    yield* Effect.logInfo("node joined").pipe(
      Effect.annotateLogs({ peer: peer.node, session: peer.session, address: addressKey(peer.address) }),
      annotate
    )
    // Peers of before learn of the newcomer from a member list at once; the others from gossip.
    sendAll({ _tag: "Members", members: memberList() }, (p) => p.node !== peer.node && !p.gossip)
  })

  const changeGroups = (update: (groups: Set<string>) => boolean) =>
    Effect.sync(() => {
      const next = new Set(localGroups())
      if (!update(next)) return
      const record = core.setGroups([...next])
      // At once to every peer, so that what this node's states send next finds it counted in the group.
      sendAll({ _tag: "Groups", version: record.incarnation, groups: [...record.groups] }, () => true)
    })

  const members = (group: string): ReadonlyArray<NodeId> => {
    const out: Array<NodeId> = []
    if (localGroups().includes(group)) out.push(self)
    for (const peer of peers.values()) if (peer.groups.has(group)) out.push(peer.node)
    return out
  }

  const follow = (source: Stream.Stream<ReadonlyMap<NodeId, Address>>) =>
    Stream.runForEach(source, Effect.fnUntraced(function*(listed: ReadonlyMap<NodeId, Address>) {
      for (const [other, address] of listed) {
        if (other === self) continue
        admitted.set(other, address)
        if (departedListed.has(other)) continue
        addresses.set(other, address)
        yield* dialer.ensure(other)
      }
      for (const other of [...admitted.keys()]) {
        if (listed.has(other)) continue
        admitted.delete(other)
        departedListed.delete(other)
        addresses.delete(other)
        yield* dialer.stop(other)
        const peer = peers.get(other)
        if (peer !== undefined) yield* declareDown(peer, "evicted")
        else core.forget(other)
      }
    })).pipe(
      Effect.catchCause((cause) => Effect.logError("membership source failed", cause).pipe(annotate))
    )

  const membership: Membership = {
    core,
    refuses,
    memberList,
    nodeInfo,
    send,
    heartbeat,
    admit,
    joined,
    declareDown,
    check,
    apply,
    applyGroups,
    learn,
    joinGroup: (group) => changeGroups((g) => !g.has(group) && g.add(group) !== undefined),
    leaveGroup: (group) => changeGroups((g) => g.delete(group)),
    members,
    groupJoins: Stream.fromPubSub(groupJoins),
    follow
  }
  return membership
})

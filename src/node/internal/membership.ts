/**
 * Membership of the TCP transport: who is a member, which groups each member
 * is in, and how both are gossiped.
 *
 * A node is a member (NodeJoined) from its first authenticated connection in
 * a session (one process lifetime) until it sends `Leave`, until the failure
 * detector gives up on it, or until a connection from a newer session of the
 * same node id arrives (NodeLeft, then NodeJoined). A broken connection alone
 * does not make a node leave: the dialer reconnects, and frames queued
 * meanwhile wait.
 *
 * Members and groups travel in the handshake's node info and in heartbeats;
 * a change of this node's groups is sent at once (`Groups`), and so is the
 * member list when a node joins (`Members`). Nodes learned from gossip are
 * dialed by the smaller id. With `TcpRuntime.ExternalMembership`, the listed
 * set replaces gossip: only listed nodes are dialed or admitted, and one that
 * drops out of the set is declared down.
 *
 * Lives here: the member list and node info, admitting a peer after its
 * handshake and announcing its join, declaring it down, group bookkeeping
 * (`groupJoins` included), learning from gossip, and following the external
 * member set.
 * @internal
 */
import { Deferred, Duration, Effect, PubSub, Result, Stream } from "effect"
import type { GroupJoin } from "../../ActorRuntime.ts"
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
  offerAll,
  type Peer
} from "./node.ts"
import * as Outbound from "./outbound.ts"
import * as Protocol from "./protocol.ts"

const leftSessionsRemembered = 1024

export type DownReason = "left" | "failed" | "restarted" | "evicted"

export interface Membership {
  /** With external membership: whether `node` is not listed (its connections are refused). */
  readonly refuses: (node: NodeId) => boolean
  /** This node and every member, as gossiped. */
  readonly memberList: () => Array<Protocol.MemberEntry>
  /** What this node tells a peer about itself in the handshake. */
  readonly nodeInfo: () => Protocol.NodeInfo
  /** The periodic heartbeat: this node's groups and member list. */
  readonly heartbeat: () => Protocol.TransportMessage
  /** Makes the node of a completed handshake a member (a new peer, or a new connection of a known one). */
  readonly admit: (conn: Conn, hs: Handshake) => Effect.Effect<{ readonly peer: Peer; readonly joining: boolean }, ConnectionFailed>
  /** Announces a peer that was just admitted for the first time in its session. */
  readonly joined: (peer: Peer) => Effect.Effect<void>
  /** Ends a peer's membership (no-op when it is not the current member of its node). */
  readonly declareDown: (peer: Peer, reason: DownReason) => Effect.Effect<void>
  /** Records a peer's groups; with `announce`, the groups it joined since are published as `groupJoins`. */
  readonly applyGroups: (peer: Peer, version: number, groups: ReadonlyArray<string>, announce: boolean) => void
  /** Learns of members from a peer's gossip; starts dialing the ones this node is to dial. */
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
  let localGroups = new Set<string>()
  let groupsVersion = 0
  /** Peers seen joining a group after their registration (see `ActorRuntime.groupJoins`). */
  const groupJoins = yield* PubSub.unbounded<GroupJoin>()

  const memberList = (): Array<Protocol.MemberEntry> => {
    const list: Array<Protocol.MemberEntry> = [{ node: self, session: node.session, host: node.address.host, port: node.address.port }]
    for (const peer of peers.values()) {
      list.push({ node: peer.node, session: peer.session, host: peer.address.host, port: peer.address.port })
    }
    return list
  }

  const nodeInfo = (): Protocol.NodeInfo => ({
    host: node.address.host,
    port: node.address.port,
    groupsVersion,
    groups: [...localGroups],
    members: memberList(),
    features: settings.syncProtocol >= 2
      ? [Protocol.traceContextFeature, Protocol.bareDeliverFeature, Protocol.syncProtocolFeature(2)]
      : [Protocol.traceContextFeature, Protocol.bareDeliverFeature]
  })

  const declareDown = Effect.fnUntraced(function*(peer: Peer, reason: DownReason) {
    if (peers.get(peer.node) !== peer) return
    peers.delete(peer.node)
    peer.queueGauge.remove()
    peer.outbound.clear()
    options.onDown(peer.node)
    if (reason === "left") {
      leftSessions.set(`${peer.node}/${peer.session}`, true)
      addresses.delete(peer.node)
      if (external) departedListed.add(peer.node)
    }
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

  const learn = Effect.fnUntraced(function*(members: ReadonlyArray<Protocol.MemberEntry>) {
    if (external) return
    for (const m of members) {
      if (m.node === self) continue
      if (leftSessions.has(`${m.node}/${m.session}`)) continue
      const known = peers.get(m.node)
      if (known !== undefined && known.session === m.session) continue
      addresses.set(m.node, { host: m.host, port: m.port })
      if (isDialerOf(node, m.node)) yield* dialer.ensure(m.node)
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
    peer.syncProtocol = Protocol.negotiateSyncProtocol(settings.syncProtocol, hs.info.features)
    addresses.set(hs.node, peer.address)
    peer.conns.add(conn)
    peer.detector.heard(now)
    // A peer seen before (a new connection of the same session) may have joined groups meanwhile.
    applyGroups(peer, hs.info.groupsVersion, hs.info.groups, !joining)
    counters.handshakesCompleted++
    return { peer, joining }
  })

  const joined = Effect.fnUntraced(function*(peer: Peer) {
    departedListed.delete(peer.node)
    // Our groups first: the handshake may predate a group joined since, and what our states send
    // next must not reach a peer that does not count us in their group yet.
    const groups = encode(node, { _tag: "Groups", version: groupsVersion, groups: [...localGroups] })
    if (Result.isSuccess(groups)) peer.outbound.offer(groups.success)
    counters.nodesJoined++
    yield* node.events.joined(peer.node)
    yield* Effect.logInfo("node joined").pipe(
      Effect.annotateLogs({ peer: peer.node, session: peer.session, address: addressKey(peer.address) }),
      annotate
    )
    // Tell the others at once, so that they connect to the newcomer without waiting for a heartbeat.
    offerAll(node, { _tag: "Members", members: memberList() }, peer.node)
  })

  const changeGroups = (update: (groups: Set<string>) => boolean) =>
    Effect.sync(() => {
      const next = new Set(localGroups)
      if (!update(next)) return
      localGroups = next
      groupsVersion++
      offerAll(node, { _tag: "Groups", version: groupsVersion, groups: [...localGroups] })
    })

  const members = (group: string): ReadonlyArray<NodeId> => {
    const out: Array<NodeId> = []
    if (localGroups.has(group)) out.push(self)
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
      }
    })).pipe(
      Effect.catchCause((cause) => Effect.logError("membership source failed", cause).pipe(annotate))
    )

  const membership: Membership = {
    refuses,
    memberList,
    nodeInfo,
    heartbeat: () => ({ _tag: "Heartbeat", groupsVersion, groups: [...localGroups], members: memberList() }),
    admit,
    joined,
    declareDown,
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

/**
 * The machinery of the TCP runtime: the listener, the dialers, one
 * authenticated connection per peer, the per-peer outbound queues and their
 * writers, heartbeats and failure detection, group and member gossip, and
 * request/reply correlation.
 *
 * Life of a connection: the dialer sends `Hello`, the acceptor answers
 * `Challenge` (with its HMAC proof), the dialer verifies it and sends `Auth`
 * (with its own proof and its node info), the acceptor verifies that and
 * answers `Welcome` (with its node info). Until then every other frame closes
 * the connection and is counted; afterwards, every frame is attributed to the
 * authenticated node id of the connection, never to an id the frame claims.
 *
 * Membership: a node is a member (NodeJoined) from its first authenticated
 * connection in a session (one process lifetime) until it sends `Leave`,
 * until the failure detector gives up on it, or until a connection from a
 * newer session of the same node id arrives (NodeLeft, then NodeJoined).
 * A broken connection alone does not make a node leave: the dialer
 * reconnects with the backoff schedule, and frames queued meanwhile wait.
 *
 * One connection per peer: the smaller node id dials the nodes it learns of;
 * seeds are dialed by everyone. When both sides dialed each other, both keep
 * the connection dialed by the smaller id and retire the other one (it stops
 * being written, its write side is closed, and it is read until the peer
 * closes it too, so nothing in flight is lost).
 * @internal
 */
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberMap,
  FiberSet,
  PubSub,
  Redacted,
  Result,
  Schedule,
  Scope,
  Stream
} from "effect"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Socket from "effect/socket/Socket"
import { Buffer } from "node:buffer"
import { randomBytes } from "node:crypto"
import { type ActorRuntime, after, every, type GroupJoin, type Inbound, RequestRejected, spawnActor } from "../../ActorRuntime.ts"
import { type ClusterEvents, makeSource } from "../../ClusterEvents.ts"
import { NodeUnreachable, RequestTimeout } from "../../DStateError.ts"
import type { NodeId } from "../../NodeId.ts"
import * as Detector from "./detector.ts"
import * as Listener from "./listener.ts"
import * as Outbound from "./outbound.ts"
import * as Protocol from "./protocol.ts"
import type { Limits } from "../TcpRuntime.ts"

// ---- configuration ------------------------------------------------------------------------------

export interface Address {
  readonly host: string
  readonly port: number
}

export interface TlsSettings {
  readonly cert: string | Uint8Array
  readonly key: Redacted.Redacted<string | Uint8Array>
  readonly ca: string | Uint8Array | undefined
  readonly mutual: boolean
  readonly verifyHostname: boolean
  readonly servername: string | undefined
}

/** Options with every default applied (the limits as `TcpRuntime.Limits` names them). */
export interface Settings extends Limits {
  readonly nodeId: NodeId
  readonly host: string
  readonly port: number
  readonly advertiseHost: string
  readonly seeds: ReadonlyArray<Address>
  readonly secret: Redacted.Redacted<string | Uint8Array>
  readonly tls: TlsSettings | undefined
  readonly heartbeatInterval: Duration.Duration
  readonly detectorCheckInterval: Duration.Duration
  readonly detector: Detector.DetectorSettings
  readonly handshakeTimeout: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly leaveTimeout: Duration.Duration
  readonly reconnect: Schedule.Schedule<unknown, unknown>
  readonly seedRetryPause: Duration.Duration
}

// ---- diagnostics --------------------------------------------------------------------------------

/** Node-wide counters of the transport. */
export interface TransportStats {
  readonly connectionsAccepted: number
  readonly connectionsDialed: number
  readonly dialFailures: number
  readonly handshakesCompleted: number
  /** Handshakes whose HMAC proof did not verify. */
  readonly authFailures: number
  readonly handshakeTimeouts: number
  /** Frames that arrived before authentication completed, or out of protocol order. */
  readonly rejectedUnauthenticated: number
  /** Frames whose length prefix exceeded the limit (rejected before their body was read). */
  readonly rejectedTooLarge: number
  /** Frames with a bad protocol byte, checksum or encoding. */
  readonly rejectedMalformed: number
  /** Connections refused because too many handshakes were already in progress. */
  readonly rejectedPendingHandshakes: number
  /** Replies whose correlation id was unknown or belonged to a request sent to another node. */
  readonly rejectedReplies: number
  /** Connections closed by the one-connection-per-peer tie-break. */
  readonly duplicateConnections: number
  readonly framesReceived: number
  readonly bytesReceived: number
  /** One-way frames that arrived while no handler was installed. */
  readonly undelivered: number
  /** Frames that could not be sent because they exceed the frame limit. */
  readonly oversizedSends: number
  readonly heartbeatsSent: number
  readonly heartbeatsReceived: number
  readonly nodesJoined: number
  readonly nodesLeft: number
  /** Nodes declared down by the failure detector. */
  readonly failuresDetected: number
  /** Graceful `Leave` frames received. */
  readonly leavesReceived: number
  readonly requestsSent: number
  readonly requestTimeouts: number
}

/** What this node knows of one peer. */
export interface PeerDiagnostics {
  readonly node: NodeId
  /** The peer's process lifetime identifier. */
  readonly session: string
  /** Where the peer accepts connections. */
  readonly address: Address
  /** Whether a connection is currently carrying frames to it. */
  readonly connected: boolean
  /** Open connections (more than one only while a duplicate is being retired). */
  readonly connections: number
  readonly groups: ReadonlyArray<string>
  /** Milliseconds since the last frame from the peer. */
  readonly silenceMillis: number
  /** Current suspicion level of the failure detector. */
  readonly phi: number
  readonly outbound: Outbound.OutboundStats
}

export interface Transport {
  readonly nodeId: NodeId
  readonly session: string
  readonly address: Address
  readonly stats: Effect.Effect<TransportStats>
  readonly peers: Effect.Effect<ReadonlyArray<PeerDiagnostics>>
}

// ---- internal model -----------------------------------------------------------------------------

type Role = "dialer" | "acceptor"

type FailureReason =
  | "closed"
  | "too-large"
  | "malformed"
  | "unauthenticated"
  | "auth-failed"
  | "timeout"
  | "self"
  | "busy"
  | "left"
  | "shutdown"
  | "not-member"

class ConnectionFailed {
  readonly _tag = "ConnectionFailed"
  readonly reason: FailureReason
  readonly detail: string
  constructor(reason: FailureReason, detail: string) {
    this.reason = reason
    this.detail = detail
  }
}

interface Conn {
  readonly id: number
  readonly node: NodeId
  readonly session: string
  readonly dialer: NodeId
  readonly writer: Socket.Writer
  /** Resolved to stop this connection's writer (duplicate being retired, or shutdown). */
  readonly retire: Deferred.Deferred<void>
  /** Resolved to end the connection. */
  readonly close: Deferred.Deferred<void>
  /** Resolved once the connection has ended. */
  readonly ended: Deferred.Deferred<void>
  readonly scope: Scope.Scope
  readonly writerScope: Scope.Closeable
}

interface Peer {
  readonly node: NodeId
  readonly session: string
  address: Address
  active: Conn | undefined
  readonly conns: Set<Conn>
  readonly outbound: Outbound.Outbound
  groups: ReadonlySet<string>
  groupsVersion: number
  readonly detector: Detector.Detector
}

interface Pending {
  readonly to: NodeId
  readonly reply: Deferred.Deferred<Uint8Array, RequestRejected | NodeUnreachable>
}

const WRITE_BATCH = 64
const LEFT_SESSIONS_REMEMBERED = 1024

const pem = (value: string | Uint8Array): string | Buffer =>
  typeof value === "string" ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)

const addressKey = (a: Address) => `${a.host}:${a.port}`

const monotonicMillis = Effect.map(Clock.monotonicTimeNanos, (n) => Number(n / 1_000_000n))

/**
 * Builds the runtime, the membership service and the transport diagnostics in
 * the current scope; `external` is `TcpRuntime.ExternalMembership`.
 */
export const make = (settings: Settings, external: Stream.Stream<ReadonlyMap<NodeId, Address>> | undefined) =>
  Effect.gen(function*() {
    const self = settings.nodeId
    const layerScope = yield* Scope.Scope
    const session = randomBytes(8).toString("hex")
    const source = yield* makeSource
    const tasks = yield* FiberSet.make()
    const dialers = yield* FiberMap.make<string>()
    /** Dialed connections run here: closed after the graceful leave, which needs them to send `Leave`. */
    const dialedScope = yield* Scope.fork(layerScope)
    const annotate = Effect.annotateLogs({ node: self })
    /** With external membership: the nodes the membership source currently lists. */
    const admitted = new Map<NodeId, Address>()
    const refuses = (node: NodeId) => external !== undefined && !admitted.has(node)
    /** With external membership: listed nodes that left gracefully; not redialed (their next session dials in). */
    const departedListed = new Set<NodeId>()

    const peers = new Map<NodeId, Peer>()
    /** Where to dial nodes learned from gossip (kept while down, so they can be redialed). */
    const addresses = new Map<NodeId, Address>()
    /** Which node answered at each seed address. */
    const seedNodes = new Map<string, NodeId>()
    /** Sessions that left gracefully: gossip about them is stale. */
    const leftSessions = new Set<string>()
    const pending = new Map<number, Pending>()
    let inbound: Inbound | undefined
    let localGroups = new Set<string>()
    /** Peers seen joining a group after their registration (see `ActorRuntime.groupJoins`). */
    const groupJoins = yield* PubSub.unbounded<GroupJoin>()
    let groupsVersion = 0
    let nextRequestId = 1
    let nextConnId = 1
    let handshaking = 0
    let closing = false
    const transportFrameLimit = settings.maxFrameBytes + Protocol.ENVELOPE_OVERHEAD
    const heartbeatMillis = Duration.toMillis(settings.heartbeatInterval)

    const counters = {
      connectionsAccepted: 0,
      connectionsDialed: 0,
      dialFailures: 0,
      handshakesCompleted: 0,
      authFailures: 0,
      handshakeTimeouts: 0,
      rejectedUnauthenticated: 0,
      rejectedTooLarge: 0,
      rejectedMalformed: 0,
      rejectedPendingHandshakes: 0,
      rejectedReplies: 0,
      duplicateConnections: 0,
      framesReceived: 0,
      bytesReceived: 0,
      undelivered: 0,
      oversizedSends: 0,
      heartbeatsSent: 0,
      heartbeatsReceived: 0,
      nodesJoined: 0,
      nodesLeft: 0,
      failuresDetected: 0,
      leavesReceived: 0,
      requestsSent: 0,
      requestTimeouts: 0
    }

    // ---- listener -------------------------------------------------------------------------------
    // Accepted connections have Nagle's algorithm off, as dialed ones (noDelay): see listener.ts.
    const tls = settings.tls
    const server = yield* Listener.listen({
      host: settings.host,
      port: settings.port,
      tls: tls === undefined ? undefined : {
        cert: pem(tls.cert),
        key: pem(Redacted.value(tls.key)),
        ...(tls.ca === undefined ? {} : { ca: pem(tls.ca) }),
        requestCert: tls.mutual,
        rejectUnauthorized: tls.mutual
      }
    })
    const boundPort = server.port
    const ownAddress: Address = { host: settings.advertiseHost, port: boundPort }

    // ---- helpers --------------------------------------------------------------------------------
    const encode = (message: Protocol.TransportMessage, limit = transportFrameLimit) =>
      Protocol.encode(message, limit)

    const memberList = (): Array<Protocol.MemberEntry> => {
      const list: Array<Protocol.MemberEntry> = [{ node: self, session, host: ownAddress.host, port: ownAddress.port }]
      for (const peer of peers.values()) {
        list.push({ node: peer.node, session: peer.session, host: peer.address.host, port: peer.address.port })
      }
      return list
    }

    const nodeInfo = (): Protocol.NodeInfo => ({
      host: ownAddress.host,
      port: ownAddress.port,
      groupsVersion,
      groups: [...localGroups],
      members: memberList()
    })

    const secret = () => Protocol.secretBytes(Redacted.value(settings.secret))

    /** Enqueues a control message to every peer (connected or reconnecting). */
    const offerAll = (message: Protocol.TransportMessage, except?: NodeId) => {
      const frame = encode(message)
      if (Result.isFailure(frame)) return
      for (const peer of peers.values()) {
        if (peer.node !== except) peer.outbound.offer(frame.success)
      }
    }

    const isDialerOf = (node: NodeId) => self < node

    // ---- membership -----------------------------------------------------------------------------
    const declareDown = (peer: Peer, reason: "left" | "failed" | "restarted" | "evicted") =>
      Effect.gen(function*() {
        if (peers.get(peer.node) !== peer) return
        peers.delete(peer.node)
        peer.outbound.clear()
        for (const [id, p] of pending) {
          if (p.to === peer.node) {
            pending.delete(id)
            Deferred.doneUnsafe(p.reply, Effect.fail(new NodeUnreachable({ node: peer.node })))
          }
        }
        if (reason === "left") {
          leftSessions.add(`${peer.node}/${peer.session}`)
          if (leftSessions.size > LEFT_SESSIONS_REMEMBERED) {
            leftSessions.delete(leftSessions.values().next().value!)
          }
          addresses.delete(peer.node)
          if (external !== undefined) departedListed.add(peer.node)
        }
        if (reason === "failed") counters.failuresDetected++
        counters.nodesLeft++
        yield* source.left(peer.node)
        yield* Effect.logInfo("node left").pipe(
          Effect.annotateLogs({ peer: peer.node, reason, session: peer.session }),
          annotate
        )
        // Last: closing a connection interrupts its reader, which may be the fiber running this.
        for (const conn of peer.conns) Deferred.doneUnsafe(conn.close, Effect.void)
      }).pipe(Effect.uninterruptible)

    /** Records a peer's groups; with `announce`, the groups it joined since are published as `groupJoins`. */
    const applyGroups = (peer: Peer, version: number, groups: ReadonlyArray<string>, announce: boolean) => {
      if (version <= peer.groupsVersion) return
      const before = peer.groups
      peer.groupsVersion = version
      peer.groups = new Set(groups)
      if (announce) for (const group of peer.groups) if (!before.has(group)) PubSub.publishUnsafe(groupJoins, { group, node: peer.node })
    }

    /** Learns of members from a peer's gossip; starts dialing the ones this node is to dial. */
    const learn = (members: ReadonlyArray<Protocol.MemberEntry>) =>
      Effect.gen(function*() {
        if (external !== undefined) return
        for (const m of members) {
          if (m.node === self) continue
          if (leftSessions.has(`${m.node}/${m.session}`)) continue
          const known = peers.get(m.node)
          if (known !== undefined && known.session === m.session) continue
          addresses.set(m.node, { host: m.host, port: m.port })
          if (isDialerOf(m.node)) yield* ensureDialer(m.node)
        }
      })

    // ---- connections ----------------------------------------------------------------------------
    const fail = (reason: FailureReason, detail: string) => Effect.fail(new ConnectionFailed(reason, detail))

    /** Reads frames off one socket. */
    const frameSource = (pull: Effect.Effect<ReadonlyArray<Uint8Array>, Socket.SocketError>, limit: number) => {
      const reader = new Protocol.FrameReader(limit)
      const next: Effect.Effect<Protocol.TransportMessage, ConnectionFailed> = Effect.gen(function*() {
        while (true) {
          const cut = reader.next()
          if (Result.isFailure(cut)) {
            if (cut.failure._tag === "MessageTooLarge") {
              counters.rejectedTooLarge++
              return yield* fail("too-large", cut.failure.message)
            }
            counters.rejectedMalformed++
            return yield* fail("malformed", cut.failure.message)
          }
          if (cut.success !== undefined) {
            const decoded = Protocol.decode(cut.success)
            if (Result.isFailure(decoded)) {
              counters.rejectedMalformed++
              return yield* fail("malformed", decoded.failure.message)
            }
            counters.framesReceived++
            counters.bytesReceived += cut.success.length
            return decoded.success
          }
          const chunks = yield* pull.pipe(
            Effect.mapError((e) => new ConnectionFailed("closed", e.message))
          )
          for (const chunk of chunks) reader.push(chunk)
        }
      })
      return { reader, next }
    }

    const writeMessage = (writer: Socket.Writer, message: Protocol.TransportMessage, limit: number) =>
      Effect.gen(function*() {
        const frame = encode(message, limit)
        if (Result.isFailure(frame)) return yield* fail("malformed", frame.failure.message)
        yield* writer.write(frame.success).pipe(Effect.mapError((e) => new ConnectionFailed("closed", e.message)))
      })

    interface Handshake {
      readonly node: NodeId
      readonly session: string
      readonly info: Protocol.NodeInfo
    }

    const unexpected = (message: Protocol.TransportMessage, expected: string) => {
      counters.rejectedUnauthenticated++
      return fail("unauthenticated", `expected ${expected} before authentication, got ${message._tag}`)
    }

    const handshakeAsDialer = (
      writer: Socket.Writer,
      next: Effect.Effect<Protocol.TransportMessage, ConnectionFailed>
    ) =>
      Effect.gen(function*() {
        const limit = settings.handshakeFrameBytes
        const dialerNonce = new Uint8Array(randomBytes(Protocol.NONCE_BYTES))
        yield* writeMessage(writer, { _tag: "Hello", node: self, session, nonce: dialerNonce }, limit)
        const challenge = yield* next
        if (challenge._tag !== "Challenge") return yield* unexpected(challenge, "Challenge")
        if (challenge.node === self) return yield* fail("self", "dialed this node itself")
        if (challenge.nonce.length !== Protocol.NONCE_BYTES) {
          counters.authFailures++
          return yield* fail("auth-failed", "bad nonce length")
        }
        const transcript: Protocol.Transcript = {
          dialer: self,
          acceptor: challenge.node,
          dialerSession: session,
          acceptorSession: challenge.session,
          dialerNonce,
          acceptorNonce: challenge.nonce
        }
        const key = secret()
        if (!Protocol.proofMatches(Protocol.proof(key, "acceptor", transcript), challenge.proof)) {
          counters.authFailures++
          return yield* fail("auth-failed", `${challenge.node} did not prove knowledge of the cluster secret`)
        }
        if (refuses(challenge.node)) return yield* fail("not-member", `${challenge.node} is not a member`)
        yield* writeMessage(writer, { _tag: "Auth", proof: Protocol.proof(key, "dialer", transcript), info: nodeInfo() }, limit)
        const welcome = yield* next
        if (welcome._tag !== "Welcome") return yield* unexpected(welcome, "Welcome")
        return { node: challenge.node, session: challenge.session, info: welcome.info } satisfies Handshake
      })

    const handshakeAsAcceptor = (
      writer: Socket.Writer,
      next: Effect.Effect<Protocol.TransportMessage, ConnectionFailed>
    ) =>
      Effect.gen(function*() {
        const limit = settings.handshakeFrameBytes
        const hello = yield* next
        if (hello._tag !== "Hello") return yield* unexpected(hello, "Hello")
        if (hello.node === self) return yield* fail("self", "a connection claims this node's id")
        if (hello.nonce.length !== Protocol.NONCE_BYTES) {
          counters.authFailures++
          return yield* fail("auth-failed", "bad nonce length")
        }
        const acceptorNonce = new Uint8Array(randomBytes(Protocol.NONCE_BYTES))
        const transcript: Protocol.Transcript = {
          dialer: hello.node,
          acceptor: self,
          dialerSession: hello.session,
          acceptorSession: session,
          dialerNonce: hello.nonce,
          acceptorNonce
        }
        const key = secret()
        yield* writeMessage(writer, {
          _tag: "Challenge",
          node: self,
          session,
          nonce: acceptorNonce,
          proof: Protocol.proof(key, "acceptor", transcript)
        }, limit)
        const auth = yield* next
        if (auth._tag !== "Auth") return yield* unexpected(auth, "Auth")
        if (!Protocol.proofMatches(Protocol.proof(key, "dialer", transcript), auth.proof)) {
          counters.authFailures++
          return yield* fail("auth-failed", `${hello.node} did not prove knowledge of the cluster secret`)
        }
        if (refuses(hello.node)) return yield* fail("not-member", `${hello.node} is not a member`)
        return { node: hello.node, session: hello.session, info: auth.info } satisfies Handshake
      })

    /** Makes `conn` the peer's connection, or retires it when the existing one wins the tie-break. */
    const register = (
      conn: Conn,
      hs: Handshake
    ): Effect.Effect<{ readonly peer: Peer; readonly activate: boolean }, ConnectionFailed> =>
      Effect.gen(function*() {
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
          peer = {
            node: hs.node,
            session: hs.session,
            address: { host: hs.info.host, port: hs.info.port },
            active: undefined,
            conns: new Set(),
            outbound: yield* Outbound.make({ maxBytes: settings.maxQueuedBytes, maxFrames: settings.maxQueuedFrames }),
            groups: new Set(),
            groupsVersion: -1,
            detector: Detector.make(settings.detector, now)
          }
          peers.set(hs.node, peer)
        }
        peer.address = { host: hs.info.host, port: hs.info.port }
        addresses.set(hs.node, peer.address)
        peer.conns.add(conn)
        peer.detector.heard(now)
        // A peer seen before (a new connection of the same session) may have joined groups meanwhile.
        applyGroups(peer, hs.info.groupsVersion, hs.info.groups, !joining)
        counters.handshakesCompleted++

        let activate = false
        const current = peer.active
        if (current === undefined) activate = true
        else {
          // Keep the connection dialed by the smaller id; between two of the same kind, the newer.
          const preferred = self < hs.node ? self : hs.node
          const currentPreferred = current.dialer === preferred
          const newPreferred = conn.dialer === preferred
          activate = newPreferred || !currentPreferred
          counters.duplicateConnections++
          if (activate) yield* retire(current)
        }
        if (activate) peer.active = conn
        else yield* retire(conn)

        if (joining) {
          departedListed.delete(hs.node)
          // Our groups first: the handshake may predate a group joined since, and what our states send
          // next must not reach a peer that does not count us in their group yet.
          const groups = encode({ _tag: "Groups", version: groupsVersion, groups: [...localGroups] })
          if (Result.isSuccess(groups)) peer.outbound.offer(groups.success)
          counters.nodesJoined++
          yield* source.joined(hs.node)
          yield* Effect.logInfo("node joined").pipe(
            Effect.annotateLogs({ peer: hs.node, session: hs.session, address: addressKey(peer.address) }),
            annotate
          )
          // Tell the others at once, so that they connect to the newcomer without waiting for a heartbeat.
          offerAll({ _tag: "Members", members: memberList() }, hs.node)
        }
        if (isDialerOf(hs.node)) yield* ensureDialer(hs.node)
        yield* learn(hs.info.members)
        return { peer, activate }
      })

    /** Stops writing to a connection, closes its write side, and gives the peer a grace period to close. */
    const retire = (conn: Conn) =>
      Effect.gen(function*() {
        if (!(yield* Deferred.succeed(conn.retire, undefined))) return
        yield* Effect.sleep(settings.handshakeTimeout).pipe(
          Effect.andThen(Deferred.succeed(conn.close, undefined)),
          Effect.forkIn(conn.scope)
        )
      })

    const writerLoop = (conn: Conn, peer: Peer) =>
      Effect.gen(function*() {
        while (true) {
          const batch = yield* Effect.raceFirst(
            peer.outbound.take(WRITE_BATCH),
            Effect.as(Deferred.await(conn.retire), undefined)
          )
          if (batch === undefined) break
          yield* conn.writer.writeAll(batch as [Uint8Array, ...Array<Uint8Array>])
          yield* peer.outbound.written
        }
      }).pipe(
        Effect.catch(() => Deferred.succeed(conn.close, undefined)),
        // Half-close: the peer reads what was written, then sees the end of the stream.
        Effect.ensuring(Scope.close(conn.writerScope, Exit.void))
      )

    const handleRequest = (peer: Peer, id: number, timeoutMillis: number, payload: Uint8Array) =>
      Effect.gen(function*() {
        const handler = inbound
        const answer = handler === undefined
          ? Exit.fail(new RequestRejected({ node: self, reason: "node is not serving" }))
          : yield* handler.onRequest(peer.node, payload).pipe(
            Effect.timeoutOrElse({
              duration: Duration.millis(Math.max(0, timeoutMillis)),
              orElse: () => Effect.interrupt
            }),
            Effect.exit
          )
        if (peers.get(peer.node) !== peer) return
        if (Exit.isSuccess(answer)) {
          const frame = encode({ _tag: "Reply", id, payload: answer.value })
          if (Result.isSuccess(frame)) return peer.outbound.offer(frame.success)
          counters.oversizedSends++
          const rejected = encode({ _tag: "Reject", id, reason: frame.failure.message })
          if (Result.isSuccess(rejected)) peer.outbound.offer(rejected.success)
          return
        }
        const error = Cause.findErrorOption(answer.cause)
        if (error._tag === "Some") {
          const frame = encode({ _tag: "Reject", id, reason: error.value.reason })
          if (Result.isSuccess(frame)) peer.outbound.offer(frame.success)
        }
      })

    const readerLoop = (
      conn: Conn,
      next: Effect.Effect<Protocol.TransportMessage, ConnectionFailed>
    ) =>
      Effect.gen(function*() {
        while (true) {
          const message = yield* next
          const peer = peers.get(conn.node)
          if (peer === undefined || peer.session !== conn.session) return
          const now = yield* monotonicMillis
          peer.detector.heard(now)
          switch (message._tag) {
            case "Heartbeat": {
              counters.heartbeatsReceived++
              peer.detector.heartbeat(now)
              applyGroups(peer, message.groupsVersion, message.groups, true)
              yield* learn(message.members)
              break
            }
            case "Groups": {
              applyGroups(peer, message.version, message.groups, true)
              break
            }
            case "Members": {
              yield* learn(message.members)
              break
            }
            case "Deliver": {
              const handler = inbound
              if (handler === undefined) counters.undelivered++
              else yield* handler.onMessage(conn.node, message.payload)
              break
            }
            case "Request": {
              yield* FiberSet.run(tasks, handleRequest(peer, message.id, message.timeoutMillis, message.payload))
              break
            }
            case "Reply":
            case "Reject": {
              const waiting = pending.get(message.id)
              if (waiting === undefined || waiting.to !== conn.node) {
                counters.rejectedReplies++
                break
              }
              pending.delete(message.id)
              Deferred.doneUnsafe(
                waiting.reply,
                message._tag === "Reply"
                  ? Effect.succeed(message.payload)
                  : Effect.fail(new RequestRejected({ node: conn.node, reason: message.reason }))
              )
              break
            }
            case "Leave": {
              counters.leavesReceived++
              yield* declareDown(peer, "left")
              return
            }
            default: {
              counters.rejectedUnauthenticated++
              return yield* fail("unauthenticated", `${message._tag} after authentication`)
            }
          }
        }
      })

    /**
     * Runs one connection from its first byte to its end. `established` is
     * completed when the handshake succeeds or fails (dialers wait on it).
     */
    const runConnection = (
      socket: Socket.Socket,
      role: Role,
      established: Deferred.Deferred<NodeId, ConnectionFailed> | undefined
    ): Effect.Effect<void, ConnectionFailed> =>
      Effect.gen(function*() {
        const scope = yield* Scope.Scope
        if (handshaking >= settings.maxPendingHandshakes) {
          counters.rejectedPendingHandshakes++
          return yield* fail("busy", "too many handshakes in progress")
        }
        handshaking++
        let counted = true
        const uncount = Effect.sync(() => {
          if (counted) handshaking--
          counted = false
        })
        yield* Effect.addFinalizer(() => uncount)
        const pull = yield* Socket.readerBytes(socket).pipe(
          Effect.mapError((e) => new ConnectionFailed("closed", e.message))
        )
        const writerScope = yield* Scope.fork(scope)
        const writer = yield* socket.writer.pipe(Scope.provide(writerScope))
        const frames = frameSource(pull, settings.handshakeFrameBytes)
        const handshake = role === "dialer"
          ? handshakeAsDialer(writer, frames.next)
          : handshakeAsAcceptor(writer, frames.next)
        const hs = yield* handshake.pipe(
          Effect.timeoutOrElse({
            duration: settings.handshakeTimeout,
            orElse: () => {
              counters.handshakeTimeouts++
              return fail("timeout", "handshake timed out")
            }
          })
        )
        yield* uncount
        frames.reader.limit = transportFrameLimit
        const conn: Conn = {
          id: nextConnId++,
          node: hs.node,
          session: hs.session,
          dialer: role === "dialer" ? self : hs.node,
          writer,
          retire: yield* Deferred.make<void>(),
          close: yield* Deferred.make<void>(),
          ended: yield* Deferred.make<void>(),
          scope,
          writerScope
        }
        // The acceptor completes the handshake before anything else is written on the connection.
        if (role === "acceptor") yield* writeMessage(writer, { _tag: "Welcome", info: nodeInfo() }, settings.handshakeFrameBytes)
        const { activate, peer } = yield* register(conn, hs)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            peer.conns.delete(conn)
            if (peer.active === conn) peer.active = undefined
            Deferred.doneUnsafe(conn.ended, Effect.void)
          })
        )
        if (established !== undefined) yield* Deferred.succeed(established, hs.node)
        if (activate) yield* Effect.forkIn(writerLoop(conn, peer), scope)
        else yield* Effect.forkIn(Deferred.await(conn.retire).pipe(Effect.andThen(Scope.close(writerScope, Exit.void))), scope)
        yield* Effect.raceFirst(readerLoop(conn, frames.next), Deferred.await(conn.close))
      }).pipe(
        Effect.tapError((error) =>
          Effect.gen(function*() {
            if (established !== undefined) yield* Deferred.fail(established, error)
            if (
              error.reason !== "closed" && error.reason !== "self" && error.reason !== "shutdown" &&
              error.reason !== "not-member"
            ) {
              yield* Effect.logWarning("connection closed").pipe(
                Effect.annotateLogs({ role, reason: error.reason, detail: error.detail }),
                annotate
              )
            }
          })
        ),
        Effect.ensuring(
          established === undefined
            ? Effect.void
            : Deferred.fail(established, new ConnectionFailed("closed", "connection ended")).pipe(Effect.asVoid)
        ),
        Effect.scoped
      )

    // ---- dialing --------------------------------------------------------------------------------
    const openSocket = (address: Address): Effect.Effect<Socket.Socket> =>
      tls === undefined
        ? NodeSocket.makeNet({ host: address.host, port: address.port, noDelay: true, openTimeout: settings.connectTimeout })
        : NodeSocket.makeTls({
          host: address.host,
          port: address.port,
          openTimeout: settings.connectTimeout,
          cert: pem(tls.cert),
          key: pem(Redacted.value(tls.key)),
          ...(tls.ca === undefined ? {} : { ca: pem(tls.ca) }),
          ...(tls.servername === undefined ? {} : { servername: tls.servername }),
          ...(tls.verifyHostname ? {} : { checkServerIdentity: () => undefined }),
          rejectUnauthorized: true
        })

    /** Dials once; succeeds with the peer's id once authenticated, the connection then runs in the background. */
    const dialOnce = (
      address: Address
    ): Effect.Effect<{ readonly node: NodeId; readonly fiber: Fiber.Fiber<void> }, ConnectionFailed> =>
      Effect.gen(function*() {
        if (closing) return yield* fail("shutdown", "node is closing")
        counters.connectionsDialed++
        const established = yield* Deferred.make<NodeId, ConnectionFailed>()
        const socket = yield* openSocket(address)
        const fiber = yield* runConnection(socket, "dialer", established).pipe(
          Effect.ignore,
          Effect.forkIn(dialedScope)
        )
        const node = yield* Deferred.await(established).pipe(
          Effect.tapError((e) =>
            Effect.sync(() => {
              if (e.reason === "closed") counters.dialFailures++
            })
          )
        )
        return { node, fiber }
      })

    const connectedTo = (node: NodeId | undefined) => node !== undefined && peers.get(node)?.active !== undefined

    /** Keeps a connection to a node learned from gossip, while its address is known. */
    const dialLoop = (node: NodeId): Effect.Effect<void> =>
      Effect.gen(function*() {
        while (!closing) {
          if (connectedTo(node)) {
            yield* Effect.sleep(settings.heartbeatInterval)
            continue
          }
          const address = addresses.get(node)
          if (address === undefined) return
          // With external membership both sides dial: stop retrying once the other side's connection is up.
          const connectedMeanwhile = () => external !== undefined && connectedTo(node)
          const attempt = yield* Effect.suspend(() =>
            connectedMeanwhile() ? fail("closed", "the peer's connection is up") : dialOnce(address)
          ).pipe(
            Effect.retry({
              schedule: settings.reconnect,
              while: (e) => e.reason !== "self" && !closing && !connectedMeanwhile()
            }),
            Effect.result
          )
          if (Result.isFailure(attempt)) {
            if (connectedMeanwhile()) continue
            // The schedule gave up: forget the address (gossip or the node's own dialing brings it back).
            if (!connectedTo(node) && peers.get(node) === undefined) addresses.delete(node)
            return
          }
          yield* Fiber.await(attempt.success.fiber)
        }
      })

    const ensureDialer = (node: NodeId): Effect.Effect<void> =>
      FiberMap.run(dialers, `node:${node}`, dialLoop(node), { onlyIfMissing: true }).pipe(Effect.asVoid)

    /** Keeps a connection to a seed address, forever (seeds are how a restarted node finds the cluster). */
    const seedLoop = (seed: Address): Effect.Effect<void> =>
      Effect.gen(function*() {
        const key = addressKey(seed)
        if (key === addressKey(ownAddress)) return
        while (!closing) {
          if (seedNodes.get(key) === self) return
          if (connectedTo(seedNodes.get(key))) {
            yield* Effect.sleep(settings.heartbeatInterval)
            continue
          }
          const attempt = yield* dialOnce(seed).pipe(
            Effect.retry({ schedule: settings.reconnect, while: (e) => e.reason !== "self" && !closing }),
            Effect.result
          )
          if (Result.isFailure(attempt)) {
            if (attempt.failure.reason === "self") {
              seedNodes.set(key, self)
              return
            }
            yield* Effect.sleep(settings.seedRetryPause)
            continue
          }
          seedNodes.set(key, attempt.success.node)
          yield* Fiber.await(attempt.success.fiber)
        }
      })

    // ---- start ----------------------------------------------------------------------------------
    yield* server.serve((socket) =>
      Effect.suspend(() => {
        counters.connectionsAccepted++
        return closing ? Effect.void : runConnection(socket, "acceptor", undefined).pipe(Effect.ignore)
      })
    )

    // Heartbeats: one frame per interval to every connected peer, carrying groups and members (gossip).
    yield* Effect.gen(function*() {
      const frame = encode({
        _tag: "Heartbeat",
        groupsVersion,
        groups: [...localGroups],
        members: memberList()
      })
      if (Result.isFailure(frame)) return
      for (const peer of peers.values()) {
        if (peer.active === undefined) continue
        peer.outbound.offer(frame.success)
        counters.heartbeatsSent++
      }
    }).pipe(Effect.repeat(Schedule.spaced(settings.heartbeatInterval)), Effect.forkIn(layerScope))

    // Failure detection.
    yield* Effect.gen(function*() {
      const now = yield* monotonicMillis
      for (const peer of [...peers.values()]) {
        if (peer.detector.failed(now)) {
          yield* Effect.logWarning("failure detector: node is down").pipe(
            Effect.annotateLogs({ peer: peer.node, silenceMillis: peer.detector.silence(now) }),
            annotate
          )
          yield* declareDown(peer, "failed")
        }
      }
    }).pipe(Effect.repeat(Schedule.spaced(settings.detectorCheckInterval)), Effect.forkIn(layerScope))

    for (const seed of settings.seeds) {
      yield* FiberMap.run(dialers, `seed:${addressKey(seed)}`, seedLoop(seed))
    }

    // External membership: dial every listed node (both sides dial; the tie-break keeps one
    // connection), and declare down the ones that are no longer listed.
    if (external !== undefined) {
      yield* Stream.runForEach(external, (listed) =>
        Effect.gen(function*() {
          for (const [node, address] of listed) {
            if (node === self) continue
            admitted.set(node, address)
            if (departedListed.has(node)) continue
            addresses.set(node, address)
            yield* ensureDialer(node)
          }
          for (const node of [...admitted.keys()]) {
            if (listed.has(node)) continue
            admitted.delete(node)
            departedListed.delete(node)
            addresses.delete(node)
            yield* FiberMap.remove(dialers, `node:${node}`)
            const peer = peers.get(node)
            if (peer !== undefined) yield* declareDown(peer, "evicted")
          }
        })).pipe(
          Effect.catchCause((cause) => Effect.logError("membership source failed", cause).pipe(annotate)),
          Effect.forkIn(layerScope)
        )
    }

    // Graceful leave: runs first when the scope closes (finalizers run in reverse order).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        const written: Array<Deferred.Deferred<void>> = []
        const frame = encode({ _tag: "Leave" })
        if (Result.isSuccess(frame)) {
          for (const peer of peers.values()) {
            if (peer.active === undefined) continue
            const done = Deferred.makeUnsafe<void>()
            peer.outbound.offer(frame.success, undefined, done)
            written.push(done)
          }
        }
        const conns = [...peers.values()].flatMap((p) => [...p.conns])
        yield* Effect.gen(function*() {
          yield* Effect.forEach(written, Deferred.await, { discard: true })
          // Half-close every connection, then wait for the peers to close theirs.
          for (const conn of conns) yield* Deferred.succeed(conn.retire, undefined)
          yield* Effect.forEach(conns, (c) => Deferred.await(c.ended), { discard: true })
        }).pipe(Effect.timeoutOrElse({ duration: settings.leaveTimeout, orElse: () => Effect.void }))
        for (const conn of conns) Deferred.doneUnsafe(conn.close, Effect.void)
        for (const p of pending.values()) Deferred.doneUnsafe(p.reply, Effect.fail(new NodeUnreachable({ node: p.to })))
        pending.clear()
      })
    )

    yield* Effect.logInfo("listening").pipe(
      Effect.annotateLogs({ address: addressKey(ownAddress), session, tls: tls !== undefined }),
      annotate
    )

    // ---- services -------------------------------------------------------------------------------
    /** A Deliver as its header and the registry frame itself (shared by every peer's queue, never copied). */
    const deliverFrame = (payload: Uint8Array) => {
      const frame = Protocol.encodeDeliver(payload, transportFrameLimit)
      if (Result.isFailure(frame)) {
        counters.oversizedSends++
        return undefined
      }
      return frame.success
    }

    const deliverLocally = (payload: Uint8Array) =>
      Effect.suspend(() => {
        const handler = inbound
        if (handler === undefined) {
          counters.undelivered++
          return Effect.void
        }
        return FiberSet.run(tasks, handler.onMessage(self, payload)).pipe(Effect.asVoid)
      })

    const changeGroups = (update: (groups: Set<string>) => boolean) =>
      Effect.sync(() => {
        const next = new Set(localGroups)
        if (!update(next)) return
        localGroups = next
        groupsVersion++
        offerAll({ _tag: "Groups", version: groupsVersion, groups: [...localGroups] })
      })

    const members = (group: string): ReadonlyArray<NodeId> => {
      const out: Array<NodeId> = []
      if (localGroups.has(group)) out.push(self)
      for (const peer of peers.values()) if (peer.groups.has(group)) out.push(peer.node)
      return out
    }

    const runtime: ActorRuntime["Service"] = {
      nodeId: self,
      spawn: (options) =>
        spawnActor(options.mailbox === undefined ? { ...options, mailbox: settings.mailbox } : options),
      every,
      after,
      serve: (handler) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            inbound = handler
          }),
          () =>
            Effect.sync(() => {
              if (inbound === handler) inbound = undefined
            })
        ),
      joinGroup: (group) => changeGroups((g) => !g.has(group) && g.add(group) !== undefined),
      leaveGroup: (group) => changeGroups((g) => g.delete(group)),
      members: (group) => Effect.sync(() => members(group)),
      groupJoins: Stream.fromPubSub(groupJoins),
      broadcast: (group, payload, supersede) =>
        Effect.suspend(() => {
          const targets = members(group).filter((m) => m !== self)
          if (targets.length === 0) return Effect.void
          const frame = deliverFrame(payload)
          if (frame === undefined) return Effect.void
          for (const node of targets) peers.get(node)?.outbound.offer(frame, supersede)
          return Effect.void
        }),
      send: (node, payload, supersede) =>
        Effect.suspend(() => {
          if (node === self) return deliverLocally(payload)
          const peer = peers.get(node)
          if (peer === undefined) return Effect.fail(new NodeUnreachable({ node }))
          const frame = deliverFrame(payload)
          if (frame !== undefined) peer.outbound.offer(frame, supersede)
          return Effect.void
        }),
      request: (node, payload, timeout) =>
        Effect.gen(function*() {
          const duration = Duration.fromInputUnsafe(timeout)
          const timeoutMillis = Duration.toMillis(duration)
          const timedOut = () => {
            counters.requestTimeouts++
            return Effect.fail(new RequestTimeout({ node, timeoutMillis }))
          }
          if (node === self) {
            const handler = inbound
            if (handler === undefined) return yield* new RequestRejected({ node, reason: "node is not serving" })
            return yield* handler.onRequest(self, payload).pipe(Effect.timeoutOrElse({ duration, orElse: timedOut }))
          }
          const peer = peers.get(node)
          if (peer === undefined) return yield* new NodeUnreachable({ node })
          const id = nextRequestId++
          const frame = encode({ _tag: "Request", id, timeoutMillis: Math.ceil(timeoutMillis), payload })
          if (Result.isFailure(frame)) {
            counters.oversizedSends++
            return yield* new RequestRejected({ node, reason: frame.failure.message })
          }
          const reply = yield* Deferred.make<Uint8Array, RequestRejected | NodeUnreachable>()
          pending.set(id, { to: node, reply })
          counters.requestsSent++
          peer.outbound.offer(frame.success)
          return yield* Deferred.await(reply).pipe(
            Effect.timeoutOrElse({ duration, orElse: timedOut }),
            Effect.ensuring(Effect.sync(() => pending.delete(id)))
          )
        })
    }

    const transport: Transport = {
      nodeId: self,
      session,
      address: ownAddress,
      stats: Effect.sync(() => ({ ...counters })),
      peers: Effect.map(monotonicMillis, (now) =>
        [...peers.values()].map((peer) => ({
          node: peer.node,
          session: peer.session,
          address: peer.address,
          connected: peer.active !== undefined,
          connections: peer.conns.size,
          groups: [...peer.groups],
          silenceMillis: peer.detector.silence(now),
          phi: peer.detector.phi(now),
          outbound: peer.outbound.stats()
        })))
    }

    return {
      runtime,
      events: source.service as ClusterEvents["Service"],
      transport,
      heartbeatMillis
    }
  })

/**
 * One connection, from its first byte to its end: the frame reader (which
 * rejects oversized frames from their length prefix and counts malformed
 * ones), the handshake within its timeout and the bound on handshakes in
 * progress, registration with membership, the writer that drains the peer's
 * outbound queue, and the reader that dispatches every authenticated frame.
 *
 * One connection per peer: the smaller node id dials the nodes it learns of;
 * seeds are dialed by everyone. When both sides dialed each other, both keep
 * the connection dialed by the smaller id and retire the other one (it stops
 * being written, its write side is closed, and it is read until the peer
 * closes it too, so nothing in flight is lost).
 * @internal
 */
import { Deferred, Effect, Exit, Result, Scope } from "effect"
import * as Socket from "effect/socket/Socket"
import type { NodeId } from "../../NodeId.ts"
import type { Dialer } from "./dialer.ts"
import type { Handshake, Handshakes, Next } from "./handshake.ts"
import type { Gossip } from "./gossip.ts"
import type { Heartbeats } from "./heartbeat.ts"
import type * as Listener from "./listener.ts"
import type { Membership } from "./membership.ts"
import { type Conn, ConnectionFailed, fail, isDialerOf, monotonicMillis, type Node, type Peer, type Role } from "./node.ts"
import * as Protocol from "./protocol.ts"
import type { Rejections } from "./rejections.ts"
import type { Routing } from "./routing.ts"

const writeBatch = 64

export interface Connections {
  /**
   * Runs one connection from its first byte to its end. `established` is
   * completed when the handshake succeeds or fails (dialers wait on it).
   */
  readonly run: (
    socket: Socket.Socket,
    role: Role,
    established: Deferred.Deferred<NodeId, ConnectionFailed> | undefined,
    remote: string
  ) => Effect.Effect<void, ConnectionFailed>
  /** Runs a connection the listener accepted. */
  readonly accept: (socket: Socket.Socket, remote: Listener.Remote) => Effect.Effect<void>
}

export const make = (
  node: Node,
  mechanisms: {
    readonly handshake: Handshakes
    readonly membership: Membership
    readonly heartbeat: Heartbeats
    readonly gossip: Gossip
    readonly routing: Routing
    readonly dialer: Dialer
    readonly rejections: Rejections
  }
): Connections => {
  const { counters, self, settings } = node
  const { dialer, gossip, handshake, heartbeat, membership, rejections, routing } = mechanisms
  let nextConnId = 1
  /** Accepted connections in their handshake: in all, and per source host. */
  let handshaking = 0
  const handshakingFrom = new Map<string, number>()

  /** Hosts of known members, of addresses learned from gossip and of seeds: they may use the reserve. */
  const isKnownHost = (host: string) => {
    for (const seed of settings.seeds) if (seed.host === host) return true
    for (const address of node.addresses.values()) if (address.host === host) return true
    for (const peer of node.peers.values()) if (peer.address.host === host) return true
    return false
  }

  /** Takes a handshake slot for a connection accepted from `host`, or says why not. */
  const admit = (host: string): ConnectionFailed | undefined => {
    const fromHost = handshakingFrom.get(host) ?? 0
    if (fromHost >= settings.maxPendingHandshakesPerAddress) {
      counters.rejectedAddressLimit++
      return new ConnectionFailed("address-limit", `${fromHost} handshakes from ${host} already in progress`)
    }
    const cap = settings.maxPendingHandshakes + (handshaking >= settings.maxPendingHandshakes && isKnownHost(host) ? settings.reservedHandshakes : 0)
    if (handshaking >= cap) {
      counters.rejectedPendingHandshakes++
      return new ConnectionFailed("busy", "too many handshakes in progress")
    }
    handshaking++
    handshakingFrom.set(host, fromHost + 1)
    return undefined
  }

  const release = (host: string) => {
    handshaking--
    const fromHost = (handshakingFrom.get(host) ?? 1) - 1
    if (fromHost === 0) handshakingFrom.delete(host)
    else handshakingFrom.set(host, fromHost)
  }

  /** Reads frames off one socket. */
  const frameSource = (pull: Effect.Effect<ReadonlyArray<Uint8Array>, Socket.SocketError>, limit: number) => {
    const reader = new Protocol.FrameReader(limit)
    const next: Next = Effect.gen(function*() {
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

  /** Stops writing to a connection, closes its write side, and gives the peer a grace period to close. */
  const retire = Effect.fnUntraced(function*(conn: Conn) {
    if (!(yield* Deferred.succeed(conn.retire, undefined))) return
    yield* Effect.sleep(settings.handshakeTimeout).pipe(
      Effect.andThen(Deferred.succeed(conn.close, undefined)),
      Effect.forkIn(conn.scope)
    )
  })

  /** Makes `conn` the peer's connection, or retires it when the existing one wins the tie-break. */
  const register = Effect.fnUntraced(function*(conn: Conn, hs: Handshake) {
    const { joining, peer } = yield* membership.admit(conn, hs)
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

    if (joining) yield* membership.joined(peer)
    if (isDialerOf(node, hs.node)) yield* dialer.ensure(hs.node)
    yield* membership.learn(hs.info.members)
    return { peer, activate }
  })

  /** Drains the peer's queue into the connection until it is retired or fails. */
  const writerLoop = Effect.fnUntraced(
    function*(conn: Conn, peer: Peer) {
      while (true) {
        const batch = yield* Effect.raceFirst(
          peer.outbound.take(writeBatch),
          Effect.as(Deferred.await(conn.retire), undefined)
        )
        if (batch === undefined) break
        yield* conn.writer.writeAll(batch as [Uint8Array, ...Array<Uint8Array>])
        yield* peer.outbound.written
      }
    },
    (effect, conn) =>
      effect.pipe(
        Effect.catch(() => Deferred.succeed(conn.close, undefined)),
        // Half-close: the peer reads what was written, then sees the end of the stream.
        Effect.ensuring(Scope.close(conn.writerScope, Exit.void))
      )
  )

  const readerLoop = Effect.fnUntraced(function*(conn: Conn, next: Next) {
    while (true) {
      const message = yield* next
      const peer = node.peers.get(conn.node)
      if (peer === undefined || peer.session !== conn.session) return
      const now = yield* monotonicMillis
      peer.detector.heard(now)
      switch (message._tag) {
        case "Heartbeat":
        case "Pulse": {
          yield* heartbeat.received(peer, message, now)
          break
        }
        case "Gossip":
        case "DigestHashes":
        case "Digest":
        case "Delta": {
          yield* gossip.received(peer, message)
          break
        }
        case "Groups": {
          membership.applyGroups(peer, message.version, message.groups, true)
          break
        }
        case "Members": {
          yield* membership.learn(message.members)
          break
        }
        case "Deliver": {
          yield* routing.delivered(conn.node, message.payload, message.trace)
          break
        }
        case "Request": {
          yield* routing.requested(peer, message)
          break
        }
        case "Reply":
        case "Reject": {
          routing.answered(conn.node, message)
          break
        }
        case "Leave": {
          counters.leavesReceived++
          yield* membership.declareDown(peer, "left")
          return
        }
        default: {
          counters.rejectedUnauthenticated++
          return yield* fail("unauthenticated", `${message._tag} after authentication`)
        }
      }
    }
  })

  const run = Effect.fnUntraced(
    function*(
      socket: Socket.Socket,
      role: Role,
      established: Deferred.Deferred<NodeId, ConnectionFailed> | undefined,
      remote: string
    ) {
      const scope = yield* Scope.Scope
      // Only accepted connections take handshake slots: this node's own dials never compete with them.
      const host = remote.slice(0, remote.lastIndexOf(":"))
      if (role === "acceptor") {
        const refused = admit(host)
        if (refused !== undefined) return yield* Effect.fail(refused)
      }
      let counted = role === "acceptor"
      const uncount = Effect.sync(() => {
        if (counted) release(host)
        counted = false
      })
      yield* Effect.addFinalizer(() => uncount)
      const pull = yield* Socket.readerBytes(socket).pipe(
        Effect.mapError((e) => new ConnectionFailed("closed", e.message))
      )
      const writerScope = yield* Scope.fork(scope)
      const writer = yield* socket.writer.pipe(Scope.provide(writerScope))
      const frames = frameSource(pull, settings.handshakeFrameBytes)
      // An accepted connection that sends nothing is closed sooner than one that is authenticating.
      let first = true
      const acceptorNext: Next = Effect.suspend(() => {
        if (!first) return frames.next
        first = false
        return frames.next.pipe(Effect.timeoutOrElse({
          duration: settings.handshakeIdleTimeout,
          orElse: () => {
            counters.handshakeIdleTimeouts++
            return fail("idle", "no Hello within the idle timeout")
          }
        }))
      })
      const authenticate = role === "dialer"
        ? handshake.asDialer(writer, frames.next, remote)
        : handshake.asAcceptor(writer, acceptorNext, remote)
      const hs = yield* authenticate.pipe(
        Effect.timeoutOrElse({
          duration: settings.handshakeTimeout,
          orElse: () => {
            counters.handshakeTimeouts++
            return fail("timeout", "handshake timed out")
          }
        })
      )
      yield* uncount
      frames.reader.limit = node.frameLimit
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
      if (role === "acceptor") yield* handshake.welcome(writer, hs)
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
    },
    (effect, _socket, role, established, remote) =>
      effect.pipe(
        Effect.tapError((error) =>
          Effect.gen(function*() {
            if (established !== undefined) yield* Deferred.fail(established, error)
            if (
              error.reason !== "closed" && error.reason !== "self" && error.reason !== "shutdown" &&
              error.reason !== "not-member"
            ) {
              yield* rejections.record(error.reason, "connection closed", { role, remote, detail: error.detail })
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
  )

  return {
    run,
    accept: (socket, remote) =>
      Effect.suspend(() => {
        counters.connectionsAccepted++
        return node.closing ? Effect.void : run(socket, "acceptor", undefined, `${remote.host}:${remote.port}`).pipe(Effect.ignore)
      })
  }
}

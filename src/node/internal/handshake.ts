/**
 * The handshake that authenticates a connection, both ways, before any other
 * frame is accepted on it.
 *
 * The dialer sends `Hello`, the acceptor answers `Challenge` (with its HMAC
 * proof), the dialer verifies it and sends `Auth` (with its own proof and its
 * node info), the acceptor verifies that and answers `Welcome` (with its node
 * info). Until then every other frame closes the connection and is counted;
 * afterwards, every frame is attributed to the authenticated node id of the
 * connection, never to an id the frame claims. Both proofs cover both node
 * ids, both sessions and both nonces (`Protocol.proof`). With external
 * membership, a node that is not listed is refused once it has proved itself.
 *
 * Lives here: the dialer's and the acceptor's side of the exchange, and the
 * acceptor's closing `Welcome`.
 * @internal
 */
import { Effect, Redacted, Result } from "effect"
import type * as Socket from "effect/socket/Socket"
import { randomBytes } from "node:crypto"
import type { NodeId } from "../../NodeId.ts"
import { ConnectionFailed, fail, type Node } from "./node.ts"
import * as Protocol from "./protocol.ts"

/** Who the other side proved to be, and what it said about itself. */
export interface Handshake {
  readonly node: NodeId
  readonly session: string
  readonly info: Protocol.NodeInfo
}

/** Reads the next frame of the connection. */
export type Next = Effect.Effect<Protocol.TransportMessage, ConnectionFailed>

export interface Handshakes {
  readonly asDialer: (writer: Socket.Writer, next: Next) => Effect.Effect<Handshake, ConnectionFailed>
  readonly asAcceptor: (writer: Socket.Writer, next: Next) => Effect.Effect<Handshake, ConnectionFailed>
  /** The acceptor's last word: its node info, written before anything else on the connection. */
  readonly welcome: (writer: Socket.Writer) => Effect.Effect<void, ConnectionFailed>
}

/** Writes one transport message, within `limit`. */
export const writeMessage = Effect.fnUntraced(function*(
  writer: Socket.Writer,
  message: Protocol.TransportMessage,
  limit: number
) {
  const frame = Protocol.encode(message, limit)
  if (Result.isFailure(frame)) return yield* fail("malformed", frame.failure.message)
  yield* writer.write(frame.success).pipe(Effect.mapError((e) => new ConnectionFailed("closed", e.message)))
})

export const make = (
  node: Node,
  membership: {
    readonly nodeInfo: () => Protocol.NodeInfo
    readonly refuses: (node: NodeId) => boolean
  }
): Handshakes => {
  const { counters, self, session, settings } = node
  const { refuses } = membership
  const limit = settings.handshakeFrameBytes

  const secret = () => Protocol.secretBytes(Redacted.value(settings.secret))

  const unexpected = (message: Protocol.TransportMessage, expected: string) => {
    counters.rejectedUnauthenticated++
    return fail("unauthenticated", `expected ${expected} before authentication, got ${message._tag}`)
  }

  const asDialer = Effect.fnUntraced(function*(writer: Socket.Writer, next: Next) {
    const dialerNonce = new Uint8Array(randomBytes(Protocol.nonceBytes))
    yield* writeMessage(writer, { _tag: "Hello", node: self, session, nonce: dialerNonce }, limit)
    const challenge = yield* next
    if (challenge._tag !== "Challenge") return yield* unexpected(challenge, "Challenge")
    if (challenge.node === self) return yield* fail("self", "dialed this node itself")
    if (challenge.nonce.length !== Protocol.nonceBytes) {
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
    yield* writeMessage(
      writer,
      { _tag: "Auth", proof: Protocol.proof(key, "dialer", transcript), info: membership.nodeInfo() },
      limit
    )
    const welcome = yield* next
    if (welcome._tag !== "Welcome") return yield* unexpected(welcome, "Welcome")
    const hs: Handshake = { node: challenge.node, session: challenge.session, info: welcome.info }
    return hs
  })

  const asAcceptor = Effect.fnUntraced(function*(writer: Socket.Writer, next: Next) {
    const hello = yield* next
    if (hello._tag !== "Hello") return yield* unexpected(hello, "Hello")
    if (hello.node === self) return yield* fail("self", "a connection claims this node's id")
    if (hello.nonce.length !== Protocol.nonceBytes) {
      counters.authFailures++
      return yield* fail("auth-failed", "bad nonce length")
    }
    const acceptorNonce = new Uint8Array(randomBytes(Protocol.nonceBytes))
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
    const hs: Handshake = { node: hello.node, session: hello.session, info: auth.info }
    return hs
  })

  return {
    asDialer,
    asAcceptor,
    welcome: (writer) => writeMessage(writer, { _tag: "Welcome", info: membership.nodeInfo() }, limit)
  }
}

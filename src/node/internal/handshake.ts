/**
 * The handshake that authenticates a connection, both ways, before any other
 * frame is accepted on it.
 *
 * The side that opened the connection proves first: the dialer sends
 * `Hello`, the acceptor answers `Challenge` (its id, session and nonce, no
 * proof), the dialer sends `Auth` (its HMAC proof and node info), and only
 * once that proof verifies does the acceptor answer `Welcome` (its own proof
 * and node info); otherwise it answers `Refused` and closes. A client without
 * the secret therefore never receives a proof to test guesses against. Both
 * proofs cover both node ids, both sessions and both nonces
 * (`Protocol.proof`). Until then every other frame closes the connection and
 * is counted; afterwards, every frame is attributed to the authenticated
 * node id of the connection, never to an id the frame claims. With external
 * membership, a node that is not listed is refused once it has proved itself.
 *
 * A failed proof is counted (`authFailures`) on the side that could not
 * verify it, and on the dialer when the acceptor refuses its proof: both
 * sides of a wrong-secret dial see it, and each side's error says which
 * side could not verify which.
 *
 * During a secret rotation a node lists several secrets: it proves with the
 * current one and accepts a proof made with any listed one; the acceptor's
 * `Welcome` proves with the secret the dialer's proof was made with.
 *
 * Lives here: the dialer's and the acceptor's side of the exchange, and the
 * acceptor's closing `Welcome`.
 * @internal
 */
import { Effect, Result } from "effect"
import type * as Socket from "effect/socket/Socket"
import { Buffer } from "node:buffer"
import { randomBytes } from "node:crypto"
import type { NodeId } from "../../NodeId.ts"
import { ConnectionFailed, fail, type Node } from "./node.ts"
import * as Protocol from "./protocol.ts"

/** Who the other side proved to be, and what it said about itself. */
export interface Handshake {
  readonly node: NodeId
  readonly session: string
  readonly info: Protocol.NodeInfo
  /** What both proofs covered (the acceptor's `Welcome` proves over it). */
  readonly transcript: Protocol.Transcript
  /** The secret the dialer proved with (the acceptor's `Welcome` proves with the same one). */
  readonly key: Uint8Array
}

/** Reads the next frame of the connection. */
export type Next = Effect.Effect<Protocol.TransportMessage, ConnectionFailed>

export interface Handshakes {
  /** The dialer's side; `remote` is the address dialed (for errors). */
  readonly asDialer: (writer: Socket.Writer, next: Next, remote: string) => Effect.Effect<Handshake, ConnectionFailed>
  /** The acceptor's side; `remote` is the address the connection came from (for errors). */
  readonly asAcceptor: (writer: Socket.Writer, next: Next, remote: string) => Effect.Effect<Handshake, ConnectionFailed>
  /** The acceptor's last word: its proof and node info, written before anything else on the connection. */
  readonly welcome: (writer: Socket.Writer, handshake: Handshake) => Effect.Effect<void, ConnectionFailed>
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

const nonceKey = (nonce: Uint8Array) => Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength).toString("hex")

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
  /** Nonces of this node's own dials in progress: a `Hello` carrying one is this node dialing itself. */
  const ownNonces = new Set<string>()

  /** The secret this node proves with. */
  const current = () => settings.keys.current[0]
  /** The listed secret `proof` was made with, as `role` over `transcript`; `undefined` when none. */
  const verifying = (proof: Uint8Array, role: "dialer" | "acceptor", transcript: Protocol.Transcript) => {
    for (const key of settings.keys.current) {
      if (Protocol.proofMatches(Protocol.proof(key, role, transcript), proof)) return key
    }
    return undefined
  }

  const unexpected = (message: Protocol.TransportMessage, expected: string) => {
    counters.rejectedUnauthenticated++
    return fail("unauthenticated", `expected ${expected} before authentication, got ${message._tag}`)
  }

  const badNonce = (who: string) => {
    counters.rejectedMalformed++
    return fail("malformed", `${who} sent a nonce that is not ${Protocol.nonceBytes} bytes`)
  }

  const asDialer = Effect.fnUntraced(function*(writer: Socket.Writer, next: Next, remote: string) {
    const dialerNonce = new Uint8Array(randomBytes(Protocol.nonceBytes))
    const own = nonceKey(dialerNonce)
    ownNonces.add(own)
    yield* Effect.addFinalizer(() => Effect.sync(() => ownNonces.delete(own)))
    yield* writeMessage(writer, { _tag: "Hello", node: self, session, nonce: dialerNonce }, limit)
    const challenge = yield* next
    if (challenge._tag !== "Challenge") return yield* unexpected(challenge, "Challenge")
    if (challenge.node === self) return yield* fail("self", "dialed this node itself")
    if (challenge.nonce.length !== Protocol.nonceBytes) return yield* badNonce(`the acceptor at ${remote}`)
    const transcript: Protocol.Transcript = {
      dialer: self,
      acceptor: challenge.node,
      dialerSession: session,
      acceptorSession: challenge.session,
      dialerNonce,
      acceptorNonce: challenge.nonce
    }
    const key = current()
    yield* writeMessage(
      writer,
      { _tag: "Auth", proof: Protocol.proof(key, "dialer", transcript), info: membership.nodeInfo() },
      limit
    )
    const answer = yield* next
    if (answer._tag === "Refused") {
      if (answer.reason === "not-member") return yield* fail("not-member", `${challenge.node} at ${remote} does not list this node as a member`)
      counters.authFailures++
      return yield* fail(
        "auth-failed",
        `${challenge.node} at ${remote} could not verify this node's proof: this node's secret differs from the cluster's there`
      )
    }
    if (answer._tag !== "Welcome") return yield* unexpected(answer, "Welcome")
    if (verifying(answer.proof, "acceptor", transcript) === undefined) {
      counters.authFailures++
      return yield* fail(
        "auth-failed",
        `this node could not verify the proof of the acceptor ${challenge.node} at ${remote}: it does not know the cluster secret`
      )
    }
    if (refuses(challenge.node)) return yield* fail("not-member", `${challenge.node} is not a member`)
    const hs: Handshake = { node: challenge.node, session: challenge.session, info: answer.info, transcript, key }
    return hs
  }, Effect.scoped)

  const asAcceptor = Effect.fnUntraced(function*(writer: Socket.Writer, next: Next, remote: string) {
    const hello = yield* next
    if (hello._tag !== "Hello") return yield* unexpected(hello, "Hello")
    if (hello.node === self) {
      if (ownNonces.has(nonceKey(hello.nonce))) return yield* fail("self", "this node dialed itself")
      counters.rejectedOwnId++
      return yield* fail("own-id", `a connection from ${remote} claims this node's id ${self}`)
    }
    if (hello.nonce.length !== Protocol.nonceBytes) return yield* badNonce(`the dialer at ${remote}`)
    const acceptorNonce = new Uint8Array(randomBytes(Protocol.nonceBytes))
    const transcript: Protocol.Transcript = {
      dialer: hello.node,
      acceptor: self,
      dialerSession: hello.session,
      acceptorSession: session,
      dialerNonce: hello.nonce,
      acceptorNonce
    }
    yield* writeMessage(writer, { _tag: "Challenge", node: self, session, nonce: acceptorNonce }, limit)
    const auth = yield* next
    if (auth._tag !== "Auth") return yield* unexpected(auth, "Auth")
    const key = verifying(auth.proof, "dialer", transcript)
    if (key === undefined) {
      counters.authFailures++
      yield* writeMessage(writer, { _tag: "Refused", reason: "auth-failed" }, limit).pipe(Effect.ignore)
      return yield* fail(
        "auth-failed",
        `this node could not verify the proof of the dialer ${hello.node} at ${remote}: it does not know the cluster secret`
      )
    }
    if (refuses(hello.node)) {
      yield* writeMessage(writer, { _tag: "Refused", reason: "not-member" }, limit).pipe(Effect.ignore)
      return yield* fail("not-member", `${hello.node} is not a member`)
    }
    const hs: Handshake = { node: hello.node, session: hello.session, info: auth.info, transcript, key }
    return hs
  })

  return {
    asDialer,
    asAcceptor,
    welcome: (writer, hs) =>
      writeMessage(
        writer,
        { _tag: "Welcome", proof: Protocol.proof(hs.key, "acceptor", hs.transcript), info: membership.nodeInfo() },
        limit
      )
  }
}

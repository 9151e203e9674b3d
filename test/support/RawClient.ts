/**
 * Raw TCP clients for attacks and misbehaving peers of the TCP runtime: a
 * client whose received bytes are collected and whose close is observable,
 * transport frames built and read back without a node, and the dialer's side
 * of the handshake done by hand.
 */
import { assert } from "@effect/vitest"
import { Deferred, Effect, Redacted, Result } from "effect"
import { NodeId } from "dstate"
import * as Net from "node:net"
import * as Protocol from "../../src/node/internal/protocol.ts"
import type * as TcpRuntime from "../../src/node/TcpRuntime.ts"
import { eventuallyWithin } from "./Eventually.ts"
import { secret } from "./RealNodes.ts"

/** A raw client: its socket, every chunk received, and a deferred completed when it closes. */
export interface RawClient {
  readonly socket: Net.Socket
  readonly received: Array<Uint8Array>
  readonly closed: Deferred.Deferred<void>
}

/** Connects a raw client (from `localAddress` when given), closed with the current scope. */
export const rawConnect = (address: TcpRuntime.Address, localAddress?: string) =>
  Effect.acquireRelease(
    Effect.callback<RawClient>((resume) => {
      const socket = Net.createConnection({
        host: address.host,
        port: address.port,
        ...(localAddress === undefined ? {} : { localAddress })
      })
      const received: Array<Uint8Array> = []
      const closed = Deferred.makeUnsafe<void>()
      socket.on("data", (chunk) => received.push(new Uint8Array(chunk)))
      socket.on("close", () => Deferred.doneUnsafe(closed, Effect.void))
      socket.on("error", () => {})
      socket.once("connect", () => resume(Effect.succeed({ socket, received, closed })))
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

export const write = (socket: Net.Socket, bytes: Uint8Array) => Effect.sync(() => socket.write(bytes))

export const frameOf = (message: Protocol.TransportMessage) =>
  Result.getOrThrow(Protocol.encode(message, 16 * 1024 * 1024))

/** Reads transport messages off a raw client's received bytes. */
export const messagesOf = (received: Array<Uint8Array>) => {
  const reader = new Protocol.FrameReader(64 * 1024 * 1024)
  for (const chunk of received) reader.push(chunk)
  const out: Array<Protocol.TransportMessage> = []
  while (true) {
    const frame = reader.next()
    if (Result.isFailure(frame) || frame.success === undefined) return out
    out.push(Result.getOrThrow(Protocol.decode(frame.success)))
  }
}

const poll = eventuallyWithin("8 seconds")

/** Waits for the `index`-th message a raw client receives. */
export const nthMessage = (client: RawClient, index: number) =>
  poll(Effect.sync(() => {
    const m = messagesOf(client.received)
    assert.isAbove(m.length, index)
    return m[index]
  }))

/** Sends `Hello` as `node` and waits for the acceptor's `Challenge`. */
export const rawHello = (client: RawClient, node: string, session = "raw-session") =>
  Effect.gen(function*() {
    const nonce = new Uint8Array(32).fill(7)
    yield* write(client.socket, frameOf({ _tag: "Hello", node: NodeId.make(node), session, nonce }))
    const challenge = yield* nthMessage(client, 0)
    assert.strictEqual(challenge._tag, "Challenge")
    if (challenge._tag !== "Challenge") return yield* Effect.die("no challenge")
    const transcript: Protocol.Transcript = {
      dialer: node,
      acceptor: challenge.node,
      dialerSession: session,
      acceptorSession: challenge.session,
      dialerNonce: nonce,
      acceptorNonce: challenge.nonce
    }
    return { challenge, transcript }
  })

/**
 * Authenticates a raw client as `node` (the dialer side of the handshake),
 * joining `groups`; returns the client once the node has welcomed it with a
 * proof that verifies.
 */
export const rawAuthenticated = (
  address: TcpRuntime.Address,
  node: string,
  groups: ReadonlyArray<string>,
  features?: ReadonlyArray<string>,
  /** The client's own member record, as a node that speaks gossip membership announces it. */
  self?: Protocol.MemberRecord,
  session = "raw-session"
) =>
  Effect.gen(function*() {
    const client = yield* rawConnect(address)
    const { transcript } = yield* rawHello(client, node, session)
    const key = Protocol.secretBytes(Redacted.value(secret))
    yield* write(client.socket, frameOf({
      _tag: "Auth",
      proof: Protocol.proof(key, "dialer", transcript),
      info: {
        host: "127.0.0.1",
        port: 1,
        groupsVersion: 1,
        groups: [...groups],
        members: [],
        ...(features === undefined ? {} : { features: [...features] }),
        ...(self === undefined ? {} : { self })
      }
    }))
    const welcome = yield* nthMessage(client, 1)
    assert.strictEqual(welcome._tag, "Welcome")
    if (welcome._tag !== "Welcome") return yield* Effect.die("no welcome")
    assert.isTrue(Protocol.proofMatches(Protocol.proof(key, "acceptor", transcript), welcome.proof), "the acceptor's proof")
    return client
  })

/**
 * The TCP transport's own wire protocol: the control and envelope messages
 * two nodes exchange over one connection, their frames, an incremental frame
 * reader that rejects oversized frames from their length prefix, and the
 * HMAC challenge/response of the handshake.
 *
 * The handshake of protocol 2: `Hello` (dialer: id, session, nonce),
 * `Challenge` (acceptor: id, session, nonce, and no proof), `Auth` (dialer:
 * its proof), then `Welcome` (acceptor: its proof) or `Refused`. The dialer
 * proves first, so a client that connects without the secret never receives
 * a proof it could test guesses of the secret against.
 *
 * A transport frame has the layout of a sync frame (`SyncMessage.ts`) with its
 * own protocol byte, so that one can never be mistaken for the other:
 *
 * ```text
 * u32 BE  body length (protocol byte + checksum + message bytes)
 * u8      transport protocol (0x83 = transport protocol 2, 0x84 = a Deliver of protocol 2,
 *         0x85 = a Deliver with the sender's trace context; 0x81 and 0x82 were protocol 1, whose
 *         acceptor proved itself first)
 * u32 BE  CRC32 of the message bytes
 * ...     message bytes (0x83: SchemaBinary encoding of `TransportMessage`;
 *         0x84: the registry frame of a `Deliver`, as it is;
 *         0x85: u8 flags (bit 0: sampled), u8 length + ASCII trace id, u8 length + ASCII span id,
 *         then the registry frame)
 * ```
 *
 * A node sends 0x85 only to a peer whose node info listed the feature
 * `"traceContext"` (a node that does not know the feature ignores the field
 * and gets 0x84 frames). Likewise a node lists `"syncProtocol/2"` when it
 * reads the sync frames of protocol 2 (the acknowledgement messages); the
 * registry sends those only to peers with which both sides listed it.
 *
 * Membership (`membership.ts`, `gossip.ts`): to a peer that lists
 * `"membership/2"` (and its own member record in its node info), a node
 * sends `Pulse` heartbeats, `Gossip` (member records, each change sent a
 * bounded number of times) and the digest exchange (`DigestHashes`, `Digest`,
 * `Delta`); to others, `Heartbeat` with its groups and an empty member list,
 * and `Members` when a node joins. The feature keeps the protocol at 2: a
 * node of before never receives a message it cannot decode.
 *
 * The registry's frames travel as opaque bytes inside `Deliver`, `Request`
 * and `Reply` messages; the registry checks them again itself. A `Deliver`
 * (every replication message) has its own protocol byte, so that it is sent
 * as a 9-byte header followed by the registry frame itself and read without
 * copying it: a large snapshot is never copied by the transport.
 *
 * To a peer that lists the feature `"bareDeliver"`, a `Deliver` without a
 * trace context is the registry frame alone, with no transport header: its
 * protocol byte is the sync protocol's (1 or 2, never a transport byte), its
 * checksum the registry's, checked once, by the registry. One header and one
 * CRC32 per replication frame, end to end, on both sides. Such a frame is a
 * `Deliver` only after the handshake (before it, it is out of order).
 * @internal
 */
import { Result, Schema } from "effect"
import { SchemaBinary } from "effect/encoding"
import { createHmac, timingSafeEqual } from "node:crypto"
import { crc32 } from "node:zlib"
import { MalformedMessage, MessageTooLarge } from "../../DStateError.ts"
import { writeHeader } from "../../internal/codec.ts"
import { NodeId } from "../../NodeId.ts"
import { ackProtocolVersion, protocolVersion as syncProtocolVersion } from "../../SyncMessage.ts"

/** The transport protocol this node speaks (its handshake order is part of it). */
export const protocolVersion = 2

/** The protocol byte of transport frames (high bit set: never a sync frame's version). */
export const transportProtocol = 0x83

/** The protocol byte of a `Deliver` whose message bytes are the registry frame itself. */
export const deliverProtocol = 0x84

/** The protocol byte of a `Deliver` that carries the sender's trace context before the registry frame. */
export const tracedDeliverProtocol = 0x85

/** The feature a node lists in its node info when it reads `tracedDeliverProtocol` frames. */
export const traceContextFeature = "traceContext"

/**
 * The feature a node lists for each sync frame protocol beyond 1 that it speaks (`"syncProtocol/2"`:
 * the acknowledgement messages). The sync protocol of a connection is the highest both list (1 when a
 * side lists none).
 */
export const syncProtocolFeature = (version: number): string => `syncProtocol/${version}`

/** The highest sync frame protocol both sides speak: this node's `own`, and what the peer's `features` list. */
export const negotiateSyncProtocol = (own: number, features: ReadonlyArray<string> | undefined): number => {
  let version = 1
  if (features !== undefined) {
    for (let v = 2; v <= own; v++) if (features.includes(syncProtocolFeature(v))) version = v
  }
  return version
}

/** The feature a node lists in its node info when it reads registry frames as `Deliver`s without a transport header. */
export const bareDeliverFeature = "bareDeliver"

/** Whether a frame's protocol byte is a sync protocol's: a bare `Deliver` (its checksum is the registry's). */
export const isBareDeliver = (protocolByte: number): boolean =>
  protocolByte === syncProtocolVersion || protocolByte === ackProtocolVersion

/**
 * Whether `payload` can travel as a bare `Deliver`: it has the header of a sync frame (its length prefix counts
 * what follows it, and its protocol byte is a sync protocol's), so the receiver cuts and dispatches it as one.
 * The receiver hands it over as it is either way; the registry checks its checksum.
 */
export const isFrameShaped = (payload: Uint8Array): boolean =>
  payload.length >= headerBytes && isBareDeliver(payload[4]) &&
  ((payload[0] << 24) >>> 0) + (payload[1] << 16) + (payload[2] << 8) + payload[3] === payload.length - 4

/** The longest trace or span id carried (longer ones are not sent). */
export const maxTraceIdLength = 64

/** The protocol bytes of transport protocol 1, recognised only to say so when refused. */
const protocolOneBytes: ReadonlySet<number> = new Set([0x81, 0x82])

/** Bytes before a transport frame's message: length (4), protocol (1), CRC32 (4). */
export const headerBytes = 9

/** Bytes a transport envelope may add around a registry frame (tag, id, lengths). */
export const envelopeOverhead = 1024

/** Length of handshake nonces and of HMAC-SHA256 proofs. */
export const nonceBytes = 32
export const proofBytes = 32

const Port = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))

/** A member as gossiped between nodes: who, which process lifetime, where to dial it. */
export const MemberEntry = Schema.Struct({
  node: NodeId,
  session: Schema.String,
  host: Schema.String,
  port: Port
})
export type MemberEntry = typeof MemberEntry.Type

/** What a digest lists of a record: enough to tell which of two records of a node is newer. */
export const MemberVersion = Schema.Struct({
  node: NodeId,
  session: Schema.String,
  /** When the session started (wall-clock milliseconds): orders the sessions of one node. */
  started: Schema.Number,
  incarnation: Schema.Int,
  status: Schema.Literals(["alive", "suspect", "down", "left"])
})

/** A member record as gossiped (`internal/membership/member.ts`): one session of a node, its incarnation and status. */
export const MemberRecord = Schema.Struct({
  ...MemberVersion.fields,
  host: Schema.String,
  port: Port,
  groups: Schema.Array(Schema.String)
})
export type MemberRecord = typeof MemberRecord.Type

/**
 * The feature a node lists when it speaks gossip membership: `Pulse` heartbeats, `Gossip`, and the digest
 * exchange (`DigestHashes`, `Digest`, `Delta`). Only such peers are sent these frames; to others a node sends
 * the `Heartbeat` and `Members` frames of before (without a member list in heartbeats).
 */
export const gossipMembershipFeature = "membership/2"

/** What a node tells a peer about itself once authenticated. */
export const NodeInfo = Schema.Struct({
  host: Schema.String,
  port: Port,
  groupsVersion: Schema.Int,
  groups: Schema.Array(Schema.String),
  members: Schema.Array(MemberEntry),
  /** What this node reads beyond protocol 2 (absent from nodes that know of no such feature). */
  features: Schema.optionalKey(Schema.Array(Schema.String)),
  /** The sender's own member record (from nodes that list `gossipMembershipFeature`). */
  self: Schema.optionalKey(MemberRecord)
})
export type NodeInfo = typeof NodeInfo.Type

/** Dialer -> acceptor: who I claim to be, and my challenge. */
export const Hello = Schema.TaggedStruct("Hello", {
  node: NodeId,
  session: Schema.String,
  nonce: Schema.Uint8Array
})
/** Acceptor -> dialer: who I am and my challenge (no proof: the dialer proves first). */
export const Challenge = Schema.TaggedStruct("Challenge", {
  node: NodeId,
  session: Schema.String,
  nonce: Schema.Uint8Array
})
/** Dialer -> acceptor: my answer to your challenge, and my node info. */
export const Auth = Schema.TaggedStruct("Auth", {
  proof: Schema.Uint8Array,
  info: NodeInfo
})
/** Acceptor -> dialer: your proof verified; my answer to your challenge, and my node info. */
export const Welcome = Schema.TaggedStruct("Welcome", { proof: Schema.Uint8Array, info: NodeInfo })
/**
 * Acceptor -> dialer, before closing: the dialer's proof did not verify
 * (`"auth-failed"`) or it is not a listed member (`"not-member"`).
 */
export const Refused = Schema.TaggedStruct("Refused", { reason: Schema.Literals(["auth-failed", "not-member"]) })
/**
 * Periodic liveness signal to a peer that does not list `gossipMembershipFeature`: the sender's groups and a
 * member list (empty from nodes that speak gossip membership; read from older nodes).
 */
export const Heartbeat = Schema.TaggedStruct("Heartbeat", {
  groupsVersion: Schema.Int,
  groups: Schema.Array(Schema.String),
  members: Schema.Array(MemberEntry)
})
/** Periodic liveness signal of gossip membership: nothing but itself (membership travels in `Gossip`). */
export const Pulse = Schema.TaggedStruct("Pulse", {})
/** Membership changes, each sent a bounded number of times by every node that learns it. */
export const Gossip = Schema.TaggedStruct("Gossip", { records: Schema.Array(MemberRecord) })
/** Anti-entropy, first round: the sender's hash of each bucket of its live records. */
export const DigestHashes = Schema.TaggedStruct("DigestHashes", { hashes: Schema.Array(Schema.Number) })
/**
 * Anti-entropy: the versions of the sender's live records in `buckets` (of `count`); with `reply`, the
 * receiver answers with its own digest of them too when it lacks some.
 */
export const Digest = Schema.TaggedStruct("Digest", {
  count: Schema.Int,
  buckets: Schema.Array(Schema.Int),
  versions: Schema.Array(MemberVersion),
  reply: Schema.Boolean
})
/** Anti-entropy: the records the receiver's digest lacked or held older (`final`: do not answer with corrections). */
export const Delta = Schema.TaggedStruct("Delta", { records: Schema.Array(MemberRecord), final: Schema.Boolean })
/** The sender's groups changed. */
export const Groups = Schema.TaggedStruct("Groups", {
  version: Schema.Int,
  groups: Schema.Array(Schema.String)
})
/** The sender's member list changed. */
export const Members = Schema.TaggedStruct("Members", { members: Schema.Array(MemberEntry) })
/** The sender's span, as a `Deliver` may carry it. */
export const TraceContext = Schema.Struct({ traceId: Schema.String, spanId: Schema.String, sampled: Schema.Boolean })

/** A one-way registry frame (with the sender's trace context, when it came in a 0x85 frame). */
export const Deliver = Schema.TaggedStruct("Deliver", {
  payload: Schema.Uint8Array,
  trace: Schema.optionalKey(TraceContext)
})
/** A request frame; the receiver answers with `Reply` or `Reject` carrying the same id. */
export const Request = Schema.TaggedStruct("Request", {
  id: Schema.Int,
  timeoutMillis: Schema.Int,
  payload: Schema.Uint8Array
})
export const Reply = Schema.TaggedStruct("Reply", { id: Schema.Int, payload: Schema.Uint8Array })
export const Reject = Schema.TaggedStruct("Reject", { id: Schema.Int, reason: Schema.String })
/** The sender is leaving the cluster (graceful shutdown). */
export const Leave = Schema.TaggedStruct("Leave", {})

/** Every transport message. */
export const TransportMessage = Schema.Union([
  Hello,
  Challenge,
  Auth,
  Welcome,
  Refused,
  Heartbeat,
  Groups,
  Members,
  Deliver,
  Request,
  Reply,
  Reject,
  Leave,
  Pulse,
  Gossip,
  DigestHashes,
  Digest,
  Delta
])
export type TransportMessage = typeof TransportMessage.Type

const codec = SchemaBinary.toCodec(TransportMessage)
const encodeMessage = Schema.encodeUnknownResult(codec)
const decodeMessage = Schema.decodeUnknownResult(codec)

const header = (protocol: number, body: Uint8Array): Uint8Array => {
  const bytes = new Uint8Array(headerBytes)
  writeHeader(bytes, 0, protocol, body)
  return bytes
}

/**
 * A `Deliver` of `payload` as its header and the payload itself, to be
 * written one after the other (the payload is not copied).
 */
export const encodeDeliver = (
  payload: Uint8Array,
  maxFrameBytes: number
): Result.Result<readonly [Uint8Array, Uint8Array], MessageTooLarge> => {
  const size = headerBytes + payload.length
  if (size > maxFrameBytes) return Result.fail(new MessageTooLarge({ size, limit: maxFrameBytes }))
  return Result.succeed([header(deliverProtocol, payload), payload])
}

const isAsciiId = (id: string) => id.length > 0 && id.length <= maxTraceIdLength && /^[\x21-\x7e]+$/.test(id)

/**
 * A `Deliver` of `payload` with `trace`, as its header (with the trace
 * context) and the payload itself; `undefined` when an id is empty, longer
 * than `maxTraceIdLength` or not printable ASCII (the frame is then sent
 * without it).
 */
export const encodeTracedDeliver = (
  payload: Uint8Array,
  trace: { readonly traceId: string; readonly spanId: string; readonly sampled: boolean },
  maxFrameBytes: number
): Result.Result<readonly [Uint8Array, Uint8Array], MessageTooLarge> | undefined => {
  if (!isAsciiId(trace.traceId) || !isAsciiId(trace.spanId)) return undefined
  const contextBytes = 3 + trace.traceId.length + trace.spanId.length
  const size = headerBytes + contextBytes + payload.length
  if (size > maxFrameBytes) return Result.fail(new MessageTooLarge({ size, limit: maxFrameBytes }))
  const head = new Uint8Array(headerBytes + contextBytes)
  const context = head.subarray(headerBytes)
  context[0] = trace.sampled ? 1 : 0
  context[1] = trace.traceId.length
  for (let i = 0; i < trace.traceId.length; i++) context[2 + i] = trace.traceId.charCodeAt(i)
  const at = 2 + trace.traceId.length
  context[at] = trace.spanId.length
  for (let i = 0; i < trace.spanId.length; i++) context[at + 1 + i] = trace.spanId.charCodeAt(i)
  writeHeader(head, 0, tracedDeliverProtocol, context, payload)
  return Result.succeed([head, payload])
}

/** Reads the trace context and the registry frame of a 0x85 body. */
const decodeTraced = (body: Uint8Array): Result.Result<TransportMessage, MalformedMessage> => {
  const malformed = (reason: string) => Result.fail(new MalformedMessage({ reason: `traced deliver: ${reason}` }))
  if (body.length < 3) return malformed("shorter than its trace context")
  if (body[0] > 1) return malformed(`unknown flags ${body[0]}`)
  const traceLength = body[1]
  const spanAt = 2 + traceLength
  if (body.length < spanAt + 1) return malformed("shorter than its trace id")
  const spanLength = body[spanAt]
  const payloadAt = spanAt + 1 + spanLength
  if (body.length < payloadAt) return malformed("shorter than its span id")
  const traceId = String.fromCharCode(...body.subarray(2, spanAt))
  const spanId = String.fromCharCode(...body.subarray(spanAt + 1, payloadAt))
  if (!isAsciiId(traceId) || !isAsciiId(spanId)) return malformed("ids must be 1 to 64 printable ASCII characters")
  return Result.succeed({
    _tag: "Deliver",
    payload: body.subarray(payloadAt),
    trace: { traceId, spanId, sampled: body[0] === 1 }
  })
}

/** Encodes a message into one transport frame. */
export const encode = (
  message: TransportMessage,
  maxFrameBytes: number
): Result.Result<Uint8Array, MessageTooLarge | MalformedMessage> => {
  if (message._tag === "Deliver") {
    const parts = encodeDeliver(message.payload, maxFrameBytes)
    if (Result.isFailure(parts)) return Result.fail(parts.failure)
    const frame = new Uint8Array(headerBytes + message.payload.length)
    frame.set(parts.success[0])
    frame.set(message.payload, headerBytes)
    return Result.succeed(frame)
  }
  const encoded = encodeMessage(message)
  if (Result.isFailure(encoded)) {
    return Result.fail(new MalformedMessage({ reason: `cannot encode ${message._tag}: ${encoded.failure.message}`, cause: encoded.failure }))
  }
  const body = encoded.success
  const size = headerBytes + body.length
  if (size > maxFrameBytes) return Result.fail(new MessageTooLarge({ size, limit: maxFrameBytes }))
  const frame = new Uint8Array(size)
  writeHeader(frame, 0, transportProtocol, body)
  frame.set(body, headerBytes)
  return Result.succeed(frame)
}

/** Checks and decodes one complete transport frame (as cut by `FrameReader`). */
export const decode = (frame: Uint8Array): Result.Result<TransportMessage, MalformedMessage> => {
  if (frame.length < headerBytes) {
    return Result.fail(new MalformedMessage({ reason: `frame of ${frame.length} bytes is shorter than its header` }))
  }
  // The registry frame itself: the registry checks its checksum (once, end to end).
  if (isBareDeliver(frame[4])) return Result.succeed({ _tag: "Deliver", payload: frame })
  if (protocolOneBytes.has(frame[4])) {
    return Result.fail(new MalformedMessage({
      reason: `transport protocol 1 (0x${frame[4].toString(16)}); this node speaks protocol ${protocolVersion}`
    }))
  }
  if (frame[4] !== transportProtocol && frame[4] !== deliverProtocol && frame[4] !== tracedDeliverProtocol) {
    return Result.fail(new MalformedMessage({ reason: `unknown transport protocol 0x${frame[4].toString(16)}` }))
  }
  const body = frame.subarray(headerBytes)
  const expected = new DataView(frame.buffer, frame.byteOffset + 5, 4).getUint32(0)
  if (crc32(body) !== expected) return Result.fail(new MalformedMessage({ reason: "checksum mismatch" }))
  // The registry frame of a Deliver, as a view into the transport frame (the registry checks it itself).
  if (frame[4] === deliverProtocol) return Result.succeed({ _tag: "Deliver", payload: body })
  if (frame[4] === tracedDeliverProtocol) return decodeTraced(body)
  const decoded = decodeMessage(body)
  if (Result.isFailure(decoded)) {
    return Result.fail(new MalformedMessage({
        reason: `undecodable transport message: ${decoded.failure.message}`,
        cause: decoded.failure
      }))
  }
  return Result.succeed(decoded.success)
}

/**
 * Cuts a byte stream into frames. Chunks are kept as received; a frame's
 * bytes are copied into one buffer only once all of them have arrived, so
 * memory held never exceeds what the peer actually sent, and a frame whose
 * announced length exceeds the limit is rejected from its first four bytes.
 */
export class FrameReader {
  private chunks: Array<Uint8Array> = []
  private buffered = 0
  private expected = -1
  limit: number

  constructor(limit: number) {
    this.limit = limit
  }

  /** Bytes received and not yet returned as frames. */
  get pending(): number {
    return this.buffered
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** The next complete frame, `undefined` when more bytes are needed, or the reason to drop the connection. */
  next(): Result.Result<Uint8Array | undefined, MessageTooLarge | MalformedMessage> {
    if (this.expected < 0) {
      if (this.buffered < 4) return Result.succeed(undefined)
      const prefix = this.peek(4)
      const size = ((prefix[0] << 24) >>> 0) + (prefix[1] << 16) + (prefix[2] << 8) + prefix[3] + 4
      if (size > this.limit) return Result.fail(new MessageTooLarge({ size, limit: this.limit }))
      if (size < headerBytes) {
        return Result.fail(new MalformedMessage({ reason: `frame announces ${size} bytes, less than its header` }))
      }
      this.expected = size
    }
    if (this.buffered < this.expected) return Result.succeed(undefined)
    const frame = this.take(this.expected)
    this.expected = -1
    return Result.succeed(frame)
  }

  private peek(n: number): Uint8Array {
    const first = this.chunks[0]
    if (first.length >= n) return first
    const out = new Uint8Array(n)
    let at = 0
    for (const chunk of this.chunks) {
      const part = chunk.subarray(0, Math.min(chunk.length, n - at))
      out.set(part, at)
      at += part.length
      if (at === n) break
    }
    return out
  }

  private take(n: number): Uint8Array {
    const first = this.chunks[0]
    if (first.length >= n) {
      const frame = first.subarray(0, n)
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      this.buffered -= n
      return frame
    }
    const frame = new Uint8Array(n)
    let at = 0
    while (at < n) {
      const chunk = this.chunks[0]
      const want = n - at
      if (chunk.length <= want) {
        frame.set(chunk, at)
        at += chunk.length
        this.chunks.shift()
      } else {
        frame.set(chunk.subarray(0, want), at)
        this.chunks[0] = chunk.subarray(want)
        at += want
      }
    }
    this.buffered -= n
    return frame
  }
}

// ---- authentication ---------------------------------------------------------------------------

const textEncoder = new TextEncoder()

/** The facts both proofs of a handshake cover, so a proof cannot be replayed for another pairing. */
export interface Transcript {
  readonly dialer: string
  readonly acceptor: string
  readonly dialerSession: string
  readonly acceptorSession: string
  readonly dialerNonce: Uint8Array
  readonly acceptorNonce: Uint8Array
}

const lengthPrefixed = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let size = 0
  for (const p of parts) size += 4 + p.length
  const out = new Uint8Array(size)
  const view = new DataView(out.buffer)
  let at = 0
  for (const p of parts) {
    view.setUint32(at, p.length)
    out.set(p, at + 4)
    at += 4 + p.length
  }
  return out
}

/**
 * HMAC-SHA256 over the shared secret of the role label and the transcript.
 * The label differs per direction, so a node's proof can never be reflected
 * back to it as the other side's.
 */
export const proof = (secret: Uint8Array, role: "dialer" | "acceptor", t: Transcript): Uint8Array => {
  const message = lengthPrefixed([
    textEncoder.encode(`dstate/tcp/v2/${role}`),
    textEncoder.encode(t.dialer),
    textEncoder.encode(t.acceptor),
    textEncoder.encode(t.dialerSession),
    textEncoder.encode(t.acceptorSession),
    t.dialerNonce,
    t.acceptorNonce
  ])
  return new Uint8Array(createHmac("sha256", secret).update(message).digest())
}

/** Constant-time comparison of a received proof with the expected one. */
export const proofMatches = (expected: Uint8Array, received: Uint8Array): boolean =>
  received.length === expected.length && timingSafeEqual(expected, received)

/** The secret as bytes. */
export const secretBytes = (secret: string | Uint8Array): Uint8Array =>
  typeof secret === "string" ? textEncoder.encode(secret) : secret

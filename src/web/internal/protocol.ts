/**
 * The control messages of `dstate/web`, as Schemas read on both ends: what a
 * browser sends (text frames of JSON: `hello`, `pull`, `snapshot`) and what
 * the node sends besides sync frames (control frames of JSON, see
 * `frames.ts`: `welcome`, `refused`, `synced`, `removed`, `pulled`,
 * `status`, `expired`). Every inbound one is decoded by its Schema before
 * anything acts on it. Browser-safe.
 * @internal
 */
import { Schema } from "effect"

const Name = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(256))
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Millis = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

/** The first message of a browser: its token and the states it reads (`"*"`: every state the token allows). */
export const Hello = Schema.Struct({
  t: Schema.Literal("hello"),
  token: Schema.String.check(Schema.isMaxLength(4096)),
  states: Schema.Union([Schema.Literal("*"), Schema.Array(Name)]),
  status: Schema.optionalKey(Schema.Boolean)
})
export type Hello = typeof Hello.Type

/** A query's pull: bring every view of `state` to at most `maxStalenessMillis` on the node, then confirm. */
export const Pull = Schema.Struct({
  t: Schema.Literal("pull"),
  id: Count,
  state: Name,
  maxStalenessMillis: Millis
})
export type Pull = typeof Pull.Type

/** A gap on the browser: send the snapshot of `owner`'s view of `state` again. */
export const SnapshotRequest = Schema.Struct({
  t: Schema.Literal("snapshot"),
  state: Name,
  owner: Name
})
export type SnapshotRequest = typeof SnapshotRequest.Type

/** What a browser may send. */
export const ClientMessage = Schema.Union([Hello, Pull, SnapshotRequest])
export type ClientMessage = typeof ClientMessage.Type

/** `ClientMessage` from the text of a frame. */
export const ClientMessageJson = Schema.fromJsonString(ClientMessage)

/** Why a connection is refused (the `reason` of `WebToken.WebTokenRefused` for the token's). */
export const RefusalReason = Schema.Literals(["Malformed", "BadSignature", "Expired", "OutOfScope", "TooManyConnections", "HelloTimeout", "BadHello"])
export type RefusalReason = typeof RefusalReason.Type

/** One view the node holds, with how stale it is there. */
export const SyncedView = Schema.Struct({
  owner: Name,
  incarnation: Count,
  age: Count,
  stalenessMillis: Millis,
  pending: Schema.optionalKey(Schema.Struct({ incarnation: Count, age: Count }))
})
export type SyncedView = typeof SyncedView.Type

/** Per peer of a state, in `status`. */
export const PeerStatus = Schema.Struct({
  node: Name,
  consecutiveFailures: Count,
  gapCount: Count,
  lastSyncAgoMillis: Schema.optionalKey(Millis),
  lastError: Schema.optionalKey(Schema.String)
})

/** One state, in `status`. */
export const StateStatus = Schema.Struct({
  name: Name,
  mutations: Count,
  snapshotsReceived: Count,
  deltasReceived: Count,
  peers: Schema.Array(PeerStatus)
})
export type StateStatus = typeof StateStatus.Type

/** What the node sends besides sync frames. */
export const ServerMessage = Schema.Union([
  Schema.Struct({
    t: Schema.Literal("welcome"),
    node: Name,
    states: Schema.Array(Name),
    status: Schema.Boolean,
    expiresAt: Millis
  }),
  Schema.Struct({ t: Schema.Literal("refused"), reason: RefusalReason, detail: Schema.String }),
  Schema.Struct({
    t: Schema.Literal("synced"),
    state: Name,
    complete: Schema.Boolean,
    views: Schema.Array(SyncedView)
  }),
  Schema.Struct({ t: Schema.Literal("removed"), state: Name, owner: Name }),
  Schema.Struct({
    t: Schema.Literal("pulled"),
    id: Count,
    stale: Schema.optionalKey(Schema.Struct({ node: Name, lastSyncedAgoMillis: Millis }))
  }),
  Schema.Struct({
    t: Schema.Literal("status"),
    node: Name,
    at: Millis,
    members: Schema.Array(Name),
    unreachable: Schema.Array(Schema.Struct({ node: Name, since: Millis })),
    states: Schema.Array(StateStatus)
  }),
  Schema.Struct({ t: Schema.Literal("expired") })
])
export type ServerMessage = typeof ServerMessage.Type
export type StatusMessage = Extract<ServerMessage, { readonly t: "status" }>

/** The close code of a refused connection (the reason travels before it in a `refused` message). */
export const refusedCloseCode = 4401
/** The close code of a connection whose token expired. */
export const expiredCloseCode = 4402

/**
 * One browser's WebSocket connection on the node: the hello (its token
 * verified and its scope checked before anything is sent, a refusal counted
 * and sent as a `refused` message before the close), then the connection's
 * outbound queue (`node/internal/outbound.ts`: a view's newer snapshot
 * supersedes the queued one, caps in frames and bytes drop the oldest), its
 * writer (which waits while the socket holds more than `socketHighWater`
 * bytes unsent, so that a slow tab costs at most the queue's caps), the
 * browser's messages (pulls and snapshot requests; anything else closes the
 * connection), and the token's expiry (an `expired` message, then the
 * close).
 * @internal
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Option, type Redacted, Result, Schema, type Scope, Semaphore } from "effect"
import { Socket } from "effect/socket"
import type * as Net from "node:net"
import type { StalePeer } from "../../DStateError.ts"
import type * as Generation from "../../Generation.ts"
import type { WebCounter } from "../../Metrics.ts"
import * as Outbound from "../../node/internal/outbound.ts"
import type { OutboundStats } from "../../node/TcpRuntime.ts"
import type { NodeId } from "../../NodeId.ts"
import type { StateHandle } from "../../StateHandle.ts"
import type { ViewMap } from "../../StateView.ts"
import * as WebToken from "../WebToken.ts"
import type { Feed, Subscriber } from "./feed.ts"
import { controlFrame } from "./frames.ts"
import * as Protocol from "./protocol.ts"

/** The limits of one connection (checked by `WebReplicas`). */
export interface Limits {
  readonly maxConnections: number
  readonly maxQueuedFrames: number
  readonly maxQueuedBytes: number
  readonly socketHighWater: number
  readonly helloTimeout: Duration.Duration
  readonly maxClientMessageBytes: number
  readonly maxPendingPulls: number
}

/** A served state: its feed, and its handle once the state is registered on this node. */
export interface Served {
  readonly feed: Feed
  readonly handle: () => StateHandle<unknown, unknown> | undefined
}

/** A connection, as the node's status ticker sees it. */
export interface Connection extends Subscriber {
  readonly states: ReadonlyArray<string>
  readonly status: boolean
  /** Closes the connection (the node is stopping). */
  readonly close: Effect.Effect<void>
  /** Its queue's counters. */
  readonly queue: () => OutboundStats
}

/** What every connection shares. */
export interface Endpoint {
  readonly self: NodeId
  readonly keys: ReadonlyArray<Redacted.Redacted<string>>
  readonly limits: Limits
  readonly served: ReadonlyMap<string, Served>
  readonly connections: Set<Connection>
  readonly count: (key: WebCounter, by?: number) => void
  /** This node's monotonic milliseconds. */
  readonly monotonicNow: () => number
}

const refusedCounter: Record<Protocol.RefusalReason, WebCounter> = {
  Malformed: "refusedMalformed",
  BadSignature: "refusedBadSignature",
  Expired: "refusedExpired",
  OutOfScope: "refusedOutOfScope",
  TooManyConnections: "refusedTooManyConnections",
  HelloTimeout: "refusedHelloTimeout",
  BadHello: "refusedBadHello"
}

const decodeClientMessage = Schema.decodeUnknownResult(Protocol.ClientMessageJson)

/** Waits while the socket holds more than `highWater` bytes it has not written yet. */
const drained = (socket: Net.Socket | undefined, highWater: number): Effect.Effect<void> =>
  socket === undefined || socket.destroyed || socket.writableLength <= highWater || !socket.writableNeedDrain
    ? Effect.void
    : Effect.callback<void>((resume) => {
      const done = () => {
        socket.off("drain", done)
        socket.off("close", done)
        resume(Effect.void)
      }
      socket.on("drain", done)
      socket.on("close", done)
      return Effect.sync(() => {
        socket.off("drain", done)
        socket.off("close", done)
      })
    })

/**
 * Serves one upgraded connection until either side closes it. `socket` is
 * the TCP socket under the WebSocket, whose unsent bytes the writer watches.
 */
export const serve = Effect.fnUntraced(function*(endpoint: Endpoint, ws: Socket.Socket, socket: Net.Socket | undefined) {
  const { count, limits } = endpoint
  const reader = yield* ws.reader
  const writer = yield* ws.writer

  const refuse = (reason: Protocol.RefusalReason, detail: string) =>
    Effect.gen(function*() {
      count(refusedCounter[reason])
      yield* writer.write(controlFrame({ t: "refused", reason, detail }))
      yield* writer.write(new Socket.CloseEvent(Protocol.refusedCloseCode, reason))
    }).pipe(Effect.ignore)

  if (endpoint.connections.size >= limits.maxConnections) {
    return yield* refuse("TooManyConnections", `the endpoint serves at most ${limits.maxConnections} connections`)
  }
  const first = yield* reader.pull.pipe(Effect.timeoutOption(limits.helloTimeout), Effect.exit)
  if (Exit.isFailure(first)) return // the browser went away before its hello
  if (Option.isNone(first.value)) return yield* refuse("HelloTimeout", `no hello within ${Duration.format(limits.helloTimeout)}`)
  const [head, ...pending] = first.value.value
  const hello = typeof head === "string" && head.length <= limits.maxClientMessageBytes ? decodeClientMessage(head) : undefined
  if (hello === undefined || Result.isFailure(hello) || hello.success.t !== "hello") {
    return yield* refuse("BadHello", "the first message must be a hello (JSON text)")
  }
  const claims = WebToken.verify(endpoint.keys, hello.success.token, yield* Clock.currentTimeMillis)
  if (Result.isFailure(claims)) return yield* refuse(claims.failure.reason, claims.failure.detail)
  const wanted = hello.success.states === "*"
    ? [...endpoint.served.keys()].filter((name) => WebToken.allows(claims.success, name))
    : [...new Set(hello.success.states)]
  for (const name of wanted) {
    if (!endpoint.served.has(name)) return yield* refuse("OutOfScope", `state "${name}" is not served here`)
    if (!WebToken.allows(claims.success, name)) return yield* refuse("OutOfScope", `the token does not allow state "${name}"`)
  }
  const status = hello.success.status === true
  if (status && !claims.success.status) return yield* refuse("OutOfScope", "the token does not allow the status")

  // Accepted: from here on the browser gets views.
  const outbound = yield* Outbound.make(
    { maxBytes: limits.maxQueuedBytes, maxFrames: limits.maxQueuedFrames },
    // No sender ever waits for a browser: the caps and superseding bound what it costs.
    { frames: Number.MAX_SAFE_INTEGER, bytes: Number.MAX_SAFE_INTEGER, stallMillis: 0 }
  )
  /** The newest generation offered per view (`state\0owner`); a removal remembers the generation it removed. */
  const offered = new Map<string, Generation.Generation>()
  const connection: Connection = {
    states: wanted,
    status,
    offerView: (state, owner, generation, frame, force) => {
      const key = `${state}\u0000${owner}`
      const before = offered.get(key)
      if (
        force !== true && before !== undefined &&
        (before.incarnation > generation.incarnation ||
          (before.incarnation === generation.incarnation && before.age >= generation.age))
      ) return
      offered.set(key, generation)
      outbound.offer(frame, { key, replaces: true })
    },
    offerRemoved: (state, owner, frame) => outbound.offer(frame, { key: `${state}\u0000${owner}`, replaces: true }),
    offerControl: (frame, key) => outbound.offer(frame, key === undefined ? undefined : { key, replaces: true }),
    close: writer.write(new Socket.CloseEvent(1001, "the node is stopping")).pipe(Effect.ignore),
    queue: outbound.stats
  }
  count("connectionsAccepted")
  endpoint.connections.add(connection)
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      endpoint.connections.delete(connection)
      for (const name of wanted) endpoint.served.get(name)?.feed.leave(connection)
      const stats = outbound.stats()
      count("superseded", stats.superseded)
      count("droppedOldest", stats.droppedOldest + stats.replacedAtCap)
      count("connectionsClosed")
      outbound.clear()
    })
  )
  outbound.offer(controlFrame({
    t: "welcome",
    node: endpoint.self,
    states: wanted,
    status,
    expiresAt: claims.success.expiresAt
  }))
  for (const name of wanted) endpoint.served.get(name)!.feed.join(connection)

  const writeLoop = Effect.gen(function*() {
    while (true) {
      const frames = yield* outbound.take(64)
      yield* writer.writeAll(frames as [Uint8Array, ...Array<Uint8Array>])
      yield* drained(socket, limits.socketHighWater)
      let bytes = 0
      for (const frame of frames) bytes += frame.length
      count("framesSent", frames.length)
      count("bytesSent", bytes)
      yield* outbound.written
    }
  })

  const expiry = Effect.gen(function*() {
    const left = claims.success.expiresAt - (yield* Clock.currentTimeMillis)
    yield* Effect.sleep(Duration.millis(Math.max(0, left)))
    count("tokensExpired")
    const written = Deferred.makeUnsafe<void>()
    outbound.offer(controlFrame({ t: "expired" }), undefined, written)
    yield* Deferred.await(written).pipe(Effect.timeoutOption("1 second"))
    yield* writer.write(new Socket.CloseEvent(Protocol.expiredCloseCode, "token expired")).pipe(Effect.ignore)
  })

  const pulls = yield* Semaphore.make(limits.maxPendingPulls)
  const pull = (message: Protocol.Pull, served: Served) =>
    Effect.gen(function*() {
      const handle = served.handle()
      const reply = (stale?: { readonly node: string; readonly lastSyncedAgoMillis: number }) =>
        outbound.offer(controlFrame({ t: "pulled", id: message.id, ...(stale === undefined ? {} : { stale }) }))
      if (handle === undefined) return reply({ node: endpoint.self, lastSyncedAgoMillis: 0 })
      const result = yield* handle.query(
        { maxStaleness: Duration.millis(message.maxStalenessMillis) },
        (views): ViewMap<unknown> => views
      ).pipe(Effect.result)
      if (Result.isFailure(result)) {
        const error = result.failure as StalePeer | { readonly _tag: "InvalidOptions" }
        return reply(
          error._tag === "StalePeer"
            ? { node: error.node, lastSyncedAgoMillis: Math.max(0, endpoint.monotonicNow() - error.lastSyncedAt) }
            : { node: endpoint.self, lastSyncedAgoMillis: 0 }
        )
      }
      served.feed.reconcile(result.success)
      outbound.offer(served.feed.synced(false))
      reply()
    })

  /** Handles one message after the hello; `false` when it closes the connection. */
  const handle = (raw: Uint8Array | string): Effect.Effect<boolean, never, Scope.Scope> => {
    const decoded = typeof raw === "string" && raw.length <= limits.maxClientMessageBytes
      ? decodeClientMessage(raw)
      : undefined
    const message = decoded !== undefined && Result.isSuccess(decoded) ? decoded.success : undefined
    const served = message === undefined || message.t === "hello" ? undefined : endpoint.served.get(message.state)
    if (message === undefined || message.t === "hello" || served === undefined || !wanted.includes(message.state)) {
      count("clientMessagesRejected")
      return writer.write(new Socket.CloseEvent(1008, "unexpected message")).pipe(Effect.ignore, Effect.as(false))
    }
    if (message.t === "snapshot") {
      count("snapshotRequests")
      served.feed.resend(connection, message.owner as NodeId)
      return Effect.succeed(true)
    }
    count("pulls")
    // At most maxPendingPulls in flight: a pull beyond is answered at once as not fresh, without a pull.
    return Effect.forkScoped(
      pulls.withPermitsIfAvailable(1)(pull(message, served)).pipe(
        Effect.map((started) => {
          if (Option.isNone(started)) {
            outbound.offer(controlFrame({ t: "pulled", id: message.id, stale: { node: endpoint.self, lastSyncedAgoMillis: 0 } }))
          }
        })
      )
    ).pipe(Effect.as(true))
  }

  const readLoop = Effect.gen(function*() {
    for (const message of pending) if (!(yield* handle(message))) return
    while (true) {
      const batch = yield* reader.pull
      for (const message of batch) if (!(yield* handle(message))) return
    }
  }).pipe(Effect.catchCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.void))

  yield* Effect.raceFirst(
    readLoop,
    Effect.raceFirst(writeLoop.pipe(Effect.ignore), expiry)
  )
})

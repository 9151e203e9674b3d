/**
 * Where registry frames go, and request/reply correlation. One-way frames
 * are handed to this node's inbound handler (when sent to itself or received
 * from a peer) or to the outbound queues of their peers as a `Deliver`, with
 * the caller's `Supersede`; requests get a correlation id, wait for the
 * `Reply` or `Reject` with that id from the node they were sent to, and fail
 * when it times out or goes down; requests from peers are answered by the
 * inbound handler within the time the requester allows.
 * @internal
 */
import { Cause, Deferred, Duration, Effect, Exit, FiberSet, Result, type Scope } from "effect"
import type { Inbound, Supersede, TraceContext } from "../../ActorRuntime.ts"
import { NodeUnreachable, RequestRejected, RequestTimeout } from "../../DStateError.ts"
import type { NodeId } from "../../NodeId.ts"
import { encode, type Node, type Peer } from "./node.ts"
import type * as Outbound from "./outbound.ts"
import * as Protocol from "./protocol.ts"

interface Pending {
  readonly to: NodeId
  readonly reply: Deferred.Deferred<Uint8Array, RequestRejected | NodeUnreachable>
}

export interface Routing {
  /** Installs the node's inbound handler for as long as the scope lives. */
  readonly serve: (handler: Inbound) => Effect.Effect<void, never, Scope.Scope>
  /** Sends a registry frame to one node (this one included). */
  readonly send: (
    to: NodeId,
    payload: Uint8Array,
    supersede: Supersede | undefined,
    trace: TraceContext | undefined
  ) => Effect.Effect<void, NodeUnreachable>
  /**
   * Queues a registry frame for each of `targets` other than this node (the members of a group); with
   * `trace`, peers that read trace contexts get it with the frame. A frame of a sequence (a key that does
   * not replace: a state's delta) then waits for every peer whose queue is at its backpressure mark while
   * that peer keeps writing (`Outbound.relieved`); counted in `backpressureWaits` and `backpressureStalls`.
   */
  readonly broadcast: (
    targets: ReadonlyArray<NodeId>,
    payload: Uint8Array,
    supersede: Supersede | undefined,
    trace: TraceContext | undefined
  ) => Effect.Effect<void>
  /** Sends a request frame and waits for the reply frame. */
  readonly request: (
    to: NodeId,
    payload: Uint8Array,
    timeout: Duration.Input
  ) => Effect.Effect<Uint8Array, RequestTimeout | NodeUnreachable | RequestRejected>
  /** A `Deliver` from a peer. */
  readonly delivered: (from: NodeId, payload: Uint8Array, trace: TraceContext | undefined) => Effect.Effect<void>
  /** A `Request` from a peer: answered in the background. */
  readonly requested: (peer: Peer, message: typeof Protocol.Request.Type) => Effect.Effect<void>
  /** A `Reply` or `Reject` from a peer. */
  readonly answered: (from: NodeId, message: typeof Protocol.Reply.Type | typeof Protocol.Reject.Type) => void
  /** Fails the requests waiting for `node` (it is down). */
  readonly failPendingTo: (node: NodeId) => void
  /** Fails every waiting request (the node is shutting down). */
  readonly failAll: () => void
}

export const make = (node: Node): Routing => {
  const { counters, self } = node
  const pending = new Map<number, Pending>()
  let inbound: Inbound | undefined
  let nextRequestId = 1

  /** A Deliver as its header and the registry frame itself (shared by every peer's queue, never copied). */
  const deliverFrame = (payload: Uint8Array) => {
    const frame = Protocol.encodeDeliver(payload, node.frameLimit)
    if (Result.isFailure(frame)) {
      counters.oversizedSends++
      return undefined
    }
    return frame.success
  }

  /**
   * The registry frame as it is, for peers that read bare Delivers (checked against the frame limit); a payload
   * that is not shaped as a sync frame (its length prefix and protocol byte) goes in a `Deliver` header.
   */
  const bareFrame = (payload: Uint8Array) => {
    if (!Protocol.isFrameShaped(payload)) return deliverFrame(payload)
    if (payload.length > node.frameLimit) {
      counters.oversizedSends++
      return undefined
    }
    return payload
  }

  /** The same with the trace context, for peers that read it (the plain frame when the ids cannot be carried). */
  const tracedFrame = (payload: Uint8Array, trace: TraceContext) => {
    const frame = Protocol.encodeTracedDeliver(payload, trace, node.frameLimit)
    if (frame === undefined) return deliverFrame(payload)
    if (Result.isFailure(frame)) {
      counters.oversizedSends++
      return undefined
    }
    return frame.success
  }

  const deliverLocally = (payload: Uint8Array, trace: TraceContext | undefined) =>
    Effect.suspend(() => {
      const handler = inbound
      if (handler === undefined) {
        counters.undelivered++
        return Effect.void
      }
      return FiberSet.run(node.tasks, handler.onMessage(self, payload, trace)).pipe(Effect.asVoid)
    })

  const handleRequest = Effect.fnUntraced(function*(peer: Peer, id: number, timeoutMillis: number, payload: Uint8Array) {
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
    if (node.peers.get(peer.node) !== peer) return
    if (Exit.isSuccess(answer)) {
      const frame = encode(node, { _tag: "Reply", id, payload: answer.value })
      if (Result.isSuccess(frame)) return peer.outbound.offer(frame.success)
      counters.oversizedSends++
      const rejected = encode(node, { _tag: "Reject", id, reason: frame.failure.message })
      if (Result.isSuccess(rejected)) peer.outbound.offer(rejected.success)
      return
    }
    const error = Cause.findErrorOption(answer.cause)
    if (error._tag === "Some") {
      const frame = encode(node, { _tag: "Reject", id, reason: error.value.reason })
      if (Result.isSuccess(frame)) peer.outbound.offer(frame.success)
    }
  })

  const request = Effect.fnUntraced(function*(to: NodeId, payload: Uint8Array, timeout: Duration.Input) {
    const duration = Duration.fromInputUnsafe(timeout)
    const timeoutMillis = Duration.toMillis(duration)
    const timedOut = () => {
      counters.requestTimeouts++
      return Effect.fail(new RequestTimeout({ node: to, timeoutMillis }))
    }
    if (to === self) {
      const handler = inbound
      if (handler === undefined) return yield* new RequestRejected({ node: to, reason: "node is not serving" })
      return yield* handler.onRequest(self, payload).pipe(Effect.timeoutOrElse({ duration, orElse: timedOut }))
    }
    const peer = node.peers.get(to)
    if (peer === undefined) return yield* new NodeUnreachable({ node: to })
    const id = nextRequestId++
    const frame = encode(node, { _tag: "Request", id, timeoutMillis: Math.ceil(timeoutMillis), payload })
    if (Result.isFailure(frame)) {
      counters.oversizedSends++
      return yield* new RequestRejected({ node: to, reason: frame.failure.message })
    }
    const reply = yield* Deferred.make<Uint8Array, RequestRejected | NodeUnreachable>()
    pending.set(id, { to, reply })
    counters.requestsSent++
    peer.outbound.offer(frame.success)
    return yield* Deferred.await(reply).pipe(
      Effect.timeoutOrElse({ duration, orElse: timedOut }),
      Effect.ensuring(Effect.sync(() => pending.delete(id)))
    )
  })

  return {
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
    send: (to, payload, supersede, trace) =>
      Effect.suspend(() => {
        if (to === self) return deliverLocally(payload, trace)
        const peer = node.peers.get(to)
        if (peer === undefined) return Effect.fail(new NodeUnreachable({ node: to }))
        const frame = trace !== undefined && peer.traceContext
          ? tracedFrame(payload, trace)
          : peer.bareDeliver
          ? bareFrame(payload)
          : deliverFrame(payload)
        if (frame !== undefined) peer.outbound.offer(frame, supersede)
        return Effect.void
      }),
    broadcast: (members, payload, supersede, trace) => {
      /** Peers past their backpressure mark after this frame (only for a sequence frame). */
      let pressed: Array<Peer> | undefined
      // Each frame is built once, the first time a peer needs it, and shared by every queue.
      let plain: ReturnType<typeof deliverFrame> | null = null
      let traced: ReturnType<typeof deliverFrame> | null = null
      let bare: Outbound.Frame | undefined | null = null
      for (const to of members) {
        if (to === self) continue
        const peer = node.peers.get(to)
        if (peer === undefined) continue
        let frame: Outbound.Frame | undefined
        if (trace !== undefined && peer.traceContext) {
          if (traced === null) traced = tracedFrame(payload, trace)
          frame = traced
        } else if (peer.bareDeliver) {
          if (bare === null) bare = bareFrame(payload)
          frame = bare
        } else {
          if (plain === null) plain = deliverFrame(payload)
          frame = plain
        }
        if (frame === undefined) continue
        peer.outbound.offer(frame, supersede)
        if (supersede !== undefined && !supersede.replaces && peer.outbound.pressed()) (pressed ??= []).push(peer)
      }
      if (pressed === undefined) return Effect.void
      counters.backpressureWaits++
      return Effect.forEach(pressed, (peer) =>
        Effect.map(peer.outbound.relieved, (outcome) => {
          if (outcome === "stalled") counters.backpressureStalls++
        }), { discard: true })
    },
    request,
    delivered: (from, payload, trace) =>
      Effect.suspend(() => {
        const handler = inbound
        if (handler !== undefined) return handler.onMessage(from, payload, trace)
        counters.undelivered++
        return Effect.void
      }),
    requested: (peer, message) =>
      FiberSet.run(node.tasks, handleRequest(peer, message.id, message.timeoutMillis, message.payload)).pipe(
        Effect.asVoid
      ),
    answered: (from, message) => {
      const waiting = pending.get(message.id)
      if (waiting === undefined || waiting.to !== from) {
        counters.rejectedReplies++
        return
      }
      pending.delete(message.id)
      Deferred.doneUnsafe(
        waiting.reply,
        message._tag === "Reply"
          ? Effect.succeed(message.payload)
          : Effect.fail(new RequestRejected({ node: from, reason: message.reason }))
      )
    },
    failPendingTo: (to) => {
      for (const [id, p] of pending) {
        if (p.to === to) {
          pending.delete(id)
          Deferred.doneUnsafe(p.reply, Effect.fail(new NodeUnreachable({ node: to })))
        }
      }
    },
    failAll: () => {
      for (const p of pending.values()) Deferred.doneUnsafe(p.reply, Effect.fail(new NodeUnreachable({ node: p.to })))
      pending.clear()
    }
  }
}

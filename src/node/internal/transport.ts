/**
 * The TCP transport assembled: builds the node's shared state (`node.ts`),
 * starts the listener, and wires the mechanisms together, each in its own
 * module: the handshake (`handshake.ts`), membership (`membership.ts`,
 * driving the core of `internal/membership/`), gossip and digest repair
 * (`gossip.ts`), heartbeats and failure detection (`heartbeat.ts`, with
 * the detectors in `detector.ts`), dialing and reconnection (`dialer.ts`),
 * connections (`connection.ts`), the per-peer outbound queues
 * (`outbound.ts`) and the routing of frames and requests (`routing.ts`).
 *
 * Lives here: the order in which they start and stop (the graceful leave
 * on shutdown), the `ActorRuntime` they provide, and the diagnostics.
 * @internal
 */
import { Deferred, Duration, Effect, FiberMap, FiberSet, Redacted, Result, Scope, type Stream } from "effect"
import { randomBytes } from "node:crypto"
import { type ActorRuntime, after, every, spawnActor } from "../../ActorRuntime.ts"
import { type ClusterEvents, makeSource } from "../../ClusterEvents.ts"
import * as MetricSeries from "../../internal/metricSeries.ts"
import * as Metrics from "../../Metrics.ts"
import type { NodeId } from "../../NodeId.ts"
import type { PeerDiagnostics, TransportStats } from "../TcpRuntime.ts"
import * as Connection from "./connection.ts"
import * as Dialer from "./dialer.ts"
import * as Gossip from "./gossip.ts"
import * as Handshake from "./handshake.ts"
import * as Heartbeat from "./heartbeat.ts"
import * as Listener from "./listener.ts"
import * as Membership from "./membership.ts"
import * as Node from "./node.ts"
import * as Rejections from "./rejections.ts"
import * as Routing from "./routing.ts"

export type { Address, Settings, TlsSettings } from "./node.ts"

export interface Transport {
  readonly nodeId: NodeId
  readonly session: string
  readonly address: Node.Address
  readonly stats: Effect.Effect<TransportStats>
  readonly peers: Effect.Effect<ReadonlyArray<PeerDiagnostics>>
}

/**
 * Builds the runtime, the membership service and the transport diagnostics in
 * the current scope; `external` is `TcpRuntime.ExternalMembership`.
 */
export const make = Effect.fnUntraced(function*(
  settings: Node.Settings,
  external: Stream.Stream<ReadonlyMap<NodeId, Node.Address>> | undefined
) {
  const layerScope = yield* Scope.Scope
  const session = randomBytes(8).toString("hex")
  const events = yield* makeSource
  const tasks = yield* FiberSet.make()
  // Made before the listener, so that they close after it (finalizers run in reverse order).
  const dialers = yield* FiberMap.make<string>()
  /** Dialed connections run here: closed after the graceful leave, which needs them to send `Leave`. */
  const dialedScope = yield* Scope.fork(layerScope)

  // Accepted connections have Nagle's algorithm off, as dialed ones (noDelay): see listener.ts.
  const tls = settings.tls
  const server = yield* Listener.listen({
    host: settings.host,
    port: settings.port,
    tls: tls === undefined ? undefined : {
      cert: Node.pem(tls.cert),
      key: Node.pem(Redacted.value(tls.key)),
      ...(tls.ca === undefined ? {} : { ca: Node.pem(tls.ca) }),
      requestCert: tls.mutual,
      rejectUnauthorized: tls.mutual
    }
  })
  const metricContext = MetricSeries.labelled(yield* Effect.context<never>(), { node: settings.nodeId })
  const counters = MetricSeries.counters(Metrics.transport, metricContext)
  const node = Node.make({
    settings,
    session,
    address: { host: settings.advertiseHost, port: server.port },
    events,
    tasks,
    counters: counters.values,
    metricContext
  })
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      counters.remove()
      for (const peer of node.peers.values()) peer.queueGauge.remove()
    })
  )

  const routing = Routing.make(node)
  const dialer = Dialer.make(node, {
    dialers,
    dialedScope,
    bothDial: external !== undefined,
    // `connections` is defined below: dialing needs connections, whose registration dials.
    run: (socket, established, remote) => connections.run(socket, "dialer", established, remote)
  })
  const membership = yield* Membership.make(node, {
    external: external !== undefined,
    dialer,
    onDown: routing.failPendingTo
  })
  const handshake = Handshake.make(node, membership)
  const gossip = Gossip.make(node, membership)
  const heartbeat = Heartbeat.make(node, membership, gossip)
  const healthGauge = MetricSeries.gauge(Metrics.localHealth, metricContext, heartbeat.healthScore)
  yield* Effect.addFinalizer(() => Effect.sync(() => healthGauge.remove()))
  const rejections = yield* Rejections.make({ interval: settings.rejectionLogInterval, annotate: node.annotate })
  const connections = Connection.make(node, { handshake, membership, heartbeat, gossip, routing, dialer, rejections })

  // ---- start ----------------------------------------------------------------------------------
  yield* server.serve(connections.accept)
  yield* heartbeat.start
  yield* dialer.startSeeds
  if (external !== undefined) yield* membership.follow(external).pipe(Effect.forkIn(layerScope))

  // Graceful leave: runs first when the scope closes (finalizers run in reverse order).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      node.closing = true
      const written: Array<Deferred.Deferred<void>> = []
      const frame = Node.encode(node, { _tag: "Leave" })
      if (Result.isSuccess(frame)) {
        for (const peer of node.peers.values()) {
          if (peer.active === undefined) continue
          const done = Deferred.makeUnsafe<void>()
          node.counters.membershipBytesSent += frame.success.length
          peer.outbound.offer(frame.success, undefined, done)
          written.push(done)
        }
      }
      const conns = [...node.peers.values()].flatMap((p) => [...p.conns])
      yield* Effect.gen(function*() {
        yield* Effect.forEach(written, Deferred.await, { discard: true })
        // Half-close every connection, then wait for the peers to close theirs.
        for (const conn of conns) yield* Deferred.succeed(conn.retire, undefined)
        yield* Effect.forEach(conns, (c) => Deferred.await(c.ended), { discard: true })
      }).pipe(Effect.timeoutOrElse({ duration: settings.leaveTimeout, orElse: () => Effect.void }))
      for (const conn of conns) Deferred.doneUnsafe(conn.close, Effect.void)
      routing.failAll()
    })
  )

  yield* Effect.logInfo("listening").pipe(
    Effect.annotateLogs({ address: Node.addressKey(node.address), session, tls: tls !== undefined }),
    node.annotate
  )

  // ---- services -------------------------------------------------------------------------------
  const runtime: ActorRuntime["Service"] = {
    nodeId: node.self,
    syncProtocol: settings.syncProtocol,
    // Negotiated in the handshake: the highest protocol both sides listed (1 for a node not connected).
    peerProtocol: (peer) => node.peers.get(peer)?.syncProtocol ?? 1,
    spawn: (options) => spawnActor(options.mailbox === undefined ? { ...options, mailbox: settings.mailbox } : options),
    every,
    after,
    serve: routing.serve,
    joinGroup: membership.joinGroup,
    leaveGroup: membership.leaveGroup,
    members: (group) => Effect.sync(() => membership.members(group)),
    groupJoins: membership.groupJoins,
    broadcast: (group, payload, supersede, trace) =>
      Effect.suspend(() => routing.broadcast(membership.members(group), payload, supersede, trace)),
    send: routing.send,
    request: routing.request
  }

  const transport: Transport = {
    nodeId: node.self,
    session,
    address: node.address,
    stats: Effect.sync(() => ({ ...node.counters })),
    peers: Effect.map(Node.monotonicMillis, (now) =>
      [...node.peers.values()].map((peer) => ({
        node: peer.node,
        session: peer.session,
        address: peer.address,
        connected: peer.active !== undefined,
        connections: peer.conns.size,
        groups: [...peer.groups],
        silenceMillis: peer.detector.silence(now),
        phi: peer.detector.phi(now),
        unreachable: peer.unreachable,
        outbound: peer.outbound.stats()
      })))
  }

  return {
    runtime,
    events: events.service as ClusterEvents["Service"],
    transport,
    heartbeatMillis: Duration.toMillis(settings.heartbeatInterval)
  }
})

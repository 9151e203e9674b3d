/**
 * Dialing and reconnecting. One dial loop per node this node is to dial (the
 * smaller id dials the nodes it learns of; with external membership both
 * sides dial every listed node) keeps a connection to it while its address is
 * known, reconnecting with the `reconnect` schedule; when the schedule gives
 * up, the address is forgotten until gossip or the node itself brings it
 * back. One seed loop per seed address keeps a connection to it forever,
 * pausing between runs of the schedule: seeds are how a restarted node finds
 * the cluster again.
 *
 * Lives here: opening a TCP or TLS socket, one dial attempt up to the end of
 * the handshake, and both loops. The connection itself runs in the dialed
 * connections' scope, which closes after the graceful leave has used them.
 * @internal
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { Deferred, Effect, Fiber, FiberMap, Redacted, Result, type Scope } from "effect"
import type * as Socket from "effect/socket/Socket"
import type { NodeId } from "../../NodeId.ts"
import { type Address, addressKey, type ConnectionFailed, fail, type Node, pem } from "./node.ts"

export interface Dialer {
  /** Keeps a connection to a node learned from gossip or listed, while its address is known. */
  readonly ensure: (node: NodeId) => Effect.Effect<void>
  /** Stops dialing a node. */
  readonly stop: (node: NodeId) => Effect.Effect<void>
  /** Starts one loop per seed. */
  readonly startSeeds: Effect.Effect<void>
}

export const make = (
  node: Node,
  options: {
    /** The dial loops, one per node or seed. */
    readonly dialers: FiberMap.FiberMap<string>
    /** Where dialed connections run. */
    readonly dialedScope: Scope.Scope
    /** With external membership both sides dial: a dial loop stops retrying once the other side's connection is up. */
    readonly bothDial: boolean
    /** Runs a dialed connection; `established` is completed when its handshake succeeds or fails. */
    readonly run: (
      socket: Socket.Socket,
      established: Deferred.Deferred<NodeId, ConnectionFailed>,
      remote: string
    ) => Effect.Effect<void, ConnectionFailed>
  }
): Dialer => {
  const { counters, peers, addresses, self, settings } = node
  const { dialers } = options
  const tls = settings.tls
  /** Which node answered at each seed address. */
  const seedNodes = new Map<string, NodeId>()

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
  const dialOnce = Effect.fnUntraced(function*(address: Address) {
    if (node.closing) return yield* fail("shutdown", "node is closing")
    counters.connectionsDialed++
    const established = yield* Deferred.make<NodeId, ConnectionFailed>()
    const socket = yield* openSocket(address)
    const fiber: Fiber.Fiber<void> = yield* options.run(socket, established, addressKey(address)).pipe(
      Effect.ignore,
      Effect.forkIn(options.dialedScope)
    )
    const peer = yield* Deferred.await(established).pipe(
      Effect.tapError((e) =>
        Effect.sync(() => {
          if (e.reason === "closed") counters.dialFailures++
        })
      )
    )
    return { node: peer, fiber }
  })

  const connectedTo = (other: NodeId | undefined) => other !== undefined && peers.get(other)?.active !== undefined

  const dialLoop = Effect.fnUntraced(function*(other: NodeId) {
    while (!node.closing) {
      if (connectedTo(other)) {
        yield* Effect.sleep(settings.heartbeatInterval)
        continue
      }
      const address = addresses.get(other)
      if (address === undefined) return
      const connectedMeanwhile = () => options.bothDial && connectedTo(other)
      const attempt = yield* Effect.suspend(() =>
        connectedMeanwhile() ? fail("closed", "the peer's connection is up") : dialOnce(address)
      ).pipe(
        Effect.retry({
          schedule: settings.reconnect,
          while: (e) => e.reason !== "self" && !node.closing && !connectedMeanwhile()
        }),
        Effect.result
      )
      if (Result.isFailure(attempt)) {
        if (connectedMeanwhile()) continue
        // The schedule gave up: forget the address (gossip or the node's own dialing brings it back).
        if (!connectedTo(other) && peers.get(other) === undefined) addresses.delete(other)
        return
      }
      yield* Fiber.await(attempt.success.fiber)
    }
  })

  const seedLoop = Effect.fnUntraced(function*(seed: Address) {
    const key = addressKey(seed)
    if (key === addressKey(node.address)) return
    while (!node.closing) {
      if (seedNodes.get(key) === self) return
      if (connectedTo(seedNodes.get(key))) {
        yield* Effect.sleep(settings.heartbeatInterval)
        continue
      }
      const attempt = yield* dialOnce(seed).pipe(
        Effect.retry({ schedule: settings.reconnect, while: (e) => e.reason !== "self" && !node.closing }),
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

  return {
    ensure: (other) => FiberMap.run(dialers, `node:${other}`, dialLoop(other), { onlyIfMissing: true }).pipe(Effect.asVoid),
    stop: (other) => FiberMap.remove(dialers, `node:${other}`),
    startSeeds: Effect.gen(function*() {
      for (const seed of settings.seeds) {
        yield* FiberMap.run(dialers, `seed:${addressKey(seed)}`, seedLoop(seed))
      }
    })
  }
}

/**
 * The transport's TCP (or TLS) listener: accepts connections and runs a
 * handler for each as a `Socket`, and owns every connection it accepted.
 *
 * When its scope closes it stops accepting, destroys every connection still
 * open (whether or not its handler had started: one accepted in the same
 * instant as the close included), then waits for the server to close. A
 * listener that only destroyed the connections its handlers had picked up
 * could wait forever for one accepted while it was stopping.
 * @internal
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { Deferred, Effect, FiberSet, type Scope } from "effect"
import type * as Socket from "effect/socket/Socket"
import * as Net from "node:net"
import * as Tls from "node:tls"

/** Where and how to listen. */
export interface ListenOptions {
  readonly host: string
  readonly port: number
  /** TLS server options; plain TCP without them. */
  readonly tls?: Tls.TlsOptions | undefined
}

/** Where an accepted connection comes from. */
export interface Remote {
  readonly host: string
  readonly port: number
}

/** A listening server. */
export interface Listener {
  /** The port actually bound (differs from the requested one when that was 0). */
  readonly port: number
  /**
   * Starts handling connections: every accepted connection runs `handler`
   * (in a fiber of the listener's scope, interrupted when it closes).
   * Connections accepted before wait, unread, until it is called.
   */
  readonly serve: (handler: (socket: Socket.Socket, remote: Remote) => Effect.Effect<void>) => Effect.Effect<void>
}

/** Listens; fails with the server's error when it cannot. */
export const listen = Effect.fnUntraced(function*(options: ListenOptions): Effect.fn.Return<Listener, Error, Scope.Scope> {
  const run = yield* FiberSet.makeRuntime<never, void, never>()
  const handler = Deferred.makeUnsafe<(socket: Socket.Socket, remote: Remote) => Effect.Effect<void>>()
  const open = new Set<Net.Socket>()
  let closing = false
  const accept = (conn: Net.Socket) => {
    if (closing) {
      conn.destroy()
      return
    }
    conn.pause()
    // Nagle off: a small frame goes out at once instead of waiting for the peer's delayed acknowledgement.
    conn.setNoDelay(true)
    open.add(conn)
    conn.once("close", () => open.delete(conn))
    // A connection reset before its handler reads is reported there; an error event must not go unheard.
    conn.on("error", () => {})
    const remote: Remote = { host: conn.remoteAddress ?? "unknown", port: conn.remotePort ?? 0 }
    run(
      NodeSocket.fromDuplex(Effect.succeed(conn), { tlsServer: options.tls !== undefined }).pipe(
        Effect.flatMap((socket) => Effect.flatMap(Deferred.await(handler), (handle) => handle(socket, remote))),
        Effect.ensuring(Effect.sync(() => conn.destroy()))
      )
    )
  }
  const server = options.tls === undefined ? Net.createServer() : Tls.createServer(options.tls)
  if (options.tls === undefined) server.on("connection", accept)
  else {
    server.on("secureConnection", accept)
    server.on("tlsClientError", (_error, socket) => socket.destroy())
  }
  yield* Effect.addFinalizer(() =>
    Effect.callback<void>((resume) => {
      closing = true
      for (const conn of open) conn.destroy()
      open.clear()
      server.close(() => resume(Effect.void))
    })
  )
  const port = yield* Effect.callback<number, Error>((resume) => {
    const onError = (error: Error) => resume(Effect.fail(error))
    server.once("error", onError)
    server.listen({ host: options.host, port: options.port }, () => {
      server.off("error", onError)
      // Errors after listening (a failed accept) concern one connection, not the server.
      server.on("error", () => {})
      const address = server.address()
      resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : options.port))
    })
  })
  return {
    port,
    serve: (handle) => Deferred.succeed(handler, handle).pipe(Effect.asVoid)
  }
})

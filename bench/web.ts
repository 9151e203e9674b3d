/**
 * W1: one node to 100 browser replica clients over WebSocket, against a
 * plain WebSocket broadcast of the same frames in the same run.
 *
 * The server side runs in a child process (forked from this file): either a
 * dstate node (TCP runtime, memory persistence, the operations server with
 * `WebReplicas` serving the bench's 200-byte `Small` state), or a plain `ws`
 * server that sends the same snapshot frames (the node's own encoding, from
 * the same codec) to every client. This process holds the 100 clients: the
 * library's `WebClient` (frames checked, accepted, values decoded, view maps
 * published) for dstate, and bare Node 24 `WebSocket`s for the baseline
 * (which read the generation from the envelope and nothing else).
 *
 * - W1: updates/s: `N` mutations back to back; the rate is `N` over the time
 *   from the first mutation until every client holds the last one. A slow
 *   client gets newer snapshots in place of older ones (superseding), so it
 *   may skip generations; the baseline sends every frame to every client.
 * - W1/frames: the same burst counted the other way, every message counts:
 *   snapshot frames received per second over all clients (dstate's clients
 *   receive fewer frames than mutations when frames were superseded).
 * - W1/p99: mutate-to-visible at a paced rate: from the mutation (or send)
 *   until a client holds that generation or a newer one, over every client
 *   and every generation.
 *
 * Run: `npm run bench -- web` or `node bench/web.ts`; with
 * `DSTATE_BENCH_PROFILE=<dir>` the server child writes a CPU profile there;
 * `DSTATE_BENCH_WEB_CLIENTS` and `DSTATE_BENCH_WEB_BURST` change the number
 * of clients (100) and the burst's mutations (20,000) for a closer look.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Deferred, Duration, Effect, Layer, Redacted, Result, Stream } from "effect"
import { NodeId, StatePersistence, StateRegistry, SyncStrategy } from "dstate"
import { HttpOperations } from "dstate/http"
import { TcpRuntime } from "dstate/node"
import { WebClient, WebReplicas } from "dstate/web"
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { WebSocketServer } from "ws"
import { encodeFrame, makeStateCodec } from "../src/internal/codec.ts"
import type { Row } from "./inprocess.ts"
import { Small } from "./states.ts"

const clients = Number(process.env.DSTATE_BENCH_WEB_CLIENTS ?? 100)
const burst = Number(process.env.DSTATE_BENCH_WEB_BURST ?? 20_000)
const pacedRate = 500
const pacedSeconds = 4
const key = "bench-web-key-0123456789abcdef"
const data = "x".repeat(180)

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on one machine. */
const wallNow = () => performance.timeOrigin + performance.now()

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]

// ---- the server child -----------------------------------------------------------------------------

type Command =
  | { readonly op: "burst"; readonly n: number }
  | { readonly op: "paced"; readonly n: number; readonly rate: number }
  | { readonly op: "stats" }

const send = (message: object) => process.send!(message)

/** Runs `n` updates at `rate` per second (`0`: back to back), each through `update(seq, sentAt)`. */
const runUpdates = (n: number, rate: number, update: (seq: number, sentAt: number) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const start = wallNow()
    const sentAt: Array<number> = new Array(n + 1)
    for (let seq = 1; seq <= n; seq++) {
      if (rate > 0) {
        const due = start + ((seq - 1) * 1000) / rate
        const wait = due - wallNow()
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
      }
      sentAt[seq] = wallNow()
      yield* update(seq, sentAt[seq])
    }
    return { start, sentAt }
  })

const serveCommands = (handle: (command: Command) => Effect.Effect<object>) =>
  Effect.callback<never>(() => {
    process.on("message", (command: Command) => {
      Effect.runFork(Effect.flatMap(handle(command), (reply) => Effect.sync(() => send({ ev: command.op, ...reply }))))
    })
  })

const nodeChild = Effect.gen(function*() {
  const registry = yield* StateRegistry.StateRegistry
  const handle = yield* registry.register(Small, { strategy: SyncStrategy.activePush() })
  const http = yield* HttpOperations.HttpOperations
  const web = yield* WebReplicas.WebReplicas
  const token = yield* web.issue({ states: "*", ttl: "1 hour" })
  send({ ev: "ready", url: `${http.url.replace("http", "ws")}/web`, token })
  const update = (seq: number, sentAt: number) => Effect.orDie(Effect.asVoid(handle.mutate(() => ({ seq, sentAt, data }))))
  return yield* serveCommands((command) => {
    switch (command.op) {
      case "burst":
      case "paced":
        return Effect.map(runUpdates(command.n, command.op === "burst" ? 0 : command.rate, update), (r) => r)
      case "stats":
        return Effect.map(web.stats, (stats) => ({ stats }))
    }
  })
}).pipe(
  Effect.provide(
    HttpOperations.layer().pipe(
      Layer.provideMerge(WebReplicas.layer({ key: Redacted.make(key), states: [Small] })),
      Layer.provideMerge(StateRegistry.layer),
      Layer.provideMerge(TcpRuntime.layer({ nodeId: NodeId.make("bench-web"), secret: Redacted.make("bench web secret 0123456789") })),
      Layer.provide(StatePersistence.layerMemory)
    )
  )
)

const plainChild = Effect.gen(function*() {
  const codec = makeStateCodec(Small)
  const frameOf = (seq: number, sentAt: number) =>
    Result.getOrThrow(encodeFrame({
      _tag: "FullSnapshot",
      stateName: Small.name,
      source: NodeId.make("bench-web"),
      generation: { incarnation: 1, age: seq },
      wireVersion: Small.wireVersion,
      createdAt: 0,
      modifiedAt: sentAt,
      payload: Result.getOrThrow(codec.encodeView({ seq, sentAt, data }))
    }, 1 << 20))
  const server = yield* Effect.acquireRelease(
    Effect.callback<WebSocketServer>((resume) => {
      const wss: WebSocketServer = new WebSocketServer({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed(wss)))
    }),
    (wss) => Effect.sync(() => wss.close())
  )
  const address = server.address() as { readonly port: number }
  send({ ev: "ready", url: `ws://127.0.0.1:${address.port}/`, token: "" })
  const update = (seq: number, sentAt: number) =>
    Effect.sync(() => {
      const frame = frameOf(seq, sentAt)
      for (const client of server.clients) client.send(frame)
    })
  return yield* serveCommands((command) => {
    switch (command.op) {
      case "burst":
      case "paced":
        return runUpdates(command.n, command.op === "burst" ? 0 : command.rate, update)
      case "stats":
        return Effect.succeed({ stats: {} })
    }
  })
})

// ---- the clients (this process) --------------------------------------------------------------------

interface Reply {
  readonly ev: string
  readonly [key: string]: unknown
}

const script = fileURLToPath(import.meta.url)

/** A server child and its replies. */
const startServer = (kind: "node" | "plain") =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const profile = process.env.DSTATE_BENCH_PROFILE
      const proc: ChildProcess = fork(script, ["child", kind], {
        execArgv: profile === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profile}`],
        stdio: ["ignore", "ignore", "inherit", "ipc"]
      })
      const waiting = new Map<string, (reply: Reply) => void>()
      proc.on("message", (reply: Reply) => {
        waiting.get(reply.ev)?.(reply)
        waiting.delete(reply.ev)
      })
      const next = (ev: string) =>
        Effect.callback<Reply>((resume) => {
          waiting.set(ev, (reply) => resume(Effect.succeed(reply)))
        }).pipe(Effect.timeoutOrElse({ duration: "120 seconds", orElse: () => Effect.die(new Error(`no ${ev} from the ${kind} child`)) }))
      const command = (message: Command) =>
        Effect.suspend(() => {
          const reply = next(message.op)
          proc.send(message)
          return reply
        })
      return { proc, next, command }
    }),
    ({ proc }) => Effect.sync(() => proc.kill("SIGINT"))
  )

/** What one client saw: when it first held each sequence number or a newer one. */
interface Seen {
  last: number
  readonly times: Array<number>
  frames: number
  reached: Deferred.Deferred<number> | undefined
  target: number
}

const newSeen = (): Seen => ({ last: 0, times: [], frames: 0, reached: undefined, target: Infinity })

const observe = (seen: Seen, seq: number, at: number) => {
  seen.frames++
  if (seq <= seen.last) return
  for (let k = seen.last + 1; k <= seq; k++) seen.times[k] = at
  seen.last = seq
  if (seq >= seen.target && seen.reached !== undefined) Deferred.doneUnsafe(seen.reached, Effect.succeed(at))
}

/** Runs `n` updates on the server (back to back, or at `rate`) and waits until every client holds the last. */
const measure = (
  server: Effect.Success<ReturnType<typeof startServer>>,
  seens: ReadonlyArray<Seen>,
  op: "burst" | "paced",
  n: number
) =>
  Effect.gen(function*() {
    for (const seen of seens) {
      seen.last = 0
      seen.times.length = 0
      seen.frames = 0
      seen.target = n
      seen.reached = Deferred.makeUnsafe<number>()
    }
    const reply = yield* server.command(op === "burst" ? { op, n } : { op, n, rate: pacedRate })
    const ends = yield* Effect.forEach(seens, (seen) => Deferred.await(seen.reached!))
    const start = reply.start as number
    const sentAt = reply.sentAt as ReadonlyArray<number>
    const end = Math.max(...ends)
    const latencies: Array<number> = []
    if (op === "paced") {
      for (const seen of seens) for (let k = 1; k <= n; k++) latencies.push(seen.times[k] - sentAt[k])
      latencies.sort((a, b) => a - b)
    }
    const frames = seens.reduce((sum, seen) => sum + seen.frames, 0)
    return { rate: n / ((end - start) / 1000), framesPerSecond: frames / ((end - start) / 1000), frames, latencies }
  })

const dstateRun = Effect.gen(function*() {
  const server = yield* startServer("node")
  const ready = yield* server.next("ready")
  const seens = Array.from({ length: clients }, newSeen)
  yield* Effect.forEach(seens, (seen) =>
    Effect.gen(function*() {
      const client = yield* WebClient.make({ url: String(ready.url), token: String(ready.token), states: [Small] })
      const replica = yield* client.replica(Small)
      yield* Effect.forkScoped(Stream.runForEach(replica.changes, (views) =>
        Effect.sync(() => {
          const at = wallNow()
          for (const view of views.values()) observe(seen, view.value.seq, at)
        })))
    }), { concurrency: 10, discard: true })
  const burstResult = yield* measure(server, seens, "burst", burst)
  const stats = (yield* server.command({ op: "stats" })).stats as WebReplicas.Stats
  const paced = yield* measure(server, seens, "paced", pacedRate * pacedSeconds)
  return { burst: burstResult, paced, superseded: stats.superseded }
})

const plainRun = Effect.gen(function*() {
  const server = yield* startServer("plain")
  const ready = yield* server.next("ready")
  const seens = Array.from({ length: clients }, newSeen)
  yield* Effect.forEach(seens, (seen) =>
    Effect.acquireRelease(
      Effect.callback<WebSocket>((resume) => {
        const ws = new WebSocket(String(ready.url))
        ws.binaryType = "arraybuffer"
        ws.onmessage = (event) => {
          const at = wallNow()
          const frame = new Uint8Array(event.data as ArrayBuffer)
          // The sequence number is the generation's age (the envelope's fixed offset past the two names).
          observe(seen, seqOf(frame), at)
        }
        ws.onopen = () => resume(Effect.succeed(ws))
      }),
      (ws) => Effect.sync(() => ws.close())
    ), { concurrency: 10, discard: true })
  const burstResult = yield* measure(server, seens, "burst", burst)
  const paced = yield* measure(server, seens, "paced", pacedRate * pacedSeconds)
  return { burst: burstResult, paced }
})

/** A frame's age, read from the envelope without decoding the payload (tag, two length-prefixed names, incarnation, age). */
const seqOf = (frame: Uint8Array): number => {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
  let pos = 9 + 1
  pos += 4 + view.getUint32(pos)
  pos += 4 + view.getUint32(pos)
  return view.getFloat64(pos + 8)
}

const row = (id: string, name: string, value: [number, string], baseline: [number, string], ratio: number, target: string, met: boolean): Row => ({
  id,
  name,
  value: value[0],
  unit: value[1],
  baseline: baseline[0],
  baselineName: baseline[1],
  ratio,
  target,
  met
})

/** The W1 rows. */
export const run: Effect.Effect<ReadonlyArray<Row>> = Effect.gen(function*() {
  const plain = yield* Effect.scoped(plainRun)
  const dstate = yield* Effect.scoped(dstateRun)
  const p99 = percentile(dstate.paced.latencies, 99)
  const plainP99 = percentile(plain.paced.latencies, 99)
  const p50 = percentile(dstate.paced.latencies, 50)
  return [
    row(
      "W1",
      `updates/s, 1 node to ${clients} WebSocket replica clients (${burst.toLocaleString("en-US")} mutations back to back, until every client holds the last)`,
      [dstate.burst.rate, "updates/s"],
      [plain.burst.rate, "plain ws broadcast of the same frames"],
      dstate.burst.rate / plain.burst.rate,
      ">= 0.5",
      dstate.burst.rate / plain.burst.rate >= 0.5
    ),
    row(
      "W1/frames",
      `frames received per second over the ${clients} clients in W1 (every message counts: ${dstate.superseded.toLocaleString("en-US")} snapshots superseded in the node's queues, ${dstate.burst.frames.toLocaleString("en-US")} received)`,
      [dstate.burst.framesPerSecond, "frames/s"],
      [plain.burst.framesPerSecond, `plain ws broadcast (${plain.burst.frames.toLocaleString("en-US")} received)`],
      dstate.burst.framesPerSecond / plain.burst.framesPerSecond,
      "(info)",
      true
    ),
    row(
      "W1/p99",
      `mutate-to-visible p99 at ${pacedRate} mutations/s to ${clients} clients (p50 ${p50.toFixed(2)} ms)`,
      [p99, "ms"],
      [plainP99, `plain ws broadcast (p50 ${percentile(plain.paced.latencies, 50).toFixed(2)} ms)`],
      p99 / plainP99,
      "<= 50 ms",
      p99 <= 50
    )
  ]
}).pipe(Effect.orDie)

if (process.argv[2] === "child") {
  NodeRuntime.runMain(Effect.scoped(process.argv[3] === "plain" ? plainChild : nodeChild) as Effect.Effect<never>)
} else if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  Effect.runPromise(run).then((rows) => console.table(rows))
}

/**
 * Child process of bench/tcp.ts: one benchmark node in its own OS process,
 * driven by its parent over the IPC channel (`process.send` / `"message"`).
 *
 * `node bench/tcpNode.ts '<config JSON>'` with `config.kind`:
 *
 * - `"dstate"`: a dstate node (TCP runtime on loopback, the registry, one
 *   state with active push). `config.view` is `"small"` (a 200-byte view with
 *   its send time) or `"large"` (a byte blob).
 * - `"raw"`: the same framed payloads over plain `node:net` sockets with the
 *   same socket options as the TCP runtime, no dstate. A payload flagged as a
 *   request is answered with a 12-byte acknowledgement frame (the round trip
 *   A1 compares awaited mutations with).
 * - `"redis"`: the same payloads through Redis pub/sub (a minimal RESP client
 *   over `node:net`).
 *
 * Times are `performance.timeOrigin + performance.now()` (sub-millisecond,
 * comparable between processes of one machine). Receivers record, for every
 * update they see, its arrival time and its latency from the sender's clock:
 * a dstate peer when it publishes the view map holding the update (from then
 * on a query sees it; the registry's observer is told synchronously), a raw
 * or Redis receiver when the frame has been read.
 */
import { Effect, Layer, Queue, Redacted, Result } from "effect"
import { NodeId, StateRegistry, SyncStrategy } from "dstate"
import { TcpRuntime } from "dstate/node"
import * as Net from "node:net"
import * as Protocol from "../src/node/internal/protocol.ts"
import { Feed, Large, Small } from "./states.ts"

const config = JSON.parse(process.argv[2] ?? "{}") as {
  readonly kind: "dstate" | "raw" | "redis" | "slow" | "flood"
  readonly id: string
  readonly seeds?: ReadonlyArray<string>
  readonly owner?: string
  readonly view?: "small" | "large" | "delta"
  readonly redisPort?: number
  /** kind "slow": the port of the node to join as a peer that never reads. */
  readonly port?: number
}

type Command = { readonly cmd: string; readonly [key: string]: unknown }

const benchSecret = "dstate-benchmark-secret-0123456789"
const now = () => performance.timeOrigin + performance.now()
let meter: ReturnType<typeof rssMeter> | undefined
/** The sender's sequence number, continued across commands so that receivers see it grow. */
let seq = 0
const send = (message: Record<string, unknown>) => process.send?.(message)
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined)
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** What a receiver saw: arrival times and latencies of every update, in order. */
const seen = { arrivals: [] as Array<number>, latencies: [] as Array<number>, last: -1, lastAt: 0 }
const record = (seq: number, sentAt: number) => {
  if (seq <= seen.last) return
  const at = now()
  seen.last = seq
  seen.lastAt = at
  seen.arrivals.push(at)
  seen.latencies.push(at - sentAt)
}
const resetSeen = () => {
  seen.arrivals = []
  seen.latencies = []
}
const report = () => ({
  last: seen.last,
  count: seen.arrivals.length,
  first: seen.arrivals[0] ?? 0,
  lastAt: seen.arrivals[seen.arrivals.length - 1] ?? 0,
  latencies: seen.latencies
})
const waitSeen = async (seq: number, timeoutMs: number) => {
  const deadline = now() + timeoutMs
  while (seen.last < seq && now() < deadline) await sleep(1)
  return seen.last >= seq
}

/** Peak RSS while a transfer runs: sampled every millisecond, and the kernel's high-water mark. */
const rssMeter = (): { readonly baseline: number; readonly stop: () => Record<string, number> } => {
  gc()
  gc()
  const baseline = process.memoryUsage.rss()
  const maxBefore = process.resourceUsage().maxRSS * 1024
  let peak = baseline
  const timer = setInterval(() => {
    const rss = process.memoryUsage.rss()
    if (rss > peak) peak = rss
  }, 1)
  return {
    baseline,
    stop: () => {
      clearInterval(timer)
      const rss = process.memoryUsage.rss()
      if (rss > peak) peak = rss
      const maxAfter = process.resourceUsage().maxRSS * 1024
      // The high-water mark catches peaks between samples, once it rose above anything before.
      return { baseline, peak: maxAfter > maxBefore ? Math.max(peak, maxAfter) : peak, sampledPeak: peak, maxAfter }
    }
  }
}

/**
 * Sends `rate * seconds` updates at `rate` per second: each one waits on a
 * timer for its slot (millisecond resolution, no spinning) and a late one
 * goes at once, so the average rate holds.
 */
const paced = async (rate: number, seconds: number, step: (i: number) => Promise<void> | void) => {
  const start = now()
  const total = Math.round(rate * seconds)
  for (let i = 1; i <= total; i++) {
    const wait = start + (i * 1000) / rate - now()
    if (wait >= 1) await sleep(Math.floor(wait))
    await step(i)
  }
  return total
}

// ---- framed payloads (raw and redis) --------------------------------------------------------------

/** A payload of `size` bytes: u32 length (size - 4), u32 seq, f64 sentAt, filler (its first byte `ackFlag` for a request). */
const payload = (size: number, seq: number, request = false): Uint8Array => {
  const bytes = new Uint8Array(size)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, size - 4)
  view.setUint32(4, seq)
  view.setFloat64(8, now())
  bytes.fill(120, 16)
  if (request) bytes[16] = ackFlag
  return bytes
}

/** Marks a payload that asks its receiver for an acknowledgement. */
const ackFlag = 0xaa

/** An acknowledgement frame: u32 length (8), u32 seq, u32 zero. */
const ackFrame = (seq: number): Uint8Array => {
  const bytes = new Uint8Array(12)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, 8)
  view.setUint32(4, seq)
  return bytes
}

/** Cuts a byte stream into u32-length-prefixed frames; calls `onFrame` with each complete one. */
const framer = (onFrame: (frame: Uint8Array) => void) => {
  let chunks: Array<Buffer> = []
  let buffered = 0
  let expected = -1
  return (chunk: Buffer) => {
    chunks.push(chunk)
    buffered += chunk.length
    while (true) {
      if (expected < 0) {
        if (buffered < 4) return
        const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
        chunks = [head]
        expected = head.readUInt32BE(0) + 4
      }
      if (buffered < expected) return
      const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
      onFrame(all.subarray(0, expected))
      const rest = all.subarray(expected)
      chunks = rest.length > 0 ? [rest] : []
      buffered = rest.length
      expected = -1
    }
  }
}

const onPayload = (frame: Uint8Array) => {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
  record(view.getUint32(4), view.getFloat64(8))
}

/** Writes with the stream's backpressure: waits for `drain` when the buffer is full. */
const write = (socket: Net.Socket, bytes: Uint8Array) =>
  socket.write(bytes) ? Promise.resolve() : new Promise<void>((resolve) => socket.once("drain", () => resolve()))

const connect = (port: number) =>
  new Promise<Net.Socket>((resolve, reject) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, noDelay: true }, () => resolve(socket))
    socket.once("error", reject)
  })

// ---- raw sockets ----------------------------------------------------------------------------------

const raw = async () => {
  const sockets: Array<Net.Socket> = []
  const server = Net.createServer({ noDelay: true }, (socket) =>
    socket.on(
      "data",
      framer((frame) => {
        onPayload(frame)
        // A request: acknowledge once it has been read (as an awaited mutation's peer does once applied).
        if (frame.length > 16 && frame[16] === ackFlag) socket.write(ackFrame(new DataView(frame.buffer, frame.byteOffset).getUint32(4)))
      })
    ))
  /** Acknowledgements heard, by sequence number: the first one of a round resolves its waiter. */
  let awaiting: { readonly seq: number; readonly resolve: () => void } | undefined
  const onAck = (frame: Uint8Array) => {
    const acked = new DataView(frame.buffer, frame.byteOffset).getUint32(4)
    if (awaiting !== undefined && acked === awaiting.seq) {
      const { resolve } = awaiting
      awaiting = undefined
      resolve()
    }
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  send({ ev: "listening", port: (server.address() as Net.AddressInfo).port })
  const fanOut = (bytes: Uint8Array) => Promise.all(sockets.map((s) => write(s, bytes))).then(() => undefined)
  return async (command: Command) => {
    switch (command.cmd) {
      case "connect":
        for (const port of command.ports as Array<number>) {
          const socket = await connect(port)
          socket.on("data", framer(onAck))
          sockets.push(socket)
        }
        return {}
      case "roundtrips": {
        // Request/acknowledge round trips, one at a time: the request to every peer, done at the first acknowledgement.
        const size = command.size as number
        const latencies: Array<number> = []
        const total = (command.warmup as number) + (command.count as number)
        for (let i = 0; i < total; i++) {
          const n = ++seq
          const acked = new Promise<void>((resolve) => (awaiting = { seq: n, resolve }))
          const t = now()
          await fanOut(payload(size, n, true))
          await acked
          if (i >= (command.warmup as number)) latencies.push(now() - t)
        }
        return { latencies }
      }
      case "burst": {
        const size = command.size as number
        const t0 = now()
        const from = seq
        while (now() - t0 < (command.seconds as number) * 1000) await fanOut(payload(size, ++seq))
        return { t0, count: seq - from, final: seq }
      }
      case "paced": {
        const size = command.size as number
        const count = await paced(command.rate as number, command.seconds as number, () => fanOut(payload(size, ++seq)))
        return { count, final: seq }
      }
      case "large": {
        // One payload of `size` bytes (built before the meter starts, like the view a node holds).
        const bytes = payload(command.size as number, ++seq)
        meter = rssMeter()
        new DataView(bytes.buffer).setFloat64(8, now())
        await fanOut(bytes)
        return { final: seq }
      }
      default:
        return undefined
    }
  }
}

// ---- redis pub/sub --------------------------------------------------------------------------------

const CRLF = Buffer.from("\r\n")

/** A minimal incremental RESP2 reader: calls `onValue` with each complete top-level value. */
const respReader = (onValue: (value: unknown) => void) => {
  let buffer: Buffer = Buffer.alloc(0)
  const parse = (at: number): { readonly value: unknown; readonly end: number } | undefined => {
    if (at >= buffer.length) return undefined
    const lineEnd = buffer.indexOf(CRLF, at)
    if (lineEnd < 0) return undefined
    const type = buffer[at]
    const line = buffer.toString("latin1", at + 1, lineEnd)
    switch (type) {
      case 43: // +
      case 45: // -
        return { value: line, end: lineEnd + 2 }
      case 58: // :
        return { value: Number(line), end: lineEnd + 2 }
      case 36: { // $
        const n = Number(line)
        if (n < 0) return { value: null, end: lineEnd + 2 }
        if (buffer.length < lineEnd + 2 + n + 2) return undefined
        return { value: buffer.subarray(lineEnd + 2, lineEnd + 2 + n), end: lineEnd + 2 + n + 2 }
      }
      case 42: { // *
        const n = Number(line)
        const items: Array<unknown> = []
        let end = lineEnd + 2
        for (let i = 0; i < n; i++) {
          const item = parse(end)
          if (item === undefined) return undefined
          items.push(item.value)
          end = item.end
        }
        return { value: items, end }
      }
      default:
        throw new Error(`unexpected RESP type ${type}`)
    }
  }
  return (chunk: Buffer) => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
    let at = 0
    while (true) {
      const parsed = parse(at)
      if (parsed === undefined) break
      at = parsed.end
      onValue(parsed.value)
    }
    buffer = buffer.subarray(at)
  }
}

const respCommand = (...args: Array<string | Uint8Array>): Buffer => {
  const parts: Array<Buffer> = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const bytes = typeof arg === "string" ? Buffer.from(arg) : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength)
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF)
  }
  return Buffer.concat(parts)
}

const redis = async () => {
  const socket = await connect(config.redisPort!)
  let replies = 0
  let onReply: (() => void) | undefined
  socket.on("data", respReader((value) => {
    if (Array.isArray(value) && value[0] instanceof Uint8Array && value[0].toString() === "message") {
      onPayload(value[2] as Uint8Array)
      return
    }
    replies++
    onReply?.()
  }))
  const roundTrip = (bytes: Buffer) =>
    new Promise<void>((resolve) => {
      const target = replies + 1
      onReply = () => {
        if (replies >= target) resolve()
      }
      socket.write(bytes)
    })
  send({ ev: "listening", port: 0 })
  /** Keeps at most `window` PUBLISH commands unanswered (redis pipelining). */
  let sent = 0
  const publish = async (bytes: Uint8Array, window: number) => {
    sent++
    const ok = socket.write(respCommand("PUBLISH", "bench", bytes))
    if (!ok) await new Promise<void>((resolve) => socket.once("drain", () => resolve()))
    if (sent - replies > window) {
      await new Promise<void>((resolve) => {
        onReply = () => {
          if (sent - replies <= window / 2) resolve()
        }
      })
    }
  }
  return async (command: Command) => {
    switch (command.cmd) {
      case "subscribe":
        await roundTrip(respCommand("SUBSCRIBE", "bench"))
        return {}
      case "burst": {
        const size = command.size as number
        const t0 = now()
        const from = seq
        while (now() - t0 < (command.seconds as number) * 1000) await publish(payload(size, ++seq), 256)
        return { t0, count: seq - from, final: seq }
      }
      case "paced": {
        const size = command.size as number
        const count = await paced(command.rate as number, command.seconds as number, () => publish(payload(size, ++seq), 256))
        return { count, final: seq }
      }
      default:
        return undefined
    }
  }
}

// ---- dstate ---------------------------------------------------------------------------------------

const dstate = Effect.gen(function*() {
  const transport = yield* TcpRuntime.TcpTransport
  const small = yield* StateRegistry.register(Small, { strategy: SyncStrategy.activePush(), persist: false })
  const feed = yield* StateRegistry.register(Feed, { strategy: SyncStrategy.activePush(), persist: false })
  const large = yield* StateRegistry.register(Large, { strategy: SyncStrategy.activePush(), persist: false })
  const handle = config.view === "large" ? large : small
  send({ ev: "listening", port: transport.address.port })
  const run = (command: Command): Effect.Effect<Record<string, unknown> | undefined, unknown> => {
    switch (command.cmd) {
      case "ready":
        return Effect.gen(function*() {
          const expected = command.nodes as number
          while ((yield* handle.snapshot).size < expected) yield* Effect.sleep(5)
          return {}
        })
      case "burst":
        return Effect.gen(function*() {
          const t0 = now()
          const from = seq
          while (now() - t0 < (command.seconds as number) * 1000) {
            const i = ++seq
            yield* small.mutate((s) => ({ seq: i, sentAt: now(), data: s.data }))
          }
          return { t0, count: seq - from, final: seq }
        })
      case "deltaBurst":
        // Deltas as fast as the owner goes, yielding after each so that every one is sent on its own.
        return Effect.gen(function*() {
          const t0 = now()
          const from = seq
          while (now() - t0 < (command.seconds as number) * 1000) {
            const i = ++seq
            yield* feed.mutateWithDelta(() => {
              const next = { seq: i, sentAt: now() }
              return { state: next, change: next }
            })
            if ((i & 63) === 0) yield* Effect.yieldNow
          }
          return { t0, count: seq - from, final: seq, peers: yield* transport.peers }
        })
      case "mem":
        return Effect.sync(() => {
          gc()
          gc()
          const usage = process.memoryUsage()
          return { rss: usage.rss, heapTotal: usage.heapTotal, heapUsed: usage.heapUsed, external: usage.external, arrayBuffers: usage.arrayBuffers }
        })
      case "stats":
        return Effect.map(transport.stats, (stats) => ({ stats }))
      case "feedMetrics":
        return Effect.map(feed.metrics, (metrics) => ({ metrics }))
      case "meter":
        return Effect.sync(() => {
          meter = rssMeter()
          return {}
        })
      case "paced":
        return Effect.promise(() =>
          paced(command.rate as number, command.seconds as number, () => {
            const i = ++seq
            return Effect.runPromise(small.mutate((s) => ({ seq: i, sentAt: now(), data: s.data })).pipe(Effect.asVoid))
          })
        ).pipe(Effect.map((count) => ({ count, final: seq })))
      case "awaited":
        // Awaited mutations one at a time: each returns once `peers` peers applied it.
        return Effect.gen(function*() {
          const latencies: Array<number> = []
          const total = (command.warmup as number) + (command.count as number)
          const options = { await: { peers: command.peers as "majority", timeout: "5 seconds" } } as const
          for (let k = 0; k < total; k++) {
            const i = ++seq
            const t = now()
            yield* small.mutate((s) => ({ seq: i, sentAt: now(), data: s.data }), options)
            if (k >= (command.warmup as number)) latencies.push(now() - t)
          }
          return { latencies }
        })
      case "large":
        return Effect.gen(function*() {
          // The new view's blob exists before the meter starts: the meter sees what sending it costs.
          const blob = new Uint8Array(command.size as number).fill(7)
          meter = rssMeter()
          const i = ++seq
          yield* large.mutate(() => ({ seq: i, sentAt: now(), blob }))
          return { final: i }
        })
      default:
        return Effect.succeed(undefined)
    }
  }
  return run
})

// ---- a member that never reads --------------------------------------------------------------------

/**
 * A trusted peer that never reads: it completes the dialer's side of the
 * handshake with `config.port`, joins the groups of every bench state, then
 * stops reading its socket (the node's writes to it stall once the kernel's
 * buffers are full) while it keeps sending heartbeats, so that it stays a
 * member and its outbound queue on the node stays at its cap.
 */
const slow = async () => {
  const key = Protocol.secretBytes(benchSecret)
  const frame = (message: Protocol.TransportMessage) => Result.getOrThrow(Protocol.encode(message, 1 << 20))
  const socket = await connect(config.port!)
  const reader = new Protocol.FrameReader(64 * 1024 * 1024)
  const messages: Array<Protocol.TransportMessage> = []
  let onMessage: (() => void) | undefined
  socket.on("data", (chunk) => {
    reader.push(new Uint8Array(chunk))
    while (true) {
      const next = reader.next()
      if (Result.isFailure(next) || next.success === undefined) break
      messages.push(Result.getOrThrow(Protocol.decode(next.success)))
    }
    onMessage?.()
  })
  const nth = (i: number) =>
    new Promise<Protocol.TransportMessage>((resolve) => {
      const check = () => {
        if (messages.length > i) resolve(messages[i])
      }
      onMessage = check
      check()
    })
  const nonce = new Uint8Array(32).fill(9)
  socket.write(frame({ _tag: "Hello", node: NodeId.make(config.id), session: `slow-${process.pid}`, nonce }))
  const challenge = await nth(0)
  if (challenge._tag !== "Challenge") throw new Error(`expected a Challenge, got ${challenge._tag}`)
  const groups = [Small.name, Large.name, Feed.name].map((name) => `dstate/state/${name}`)
  const transcript: Protocol.Transcript = {
    dialer: config.id,
    acceptor: challenge.node,
    dialerSession: `slow-${process.pid}`,
    acceptorSession: challenge.session,
    dialerNonce: nonce,
    acceptorNonce: challenge.nonce
  }
  socket.write(frame({
    _tag: "Auth",
    proof: Protocol.proof(key, "dialer", transcript),
    // It announces what a current node reads, so that it gets the frames a stalled node would get.
    info: {
      host: "127.0.0.1",
      port: 1,
      groupsVersion: 1,
      groups,
      members: [],
      features: [Protocol.traceContextFeature, Protocol.bareDeliverFeature, Protocol.syncProtocolFeature(2)]
    }
  }))
  const welcome = await nth(1)
  if (welcome._tag !== "Welcome") throw new Error(`expected a Welcome, got ${welcome._tag}`)
  // From here on nothing is read.
  socket.pause()
  socket.removeAllListeners("data")
  const heartbeat = frame({ _tag: "Heartbeat", groupsVersion: 1, groups, members: [] })
  const timer = setInterval(() => socket.write(heartbeat), 200)
  send({ ev: "listening", port: 0 })
  return async (command: Command) => {
    switch (command.cmd) {
      case "close":
        clearInterval(timer)
        socket.destroy()
        return {}
      default:
        return undefined
    }
  }
}

// ---- garbage connections --------------------------------------------------------------------------

/**
 * An attacker without the secret: `flood` opens `rate` connections per
 * second to `port` for `seconds`, spread over 10 source addresses
 * (127.0.0.2 to 127.0.0.11), each writing 64 bytes that are not a frame and
 * closing once the node closes it (or after a second). Returns how many it
 * opened and how many the node closed first.
 */
const flood = async () => {
  const garbage = new Uint8Array(64).fill(0xff)
  send({ ev: "listening", port: 0 })
  return async (command: Command) => {
    if (command.cmd !== "flood") return undefined
    const rate = command.rate as number
    const seconds = command.seconds as number
    const sources = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 2}`)
    let opened = 0
    let closedByNode = 0
    let open = 0
    const t0 = now()
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.floor(((now() - t0) / 1000) * rate) - opened
        for (let i = 0; i < due; i++) {
          opened++
          open++
          const socket = Net.createConnection({ host: "127.0.0.1", port: command.port as number, localAddress: sources[opened % sources.length] })
          const timer = setTimeout(() => socket.destroy(), 1000)
          socket.on("connect", () => socket.write(garbage))
          socket.on("end", () => closedByNode++)
          socket.on("error", () => undefined)
          socket.on("close", () => {
            clearTimeout(timer)
            open--
          })
        }
        if (now() - t0 >= seconds * 1000) {
          clearInterval(tick)
          resolve()
        }
      }, 5)
    })
    while (open > 0) await sleep(10)
    return { opened, closedByNode, seconds: (now() - t0) / 1000 }
  }
}

// ---- command loop ---------------------------------------------------------------------------------

const common = async (command: Command): Promise<Record<string, unknown> | undefined> => {
  switch (command.cmd) {
    case "reset":
      resetSeen()
      return {}
    case "until":
      return { reached: await waitSeen(command.seq as number, command.timeoutMs as number), ...report() }
    case "rss": {
      const result = meter?.stop()
      meter = undefined
      return { rss: result }
    }
    case "watch": {
      // A large transfer: RSS from before it arrives until shortly after.
      const watching = rssMeter()
      const reached = await waitSeen(command.seq as number, command.timeoutMs as number)
      await sleep(50)
      return { reached, latency: seen.latencies[seen.latencies.length - 1] ?? 0, rss: watching.stop() }
    }
    default:
      return undefined
  }
}

const serve = (handler: (command: Command) => Promise<Record<string, unknown> | undefined>) => {
  const commands: Array<Command> = []
  let wake: (() => void) | undefined
  process.on("message", (command: Command) => {
    commands.push(command)
    wake?.()
  })
  process.on("disconnect", () => process.exit(0))
  const loop = async () => {
    while (true) {
      const command = commands.shift()
      if (command === undefined) {
        await new Promise<void>((resolve) => (wake = resolve))
        continue
      }
      if (command.cmd === "stop") {
        send({ ev: "stopped" })
        return
      }
      const reply = (await common(command)) ?? (await handler(command))
      send({ ev: command.cmd, ...(reply ?? { error: `unknown command ${command.cmd}` }) })
    }
  }
  return loop()
}

/**
 * "Visible" is the moment the peer publishes the view map that holds the update (a query sees it
 * from then on): the registry's observer is told synchronously. The owner has none.
 */
const owner = config.owner ?? config.id
const observer = {
  onViews: (stateName: string, _node: NodeId.NodeId, views: ReadonlyMap<NodeId.NodeId, { readonly value: unknown }>) => {
    if (stateName !== (config.view === "large" ? Large.name : config.view === "delta" ? Feed.name : Small.name)) return
    const view = views.get(NodeId.make(owner))?.value as { readonly seq: number; readonly sentAt: number } | undefined
    if (view !== undefined) record(view.seq, view.sentAt)
  },
  onRejectedFrame: () => undefined
}

if (config.kind === "dstate") {
  const node = StateRegistry.layer.pipe(
    Layer.provide(owner === config.id ? Layer.empty : Layer.succeed(StateRegistry.Observer, observer)),
    Layer.provideMerge(TcpRuntime.layer({
      nodeId: config.id,
      port: 0,
      seeds: config.seeds ?? [],
      secret: Redacted.make(benchSecret),
      leaveTimeout: "200 millis"
    }))
  )
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const run = yield* dstate
    const queue = yield* Queue.unbounded<{ readonly command: Command; readonly done: (r: unknown) => void }>()
    yield* Queue.take(queue).pipe(
      Effect.flatMap(({ command, done }) => run(command).pipe(Effect.map(done))),
      Effect.forever,
      Effect.forkScoped
    )
    yield* Effect.promise(() =>
      serve((command) => new Promise((resolve) => Queue.offerUnsafe(queue, { command, done: (r) => resolve(r as Record<string, unknown> | undefined) })))
    )
  })).pipe(Effect.provide(node)) as Effect.Effect<void>)
} else {
  await serve(
    config.kind === "raw" ? await raw() : config.kind === "slow" ? await slow() : config.kind === "flood" ? await flood() : await redis()
  )
}
process.exit(0)

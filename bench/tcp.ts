/**
 * TCP benchmarks between OS processes on loopback, each against baselines run
 * in the same session on the same machine:
 *
 * - B3 replication from one owner to two peers (3 processes): sustained
 *   replicated mutations/s, and mutate-to-visible latency p50/p99 at 1,000
 *   mutations/s; against (a) the same framed payloads over plain `node:net`
 *   sockets between 3 processes, with the socket options the TCP runtime
 *   uses, and (b) the same fan-out through Redis pub/sub (`redis-server`
 *   started here on a free port and stopped at the end).
 * - B6 large views: a 1 MiB and a 10 MiB snapshot from one node to another
 *   (2 fresh processes per size): transfer time (against the same bytes over
 *   a plain socket), and the peak RSS of sender and receiver above their idle
 *   baseline, as a multiple of the view size.
 *
 * - A1 awaited writes (3 processes): latency p50/p99 of `mutate` with
 *   `await: { peers: "majority" }` (1 of the 2 peers), one call at a time,
 *   against a request/acknowledge round trip over the plain sockets in the
 *   same run (the request to both peers, done at the first acknowledgement).
 *
 * The nodes are bench/tcpNode.ts children driven over IPC. Run: `npm run bench`
 * (all) or `node --expose-gc bench/tcp.ts`; with `DSTATE_BENCH_PROFILE=<dir>`
 * every child writes a CPU profile there.
 */
import { Effect, Result } from "effect"
import { NodeId, SyncMessage } from "dstate"
import { type ChildProcess, fork, spawn } from "node:child_process"
import * as Net from "node:net"
import { encodeFrame, makeStateCodec } from "../src/internal/codec.ts"
import type { Row } from "./inprocess.ts"
import { Feed, Small } from "./states.ts"

const nodeScript = new URL("./tcpNode.ts", import.meta.url).pathname
const MiB = 1024 * 1024

interface Reply {
  readonly ev: string
  readonly [key: string]: unknown
}

/** A benchmark node in a child process; commands are answered in order. */
class Node {
  readonly proc: ChildProcess
  private readonly waiting: Array<{ readonly ev: string; readonly resolve: (r: Reply) => void }> = []
  private readonly early: Array<Reply> = []
  constructor(config: Record<string, unknown>, env?: Record<string, string>) {
    const profile = process.env.DSTATE_BENCH_PROFILE
    this.proc = fork(nodeScript, [JSON.stringify(config)], {
      execArgv: ["--expose-gc", ...(profile === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profile}`])],
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "inherit", "ipc"]
    })
    this.proc.on("message", (reply: Reply) => {
      const i = this.waiting.findIndex((w) => w.ev === reply.ev)
      if (i < 0) this.early.push(reply)
      else this.waiting.splice(i, 1)[0].resolve(reply)
    })
  }
  /** The next reply named `ev`, or a rejection after `timeoutMs`. */
  next(ev: string, timeoutMs = 30_000): Promise<Reply> {
    const i = this.early.findIndex((r) => r.ev === ev)
    if (i >= 0) return Promise.resolve(this.early.splice(i, 1)[0])
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${ev}" from a benchmark node within ${timeoutMs} ms`)), timeoutMs)
      this.waiting.push({ ev, resolve: (r) => {
        clearTimeout(timer)
        resolve(r)
      } })
    })
  }
  request(command: Record<string, unknown> & { readonly cmd: string }, timeoutMs?: number): Promise<Reply> {
    this.proc.send(command)
    return this.next(command.cmd, timeoutMs)
  }
  /** Graceful stop, then SIGKILL if it has not exited within 3 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    const exited = new Promise<void>((resolve) => this.proc.once("exit", () => resolve()))
    if (this.proc.connected) this.proc.send({ cmd: "stop" })
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 3_000)
    await exited
    clearTimeout(timer)
  }
}

const started: Array<Node> = []
/** Starts a benchmark node and waits until it listens. */
export const start = async (config: Record<string, unknown>, env?: Record<string, string>) => {
  const node = new Node(config, env)
  started.push(node)
  const listening = await node.next("listening", 20_000)
  return { node, port: listening.port as number }
}
export const stopAll = () => Promise.all(started.splice(0).map((n) => n.stop()))

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]

/** The size of the registry frame a 200-byte view travels in (what raw and Redis send per update). */
const smallFrameBytes = (): number => {
  const payload = Result.getOrThrow(makeStateCodec(Small).encodeView({ seq: 123_456, sentAt: Date.now(), data: "x".repeat(180) }))
  const frame = encodeFrame(
    new SyncMessage.FullSnapshot({
      stateName: Small.name,
      source: NodeId.make("bench-a"),
      generation: { incarnation: Date.now(), age: 123_456 },
      wireVersion: 1,
      createdAt: Date.now(),
      modifiedAt: Date.now(),
      payload
    }),
    1 << 20
  )
  return Result.getOrThrow(frame).length
}

/** The size of the registry frame one delta of the bench's delta state travels in. */
const deltaFrameBytes = (): number => {
  const payload = Result.getOrThrow(makeStateCodec(Feed).encodeDelta({ seq: 123_456, sentAt: Date.now() }))
  const frame = encodeFrame(
    new SyncMessage.DeltaUpdate({
      stateName: Feed.name,
      source: NodeId.make("bench-a"),
      generation: { incarnation: Date.now(), age: 123_456 },
      wireVersion: 1,
      modifiedAt: Date.now(),
      payload
    }),
    1 << 20
  )
  return Result.getOrThrow(frame).length
}

interface DeltaResult {
  /** Deltas applied per second on the slower peer (or frames received per second by the slower receiver). */
  readonly appliedPerSecond: number
  readonly senderPerSecond: number
  /** Gaps the peers detected (repaired by snapshots), summed. */
  readonly gaps: number
  readonly applied: number
  readonly sent: number
}

/** A 2 s burst of deltas, each sent on its own; every one counts (applied, or received for the baselines). */
const measureDeltas = async ({ receivers, sender }: FanOut, size: number, dstate: boolean): Promise<DeltaResult> => {
  const until = (final: number) =>
    Promise.all(receivers.map((r) => r.request({ cmd: "until", seq: final, timeoutMs: 30_000 }, 40_000)))
  const metrics = () =>
    Promise.all(receivers.map(async (r) => (await r.request({ cmd: "feedMetrics" })).metrics as Record<string, number>))
  const burstCommand = dstate ? { cmd: "deltaBurst", seconds: 2 } : { cmd: "burst", seconds: 2, size }
  const warm = await sender.request({ ...burstCommand, seconds: 0.5 }, 60_000)
  await until(warm.final as number)
  await Promise.all(receivers.map((r) => r.request({ cmd: "reset" })))
  const before = dstate ? await metrics() : undefined
  const burst = await sender.request(burstCommand, 60_000)
  const reached = await until(burst.final as number)
  if (!reached.every((r) => r.reached)) throw new Error("a receiver did not get the burst's last delta")
  const t0 = burst.t0 as number
  const after = dstate ? await metrics() : undefined
  const counts = reached.map((r, i) =>
    before !== undefined && after !== undefined ? after[i].deltasReceived - before[i].deltasReceived : r.count as number
  )
  const rates = reached.map((r, i) => counts[i] / (((r.lastAt as number) - t0) / 1000))
  return {
    appliedPerSecond: Math.min(...rates),
    senderPerSecond: (burst.count as number) / 2,
    gaps: before !== undefined && after !== undefined
      ? after.reduce((sum, m, i) => sum + m.gapsDetected - before[i].gapsDetected, 0)
      : 0,
    applied: Math.min(...counts),
    sent: burst.count as number
  }
}

const dstateDeltaFanOut = async (): Promise<FanOut> => {
  const a = await start({ kind: "dstate", id: "delta-a", owner: "delta-a", view: "delta" })
  const seeds = [`127.0.0.1:${a.port}`]
  const b = await start({ kind: "dstate", id: "delta-b", owner: "delta-a", view: "delta", seeds })
  const c = await start({ kind: "dstate", id: "delta-c", owner: "delta-a", view: "delta", seeds })
  await Promise.all([a, b, c].map((n) => n.node.request({ cmd: "ready", nodes: 3 }, 20_000)))
  return { sender: a.node, receivers: [b.node, c.node] }
}

interface FanOut {
  readonly sender: Node
  readonly receivers: ReadonlyArray<Node>
}

interface FanOutResult {
  /** Updates the sender made per second, counted until every receiver holds the last one. */
  readonly replicatedPerSecond: number
  /** Distinct updates the slower receiver saw per second in the same window. */
  readonly appliedPerSecond: number
  readonly senderPerSecond: number
  readonly p50: number
  readonly p99: number
  readonly latencySamples: number
  readonly pacedRate: number
}

/** Warm-up, a 2 s burst as fast as the sender goes, then 3 s paced at 1,000 updates/s. */
const measureFanOut = async ({ receivers, sender }: FanOut, size: number): Promise<FanOutResult> => {
  const until = (final: number) =>
    Promise.all(receivers.map((r) => r.request({ cmd: "until", seq: final, timeoutMs: 20_000 }, 30_000)))
  const warm = await sender.request({ cmd: "paced", rate: 1000, seconds: 0.5, size })
  await until(warm.final as number)
  await Promise.all(receivers.map((r) => r.request({ cmd: "reset" })))
  const burst = await sender.request({ cmd: "burst", seconds: 2, size }, 60_000)
  const reached = await until(burst.final as number)
  if (!reached.every((r) => r.reached)) throw new Error("a receiver did not get the burst's last update")
  const t0 = burst.t0 as number
  const lastAt = Math.max(...reached.map((r) => r.lastAt as number))
  const slowest = Math.min(...reached.map((r) => (r.count as number) / (((r.lastAt as number) - t0) / 1000)))
  await Promise.all(receivers.map((r) => r.request({ cmd: "reset" })))
  const pacedRun = await sender.request({ cmd: "paced", rate: 1000, seconds: 3, size }, 60_000)
  const latencies = (await until(pacedRun.final as number)).flatMap((r) => r.latencies as Array<number>)
  latencies.sort((a, b) => a - b)
  return {
    replicatedPerSecond: (burst.count as number) / ((lastAt - t0) / 1000),
    appliedPerSecond: slowest,
    senderPerSecond: (burst.count as number) / 2,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    latencySamples: latencies.length,
    pacedRate: pacedRun.count as number / 3
  }
}

const dstateFanOut = async (): Promise<FanOut> => {
  const a = await start({ kind: "dstate", id: "bench-a", owner: "bench-a", view: "small" })
  const seeds = [`127.0.0.1:${a.port}`]
  const b = await start({ kind: "dstate", id: "bench-b", owner: "bench-a", view: "small", seeds })
  const c = await start({ kind: "dstate", id: "bench-c", owner: "bench-a", view: "small", seeds })
  await Promise.all([a, b, c].map((n) => n.node.request({ cmd: "ready", nodes: 3 }, 20_000)))
  return { sender: a.node, receivers: [b.node, c.node] }
}

const rawFanOut = async (): Promise<FanOut> => {
  const b = await start({ kind: "raw", id: "raw-b" })
  const c = await start({ kind: "raw", id: "raw-c" })
  const a = await start({ kind: "raw", id: "raw-a" })
  await a.node.request({ cmd: "connect", ports: [b.port, c.port] })
  return { sender: a.node, receivers: [b.node, c.node] }
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** Starts `redis-server` on a free loopback port (no persistence) and waits until it answers. */
const startRedis = async () => {
  const port = await freePort()
  const proc = spawn("redis-server", ["--port", String(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"], {
    stdio: "ignore"
  })
  const deadline = Date.now() + 10_000
  while (true) {
    const pong = await new Promise<boolean>((resolve) => {
      const socket = Net.createConnection({ host: "127.0.0.1", port }, () => socket.write("PING\r\n"))
      socket.once("data", (data) => {
        socket.destroy()
        resolve(data.toString().startsWith("+PONG"))
      })
      socket.once("error", () => resolve(false))
    })
    if (pong) break
    if (Date.now() > deadline) {
      proc.kill("SIGKILL")
      throw new Error("redis-server did not start")
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const stop = async () => {
    if (proc.exitCode !== null) return
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()))
    proc.kill("SIGTERM")
    const timer = setTimeout(() => proc.kill("SIGKILL"), 3_000)
    await exited
    clearTimeout(timer)
  }
  return { port, stop }
}

const redisFanOut = async (redisPort: number): Promise<FanOut> => {
  const b = await start({ kind: "redis", id: "redis-b", redisPort })
  const c = await start({ kind: "redis", id: "redis-c", redisPort })
  await Promise.all([b, c].map((n) => n.node.request({ cmd: "subscribe" })))
  const a = await start({ kind: "redis", id: "redis-a", redisPort })
  return { sender: a.node, receivers: [b.node, c.node] }
}

interface LargeResult {
  readonly transferMs: number
  readonly sender: { readonly baseline: number; readonly peak: number }
  readonly receiver: { readonly baseline: number; readonly peak: number }
}

/**
 * glibc's mmap threshold fixed at 64 KiB (it otherwise grows after the first large free): every large
 * buffer is then its own mapping, counted in RSS while it lives and returned when it is freed, so that
 * the peak RSS above the baseline shows what a transfer holds at once.
 */
const largeEnv = { MALLOC_MMAP_THRESHOLD_: "65536" }

/** One snapshot of `size` bytes from a fresh sender to a fresh receiver. */
const measureLarge = async (kind: "dstate" | "raw", size: number): Promise<LargeResult> => {
  let sender: Node
  let receiver: Node
  if (kind === "dstate") {
    const a = await start({ kind, id: "large-a", owner: "large-a", view: "large" }, largeEnv)
    const b = await start({ kind, id: "large-b", owner: "large-a", view: "large", seeds: [`127.0.0.1:${a.port}`] }, largeEnv)
    await Promise.all([a, b].map((n) => n.node.request({ cmd: "ready", nodes: 2 }, 20_000)))
    sender = a.node
    receiver = b.node
  } else {
    const b = await start({ kind, id: "large-raw-b" }, largeEnv)
    const a = await start({ kind, id: "large-raw-a" }, largeEnv)
    await a.node.request({ cmd: "connect", ports: [b.port] })
    sender = a.node
    receiver = b.node
  }
  // Let both settle (startup garbage collected, heartbeats flowing) before the baseline.
  await new Promise((resolve) => setTimeout(resolve, 300))
  const watching = receiver.request({ cmd: "watch", seq: 1, timeoutMs: 30_000 }, 40_000)
  await sender.request({ cmd: "large", size }, 30_000)
  const watched = await watching
  if (watched.reached !== true) throw new Error(`the ${size}-byte view did not arrive`)
  const senderRss = (await sender.request({ cmd: "rss" })).rss as { baseline: number; peak: number }
  const receiverRss = watched.rss as { baseline: number; peak: number }
  await stopAll()
  return { transferMs: watched.latency as number, sender: senderRss, receiver: receiverRss }
}

/** A result row: `[value, unit]` against `[baseline, what the baseline is]`; info rows are always met. */
export const row = (
  id: string,
  name: string,
  [value, unit]: readonly [number, string],
  [baseline, baselineName]: readonly [number, string],
  ratio: number,
  target: string,
  met = true
): Row => ({ id, name, value, unit, baseline, baselineName, ratio, target, met })

/** Calls measured per A1 side (after `warmup`). */
const a1Calls = { warmup: 300, count: 3000 }

/** A1: awaited-majority mutations on a fresh 3-node dstate cluster and raw round trips on fresh sockets. */
const measureAwaited = async (size: number): Promise<Array<Row>> => {
  const d = await dstateFanOut()
  const awaited = (await d.sender.request({ cmd: "awaited", peers: "majority", ...a1Calls }, 120_000)).latencies as Array<number>
  await stopAll()
  const r = await rawFanOut()
  const roundTrips = (await r.sender.request({ cmd: "roundtrips", size, ...a1Calls }, 120_000)).latencies as Array<number>
  await stopAll()
  awaited.sort((a, b) => a - b)
  roundTrips.sort((a, b) => a - b)
  const baseline = "request/acknowledge round trip, plain node:net sockets (to both peers, first acknowledgement)"
  return [50, 99].map((p) => {
    const value = percentile(awaited, p)
    const base = percentile(roundTrips, p)
    return row(
      `A1/p${p}`,
      `mutate with await: majority (1 of 2 peers) over TCP (3 processes), latency p${p} of ${awaited.length} sequential calls`,
      [value, "ms"],
      [base, baseline],
      value / base,
      "<= 2",
      value <= 2 * base
    )
  })
}

/** Only A1 (`npm run bench -- acks`). */
export const runAcks: Effect.Effect<Array<Row>> = Effect.promise(async () => {
  try {
    return await measureAwaited(smallFrameBytes())
  } finally {
    await stopAll()
  }
})

export const run: Effect.Effect<Array<Row>> = Effect.promise(async () => {
  const rows: Array<Row> = []
  const size = smallFrameBytes()
  let redis: Awaited<ReturnType<typeof startRedis>> | undefined
  try {
    const d = await measureFanOut(await dstateFanOut(), size)
    await stopAll()
    const r = await measureFanOut(await rawFanOut(), size)
    await stopAll()
    redis = await startRedis()
    const p = await measureFanOut(await redisFanOut(redis.port), size)
    await stopAll()
    await redis.stop()
    redis = undefined
    const rate = Math.round(d.pacedRate)
    rows.push(
      row("B3", `replicated mutations/s, 1 owner -> 2 peers over TCP (3 processes), ${size}-byte frames`, [d.replicatedPerSecond, "mutations/s"], [r.replicatedPerSecond, "same frames over plain node:net sockets"], d.replicatedPerSecond / r.replicatedPerSecond, ">= 0.5", d.replicatedPerSecond >= 0.5 * r.replicatedPerSecond),
      row("B3/redis", "replicated mutations/s, same fan-out", [d.replicatedPerSecond, "mutations/s"], [p.replicatedPerSecond, "Redis pub/sub, pipelined PUBLISH"], d.replicatedPerSecond / p.replicatedPerSecond, ">= 2", d.replicatedPerSecond >= 2 * p.replicatedPerSecond),
      row("B3/applied", "updates applied/s on the slower peer during the burst (newer snapshots supersede queued ones)", [d.appliedPerSecond, "updates/s"], [r.appliedPerSecond, "frames received/s, plain sockets"], d.appliedPerSecond / r.appliedPerSecond, "(info)"),
      row("B3/p50", `mutate-to-visible latency p50 at ${rate} mutations/s (${d.latencySamples} samples)`, [d.p50, "ms"], [r.p50, `plain sockets (Redis ${p.p50.toFixed(2)} ms)`], d.p50 / r.p50, "(info)"),
      row("B3/p99", `mutate-to-visible latency p99 at ${rate} mutations/s`, [d.p99, "ms"], [r.p99, `plain sockets (Redis ${p.p99.toFixed(2)} ms)`], d.p99 / 2, "<= 2 ms (ratio: p99 / 2 ms)", d.p99 <= 2)
    )
    // Every delta counts: each one sent on its own and applied in order at the peers (a gap is repaired by a
    // snapshot and reported), against the same frames written one by one over plain sockets and Redis.
    const deltaSize = deltaFrameBytes()
    const dd = await measureDeltas(await dstateDeltaFanOut(), deltaSize, true)
    await stopAll()
    const rd = await measureDeltas(await rawFanOut(), deltaSize, false)
    await stopAll()
    redis = await startRedis()
    const pd = await measureDeltas(await redisFanOut(redis.port), deltaSize, false)
    await stopAll()
    await redis.stop()
    redis = undefined
    rows.push(
      row("B3/deltas", `deltas applied/s on the slower of 2 peer processes, every delta sent on its own (${deltaSize}-byte frames; ${dd.applied} of ${dd.sent} applied as deltas, ${dd.gaps} gaps repaired by snapshots)`, [dd.appliedPerSecond, "deltas/s"], [rd.appliedPerSecond, "same frames over plain sockets, one write per frame"], dd.appliedPerSecond / rd.appliedPerSecond, ">= 1.5", dd.appliedPerSecond >= 1.5 * rd.appliedPerSecond),
      row("B3/deltas/redis", "deltas applied/s, same fan-out", [dd.appliedPerSecond, "deltas/s"], [pd.appliedPerSecond, "Redis pub/sub, pipelined PUBLISH"], dd.appliedPerSecond / pd.appliedPerSecond, ">= 2.5", dd.appliedPerSecond >= 2.5 * pd.appliedPerSecond)
    )
    rows.push(...(await measureAwaited(size)))
    for (const bytes of [MiB, 10 * MiB]) {
      const label = `${bytes / MiB} MiB`
      const id = `B6/${bytes / MiB}MiB`
      const ds = await measureLarge("dstate", bytes)
      const rw = await measureLarge("raw", bytes)
      const above = (m: { readonly baseline: number; readonly peak: number }) => Math.max(0, m.peak - m.baseline)
      const rss = (side: "sender" | "receiver", what: string) =>
        row(`${id}/${side}`, `${label} snapshot: ${side} peak RSS above its idle baseline${what}`, [above(ds[side]) / MiB, "MiB"], [above(rw[side]) / MiB, `plain socket ${side}`], above(ds[side]) / bytes, "<= 3 (x view size)", above(ds[side]) <= 3 * bytes)
      rows.push(
        row(id, `${label} snapshot over TCP: mutate to visible on the peer`, [ds.transferMs, "ms"], [rw.transferMs, "same bytes over a plain socket"], ds.transferMs / rw.transferMs, "(info)"),
        rss("sender", " (view already built)"),
        rss("receiver", "")
      )
    }
  } finally {
    await stopAll()
    await redis?.stop()
  }
  return rows
})

if (import.meta.url === `file://${process.argv[1]}`) {
  Effect.runPromise(run).then((rows) => {
    for (const r of rows) {
      console.log(`${r.id.padEnd(20)} ${r.value.toFixed(2).padStart(12)} ${r.unit.padEnd(12)} baseline ${r.baseline.toFixed(2)} (${r.baselineName}) ratio ${r.ratio.toFixed(3)} ${r.target} ${r.met ? "met" : "NOT met"}`)
    }
  })
}

/**
 * M1: bytes per node per second spent on membership alone, at 10, 100 and 500
 * nodes, in a steady cluster and under 1 % churn per minute (graceful leaves
 * and joins of new nodes, in equal numbers).
 *
 * N membership cores (`src/internal/membership/core.ts`) run over a simulated
 * network in virtual time (`simulation.ts`): the rounds of the TCP transport
 * (a pulse to every member each heartbeat, gossip to 3 random members while
 * changes wait, one digest exchange with a random member), every frame counted
 * at its size on the wire: the real transport encoding, header included
 * (`Protocol.encode`). The window is measured after the cluster converged.
 * The baseline is the scheme before gossip membership: every heartbeat to
 * every member carried the sender's whole member list (the same encoding).
 *
 * A cross-check on real sockets: 10 `TcpRuntime` nodes on loopback in this
 * process, membership bytes counted by the transport (`membershipBytesSent`)
 * over a window of real time, compared with the simulation at 10 nodes.
 *
 * The numbers are bytes, not times: the simulated ones are the same on any
 * machine, so `npm run bench -- membership` writes its rows into
 * `bench/results/results.json` and `results.md` (replacing earlier M1 rows).
 *
 * Run: `npm run bench -- membership`.
 */
import { Context, Duration, Effect, Layer, Redacted, Result } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { NodeId } from "dstate"
import * as Core from "../src/internal/membership/core.ts"
import * as Simulation from "../src/internal/membership/simulation.ts"
import * as Protocol from "../src/node/internal/protocol.ts"
import { TcpRuntime } from "../src/node/index.ts"
import { make as makePrng } from "../src/testing/Prng.ts"
import type { Row } from "./inprocess.ts"

const targetBytes = 50 * 1024
const roundMillis = 1000
const maxFrame = 16 * 1024 * 1024

const sizeOf = (frame: Simulation.Frame): number => {
  const encoded = Protocol.encode(frame as Protocol.TransportMessage, maxFrame)
  if (Result.isFailure(encoded)) throw new Error(`cannot encode ${frame._tag}: ${encoded.failure.message}`)
  return encoded.success.length
}

const network = (seed: number) =>
  Simulation.make({
    roundMillis,
    fanout: 3,
    gossipBudget: 1200,
    loss: 0,
    pulses: true,
    detectorMillis: 5000,
    config: Core.defaultConfig,
    sizeOf,
    random: makePrng(seed).next
  })

/** A converged cluster of `n` nodes (each joined through a random earlier one). */
const cluster = (n: number, seed: number) => {
  const net = network(seed)
  const prng = makePrng(seed + 1)
  net.start("node-0")
  for (let i = 1; i < n; i++) {
    net.start(`node-${i}`, `node-${prng.int(0, i - 1)}`)
    if (i % 10 === 0) net.round()
  }
  let rounds = 0
  while (!Simulation.converged(net) && rounds < 200) {
    net.round()
    rounds++
  }
  if (!Simulation.converged(net)) throw new Error(`${n} nodes did not converge`)
  // Let the queues drain: what remains is the steady state.
  for (let i = 0; i < 30; i++) net.round()
  return net
}

const perNodePerSecond = (net: Simulation.Network, nodes: number, seconds: number) => {
  const bytes = net.bytes()
  let total = 0
  for (const n of bytes.values()) total += n
  const split: Record<string, number> = {}
  for (const [tag, n] of bytes) split[tag] = Math.round(n / nodes / seconds)
  return { value: total / nodes / seconds, split }
}

/** Steady cluster: bytes per node per second over `seconds`. */
const steady = (n: number, seconds: number) => {
  const net = cluster(n, 20261208 + n)
  net.resetBytes()
  for (let i = 0; i < seconds; i++) net.round()
  return perNodePerSecond(net, n, seconds)
}

/** 1 % churn per minute: one graceful leave and one join of a new node every `60 / (0.01 n)` seconds each. */
const churn = (n: number, seconds: number) => {
  const net = cluster(n, 20261209 + n)
  const prng = makePrng(7)
  const every = Math.max(1, Math.round(60 / (0.01 * n)))
  net.resetBytes()
  let next = n
  for (let i = 1; i <= seconds; i++) {
    if (i % every === 0) {
      const running = [...net.nodes.values()].filter((x) => x.running)
      net.leave(prng.pick(running).id)
      const alive = [...net.nodes.values()].filter((x) => x.running)
      net.start(`node-${next++}`, prng.pick(alive).id)
    }
    net.round()
  }
  // Counted over the running nodes' share: the cluster keeps n members.
  const result = perNodePerSecond(net, n, seconds)
  for (let i = 0; i < 60; i++) net.round()
  return { ...result, converged: Simulation.converged(net) }
}

/** The scheme before gossip membership: one heartbeat with the whole member list to every member, every second. */
const oldScheme = (n: number) => {
  const members = Array.from({ length: n }, (_, i) => ({
    node: NodeId.make(`node-${i}`),
    session: "0123456789abcdef",
    host: "10.0.0.1",
    port: 7000 + i
  }))
  const frame = Protocol.encode({ _tag: "Heartbeat", groupsVersion: 1, groups: ["dstate/state/orders"], members }, maxFrame)
  if (Result.isFailure(frame)) throw new Error("cannot encode the old heartbeat")
  return frame.success.length * (n - 1)
}

/** Ten real nodes on loopback: membership bytes sent per node per second over `seconds` of real time. */
const tcp = (seconds: number) =>
  Effect.scoped(Effect.gen(function*() {
    const secret = Redacted.make("membership-bench-secret-0123456789")
    const heartbeat = { interval: Duration.millis(roundMillis), detector: TcpRuntime.fixedTimeout("5 seconds") }
    const first = Context.get(yield* Layer.build(TcpRuntime.layer({ nodeId: "tcp-m-00", secret, heartbeat })), TcpRuntime.TcpTransport)
    const transports = [first]
    for (let i = 1; i < 10; i++) {
      const ctx = yield* Layer.build(TcpRuntime.layer({
        nodeId: `tcp-m-${String(i).padStart(2, "0")}`,
        secret,
        heartbeat,
        seeds: [first.address]
      }))
      transports.push(Context.get(ctx, TcpRuntime.TcpTransport))
    }
    // Converged: every node connected to the nine others; then let the join's gossip settle.
    for (let i = 0; i < 300; i++) {
      const peers = yield* Effect.forEach(transports, (t) => t.peers)
      if (peers.every((p) => p.length === 9 && p.every((x) => x.connected))) break
      yield* Effect.sleep("100 millis")
    }
    yield* Effect.sleep("15 seconds")
    const before = yield* Effect.forEach(transports, (t) => t.stats)
    yield* Effect.sleep(Duration.seconds(seconds))
    const after = yield* Effect.forEach(transports, (t) => t.stats)
    let total = 0
    for (let i = 0; i < transports.length; i++) total += after[i].membershipBytesSent - before[i].membershipBytesSent
    return total / transports.length / seconds
  }))

const row = (id: string, name: string, value: number, baseline: number, baselineName: string): Row => ({
  id,
  name,
  value,
  unit: "B/node/s",
  baseline,
  baselineName,
  ratio: value / baseline,
  target: `<= ${targetBytes / 1024} KB/s`,
  met: value <= targetBytes
})

/** Replaces the M1 rows of the results files with `rows` (bytes do not depend on the machine). */
const record = (rows: ReadonlyArray<Row>) => {
  const jsonUrl = new URL("./results/results.json", import.meta.url)
  const results = JSON.parse(readFileSync(jsonUrl, "utf8")) as { machine: string; rows: Array<Row> }
  results.rows = [...results.rows.filter((r) => !r.id.startsWith("M1/")), ...rows]
  writeFileSync(jsonUrl, JSON.stringify(results, null, 2) + "\n")
  const mdUrl = new URL("./results/results.md", import.meta.url)
  const format = (n: number) => Math.abs(n) >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2)
  const lines = readFileSync(mdUrl, "utf8").trimEnd().split("\n").filter((l) => !l.startsWith("| M1/"))
  for (const r of rows) {
    lines.push(
      `| ${r.id} | ${r.name} | ${format(r.value)} ${r.unit} | ${format(r.baseline)} (${r.baselineName}) | ${r.ratio.toFixed(3)} | ${r.target} | ${r.met ? "yes" : "no"} |`
    )
  }
  writeFileSync(mdUrl, lines.join("\n") + "\n")
}

export const run = Effect.gen(function*() {
  const rows: Array<Row> = []
  const window = 60
  const curve: Array<string> = []
  for (const n of [10, 100, 500]) {
    const s = steady(n, window)
    const old = oldScheme(n)
    curve.push(`${n} nodes steady: ${Math.round(s.value)} B/node/s ${JSON.stringify(s.split)}; full member list per heartbeat: ${old} B/node/s`)
    rows.push(row(`M1/${n}`, `membership bytes/node/s, ${n} nodes, steady (simulated, wire sizes)`, s.value, old, "member list in every heartbeat"))
  }
  for (const n of [10, 100, 500]) {
    const c = churn(n, 600)
    curve.push(`${n} nodes, 1 % churn/min: ${Math.round(c.value)} B/node/s ${JSON.stringify(c.split)}; converged after: ${c.converged}`)
    if (n === 500) {
      rows.push(row("M1/500/churn", "membership bytes/node/s, 500 nodes, 1 % churn per minute (simulated)", c.value, oldScheme(n), "member list in every heartbeat"))
    }
  }
  const real = yield* tcp(20)
  const sim10 = rows.find((r) => r.id === "M1/10")!.value
  curve.push(`10 TcpRuntime nodes on loopback: ${Math.round(real)} B/node/s sent (simulation at 10 nodes: ${Math.round(sim10)})`)
  for (const line of curve) console.log(line)
  record(rows)
  return rows
})

if (import.meta.url === `file://${process.argv[1]}`) {
  Effect.runPromise(run).then((rows) => console.log(JSON.stringify(rows, null, 2)))
}

/**
 * In-process benchmarks, each against a baseline run in the same process:
 *
 * - B1 mutation throughput (0 and 3 peers, active push, 200-byte views) vs
 *   the same payloads pushed through plain Effect `Queue`s to as many consumers.
 * - B2 query fast path over a 100-node view map vs plain iteration of a `Map`
 *   of the same objects.
 * - B4 change-feed economy: 10 state types x 100 mutations/s each, 1 s flush,
 *   wire messages and bytes per second with `feedLazyPull` vs `activePush`
 *   (simulated time).
 * - B5 scale: simulated time and real CPU time for 10, 50, 100, 200 nodes to
 *   converge after one node joins; heap bytes per replicated view beyond its
 *   payload.
 *
 * Run: `npm run bench` (all) or `node bench/inprocess.ts`.
 */
import { Clock, Effect, Fiber, Layer, Queue, Result, Schema, Stream } from "effect"
import { TestClock } from "effect/testing"
import { DistributedState, NodeId, StateRegistry, SyncMessage, SyncStrategy } from "dstate"
import { encodeFrame, makeStateCodec } from "../src/internal/codec.ts"
import { InProcessRuntime, SimNetwork, TestCluster } from "dstate/testing"

export interface Row {
  readonly id: string
  readonly name: string
  readonly value: number
  readonly unit: string
  readonly baseline: number
  readonly baselineName: string
  readonly ratio: number
  readonly target: string
  readonly met: boolean
}

const Blob = DistributedState.make({
  name: "blob",
  schema: Schema.Struct({ seq: Schema.Int, data: Schema.String }),
  initial: () => ({ seq: 0, data: "x".repeat(190) })
})

const now = () => performance.now()

// ---- B1 -----------------------------------------------------------------------------------------
const b1Dstate = (peers: number, mutations: number) =>
  Effect.scoped(Effect.gen(function*() {
    const network = yield* SimNetwork.makeWith({ log: false })
    const contexts = yield* Effect.forEach(
      Array.from({ length: peers + 1 }, (_, i) => NodeId.make(`n${i}`)),
      (id) => Layer.build(StateRegistry.layer.pipe(Layer.provideMerge(InProcessRuntime.layer(network, id))))
    )
    const handles = yield* Effect.forEach(contexts, (ctx) =>
      Effect.provideContext(StateRegistry.register(Blob, { persist: false, mailbox: "unbounded" }), ctx))
    const owner = handles[0]
    // Wait until every peer holds the owner's view at the final age.
    const waiters = yield* Effect.forEach(handles.slice(1), (h) =>
      h.changes.pipe(
        Stream.filter((views) => views.get(owner.nodeId)?.generation.age === mutations),
        Stream.take(1),
        Stream.runDrain,
        Effect.forkChild
      ))
    yield* Effect.yieldNow
    const start = now()
    for (let i = 1; i <= mutations; i++) yield* owner.mutate((s) => ({ seq: i, data: s.data }))
    yield* Effect.forEach(waiters, Fiber.join, { discard: true })
    return mutations / ((now() - start) / 1000)
  }))

const b1Baseline = (consumers: number, messages: number) =>
  Effect.gen(function*() {
    const queues = yield* Effect.forEach(Array.from({ length: Math.max(consumers, 1) }), () => Queue.unbounded<{ seq: number; data: string }>())
    const fibers = yield* Effect.forEach(queues, (q) =>
      Effect.gen(function*() {
        let last: { seq: number; data: string } | undefined
        for (let i = 0; i < messages; i++) last = yield* Queue.take(q)
        return last
      }).pipe(Effect.forkChild))
    const data = "x".repeat(190)
    const start = now()
    for (let i = 1; i <= messages; i++) {
      const payload = { seq: i, data }
      for (const q of queues) yield* Queue.offer(q, payload)
    }
    yield* Effect.forEach(fibers, Fiber.join, { discard: true })
    return messages / ((now() - start) / 1000)
  })

// ---- B2 -----------------------------------------------------------------------------------------
const b2 = (nodes: number, iterations: number) =>
  Effect.scoped(Effect.gen(function*() {
    const network = yield* SimNetwork.makeWith({ log: false })
    const contexts = yield* Effect.forEach(
      Array.from({ length: nodes }, (_, i) => NodeId.make(`n${i}`)),
      (id) => Layer.build(StateRegistry.layer.pipe(Layer.provideMerge(InProcessRuntime.layer(network, id))))
    )
    const handles = yield* Effect.forEach(contexts, (ctx) =>
      Effect.provideContext(StateRegistry.register(Blob, { persist: false }), ctx))
    const h = handles[0]
    yield* h.changes.pipe(Stream.filter((v) => v.size === nodes), Stream.take(1), Stream.runDrain)
    const pick = (views: ReadonlyMap<NodeId.NodeId, { readonly value: { readonly seq: number } }>) => {
      let best = -1
      for (const v of views.values()) if (v.value.seq > best) best = v.value.seq
      return best
    }
    const options = { maxStaleness: "1 hour" } as const
    // warm up
    for (let i = 0; i < iterations / 10; i++) yield* h.query(options, pick)
    const t0 = now()
    for (let i = 0; i < iterations; i++) yield* h.query(options, pick)
    const dstateNs = ((now() - t0) * 1e6) / iterations
    const plain = new Map(yield* h.snapshot)
    for (let i = 0; i < iterations / 10; i++) pick(plain)
    let sink = 0
    const t1 = now()
    for (let i = 0; i < iterations; i++) sink += pick(plain)
    const plainNs = ((now() - t1) * 1e6) / iterations
    // The baseline inside an Effect loop, as an application would call it.
    const t2 = now()
    for (let i = 0; i < iterations; i++) sink += yield* Effect.sync(() => pick(plain))
    const plainEffectNs = ((now() - t2) * 1e6) / iterations
    return { dstateNs, plainNs, plainEffectNs, sink }
  }))

// ---- B4 -----------------------------------------------------------------------------------------
const b4 = (strategy: SyncStrategy.SyncStrategy, seconds: number) =>
  Effect.scoped(Effect.gen(function*() {
    const states = Array.from({ length: 10 }, (_, i) =>
      DistributedState.make({
        name: `s${i}`,
        schema: Schema.Struct({ seq: Schema.Int, data: Schema.String }),
        initial: () => ({ seq: 0, data: "x".repeat(190) })
      }))
    const setup = Effect.forEach(states, (s) => StateRegistry.register(s, { strategy, persist: false }))
    const cluster = yield* TestCluster.make({ nodes: 3, setup, persistence: "none" })
    const [a] = cluster.nodes
    yield* cluster.settle
    const before = cluster.network.log().length
    let bytes = 0
    const handles = yield* cluster.run(a, Effect.forEach(states, (s) => StateRegistry.lookup(s)))
    // 100 mutations per second per state: one round every 10 ms.
    for (let tick = 0; tick < seconds * 100; tick++) {
      for (const h of handles) yield* h.mutate((s) => ({ seq: s.seq + 1, data: s.data }))
      yield* TestClock.adjust("10 millis")
      yield* cluster.settle
    }
    const frames = cluster.network.log().slice(before).filter((f) => f.from === a.id)
    for (const f of frames) bytes += f.frame.length
    return { messagesPerSecond: frames.length / seconds, bytesPerSecond: bytes / seconds }
  })).pipe(Effect.provide(TestClock.layer()))

// ---- B5 -----------------------------------------------------------------------------------------
const b5 = (nodes: number) =>
  Effect.scoped(Effect.gen(function*() {
    const setup = StateRegistry.register(Blob, { persist: false })
    const cluster = yield* TestCluster.make({ nodes, setup, persistence: "none" })
    yield* cluster.settle
    const simStart = yield* Clock.currentTimeMillis
    const cpu0 = process.cpuUsage()
    const t0 = now()
    const joined = yield* cluster.addNode()
    yield* cluster.settle
    const cpu = process.cpuUsage(cpu0)
    const wall = now() - t0
    const simulated = (yield* Clock.currentTimeMillis) - simStart
    const views = yield* cluster.run(joined, Effect.flatMap(StateRegistry.lookup(Blob), (h) => h.snapshot))
    if (views.size !== nodes + 1) throw new Error(`B5: joined node sees ${views.size} views, expected ${nodes + 1}`)
    return { simulatedMs: simulated, cpuMs: (cpu.user + cpu.system) / 1000, wallMs: wall }
  })).pipe(Effect.provide(TestClock.layer()))

/**
 * Heap bytes per replicated view beyond its payload, measured on a real shard: one node receives a
 * snapshot from each of `views` other nodes (frames injected into its inbound path), and the heap growth
 * is compared with that of the same number of decoded payloads held alone. Node ids exist before
 * either measurement (they are the cluster's, not the view's).
 */
export const heapPerView = Effect.scoped(Effect.gen(function*() {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) return undefined
  const views = 10_000
  const network = yield* SimNetwork.makeWith({ log: false })
  const self = NodeId.make("n0")
  const ctx = yield* Layer.build(StateRegistry.layer.pipe(Layer.provideMerge(InProcessRuntime.layer(network, self))))
  const handle = yield* Effect.provideContext(StateRegistry.register(Blob, { persist: false, mailbox: "unbounded" }), ctx)
  const codec = makeStateCodec(Blob)
  const payload = Result.getOrThrow(codec.encodeView({ seq: 1, data: "x".repeat(190) }))
  const sources = Array.from({ length: views }, (_, i) => NodeId.make(`node-${i}`))
  // Realistic numbers: incarnations and timestamps are wall-clock milliseconds (not small integers).
  const wall = Date.now()
  const frames = sources.map((source, i) =>
    Result.getOrThrow(encodeFrame(
      new SyncMessage.FullSnapshot({
        stateName: Blob.name,
        source,
        generation: { incarnation: wall - i, age: 1 + i },
        wireVersion: 1,
        createdAt: wall - 2 * i,
        modifiedAt: wall - i,
        payload
      }),
      1 << 20
    ))
  )
  gc()
  const h0 = process.memoryUsage().heapUsed
  for (let i = 0; i < views; i++) yield* network.inject(sources[i], self, frames[i])
  yield* handle.changes.pipe(Stream.filter((map) => map.size === views + 1), Stream.take(1), Stream.runDrain)
  gc()
  const h1 = process.memoryUsage().heapUsed
  // The payloads alone: the same number of decoded views.
  const values = sources.map((source) => Result.getOrThrow(codec.decodeView(payload, 1, source)))
  gc()
  const h2 = process.memoryUsage().heapUsed
  const perView = (h1 - h0) / views
  const payloadPerView = (h2 - h1) / values.length
  return { perEntry: perView - payloadPerView, payloadPerView, held: (yield* handle.snapshot).size }
}))

export const run = Effect.gen(function*() {
  const rows: Array<Row> = []
  const mutations = 5000
  for (const peers of [0, 3]) {
    yield* b1Dstate(peers, 500) // warm-up
    const dstate = yield* b1Dstate(peers, mutations)
    const base = yield* b1Baseline(peers, mutations * 10)
    rows.push({
      id: `B1/${peers}`,
      name: `mutations/s, ${peers} peers, active push, 200-byte views`,
      value: dstate,
      unit: "mutations/s",
      baseline: base,
      baselineName: `Effect Queue to ${Math.max(peers, 1)} consumer(s)`,
      ratio: dstate / base,
      target: ">= 0.33",
      met: dstate / base >= 1 / 3
    })
  }
  const q = yield* b2(100, 200_000)
  rows.push({
    id: "B2",
    name: "query fast path, 100-node view map",
    value: q.dstateNs,
    unit: "ns/query",
    baseline: q.plainNs,
    baselineName: "plain Map iteration",
    ratio: q.dstateNs / q.plainNs,
    target: "<= 2",
    met: q.dstateNs / q.plainNs <= 2
  })
  rows.push({
    id: "B2/effect",
    name: "query fast path vs the same iteration inside Effect.sync",
    value: q.dstateNs,
    unit: "ns/query",
    baseline: q.plainEffectNs,
    baselineName: "Map iteration in Effect.sync",
    ratio: q.dstateNs / q.plainEffectNs,
    target: "(info)",
    met: true
  })
  const feed = yield* b4(SyncStrategy.feedLazyPull(), 3)
  const push = yield* b4(SyncStrategy.activePush(), 3)
  rows.push({
    id: "B4",
    name: "wire messages/s, 10 states x 100 mutations/s, 2 peers",
    value: feed.messagesPerSecond,
    unit: "messages/s",
    baseline: push.messagesPerSecond,
    baselineName: "activePush",
    ratio: push.messagesPerSecond / Math.max(feed.messagesPerSecond, 1e-9),
    target: ">= 100x fewer",
    met: push.messagesPerSecond / Math.max(feed.messagesPerSecond, 1e-9) >= 100
  })
  rows.push({
    id: "B4/bytes",
    name: "wire bytes/s, same workload",
    value: feed.bytesPerSecond,
    unit: "bytes/s",
    baseline: push.bytesPerSecond,
    baselineName: "activePush",
    ratio: push.bytesPerSecond / Math.max(feed.bytesPerSecond, 1e-9),
    target: "(info)",
    met: true
  })
  for (const n of [10, 50, 100, 200]) {
    const r = yield* b5(n)
    rows.push({
      id: `B5/${n}`,
      name: `${n} nodes, one joins: converge`,
      value: r.cpuMs,
      unit: "ms CPU",
      baseline: r.simulatedMs,
      baselineName: "simulated ms",
      ratio: r.cpuMs / n,
      target: "(info: ms CPU per node)",
      met: true
    })
  }
  const heap = yield* heapPerView
  if (heap !== undefined) {
    rows.push({
      id: "B5/heap",
      name: `heap bytes per replicated view beyond its payload (${heap.held - 1} views on one node)`,
      value: heap.perEntry,
      unit: "bytes/view",
      baseline: heap.payloadPerView,
      baselineName: "bytes of the decoded payload alone",
      ratio: heap.perEntry,
      target: "<= 200",
      met: heap.perEntry <= 200
    })
  }
  return rows
})

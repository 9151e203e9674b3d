/**
 * One dstate node over TCP, publishing its machine's CPU and memory.
 *
 * Every node owns one `NodeResource` shard: the CPU and memory figures of its
 * machine (from `node:os`), sampled every second, plus private bookkeeping
 * (sample counters, the CPU tick counts of the previous sample) that stays on
 * the owner and is persisted with it but never sent. Peers receive only the
 * public view, as view-level deltas; a CPU move of 20 points or more is marked
 * `Immediate`. Every second the node also asks, from local memory, which node
 * is least loaded.
 *
 * Run one node per machine (or several on one, on different ports):
 *
 * ```sh
 * DSTATE_SECRET='a long random string' node examples/03_node.ts \
 *   --id node-1 --host 0.0.0.0 --advertise 10.0.0.1 --port 7100 \
 *   --seeds 10.0.0.1:7100,10.0.0.2:7100 --data /var/lib/dstate/node-1
 * ```
 *
 * Options (`--help` lists them; a bad flag or value prints the usage and what is wrong, and exits 1):
 * - `--id ID` (required): the node id, unique in the cluster and stable across restarts.
 * - `--port P` (default 7100) and `--host H` (default 127.0.0.1): where to listen.
 * - `--advertise H`: the host peers dial to reach this node (default: `--host`).
 * - `--seeds host:port,...`: nodes to join through; listing every node, itself included, is fine.
 * - `--data DIR`: keep the state in a crash-safe file store in DIR (a restart keeps incarnation and age),
 *   or `--memory` (default): nothing survives the process.
 * - `--strategy push|feed` (default push): push every sample as a delta at once, or only announce it in the
 *   change feed (peers pull when a query needs it); CPU moves of 20 points or more are pushed either way.
 * - `--report table|json` (default table): print what this node sees as a table every 5 seconds, or one JSON
 *   line per second on stdout (what `examples/02_cluster.ts` reads; logs then go to stderr).
 * - `--http-port P` (default 0: off): serve the operations endpoints of `dstate/http` (`/healthz`, `/readyz`,
 *   `/metrics`, `/status`) on P, on `--http-host` (default 127.0.0.1). `--http-min-peers N` (default 0): peers
 *   that must be seen before `/readyz` answers 200. With `DSTATE_HTTP_TOKEN` set, `/metrics` and `/status`
 *   require `Authorization: Bearer <token>`. The URLs are logged at startup. With `DSTATE_WEB_KEY` set (at least
 *   16 characters), the same server also serves browser read replicas of the state (`dstate/web`: the WebSocket
 *   endpoint `/web`, tokens signed with that key) and the live dashboard at `/`.
 *
 * The cluster secret comes from the environment variable `DSTATE_SECRET` (at least 16 bytes). Without it the
 * node uses the built-in demo secret `dstate-local-demo-secret`, which is fine on loopback and nowhere else.
 * Ctrl-C (SIGINT) or SIGTERM stops the node gracefully: its peers are told at once.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect, Layer, Logger, Option, Redacted, Schedule, Schema } from "effect"
import { CliConfig, CliError, Command, Flag, GlobalFlag } from "effect/cli"
import { DistributedState, StatePersistence, StateRegistry, SyncStrategy, SyncUrgency } from "dstate"
import type { StateView } from "dstate"
import { HttpOperations } from "dstate/http"
import { FilePersistence, TcpRuntime } from "dstate/node"
import { WebReplicas } from "dstate/web"
import * as Os from "node:os"

// ---- the state --------------------------------------------------------------------------------

/** A CPU move (in percentage points) at or above which a sample is sent at once, whatever the strategy. */
const CpuThreshold = 20

/** The owner's state: the public figures plus private sampling bookkeeping. */
const ResourceState = Schema.Struct({
  cpuPercent: Schema.Finite,
  memoryUsedMiB: Schema.Finite,
  tags: Schema.Array(Schema.String),
  /** Private: samples taken by this node, over all its restarts (when persisted). */
  samples: Schema.Int,
  /** Private: samples whose CPU move reached `CpuThreshold`. */
  urgentSamples: Schema.Int,
  /** Private: `os.cpus()` idle and total ticks at the previous sample, to turn the next one into a percentage. */
  lastIdleTicks: Schema.Finite,
  lastTotalTicks: Schema.Finite
})
type ResourceState = typeof ResourceState.Type

/** What peers see. */
const ResourceView = Schema.Struct({
  cpuPercent: Schema.Finite,
  memoryUsedMiB: Schema.Finite,
  tags: Schema.Array(Schema.String)
})
type ResourceView = typeof ResourceView.Type

/** A view-level delta: only the fields that changed. */
const ResourceDelta = Schema.Struct({
  cpuPercent: Schema.optionalKey(Schema.Finite),
  memoryUsedMiB: Schema.optionalKey(Schema.Finite),
  tags: Schema.optionalKey(Schema.Array(Schema.String))
})
type ResourceDelta = typeof ResourceDelta.Type

/** What a mutation says it changed (the public fields only; the private ones never travel). */
type ResourceChange = ResourceDelta

/** Whether a CPU move is large enough to be sent at once. */
const isUrgent = (before: number, after: number) => Math.abs(after - before) >= CpuThreshold

/**
 * The delta-aware state every node registers. `applyDelta(projectView(s),
 * projectDelta(c))` equals `projectView(s')` because a change lists exactly
 * the public fields that differ.
 */
export const NodeResource = DistributedState.makeDelta({
  name: "node_resource",
  state: ResourceState,
  view: ResourceView,
  delta: ResourceDelta,
  initial: (): ResourceState => ({
    cpuPercent: 0,
    memoryUsedMiB: 0,
    tags: [],
    samples: 0,
    urgentSamples: 0,
    lastIdleTicks: 0,
    lastTotalTicks: 0
  }),
  projectView: (s): ResourceView => ({ cpuPercent: s.cpuPercent, memoryUsedMiB: s.memoryUsedMiB, tags: s.tags }),
  projectDelta: (change: ResourceChange): ResourceDelta => change,
  applyDelta: (view, delta): ResourceView => ({ ...view, ...delta }),
  syncUrgency: (oldView, newView) =>
    isUrgent(oldView.cpuPercent, newView.cpuPercent) ? SyncUrgency.Immediate : SyncUrgency.Default,
  wireVersion: 1,
  storageVersion: 1
})

// ---- sampling ---------------------------------------------------------------------------------

/** One reading of the machine: CPU ticks summed over all cores, and memory in use. */
interface Reading {
  readonly idleTicks: number
  readonly totalTicks: number
  readonly memoryUsedMiB: number
}

const read = Effect.sync((): Reading => {
  let idleTicks = 0
  let totalTicks = 0
  for (const cpu of Os.cpus()) {
    idleTicks += cpu.times.idle
    totalTicks += cpu.times.user + cpu.times.nice + cpu.times.sys + cpu.times.irq + cpu.times.idle
  }
  return { idleTicks, totalTicks, memoryUsedMiB: Math.round((Os.totalmem() - Os.freemem()) / (1024 * 1024)) }
})

const sameTags = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) =>
  a.length === b.length && a.every((tag, i) => tag === b[i])

/**
 * The next state after a reading, and the change (public fields that differ).
 * Pure: the reading is taken before the mutation.
 */
const nextSample = (state: ResourceState, reading: Reading, tags: ReadonlyArray<string>) => {
  const busy = (reading.totalTicks - state.lastTotalTicks) - (reading.idleTicks - state.lastIdleTicks)
  const elapsed = reading.totalTicks - state.lastTotalTicks
  // The first sample (or one after the machine restarted) has no previous ticks to compare with.
  const cpuPercent = state.lastTotalTicks > 0 && elapsed > 0
    ? Math.round((1000 * busy) / elapsed) / 10
    : state.cpuPercent
  const change: { -readonly [K in keyof ResourceChange]: ResourceChange[K] } = {}
  if (cpuPercent !== state.cpuPercent) change.cpuPercent = cpuPercent
  if (reading.memoryUsedMiB !== state.memoryUsedMiB) change.memoryUsedMiB = reading.memoryUsedMiB
  if (!sameTags(tags, state.tags)) change.tags = tags
  const next: ResourceState = {
    ...state,
    ...change,
    samples: state.samples + 1,
    urgentSamples: state.urgentSamples + (isUrgent(state.cpuPercent, cpuPercent) ? 1 : 0),
    lastIdleTicks: reading.idleTicks,
    lastTotalTicks: reading.totalTicks
  }
  return { state: next, change: change as ResourceChange }
}

/** The query every node runs: the least loaded node by CPU, then memory. */
const leastLoaded = (views: ReadonlyMap<string, StateView.StateView<ResourceView>>) => {
  let best: StateView.StateView<ResourceView> | undefined
  for (const view of views.values()) {
    if (
      best === undefined || view.value.cpuPercent < best.value.cpuPercent ||
      (view.value.cpuPercent === best.value.cpuPercent && view.value.memoryUsedMiB < best.value.memoryUsedMiB)
    ) best = view
  }
  return best?.source
}

// ---- reports ----------------------------------------------------------------------------------

/** One view as a node holds it. */
export interface ViewRow {
  readonly source: string
  readonly cpuPercent: number
  readonly memoryUsedMiB: number
  readonly incarnation: number
  readonly age: number
  /** Milliseconds since this node last synced the view (0 for its own). */
  readonly stalenessMillis: number
  /** A change feed announced a newer generation that was not pulled yet. */
  readonly pending: boolean
}

/** What a node sees, once per second. */
export interface Report {
  readonly node: string
  readonly views: ReadonlyArray<ViewRow>
  /** The node `query` picked, or why it could not answer. */
  readonly leastLoaded: string
  /** The owner's private counters (never sent to peers). */
  readonly samples: number
  readonly urgentSamples: number
  readonly deltasSent: number
  readonly snapshotsSent: number
  readonly immediate: number
}

const pad = (text: string, width: number) => text.length >= width ? text : text + " ".repeat(width - text.length)
const padStart = (text: string, width: number) => text.length >= width ? text : " ".repeat(width - text.length) + text

/**
 * The table of what each reporting node sees: one block per node, one row per
 * view it holds (`nodes` lists every node that should be there; one it does
 * not hold shows as missing).
 */
export const renderTable = (reports: ReadonlyArray<Report>, nodes: ReadonlyArray<string>): Array<string> => {
  const row = (cells: readonly [string, string, string, string, string, string]) =>
    `${pad(cells[0], 10)}${pad(cells[1], 14)}${padStart(cells[2], 6)}${padStart(cells[3], 9)}  ${pad(cells[4], 24)}${
      padStart(cells[5], 9)
    }`
  const lines = [row(["seen by", "node", "cpu %", "mem MiB", "generation (inc.age)", "staleness"])]
  for (const report of reports) {
    const views = new Map(report.views.map((view) => [view.source, view]))
    nodes.forEach((node, i) => {
      const view = views.get(node)
      const first = i === 0 ? report.node : ""
      const label = node === report.node ? `${node} (own)` : node
      if (view === undefined) return lines.push(row([first, label, "-", "-", "not seen", "-"]))
      const generation = `${view.incarnation}.${view.age}${view.pending ? " (newer pending)" : ""}`
      const staleness = node === report.node ? "own" : `${(view.stalenessMillis / 1000).toFixed(1)} s`
      return lines.push(row([first, label, view.cpuPercent.toFixed(1), String(view.memoryUsedMiB), generation, staleness]))
    })
    lines.push(
      `${pad("", 10)}query picks as least loaded: ${report.leastLoaded}`,
      `${pad("", 10)}private: ${report.samples} samples (${report.urgentSamples} urgent); ` +
        `sent ${report.deltasSent} deltas, ${report.snapshotsSent} snapshots, ${report.immediate} immediate`
    )
  }
  return lines
}

// ---- the node ---------------------------------------------------------------------------------

/** The secret the local demo uses when `DSTATE_SECRET` is not set. */
const demoSecret = "dstate-local-demo-secret"

/** What the node runs with, from its flags. */
interface Options {
  readonly id: string
  readonly port: number
  readonly host: string
  /** The host peers dial; undefined means `host`. */
  readonly advertise: string | undefined
  readonly seeds: ReadonlyArray<string>
  /** The file store's directory, or undefined for memory persistence. */
  readonly data: string | undefined
  readonly strategy: "push" | "feed"
  readonly report: "table" | "json"
  /** The port of the operations endpoints, or 0 for none. */
  readonly httpPort: number
  readonly httpHost: string
  readonly httpMinPeers: number
}

// Each flag parses to its type and is checked on its own; the CLI rejects a bad one with the usage.
const flags = {
  id: Flag.String("id").pipe(
    Flag.withMetavar("ID"),
    Flag.withDescription("the node id, unique in the cluster and stable across restarts (required)"),
    Flag.filter((id) => id.length > 0, () => "a non-empty node id")
  ),
  port: Flag.Int("port").pipe(
    Flag.withMetavar("P"),
    Flag.withDescription("the port to listen on (default 7100)"),
    Flag.withDefault(7100),
    Flag.filter((port) => port >= 0 && port <= 65535, () => "a port from 0 to 65535")
  ),
  host: Flag.String("host").pipe(
    Flag.withMetavar("H"),
    Flag.withDescription("the interface to listen on (default 127.0.0.1)"),
    Flag.withDefault("127.0.0.1")
  ),
  advertise: Flag.String("advertise").pipe(
    Flag.withMetavar("H"),
    Flag.withDescription("the host peers dial to reach this node (default: --host)"),
    Flag.optional
  ),
  seeds: Flag.String("seeds").pipe(
    Flag.withMetavar("host:port,..."),
    Flag.withDescription("nodes to join through; listing every node, itself included, is fine (default: none)"),
    Flag.withDefault(""),
    Flag.map((seeds) => seeds.split(",").map((s) => s.trim()).filter((s) => s.length > 0))
  ),
  data: Flag.String("data").pipe(
    Flag.withMetavar("DIR"),
    Flag.withDescription("keep the state in a crash-safe file store in DIR (a restart keeps incarnation and age)"),
    Flag.optional
  ),
  memory: Flag.Boolean("memory").pipe(
    Flag.withDescription("keep nothing beyond the process (the default when --data is not given)"),
    Flag.withDefault(false)
  ),
  strategy: Flag.Literals("strategy", ["push", "feed"]).pipe(
    Flag.withMetavar("push|feed"),
    Flag.withDescription("push every sample as a delta at once, or announce it in the change feed (default push)"),
    Flag.withDefault("push")
  ),
  report: Flag.Literals("report", ["table", "json"]).pipe(
    Flag.withMetavar("table|json"),
    Flag.withDescription("a table every 5 s, or one JSON line per second on stdout with logs on stderr (default table)"),
    Flag.withDefault("table")
  ),
  httpPort: Flag.Int("http-port").pipe(
    Flag.withMetavar("P"),
    Flag.withDescription("serve /healthz, /readyz, /metrics and /status on port P (default 0: off)"),
    Flag.withDefault(0),
    Flag.filter((port) => port >= 0 && port <= 65535, () => "a port from 0 (off) to 65535")
  ),
  httpHost: Flag.String("http-host").pipe(
    Flag.withMetavar("H"),
    Flag.withDescription("the interface the operations endpoints listen on (default 127.0.0.1)"),
    Flag.withDefault("127.0.0.1")
  ),
  httpMinPeers: Flag.Int("http-min-peers").pipe(
    Flag.withMetavar("N"),
    Flag.withDescription("peers that must be seen before /readyz answers 200 (default 0)"),
    Flag.withDefault(0),
    Flag.filter((n) => n >= 0, () => "a number of peers of at least 0")
  )
}

/** The node, until it is interrupted (Ctrl-C, SIGTERM) or fails. */
const runNode = (options: Options) => {
  const secret = process.env.DSTATE_SECRET ?? demoSecret

  // One node = the TCP runtime + persistence + the registry on top.
  const node = StateRegistry.layer.pipe(
    Layer.provideMerge(TcpRuntime.layer({
      nodeId: options.id,
      host: options.host,
      port: options.port,
      advertiseHost: options.advertise,
      seeds: options.seeds,
      secret: Redacted.make(secret)
    })),
    Layer.provide(
      options.data === undefined ? StatePersistence.layerMemory : FilePersistence.layerFile({ directory: options.data })
    )
  )

  // The operations endpoints sit on top of the node: on shutdown they stop first (after draining).
  const httpToken = process.env.DSTATE_HTTP_TOKEN
  // Browser read replicas and the dashboard, on the same server, when a web key is given.
  const webKey = process.env.DSTATE_WEB_KEY
  const web = webKey === undefined || webKey.length === 0
    ? Layer.empty
    : WebReplicas.layer({ key: Redacted.make(webKey), states: [NodeResource] })
  const withOperations = options.httpPort === 0 ? node : HttpOperations.layer({
    host: options.httpHost,
    port: options.httpPort,
    minPeers: options.httpMinPeers,
    token: httpToken === undefined || httpToken.length === 0 ? undefined : Redacted.make(httpToken)
  }).pipe(Layer.provideMerge(web), Layer.provideMerge(node))

  // The clock views are stamped with (`syncedAt`): monotonic milliseconds.
  const monotonicMillis = Effect.clockWith((clock) => Effect.sync(() => Number(clock.monotonicTimeNanosUnsafe()) / 1e6))

  const program = Effect.gen(function*() {
    if (process.env.DSTATE_SECRET === undefined) {
      yield* Effect.logWarning("DSTATE_SECRET is not set: using the built-in demo secret (loopback demos only)")
    }
    const resource = yield* StateRegistry.register(NodeResource, {
      strategy: options.strategy === "push" ? SyncStrategy.activePush() : SyncStrategy.feedLazyPull(),
      // A query waits at most this long for a stale peer before it reports it as stale.
      pullTimeout: "1 second"
    })
    const transport = yield* TcpRuntime.TcpTransport
    const loaded = (yield* resource.local).generation
    yield* Effect.log("node started").pipe(Effect.annotateLogs({
      address: `${transport.address.host}:${transport.address.port}`,
      seeds: options.seeds.join(","),
      persistence: options.data ?? "memory",
      incarnation: loaded.incarnation,
      age: loaded.age
    }))
    const operations = yield* Effect.serviceOption(HttpOperations.HttpOperations)
    if (Option.isSome(operations)) {
      const url = operations.value.url
      yield* Effect.log("operations endpoints").pipe(Effect.annotateLogs({
        healthz: `${url}/healthz`,
        readyz: `${url}/readyz`,
        metrics: `${url}/metrics`,
        status: `${url}/status`
      }))
    }
    const tags = [Os.hostname()]

    const report = Effect.gen(function*() {
      const views = yield* resource.snapshot
      const now = yield* monotonicMillis
      const picked = yield* resource.query({ maxStaleness: "3 seconds" }, leastLoaded).pipe(
        Effect.map((node) => node ?? "none"),
        Effect.catchTag("StalePeer", (e) => Effect.succeed(`unknown (${e.node} is stale)`))
      )
      const state = yield* resource.state
      const metrics = yield* resource.metrics
      const rows = [...views.values()].sort((a, b) => a.source < b.source ? -1 : 1).map((view): ViewRow => ({
        source: view.source,
        cpuPercent: view.value.cpuPercent,
        memoryUsedMiB: view.value.memoryUsedMiB,
        incarnation: view.generation.incarnation,
        age: view.generation.age,
        stalenessMillis: view.source === options.id ? 0 : Math.max(0, Math.round(now - view.syncedAt)),
        pending: view.pendingRemote !== undefined
      }))
      return {
        node: options.id,
        views: rows,
        leastLoaded: picked,
        samples: state.samples,
        urgentSamples: state.urgentSamples,
        deltasSent: metrics.deltasSent,
        snapshotsSent: metrics.snapshotsSent,
        immediate: metrics.immediate
      } satisfies Report
    })

    // Every second: sample, mutate (persisted, then sent), report.
    let tick = 0
    yield* Effect.gen(function*() {
      const reading = yield* read
      yield* resource.mutateWithDelta((state) => nextSample(state, reading, tags))
      const current = yield* report
      if (options.report === "json") {
        yield* Effect.sync(() => process.stdout.write(`${JSON.stringify(current)}\n`))
      } else if (tick++ % 5 === 0) {
        const held = current.views.map((view) => view.source)
        yield* Effect.sync(() => process.stdout.write(`${renderTable([current], held).join("\n")}\n\n`))
      }
    }).pipe(Effect.repeat(Schedule.spaced("1 second")))
  })

  // Under the launcher, logs go to stderr, one logfmt line each; stdout carries the reports.
  const logging = options.report === "json" ? Logger.layer([Logger.withConsoleError(Logger.formatLogFmt)]) : Layer.empty
  return program.pipe(
    Effect.provide(withOperations),
    // Reported here, inside the logging layer (a failure to listen, for example), rather than by runMain.
    Effect.tapCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logError(cause)),
    Effect.provide(logging)
  )
}

const command = Command.make("03_node", flags, (input) =>
  runNode({
    id: input.id,
    port: input.port,
    host: input.host,
    advertise: Option.getOrUndefined(input.advertise),
    seeds: input.seeds,
    data: Option.getOrUndefined(input.data),
    strategy: input.strategy,
    report: input.report,
    httpPort: input.httpPort,
    httpHost: input.httpHost,
    httpMinPeers: input.httpMinPeers
  })).pipe(
    Command.withDescription("One dstate node over TCP, publishing its machine's CPU and memory."),
    Command.validate(({ data, memory }) =>
      Option.isSome(data) && memory
        ? Effect.fail(new CliError.ValidationError({ message: "--data and --memory exclude each other" }))
        : Effect.void
    ),
    Command.withExamples([
      {
        command: "node examples/03_node.ts --id node-1 --host 0.0.0.0 --advertise 10.0.0.1 --port 7100 " +
          "--seeds 10.0.0.1:7100,10.0.0.2:7100 --data /var/lib/dstate/node-1",
        description: "a node on a machine of a cluster, with the secret in DSTATE_SECRET"
      }
    ])
  )

const main = () => {
  // Under the launcher, stdout is a pipe: when it breaks the launcher is gone, so stop (gracefully).
  process.stdout.on("error", () => process.kill(process.pid, "SIGTERM"))
  NodeRuntime.runMain(
    command.pipe(
      Command.run({ version: "0.1.0" }),
      // `--help` is the only built-in flag: version, completions and the wizard mean nothing for this demo node.
      Effect.provide(Layer.mergeAll(NodeServices.layer, CliConfig.layer({ builtIns: [GlobalFlag.Help] })))
    ),
    // The command prints a bad flag with the usage, and the node logs its own failures (above).
    { disableErrorReporting: true }
  )
}

if (import.meta.main) main()

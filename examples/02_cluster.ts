/**
 * A local dstate cluster: N node processes on 127.0.0.1 talking over TCP, and
 * a live table of what each of them sees.
 *
 * Each process runs `examples/03_node.ts`: a TCP runtime, file (or memory)
 * persistence and the registry, with the delta-aware `NodeResource` state
 * (its machine's CPU and memory, sampled every second). This launcher starts
 * them with every node as a seed, reads the report each prints once per
 * second, and redraws one table: per node, the views it holds (values,
 * generations, staleness) and the node its `query` picks as least loaded.
 * Ctrl-C stops every node gracefully (each tells its peers it is leaving).
 *
 * ```sh
 * npm start                                   # 3 nodes on ports 7100-7102
 * npm start -- --nodes 5 --base-port 7200     # 5 nodes on ports 7200-7204
 * npm start -- --memory                       # no persistence: new incarnations on every run
 * npm start -- --duration 8                   # stop after 8 s; exit 0 only if every node saw every node
 * npm start -- --http-port 9400               # operations endpoints of node i on 127.0.0.1:9400 + i - 1
 * npm start -- --http-port 0                  # no operations endpoints, no dashboard
 * ```
 *
 * Node 1 also serves the live dashboard of `dstate/web` at `GET /` of its operations server (by default
 * http://127.0.0.1:9464/): the launcher gives it a fresh web key, builds the dashboard's script when it is
 * stale (`scripts/build-web.ts`), and prints the dashboard's URL with a token (valid 12 hours) in its fragment.
 *
 * Options (`npm start -- --help` lists them): `--nodes N` (default 3), `--base-port P` (default 7100),
 * `--data DIR` (default `<tmpdir>/dstate-demo`; node i keeps its state in `DIR/node-i`, so a second run
 * continues from the saved generations) or `--memory`, `--strategy push|feed` (see 03_node.ts),
 * `--duration SECONDS` (also `DSTATE_DEMO_DURATION`): run that long, then wait up to 20 s more for every
 * node to see every other, stop, print the final table, and exit 0 when they converged, 1 otherwise. A
 * `--http-port P` (default 9464; 0: off): node i serves `/healthz`, `/readyz`, `/metrics` and `/status` on
 * 127.0.0.1:P + i - 1, and node 1 the dashboard at `/` (the URLs are printed at startup; try
 * `npm run dstate -- status --url ...`). A
 * bad flag or value prints the usage and what is wrong, and exits 1 before any node starts. The nodes use
 * `DSTATE_SECRET` when it is set, else the built-in demo secret.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Clock, Config, Deferred, Duration, Effect, Layer, Option, Redacted, Schedule } from "effect"
import { CliConfig, CliError, Command, Flag, GlobalFlag } from "effect/cli"
import { WebToken } from "dstate/web"
import { type ChildProcess, spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Os from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { renderTable, type Report } from "./03_node.ts"

const nodeScript = fileURLToPath(new URL("./03_node.ts", import.meta.url))

/** What the launcher runs, from its flags. */
interface Options {
  readonly nodes: number
  readonly basePort: number
  /** The directory under which node i keeps its state (`node-i`), or undefined for memory persistence. */
  readonly data: string | undefined
  readonly strategy: "push" | "feed"
  /** Seconds to run before checking convergence, or undefined to run until Ctrl-C. */
  readonly duration: number | undefined
  /** Node i serves the operations endpoints on `httpPort + i - 1`; 0 for none. */
  readonly httpPort: number
}

// Each flag parses to its type and is checked on its own; the CLI rejects a bad one with the usage.
const flags = {
  nodes: Flag.Int("nodes").pipe(
    Flag.withMetavar("N"),
    Flag.withDescription("node processes, node-1 to node-N (default 3)"),
    Flag.withDefault(3),
    Flag.filter((n) => n >= 1, () => "at least 1 node")
  ),
  basePort: Flag.Int("base-port").pipe(
    Flag.withMetavar("P"),
    Flag.withDescription("node i listens on P + i - 1 (default 7100)"),
    Flag.withDefault(7100),
    Flag.filter((port) => port >= 1 && port <= 65535, () => "a port from 1 to 65535")
  ),
  data: Flag.String("data").pipe(
    Flag.withMetavar("DIR"),
    Flag.withDescription("file persistence in DIR/node-i, kept across runs (default <tmpdir>/dstate-demo)"),
    Flag.withDefault(join(Os.tmpdir(), "dstate-demo"))
  ),
  memory: Flag.Boolean("memory").pipe(
    Flag.withDescription("no durable persistence: every run starts new incarnations (overrides --data)"),
    Flag.withDefault(false)
  ),
  strategy: Flag.Literals("strategy", ["push", "feed"]).pipe(
    Flag.withMetavar("push|feed"),
    Flag.withDescription("push every sample as a delta at once, or announce it in the change feed (default push)"),
    Flag.withDefault("push")
  ),
  duration: Flag.Finite("duration").pipe(
    Flag.withMetavar("SECONDS"),
    Flag.withDescription(
      "run that long (default: until Ctrl-C; also DSTATE_DEMO_DURATION), then exit 0 only if every node saw every node"
    ),
    Flag.withFallbackConfig(Config.Finite("DSTATE_DEMO_DURATION")),
    Flag.filter((seconds) => seconds > 0, () => "a number of seconds above 0"),
    Flag.optional
  ),
  httpPort: Flag.Int("http-port").pipe(
    Flag.withMetavar("P"),
    Flag.withDescription(
      "node i serves /healthz, /readyz, /metrics and /status on 127.0.0.1:P + i - 1, node 1 the dashboard at / (default 9464; 0: off)"
    ),
    Flag.withDefault(9464),
    Flag.filter((port) => port >= 0 && port <= 65535, () => "a port from 0 (off) to 65535")
  )
}

/** One node process, as the launcher follows it. */
interface NodeProcess {
  readonly id: string
  readonly process: ChildProcess
  /** The node's latest report. */
  last: Report | undefined
  /** Resolved with how the process ended. */
  readonly exited: Deferred.Deferred<string>
}

/** A logfmt line without its timestamp and fiber, prefixed with the node. */
const shortLog = (id: string, line: string) =>
  `${id}: ${line.replace(/^timestamp=\S+ /, "").replace(/ ?fiber=#\d+/, "")}`

/** Calls `f` with every non-empty line of a stream. */
const onLines = (stream: NodeJS.ReadableStream, f: (line: string) => void) =>
  createInterface({ input: stream }).on("line", (line) => {
    if (line.length > 0) f(line)
  })

const spawnNode = (
  options: Options,
  id: string,
  port: number,
  httpPort: number,
  seeds: string,
  onLog: (line: string) => void,
  webKey: string | undefined
) =>
  Effect.sync((): NodeProcess => {
    const args = [
      nodeScript,
      ...["--id", id, "--port", String(port), "--seeds", seeds, "--strategy", options.strategy, "--report", "json"],
      ...(options.data === undefined ? ["--memory"] : ["--data", join(options.data, id)]),
      // Every other node must be seen before the node reports itself ready.
      ...(httpPort === 0 ? [] : ["--http-port", String(httpPort), "--http-min-peers", String(options.nodes - 1)])
    ]
    // Own process group: a Ctrl-C in the terminal reaches the launcher only, which then stops the nodes itself.
    const env = webKey === undefined ? process.env : { ...process.env, DSTATE_WEB_KEY: webKey }
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], detached: true, env })
    const node: NodeProcess = { id, process: child, last: undefined, exited: Deferred.makeUnsafe<string>() }
    // stdout carries one JSON report per line; anything else is shown as a log line.
    onLines(child.stdout!, (line) => {
      if (line.startsWith("{")) node.last = JSON.parse(line) as Report
      else onLog(`${id}: ${line}`)
    })
    onLines(child.stderr!, (line) => onLog(shortLog(id, line)))
    child.on("exit", (code, signal) => {
      Deferred.doneUnsafe(node.exited, Effect.succeed(signal === null ? `exit ${code}` : `killed by ${signal}`))
    })
    return node
  })

/**
 * Stops every node at once with SIGINT (a graceful leave, like Ctrl-C on the
 * node itself); one still running after 5 s is killed.
 */
const stopAll = (nodes: ReadonlyArray<NodeProcess>) =>
  Effect.forEach(nodes, (node) =>
    Effect.gen(function*() {
      if (!Deferred.isDoneUnsafe(node.exited)) node.process.kill("SIGINT")
      return yield* Deferred.await(node.exited).pipe(
        Effect.timeoutOrElse({
          duration: "5 seconds",
          orElse: () => Effect.sync(() => node.process.kill("SIGKILL")).pipe(Effect.andThen(Deferred.await(node.exited)))
        })
      )
    }), { concurrency: "unbounded" })

/** Whether every node's latest report holds a view of every node. */
const converged = (reports: ReadonlyArray<Report | undefined>, ids: ReadonlyArray<string>) =>
  reports.every((report) => report !== undefined && ids.every((id) => report.views.some((view) => view.source === id)))

const seenCount = (report: Report | undefined, ids: ReadonlyArray<string>) =>
  report === undefined ? 0 : ids.filter((id) => report.views.some((view) => view.source === id)).length

const nodeIds = (options: Options) => Array.from({ length: options.nodes }, (_, i) => `node-${i + 1}`)

/**
 * Runs the cluster until Ctrl-C, the duration, or a node's unexpected exit;
 * leaves what the nodes reported last (before they were stopped) in `outcome`.
 */
const cluster = (options: Options, outcome: { final: ReadonlyArray<Report | undefined> }) => Effect.gen(function*() {
  const ids = nodeIds(options)
  const ports = ids.map((_, i) => options.basePort + i)
  const seeds = ports.map((port) => `127.0.0.1:${port}`).join(",")
  const httpPorts = ids.map((_, i) => options.httpPort === 0 ? 0 : options.httpPort + i)
  const tty = process.stdout.isTTY === true
  const startedAt = yield* Clock.currentTimeMillis
  const elapsed = Effect.map(Clock.currentTimeMillis, (now) => `${Math.floor((now - startedAt) / 1000)} s`)
  const header = `dstate: ${options.nodes} nodes on 127.0.0.1:${ports[0]}-${ports.at(-1)}, ` +
    `${options.data === undefined ? "memory persistence" : `file persistence in ${options.data}`}, ` +
    `strategy ${options.strategy}`
  /** The last lines the nodes logged, newest last. */
  const logTail: Array<string> = []
  const onLog = (line: string) => {
    logTail.push(line)
    if (logTail.length > 8) logTail.shift()
    // Without a terminal to redraw, log lines are passed through as they come.
    if (!tty) process.stdout.write(`${line}\n`)
  }

  // Node 1 serves the dashboard: a fresh web key for it, and its script built when stale.
  const webKey = options.httpPort === 0 ? undefined : Crypto.randomBytes(24).toString("base64url")
  if (webKey !== undefined) {
    yield* Effect.tryPromise(() => import("../scripts/build-web.ts").then((build) => build.ensureBuilt())).pipe(
      Effect.catch((error) => Effect.logWarning(`the dashboard's script could not be built: ${String(error)}`))
    )
  }

  // Start the nodes; whatever ends this program (Ctrl-C, the duration, a node dying) stops them all.
  const nodes = yield* Effect.acquireRelease(
    Effect.forEach(ids, (id, i) => spawnNode(options, id, ports[i], httpPorts[i], seeds, onLog, i === 0 ? webKey : undefined)),
    (nodes) =>
      Effect.gen(function*() {
        const finalReports = nodes.map((node) => node.last)
        outcome.final = finalReports
        const endings = yield* stopAll(nodes)
        const lines = [
          "",
          `final view of each node (${yield* elapsed}):`,
          ...renderTable(finalReports.filter((r) => r !== undefined), ids),
          ...nodes.map((node, i) => `${node.id} stopped: ${endings[i]}`),
          converged(finalReports, ids)
            ? `converged: every node saw all ${ids.length} nodes`
            : `not converged: ${
              nodes.map((node, i) => `${node.id} saw ${seenCount(finalReports[i], ids)}/${ids.length}`).join(", ")
            }`
        ]
        yield* Effect.sync(() => process.stdout.write(`${lines.join("\n")}\n`))
      })
  )

  // The live table: redrawn in place on a terminal, one summary line per second otherwise.
  let drawn = 0
  const draw = Effect.gen(function*() {
    const time = yield* elapsed
    if (!tty) {
      const seen = nodes.map((node) => `${node.id} sees ${seenCount(node.last, ids)}/${ids.length}`).join(", ")
      return yield* Effect.sync(() => process.stdout.write(`[${time}] ${seen}\n`))
    }
    const width = process.stdout.columns || 120
    const lines = [
      `${header}   (${time}, Ctrl-C stops)`,
      "",
      ...renderTable(nodes.flatMap((node) => node.last === undefined ? [] : [node.last]), ids),
      "",
      "recent logs:",
      ...logTail
    ].map((line) => line.slice(0, width - 1))
    const up = drawn > 0 ? `\x1b[${drawn}A` : ""
    drawn = lines.length
    yield* Effect.sync(() => process.stdout.write(`${up}\r\x1b[J${lines.join("\n")}\n`))
  })
  if (options.httpPort !== 0) {
    const urls = ids.map((id, i) =>
      `${id}: http://127.0.0.1:${httpPorts[i]}/healthz /readyz /metrics /status` +
      `  (npm run dstate -- status --url http://127.0.0.1:${httpPorts[i]})`
    )
    yield* Effect.sync(() => process.stdout.write(`operations endpoints:\n${urls.join("\n")}\n`))
    const token = yield* WebToken.issue(Redacted.make(webKey!), { states: "*", status: true, ttl: "12 hours", subject: "npm start" })
    yield* Effect.sync(() => process.stdout.write(`dashboard: http://127.0.0.1:${httpPorts[0]}/#token=${token}\n`))
  }
  if (!tty) yield* Effect.sync(() => process.stdout.write(`${header}\n`))
  yield* draw.pipe(Effect.repeat(Schedule.spaced("1 second")), Effect.forkScoped)

  // A node that exits by itself (a port in use, a crash) ends the demo.
  const anyExit = Effect.raceAll(
    nodes.map((node) => Effect.map(Deferred.await(node.exited), (how) => `${node.id} ${how}`))
  ).pipe(Effect.flatMap((what) => Effect.fail(`a node ended by itself: ${what}`)))
  const run = options.duration === undefined
    ? Effect.never
    : Effect.gen(function*() {
      yield* Effect.sleep(Duration.seconds(options.duration!))
      // Past the duration, give slow starters up to 20 s to see each other.
      yield* Effect.suspend(() => converged(nodes.map((n) => n.last), ids) ? Effect.void : Effect.fail("waiting")).pipe(
        Effect.retry(Schedule.spaced("200 millis")),
        Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.void })
      )
    })
  yield* Effect.raceFirst(run, anyExit)
})

const main = Effect.fnUntraced(function*(options: Options) {
  const outcome: { final: ReadonlyArray<Report | undefined> } = { final: [] }
  yield* Effect.scoped(cluster(options, outcome))
  if (!converged(outcome.final, nodeIds(options))) return yield* Effect.fail("the nodes did not all see each other")
})

const command = Command.make("02_cluster", flags, (input) =>
  main({
    nodes: input.nodes,
    basePort: input.basePort,
    data: input.memory ? undefined : input.data,
    strategy: input.strategy,
    duration: Option.getOrUndefined(input.duration),
    httpPort: input.httpPort
  })).pipe(
    Command.withDescription("A local dstate cluster: N node processes on 127.0.0.1 and a live table of what each sees."),
    // The one rule that involves two flags: the last node's port must exist.
    Command.validate(({ basePort, httpPort, nodes }) =>
      basePort + nodes - 1 > 65535
        ? Effect.fail(new CliError.ValidationError({ message: `--base-port ${basePort} leaves no port for node-${nodes}` }))
        : httpPort + nodes - 1 > 65535
        ? Effect.fail(new CliError.ValidationError({ message: `--http-port ${httpPort} leaves no port for node-${nodes}` }))
        : Effect.void
    ),
    Command.withExamples([
      { command: "npm start", description: "3 nodes on ports 7100-7102" },
      { command: "npm start -- --nodes 5 --base-port 7200", description: "5 nodes on ports 7200-7204" },
      { command: "npm start -- --memory", description: "no persistence: new incarnations on every run" },
      { command: "npm start -- --duration 8", description: "stop after 8 s; exit 0 only if every node saw every node" }
    ])
  )

command.pipe(
  Command.run({ version: "0.1.0" }),
  // `--help` is the only built-in flag: version, completions and the wizard mean nothing for a demo launcher.
  Effect.provide(Layer.mergeAll(NodeServices.layer, CliConfig.layer({ builtIns: [GlobalFlag.Help] }))),
  NodeRuntime.runMain
)

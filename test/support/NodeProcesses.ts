/**
 * Nodes in OS processes of their own (test/fixtures/tcpNode.ts), driven over
 * stdin/stdout one JSON object per line: starting one (with optional
 * settings, in a network namespace if asked) and waiting for its `ready` event, sending a command and waiting
 * for its reply, waiting for any condition on what it printed, reading the
 * log lines it wrote on stderr, stopping it gracefully, and its exit.
 */
import { type Duration, Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import * as ChildProcesses from "./ChildProcesses.ts"
import * as Netns from "./Netns.ts"

const fixture = fileURLToPath(new URL("../fixtures/tcpNode.ts", import.meta.url))

export type Message = Record<string, unknown>

export interface Child {
  readonly name: string
  readonly process: ChildProcess
  /** Every JSON line the child printed (events and replies), in order. */
  readonly messages: Array<Message>
  stderr: string
  closed: boolean
  nextId: number
  readonly waiters: Set<() => void>
}

/**
 * Waits until `find` returns something for the child's messages (re-checked
 * on every line and on exit); dies with the child's stderr after `within`.
 */
export const waitFor = <A>(child: Child, find: (messages: ReadonlyArray<Message>) => A | undefined, what: string, within: Duration.Input = "10 seconds") =>
  Effect.callback<A>((resume) => {
    const check = () => {
      const found = find(child.messages)
      if (found !== undefined) {
        child.waiters.delete(check)
        resume(Effect.succeed(found))
      } else if (child.closed) {
        child.waiters.delete(check)
        resume(Effect.die(new Error(`${child.name} exited while waiting for ${what}; stderr: ${child.stderr}`)))
      }
    }
    child.waiters.add(check)
    check()
    return Effect.sync(() => child.waiters.delete(check))
  }).pipe(
    Effect.timeoutOrElse({
      duration: within,
      orElse: () => Effect.die(new Error(`timed out waiting for ${what} on ${child.name}; stderr: ${child.stderr}`))
    })
  )

/** Waits until the child process is gone. */
export const awaitExit = (child: Child) => waitFor(child, () => child.closed ? true : undefined, "exit").pipe(
  Effect.catchDefect(() => Effect.void)
)

/** Heartbeat interval, fixed detector timeout, detector check interval and downAfter of a node process, in ms. */
export interface Heartbeat {
  readonly intervalMillis: number
  readonly timeoutMillis: number
  readonly checkMillis: number
  /** How long a member stays unreachable before it is down (default: the runtime's, 30 s). */
  readonly downAfterMillis?: number | undefined
}

/** Optional settings of a node process; each left out keeps the fixture's default. */
export interface Options {
  /** The cluster secret (default: the one every node process shares). */
  readonly secret?: string | undefined
  /** Time allowed for authentication of a new connection (default: the runtime's, 5 s). */
  readonly handshakeTimeoutMillis?: number | undefined
  /** How often refused connections are summed up in the log (default: the runtime's, 10 s). */
  readonly rejectionLogIntervalMillis?: number | undefined
  /** `"once"`: one connection attempt per peer or seed, no retry (seeds are dialed again after 5 s). */
  readonly reconnect?: "once" | undefined
  /** `"json"`: every log line on stderr is one JSON object (effect's `Logger.formatJson`), read with `logs`. */
  readonly logs?: "json" | undefined
  /** Runs the process in this network namespace (`ip netns exec`; see test/support/Netns.ts). */
  readonly netns?: string | undefined
  /** Interface to listen on and to advertise (default: the runtime's, 127.0.0.1). */
  readonly host?: string | undefined
  /** Port to listen on (default 0: chosen by the OS). */
  readonly port?: number | undefined
  /** Seeds as `"host:port"`, dialed besides the loopback ports given to `startNode`. */
  readonly seedAddresses?: ReadonlyArray<string> | undefined
  /** TCP connect timeout of dials (default: the runtime's, 5 s). */
  readonly connectTimeoutMillis?: number | undefined
}

/**
 * Starts one node process (test/fixtures/tcpNode.ts) and waits, up to 30 s,
 * for its `ready` event. The process is killed (SIGKILL) when the scope closes, if it
 * is still running.
 */
export const startNode = (name: string, directory: string, seeds: ReadonlyArray<number>, heartbeat: Heartbeat, options: Options = {}) =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync((): Child => {
        const { netns, seedAddresses, ...rest } = options
        const config = {
          ...rest,
          id: name,
          directory,
          seeds: [...seeds.map((port) => `127.0.0.1:${port}`), ...(seedAddresses ?? [])],
          heartbeat
        }
        const [command, args] = netns === undefined ?
          [process.execPath, [fixture, JSON.stringify(config)]] :
          Netns.exec(netns, process.execPath, [fixture, JSON.stringify(config)])
        const proc = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] })
        const child: Child = { name, process: proc, messages: [], stderr: "", closed: false, nextId: 0, waiters: new Set() }
        createInterface({ input: proc.stdout! }).on("line", (line) => {
          child.messages.push(JSON.parse(line) as Message)
          ChildProcesses.notify(child)
        })
        ChildProcesses.watch(child)
        return child
      }),
      (child) =>
        Effect.suspend(() => {
          if (child.closed) return Effect.void
          child.process.kill("SIGKILL")
          return awaitExit(child)
        })
    )
    // Loading the fixture takes seconds of CPU, many more on a loaded machine (a flood in progress, other tests):
    // a generous deadline, since no test measures how fast a process starts.
    const ready = yield* waitFor(child, (messages) => messages.find((m) => m.event === "ready"), "ready", "30 seconds")
    return { child, ready: ready as unknown as { readonly port: number } & Message }
  })

/** Sends one command and returns the reply; a failed command is a defect. */
export const request = (child: Child, command: Message) =>
  Effect.gen(function*() {
    const id = ++child.nextId
    child.process.stdin!.write(`${JSON.stringify({ ...command, id })}\n`)
    const reply = yield* waitFor(child, (messages) => messages.find((m) => m.id === id), `the reply to ${String(command.op)}`)
    if (reply.ok !== true) return yield* Effect.die(new Error(`${child.name}: ${String(command.op)} failed: ${String(reply.error)}`))
    return reply
  })

/**
 * Stops the node gracefully (closes its stdin, see the fixture) and waits
 * until it has exited; dies with its stderr if it is still running after 10 s.
 */
export const stop = (child: Child) =>
  Effect.suspend(() => {
    child.process.stdin!.end()
    return waitFor(child, () => child.closed ? true : undefined, "its exit after stdin closed")
  })

/** One log line of a node process started with `logs: "json"`. */
export interface LogLine {
  /** Upper case, as effect's JSON format writes it: `"INFO"`, `"WARN"`, ... */
  readonly level: string
  readonly message: unknown
  readonly annotations: Readonly<Record<string, unknown>>
}

/**
 * The complete log lines the child has written on stderr so far (with
 * `logs: "json"`); anything else on stderr (such as a warning of Node itself)
 * is skipped.
 */
export const logs = (child: Child): ReadonlyArray<LogLine> =>
  child.stderr.slice(0, child.stderr.lastIndexOf("\n") + 1).split("\n").flatMap((line) => {
    if (!line.startsWith("{")) return []
    const parsed = JSON.parse(line) as Partial<LogLine>
    return typeof parsed.level === "string" && parsed.annotations !== undefined ? [parsed as LogLine] : []
  })

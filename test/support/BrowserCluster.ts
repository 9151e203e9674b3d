/**
 * Real nodes for the browser suite: node processes (test/support/BrowserNode.ts)
 * on loopback, each with its operations server and web endpoint, started
 * with fixed ports so that a stopped node can be started again at the same
 * address; the dashboard's bundle built first when stale.
 */
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { ensureBuilt } from "../../scripts/build-web.ts"
import type { Config } from "./BrowserNode.ts"
import * as ChildProcesses from "./ChildProcesses.ts"
import { awaitExit, type Child, type Message, request, stop, waitFor } from "./NodeProcesses.ts"

const script = fileURLToPath(new URL("./BrowserNode.ts", import.meta.url))

export { request, stop }

/** The web key every node of the suite shares. */
export const key = "browser-suite-web-key-0123456789"

export interface Ready {
  readonly node: string
  readonly port: number
  readonly httpPort: number
  readonly url: string
}

/**
 * Starts one node process and waits (up to 30 s) for its `ready` event; it is
 * killed when the scope closes if still running.
 */
export const startNode = (config: Omit<Config, "key">) =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync((): Child => {
        const proc = spawn(process.execPath, [script, JSON.stringify({ ...config, key })], { stdio: ["pipe", "pipe", "pipe"] })
        const child: Child = { name: config.id, process: proc, messages: [], stderr: "", closed: false, nextId: 0, waiters: new Set() }
        createInterface({ input: proc.stdout! }).on("line", (line) => {
          if (line.startsWith("{")) child.messages.push(JSON.parse(line) as Message)
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
    const ready = yield* waitFor(child, (messages) => messages.find((m) => m.event === "ready"), "ready", "30 seconds")
    return { child, ready: ready as unknown as Ready }
  })

/** A token of `child`'s endpoint (every node shares the key). */
export const token = (child: Child, options: { readonly states?: ReadonlyArray<string> | "*"; readonly status?: boolean; readonly ttlMillis?: number } = {}) =>
  Effect.map(request(child, { op: "token", ...options }), (reply) => String(reply.token))

/** Builds the dashboard's bundle when it is missing or stale. */
export const buildDashboard = Effect.promise(() => ensureBuilt())

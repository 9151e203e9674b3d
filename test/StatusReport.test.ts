/**
 * Reading a node's `/status` over real HTTP: `StatusReport.fetch` and
 * `render` in process, then the `dstate status` command (`bin/dstate.ts`)
 * as a child process: its table, the token, and usage errors for bad flags.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import { NodeId, StatePersistence, StateRegistry } from "dstate"
import { HttpOperations, StatusReport } from "dstate/http"
import { TcpRuntime } from "dstate/node"
import { Fixtures } from "dstate/testing"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { buildInOwnScope, secret } from "./support/RealNodes.ts"

const cli = fileURLToPath(new URL("../bin/dstate.ts", import.meta.url))

let nodeCounter = 0

/** A single TCP node with the counter registered and mutated `mutations` times, and its endpoints. */
const startNode = (mutations: number, token?: string) =>
  Effect.gen(function*() {
    const id = NodeId.make(`report-${++nodeCounter}`)
    const node = StateRegistry.layer.pipe(
      Layer.provideMerge(TcpRuntime.layer({ nodeId: id, secret })),
      Layer.provide(StatePersistence.layerMemory)
    )
    const http = HttpOperations.layer(token === undefined ? {} : { token: Redacted.make(token) })
    const { context } = yield* buildInOwnScope(http.pipe(Layer.provideMerge(node)))
    const counter = yield* Context.get(context, StateRegistry.StateRegistry).register(Fixtures.Counter)
    for (let i = 0; i < mutations; i++) yield* counter.mutate((s) => ({ value: s.value + 1 }))
    const local = yield* counter.local
    return { id, url: Context.get(context, HttpOperations.HttpOperations).url, generation: local.generation }
  })

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs `dstate` with `args` (and `env`) to its exit. */
const dstate = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.callback<Run>((resume) => {
    const { DSTATE_HTTP_TOKEN: _, ...inherited } = process.env
    execFile(process.execPath, [cli, ...args], { env: { ...inherited, ...env } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
  })

describe("StatusReport", () => {
  it.live("fetch decodes /status and render prints it as a table", () =>
    Effect.gen(function*() {
      const node = yield* startNode(3)
      const status = yield* StatusReport.fetch(node.url).pipe(Effect.provide(FetchHttpClient.layer))
      assert.strictEqual(status.node, node.id)
      assert.strictEqual(status.states[0].counters.mutations, 3)
      const generation = `${node.generation.incarnation}.3`
      const lines = StatusReport.render(status).split("\n")
      assert.deepStrictEqual(lines.map((line) => line.trim().split(/\s+/).join(" ")), [
        `node ${node.id}: ready; members: none`,
        "",
        `state counter: Healthy, own generation ${generation}`,
        "owner generation staleness pending gaps failures last error",
        `${node.id} (own) ${generation} - - - -`,
        "counters: mutations 3",
        ""
      ])
      // Columns line up: the generation ends where its header does.
      assert.strictEqual(lines[4].indexOf(generation) + generation.length, lines[3].indexOf("generation") + "generation".length)
    }), { timeout: 20_000 })

  it.live("fetch fails with StatusUnavailable (401) without the token", () =>
    Effect.gen(function*() {
      const node = yield* startNode(0, "the-token")
      const exit = yield* Effect.exit(StatusReport.fetch(node.url).pipe(Effect.provide(FetchHttpClient.layer)))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
      assert.strictEqual(error?._tag, "Fail")
      if (error?._tag === "Fail") {
        assert.strictEqual(error.error._tag, "StatusUnavailable")
        assert.strictEqual(error.error.status, 401)
      }
      const ok = yield* StatusReport.fetch(node.url, { token: Redacted.make("the-token") }).pipe(
        Effect.provide(FetchHttpClient.layer)
      )
      assert.strictEqual(ok.node, node.id)
    }), { timeout: 20_000 })

  it.live("dstate status: the table, the token from the flag or DSTATE_HTTP_TOKEN, exit 1 and usage on bad flags", () =>
    Effect.gen(function*() {
      const node = yield* startNode(2, "cli-token")
      const withFlag = yield* dstate(["status", "--url", node.url, "--token", "cli-token"])
      assert.strictEqual(withFlag.code, 0, withFlag.stderr)
      assert.include(withFlag.stdout, `node ${node.id}: ready; members: none`)
      assert.include(withFlag.stdout, `${node.generation.incarnation}.2`)
      assert.include(withFlag.stdout, "counters: mutations 2")
      const withEnv = yield* dstate(["status", "--url", node.url], { DSTATE_HTTP_TOKEN: "cli-token" })
      assert.strictEqual(withEnv.code, 0, withEnv.stderr)
      assert.strictEqual(withEnv.stdout, withFlag.stdout)

      const without = yield* dstate(["status", "--url", node.url])
      assert.strictEqual(without.code, 1)
      assert.include(without.stderr, "401 Unauthorized")
      assert.strictEqual(without.stdout, "")

      const missing = yield* dstate(["status"])
      assert.strictEqual(missing.code, 1)
      assert.include(missing.stdout + missing.stderr, "Missing required flag: --url")
      const bad = yield* dstate(["status", "--url", "nope"])
      assert.strictEqual(bad.code, 1)
      assert.include(bad.stdout + bad.stderr, "an http:// or https:// URL")
    }), { timeout: 30_000 })
})

/**
 * The `dstate` command line: operations on running nodes over their HTTP
 * endpoints (`dstate/http`).
 *
 * ```sh
 * npm run dstate -- status --url http://127.0.0.1:9464              # the node's status as a table
 * npm run dstate -- status --url http://127.0.0.1:9464 --token T    # when the node requires a token
 * DSTATE_HTTP_TOKEN=T npm run dstate -- status --url http://127.0.0.1:9464
 * npm run dstate -- status --url http://127.0.0.1:9464 --json       # the decoded status as JSON
 * npm run dstate -- secret                     # a new cluster secret: 32 random bytes as base64
 * npm run dstate -- secret --hex               # the same as hex
 * ```
 *
 * `secret` prints 32 bytes (256 bits) from the system's CSPRNG, to pass as the `secret` of
 * `TcpRuntime.layer` (`Redacted.make(value)`), the same on every node.
 *
 * `status` reads `GET <url>/status`, decodes it with the `HttpOperations.Status` Schema and prints it with
 * `StatusReport.render`; it exits 1 with the reason when the node cannot be read (unreachable, 401, not a
 * status). A bad flag prints the usage and what is wrong, and exits 1.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Config, Effect, Layer, Option, Redacted, Schema } from "effect"
import { CliConfig, Command, Flag, GlobalFlag } from "effect/cli"
import { FetchHttpClient } from "effect/http"
import { HttpOperations, StatusReport } from "dstate/http"
import { randomBytes } from "node:crypto"

const status = Command.make("status", {
  url: Flag.String("url").pipe(
    Flag.withMetavar("URL"),
    Flag.withDescription("the node's operations endpoint, e.g. http://127.0.0.1:9464 (required)"),
    Flag.filter((url) => /^https?:\/\/[^/]+/.test(url), () => "an http:// or https:// URL")
  ),
  token: Flag.String("token").pipe(
    Flag.withMetavar("T"),
    Flag.withDescription("the node's bearer token (default: DSTATE_HTTP_TOKEN, else none)"),
    Flag.withFallbackConfig(Config.String("DSTATE_HTTP_TOKEN")),
    Flag.optional
  ),
  json: Flag.Boolean("json").pipe(
    Flag.withDescription("print the decoded status as JSON instead of a table"),
    Flag.withDefault(false)
  )
}, (input) =>
  Effect.gen(function*() {
    const token = Option.getOrUndefined(input.token)
    const report = yield* StatusReport.fetch(input.url, { token: token === undefined ? undefined : Redacted.make(token) })
    const text = input.json
      ? `${JSON.stringify(Schema.encodeSync(HttpOperations.Status)(report), null, 2)}\n`
      : StatusReport.render(report)
    yield* Effect.sync(() => process.stdout.write(text))
  }).pipe(
    Effect.catchTag("StatusUnavailable", (error) =>
      Effect.sync(() => {
        process.stderr.write(`${error.message}\n`)
        process.exitCode = 1
      }))
  )).pipe(Command.withDescription("Print a node's status (members, views held, staleness, sync status, counters)."))

const secret = Command.make("secret", {
  hex: Flag.Boolean("hex").pipe(Flag.withDescription("print the secret as hex instead of base64"), Flag.withDefault(false))
}, (input) =>
  Effect.sync(() => {
    const bytes = randomBytes(32)
    process.stdout.write(`${input.hex ? bytes.toString("hex") : bytes.toString("base64")}\n`)
  })).pipe(Command.withDescription("Print a new cluster secret: 32 random bytes (base64, or hex with --hex)."))

const dstate = Command.make("dstate").pipe(
  Command.withDescription("Operations on running dstate nodes over their HTTP endpoints, and a new cluster secret."),
  Command.withSubcommands([status, secret])
)

NodeRuntime.runMain(
  dstate.pipe(
    Command.run({ version: "0.1.0" }),
    Effect.provide(Layer.mergeAll(NodeServices.layer, FetchHttpClient.layer, CliConfig.layer({ builtIns: [GlobalFlag.Help] })))
  ),
  { disableErrorReporting: true }
)

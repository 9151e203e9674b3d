/**
 * A node's `/status` as an operator reads it: `fetch` gets it over HTTP
 * (effect's `HttpClient`) and decodes it with the `HttpOperations.Status`
 * Schema; `render` turns it into a plain-text table, one block per state
 * with a row per view held. The `dstate status` command (`bin/dstate.ts`)
 * is these two functions.
 *
 * @since 0.1.0
 */
import { Effect, Redacted, Schema } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { StatusUnavailable } from "../DStateError.ts"
import * as Generation from "../Generation.ts"
import { Status } from "./HttpOperations.ts"

/**
 * Options of `fetch`.
 *
 * @category models
 * @since 0.1.0
 */
export interface FetchOptions {
  /** The node's bearer token, when its endpoints require one. */
  readonly token?: Redacted.Redacted<string> | undefined
}

const decodeStatus = Schema.decodeUnknownEffect(Status)

/**
 * Reads and decodes `GET <url>/status`. Fails with `StatusUnavailable` when
 * the request fails, the answer is not 200 (401: a token is required or
 * wrong), or the body is not a `Status`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { StatusReport } from "dstate/http"
 *
 * const table = StatusReport.fetch("http://127.0.0.1:9464").pipe(
 *   Effect.map(StatusReport.render),
 *   Effect.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fetch = Effect.fn("StatusReport.fetch")(function*(baseUrl: string, options?: FetchOptions) {
  const url = `${baseUrl.replace(/\/+$/, "")}/status`
  const client = yield* HttpClient.HttpClient
  const request = options?.token === undefined
    ? HttpClientRequest.get(url)
    : HttpClientRequest.get(url).pipe(HttpClientRequest.bearerToken(Redacted.value(options.token)))
  const response = yield* client.execute(request).pipe(
    Effect.mapError((cause) => new StatusUnavailable({ url, reason: cause.message, cause }))
  )
  if (response.status !== 200) {
    const reason = response.status === 401 ? "401 Unauthorized: a valid bearer token is required (--token)" : `HTTP ${response.status}`
    return yield* new StatusUnavailable({ url, status: response.status, reason })
  }
  const body = yield* response.json.pipe(
    Effect.mapError((cause) => new StatusUnavailable({ url, status: 200, reason: "the body is not JSON", cause }))
  )
  return yield* decodeStatus(body).pipe(
    Effect.mapError((cause) =>
      new StatusUnavailable({ url, status: 200, reason: `the body is not a status: ${cause.message}`, cause })
    )
  )
})

const pad = (text: string, width: number) => text.length >= width ? text : text + " ".repeat(width - text.length)
const padStart = (text: string, width: number) => text.length >= width ? text : " ".repeat(width - text.length) + text

/** A table with a header row; columns as wide as their widest cell, numbers right-aligned. */
const table = (rows: ReadonlyArray<ReadonlyArray<string>>, right: ReadonlyArray<boolean>): Array<string> => {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)))
  return rows.map((row) =>
    row.map((cell, i) => right[i] ? padStart(cell, widths[i]) : pad(cell, widths[i])).join("  ").trimEnd()
  )
}

const seconds = (millis: number) => `${(millis / 1000).toFixed(1)} s`

/**
 * A status as text: the node, its readiness and members, then per state its
 * health and own generation, a row per view held (owner, generation
 * `incarnation.age`, staleness, a pending newer generation, gaps and failed
 * syncs), the members awaited and the counters that are not zero.
 *
 * @category combinators
 * @since 0.1.0
 */
export const render = (status: Status): string => {
  const readiness = status.draining ? "draining" : status.ready ? "ready" : "not ready"
  const lines = [
    `node ${status.node}: ${readiness}; members: ${status.members.length === 0 ? "none" : status.members.join(", ")}`
  ]
  for (const reason of status.reasons) lines.push(`  - ${reason}`)
  for (const state of status.states) {
    lines.push("", `state ${state.name}: ${state.health}, own generation ${Generation.format(state.generation)}`)
    const sync = new Map(state.syncStatus.map((peer) => [peer.node, peer]))
    const rows = [["owner", "generation", "staleness", "pending", "gaps", "failures", "last error"]]
    for (const view of state.views) {
      const peer = sync.get(view.node)
      const own = view.node === status.node
      rows.push([
        own ? `${view.node} (own)` : view.node,
        Generation.format(view.generation),
        own ? "-" : seconds(view.stalenessMillis),
        view.pendingRemote === undefined ? "-" : Generation.format(view.pendingRemote),
        own ? "-" : String(peer?.gapCount ?? 0),
        own ? "-" : String(peer?.consecutiveFailures ?? 0),
        peer?.lastError ?? ""
      ])
    }
    lines.push(...table(rows, [false, true, true, true, true, true, false]).map((line) => `  ${line}`))
    if (state.awaiting.length > 0) lines.push(`  awaiting the view of: ${state.awaiting.join(", ")}`)
    if (state.lastSaveFailure !== undefined) lines.push(`  last save failed: ${state.lastSaveFailure}`)
    const counters = Object.entries(state.counters).filter(([, value]) => value !== 0)
    lines.push(`  counters: ${counters.length === 0 ? "all zero" : counters.map(([key, value]) => `${key} ${value}`).join(", ")}`)
  }
  if (status.states.length === 0) lines.push("", "no state registered")
  return `${lines.join("\n")}\n`
}

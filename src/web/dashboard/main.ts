/// <reference lib="dom" />
/**
 * The dashboard, in the browser: one `WebClient` of the node that served
 * the page, reading every state its token allows (by name: values stay
 * encoded) and the node's status, rendered twice a second: the members and
 * their reachability, every state's views per owner (generation, staleness,
 * sync status), and two small plots over the last five minutes, mutations
 * per second per state (from the generations seen, so cluster-wide) and the
 * stalest view per state. The token comes from the page's fragment
 * (`/#token=...`).
 * @internal
 */
import { Cause, Clock, Effect, Option, Schedule, Stream } from "effect"
import type { StateView } from "../../StateView.ts"
import * as WebClient from "../WebClient.ts"

const samples = 300
const palette = ["#3b82f6", "#e4572e", "#2e9d5b", "#a855f7", "#d08a1c", "#0ea5e9", "#db2777", "#64748b"]

const element = <K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Record<string, string> = {}, text?: string) => {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value)
  if (text !== undefined) node.textContent = text
  return node
}

const byId = (id: string) => document.getElementById(id)!

const millis = (ms: number) =>
  ms < 1000 ? `${Math.round(ms)} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`

interface Series {
  readonly rate: Array<number>
  readonly staleness: Array<number>
  last: Map<string, { readonly incarnation: number; readonly age: number }> | undefined
}

const program = Effect.gen(function*() {
  const params = new URLSearchParams(location.hash.slice(1))
  const token = params.get("token") ?? ""
  const path = document.querySelector<HTMLMetaElement>("meta[name=dstate-web-path]")?.content ?? "/web"
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`
  const clock = yield* Clock.Clock
  const now = () => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000

  const client = yield* WebClient.make({ url, token, states: "*", status: true })
  const names = [...(yield* client.states)].sort()
  const replicas = yield* Effect.forEach(names, (name) => client.raw(name))
  const series = new Map<string, Series>(names.map((name) => [name, { rate: [], staleness: [], last: undefined }]))
  let connection: WebClient.ConnectionState = yield* client.connectionState
  let status: WebClient.Status | undefined

  yield* Effect.forkChild(Stream.runForEach(client.connection, (state) => Effect.sync(() => (connection = state))))
  yield* Effect.forkChild(
    Stream.runForEach(client.status, (latest) => Effect.sync(() => (status = Option.getOrUndefined(latest) ?? status)))
  )

  const renderConnection = () => {
    const badge = byId("connection")
    const [text, style] = connection._tag === "Connected"
      ? ["live", "ok"]
      : connection._tag === "Connecting"
      ? [`connecting (attempt ${connection.attempt})`, "warn"]
      : connection._tag === "Disconnected"
      ? [`disconnected, retrying in ${millis(connection.retryInMillis)}`, "bad"]
      : [`refused: ${connection.error.reason}`, "bad"]
    badge.textContent = text
    badge.className = `pill ${style}`
    badge.dataset.state = connection._tag
    if (connection._tag === "Connected") byId("node").textContent = `node ${connection.node}`
  }

  const renderMembers = () => {
    const body = byId("members").querySelector("tbody")!
    body.replaceChildren()
    if (status === undefined) return
    const unreachable = new Map(status.unreachable.map((u) => [u.node, u.since]))
    const rows = [status.node, ...status.members.filter((m) => m !== status!.node)]
    for (const node of rows) {
      const since = unreachable.get(node)
      const row = element("tr", { "data-member": node })
      row.append(element("td", {}, node))
      const cell = since === undefined
        ? element("td", { class: "ok" }, node === status.node ? "this node" : "reachable")
        : element("td", { class: "bad" }, `unreachable for ${millis(clock.currentTimeMillisUnsafe() - since)}`)
      row.append(cell)
      body.append(row)
    }
  }

  const renderStates = (maps: ReadonlyArray<ReadonlyMap<string, StateView<unknown>>>) => {
    const container = byId("states")
    container.replaceChildren()
    const at = now()
    names.forEach((name, i) => {
      const views = [...maps[i].values()].sort((a, b) => (a.source < b.source ? -1 : 1))
      const peers = new Map(status?.states.find((s) => s.name === name)?.peers.map((p) => [p.node, p]) ?? [])
      const mutations = status?.states.find((s) => s.name === name)?.mutations
      container.append(element("h2", {}, `${name}`))
      if (mutations !== undefined) container.append(element("div", { class: "muted" }, `${mutations} mutations committed on this node`))
      const table = element("table", { "data-state": name })
      const head = element("tr")
      for (const title of ["owner", "generation", "staleness", "modified", "sync", "size"]) head.append(element("th", {}, title))
      table.append(element("thead"))
      table.tHead!.append(head)
      const body = element("tbody")
      for (const view of views) {
        const staleness = at - view.syncedAt
        const peer = peers.get(view.source)
        const sync = view.source === status?.node
          ? ["owner (this node)", "ok"]
          : view.pendingRemote !== undefined
          ? [`pending ${view.pendingRemote.incarnation}:${view.pendingRemote.age}`, "warn"]
          : peer !== undefined && peer.consecutiveFailures > 0
          ? [`${peer.consecutiveFailures} failures${peer.lastError === undefined ? "" : `: ${peer.lastError}`}`, "bad"]
          : ["in sync", "ok"]
        const row = element("tr", { "data-owner": view.source })
        row.append(element("td", {}, view.source))
        row.append(element("td", { "data-generation": `${view.generation.incarnation}:${view.generation.age}` }, `${view.generation.incarnation}:${view.generation.age}`))
        row.append(element("td", { class: staleness > 5000 ? "warn" : "" }, millis(staleness)))
        row.append(element("td", {}, `${millis(Math.max(0, clock.currentTimeMillisUnsafe() - view.modifiedAt))} ago`))
        row.append(element("td", { class: sync[1] }, sync[0]))
        row.append(element("td", { class: "muted" }, `${(view.value as Uint8Array).length} B`))
        body.append(row)
      }
      table.append(body)
      container.append(table)
    })
  }

  const sample = (maps: ReadonlyArray<ReadonlyMap<string, StateView<unknown>>>) => {
    const at = now()
    names.forEach((name, i) => {
      const s = series.get(name)!
      const current = new Map([...maps[i]].map(([owner, view]) => [owner, view.generation]))
      let changes = 0
      if (s.last !== undefined) {
        for (const [owner, generation] of current) {
          const before = s.last.get(owner)
          if (before !== undefined && before.incarnation === generation.incarnation) changes += generation.age - before.age
          else if (before === undefined || generation.incarnation > before.incarnation) changes += generation.age
        }
      }
      s.last = current
      let stalest = 0
      for (const view of maps[i].values()) stalest = Math.max(stalest, at - view.syncedAt)
      s.rate.push(changes)
      s.staleness.push(stalest)
      if (s.rate.length > samples) s.rate.shift()
      if (s.staleness.length > samples) s.staleness.shift()
    })
  }

  const plot = (id: string, pick: (s: Series) => ReadonlyArray<number>, unit: string) => {
    const canvas = byId(id) as HTMLCanvasElement
    const context = canvas.getContext("2d")
    if (context === null) return
    const { height, width } = canvas
    context.clearRect(0, 0, width, height)
    let max = 1
    for (const s of series.values()) for (const v of pick(s)) max = Math.max(max, v)
    context.fillStyle = "#8a8f98"
    context.font = "11px system-ui"
    context.fillText(`${Math.round(max)} ${unit}`, 4, 12)
    context.fillText("5 min ago", 4, height - 4)
    context.fillText("now", width - 24, height - 4)
    let i = 0
    for (const s of series.values()) {
      const values = pick(s)
      context.strokeStyle = palette[i++ % palette.length]
      context.lineWidth = 1.5
      context.beginPath()
      values.forEach((v, x) => {
        const px = width - (values.length - 1 - x) * (width / samples)
        const py = height - 16 - (v / max) * (height - 32)
        if (x === 0) context.moveTo(px, py)
        else context.lineTo(px, py)
      })
      context.stroke()
    }
  }

  const renderLegend = () => {
    const legend = byId("legend")
    legend.replaceChildren()
    names.forEach((name, i) => {
      const item = element("span", { style: `color: ${palette[i % palette.length]}; margin-right: 1rem` }, `■ ${name}`)
      legend.append(item)
    })
  }

  renderLegend()
  const maps = () => Effect.forEach(replicas, (replica) => replica.snapshot)
  const render = Effect.gen(function*() {
    const current = yield* maps()
    renderConnection()
    renderMembers()
    renderStates(current as ReadonlyArray<ReadonlyMap<string, StateView<unknown>>>)
    byId("error").textContent = ""
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered ?? "0") + 1)
  })
  const tick = Effect.gen(function*() {
    sample((yield* maps()) as ReadonlyArray<ReadonlyMap<string, StateView<unknown>>>)
    plot("rate", (s) => s.rate, "/s")
    plot("staleness", (s) => s.staleness, "ms")
  })
  yield* Effect.forkChild(Effect.repeat(tick, Schedule.spaced("1 second")))
  yield* Effect.repeat(render, Schedule.spaced("250 millis"))
})

Effect.runFork(
  Effect.scoped(program).pipe(
    Effect.catchCause((cause) =>
      Effect.sync(() => {
        const badge = byId("connection")
        badge.textContent = "refused"
        badge.className = "pill bad"
        badge.dataset.state = "Refused"
        const error = Cause.squash(cause) as { readonly _tag?: string; readonly message?: string }
        byId("error").textContent = `${error._tag ?? "Error"}: ${error.message ?? String(error)}`
      })
    )
  )
)

/**
 * The dashboard in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core), served by node 1 of a 3-node cluster of real node
 * processes on loopback: the page loads and shows every node (members and
 * each state's owners); a mutation on node 2 appears on the page within
 * `visibleWithin`; the page reconnects after node 1 restarts (and shows its
 * new incarnation); a bad token is refused with its reason. The test saves a
 * screenshot of the dashboard to docs/dashboard.png.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { fileURLToPath } from "node:url"
import type { Page } from "playwright-core"
import { launch } from "./support/BrowserChromium.ts"
import { buildDashboard, request, startNode, stop, token } from "./support/BrowserCluster.ts"

/** The bound on mutate-to-visible this suite states: a mutation on any node is on the page within it. */
const visibleWithin = 3_000

const screenshot = fileURLToPath(new URL("../docs/dashboard.png", import.meta.url))

const waitFor = (page: Page, expression: string, timeout = 20_000) =>
  Effect.promise(() => page.waitForFunction(expression, undefined, { timeout, polling: 50 })).pipe(Effect.asVoid)

const text = (page: Page, selector: string) => Effect.promise(() => page.locator(selector).allInnerTexts())

const ownerRow = (state: string, owner: string) => `table[data-state="${state}"] tr[data-owner="${owner}"]`

const generationOf = (page: Page, state: string, owner: string) =>
  Effect.promise(() => page.locator(`${ownerRow(state, owner)} td[data-generation]`).getAttribute("data-generation"))

describe("dashboard (headless Chromium)", () => {
  it.live("loads from a 3-node cluster, shows every node, a mutation within the bound, and reconnects after a restart", () =>
    Effect.gen(function*() {
      yield* buildDashboard
      const one = yield* startNode({ id: "node-1", port: 0, httpPort: 0, seeds: [] })
      const seed = `127.0.0.1:${one.ready.port}`
      const two = yield* startNode({ id: "node-2", port: 0, httpPort: 0, seeds: [seed] })
      const three = yield* startNode({ id: "node-3", port: 0, httpPort: 0, seeds: [seed] })
      const context = yield* launch
      const page = yield* Effect.promise(() => context.newPage())
      const dashboardToken = yield* token(one.child, { status: true, ttlMillis: 600_000 })
      yield* Effect.promise(() => page.goto(`${one.ready.url}/#token=${dashboardToken}`))

      // Every node: three members, and three owners in each state's table.
      yield* waitFor(page, `document.querySelectorAll("#members tr[data-member]").length === 3 &&
        document.querySelectorAll('table[data-state="counter"] tr[data-owner]').length === 3 &&
        document.querySelectorAll('table[data-state="node_resource"] tr[data-owner]').length === 3`)
      assert.deepStrictEqual((yield* text(page, "#members tr[data-member] td:first-child")).sort(), ["node-1", "node-2", "node-3"])
      assert.deepStrictEqual(yield* text(page, "#connection"), ["live"])

      // A mutation on node 2 is on the page within the bound.
      const before = yield* Clock.currentTimeMillis
      const reply = yield* request(two.child, { op: "set", value: 42 })
      const generation = reply.generation as { readonly incarnation: number; readonly age: number }
      const expected = `${generation.incarnation}:${generation.age}`
      yield* waitFor(
        page,
        `document.querySelector('${ownerRow("counter", "node-2")} td[data-generation]')?.dataset.generation === "${expected}"`,
        visibleWithin
      )
      const visibleAfter = (yield* Clock.currentTimeMillis) - before
      assert.isAtMost(visibleAfter, visibleWithin)
      yield* Effect.log(`mutation on node-2 visible on the page after ${visibleAfter} ms`)
      assert.strictEqual(yield* generationOf(page, "counter", "node-2"), expected)

      // Some traffic for the plots, then the screenshot.
      for (let i = 1; i <= 12; i++) {
        yield* request([one, two, three][i % 3].child, { op: "set", value: i })
        yield* Effect.sleep("250 millis")
      }
      yield* waitFor(page, `Number(document.body.dataset.rendered) > 20`)
      yield* Effect.promise(() => page.screenshot({ path: screenshot, fullPage: true }))

      // Node 1 (the page's node) stops and starts again at the same address: the page reconnects.
      const incarnationBefore = Number((yield* generationOf(page, "counter", "node-1"))!.split(":")[0])
      yield* stop(one.child)
      yield* waitFor(page, `document.getElementById("connection").dataset.state !== "Connected"`)
      const again = yield* startNode({ id: "node-1", port: one.ready.port, httpPort: one.ready.httpPort, seeds: [] })
      assert.strictEqual(again.ready.httpPort, one.ready.httpPort)
      yield* waitFor(page, `document.getElementById("connection").dataset.state === "Connected" &&
        document.querySelectorAll('table[data-state="counter"] tr[data-owner]').length === 3`, 30_000)
      const incarnationAfter = Number((yield* generationOf(page, "counter", "node-1"))!.split(":")[0])
      assert.isAbove(incarnationAfter, incarnationBefore)
      assert.deepStrictEqual((yield* text(page, "#members tr[data-member] td:first-child")).sort(), ["node-1", "node-2", "node-3"])
    }), { timeout: 120_000 })

  it.live("a bad token is refused, with its reason on the page", () =>
    Effect.gen(function*() {
      yield* buildDashboard
      const one = yield* startNode({ id: "node-9", port: 0, httpPort: 0, seeds: [] })
      const context = yield* launch
      const page = yield* Effect.promise(() => context.newPage())
      yield* Effect.promise(() => page.goto(`${one.ready.url}/#token=v1.bad.token`))
      yield* waitFor(page, `document.getElementById("connection").dataset.state === "Refused"`)
      const error = (yield* text(page, "#error"))[0]
      assert.include(error, "WebTokenRefused")
      assert.include(error, "BadSignature")
      assert.strictEqual(yield* Effect.promise(() => page.locator("table[data-state]").count()), 0)
    }), { timeout: 60_000 })
})

/**
 * `npm run bench`: runs every benchmark, prints a Markdown table and writes
 * bench/results/results.json and bench/results/results.md.
 *
 * `npm run bench -- persistence` (any benchmark names: `inprocess`, `tcp`,
 * `persistence`, `groupcommit`, `manystates`, `hostile`, `membership`, `web`, `acks`: A1 alone, also part of `tcp`) runs only those
 * and prints their table; the results files
 * are left alone (they hold complete runs, all from one machine).
 */
import { Effect } from "effect"
import { writeFileSync } from "node:fs"
import * as os from "node:os"
import { run as inprocess, type Row } from "./inprocess.ts"
import { run as groupcommit } from "./groupCommit.ts"
import { run as hostile } from "./hostile.ts"
import { run as manystates } from "./manyStates.ts"
import { run as membership } from "./membership.ts"
import { run as persistence } from "./persistence.ts"
import { run as tcp, runAcks as acks } from "./tcp.ts"
import { run as web } from "./web.ts"

/** Every benchmark, in the order of the table. */
const benchmarks = [
  { name: "inprocess", run: inprocess },
  { name: "tcp", run: tcp },
  { name: "persistence", run: persistence },
  { name: "groupcommit", run: groupcommit },
  { name: "manystates", run: manystates },
  { name: "hostile", run: hostile },
  { name: "membership", run: membership },
  { name: "web", run: web },
  // Part of `tcp`; on its own for a quick look at A1 (never in a full run).
  { name: "acks", run: acks, partOf: "tcp" }
]
const filter = process.argv.slice(2)
const unknown = filter.filter((name) => !benchmarks.some((b) => b.name === name))
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(", ")}; known: ${benchmarks.map((b) => b.name).join(", ")}`)
  process.exit(2)
}
const selected = benchmarks.filter((b) => filter.length === 0 ? !("partOf" in b) : filter.includes(b.name))

const format = (n: number) => Math.abs(n) >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2)

const program = Effect.gen(function*() {
  const rows: Array<Row> = []
  for (const benchmark of selected) rows.push(...(yield* benchmark.run))
  const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}`
  const lines = [
    `Machine: ${machine}`,
    "",
    "| id | benchmark | dstate | baseline | ratio | target | met |",
    "|---|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.id} | ${r.name} | ${format(r.value)} ${r.unit} | ${format(r.baseline)} (${r.baselineName}) | ${r.ratio.toFixed(3)} | ${r.target} | ${r.met ? "yes" : "no"} |`
    )
  ]
  const md = lines.join("\n")
  console.log(md)
  if (filter.length > 0) return
  writeFileSync(new URL("./results/results.md", import.meta.url), md + "\n")
  writeFileSync(new URL("./results/results.json", import.meta.url), JSON.stringify({ machine, rows }, null, 2) + "\n")
})

Effect.runPromise(program as Effect.Effect<void, unknown>)

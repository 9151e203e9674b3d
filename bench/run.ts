/**
 * `npm run bench`: runs every benchmark, prints a Markdown table and writes
 * bench/results/results.json and bench/results/results.md.
 */
import { Effect } from "effect"
import { writeFileSync } from "node:fs"
import * as os from "node:os"
import { run as inprocess, type Row } from "./inprocess.ts"

const format = (n: number) => Math.abs(n) >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2)

const program = Effect.gen(function*() {
  const rows: Array<Row> = [...(yield* inprocess)]
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
  writeFileSync(new URL("./results/results.md", import.meta.url), md + "\n")
  writeFileSync(new URL("./results/results.json", import.meta.url), JSON.stringify({ machine, rows }, null, 2) + "\n")
})

Effect.runPromise(program as Effect.Effect<void, unknown>)

/**
 * The fault-matrix sweep: `npm run sim -- --seeds N` runs N seeds in every
 * cell (fault × strategy shape × cluster size) and prints a Markdown table
 * per fault with, per cell: runs, safety violations (runs with at least one
 * safety or durability violation), liveness failures (runs that did not
 * converge as expected within the strategy's bound), expected
 * non-convergence (pure active push losing its last write), the worst
 * convergence time (simulated) and messages per mutation. Failing runs are
 * printed with their seed as they happen.
 *
 * Options: --seeds N (per cell, default 5), --root R (root seed, default
 * 20261201), --faults a,b --strategies a,b --sizes 1,2 (filters),
 * --churn-cycles N, --out FILE (also write the report there), --awaits (half
 * the mutations await acknowledgements, checked as they return, and every
 * node's awaited write after the heal must be acknowledged; adds a column of
 * awaited writes acknowledged / timed out / unsatisfiable), --detector (the
 * simulated failure detector on: members unreachable, then down and
 * re-joined; the totals add what it did), --observed N (the checker watches N
 * nodes of each run and only they read in the quiet window; default all),
 * --scale (the scale matrix: sizes 100 and 500, faults none, loss,
 * partition, churn and crash, 8 watched nodes, unless given). `--lifeguard N` instead measures
 * false downs under an overloaded node over N seeds, with and without local
 * health awareness (`Simulation.lifeguard`), and prints that table only.
 *
 * Every seed is derived from the root seed and the cell, so a run is
 * reproduced with `Simulation.run(scenario, seed)` alone.
 */
import { Effect } from "effect"
import { writeFileSync } from "node:fs"
import { Simulation } from "../src/testing/index.ts"

const args = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? undefined : args[i + 1]
}
const list = <A extends string>(name: string, all: ReadonlyArray<A>, preset?: ReadonlyArray<A>): ReadonlyArray<A> => {
  const value = option(name)
  if (value === undefined) return preset ?? all
  const wanted = value.split(",")
  for (const w of wanted) if (!all.includes(w as A)) throw new Error(`unknown ${name}: ${w} (one of ${all.join(", ")})`)
  return all.filter((a) => wanted.includes(a))
}

const seedsPerCell = Number(option("seeds") ?? 5)
const root = Number(option("root") ?? 20261201)
const scale = args.includes("--scale")
const faults = list("faults", Simulation.faults, scale ? Simulation.scaleFaults : undefined)
const strategies = list("strategies", Simulation.strategyShapes)
const sizes = (option("sizes")?.split(",").map(Number)) ?? (scale ? Simulation.scaleSizes : Simulation.clusterSizes)
const observed = option("observed") !== undefined ? Number(option("observed")) : scale ? Simulation.scaleObserved : undefined
const churnCycles = option("churn-cycles") === undefined ? undefined : Number(option("churn-cycles"))
const out = option("out")
const awaits = args.includes("--awaits")
const detector = args.includes("--detector")
const membership = { unreachable: 0, reachable: 0, down: 0, rejoined: 0, falseDown: 0, falseUnreachable: 0 }

const lifeguardSeeds = option("lifeguard")
if (lifeguardSeeds !== undefined) {
  const report: Array<string> = [
    `# False downs under an overloaded node: ${lifeguardSeeds} seeds, root seed ${root}`,
    "",
    "5 nodes, 30 simulated minutes per run, detector defaults (probe 1 s, unreachable after 5 s, down after 30 s);",
    "one node overloaded in episodes of 5 to 300 s between healthy spells of 10 to 60 s; a healthy node crashes halfway.",
    "",
    "| local health | runs | overloaded (min, total) | false unreachable | false downs | runs with a false down | crash detected after (s, worst) |",
    "|---|---:|---:|---:|---:|---:|---:|"
  ]
  for (const localHealth of [false, true]) {
    const sum = { runs: 0, overloaded: 0, falseUnreachable: 0, falseDown: 0, runsWithFalseDown: 0, worstDetection: 0 }
    for (let k = 0; k < Number(lifeguardSeeds); k++) {
      const result = await Effect.runPromise(Simulation.lifeguard({ localHealth }, Simulation.deriveSeed(root, `lifeguard/${k}`)))
      sum.runs++
      sum.overloaded += result.overloadedMillis
      sum.falseUnreachable += result.stats.falseUnreachable
      sum.falseDown += result.stats.falseDown
      if (result.stats.falseDown > 0) sum.runsWithFalseDown++
      sum.worstDetection = Math.max(sum.worstDetection, result.crashDetectedMillis ?? Number.POSITIVE_INFINITY)
    }
    report.push(
      `| ${localHealth ? "on" : "off"} | ${sum.runs} | ${(sum.overloaded / 60_000).toFixed(0)} | ${sum.falseUnreachable} | ${sum.falseDown} | ${sum.runsWithFalseDown} | ${
        (sum.worstDetection / 1000).toFixed(0)
      } |`
    )
  }
  for (const line of report) console.log(line)
  if (out !== undefined) writeFileSync(out, report.join("\n") + "\n")
  process.exit(0)
}

interface Cell {
  readonly strategy: Simulation.StrategyShape
  readonly nodes: number
  runs: number
  safety: number
  liveness: number
  expectedStuck: number
  worstConvergence: number | undefined
  frames: number
  mutations: number
  acks: { acknowledged: number; timedOut: number; unsatisfiable: number }
}

const lines: Array<string> = []
const emit = (line: string) => {
  lines.push(line)
  console.log(line)
}

const totals = { runs: 0, safety: 0, liveness: 0, expectedStuck: 0, failures: [] as Array<string> }
const started = performance.now()
const cpuStart = process.cpuUsage()

emit(`# Fault matrix: ${seedsPerCell} seeds per cell, root seed ${root}`)
emit("")
emit(
  "Columns: runs; runs with a safety or durability violation; runs that did not converge as expected within the " +
    "strategy's bound; runs where pure active push was expected not to converge (and did not); worst convergence " +
    "time after the final heal (simulated ms); frames sent up to the heal per acknowledged mutation (mean)."
)
for (const fault of faults) {
  const cells: Array<Cell> = []
  for (const strategy of strategies) {
    for (const nodes of sizes) {
      const cell: Cell = {
        strategy,
        nodes,
        runs: 0,
        safety: 0,
        liveness: 0,
        expectedStuck: 0,
        worstConvergence: undefined,
        frames: 0,
        mutations: 0,
        acks: { acknowledged: 0, timedOut: 0, unsatisfiable: 0 }
      }
      for (let k = 0; k < seedsPerCell; k++) {
        const seed = Simulation.deriveSeed(root, `cell/${fault}/${strategy}/${nodes}/${k}`)
        const scenario: Simulation.Scenario = {
          strategy,
          nodes,
          fault,
          ...(churnCycles === undefined ? {} : { churnCycles }),
          ...(awaits ? { awaits } : {}),
          ...(detector ? { detector } : {}),
          ...(observed === undefined ? {} : { observed })
        }
        const result = await Effect.runPromise(Simulation.run(scenario, seed))
        cell.runs++
        if (result.detector !== undefined) {
          for (const k of Object.keys(membership) as Array<keyof typeof membership>) membership[k] += result.detector[k]
        }
        if (result.safety.length > 0 || result.durability.length > 0) cell.safety++
        if (!result.liveness.ok) cell.liveness++
        if (!result.liveness.expected && !result.liveness.converged) cell.expectedStuck++
        const c = result.liveness.convergenceMillis
        if (c !== undefined && (cell.worstConvergence === undefined || c > cell.worstConvergence)) cell.worstConvergence = c
        cell.frames += result.messagesPerMutation * result.mutations.acknowledged
        cell.mutations += result.mutations.acknowledged
        cell.acks.acknowledged += result.acks.acknowledged
        cell.acks.timedOut += result.acks.timedOut
        cell.acks.unsatisfiable += result.acks.unsatisfiable
        if (!result.ok) {
          const line = `FAIL ${Simulation.describe(result)}`
          totals.failures.push(line)
          console.error(line)
        }
      }
      totals.runs += cell.runs
      totals.safety += cell.safety
      totals.liveness += cell.liveness
      totals.expectedStuck += cell.expectedStuck
      cells.push(cell)
    }
  }
  emit("")
  emit(`## ${fault}`)
  emit("")
  emit(
    "| strategy | nodes | runs | safety violations | liveness failures | expected non-convergence | worst convergence (ms) | messages per mutation |" +
      (awaits ? " awaited: acknowledged / timed out / unsatisfiable |" : "")
  )
  emit("|---|---:|---:|---:|---:|---:|---:|---:|" + (awaits ? "---:|" : ""))
  for (const c of cells) {
    const perMutation = c.mutations === 0 ? "-" : (c.frames / c.mutations).toFixed(1)
    emit(
      `| ${c.strategy} | ${c.nodes} | ${c.runs} | ${c.safety} | ${c.liveness} | ${c.expectedStuck} | ${
        c.worstConvergence ?? "-"
      } | ${perMutation} |${awaits ? ` ${c.acks.acknowledged} / ${c.acks.timedOut} / ${c.acks.unsatisfiable} |` : ""}`
    )
  }
}
const cpu = process.cpuUsage(cpuStart)
emit("")
emit("## Totals")
emit("")
emit("| runs | safety violations | liveness failures | expected non-convergence | wall time (s) | CPU time (s) |")
emit("|---:|---:|---:|---:|---:|---:|")
emit(
  `| ${totals.runs} | ${totals.safety} | ${totals.liveness} | ${totals.expectedStuck} | ${
    ((performance.now() - started) / 1000).toFixed(0)
  } | ${((cpu.user + cpu.system) / 1e6).toFixed(0)} |`
)
if (detector) {
  emit("")
  emit("## Failure detector (summed over every observer)")
  emit("")
  emit("| unreachable | reachable again | down | re-joined | false unreachable | false down |")
  emit("|---:|---:|---:|---:|---:|---:|")
  const m = membership
  emit(`| ${m.unreachable} | ${m.reachable} | ${m.down} | ${m.rejoined} | ${m.falseUnreachable} | ${m.falseDown} |`)
}
if (totals.failures.length > 0) {
  emit("")
  emit("## Failing runs")
  emit("")
  for (const f of totals.failures) emit(`- ${f}`)
}
if (out !== undefined) writeFileSync(out, lines.join("\n") + "\n")
process.exitCode = totals.failures.length > 0 ? 1 : 0

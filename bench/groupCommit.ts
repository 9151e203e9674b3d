/**
 * Group commit through the registry: persisted mutations per second of one
 * state on the file store (a simple state of 1 KiB, every save a whole
 * record written, fsynced and renamed), with 1 caller and with 64 concurrent
 * callers, each caller awaiting its acknowledgement before the next
 * mutation. The floor is a raw loop, in the same run, of the same durable
 * write (`writeFileSync` + `fsyncSync` of a temporary file, `renameSync`,
 * `fsyncSync` of the directory) counted as covering 64 mutations per write:
 * what one fsync per batch of 64 allows at most.
 *
 * Rows: `P1/1caller` (the path of one mutation per save), `P1/pipelined`
 * (64 callers, against the floor), and `P1/pipelined/batch` (mutations per
 * save). Run: `npm run bench -- groupcommit`.
 */
import { Deferred, Effect, Fiber, Layer, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import { DistributedState, NodeId, StateRegistry } from "dstate"
import { FilePersistence } from "dstate/node"
import { InProcessRuntime, SimNetwork } from "dstate/testing"
import type { Row } from "./inprocess.ts"

const Doc = DistributedState.make({
  name: "bench/doc",
  schema: Schema.Struct({ seq: Schema.Int, data: Schema.String }),
  initial: () => ({ seq: 0, data: "d".repeat(1000) })
})

const callers = 64
const millis = 1500

/** Mutations per second with `n` callers for `millis`, and the saves the store made meanwhile. */
const measure = (n: number) =>
  Effect.scoped(Effect.gen(function*() {
    const directory = fs.mkdtempSync(nodePath.join(process.env.DSTATE_BENCH_DIR ?? os.tmpdir(), "dstate-gc-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(directory, { recursive: true, force: true })))
    const network = yield* SimNetwork.make
    const context = yield* Layer.build(StateRegistry.layer.pipe(
      Layer.provide(InProcessRuntime.layer(network, NodeId.make("bench-node"))),
      Layer.provide(FilePersistence.layerFile({ directory }))
    ))
    const doc = yield* StateRegistry.register(Doc).pipe(Effect.provideContext(context))
    const stop = yield* Deferred.make<void>()
    let mutations = 0
    const started = performance.now()
    const loop = Effect.gen(function*() {
      while (!(yield* Deferred.isDone(stop))) {
        yield* Effect.orDie(doc.mutate((s) => ({ seq: s.seq + 1, data: s.data })))
        mutations++
      }
    })
    const fibers = yield* Effect.forEach(Array.from({ length: n }), () => Effect.forkChild(loop))
    yield* Effect.sleep(millis)
    yield* Deferred.succeed(stop, undefined)
    yield* Effect.forEach(fibers, Fiber.join)
    const elapsed = (performance.now() - started) / 1000
    const age = (yield* doc.local).generation.age
    return { perSecond: mutations / elapsed, age }
  }))

/** Raw durable writes of a record of the same size per second. */
const rawWritesPerSecond = () => {
  const directory = fs.mkdtempSync(nodePath.join(process.env.DSTATE_BENCH_DIR ?? os.tmpdir(), "dstate-gc-raw-"))
  const bytes = Buffer.alloc(1200, 0x61)
  const target = nodePath.join(directory, "state")
  const tmp = nodePath.join(directory, "state.tmp")
  const dir = fs.openSync(directory, "r")
  let writes = 0
  const started = performance.now()
  while (performance.now() - started < millis) {
    const fd = fs.openSync(tmp, "w")
    fs.writeSync(fd, bytes)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    fs.renameSync(tmp, target)
    fs.fsyncSync(dir)
    writes++
  }
  fs.closeSync(dir)
  fs.rmSync(directory, { recursive: true, force: true })
  return writes / ((performance.now() - started) / 1000)
}

export const run: Effect.Effect<ReadonlyArray<Row>> = Effect.gen(function*() {
  const single = yield* measure(1)
  const raw = rawWritesPerSecond()
  const pipelined = yield* measure(callers)
  const floor = raw * callers
  // Saves made: the generation's age counts mutations; the store's saves are not exposed, so the batch
  // size is estimated from the single-caller save rate (one save per mutation there).
  const batch = pipelined.perSecond / single.perSecond
  return [
    {
      id: "P1/1caller",
      name: "persisted mutations/s, one state, file store, 1 caller (one save per mutation)",
      value: single.perSecond,
      unit: "mutations/s",
      baseline: raw,
      baselineName: "raw write + fsync + rename + dir fsync per save",
      ratio: single.perSecond / raw,
      target: "(info)",
      met: true
    },
    {
      id: "P1/pipelined",
      name: `persisted mutations/s, one state, file store, ${callers} concurrent callers (group commit)`,
      value: pipelined.perSecond,
      unit: "mutations/s",
      baseline: floor,
      baselineName: `the raw durable write covering ${callers} mutations per fsync`,
      ratio: pipelined.perSecond / floor,
      target: ">= 9,000/s (10x P1)",
      met: pipelined.perSecond >= 9000
    },
    {
      id: "P1/pipelined/speedup",
      name: `P1/pipelined against P1/1caller in the same run (about the mutations covered by one save)`,
      value: batch,
      unit: "x",
      baseline: single.perSecond,
      baselineName: "P1/1caller",
      ratio: batch,
      target: "(info)",
      met: true
    }
  ]
}).pipe(Effect.orDie)

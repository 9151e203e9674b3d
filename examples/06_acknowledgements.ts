/**
 * Awaited writes: a mutation that returns only once peers hold it.
 *
 * Three nodes in one process. Alpha increments its counter and waits for a
 * majority of the group (alpha itself counted, so one of the two peers), then
 * for all of them. Then gamma is cut off and alpha waits for all again: the
 * wait times out with a typed `AckTimeout` naming gamma, yet the mutation is
 * committed and beta holds it, because an acknowledgement is about who can
 * see a write, not about whether it happened. Run with
 * `node examples/06_acknowledgements.ts`.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { DistributedState, NodeId, StateRegistry } from "dstate"
import { InProcessRuntime, SimNetwork } from "dstate/testing"

const Counter = DistributedState.make({
  name: "counter",
  schema: Schema.Struct({ value: Schema.Int }),
  initial: () => ({ value: 0 })
})

const nodeLayer = (network: SimNetwork.SimNetwork, id: string) =>
  StateRegistry.layer.pipe(Layer.provideMerge(InProcessRuntime.layer(network, NodeId.make(id))))

const increment = (s: { readonly value: number }) => ({ value: s.value + 1 })

const program = Effect.gen(function*() {
  const network = yield* SimNetwork.make
  const ids = ["alpha", "beta", "gamma"]
  const contexts = yield* Effect.forEach(ids, (id) => Layer.build(nodeLayer(network, id)))
  const [alpha, beta] = yield* Effect.forEach(contexts, (context) =>
    Effect.provideContext(StateRegistry.register(Counter), context))

  // A majority of 3 nodes is 2: alpha and one peer.
  const majority = yield* alpha.mutate(increment, { await: { peers: "majority", timeout: "1 second" } })
  yield* Effect.log(`age ${majority.generation.age}: ${majority.acknowledged} of ${majority.required} required acknowledged`)

  const all = yield* alpha.mutate(increment, { await: { peers: "all", timeout: "1 second" } })
  yield* Effect.log(`age ${all.generation.age}: acknowledged by ${all.acknowledgedBy.join(", ")}`)

  // Gamma is still a member but unreachable: "all" cannot be met within the timeout.
  network.isolate(NodeId.make("gamma"))
  const timedOut = yield* alpha.mutate(increment, { await: { peers: "all", timeout: "1 second" } }).pipe(
    Effect.catchTag("AckTimeout", (error) =>
      Effect.as(Effect.log(`${error._tag}: ${error.acknowledged} of ${error.required}, missing ${error.missing.join(", ")}`), error))
  )
  // The write is committed all the same, and visible where the network allows.
  const onBeta = (yield* beta.snapshot).get(NodeId.make("alpha"))
  yield* Effect.log(`beta holds alpha's counter at age ${onBeta?.generation.age} (value ${onBeta?.value.value})`)
  return timedOut
})

NodeRuntime.runMain(Effect.scoped(program))

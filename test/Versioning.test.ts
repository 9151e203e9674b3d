import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, SchemaTransformation } from "effect"
import { TestClock } from "effect/testing"
import { DistributedState, Generation, StateRegistry, SyncMessage, SyncStrategy } from "dstate"
import { Fixtures, TestCluster } from "dstate/testing"
import {
  type Cluster,
  frameOf,
  frames,
  handleOn,
  inboundOn,
  localOn,
  metricsOn,
  type Node,
  statusOn,
  viewsOn
} from "./helpers.ts"

// ---- the state in two wire versions --------------------------------------------------------------
// V1 is the fixture's resource view; V2 adds `zone` (the first tag, "none" without tags). A V1 view read
// by V2 code gets `zone: "unknown"`; a V2 view read by V1 code loses its zone.

const ViewV1 = Fixtures.NodeResourceView
type ViewV1 = typeof ViewV1.Type
const DeltaV1 = Fixtures.NodeResourceDelta
type DeltaV1 = typeof DeltaV1.Type
const ViewV2 = Schema.Struct({ ...ViewV1.fields, zone: Schema.String })
type ViewV2 = typeof ViewV2.Type
const DeltaV2 = Schema.Struct({ ...DeltaV1.fields, zone: Schema.optionalKey(Schema.String) })
type DeltaV2 = typeof DeltaV2.Type

const withoutZone = <T extends { readonly zone?: string }>(value: T): Omit<T, "zone"> => {
  const { zone: _, ...rest } = value
  return rest
}

/** Decodes a V1 view (bytes of `ViewV1`) into a V2 view. */
const ViewV1toV2 = ViewV1.pipe(
  Schema.decodeTo(
    ViewV2,
    SchemaTransformation.transform<ViewV2, ViewV1>({
      decode: (v1) => ({ ...v1, zone: "unknown" }),
      encode: (v2) => withoutZone(v2)
    })
  )
)
const DeltaV1toV2 = DeltaV1.pipe(
  Schema.decodeTo(
    DeltaV2,
    SchemaTransformation.transform<DeltaV2, DeltaV1>({ decode: (d) => d, encode: (d) => withoutZone(d) })
  )
)
/** Decodes a V2 view into a V1 view (what phase-1 code reads). */
const ViewV2toV1 = ViewV2.pipe(
  Schema.decodeTo(
    ViewV1,
    SchemaTransformation.transform<ViewV1, ViewV2>({
      decode: (v2) => withoutZone(v2),
      encode: (v1) => ({ ...v1, zone: "unknown" })
    })
  )
)
const DeltaV2toV1 = DeltaV2.pipe(
  Schema.decodeTo(
    DeltaV1,
    SchemaTransformation.transform<DeltaV1, DeltaV2>({ decode: (d) => withoutZone(d), encode: (d) => d })
  )
)

const NAME = "resource_versioned"
const zoneOf = (tags: ReadonlyArray<string>) => tags[0] ?? "none"
const v1Common = {
  name: NAME,
  state: Fixtures.NodeResourceState,
  view: ViewV1,
  delta: DeltaV1,
  initial: Fixtures.NodeResource.initial,
  projectView: Fixtures.NodeResource.projectView,
  projectDelta: (change: Fixtures.NodeResourceChange): DeltaV1 => ({ ...change }),
  applyDelta: (view: ViewV1, delta: DeltaV1): ViewV1 => ({ ...view, ...delta }),
  wireVersion: 1,
  storageVersion: 1
}
/** Phase 0: reads and sends V1 only. */
const Phase0 = DistributedState.makeDelta(v1Common)
/** Phase 1: reads V1 and V2, sends V1. */
const Phase1 = DistributedState.makeDelta({ ...v1Common, wireDecoders: { 2: { view: ViewV2toV1, delta: DeltaV2toV1 } } })
/** Phase 2: sends V2, reads V1. */
const Phase2 = DistributedState.makeDelta({
  name: NAME,
  state: Fixtures.NodeResourceState,
  view: ViewV2,
  delta: DeltaV2,
  initial: Fixtures.NodeResource.initial,
  projectView: (s): ViewV2 => ({ ...Fixtures.NodeResource.projectView(s), zone: zoneOf(s.tags) }),
  projectDelta: (change: Fixtures.NodeResourceChange): DeltaV2 =>
    change.tags === undefined ? { ...change } : { ...change, zone: zoneOf(change.tags) },
  applyDelta: (view, delta): ViewV2 => ({ ...view, ...delta }),
  wireVersion: 2,
  wireDecoders: { 1: { view: ViewV1toV2, delta: DeltaV1toV2 } },
  storageVersion: 1
})
const phaseDefinitions = [Phase0, Phase1, Phase2] as const
type Phase = 0 | 1 | 2

/** A setup that registers the definition of the node's phase, read from `phases` at each (re)start. */
const phasedSetup = (phases: Map<string, Phase>, options?: StateRegistry.RegisterOptions) =>
  Effect.gen(function*() {
    const registry = yield* StateRegistry.StateRegistry
    const phase = phases.get(registry.nodeId) ?? 0
    yield* registry.register(phaseDefinitions[phase], { strategy: SyncStrategy.activePush(), ...options })
  })

const change = (cluster: Cluster, node: Node, c: Fixtures.NodeResourceChange) =>
  Effect.flatMap(handleOn(cluster, node, Phase0), (h) => Effect.orDie(h.mutateWithDelta((s) => Fixtures.updateResource(s, c))))

/** What a reader in `readerPhase` must hold of an owner in `ownerPhase` whose own view is `ownerView`. */
const expectedView = (readerPhase: Phase, ownerPhase: Phase, ownerView: object): object => {
  if (readerPhase < 2) return withoutZone(ownerView as { zone?: string })
  return ownerPhase === 2 ? ownerView : { ...ownerView, zone: "unknown" }
}

/** Every node holds every other node's current generation and the value its own phase should see; nothing failed. */
const assertConverged = (cluster: Cluster, phases: Map<string, Phase>, step: string) =>
  Effect.gen(function*() {
    const nodes = cluster.nodes
    const locals = new Map<string, { readonly generation: Generation.Generation; readonly value: object }>()
    for (const node of nodes) locals.set(node.id, yield* localOn(cluster, node, Phase0))
    for (const reader of nodes) {
      const readerPhase = phases.get(reader.id) ?? 0
      const views = yield* viewsOn(cluster, reader, Phase0)
      assert.deepStrictEqual([...views.keys()].sort(), nodes.map((n) => n.id).sort(), `${step}: members on ${reader.id}`)
      for (const owner of nodes) {
        const held = views.get(owner.id)!
        const local = locals.get(owner.id)!
        assert.deepStrictEqual(held.generation, local.generation, `${step}: ${reader.id}'s generation of ${owner.id}`)
        assert.deepStrictEqual(
          held.value,
          expectedView(readerPhase, phases.get(owner.id) ?? 0, local.value),
          `${step}: ${reader.id}'s view of ${owner.id}`
        )
      }
      const m = yield* metricsOn(cluster, reader, Phase0)
      assert.deepStrictEqual(
        [m.syncFailures, m.unsupportedVersion, m.malformedReceived],
        [0, 0, 0],
        `${step}: failures on ${reader.id}`
      )
    }
  })

describe("versioning", () => {
  it.effect("wireDecoders decode older (and, in phase 1, newer) wire versions of views and deltas", () =>
    Effect.gen(function*() {
      const phases = new Map<string, Phase>([["node-1", 1], ["node-2", 2]])
      const cluster = yield* TestCluster.make({ nodes: 2, setup: phasedSetup(phases) })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      // Join snapshots: b (V2) read a's V1 snapshot, a (phase 1) read b's V2 snapshot.
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Phase0)).get(a.id)!.value as object, {
        cpuPercent: 0,
        memoryUsedMiB: 0,
        tags: [],
        zone: "unknown"
      })
      assert.deepStrictEqual((yield* viewsOn(cluster, a, Phase0)).get(b.id)!.value, { cpuPercent: 0, memoryUsedMiB: 0, tags: [] })

      yield* change(cluster, a, { cpuPercent: 10, tags: ["eu"] })
      yield* change(cluster, b, { memoryUsedMiB: 256, tags: ["us"] })
      yield* change(cluster, b, { cpuPercent: 5 })
      yield* cluster.settle

      const onB = (yield* viewsOn(cluster, b, Phase0)).get(a.id)!
      assert.strictEqual(onB.wireVersion, 1)
      assert.deepStrictEqual(onB.value as object, { cpuPercent: 10, memoryUsedMiB: 0, tags: ["eu"], zone: "unknown" })
      const onA = (yield* viewsOn(cluster, a, Phase0)).get(b.id)!
      assert.strictEqual(onA.wireVersion, 2)
      assert.deepStrictEqual(onA.value, { cpuPercent: 5, memoryUsedMiB: 256, tags: ["us"] })
      assert.deepStrictEqual((yield* localOn(cluster, b, Phase0)).value as object, { cpuPercent: 5, memoryUsedMiB: 256, tags: ["us"], zone: "us" })

      // They travelled as deltas in the sender's wire version and were decoded, not refused.
      const ma = yield* metricsOn(cluster, a, Phase0)
      const mb = yield* metricsOn(cluster, b, Phase0)
      assert.deepStrictEqual([ma.deltasReceived, ma.snapshotsReceived, ma.unsupportedVersion, ma.syncFailures], [2, 1, 0, 0])
      assert.deepStrictEqual([mb.deltasReceived, mb.snapshotsReceived, mb.unsupportedVersion, mb.syncFailures], [1, 1, 0, 0])
    }))

  it.effect("phase 0 code cannot read V2: the reason for the intermediate phase", () =>
    Effect.gen(function*() {
      const phases = new Map<string, Phase>([["node-1", 0], ["node-2", 2]])
      const cluster = yield* TestCluster.make({ nodes: 2, setup: phasedSetup(phases) })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      // b's join snapshot (V2) is refused by a; with KeepStale and no earlier view, a holds nothing of b.
      assert.deepStrictEqual([...(yield* viewsOn(cluster, a, Phase0)).keys()], [a.id])
      // Every V2 snapshot b sent a (its join broadcast and its answer to a's request) was refused as such.
      const sent = frames(cluster, { from: b.id, to: a.id, tag: "FullSnapshot" }).length
      assert.isAtLeast(sent, 1)
      const m = yield* metricsOn(cluster, a, Phase0)
      assert.strictEqual(m.unsupportedVersion, sent)
      assert.strictEqual(m.malformedReceived, 0)
      assert.strictEqual(m.syncFailures, sent)
      assert.strictEqual(m.snapshotsReceived, 0)
      // b reads a's V1 fine.
      assert.strictEqual((yield* viewsOn(cluster, b, Phase0)).get(a.id)!.wireVersion, 1)
    }))

  const injectedVersion = 7
  const injectView = (cluster: Cluster, from: Node, to: Node, generation: Generation.Generation, wireVersion: number, payload: Uint8Array) =>
    cluster.network.inject(
      from.id,
      to.id,
      frameOf(
        new SyncMessage.FullSnapshot({ stateName: NAME, source: from.id, generation, wireVersion, createdAt: 0, modifiedAt: 0, payload })
      )
    )
  const injectDelta = (cluster: Cluster, from: Node, to: Node, generation: Generation.Generation, wireVersion: number, payload: Uint8Array) =>
    cluster.network.inject(
      from.id,
      to.id,
      frameOf(new SyncMessage.DeltaUpdate({ stateName: NAME, source: from.id, generation, wireVersion, modifiedAt: 0, payload }))
    )
  const garbage = new Uint8Array([0xff, 0x00, 0x13, 0x37])

  it.effect("an unknown wire version under KeepStale keeps the last good view and counts unsupportedVersion", () =>
    Effect.gen(function*() {
      const phases = new Map<string, Phase>()
      const cluster = yield* TestCluster.make({ nodes: 2, setup: phasedSetup(phases, { versionMismatchPolicy: "KeepStale" }) })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      yield* change(cluster, a, { cpuPercent: 42 })
      yield* cluster.settle
      const good = (yield* viewsOn(cluster, b, Phase0)).get(a.id)!
      assert.strictEqual(good.generation.age, 1)

      yield* injectView(cluster, a, b, Generation.make(good.generation.incarnation, 5), injectedVersion, garbage)
      yield* injectDelta(cluster, a, b, Generation.next(good.generation), injectedVersion, garbage)
      yield* cluster.settle
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Phase0)).get(a.id), good)
      const m = yield* metricsOn(cluster, b, Phase0)
      assert.deepStrictEqual([m.unsupportedVersion, m.malformedReceived, m.syncFailures], [2, 0, 2])
      const status = yield* statusOn(cluster, b, Phase0, a)
      assert.strictEqual(status.consecutiveFailures, 2)
      assert.include(status.lastError ?? "", String(injectedVersion))

      // The owner's next real change (wire version 1) applies on top of the kept view.
      yield* change(cluster, a, { memoryUsedMiB: 7 })
      yield* cluster.settle
      const after = (yield* viewsOn(cluster, b, Phase0)).get(a.id)!
      assert.strictEqual(after.generation.age, 2)
      assert.deepStrictEqual(after.value, { cpuPercent: 42, memoryUsedMiB: 7, tags: [] })
      assert.strictEqual((yield* statusOn(cluster, b, Phase0, a)).consecutiveFailures, 0)
    }))

  it.effect("an unknown wire version under DropAndWait removes the peer's view until a decodable update arrives", () =>
    Effect.gen(function*() {
      const phases = new Map<string, Phase>()
      const cluster = yield* TestCluster.make({ nodes: 2, setup: phasedSetup(phases, { versionMismatchPolicy: "DropAndWait" }) })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      yield* change(cluster, a, { cpuPercent: 42 })
      yield* cluster.settle
      const good = (yield* viewsOn(cluster, b, Phase0)).get(a.id)!

      yield* injectDelta(cluster, a, b, Generation.next(good.generation), injectedVersion, garbage)
      yield* cluster.settle
      assert.deepStrictEqual([...(yield* viewsOn(cluster, b, Phase0)).keys()], [b.id])
      assert.strictEqual((yield* metricsOn(cluster, b, Phase0)).unsupportedVersion, 1)
      // Queries do not see the dropped peer.
      const h = yield* handleOn(cluster, b, Phase0)
      assert.deepStrictEqual(yield* h.query({ maxStaleness: "1 minute" }, (views) => [...views.keys()]), [b.id])

      // The owner's next change arrives as a delta without a base: b asks for the snapshot and is whole again.
      yield* change(cluster, a, { memoryUsedMiB: 7 })
      yield* cluster.settle
      const back = (yield* viewsOn(cluster, b, Phase0)).get(a.id)!
      assert.strictEqual(back.generation.age, 2)
      assert.deepStrictEqual(back.value, { cpuPercent: 42, memoryUsedMiB: 7, tags: [] })
      const m = yield* metricsOn(cluster, b, Phase0)
      assert.deepStrictEqual([m.gapsDetected, m.unsupportedVersion, m.syncFailures], [1, 1, 1])
    }))

  it.effect("a malformed payload is counted as malformed, not as a version mismatch (and is not dropped)", () =>
    Effect.gen(function*() {
      const phases = new Map<string, Phase>()
      const cluster = yield* TestCluster.make({ nodes: 2, setup: phasedSetup(phases, { versionMismatchPolicy: "DropAndWait" }) })
      const [a, b] = cluster.nodes
      yield* cluster.settle
      yield* change(cluster, a, { cpuPercent: 42 })
      yield* cluster.settle
      const good = (yield* viewsOn(cluster, b, Phase0)).get(a.id)!

      yield* injectView(cluster, a, b, Generation.make(good.generation.incarnation, 9), 1, garbage)
      yield* injectDelta(cluster, a, b, Generation.next(good.generation), 1, garbage)
      yield* cluster.settle
      // Under DropAndWait too, a malformed payload leaves the last good view in place.
      assert.deepStrictEqual((yield* viewsOn(cluster, b, Phase0)).get(a.id), good)
      const m = yield* metricsOn(cluster, b, Phase0)
      assert.deepStrictEqual([m.malformedReceived, m.unsupportedVersion, m.syncFailures], [2, 0, 2])
      // The frames themselves were well-formed: the registry rejected none.
      const inbound = yield* inboundOn(cluster, b)
      assert.deepStrictEqual([inbound.framesRejected, inbound.malformed], [0, 0])
    }))

  it.effect("rolling upgrade of 5 nodes: V1 → read V1+V2 → send V2, partial rollback, mixed load", () =>
    Effect.gen(function*() {
      const phases = new Map<string, Phase>()
      const cluster = yield* TestCluster.make({ nodes: 5, setup: phasedSetup(phases) })
      const nodes = cluster.nodes
      cluster.network.setDelay("3 millis")
      yield* cluster.settle
      let tick = 0
      const committed = new Map<string, number>()
      const count = (node: Node) => committed.set(node.id, (committed.get(node.id) ?? 0) + 1)
      /** Every node changes something (tags so the zone moves too); a few change twice. */
      const churn = (rounds: number) =>
        Effect.gen(function*() {
          for (let r = 0; r < rounds; r++) {
            for (const [i, node] of cluster.nodes.entries()) {
              tick++
              yield* change(cluster, node, { cpuPercent: (tick * 7) % 100, tags: [`z${(tick + i) % 3}`] })
              count(node)
              if ((tick + i) % 4 === 0) {
                yield* change(cluster, node, { memoryUsedMiB: tick * 16 })
                count(node)
              }
            }
            yield* TestClock.adjust("10 millis")
          }
          yield* cluster.settle
        })
      const upgrade = (node: Node, phase: Phase) =>
        Effect.gen(function*() {
          yield* cluster.crash(node)
          phases.set(node.id, phase)
          yield* cluster.restart(node)
          yield* cluster.settle
        })

      yield* churn(2)
      yield* assertConverged(cluster, phases, "phase 0")

      for (const target of [1, 2] as const) {
        for (const node of nodes) {
          yield* upgrade(node, target)
          yield* assertConverged(cluster, phases, `${node.id} restarted in phase ${target}`)
          yield* churn(1)
          yield* assertConverged(cluster, phases, `${node.id} in phase ${target}, after changes`)
        }
      }
      // Everyone sends V2 now.
      for (const node of nodes) assert.strictEqual((yield* localOn(cluster, node, Phase0)).wireVersion, 2)
      assert.deepStrictEqual(
        (yield* viewsOn(cluster, nodes[0], Phase0)).get(nodes[1].id)!.value,
        (yield* localOn(cluster, nodes[1], Phase0)).value
      )

      // Partial rollback of two nodes to phase 1.
      for (const node of [nodes[1], nodes[3]]) {
        yield* upgrade(node, 1)
        yield* assertConverged(cluster, phases, `${node.id} rolled back to phase 1`)
        yield* churn(1)
        yield* assertConverged(cluster, phases, `${node.id} rolled back, after changes`)
      }

      // Mixed steady state under load.
      yield* churn(25)
      yield* assertConverged(cluster, phases, "mixed steady state")
      // Every node kept its state across its restarts (memory persistence): no committed change was lost.
      for (const node of cluster.nodes) {
        const local = yield* localOn(cluster, node, Phase0)
        assert.strictEqual(local.generation.age, committed.get(node.id))
        assert.isAtLeast(local.generation.age, 39)
      }
    }))
})

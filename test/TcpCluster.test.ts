/**
 * The TCP runtime across real OS processes: three child nodes on loopback
 * (test/fixtures/tcpNode.ts: TCP runtime, file persistence, the registry with
 * the fixture `Counter` and `NodeResource` states), driven by this test over
 * their stdin/stdout. Mutations on every node must reach both others with
 * exact values; a node killed with SIGKILL must be reported as NodeUnreachable
 * by the two others within the failure detector's bound, then NodeLeft after
 * `downAfter`, and its views dropped;
 * the same node restarted on the same data directory must come back with the
 * same incarnations and data, visible on the others again.
 *
 * Real time, bounded: every wait has a timeout and every child is killed when
 * its test's scope closes.
 */
import { NodeFileSystem } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, FileSystem } from "effect"
import type { Fixtures } from "dstate/testing"
import { join } from "node:path"
import type { Entry } from "./helpers.ts"
import { awaitExit, type Child, request, startNode as startProcess, waitFor } from "./support/NodeProcesses.ts"
import { eventually as poll } from "./support/Eventually.ts"

/** 100 ms heartbeats, unreachable after 1 s of silence, down after 1 s more, detector consulted every 50 ms. */
const heartbeat = { intervalMillis: 100, timeoutMillis: 1000, checkMillis: 50, downAfterMillis: 1000 }
/**
 * NodeUnreachable is published at most `timeout` plus one check interval after
 * the peer's last frame, and that frame arrived before the kill; NodeLeft at
 * most `downAfter` plus one check interval after that.
 */
const detectionBoundMillis = heartbeat.timeoutMillis + heartbeat.checkMillis
const downBoundMillis = heartbeat.downAfterMillis + heartbeat.checkMillis
/** Scheduling slack for a loaded machine (processes, pipes, event loops). */
const slackMillis = 750

/** Waits up to 10 s for a condition on the children, re-checked every 50 ms. */
const eventually = <A, E, R>(condition: Effect.Effect<A, E, R>) => poll(condition, { timeout: "10 seconds", interval: "50 millis" })

interface Generation {
  readonly incarnation: number
  readonly age: number
}

interface Ready {
  readonly port: number
  readonly counter: Entry<{ readonly value: number }>
  readonly resource: Entry<Fixtures.NodeResourceView>
}

/** Starts one node of this suite's heartbeat timings and waits until it is ready. */
const startNode = (name: string, directory: string, seeds: ReadonlyArray<number>) =>
  Effect.map(startProcess(name, directory, seeds, heartbeat), ({ child, ready }) => ({ child, ready: ready as unknown as Ready }))

interface Snapshot {
  readonly counter: Record<string, Entry<{ readonly value: number }>>
  readonly resource: Record<string, Entry<Fixtures.NodeResourceView>>
}

const setCounter = (child: Child, value: number) =>
  Effect.map(request(child, { op: "set", value }), (reply) => reply.generation as Generation)

const changeResource = (child: Child, change: Fixtures.NodeResourceChange) =>
  Effect.map(request(child, { op: "resource", change }), (reply) => reply.generation as Generation)

const snapshotOf = (child: Child) =>
  Effect.map(request(child, { op: "snapshot" }), (reply): Snapshot => ({
    counter: reply.counter as Snapshot["counter"],
    resource: reply.resource as Snapshot["resource"]
  }))

const membersOf = (child: Child) =>
  Effect.map(request(child, { op: "members" }), (reply) => reply.members as ReadonlyArray<string>)

/** Waits until every child sees exactly the others as members. */
const awaitMesh = (children: ReadonlyArray<Child>) =>
  eventually(Effect.forEach(children, (child) =>
    Effect.map(membersOf(child), (members) =>
      assert.deepStrictEqual(members, children.filter((c) => c !== child).map((c) => c.name).sort())), { discard: true }))

/** Waits until every child's view maps are exactly `expected`. */
const awaitViews = (children: ReadonlyArray<Child>, expected: Snapshot) =>
  eventually(Effect.forEach(children, (child) =>
    Effect.map(snapshotOf(child), (snapshot) =>
      assert.deepStrictEqual(snapshot, expected, `views on ${child.name}`)), { discard: true }))

/** A temp directory for the file stores, removed with the scope. */
const dataDirectory = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  return yield* fs.makeTempDirectoryScoped({ prefix: "dstate-tcp-cluster-" })
})

/** Three nodes a, b, c: a first, then b and c with a as their seed; returns once all see each other. */
const startCluster = (directory: string) =>
  Effect.gen(function*() {
    const a = yield* startNode("a", join(directory, "a"), [])
    const [b, c] = yield* Effect.all([
      startNode("b", join(directory, "b"), [a.ready.port]),
      startNode("c", join(directory, "c"), [a.ready.port])
    ], { concurrency: "unbounded" })
    yield* awaitMesh([a.child, b.child, c.child])
    return { a, b, c }
  })

const entry = <V>(generation: Generation, value: V): Entry<V> => ({ ...generation, value })

describe("TcpRuntime: three OS processes", () => {
  it.live("mutations on every node reach both others with exact values", () =>
    Effect.gen(function*() {
      const { a, b, c } = yield* startCluster(yield* dataDirectory)
      const nodes = [a, b, c]

      // Round 1: every node changes both of its states (the resource by a delta).
      const round1 = yield* Effect.forEach(nodes, (node, i) =>
        Effect.all({
          counter: setCounter(node.child, 11 * (i + 1)),
          resource: changeResource(node.child, { cpuPercent: 10 * (i + 1), memoryUsedMiB: 1000 + i, tags: [node.child.name] })
        }))
      assert.deepStrictEqual(round1.map((r) => [r.counter.age, r.resource.age]), [[1, 1], [1, 1], [1, 1]])
      const expected1: Snapshot = {
        counter: Object.fromEntries(nodes.map((node, i) => [node.child.name, entry(round1[i].counter, { value: 11 * (i + 1) })])),
        resource: Object.fromEntries(nodes.map((node, i) => [
          node.child.name,
          entry(round1[i].resource, { cpuPercent: 10 * (i + 1), memoryUsedMiB: 1000 + i, tags: [node.child.name] })
        ]))
      }
      yield* awaitViews(nodes.map((n) => n.child), expected1)

      // Round 2, in the other order (c, b, a): deltas that touch one field each.
      const round2 = yield* Effect.forEach([c, b, a], (node) =>
        changeResource(node.child, { cpuPercent: 99 - node.child.name.charCodeAt(0) }))
      const expected2: Snapshot = {
        counter: expected1.counter,
        resource: Object.fromEntries([c, b, a].map((node, i) => [
          node.child.name,
          entry(round2[i], { ...expected1.resource[node.child.name].value, cpuPercent: 99 - node.child.name.charCodeAt(0) })
        ]).sort(([x], [y]) => String(x) < String(y) ? -1 : 1))
      }
      assert.deepStrictEqual(round2.map((g) => g.age), [2, 2, 2])
      yield* awaitViews(nodes.map((n) => n.child), expected2)
    }).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)), { timeout: 30_000 })

  it.live("kill -9: NodeUnreachable within the detector bound, NodeLeft after downAfter, views dropped; a restart brings the same incarnation and data back", () =>
    Effect.gen(function*() {
      const directory = yield* dataDirectory
      const { a, b, c } = yield* startCluster(directory)
      const survivors = [a.child, c.child]

      // b's data: two mutations of each state.
      yield* setCounter(b.child, 6)
      const counterGen = yield* setCounter(b.child, 7)
      yield* changeResource(b.child, { cpuPercent: 55, tags: ["b"] })
      const resourceGen = yield* changeResource(b.child, { memoryUsedMiB: 2048 })
      const bCounter = entry(counterGen, { value: 7 })
      const bResource = entry(resourceGen, { cpuPercent: 55, memoryUsedMiB: 2048, tags: ["b"] })
      assert.deepStrictEqual([bCounter.age, bResource.age], [2, 2])
      const withB: Snapshot = {
        counter: { a: a.ready.counter, b: bCounter, c: c.ready.counter },
        resource: { a: a.ready.resource, b: bResource, c: c.ready.resource }
      }
      yield* awaitViews([a.child, b.child, c.child], withB)

      // SIGKILL: no graceful leave, the sockets just die. Only the failure detector can notice.
      const seen = survivors.map((child) => child.messages.length)
      const killedAt = yield* Clock.currentTimeMillis
      b.child.process.kill("SIGKILL")
      yield* awaitExit(b.child)
      const detectedAt = yield* Effect.forEach(survivors, (child, i) =>
        waitFor(child, (messages) =>
          messages.slice(seen[i]).find((m) => m.event === "unreachable" && m.node === "b")?.at as number | undefined, "NodeUnreachable b"))
      const downAt = yield* Effect.forEach(survivors, (child, i) =>
        waitFor(child, (messages) =>
          messages.slice(seen[i]).find((m) => m.event === "left" && m.node === "b")?.at as number | undefined, "NodeLeft b"))
      for (const [i, at] of detectedAt.entries()) {
        const elapsed = at - killedAt
        assert.isAtMost(elapsed, detectionBoundMillis + slackMillis, `${survivors[i].name}: NodeUnreachable after ${elapsed} ms`)
        // Not the socket close: a broken connection alone is not a departure.
        assert.isAtLeast(elapsed, heartbeat.timeoutMillis / 2, `${survivors[i].name}: NodeUnreachable after ${elapsed} ms`)
        const down = downAt[i] - at
        assert.isAtMost(down, downBoundMillis + slackMillis, `${survivors[i].name}: NodeLeft ${down} ms after NodeUnreachable`)
        // Down at downAfter, unless the other survivor's gossiped down came first (it is as late, give or take a check).
        assert.isAtLeast(down, heartbeat.downAfterMillis - 2 * heartbeat.checkMillis - slackMillis, `${survivors[i].name}: NodeLeft ${down} ms after NodeUnreachable`)
      }
      const withoutB: Snapshot = {
        counter: { a: a.ready.counter, c: c.ready.counter },
        resource: { a: a.ready.resource, c: c.ready.resource }
      }
      yield* awaitViews(survivors, withoutB)
      for (const child of survivors) assert.deepStrictEqual(yield* membersOf(child), ["a", "c"].filter((n) => n !== child.name))

      // Restart on the same directory: the store gives back the same incarnations, ages and values.
      const seenBeforeRestart = survivors.map((child) => child.messages.length)
      const restarted = yield* startNode("b", join(directory, "b"), [a.ready.port, c.ready.port])
      assert.deepStrictEqual(restarted.ready.counter, bCounter)
      assert.deepStrictEqual(restarted.ready.resource, bResource)
      yield* Effect.forEach(survivors, (child, i) =>
        waitFor(child, (messages) =>
          messages.slice(seenBeforeRestart[i]).find((m) => m.event === "joined" && m.node === "b"), "NodeJoined b"), { discard: true })
      const all = [a.child, restarted.child, c.child]
      yield* awaitViews(all, withB)

      // Its incarnation is welcome again: a new mutation is applied everywhere.
      const next = yield* setCounter(restarted.child, 8)
      assert.deepStrictEqual(next, { incarnation: bCounter.incarnation, age: 3 })
      yield* awaitViews(all, { ...withB, counter: { ...withB.counter, b: entry(next, { value: 8 }) } })
    }).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer)), { timeout: 30_000 })
})

/**
 * Conformance suite of the runtime contract: one body of tests that every
 * implementation of `ActorRuntime` + `ClusterEvents` must pass (the in-process
 * runtime of `dstate/testing`, the TCP runtime of `dstate/node`, the Effect
 * cluster adapter of `dstate/cluster`).
 *
 * A backend plugs in through a `MakeNodes` factory: a scoped effect that
 * starts N nodes and returns a `RuntimeCluster` (per node its id and the
 * `Context` holding its `ActorRuntime` and `ClusterEvents`, plus ways to add
 * and remove nodes and to wait). How to wait depends on the backend's clock:
 *
 * - `clock: "simulated"` (default): tests run with `it.effect` on the
 *   `TestClock`. `eventually(check)` delivers everything in flight (like
 *   `TestCluster.settle`) then runs `check` once, `advance(d)` is
 *   `TestClock.adjust(d)`. Timing assertions are exact.
 * - `clock: "real"`: tests run with `it.live` on the real clock (real sockets).
 *   `eventually(check)` polls `check` until it succeeds within a bound (the
 *   shared `eventually` of `test/support/Eventually.ts`); `advance` is not
 *   used. Timing assertions become bounds (a timer never fires early).
 *
 * The suite never waits a fixed time to assert that something did not
 * happen. It waits for a later marker instead: a marker frame sent after the
 * frames in question (frames between two nodes arrive in order, whether sent
 * with `send` or `broadcast`), a later membership event, a later timer of the
 * same runtime, or an actor refusing messages once stopped. On simulated time
 * `eventually` delivers everything in flight before it looks for the marker.
 *
 * Every test starts its own nodes in the test's scope; closing the scope must
 * stop them.
 *
 * A real-socket backend, for example:
 *
 * ```ts
 * RuntimeSuite.suite("tcp", (count) => Effect.gen(function*() {
 *   // start `count` nodes on port 0 (each built with Layer.buildWithScope in its own
 *   // closeable scope), wait until every node sees the others, then:
 *   return {
 *     nodes, addNode, removeNode,               // removeNode closes that node's scope
 *     eventually: eventuallyWithin("5 seconds")
 *   }
 * }), { clock: "real", timeout: 20_000 })
 * ```
 */
import { assert, describe, it } from "@effect/vitest"
import {
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  PubSub,
  Schedule,
  Scope
} from "effect"
import { ActorRuntime, ClusterEvents, DStateError, NodeId } from "dstate"

/**
 * The services a runtime provides to one node.
 */
export type RuntimeServices = ActorRuntime.ActorRuntime | ClusterEvents.ClusterEvents

/**
 * One running node of the backend under test.
 */
export interface RuntimeNode {
  readonly id: NodeId.NodeId
  /** The node's services; the suite runs effects "on" the node with `Effect.provideContext`. */
  readonly context: Context.Context<RuntimeServices>
}

/**
 * What a backend factory returns: the started nodes and how to drive them.
 */
export interface RuntimeCluster {
  /** The nodes started by the factory, in start order. */
  readonly nodes: ReadonlyArray<RuntimeNode>
  /** Starts one more node; the others must see it join. */
  readonly addNode: Effect.Effect<RuntimeNode>
  /** Graceful leave: stops the node; the others must see it leave. */
  readonly removeNode: (node: RuntimeNode) => Effect.Effect<void>
  /**
   * Runs `check` once the system has had time to converge. Simulated: delivers
   * every frame in flight and lets every actor go idle (moving the clock only
   * as far as deliveries need), then runs `check` once. Real: retries `check`
   * (failures and defects, such as a failed `assert`) until it succeeds or a
   * bound elapses, then dies with the last outcome.
   */
  readonly eventually: <A, E>(check: Effect.Effect<A, E>) => Effect.Effect<A, E>
  /**
   * Simulated backends: lets `duration` pass on the `TestClock`. Real backends
   * leave it out: the suite waits for a timer of the runtime instead.
   */
  readonly advance?: ((duration: Duration.Input) => Effect.Effect<void>) | undefined
}

/**
 * A backend: starts `count` nodes in the current scope.
 */
export type MakeNodes = (count: number) => Effect.Effect<RuntimeCluster, unknown, Scope.Scope>

/**
 * Options of `suite`.
 */
export interface SuiteOptions {
  /** `"simulated"` (default): `it.effect` with exact timings; `"real"`: `it.live` with bounds. */
  readonly clock?: "simulated" | "real" | undefined
  /** Vitest timeout of each test in ms (default: the vitest config's). */
  readonly timeout?: number | undefined
  /**
   * Real clock only: the base unit of the timing tests (default 100 ms). Timers
   * and request timeouts use small multiples of it; raise it on slow machines.
   */
  readonly tick?: Duration.Input | undefined
  /**
   * Member states (`NodeUnreachable` / `NodeReachable` before `NodeLeft`), for a backend that detects
   * failures: a factory whose clusters can silence a node, and its timings. Left out, those cases are not
   * registered (the in-process runtime without a failure detector is an oracle).
   */
  readonly reachability?: {
    readonly makeNodes: (count: number) => Effect.Effect<SilenceableCluster, unknown, Scope.Scope>
    /** Silence after which a member is unreachable. */
    readonly detectAfter: Duration.Input
    /** Time unreachable after which it is down. */
    readonly downAfter: Duration.Input
  } | undefined
}

/**
 * A cluster of a backend with a failure detector, whose nodes can be silenced.
 */
export interface SilenceableCluster extends RuntimeCluster {
  /** Cuts the node off from every other node (both ways) without stopping it. */
  readonly silence: (node: RuntimeNode) => Effect.Effect<void>
  /** Connects it again. */
  readonly answer: (node: RuntimeNode) => Effect.Effect<void>
}

const runtimeOf = (node: RuntimeNode) => Context.get(node.context, ActorRuntime.ActorRuntime)
const eventsOf = (node: RuntimeNode) => Context.get(node.context, ClusterEvents.ClusterEvents)

const bytes = (...values: ReadonlyArray<number>) => Uint8Array.from(values)

interface Received {
  readonly from: NodeId.NodeId
  readonly frame: ReadonlyArray<number>
}

/** The first bytes of the suite's marker frames; no test frame starts with them. */
const MARKER = [0xfe, 0xed, 0xfa, 0xce]

const isMarker = (frame: Uint8Array) => frame.length > MARKER.length && MARKER.every((b, i) => frame[i] === b)

/** Marker frames each serving node received, apart from the test's frames. */
const markersOf = new WeakMap<RuntimeNode, Array<Received>>()

/**
 * Installs an inbound handler on `node` that records one-way frames (marker
 * frames apart); requests get `reply`.
 */
const serveRecording = (
  node: RuntimeNode,
  reply: ActorRuntime.Inbound["onRequest"] = (_from, frame) => Effect.succeed(frame)
) =>
  Effect.gen(function*() {
    const received: Array<Received> = []
    const markers: Array<Received> = []
    markersOf.set(node, markers)
    yield* runtimeOf(node).serve({
      onMessage: (from, frame) =>
        Effect.sync(() => (isMarker(frame) ? markers : received).push({ from, frame: Array.from(frame) })),
      onRequest: reply
    })
    return received
  })

let markerCount = 0

/**
 * Sends a marker frame from `from` to each of `to` and waits until each has
 * it. Frames between two nodes arrive in order, so everything `from` sent to
 * them before has arrived by then: a frame still missing was never sent.
 * Every node of `to` must serve with `serveRecording`.
 */
const markersArrived = (cluster: RuntimeCluster, from: RuntimeNode, to: ReadonlyArray<RuntimeNode>) =>
  Effect.gen(function*() {
    const sent = yield* Effect.forEach(to, (node) => {
      const marker = [...MARKER, ++markerCount]
      return Effect.as(Effect.orDie(runtimeOf(from).send(node.id, Uint8Array.from(marker))), [node, marker] as const)
    })
    yield* cluster.eventually(check(() => {
      for (const [node, marker] of sent) {
        assert.deepInclude(markersOf.get(node) ?? [], { from: from.id, frame: marker }, `a marker from ${from.id} on ${node.id}`)
      }
    }))
  })

/**
 * Waits until an actor refuses messages with `ActorStopped`: its loop has
 * ended, so nothing it was told before will be handled any more. A message
 * told while it was still stopping is never handled either (the loop is gone).
 */
const stopped = <M>(cluster: RuntimeCluster, actor: ActorRuntime.ActorRef<M>, probe: M) =>
  cluster.eventually(Effect.flip(actor.tell(probe))).pipe(
    Effect.tap((error) => check(() => assert.strictEqual(error._tag, "ActorStopped")))
  )

/** Records every membership event `node` sees from now on. */
const recordEvents = (node: RuntimeNode) =>
  Effect.gen(function*() {
    const events: Array<ClusterEvents.ClusterEvent> = []
    const subscription = yield* eventsOf(node).subscribe
    yield* PubSub.take(subscription).pipe(
      Effect.tap((event) => Effect.sync(() => events.push(event))),
      Effect.forever,
      Effect.forkScoped
    )
    return events
  })

const sortedIds = (ids: Iterable<NodeId.NodeId>): ReadonlyArray<string> => [...ids].map(String).sort()

const check = (f: () => void) => Effect.sync(f)

/**
 * Registers the runtime conformance tests for one backend.
 */
export const suite = (name: string, makeNodes: MakeNodes, options?: SuiteOptions): void => {
  const simulated = (options?.clock ?? "simulated") === "simulated"
  const test = simulated ? it.effect : it.live
  const timeout = options?.timeout
  // Time unit of the timing tests: exact on simulated time, a bound on real time.
  const tick = simulated ? 1000 : Duration.toMillis(Duration.fromInputUnsafe(options?.tick ?? "100 millis"))

  /**
   * Lets `duration` pass on `node`. Simulated: moves the `TestClock`. Real:
   * starts a timer of `duration` on the node's runtime and waits until it has
   * fired (the marker that a timer of that runtime due no later had its time).
   */
  const passed = (cluster: RuntimeCluster, node: RuntimeNode, duration: Duration.Input) =>
    Effect.gen(function*() {
      if (simulated) {
        if (cluster.advance === undefined) return yield* Effect.die(new Error(`${name}: a simulated backend must provide advance`))
        return yield* cluster.advance(duration)
      }
      const fired = yield* Deferred.make<void>()
      yield* runtimeOf(node).after(duration, Deferred.succeed(fired, undefined))
      yield* Deferred.await(fired).pipe(
        Effect.timeout(Duration.sum(Duration.fromInputUnsafe(duration), Duration.seconds(10))),
        Effect.orDie
      )
    })

  describe(`ActorRuntime conformance: ${name}`, () => {
    test("each node knows its own id, and the ids are distinct", () =>
      Effect.gen(function*() {
        const cluster = yield* makeNodes(3)
        assert.strictEqual(cluster.nodes.length, 3)
        for (const node of cluster.nodes) assert.strictEqual(runtimeOf(node).nodeId, node.id)
        assert.strictEqual(new Set(cluster.nodes.map((n) => n.id)).size, 3)
      }), timeout)

    describe("actors", () => {
      test("an actor handles its messages one at a time, in order", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<number> = []
          let running = 0
          let maxRunning = 0
          const actor = yield* runtimeOf(a).spawn({
            name: "ordered",
            receive: (n: number) =>
              Effect.gen(function*() {
                running++
                maxRunning = Math.max(maxRunning, running)
                yield* Effect.yieldNow
                handled.push(n)
                running--
              })
          })
          assert.strictEqual(actor.name, "ordered")
          for (let i = 0; i < 50; i++) yield* actor.tell(i)
          yield* cluster.eventually(check(() => assert.strictEqual(handled.length, 50)))
          assert.deepStrictEqual(handled, Array.from({ length: 50 }, (_, i) => i))
          assert.strictEqual(maxRunning, 1)
          assert.strictEqual(yield* actor.mailboxSize, 0)
          assert.strictEqual(yield* actor.restarts, 0)
        }), timeout)

      test("spawn accepts a mailbox of 1 and refuses 0 or a fraction with InvalidOptions", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<number> = []
          const spawn = (mailbox: ActorRuntime.MailboxCapacity) =>
            runtimeOf(a).spawn({ name: `mailbox-${mailbox}`, mailbox, receive: (n: number) => Effect.sync(() => handled.push(n)) })
          const one = yield* spawn(1)
          yield* one.tell(1)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, [1])))
          for (const mailbox of [0, -3, 2.5]) {
            assert.deepStrictEqual(
              yield* Effect.flip(spawn(mailbox)),
              new DStateError.InvalidOptions({
                module: "ActorRuntime.spawn",
                option: "mailbox",
                value: mailbox,
                reason: "must be a positive integer or \"unbounded\""
              })
            )
          }
        }), timeout)

      test("a bounded mailbox of capacity N holds exactly N messages while the actor is blocked", () =>
        Effect.gen(function*() {
          const capacity = 3
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const handled: Array<number> = []
          const actor = yield* runtimeOf(a).spawn({
            name: "bounded",
            mailbox: capacity,
            receive: (n: number) =>
              Effect.gen(function*() {
                if (n === 0) {
                  yield* Deferred.succeed(started, undefined)
                  yield* Deferred.await(release)
                }
                handled.push(n)
              })
          })
          yield* actor.tell(0)
          yield* Deferred.await(started)
          // The actor is blocked on message 0: the mailbox now fills up.
          for (let i = 1; i <= capacity; i++) yield* actor.tell(i)
          assert.strictEqual(yield* actor.mailboxSize, capacity)
          const full = yield* Effect.flip(actor.tell(capacity + 1))
          assert.instanceOf(full, DStateError.MailboxFull)
          if (full._tag === "MailboxFull") assert.strictEqual(full.capacity, capacity)
          assert.strictEqual(full.actor, "bounded")
          assert.strictEqual(yield* actor.mailboxSize, capacity)
          yield* Deferred.succeed(release, undefined)
          yield* cluster.eventually(check(() => assert.strictEqual(handled.length, capacity + 1)))
          // The refused message was not enqueued.
          assert.deepStrictEqual(handled, [0, 1, 2, 3])
          // Once drained, the mailbox accepts again.
          yield* actor.tell(10)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, [0, 1, 2, 3, 10])))
        }), timeout)

      test("an unbounded mailbox accepts every message while the actor is blocked", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          let handled = 0
          const actor = yield* runtimeOf(a).spawn({
            name: "unbounded",
            receive: (n: number) =>
              Effect.gen(function*() {
                if (n === 0) {
                  yield* Deferred.succeed(started, undefined)
                  yield* Deferred.await(release)
                }
                handled++
              })
          })
          yield* actor.tell(0)
          yield* Deferred.await(started)
          for (let i = 1; i <= 10_000; i++) yield* actor.tell(i)
          assert.strictEqual(yield* actor.mailboxSize, 10_000)
          yield* Deferred.succeed(release, undefined)
          yield* cluster.eventually(check(() => assert.strictEqual(handled, 10_001)))
        }), timeout)

      test("a handler that dies on one message is restarted and handles the following ones", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<string> = []
          const defects: Array<readonly [string, unknown]> = []
          const actor = yield* runtimeOf(a).spawn({
            name: "fragile",
            receive: (message: string) =>
              message === "poison" ? Effect.die("boom") : Effect.sync(() => handled.push(message)),
            onDefect: (message, defect) => Effect.sync(() => defects.push([message, defect]))
          })
          for (const m of ["a", "poison", "b", "c"]) yield* actor.tell(m)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["a", "b", "c"])))
          assert.strictEqual(yield* actor.restarts, 1)
          assert.deepStrictEqual(defects, [["poison", "boom"]])
          // Still alive after the restart.
          yield* actor.tell("d")
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["a", "b", "c", "d"])))
          assert.strictEqual(yield* actor.restarts, 1)
        }), timeout)

      test("every defect counts one restart under the default schedule", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<string> = []
          const actor = yield* runtimeOf(a).spawn({
            name: "often-fragile",
            receive: (message: string) =>
              message.startsWith("poison") ? Effect.die(message) : Effect.sync(() => handled.push(message))
          })
          for (const m of ["poison1", "a", "poison2", "poison3", "b"]) yield* actor.tell(m)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["a", "b"])))
          assert.strictEqual(yield* actor.restarts, 3)
        }), timeout)

      test("an actor whose restart schedule ends stops after that many restarts", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const seen: Array<string> = []
          const defects: Array<string> = []
          const actor = yield* runtimeOf(a).spawn({
            name: "gives-up",
            restart: Schedule.recurs(1),
            receive: (message: string) =>
              Effect.gen(function*() {
                seen.push(message)
                if (message.startsWith("poison")) return yield* Effect.die(message)
              }),
            onDefect: (message) => Effect.sync(() => defects.push(message))
          })
          for (const m of ["poison1", "a", "poison2", "b", "c"]) yield* actor.tell(m)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(defects, ["poison1", "poison2"])))
          // One restart after poison1; poison2 exhausted the schedule and the actor stopped: it refuses "d".
          const refused = yield* stopped(cluster, actor, "d")
          assert.instanceOf(refused, DStateError.ActorStopped)
          assert.strictEqual(refused.actor, "gives-up")
          assert.deepStrictEqual(seen, ["poison1", "a", "poison2"])
          assert.strictEqual(yield* actor.restarts, 1)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(seen, ["poison1", "a", "poison2"])))
        }), timeout)

      test("tellOrRun handles a message at once on an idle actor, and in its turn on a busy one", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const handled: Array<number> = []
          let running = 0
          let maxRunning = 0
          const actor = yield* runtimeOf(a).spawn({
            name: "inline",
            receive: (n: number) =>
              Effect.gen(function*() {
                running++
                maxRunning = Math.max(maxRunning, running)
                if (n === 0) {
                  yield* Deferred.succeed(started, undefined)
                  yield* Deferred.await(release)
                }
                handled.push(n)
                running--
              })
          })
          const tellOrRun = actor.tellOrRun!
          yield* tellOrRun(1)
          // Idle: handled before tellOrRun returned.
          assert.deepStrictEqual(handled, [1])
          yield* actor.tell(0)
          yield* Deferred.await(started)
          // Busy on message 0: these wait their turn in the mailbox.
          yield* tellOrRun(2)
          yield* tellOrRun(3)
          assert.deepStrictEqual(handled, [1])
          assert.strictEqual(yield* actor.mailboxSize, 2)
          yield* Deferred.succeed(release, undefined)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, [1, 0, 2, 3])))
          assert.strictEqual(maxRunning, 1)
          assert.strictEqual(yield* actor.restarts, 0)
        }), timeout)

      test("a message handled in the caller's fiber that suspends holds the next one until it is done", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const handled: Array<string> = []
          let running = 0
          let maxRunning = 0
          // A failed assertion must not leave the uninterruptible handler blocked at scope close.
          yield* Effect.addFinalizer(() => Deferred.succeed(release, undefined))
          const actor = yield* runtimeOf(a).spawn({
            name: "inline-slow",
            receive: (message: string) =>
              Effect.gen(function*() {
                running++
                maxRunning = Math.max(maxRunning, running)
                if (message === "slow") {
                  yield* Deferred.succeed(started, undefined)
                  yield* Deferred.await(release)
                }
                handled.push(message)
                running--
              })
          })
          const slow = yield* Effect.forkChild(actor.tellOrRun!("slow"))
          yield* Deferred.await(started)
          yield* actor.tell("next")
          yield* actor.tellOrRun!("after")
          // (No `eventually` while a handler is blocked: on simulated time it would wait for the handler.)
          for (let i = 0; i < 20; i++) yield* Effect.yieldNow
          assert.deepStrictEqual(handled, [])
          // "next" was taken by the actor's loop, which waits for "slow"; "after" waits in the mailbox.
          assert.strictEqual(yield* actor.mailboxSize, 1)
          // The caller that runs the handler is not interrupted halfway.
          const interrupting = yield* Effect.forkChild(Fiber.interrupt(slow))
          for (let i = 0; i < 20; i++) yield* Effect.yieldNow
          assert.deepStrictEqual(handled, [])
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(interrupting)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["slow", "next", "after"])))
          assert.strictEqual(maxRunning, 1)
        }), timeout)

      test("a defect in a message handled in the caller's fiber is reported and counted as a restart", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<string> = []
          const defects: Array<readonly [string, unknown]> = []
          const actor = yield* runtimeOf(a).spawn({
            name: "inline-fragile",
            receive: (message: string) =>
              message === "poison" ? Effect.die("boom") : Effect.sync(() => handled.push(message)),
            onDefect: (message, defect) => Effect.sync(() => defects.push([message, defect]))
          })
          yield* actor.tellOrRun!("poison")
          assert.deepStrictEqual(defects, [["poison", "boom"]])
          assert.strictEqual(yield* actor.restarts, 1)
          yield* actor.tellOrRun!("a")
          yield* actor.tell("b")
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["a", "b"])))
          assert.strictEqual(yield* actor.restarts, 1)
        }), timeout)

      test("tellLaterUnsafe hands messages to the actor once the caller yields, in order", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<number> = []
          const scope = yield* Scope.make()
          const actor = yield* runtimeOf(a).spawn({
            name: "later",
            receive: (n: number) => Effect.sync(() => handled.push(n))
          }).pipe(Scope.provide(scope))
          assert.isTrue(actor.tellLaterUnsafe!(1))
          assert.isTrue(actor.tellLaterUnsafe!(2))
          yield* actor.tell(3)
          // Nothing yielded yet: not even the mailbox's message has run.
          assert.deepStrictEqual(handled, [])
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, [3, 1, 2])))
          yield* Scope.close(scope, Exit.void)
          assert.isFalse(actor.tellLaterUnsafe!(4))
          yield* stopped(cluster, actor, 5)
          assert.deepStrictEqual(handled, [3, 1, 2])
        }), timeout)

      test("runIfIdleUnsafe runs a body at once on an idle actor and refuses on a busy one", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          yield* Effect.addFinalizer(() => Deferred.succeed(release, undefined))
          const handled: Array<string> = []
          const actor = yield* runtimeOf(a).spawn({
            name: "run-if-idle",
            receive: (message: string) =>
              Effect.gen(function*() {
                if (message === "block") {
                  yield* Deferred.succeed(started, undefined)
                  yield* Deferred.await(release)
                }
                handled.push(message)
              })
          })
          const runIfIdle = actor.runIfIdleUnsafe!
          // Idle, synchronous body: done before the call returns, nothing left to run.
          const rest = runIfIdle(() => {
            handled.push("now")
            return Effect.void
          })
          assert.isTrue(rest !== undefined && Exit.isExit(rest) && Exit.isSuccess(rest))
          assert.deepStrictEqual(handled, ["now"])
          // A body that suspends: what is left runs in the caller, and holds the actor's next message.
          const gate = yield* Deferred.make<void>()
          const slow = runIfIdle(() => Effect.andThen(Deferred.await(gate), Effect.sync(() => handled.push("slow"))))
          assert.isDefined(slow)
          const running = yield* Effect.forkChild(slow!)
          yield* actor.tell("after-slow")
          for (let i = 0; i < 20; i++) yield* Effect.yieldNow
          assert.deepStrictEqual(handled, ["now"])
          assert.isUndefined(runIfIdle(() => Effect.sync(() => handled.push("refused"))))
          yield* Deferred.succeed(gate, undefined)
          yield* Fiber.join(running)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["now", "slow", "after-slow"])))
          // Busy on a message: refused, the body is not called.
          yield* actor.tell("block")
          yield* Deferred.await(started)
          let called = false
          assert.isUndefined(runIfIdle(() => Effect.sync(() => void (called = true))))
          assert.isFalse(called)
          yield* Deferred.succeed(release, undefined)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, ["now", "slow", "after-slow", "block"])))
        }), timeout)

      test("an actor stops when its scope closes", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          const handled: Array<number> = []
          const scope = yield* Scope.make()
          const actor = yield* runtimeOf(a).spawn({
            name: "scoped",
            receive: (n: number) => Effect.sync(() => handled.push(n))
          }).pipe(Scope.provide(scope))
          yield* actor.tell(1)
          yield* cluster.eventually(check(() => assert.deepStrictEqual(handled, [1])))
          yield* Scope.close(scope, Exit.void)
          yield* Effect.ignore(actor.tell(2))
          yield* stopped(cluster, actor, 3)
          assert.deepStrictEqual(handled, [1])
        }), timeout)
    })

    describe("timers", () => {
      if (simulated) {
        test("after(1s) does not fire at 999 ms, fires once at 1 s", () =>
          Effect.gen(function*() {
            const cluster = yield* makeNodes(1)
            const [a] = cluster.nodes
            const firedAt: Array<number> = []
            const start = yield* Clock.currentTimeMillis
            const fiber = yield* runtimeOf(a).after(
              "1 second",
              Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => firedAt.push(now - start)))
            )
            yield* passed(cluster, a, "999 millis")
            assert.deepStrictEqual(firedAt, [])
            yield* passed(cluster, a, "1 millis")
            assert.deepStrictEqual(firedAt, [1000])
            yield* Fiber.join(fiber)
            yield* passed(cluster, a, "10 seconds")
            assert.deepStrictEqual(firedAt, [1000])
          }), timeout)

        test("every(spaced 100ms) runs first after 100 ms, then every 100 ms, until interrupted", () =>
          Effect.gen(function*() {
            const cluster = yield* makeNodes(1)
            const [a] = cluster.nodes
            const runs: Array<number> = []
            const start = yield* Clock.currentTimeMillis
            const fiber = yield* runtimeOf(a).every(
              Schedule.spaced("100 millis"),
              Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => runs.push(now - start)))
            )
            yield* passed(cluster, a, "99 millis")
            assert.deepStrictEqual(runs, [])
            yield* passed(cluster, a, "1 millis")
            assert.deepStrictEqual(runs, [100])
            yield* passed(cluster, a, "900 millis")
            assert.deepStrictEqual(runs, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
            yield* Fiber.interrupt(fiber)
            yield* passed(cluster, a, "1 second")
            assert.strictEqual(runs.length, 10)
          }), timeout)

        test("every(recurs(2)) runs exactly twice and its fiber completes", () =>
          Effect.gen(function*() {
            const cluster = yield* makeNodes(1)
            const [a] = cluster.nodes
            let runs = 0
            const fiber = yield* runtimeOf(a).every(
              Schedule.max([Schedule.spaced("1 second"), Schedule.recurs(2)]),
              Effect.sync(() => runs++)
            )
            yield* passed(cluster, a, "10 seconds")
            yield* Fiber.join(fiber)
            assert.strictEqual(runs, 2)
          }), timeout)
      } else {
        test("after(d) fires once, never before d", () =>
          Effect.gen(function*() {
            const cluster = yield* makeNodes(1)
            const [a] = cluster.nodes
            const firedAt: Array<number> = []
            const start = yield* Clock.currentTimeMillis
            yield* runtimeOf(a).after(
              Duration.millis(tick),
              Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => firedAt.push(now - start)))
            )
            yield* cluster.eventually(check(() => assert.strictEqual(firedAt.length, 1)))
            // Timer resolution is 1 ms: allow the wall clock's rounding, never more.
            assert.isAtLeast(firedAt[0], tick - 1)
            yield* passed(cluster, a, Duration.millis(2 * tick))
            assert.strictEqual(firedAt.length, 1)
          }), timeout)
      }

      test("timers stop when their scope closes", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(1)
          const [a] = cluster.nodes
          let everyRuns = 0
          let afterRuns = 0
          const scope = yield* Scope.make()
          yield* runtimeOf(a).every(Schedule.spaced(Duration.millis(tick / 4)), Effect.sync(() => everyRuns++))
            .pipe(Scope.provide(scope))
          yield* runtimeOf(a).after(Duration.millis(tick * 2), Effect.sync(() => afterRuns++))
            .pipe(Scope.provide(scope))
          yield* passed(cluster, a, Duration.millis(tick))
          yield* cluster.eventually(check(() => assert.isAtLeast(everyRuns, simulated ? 4 : 1)))
          if (simulated) assert.strictEqual(everyRuns, 4)
          yield* Scope.close(scope, Exit.void)
          const runsAtClose = everyRuns
          yield* passed(cluster, a, Duration.millis(tick * 3))
          assert.strictEqual(everyRuns, runsAtClose)
          assert.strictEqual(afterRuns, 0)
        }), timeout)
    })

    describe("groups and messaging", () => {
      test("joinGroup / members / leaveGroup", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(3)
          const [a, b, c] = cluster.nodes
          const members = (node: RuntimeNode, group: string) => runtimeOf(node).members(group)
          assert.deepStrictEqual(yield* members(a, "g"), [])
          yield* runtimeOf(a).joinGroup("g")
          yield* runtimeOf(b).joinGroup("g")
          yield* runtimeOf(c).joinGroup("other")
          for (const node of [a, b, c]) {
            yield* cluster.eventually(Effect.gen(function*() {
              assert.deepStrictEqual(sortedIds(yield* members(node, "g")), sortedIds([a.id, b.id]))
              assert.deepStrictEqual(sortedIds(yield* members(node, "other")), [String(c.id)])
            }))
          }
          // Joining twice is idempotent.
          yield* runtimeOf(a).joinGroup("g")
          yield* runtimeOf(a).leaveGroup("g")
          for (const node of [a, b, c]) {
            yield* cluster.eventually(Effect.gen(function*() {
              assert.deepStrictEqual(sortedIds(yield* members(node, "g")), [String(b.id)])
            }))
          }
          // Leaving a group one is not in changes nothing.
          yield* runtimeOf(c).leaveGroup("g")
          yield* cluster.eventually(Effect.gen(function*() {
            assert.deepStrictEqual(sortedIds(yield* members(a, "g")), [String(b.id)])
          }))
        }), timeout)

      test("broadcast reaches every other member exactly once, not the sender nor non-members", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(4)
          const [a, b, c, d] = cluster.nodes
          const inboxes = yield* Effect.forEach(cluster.nodes, (n) => serveRecording(n))
          const [inA, inB, inC, inD] = inboxes
          for (const node of [a, b, c]) yield* runtimeOf(node).joinGroup("g")
          yield* cluster.eventually(Effect.gen(function*() {
            for (const node of [a, b, c, d]) {
              assert.deepStrictEqual(sortedIds(yield* runtimeOf(node).members("g")), sortedIds([a.id, b.id, c.id]))
            }
          }))
          yield* runtimeOf(a).broadcast("g", bytes(1, 2, 3))
          yield* cluster.eventually(check(() => {
            assert.deepStrictEqual(inB, [{ from: a.id, frame: [1, 2, 3] }])
            assert.deepStrictEqual(inC, [{ from: a.id, frame: [1, 2, 3] }])
          }))
          // Whatever a sent before its markers has arrived: nothing more reached b or c, nothing reached a or d.
          yield* markersArrived(cluster, a, [b, c, d])
          assert.deepStrictEqual(inA, [])
          assert.deepStrictEqual(inB.length, 1)
          assert.deepStrictEqual(inC.length, 1)
          assert.deepStrictEqual(inD, [])

          // After c leaves, a broadcast no longer reaches it.
          yield* runtimeOf(c).leaveGroup("g")
          yield* cluster.eventually(Effect.gen(function*() {
            assert.deepStrictEqual(sortedIds(yield* runtimeOf(a).members("g")), sortedIds([a.id, b.id]))
          }))
          yield* runtimeOf(b).broadcast("g", bytes(4))
          yield* cluster.eventually(check(() => assert.deepStrictEqual(inA, [{ from: b.id, frame: [4] }])))
          yield* markersArrived(cluster, b, [a, c, d])
          assert.deepStrictEqual(inB, [{ from: a.id, frame: [1, 2, 3] }])
          assert.deepStrictEqual(inC, [{ from: a.id, frame: [1, 2, 3] }])
          assert.deepStrictEqual(inD, [])

          // A node outside the group reaches every member.
          yield* runtimeOf(d).broadcast("g", bytes(5))
          yield* cluster.eventually(check(() => {
            assert.deepStrictEqual(inA, [{ from: b.id, frame: [4] }, { from: d.id, frame: [5] }])
            assert.deepStrictEqual(inB, [{ from: a.id, frame: [1, 2, 3] }, { from: d.id, frame: [5] }])
          }))
          yield* markersArrived(cluster, d, [a, b, c])
          assert.strictEqual(inC.length, 1)
          assert.deepStrictEqual(inD, [])
        }), timeout)

      test("broadcast to an empty or unknown group sends nothing", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          const inA = yield* serveRecording(a)
          const inB = yield* serveRecording(b)
          yield* runtimeOf(a).joinGroup("alone")
          yield* runtimeOf(a).broadcast("alone", bytes(1))
          yield* runtimeOf(a).broadcast("nobody", bytes(2))
          yield* markersArrived(cluster, a, [b])
          assert.deepStrictEqual(inA, [])
          assert.deepStrictEqual(inB, [])
        }), timeout)

      test("send delivers one frame to one node only, in order", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(3)
          const [a, b, c] = cluster.nodes
          const [inA, inB, inC] = yield* Effect.forEach(cluster.nodes, (n) => serveRecording(n))
          yield* runtimeOf(a).send(b.id, bytes(9))
          yield* runtimeOf(a).send(b.id, bytes(10, 11))
          yield* runtimeOf(c).send(b.id, bytes())
          yield* cluster.eventually(check(() => assert.strictEqual(inB.length, 3)))
          assert.deepStrictEqual(inB.filter((r) => r.from === a.id), [
            { from: a.id, frame: [9] },
            { from: a.id, frame: [10, 11] }
          ])
          assert.deepStrictEqual(inB.filter((r) => r.from === c.id), [{ from: c.id, frame: [] }])
          yield* markersArrived(cluster, a, [b, c])
          yield* markersArrived(cluster, c, [a, b])
          assert.strictEqual(inB.length, 3)
          assert.deepStrictEqual(inA, [])
          assert.deepStrictEqual(inC, [])
        }), timeout)

      test("a frame of 1 MiB arrives intact", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          const inB = yield* serveRecording(b)
          const frame = new Uint8Array(1024 * 1024)
          for (let i = 0; i < frame.length; i++) frame[i] = (i * 31 + 7) & 0xff
          yield* runtimeOf(a).send(b.id, frame)
          yield* cluster.eventually(check(() => assert.strictEqual(inB.length, 1)))
          assert.strictEqual(inB[0].frame.length, frame.length)
          assert.isTrue(inB[0].frame.every((v, i) => v === frame[i]))
        }), timeout)

      test("send to an unknown node fails with NodeUnreachable", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a] = cluster.nodes
          const nowhere = NodeId.make("no-such-node")
          const error = yield* Effect.flip(runtimeOf(a).send(nowhere, bytes(1)))
          assert.instanceOf(error, DStateError.NodeUnreachable)
          assert.strictEqual(error.node, nowhere)
        }), timeout)
    })

    describe("request / reply", () => {
      test("request returns the handler's reply and the handler sees the caller", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          const callers: Array<NodeId.NodeId> = []
          yield* serveRecording(b, (from, frame) =>
            Effect.sync(() => {
              callers.push(from)
              return Uint8Array.from([...frame].reverse().concat([0xff]))
            }))
          const reply = yield* runtimeOf(a).request(b.id, bytes(1, 2, 3), "5 seconds")
          assert.deepStrictEqual(Array.from(reply), [3, 2, 1, 0xff])
          assert.deepStrictEqual(callers, [a.id])
          // Concurrent requests each get their own reply.
          const replies = yield* Effect.forEach(
            [10, 20, 30, 40],
            (n) => runtimeOf(a).request(b.id, bytes(n), "5 seconds"),
            { concurrency: "unbounded" }
          )
          assert.deepStrictEqual(replies.map((r) => Array.from(r)), [[10, 0xff], [20, 0xff], [30, 0xff], [40, 0xff]])
        }), timeout)

      test("a request whose handler never answers fails with RequestTimeout after the timeout", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          yield* serveRecording(b, () => Effect.never)
          const timeoutMillis = simulated ? 1000 : tick * 2
          const start = yield* Clock.currentTimeMillis
          const fiber = yield* runtimeOf(a).request(b.id, bytes(1), Duration.millis(timeoutMillis)).pipe(
            Effect.exit,
            Effect.flatMap((exit) => Effect.map(Clock.currentTimeMillis, (now) => [exit, now - start] as const)),
            Effect.forkChild
          )
          if (simulated) {
            yield* Effect.yieldNow
            yield* passed(cluster, a, "999 millis")
            assert.isUndefined(fiber.pollUnsafe())
            yield* passed(cluster, a, "1 millis")
          }
          const [exit, elapsed] = yield* Fiber.join(fiber)
          assert.isTrue(Exit.isFailure(exit))
          const error = yield* Effect.flip(exit)
          assert.instanceOf(error, DStateError.RequestTimeout)
          if (error._tag !== "RequestTimeout") return
          assert.strictEqual(error.node, b.id)
          assert.strictEqual(error.timeoutMillis, timeoutMillis)
          if (simulated) assert.strictEqual(elapsed, 1000)
          else assert.isAtLeast(elapsed, timeoutMillis - 1)
        }), timeout)

      test("a request to an unknown node fails with NodeUnreachable", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a] = cluster.nodes
          const nowhere = NodeId.make("no-such-node")
          const error = yield* Effect.flip(runtimeOf(a).request(nowhere, bytes(1), "5 seconds"))
          assert.instanceOf(error, DStateError.NodeUnreachable)
          if (error._tag !== "NodeUnreachable") return
          assert.strictEqual(error.node, nowhere)
        }), timeout)

      test("a request to a node whose onRequest fails yields RequestRejected", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          yield* serveRecording(b, (_from, frame) =>
            frame[0] === 0
              ? Effect.fail(new ActorRuntime.RequestRejected({ node: b.id, reason: "state \"x\" is not registered" }))
              : Effect.succeed(frame))
          const error = yield* Effect.flip(runtimeOf(a).request(b.id, bytes(0), "5 seconds"))
          assert.instanceOf(error, ActorRuntime.RequestRejected)
          if (error._tag !== "RequestRejected") return
          assert.strictEqual(error.node, b.id)
          assert.strictEqual(error.reason, "state \"x\" is not registered")
          // The node still answers other requests.
          const reply = yield* runtimeOf(a).request(b.id, bytes(7), "5 seconds")
          assert.deepStrictEqual(Array.from(reply), [7])
        }), timeout)

      test("a request to a node that left fails with NodeUnreachable", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          yield* serveRecording(b)
          yield* cluster.removeNode(b)
          const error = yield* cluster.eventually(Effect.flip(runtimeOf(a).request(b.id, bytes(1), "1 second")).pipe(
            Effect.tap((e) => check(() => assert.strictEqual(e._tag, "NodeUnreachable")))
          ))
          assert.instanceOf(error, DStateError.NodeUnreachable)
          if (error._tag !== "NodeUnreachable") return
          assert.strictEqual(error.node, b.id)
        }), timeout)
    })

    describe("ClusterEvents", () => {
      test("each node sees every other node, and not itself, in members", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(3)
          for (const node of cluster.nodes) {
            const others = cluster.nodes.filter((n) => n !== node).map((n) => n.id)
            yield* cluster.eventually(Effect.gen(function*() {
              assert.deepStrictEqual(sortedIds(yield* eventsOf(node).members), sortedIds(others))
            }))
          }
        }), timeout)

      test("a node leaving produces NodeLeft on every other node, once", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(3)
          const [a, b, c] = cluster.nodes
          yield* cluster.eventually(Effect.gen(function*() {
            for (const node of [a, b]) assert.strictEqual((yield* eventsOf(node).members).size, 2)
          }))
          const eventsA = yield* recordEvents(a)
          const eventsB = yield* recordEvents(b)
          yield* cluster.removeNode(c)
          yield* cluster.eventually(check(() => {
            assert.deepStrictEqual(eventsA, [ClusterEvents.NodeLeft(c.id)])
            assert.deepStrictEqual(eventsB, [ClusterEvents.NodeLeft(c.id)])
          }))
          assert.deepStrictEqual(sortedIds(yield* eventsOf(a).members), [String(b.id)])
          assert.deepStrictEqual(sortedIds(yield* eventsOf(b).members), [String(a.id)])
          // A later join is the next event on both: the leave was not repeated before it.
          const d = yield* cluster.addNode
          yield* cluster.eventually(check(() => {
            assert.deepStrictEqual(eventsA, [ClusterEvents.NodeLeft(c.id), ClusterEvents.NodeJoined(d.id)])
            assert.deepStrictEqual(eventsB, [ClusterEvents.NodeLeft(c.id), ClusterEvents.NodeJoined(d.id)])
          }))
        }), timeout)

      test("a new node produces NodeJoined on every other node and sees them as members", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(2)
          const [a, b] = cluster.nodes
          yield* cluster.eventually(Effect.gen(function*() {
            assert.strictEqual((yield* eventsOf(a).members).size, 1)
          }))
          const eventsA = yield* recordEvents(a)
          const eventsB = yield* recordEvents(b)
          const c = yield* cluster.addNode
          assert.isFalse([a.id, b.id].includes(c.id))
          assert.strictEqual(runtimeOf(c).nodeId, c.id)
          yield* cluster.eventually(check(() => {
            assert.deepStrictEqual(eventsA, [ClusterEvents.NodeJoined(c.id)])
            assert.deepStrictEqual(eventsB, [ClusterEvents.NodeJoined(c.id)])
          }))
          yield* cluster.eventually(Effect.gen(function*() {
            assert.deepStrictEqual(sortedIds(yield* eventsOf(c).members), sortedIds([a.id, b.id]))
            assert.deepStrictEqual(sortedIds(yield* eventsOf(a).members), sortedIds([b.id, c.id]))
          }))
          // The new node is reachable at once.
          yield* serveRecording(c)
          const reply = yield* runtimeOf(a).request(c.id, bytes(42), "5 seconds")
          assert.deepStrictEqual(Array.from(reply), [42])
          // Its leave is the next event on both: the join was not repeated before it.
          yield* cluster.removeNode(c)
          yield* cluster.eventually(check(() => {
            assert.deepStrictEqual(eventsA, [ClusterEvents.NodeJoined(c.id), ClusterEvents.NodeLeft(c.id)])
            assert.deepStrictEqual(eventsB, [ClusterEvents.NodeJoined(c.id), ClusterEvents.NodeLeft(c.id)])
          }))
        }), timeout)

      test("a node that leaves and a node that joins are seen in order", () =>
        Effect.gen(function*() {
          const cluster = yield* makeNodes(3)
          const [a, b, c] = cluster.nodes
          yield* cluster.eventually(Effect.gen(function*() {
            assert.strictEqual((yield* eventsOf(a).members).size, 2)
          }))
          const eventsA = yield* recordEvents(a)
          yield* cluster.removeNode(b)
          yield* cluster.eventually(check(() => assert.strictEqual(eventsA.length, 1)))
          const d = yield* cluster.addNode
          yield* cluster.eventually(check(() =>
            assert.deepStrictEqual(eventsA, [ClusterEvents.NodeLeft(b.id), ClusterEvents.NodeJoined(d.id)])
          ))
          assert.deepStrictEqual(sortedIds(yield* eventsOf(a).members), sortedIds([c.id, d.id]))
        }), timeout)
    })

    const reachability = options?.reachability
    if (reachability !== undefined) {
      const millis = (input: Duration.Input) => Duration.toMillis(Duration.fromInputUnsafe(input))
      const detectAfter = millis(reachability.detectAfter)
      const downAfter = millis(reachability.downAfter)
      /** Simulated: lets `ms` pass. Real: nothing (`eventually` waits). */
      const pass = (cluster: RuntimeCluster, ms: number) =>
        cluster.advance === undefined ? Effect.void : cluster.advance(ms)
      const tagsOf = (events: ReadonlyArray<ClusterEvents.ClusterEvent>) => events.map((e) => [e._tag, e.node])

      describe("ClusterEvents: member states", () => {
        test("a silent member is NodeUnreachable, then NodeReachable once it answers, a member throughout", () =>
          Effect.gen(function*() {
            const cluster = yield* reachability.makeNodes(3)
            const [a, b, c] = cluster.nodes
            yield* cluster.eventually(Effect.gen(function*() {
              for (const node of [a, b]) assert.strictEqual((yield* eventsOf(node).members).size, 2)
            }))
            const eventsA = yield* recordEvents(a)
            const eventsB = yield* recordEvents(b)
            yield* cluster.silence(c)
            yield* pass(cluster, detectAfter)
            yield* cluster.eventually(check(() => {
              assert.deepStrictEqual(tagsOf(eventsA), [["NodeUnreachable", c.id]])
              assert.deepStrictEqual(tagsOf(eventsB), [["NodeUnreachable", c.id]])
            }))
            assert.deepStrictEqual(sortedIds(yield* eventsOf(a).members), sortedIds([b.id, c.id]))
            assert.deepStrictEqual(sortedIds((yield* eventsOf(a).unreachable).keys()), [String(c.id)])
            yield* cluster.answer(c)
            yield* pass(cluster, detectAfter)
            yield* cluster.eventually(check(() => {
              assert.deepStrictEqual(tagsOf(eventsA), [["NodeUnreachable", c.id], ["NodeReachable", c.id]])
              assert.deepStrictEqual(tagsOf(eventsB), [["NodeUnreachable", c.id], ["NodeReachable", c.id]])
            }))
            assert.strictEqual((yield* eventsOf(a).unreachable).size, 0)
            assert.deepStrictEqual(sortedIds(yield* eventsOf(a).members), sortedIds([b.id, c.id]))
          }), timeout)

        test("a member silent for downAfter after it was marked is NodeLeft; a graceful leave is NodeLeft alone", () =>
          Effect.gen(function*() {
            const cluster = yield* reachability.makeNodes(3)
            const [a, b, c] = cluster.nodes
            yield* cluster.eventually(Effect.gen(function*() {
              assert.strictEqual((yield* eventsOf(a).members).size, 2)
            }))
            const eventsA = yield* recordEvents(a)
            yield* cluster.silence(c)
            yield* pass(cluster, detectAfter)
            yield* cluster.eventually(check(() => assert.deepStrictEqual(tagsOf(eventsA), [["NodeUnreachable", c.id]])))
            yield* pass(cluster, downAfter)
            yield* cluster.eventually(check(() =>
              assert.deepStrictEqual(tagsOf(eventsA), [["NodeUnreachable", c.id], ["NodeLeft", c.id]])
            ))
            assert.deepStrictEqual(sortedIds(yield* eventsOf(a).members), [String(b.id)])
            assert.strictEqual((yield* eventsOf(a).unreachable).size, 0)
            yield* cluster.removeNode(b)
            yield* cluster.eventually(check(() =>
              assert.deepStrictEqual(tagsOf(eventsA), [["NodeUnreachable", c.id], ["NodeLeft", c.id], ["NodeLeft", b.id]])
            ))
          }), timeout)
      })
    }
  })
}

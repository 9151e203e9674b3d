/**
 * The TCP runtime under hostile input, over real loopback sockets, every node
 * under test an OS process of its own (test/fixtures/tcpNode.ts) and every
 * attacking or probing client in this one: the handshake order (the dialer
 * proves first, so an anonymous client learns nothing it could test a guess
 * of the secret against), a wrong-secret dial counted and logged on both
 * sides, one counter per reason a connection is refused before
 * authentication, rejection logs that an attacker cannot fill (the rate
 * limiter on the `TestClock`, then a node's log read from its stderr), and
 * the handshake slots under a flood of idle connections.
 *
 * Real time, bounded: every wait is for a condition with a deadline, and
 * every node process is killed when its test's scope closes.
 */
import { NodeFileSystem } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, FileSystem, Logger, Redacted, References, Scope } from "effect"
import { TestClock } from "effect/testing"
import { NodeId } from "dstate"
import { Buffer } from "node:buffer"
import { execFileSync } from "node:child_process"
import * as Net from "node:net"
import { join } from "node:path"
import { crc32 } from "node:zlib"
import * as Protocol from "../src/node/internal/protocol.ts"
import * as Rejections from "../src/node/internal/rejections.ts"
import type * as TcpRuntime from "../src/node/TcpRuntime.ts"
import { eventuallyWithin } from "./support/Eventually.ts"
import { canCutConnections, cut } from "./support/CutConnections.ts"
import * as NodeProcesses from "./support/NodeProcesses.ts"
import { frameOf, messagesOf, rawConnect, rawHello, write } from "./support/RawClient.ts"
import { secret } from "./support/RealNodes.ts"

let nodeCounter = 0

const poll = eventuallyWithin("8 seconds")

/** 100 ms heartbeats, down after 2 s of silence, detector consulted every 50 ms. */
const processHeartbeat = { intervalMillis: 100, timeoutMillis: 2000, checkMillis: 50 }

/** A node process under test: its id, its child and the address it listens on. */
interface ProcessNode {
  readonly id: NodeId.NodeId
  readonly child: NodeProcesses.Child
  readonly address: TcpRuntime.Address
}

/**
 * Starts a node process named `hostile-NNNN` (with `seeds`, the ports of the
 * nodes it joins through), with the test secret and JSON log lines unless
 * `options` say otherwise; its file store is in a temp directory removed with
 * the scope.
 */
const startProcess = (options: NodeProcesses.Options & { readonly seeds?: ReadonlyArray<number> } = {}) =>
  Effect.gen(function*() {
    const { seeds = [], ...settings } = options
    const name = `hostile-${String(++nodeCounter).padStart(4, "0")}`
    const directory = yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "dstate-hostile-" }))
    const { child, ready } = yield* NodeProcesses.startNode(name, join(directory, name), seeds, processHeartbeat, {
      secret: Redacted.value(secret),
      logs: "json",
      ...settings
    })
    const node: ProcessNode = { id: NodeId.make(name), child, address: { host: "127.0.0.1", port: ready.port } }
    return node
  }).pipe(Effect.provide(NodeFileSystem.layer))

/** The transport's counters and peers of a node process. */
const processStats = (child: NodeProcesses.Child) =>
  Effect.map(NodeProcesses.request(child, { op: "stats" }), (reply) => ({
    stats: reply.stats as TcpRuntime.TransportStats,
    peers: reply.peers as ReadonlyArray<{ readonly node: string; readonly connected: boolean }>
  }))

const processMembers = (child: NodeProcesses.Child) =>
  Effect.map(NodeProcesses.request(child, { op: "members" }), (reply) => reply.members as ReadonlyArray<string>)

/** The warnings a node process has logged so far. */
const processWarnings = (child: NodeProcesses.Child) => NodeProcesses.logs(child).filter((l) => l.level === "WARN")

/** Warnings about refused connections of `reason` a node process has logged so far, waiting for at least one. */
const awaitRefusals = (child: NodeProcesses.Child, reason: string) =>
  poll(Effect.sync(() => {
    const refusals = processWarnings(child).filter((l) => l.annotations.reason === reason)
    return refusals.length > 0 && refusals
  }))

describe("TcpRuntime: handshake order (node process)", () => {
  it.live("an anonymous client that sends Hello receives a Challenge without a proof, and nothing else", () =>
    Effect.gen(function*() {
      const node = yield* startProcess({ handshakeTimeoutMillis: 1000 })
      const client = yield* rawConnect(node.address)
      const { challenge, transcript } = yield* rawHello(client, "anonymous")
      assert.deepStrictEqual(Object.keys(challenge).sort(), ["_tag", "node", "nonce", "session"])
      // It stops there: the node closes the connection when the handshake times out, having sent only that.
      yield* Deferred.await(client.closed).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual(messagesOf(client.received).map((m) => m._tag), ["Challenge"])
      // The proof the node would give is nowhere in what it sent.
      const acceptorProof = Buffer.from(Protocol.proof(Protocol.secretBytes(Redacted.value(secret)), "acceptor", transcript))
      assert.strictEqual(Buffer.concat(client.received).indexOf(acceptorProof), -1)
      const { stats } = yield* poll(Effect.map(processStats(node.child), (s) => s.stats.handshakeTimeouts > 0 && s))
      assert.strictEqual(stats.handshakeTimeouts, 1)
      assert.strictEqual(stats.authFailures, 0)
    }), 20_000)

  it.live("a client whose proof is wrong is refused with Refused, never with a proof", () =>
    Effect.gen(function*() {
      const node = yield* startProcess()
      const client = yield* rawConnect(node.address)
      const { transcript } = yield* rawHello(client, "guesser")
      yield* write(client.socket, frameOf({
        _tag: "Auth",
        proof: Protocol.proof(Protocol.secretBytes("a guess of the secret"), "dialer", transcript),
        info: { host: "127.0.0.1", port: 1, groupsVersion: 0, groups: [], members: [] }
      }))
      yield* Deferred.await(client.closed).pipe(Effect.timeout("5 seconds"))
      assert.deepStrictEqual(messagesOf(client.received), [
        messagesOf(client.received)[0],
        { _tag: "Refused", reason: "auth-failed" }
      ])
      const { stats } = yield* poll(Effect.map(processStats(node.child), (s) => s.stats.authFailures > 0 && s))
      assert.strictEqual(stats.authFailures, 1)
    }), 20_000)
})

describe("TcpRuntime: a wrong-secret dial (node processes)", () => {
  it.live("is counted on both sides, and each side's log says which side could not verify which, with the peer's address", () =>
    Effect.gen(function*() {
      const honest = yield* startProcess()
      // One attempt only (the seed loop then pauses 5 s): exact counts on both sides.
      const wrong = yield* startProcess({
        seeds: [honest.address.port],
        secret: "another-secret-of-the-same-length",
        reconnect: "once"
      })
      yield* poll(Effect.gen(function*() {
        assert.strictEqual((yield* processStats(honest.child)).stats.authFailures, 1)
        assert.strictEqual((yield* processStats(wrong.child)).stats.authFailures, 1)
      }))
      const honestAddress = `${honest.address.host}:${honest.address.port}`
      const onHonest = yield* awaitRefusals(honest.child, "auth-failed")
      assert.strictEqual(onHonest.length, 1)
      assert.strictEqual(onHonest[0].annotations.role, "acceptor")
      assert.match(String(onHonest[0].annotations.remote), /^127\.0\.0\.1:\d+$/)
      assert.include(
        String(onHonest[0].annotations.detail),
        `this node could not verify the proof of the dialer ${wrong.id} at ${onHonest[0].annotations.remote}`
      )
      const onWrong = yield* awaitRefusals(wrong.child, "auth-failed")
      assert.strictEqual(onWrong.length, 1)
      assert.strictEqual(onWrong[0].annotations.role, "dialer")
      assert.strictEqual(onWrong[0].annotations.remote, honestAddress)
      assert.include(String(onWrong[0].annotations.detail), `${honest.id} at ${honestAddress} could not verify this node's proof`)
      assert.strictEqual((yield* processStats(honest.child)).stats.handshakesCompleted, 0)
    }), 20_000)
})

describe("TcpRuntime: one counter per reason a connection is refused before authentication (node process)", () => {
  it.live("bad checksum, old or unknown protocol byte, undecodable body, bad nonce: malformed; oversized: too large; out of order: unauthenticated; own id: own id", () =>
    Effect.gen(function*() {
      const node = yield* startProcess()
      const hello = frameOf({ _tag: "Hello", node: NodeId.make("prober"), session: "s", nonce: new Uint8Array(32) })
      const withByte = (frame: Uint8Array, at: number, value: number) => {
        const copy = frame.slice()
        copy[at] = value
        return copy
      }
      const garbageBody = (() => {
        const body = Uint8Array.of(0xee, 0xee, 0xee)
        const frame = new Uint8Array(Protocol.headerBytes + body.length)
        const view = new DataView(frame.buffer)
        view.setUint32(0, frame.length - 4)
        frame[4] = Protocol.transportProtocol
        view.setUint32(5, crc32(body))
        frame.set(body, Protocol.headerBytes)
        return frame
      })()
      const cases: ReadonlyArray<readonly [string, Uint8Array, keyof TcpRuntime.TransportStats]> = [
        ["bad checksum", withByte(hello, 5, hello[5] ^ 0xff), "rejectedMalformed"],
        ["protocol 1", withByte(hello, 4, 0x81), "rejectedMalformed"],
        ["unknown protocol", withByte(hello, 4, 0x99), "rejectedMalformed"],
        ["undecodable body", garbageBody, "rejectedMalformed"],
        ["short nonce", frameOf({ _tag: "Hello", node: NodeId.make("prober"), session: "s", nonce: new Uint8Array(3) }), "rejectedMalformed"],
        ["oversized", Uint8Array.of(0xff, 0xff, 0xff, 0xff), "rejectedTooLarge"],
        ["Auth before Hello", frameOf({ _tag: "Auth", proof: new Uint8Array(32), info: { host: "h", port: 1, groupsVersion: 0, groups: [], members: [] } }), "rejectedUnauthenticated"],
        ["own id", frameOf({ _tag: "Hello", node: node.id, session: "another-process", nonce: new Uint8Array(32) }), "rejectedOwnId"]
      ]
      const reasons = ["rejectedMalformed", "rejectedTooLarge", "rejectedUnauthenticated", "rejectedOwnId", "authFailures"] as const
      const expected: Record<string, number> = Object.fromEntries(reasons.map((r) => [r, 0]))
      for (const [what, bytes, counter] of cases) {
        const client = yield* rawConnect(node.address)
        yield* write(client.socket, bytes)
        yield* Deferred.await(client.closed).pipe(Effect.timeout("5 seconds"))
        expected[counter]++
        const { stats } = yield* poll(Effect.map(processStats(node.child), (s) => s.stats[counter] === expected[counter] && s))
        for (const reason of reasons) assert.strictEqual(stats[reason], expected[reason], `${what}: ${reason}`)
        assert.deepStrictEqual(messagesOf(client.received), [], what)
      }
    }), 20_000)
})

/** One recorded log line of the rate limiter under test. */
interface Line {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger that appends every line to `lines`. */
const recorder = (lines: Array<Line>) =>
  Logger.make((entry) => {
    lines.push({
      level: entry.logLevel,
      message: Array.isArray(entry.message) ? entry.message.map(String).join(" ") : String(entry.message),
      annotations: { ...entry.fiber.getRef(References.CurrentLogAnnotations) }
    })
  })

/** Runs `effect` (and every fiber it forks) logging into `lines` only. */
const logInto = (lines: Array<Line>) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provideService(Logger.CurrentLoggers, new Set([recorder(lines)])),
    Effect.provideService(References.MinimumLogLevel, "All")
  )

describe("TcpRuntime: rejection logs an attacker cannot fill", () => {
  it.effect("on the TestClock: the first of each reason in full, the rest in one summary per interval; a quiet reason is logged in full again", () =>
    Effect.gen(function*() {
      const lines: Array<Line> = []
      const scope = yield* Scope.make()
      const log = yield* Rejections.make({ interval: Duration.seconds(10), annotate: (e) => e }).pipe(
        Scope.provide(scope),
        logInto(lines)
      )
      const record = (reason: string, n: number) =>
        Effect.forEach(Array.from({ length: n }), (_, i) =>
          log.record(reason, "connection closed", { detail: `${reason} #${i + 1}` }), { discard: true }).pipe(logInto(lines))
      yield* record("malformed", 2901)
      yield* record("too-large", 911)
      // Two lines so far: the first of each reason, in full.
      assert.deepStrictEqual(lines.map((l) => [l.message, l.annotations.reason, l.annotations.detail]), [
        ["connection closed", "malformed", "malformed #1"],
        ["connection closed", "too-large", "too-large #1"]
      ])
      yield* TestClock.adjust("9999 millis")
      assert.strictEqual(lines.length, 2)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(lines.length, 3)
      assert.strictEqual(lines[2].message, "rejected 3,810 connections: malformed 2,900, too-large 910")
      assert.strictEqual(lines[2].level, "Warn")
      // A second interval: more too-large only. Malformed had nothing held back in it, so in the third it is
      // logged in full again.
      yield* record("too-large", 5)
      yield* TestClock.adjust("10 seconds")
      yield* record("malformed", 1)
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(lines.slice(3).map((l) => l.message), ["rejected 5 connections: too-large 5", "connection closed"])
      assert.strictEqual(lines[4].annotations.reason, "malformed")
      // Quiet intervals log nothing; closing the scope logs what is still held back.
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(lines.length, 5)
      yield* record("too-large", 2)
      yield* Scope.close(scope, Exit.void).pipe(logInto(lines))
      assert.deepStrictEqual(lines.slice(5).map((l) => l.message), ["connection closed", "rejected 1 connection: too-large 1"])
    }))

  it.live("a node process: N garbage connections give the counters N and its log exactly one full line and, when it stops, one summary", () =>
    Effect.gen(function*() {
      const n = 40
      const node = yield* startProcess({ rejectionLogIntervalMillis: 3_600_000 })
      const garbage = Uint8Array.of(0, 0, 0, 9, 0x99, 0, 0, 0, 0, 1, 2, 3, 4)
      // One connection at a time (each refused and closed before the next): all N are refused as malformed,
      // none for a full handshake quota of this address.
      for (let i = 0; i < n; i++) {
        const client = yield* rawConnect(node.address)
        yield* write(client.socket, garbage)
        yield* Deferred.await(client.closed).pipe(Effect.timeout("5 seconds"))
      }
      yield* poll(Effect.map(processStats(node.child), ({ stats }) => assert.strictEqual(stats.rejectedMalformed, n)))
      const refusals = () =>
        processWarnings(node.child).filter((l) => l.annotations.reason === "malformed" || String(l.message).startsWith("rejected"))
      const [full] = yield* awaitRefusals(node.child, "malformed")
      assert.strictEqual(refusals().length, 1)
      assert.include(String(full.annotations.detail), "unknown transport protocol 0x99")
      assert.match(String(full.annotations.remote), /^127\.0\.0\.1:\d+$/)
      // Stopping the node logs what the interval held back; once it has exited, its whole log has been read.
      yield* NodeProcesses.stop(node.child)
      assert.strictEqual(node.child.process.exitCode, 0)
      assert.deepStrictEqual(refusals().map((l) => l.message), ["connection closed", `rejected ${n - 1} connections: malformed ${n - 1}`])
    }), 20_000)
})

// ---- handshake lockout ------------------------------------------------------------------------------

/**
 * Holds `count` idle connections open from `sources` (spread evenly), each
 * reopened as soon as the node closes it, at most `perSecond` new connections
 * a second. Runs until interrupted; `opened` counts the connections made.
 */
const flood = (address: TcpRuntime.Address, sources: ReadonlyArray<string>, count: number, perSecond: number) =>
  Effect.gen(function*() {
    const open = new Set<Net.Socket>()
    const stats = { opened: 0 }
    let missing = count
    let next = 0
    const connect = () => {
      const socket = Net.createConnection({ host: address.host, port: address.port, localAddress: sources[next++ % sources.length] })
      stats.opened++
      open.add(socket)
      socket.on("error", () => {})
      socket.on("close", () => {
        open.delete(socket)
        missing++
      })
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => {
      for (const socket of open) socket.destroy()
    }))
    const perTick = Math.max(1, Math.round(perSecond / 100))
    yield* Effect.gen(function*() {
      while (true) {
        for (let i = 0; i < perTick && missing > 0; i++) {
          missing--
          connect()
        }
        yield* Effect.sleep("10 millis")
      }
    }).pipe(Effect.forkScoped)
    return stats
  })

describe("TcpRuntime: handshake lockout (node processes)", () => {
  it.live.skipIf(!canCutConnections)(
    "500 idle connections renewed at 1,000/s from 10 addresses: a member whose connection is cut reconnects and is never declared down; a new node joins within 5 s",
    () =>
      Effect.gen(function*() {
        const n = ++nodeCounter
        const directory = yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "dstate-lockout-" }))
        // Each node is an OS process of its own; the attacker is this process.
        // The target's id is the smaller: it dials the member, and the member dials it as its seed.
        const target = yield* NodeProcesses.startNode(`a-target-${n}`, join(directory, "target"), [], processHeartbeat)
        const member = yield* NodeProcesses.startNode(`m-member-${n}`, join(directory, "member"), [target.ready.port], processHeartbeat)
        yield* poll(Effect.map(processMembers(target.child), (m) => assert.deepStrictEqual(m, [member.child.name])))
        yield* poll(Effect.map(processMembers(member.child), (m) => assert.deepStrictEqual(m, [target.child.name])))

        const sources = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 2}`)
        const attack = yield* flood({ host: "127.0.0.1", port: target.ready.port }, sources, 500, 1000)
        // The attack is on: every address is at its limit and the rest is refused.
        yield* poll(Effect.map(processStats(target.child), ({ stats: s }) => {
          assert.isAtLeast(s.rejectedAddressLimit + s.rejectedPendingHandshakes, 500, JSON.stringify({ ...s, opened: attack.opened }))
          assert.isAtLeast(s.handshakeIdleTimeouts, 64)
        }))
        const before = (yield* processStats(target.child)).stats

        // Cut the member's connections (both directions between the two nodes; the attackers' are spared).
        yield* cut("sport", "=", `:${member.ready.port}`)
        yield* cut("dport", "=", `:${member.ready.port}`)
        yield* cut("src", "127.0.0.1", "dport", "=", `:${target.ready.port}`)
        // It reconnects: a new handshake completes and the peer is connected again on both sides.
        yield* poll(Effect.gen(function*() {
          const onTarget = yield* processStats(target.child)
          assert.isAbove(onTarget.stats.handshakesCompleted, before.handshakesCompleted)
          assert.isTrue(onTarget.peers.some((p) => p.node === member.child.name && p.connected))
          assert.isTrue((yield* processStats(member.child)).peers.some((p) => p.node === target.child.name && p.connected))
        }))

        // A new node with the secret joins within 5 s, through the target as its seed.
        const joining = yield* NodeProcesses.startNode(`z-joining-${n}`, join(directory, "joining"), [target.ready.port], processHeartbeat)
        yield* eventuallyWithin("5 seconds")(Effect.gen(function*() {
          assert.deepStrictEqual(yield* processMembers(joining.child), [target.child.name, member.child.name].sort())
          assert.deepStrictEqual(yield* processMembers(target.child), [member.child.name, joining.child.name].sort())
        }))

        // Keep the attack on for two more detector timeouts: nobody is declared down.
        const opened = attack.opened
        yield* poll(Effect.sync(() => attack.opened >= opened + 3000))
        for (const node of [target, member, joining]) {
          const { stats } = yield* processStats(node.child)
          assert.strictEqual(stats.failuresDetected, 0, `failures detected by ${node.child.name}`)
          assert.strictEqual(stats.nodesLeft, 0, `nodes left on ${node.child.name}`)
        }
        const after = (yield* processStats(target.child)).stats
        assert.isAtLeast(attack.opened, 3500)
        assert.isAbove(after.rejectedAddressLimit + after.rejectedPendingHandshakes, before.rejectedAddressLimit + before.rejectedPendingHandshakes)
        // 10 addresses at 8 each overfill the 64 general slots: the member and the new node came in on the reserve.
        assert.isAbove(after.rejectedPendingHandshakes, 0)
      }).pipe(Effect.provide(NodeFileSystem.layer)),
    60_000
  )
})

describe("dstate secret", () => {
  it("prints 32 fresh random bytes, as base64 or hex, usable as a TcpRuntime secret", () => {
    const run = (...args: ReadonlyArray<string>) => execFileSync(process.execPath, ["bin/dstate.ts", "secret", ...args]).toString().trim()
    const [a, b] = [run(), run()]
    assert.match(a, /^[A-Za-z0-9+/]{43}=$/)
    assert.strictEqual(Buffer.from(a, "base64").length, 32)
    assert.notStrictEqual(a, b)
    assert.match(run("--hex"), /^[0-9a-f]{64}$/)
  })
})

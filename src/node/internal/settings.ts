/**
 * The TCP runtime's options checked and completed: every size, count and
 * duration in its range (else `InvalidOptions` naming the option, never a
 * secret's value), the secrets turned into their bytes, the defaults
 * applied. `TcpRuntime` re-exports the public parts (`parseAddress`,
 * `defaultReconnect`).
 * @internal
 */
import { Duration, Effect, Redacted, Schedule } from "effect"
import { InvalidOptions } from "../../DStateError.ts"
import * as LocalHealth from "../../internal/localHealth.ts"
import * as Check from "../../internal/options.ts"
import * as NodeId from "../../NodeId.ts"
import { ackProtocolVersion } from "../../SyncMessage.ts"
import type { Address, Options, Secret, Secrets } from "../TcpRuntime.ts"
import type { DetectorSettings } from "./detector.ts"
import * as Protocol from "./protocol.ts"
import type * as Transport from "./transport.ts"

/**
 * Parses `"host:port"` (IPv6 hosts in brackets: `"[::1]:7001"`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseAddress = (input: string): Address | undefined => {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(input.trim()) ?? /^([^:]+):(\d+)$/.exec(input.trim())
  if (match === null) return undefined
  const port = Number(match[2])
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined
  return { host: match[1], port }
}

/**
 * The default reconnection schedule: exponential from 100 ms, at most 5 s
 * apart, for 2 minutes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultReconnect: Schedule.Schedule<unknown, unknown> = Schedule.min([
  Schedule.exponential("100 millis"),
  Schedule.spaced("5 seconds")
]).pipe(Schedule.upTo({ duration: "2 minutes" })) as Schedule.Schedule<unknown, unknown>

/** The bytes of each listed secret, the current one first; fails naming the option without any value. */
export const secretKeys = (secrets: Secrets, option: string): Effect.Effect<ReadonlyArray<Uint8Array>, InvalidOptions> => {
  const refuse = (reason: string) => Effect.fail(new InvalidOptions({ module: "TcpRuntime", option, reason }))
  const list: ReadonlyArray<unknown> = Array.isArray(secrets) ? secrets : [secrets]
  if (list.length === 0) return refuse("must list at least one secret, the current one first")
  const keys: Array<Uint8Array> = []
  for (const [i, secret] of list.entries()) {
    const which = list.length === 1 ? "" : ` (entry ${i})`
    if (!Redacted.isRedacted(secret)) return refuse(`must be a Redacted value${which}`)
    const value = Redacted.value(secret as Secret)
    if (typeof value !== "string" && !(value instanceof Uint8Array)) return refuse(`must hold a string or bytes${which}`)
    const key = Protocol.secretBytes(value)
    if (key.length < 16) return refuse(`must be at least 16 bytes${which}`)
    keys.push(key)
  }
  return Effect.succeed(keys)
}

const checker: Check.Checker = { module: "TcpRuntime" }

/**
 * The transport settings of `options`, or `InvalidOptions` for the first
 * option outside its range: sizes and counts are positive integers (the port
 * 0 to 65535), durations finite and positive (`leaveTimeout`,
 * `downAfter` and `acceptableHeartbeatPause` may be 0).
 */
export const resolve = Effect.fnUntraced(function*(options: Options, defaultMaxFrame: number) {
  const invalid = (option: string, value: unknown, reason: string) => Effect.fail(Check.invalid(checker, option, value, reason))
  const positive = (option: string, input: Duration.Input) => Check.duration(checker, option, input, "positive")
  const nonNegative = (option: string, input: Duration.Input) => Check.duration(checker, option, input, "nonNegative")
  const count = (option: string, value: number) => Check.integer(checker, option, value, 1)
  if (typeof options.nodeId !== "string" || options.nodeId.length === 0) {
    return yield* invalid("nodeId", options.nodeId, "must be a non-empty string")
  }
  const port = yield* Check.integer(checker, "port", options.port ?? 0, 0, 65535)
  const syncProtocol = yield* Check.integer(checker, "syncProtocol", options.syncProtocol ?? ackProtocolVersion, 1, ackProtocolVersion)
  const seeds: Array<Transport.Address> = []
  for (const seed of options.seeds ?? []) {
    const address = typeof seed === "string" ? parseAddress(seed) : seed
    if (address === undefined) return yield* invalid("seeds", seed, `cannot parse "${String(seed)}" as host:port`)
    seeds.push(address)
  }
  // A secret's value is never put in the error.
  const keys = yield* secretKeys(options.secret, "secret")
  const limits = options.limits ?? {}
  const maxFrameBytes = limits.maxFrameBytes === undefined
    ? defaultMaxFrame
    : yield* count("limits.maxFrameBytes", limits.maxFrameBytes)
  const handshakeFrameBytes = yield* count("limits.handshakeFrameBytes", limits.handshakeFrameBytes ?? 64 * 1024)
  const maxQueuedBytes = yield* Check.integer(
    checker,
    "limits.maxQueuedBytes",
    limits.maxQueuedBytes ?? Math.max(32 * 1024 * 1024, maxFrameBytes + Protocol.envelopeOverhead),
    maxFrameBytes + Protocol.envelopeOverhead
  ).pipe(
    Effect.mapError((error) =>
      Check.invalid(checker, error.option, error.value, `must be an integer of at least maxFrameBytes + ${Protocol.envelopeOverhead}`)
    )
  )
  const maxQueuedFrames = yield* count("limits.maxQueuedFrames", limits.maxQueuedFrames ?? 10_000)
  const backpressureFrames = yield* Check.integer(
    checker,
    "limits.backpressureFrames",
    limits.backpressureFrames ?? Math.max(1, Math.floor(maxQueuedFrames / 2)),
    1,
    maxQueuedFrames
  )
  const backpressureBytes = yield* Check.integer(
    checker,
    "limits.backpressureBytes",
    limits.backpressureBytes ?? Math.max(1, Math.floor(maxQueuedBytes / 2)),
    1,
    maxQueuedBytes
  )
  const stallTimeout = yield* positive("stallTimeout", options.stallTimeout ?? "1 second")
  const maxPendingHandshakes = yield* count("limits.maxPendingHandshakes", limits.maxPendingHandshakes ?? 64)
  const maxPendingHandshakesPerAddress = yield* count(
    "limits.maxPendingHandshakesPerAddress",
    limits.maxPendingHandshakesPerAddress ?? 8
  )
  const reservedHandshakes = yield* Check.integer(checker, "limits.reservedHandshakes", limits.reservedHandshakes ?? 16, 0)
  const mailbox = yield* Check.mailbox(checker, "limits.mailbox", limits.mailbox ?? "unbounded")
  const interval = yield* positive("heartbeat.interval", options.heartbeat?.interval ?? "1 second")
  const checkInterval = yield* positive(
    "heartbeat.checkInterval",
    options.heartbeat?.checkInterval ?? Duration.millis(Math.max(1, Duration.toMillis(interval) / 2))
  )
  const detector = options.heartbeat?.detector ?? { _tag: "FixedTimeout", timeout: "5 seconds" }
  const detectorSettings: DetectorSettings = detector._tag === "FixedTimeout"
    ? {
      _tag: "FixedTimeout",
      timeoutMillis: Duration.toMillis(yield* positive("heartbeat.detector.timeout", detector.timeout))
    }
    : {
      _tag: "PhiAccrual",
      threshold: yield* Check.number(checker, "heartbeat.detector.threshold", detector.threshold, "positive"),
      minStdDeviationMillis: Duration.toMillis(
        yield* positive("heartbeat.detector.minStdDeviation", detector.minStdDeviation)
      ),
      acceptablePauseMillis: Duration.toMillis(
        yield* nonNegative("heartbeat.detector.acceptableHeartbeatPause", detector.acceptableHeartbeatPause)
      ),
      // One interval is no distribution: keep at least two.
      maxSampleSize: Math.max(2, yield* count("heartbeat.detector.maxSampleSize", detector.maxSampleSize)),
      firstHeartbeatEstimateMillis: Duration.toMillis(interval),
      maxSilenceMillis: Duration.toMillis(yield* positive("heartbeat.detector.maxSilence", detector.maxSilence))
    }
  const downAfter = yield* nonNegative("downAfter", options.downAfter ?? "30 seconds")
  const localHealth = options.heartbeat?.localHealth
  const localHealthMax = localHealth === undefined || localHealth === false
    ? undefined
    : yield* Check.integer(
      checker,
      "heartbeat.localHealth.max",
      localHealth === true ? LocalHealth.defaultMax : localHealth.max ?? LocalHealth.defaultMax,
      0
    )
  const handshakeTimeout = yield* positive("handshakeTimeout", options.handshakeTimeout ?? "5 seconds")
  const handshakeIdleTimeout = yield* positive("handshakeIdleTimeout", options.handshakeIdleTimeout ?? "1 second")
  const connectTimeout = yield* positive("connectTimeout", options.connectTimeout ?? "5 seconds")
  const rejectionLogInterval = yield* positive("rejectionLogInterval", options.rejectionLogInterval ?? "10 seconds")
  const leaveTimeout = yield* nonNegative("leaveTimeout", options.leaveTimeout ?? "1 second")
  const host = options.host ?? "127.0.0.1"
  const tls = options.tls
  const settings: Transport.Settings = {
    nodeId: NodeId.make(options.nodeId),
    host,
    port,
    advertiseHost: options.advertiseHost ?? (host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host),
    seeds,
    keys: { current: keys },
    tls: tls === undefined ? undefined : {
      cert: tls.cert,
      key: tls.key,
      ca: tls.ca,
      mutual: tls.mutual ?? tls.ca !== undefined,
      verifyHostname: tls.verifyHostname ?? true,
      servername: tls.servername
    },
    maxFrameBytes,
    handshakeFrameBytes,
    maxQueuedBytes,
    maxQueuedFrames,
    backpressureFrames,
    backpressureBytes,
    stallTimeout,
    maxPendingHandshakes,
    maxPendingHandshakesPerAddress,
    reservedHandshakes,
    mailbox,
    heartbeatInterval: interval,
    detectorCheckInterval: checkInterval,
    detector: detectorSettings,
    downAfter,
    localHealthMax,
    handshakeTimeout,
    handshakeIdleTimeout,
    rejectionLogInterval,
    connectTimeout,
    leaveTimeout,
    reconnect: options.reconnect ?? defaultReconnect,
    seedRetryPause: Duration.seconds(5),
    syncProtocol
  }
  return settings
})


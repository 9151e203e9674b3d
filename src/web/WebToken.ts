/**
 * The tokens a browser presents to the WebSocket endpoint of `dstate/web`:
 * short-lived, issued by the application (which authenticates its users in
 * its own way) and signed with a key it shares with the nodes. A token says
 * which states its bearer may read, whether it may also read the node's
 * status (members, reachability, counters: what the dashboard shows), and
 * until when it is valid. It grants reading only: a browser never writes.
 *
 * Format: `v1.<claims>.<signature>`, the claims as base64url JSON and the
 * signature the base64url HMAC-SHA256 of `v1.<claims>` under the key. The
 * signature is compared in constant time. Node only (`node:crypto`); the
 * browser treats a token as an opaque string.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Redacted, Result, Schema } from "effect"
import * as Crypto from "node:crypto"
import type { InvalidOptions } from "../DStateError.ts"
import * as Check from "../internal/options.ts"
import { WebTokenRefused } from "./WebErrors.ts"

export {
  /**
   * @category errors
   * @since 0.2.0
   */
  WebTokenRefused
} from "./WebErrors.ts"

/**
 * What a token grants.
 *
 * @category models
 * @since 0.2.0
 */
export interface Claims {
  /** The states its bearer may read, or `"*"` for every state the endpoint serves. */
  readonly states: ReadonlyArray<string> | "*"
  /** Whether its bearer also receives the node's status (members, reachability, per-state counters). */
  readonly status: boolean
  /** Wall-clock milliseconds when it was issued. */
  readonly issuedAt: number
  /** Wall-clock milliseconds from which it is refused. */
  readonly expiresAt: number
  /** Whom the application issued it to (free text, for its own logs). */
  readonly subject?: string | undefined
}

const ClaimsJson = Schema.fromJsonString(Schema.Struct({
  states: Schema.Union([Schema.Literal("*"), Schema.Array(Schema.String)]),
  status: Schema.Boolean,
  issuedAt: Schema.Finite,
  expiresAt: Schema.Finite,
  subject: Schema.optionalKey(Schema.String)
}))
const decodeClaims = Schema.decodeUnknownResult(ClaimsJson)
const encodeClaims = Schema.encodeSync(ClaimsJson)

/**
 * Options of `issue`.
 *
 * @category models
 * @since 0.2.0
 */
export interface IssueOptions {
  /** The states the bearer may read (names), or `"*"` for all that the endpoint serves. */
  readonly states: ReadonlyArray<string> | "*"
  /** How long the token is valid (default 5 minutes; at most 24 hours). */
  readonly ttl?: Duration.Input | undefined
  /** Whether the bearer may read the node's status (default `false`; the dashboard needs it). */
  readonly status?: boolean | undefined
  /** Whom it is for, carried in the claims. */
  readonly subject?: string | undefined
}

/**
 * The longest a token may be valid.
 *
 * @category models
 * @since 0.2.0
 */
export const maxTtl: Duration.Duration = Duration.hours(24)

/**
 * The shortest key accepted (characters).
 *
 * @category models
 * @since 0.2.0
 */
export const minKeyLength = 16

const checker = { module: "WebToken" }

/**
 * Checks a signing key: at least `minKeyLength` characters.
 *
 * @category constructors
 * @since 0.2.0
 */
export const checkKey = (key: Redacted.Redacted<string>, module = "WebToken"): Effect.Effect<Redacted.Redacted<string>, InvalidOptions> =>
  Redacted.isRedacted(key) && typeof Redacted.value(key) === "string" && Redacted.value(key).length >= minKeyLength
    ? Effect.succeed(key)
    : Effect.fail(Check.invalid({ module }, "key", "<redacted>", `must be a Redacted string of at least ${minKeyLength} characters`))

const sign = (key: Redacted.Redacted<string>, signed: string): Buffer =>
  Crypto.createHmac("sha256", Redacted.value(key)).update(signed).digest()

/**
 * Issues a token signed with `key`, valid from now (the `Clock`'s wall
 * clock) for `ttl`. Fails with `InvalidOptions` for a key shorter than
 * `minKeyLength`, a `ttl` that is not positive or longer than `maxTtl`, or
 * a state name that is empty.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { WebToken } from "dstate/web"
 *
 * const key = Redacted.make("the key the nodes' WebReplicas layer has")
 * const token = WebToken.issue(key, { states: ["counter"], ttl: "10 minutes" })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const issue = Effect.fn("WebToken.issue")(function*(key: Redacted.Redacted<string>, options: IssueOptions) {
  yield* checkKey(key)
  const ttl = yield* Check.duration(checker, "ttl", options.ttl ?? "5 minutes", "positive")
  if (Duration.isGreaterThan(ttl, maxTtl)) {
    return yield* Check.invalid(checker, "ttl", options.ttl, "must be at most 24 hours")
  }
  const states = options.states
  if (states !== "*" && (!Array.isArray(states) || states.some((name) => typeof name !== "string" || name.length === 0))) {
    return yield* Check.invalid(checker, "states", states, "must be \"*\" or an array of non-empty state names")
  }
  const now = yield* Clock.currentTimeMillis
  const claims = encodeClaims({
    states: states === "*" ? "*" : [...states],
    status: options.status ?? false,
    issuedAt: now,
    expiresAt: now + Duration.toMillis(ttl),
    ...(options.subject === undefined ? {} : { subject: options.subject })
  })
  const signed = `v1.${Buffer.from(claims).toString("base64url")}`
  return `${signed}.${sign(key, signed).toString("base64url")}`
})

/**
 * Checks a token against `keys` (the first signs; the others still verify,
 * for a rotation) at wall-clock `now`: its format, its signature, its
 * expiry. It says nothing yet about scope: see `allows`.
 *
 * @category constructors
 * @since 0.2.0
 */
export const verify = (
  keys: ReadonlyArray<Redacted.Redacted<string>>,
  token: string,
  now: number
): Result.Result<Claims, WebTokenRefused> => {
  const parts = typeof token === "string" ? token.split(".") : []
  if (parts.length !== 3 || parts[0] !== "v1") {
    return Result.fail(new WebTokenRefused({ reason: "Malformed", detail: "not a v1 token" }))
  }
  const signed = `${parts[0]}.${parts[1]}`
  const given = Buffer.from(parts[2], "base64url")
  const valid = keys.some((key) => {
    const expected = sign(key, signed)
    return given.length === expected.length && Crypto.timingSafeEqual(given, expected)
  })
  if (!valid) return Result.fail(new WebTokenRefused({ reason: "BadSignature", detail: "the signature does not verify" }))
  const claims = decodeClaims(Buffer.from(parts[1], "base64url").toString("utf8"))
  if (Result.isFailure(claims)) return Result.fail(new WebTokenRefused({ reason: "Malformed", detail: "the claims do not decode" }))
  if (now >= claims.success.expiresAt) {
    return Result.fail(
      new WebTokenRefused({ reason: "Expired", detail: `expired ${Math.round(now - claims.success.expiresAt)} ms ago` })
    )
  }
  return Result.succeed(claims.success)
}

/**
 * Whether `claims` allow reading `stateName`.
 *
 * @category guards
 * @since 0.2.0
 */
export const allows = (claims: Claims, stateName: string): boolean =>
  claims.states === "*" || claims.states.includes(stateName)

/**
 * Tokens of `dstate/web` on the `TestClock`: issued and verified with exact
 * claims; refused at exactly their expiry and not a millisecond before;
 * refused when tampered with, signed with another key, or not a token; a
 * rotation's older key still verifies; `issue`'s options at their edges.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Result } from "effect"
import { TestClock } from "effect/testing"
import { WebToken } from "dstate/web"

const key = Redacted.make("0123456789abcdef")
const refusal = (result: Result.Result<WebToken.Claims, WebToken.WebTokenRefused>) =>
  Result.isFailure(result) ? result.failure.reason : "accepted"

describe("WebToken", () => {
  it.effect("issues tokens that verify with their claims until, and not at, their expiry", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000_000)
      const token = yield* WebToken.issue(key, { states: ["counter"], ttl: "10 seconds", status: true, subject: "tab 1" })
      const claims = WebToken.verify([key], token, 1_009_999)
      assert.deepStrictEqual(Result.getOrThrow(claims), {
        states: ["counter"],
        status: true,
        issuedAt: 1_000_000,
        expiresAt: 1_010_000,
        subject: "tab 1"
      })
      assert.strictEqual(refusal(WebToken.verify([key], token, 1_010_000)), "Expired")
      assert.isTrue(WebToken.allows(Result.getOrThrow(claims), "counter"))
      assert.isFalse(WebToken.allows(Result.getOrThrow(claims), "other"))
      const all = yield* WebToken.issue(key, { states: "*" })
      const allClaims = Result.getOrThrow(WebToken.verify([key], all, 1_000_000))
      assert.strictEqual(allClaims.status, false)
      assert.strictEqual(allClaims.expiresAt, 1_000_000 + 5 * 60_000)
      assert.isTrue(WebToken.allows(allClaims, "anything"))
    }))

  it.effect("refuses tampered, foreign and malformed tokens", () =>
    Effect.gen(function*() {
      const token = yield* WebToken.issue(key, { states: ["counter"] })
      const [version, claims, signature] = token.split(".")
      const widened = Buffer.from(
        JSON.stringify({ ...JSON.parse(Buffer.from(claims, "base64url").toString()), states: "*" })
      ).toString("base64url")
      assert.strictEqual(refusal(WebToken.verify([key], `${version}.${widened}.${signature}`, 0)), "BadSignature")
      const foreign = yield* WebToken.issue(Redacted.make("another key, long enough"), { states: "*" })
      assert.strictEqual(refusal(WebToken.verify([key], foreign, 0)), "BadSignature")
      assert.strictEqual(refusal(WebToken.verify([key], "", 0)), "Malformed")
      assert.strictEqual(refusal(WebToken.verify([key], "v2.a.b", 0)), "Malformed")
      assert.strictEqual(refusal(WebToken.verify([key], `${version}.${claims}`, 0)), "Malformed")
      // A rotation: the new key signs, the old one still verifies.
      assert.strictEqual(refusal(WebToken.verify([Redacted.make("the next key 0123"), key], token, 0)), "accepted")
    }))

  it.effect("issue's options at their edges", () =>
    Effect.gen(function*() {
      const invalid = (effect: Effect.Effect<string, unknown>) =>
        Effect.map(Effect.flip(effect), (error) => (error as { readonly _tag: string; readonly option: string }).option)
      assert.strictEqual(yield* invalid(WebToken.issue(Redacted.make("0123456789abcde"), { states: "*" })), "key")
      assert.strictEqual(yield* invalid(WebToken.issue(key, { states: "*", ttl: 0 })), "ttl")
      assert.strictEqual(yield* invalid(WebToken.issue(key, { states: "*", ttl: "86400001 millis" })), "ttl")
      assert.strictEqual(yield* invalid(WebToken.issue(key, { states: [""] })), "states")
      const longest = yield* WebToken.issue(key, { states: "*", ttl: "24 hours" })
      assert.strictEqual(refusal(WebToken.verify([key], longest, 86_399_999)), "accepted")
      assert.strictEqual(refusal(WebToken.verify([key], longest, 86_400_000)), "Expired")
    }))
})

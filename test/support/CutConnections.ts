/**
 * Cutting live TCP connections from outside the process that holds them, as
 * a network fault would: `ss -K` resets every connection matching a filter
 * (both ends see it). It needs root and a kernel with INET_DIAG_DESTROY;
 * suites that cut skip with that reason where it is missing.
 */
import { Effect } from "effect"
import { execFileSync } from "node:child_process"

/** Whether this machine lets a test cut a live TCP connection. */
export const canCutConnections = (() => {
  try {
    execFileSync("ss", ["-K", "dport", "=", ":1"], { stdio: "ignore" })
    return process.getuid?.() === 0
  } catch {
    return false
  }
})()

/** Cuts every TCP connection matching the `ss` filter (both ends see it reset). */
export const cut = (...filter: ReadonlyArray<string>) =>
  Effect.sync(() => execFileSync("ss", ["-K", ...filter], { stdio: "ignore" }))

/** Cuts every TCP connection to or from `port`. */
export const cutPort = (port: number) =>
  Effect.andThen(cut("sport", "=", `:${port}`), cut("dport", "=", `:${port}`))

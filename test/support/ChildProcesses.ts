/**
 * What the tests that drive child processes share: a child's exit and its
 * standard error, watched the same way everywhere.
 */
import type { ChildProcess } from "node:child_process"

/** The part of a test's child record this module keeps up to date. */
export interface Watched {
  readonly process: ChildProcess
  /** Everything the child wrote to standard error. */
  stderr: string
  /** Set once the child has exited and its streams are closed. */
  closed: boolean
  /** Called on every output line and on exit (the test's `waitFor` re-checks its condition). */
  readonly waiters: Set<() => void>
}

/** Wakes every waiter of a child. */
export const notify = (child: Watched): void => child.waiters.forEach((waiter) => waiter())

/**
 * Collects the child's standard error, ignores write errors on its standard
 * input (a write to a child that was just killed fails with EPIPE; its exit is
 * what counts), and marks it closed, waking its waiters, when it exits.
 */
export const watch = (child: Watched): void => {
  child.process.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    child.stderr += chunk
  })
  child.process.stdin!.on("error", () => {})
  child.process.on("close", () => {
    child.closed = true
    notify(child)
  })
}

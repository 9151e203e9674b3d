/**
 * Headless Chromium for the browser suite: Debian's `chromium` package at
 * /usr/bin/chromium, installed by scripts/install-chromium.sh when missing,
 * driven through playwright-core (which never downloads a browser of its
 * own), in a fresh user-data directory removed afterwards.
 */
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { type BrowserContext, chromium } from "playwright-core"

export const executablePath = "/usr/bin/chromium"

const installer = fileURLToPath(new URL("../../scripts/install-chromium.sh", import.meta.url))

const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]

/** Installs Chromium from Debian's packages when it is missing (needs root or sudo). */
export const ensureChromium = Effect.sync(() => {
  if (!Fs.existsSync(executablePath)) execFileSync(installer, { stdio: "inherit" })
})

/** A browser context of a fresh Chromium, closed (and its profile removed) with the scope. */
export const launch = Effect.acquireRelease(
  Effect.gen(function*() {
    yield* ensureChromium
    const profile = Fs.mkdtempSync(Path.join(Os.tmpdir(), "dstate-chromium-"))
    const context = yield* Effect.promise(() =>
      chromium.launchPersistentContext(profile, {
        executablePath,
        headless: true,
        args,
        viewport: { width: 1280, height: 900 }
      })
    )
    return { context, profile }
  }),
  ({ context, profile }) =>
    Effect.promise(() => context.close()).pipe(
      Effect.ensuring(Effect.sync(() => Fs.rmSync(profile, { recursive: true, force: true })))
    )
).pipe(Effect.map(({ context }): BrowserContext => context))

/**
 * Builds the dashboard's browser bundle: `src/web/dashboard/main.ts` and
 * what it imports (the `WebClient` of `dstate/web`, effect) into one ES
 * module, `dist/web/dashboard.js`, with esbuild. The platform is the
 * browser: a Node import anywhere in the client would fail the build.
 *
 * The bundle is rebuilt only when it is missing or older than a file under
 * `src/` or the lockfile; it is written to a temporary file and renamed, so
 * that builds started at once (test files in parallel, `npm start`) never
 * serve a half-written script.
 *
 * ```sh
 * node scripts/build-web.ts          # build when stale
 * node scripts/build-web.ts --force  # build anyway
 * ```
 */
import { build } from "esbuild"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
/** The bundle `WebReplicas` serves at `/dashboard.js` by default. */
export const bundlePath = Path.join(root, "dist", "web", "dashboard.js")
const entry = Path.join(root, "src", "web", "dashboard", "main.ts")

const newestInput = (): number => {
  let newest = Fs.statSync(Path.join(root, "package-lock.json")).mtimeMs
  const walk = (dir: string) => {
    for (const item of Fs.readdirSync(dir, { withFileTypes: true })) {
      const path = Path.join(dir, item.name)
      if (item.isDirectory()) walk(path)
      else newest = Math.max(newest, Fs.statSync(path).mtimeMs)
    }
  }
  walk(Path.join(root, "src"))
  return newest
}

/** Whether the bundle is missing or older than its inputs. */
export const stale = (): boolean => !Fs.existsSync(bundlePath) || Fs.statSync(bundlePath).mtimeMs < newestInput()

/** Builds the bundle when it is stale (or always, with `force`); returns whether it built. */
export const ensureBuilt = async (force = false): Promise<boolean> => {
  if (!force && !stale()) return false
  Fs.mkdirSync(Path.dirname(bundlePath), { recursive: true })
  const temporary = `${bundlePath}.${process.pid}.tmp`
  await build({
    entryPoints: [entry],
    outfile: temporary,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: false,
    legalComments: "none",
    logLevel: "warning"
  })
  Fs.renameSync(temporary, bundlePath)
  return true
}

if (process.argv[1] !== undefined && Path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = performance.now()
  const built = await ensureBuilt(process.argv.includes("--force"))
  const size = Fs.statSync(bundlePath).size
  console.log(
    built
      ? `built ${Path.relative(root, bundlePath)} (${Math.round(size / 1024)} KiB) in ${Math.round(performance.now() - started)} ms`
      : `${Path.relative(root, bundlePath)} is up to date`
  )
}

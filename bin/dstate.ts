/**
 * The `dstate` command: `npm run dstate -- secret [--hex]` prints a new
 * cluster secret, 32 bytes (256 bits) from the system's CSPRNG, as base64
 * (44 characters) or hex (64 characters). Pass the printed string as the
 * `secret` of `TcpRuntime.layer` (`Redacted.make(value)`), the same on every
 * node.
 */
import { randomBytes } from "node:crypto"
import process from "node:process"

const [command, ...flags] = process.argv.slice(2)
if (command === "secret") {
  const bytes = randomBytes(32)
  process.stdout.write(`${flags.includes("--hex") ? bytes.toString("hex") : bytes.toString("base64")}\n`)
} else {
  process.stderr.write("usage: npm run dstate -- secret [--hex]   prints a new 32-byte cluster secret\n")
  process.exitCode = command === undefined || command === "help" || command === "--help" ? 0 : 2
}

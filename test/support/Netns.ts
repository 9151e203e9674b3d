/**
 * Linux network namespaces for tests that partition real node processes: a
 * topology of `count` namespaces, each with one interface (`eth0`) on a
 * private /24, joined by veth pairs to one bridge that lives in a namespace
 * of its own (so the host's interfaces, routes and firewall are never
 * touched), and packet drops between them with `iptables` rules inside the
 * namespaces.
 *
 * A drop from A to B is one rule in B's namespace: `INPUT -s A -j DROP`.
 * Dropping on the receiving side is what a lossy network does: the sender's
 * packets leave and vanish, its TCP retransmits, and its `connect` waits for
 * the timeout (a rule on A's OUTPUT would instead fail A's own sends at once
 * with EPERM, a fault no network produces). ARP is not IP, so addresses stay
 * resolved and healing is immediate. A cut is a drop both ways; an
 * asymmetric drop is one way only. Rules live in a chain of their own
 * (`dstate`), and healing flushes it.
 *
 * Names carry this process's id (`dstp<pid>n<i>`, `dstp<pid>br`): namespaces
 * left by a test process that no longer runs are removed before a new
 * topology is made, the topology is removed when its scope closes, and also
 * when this process exits without closing it.
 */
import { Effect, Scope } from "effect"
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"

const prefix = "dstp"
const installScript = fileURLToPath(new URL("../../scripts/install-netns-tools.sh", import.meta.url))
const sbin = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
const env = { ...process.env, PATH: [process.env.PATH ?? "", ...sbin].join(":") }

const run = (command: string, args: ReadonlyArray<string>): string =>
  execFileSync(command, args, { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

const has = (tool: string): boolean => {
  try {
    run("sh", ["-c", `command -v ${tool}`])
    return true
  } catch {
    return false
  }
}

const tools = ["ip", "tc", "iptables"] as const

/**
 * Why namespaces cannot be used here, or `undefined` when they can. Missing
 * tools are installed first (scripts/install-netns-tools.sh, as root); then a
 * probe namespace is made and removed. Found out on the first call.
 */
export const unavailable = (): string | undefined => {
  if (checked === undefined) checked = { reason: check() }
  return checked.reason
}

let checked: { readonly reason: string | undefined } | undefined

const check = (): string | undefined => {
  if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return "network namespaces need root"
  if (!tools.every(has)) {
    try {
      execFileSync("bash", [installScript], { env, stdio: "ignore", timeout: 300_000 })
    } catch (error) {
      return `installing ${tools.filter((t) => !has(t)).join(", ")} failed: ${String(error)}`
    }
    const missing = tools.filter((t) => !has(t))
    if (missing.length > 0) return `missing ${missing.join(", ")} (scripts/install-netns-tools.sh did not install them)`
  }
  const probe = `${prefix}${process.pid}probe`
  try {
    run("ip", ["netns", "add", probe])
    run("ip", ["netns", "exec", probe, "iptables", "-L", "INPUT", "-n"])
  } catch (error) {
    return `cannot make a network namespace with iptables in it: ${String(error)}`
  } finally {
    try {
      run("ip", ["netns", "del", probe])
    } catch {
      // It was never made.
    }
  }
  return undefined
}

/** A namespace's name and its address (on `eth0`). */
export interface Host {
  readonly namespace: string
  readonly address: string
}

/** Namespaces joined by a bridge. */
export interface Topology {
  readonly hosts: ReadonlyArray<Host>
  /** The namespace holding the bridge. */
  readonly bridge: string
}

/** One direction of traffic to drop: packets from `from` do not reach `to` (indexes into `hosts`). */
export interface Drop {
  readonly from: number
  readonly to: number
}

const namespaces = (): Array<string> =>
  run("ip", ["netns", "list"]).split("\n").map((line) => line.split(" ")[0]!).filter((name) => name.length > 0)

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Kills what still runs in a namespace, then removes it (its veth ends and bridge go with it). */
const remove = (namespace: string): void => {
  try {
    for (const pid of run("ip", ["netns", "pids", namespace]).split("\n")) {
      if (pid.trim().length > 0) {
        try {
          process.kill(Number(pid), "SIGKILL")
        } catch {
          // Gone meanwhile.
        }
      }
    }
  } catch {
    // No such namespace any more.
  }
  try {
    run("ip", ["netns", "del", namespace])
  } catch {
    // No such namespace any more.
  }
}

/** Removes the namespaces of test processes of this module that no longer run. */
export const removeLeftovers = (): ReadonlyArray<string> => {
  const removed: Array<string> = []
  for (const name of namespaces()) {
    const match = /^dstp(\d+)(n\d+|br|probe)$/.exec(name)
    if (match === null || Number(match[1]) === process.pid || alive(Number(match[1]))) continue
    remove(name)
    removed.push(name)
  }
  return removed
}

/**
 * The topology's /24. Its addresses exist only inside its namespaces, so they cannot clash with the host's
 * or another topology's; the third byte comes from the pid all the same, so that captures tell runs apart.
 */
const subnet = (): string => `10.213.${process.pid % 251}`

const destroy = (topology: Topology): void => {
  for (const host of topology.hosts) remove(host.namespace)
  remove(topology.bridge)
}

/**
 * Makes `count` namespaces with `lo` up and `eth0` on `10.213.x.(i+1)/24`,
 * each bridged to the others, with an empty `dstate` chain jumped to from
 * INPUT. Removed when the scope closes, or when the process exits first.
 */
export const make = (count: number): Effect.Effect<Topology, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      removeLeftovers()
      const base = `${prefix}${process.pid}`
      const net = subnet()
      const topology: Topology = {
        bridge: `${base}br`,
        hosts: Array.from({ length: count }, (_, i) => ({ namespace: `${base}n${i}`, address: `${net}.${i + 1}` }))
      }
      const onExit = () => destroy(topology)
      process.once("exit", onExit)
      try {
        run("ip", ["netns", "add", topology.bridge])
        run("ip", ["-n", topology.bridge, "link", "set", "lo", "up"])
        run("ip", ["-n", topology.bridge, "link", "add", "br0", "type", "bridge"])
        run("ip", ["-n", topology.bridge, "link", "set", "br0", "up"])
        topology.hosts.forEach((host, i) => {
          run("ip", ["netns", "add", host.namespace])
          run("ip", ["-n", topology.bridge, "link", "add", `v${i}`, "type", "veth", "peer", "name", "eth0", "netns", host.namespace])
          run("ip", ["-n", topology.bridge, "link", "set", `v${i}`, "master", "br0", "up"])
          run("ip", ["-n", host.namespace, "link", "set", "lo", "up"])
          run("ip", ["-n", host.namespace, "addr", "add", `${host.address}/24`, "dev", "eth0"])
          run("ip", ["-n", host.namespace, "link", "set", "eth0", "up"])
          iptables(host, "-N", "dstate")
          iptables(host, "-I", "INPUT", "-j", "dstate")
        })
      } catch (error) {
        destroy(topology)
        process.removeListener("exit", onExit)
        throw error
      }
      return { topology, onExit }
    }),
    ({ onExit, topology }) =>
      Effect.sync(() => {
        destroy(topology)
        process.removeListener("exit", onExit)
      })
  ).pipe(Effect.map(({ topology }) => topology))

const iptables = (host: Host, ...args: ReadonlyArray<string>): string =>
  run("ip", ["netns", "exec", host.namespace, "iptables", "-w", ...args])

/**
 * Drops the given directions of traffic (added to any drops in place): one
 * rule per receiving namespace, listing every source it must not hear.
 */
export const drop = (topology: Topology, drops: ReadonlyArray<Drop>) =>
  Effect.sync(() => {
    const sources = new Map<number, Set<number>>()
    for (const { from, to } of drops) sources.set(to, (sources.get(to) ?? new Set()).add(from))
    for (const [to, from] of sources) {
      const list = [...from].map((i) => topology.hosts[i]!.address).join(",")
      iptables(topology.hosts[to]!, "-A", "dstate", "-s", list, "-j", "DROP")
    }
  })

/** Removes every drop. */
export const heal = (topology: Topology) =>
  Effect.sync(() => {
    for (const host of topology.hosts) iptables(host, "-F", "dstate")
  })

/** The drop rules in place, per namespace (`iptables -S dstate`), for a failure message. */
export const rules = (topology: Topology): Record<string, ReadonlyArray<string>> =>
  Object.fromEntries(topology.hosts.map((host) => [
    host.namespace,
    iptables(host, "-S", "dstate").split("\n").filter((line) => line.startsWith("-A"))
  ]))

/** The command line that runs `command` inside a namespace (`ip` by its full path). */
export const exec = (namespace: string, command: string, args: ReadonlyArray<string>): readonly [string, ReadonlyArray<string>] =>
  [run("sh", ["-c", "command -v ip"]).trim(), ["netns", "exec", namespace, command, ...args]]

/** Whether every namespace of the topology is gone (after its scope closed). */
export const removed = (topology: Topology): boolean => {
  const left = new Set(namespaces())
  return topology.hosts.every((host) => !left.has(host.namespace)) && !left.has(topology.bridge)
}

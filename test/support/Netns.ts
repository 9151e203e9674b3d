/**
 * Linux network namespaces for tests that partition real node processes: a
 * topology of `count` namespaces, each with one interface (`eth0`) on a
 * private /24, joined by veth pairs to one bridge that lives in a namespace
 * of its own (so the host's interfaces, routes and firewall are never
 * touched), and packet drops between them with `iptables` in the bridge's
 * namespace.
 *
 * A drop from A to B is one rule on the bridge: `FORWARD -s A -d B -j DROP`
 * (bridged IPv4 passes iptables there: `bridge-nf-call-iptables`, on by
 * default in a new namespace). The packets leave A and vanish on the way, as
 * in a lossy network: A's TCP retransmits and its `connect` waits for its
 * timeout. A cut is a drop both ways; an asymmetric drop one way only. ARP
 * is not IP, so addresses stay resolved and healing is immediate. Every rule
 * of a partition is installed by one `iptables-restore` (one transaction, so
 * all directions go down at the same instant), and healing is one flush.
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

const tools = ["ip", "iptables", "iptables-restore"] as const

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
    run("ip", ["netns", "exec", probe, "iptables", "-w", "-L", "FORWARD", "-n"])
    if (!bridgeFilters(probe)) {
      return "bridged traffic does not pass iptables in a new namespace (br_netfilter is not loaded)"
    }
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

/**
 * Whether bridged IPv4 in `namespace` passes its iptables: the sysctl of
 * br_netfilter (loaded first if it is a module), set to 1 there when it is 0
 * (it is per namespace).
 */
const bridgeFilters = (namespace: string): boolean => {
  const file = "/proc/sys/net/bridge/bridge-nf-call-iptables"
  const inside = (script: string) => run("ip", ["netns", "exec", namespace, "sh", "-c", script]).trim()
  const read = () => inside(`cat ${file} 2>/dev/null || true`)
  if (read() === "") {
    try {
      run("modprobe", ["br_netfilter"])
    } catch {
      return false
    }
  }
  if (read() === "0") inside(`echo 1 > ${file}`)
  return read() === "1"
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

/** The names of every network namespace of the machine (`ip netns list`). */
export const namespaces = (): Array<string> =>
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
 * each attached to one bridge in a namespace of its own, whose iptables sees
 * the bridged traffic. Removed when the scope closes, or when the process
 * exits first.
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
        if (!bridgeFilters(topology.bridge)) throw new Error(`bridged traffic in ${topology.bridge} does not pass iptables`)
        topology.hosts.forEach((host, i) => {
          run("ip", ["netns", "add", host.namespace])
          run("ip", ["-n", topology.bridge, "link", "add", `v${i}`, "type", "veth", "peer", "name", "eth0", "netns", host.namespace])
          run("ip", ["-n", topology.bridge, "link", "set", `v${i}`, "master", "br0", "up"])
          run("ip", ["-n", host.namespace, "link", "set", "lo", "up"])
          run("ip", ["-n", host.namespace, "addr", "add", `${host.address}/24`, "dev", "eth0"])
          run("ip", ["-n", host.namespace, "link", "set", "eth0", "up"])
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

const iptables = (topology: Topology, ...args: ReadonlyArray<string>): string =>
  run("ip", ["netns", "exec", topology.bridge, "iptables", "-w", ...args])

/**
 * Drops the given directions of traffic (added to any drops in place), all
 * in one transaction.
 */
export const drop = (topology: Topology, drops: ReadonlyArray<Drop>) =>
  Effect.sync(() => {
    const address = (i: number) => topology.hosts[i]!.address
    const rules = drops.map(({ from, to }) => `-A FORWARD -s ${address(from)}/32 -d ${address(to)}/32 -j DROP`)
    execFileSync("ip", ["netns", "exec", topology.bridge, "iptables-restore", "-w", "--noflush"], {
      env,
      input: ["*filter", ...rules, "COMMIT", ""].join("\n"),
      stdio: ["pipe", "ignore", "pipe"]
    })
  })

/** Removes every drop. */
export const heal = (topology: Topology) => Effect.sync(() => void iptables(topology, "-F", "FORWARD"))

/** The drop rules in place (`iptables -S FORWARD` on the bridge), for a failure message. */
export const rules = (topology: Topology): ReadonlyArray<string> =>
  iptables(topology, "-S", "FORWARD").split("\n").filter((line) => line.startsWith("-A"))

/** The command line that runs `command` inside a namespace (`ip` by its full path). */
export const exec = (namespace: string, command: string, args: ReadonlyArray<string>): readonly [string, ReadonlyArray<string>] =>
  [run("sh", ["-c", "command -v ip"]).trim(), ["netns", "exec", namespace, command, ...args]]

/** Whether every namespace of the topology is gone (after its scope closed). */
export const removed = (topology: Topology): boolean => {
  const left = new Set(namespaces())
  return topology.hosts.every((host) => !left.has(host.namespace)) && !left.has(topology.bridge)
}

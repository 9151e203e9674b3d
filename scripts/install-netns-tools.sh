#!/usr/bin/env bash
# Installs what the network-partition tests (test/NetworkPartitions.test.ts)
# need and this machine lacks, from Debian's packages: `ip` and `tc`
# (iproute2) and `iptables` (iptables). Nothing is installed when every tool
# is there. Needs root (or sudo); the suite runs it itself when a tool is
# missing, and .ci/run before the tests.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for tool in ip tc iptables iptables-restore; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "netns tools: ip, tc and iptables are installed"
  exit 0
fi

echo "netns tools: installing iproute2 and iptables (missing: ${missing[*]})"
as_root apt-get update
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 iptables

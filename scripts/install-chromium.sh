#!/usr/bin/env bash
# Installs Debian's chromium package when /usr/bin/chromium is missing: the
# browser tests drive it through playwright-core, which never downloads a
# browser of its own. Needs root (or sudo). Several callers may run this at
# once (parallel test files, CI): a lock makes the later ones wait for the
# first and then find the browser installed.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
exec 9>/tmp/dstate-install-chromium.lock
flock 9
if [ -x /usr/bin/chromium ]; then exit 0; fi
as_root apt-get update
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core
test -x /usr/bin/chromium

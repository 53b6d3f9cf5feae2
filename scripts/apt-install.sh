#!/usr/bin/env bash
# Install the named Debian/Ubuntu packages that are missing (apt-get update first), as root or through
# sudo, whichever this machine has. Nothing to do when all are installed; a warning, not a failure,
# where there is no apt-get (install them yourself).
set -euo pipefail

missing=()
for pkg in "$@"; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-install: no apt-get on this machine; install these yourself: ${missing[*]}" >&2
  exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "apt-install: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=(sudo)
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null

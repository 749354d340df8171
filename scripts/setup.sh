#!/usr/bin/env bash
# Installs everything LightCap needs on a fresh Debian 12 machine (idempotent, quiet when done).
#   scripts/setup.sh            system libraries only (enough to build and caption)
#   scripts/setup.sh --python   also the Python virtual environment in .venv (tests, training)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(pkg-config libdnnl-dev libturbojpeg0-dev libspng-dev libwebp-dev libdeflate-dev default-jre-headless)
# Only with --python (tests, training): the objects data set's sources (docs/OBJECTS.md), headless
# Chromium for the service page's test, wrk for the service's load test (docs/SERVER.md).
[ "${1:-}" = "--python" ] && APT_PACKAGES+=(fonts-noto-color-emoji unicode-data plasma-workspace-wallpapers
  lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 chromium chromium-driver wrk)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Java is only needed by pycocoevalcap (tests); a machine that has java already skips the package.
if command -v java >/dev/null 2>&1; then
  kept=()
  for p in ${missing[@]+"${missing[@]}"}; do [ "$p" = default-jre-headless ] || kept+=("$p"); done
  missing=(${kept[@]+"${kept[@]}"})
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--python" ]; then
  stamp=.venv/.requirements-stamp
  if [ ! -f "$stamp" ] || ! cmp -s python/requirements.txt "$stamp"; then
    echo "setup: creating the Python environment in .venv" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -r python/requirements.txt
    # Peer libraries for parity tests only, without their dependencies (see python/tests/conftest.py).
    .venv/bin/pip install -q --no-deps -r python/requirements-peers-nodeps.txt
    cp python/requirements.txt "$stamp"
  fi
fi

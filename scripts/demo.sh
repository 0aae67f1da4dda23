#!/usr/bin/env bash
# Stockade demo on a fresh Debian 12 machine (as root): installs what it needs, builds the
# shim and the demo, starts a private containerd, runs the same pod under runc and under
# Stockade, prints what each container got side by side, and removes everything again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run as root (it starts containerd and creates containers)" >&2
  exit 1
fi

./scripts/install-deps.sh demo

cargo=${CARGO:-cargo}
echo "==> building containerd-shim-stockade-v1 and stockade-demo" >&2
"$cargo" build -q -p containerd-shim-stockade-v1
exec "$cargo" run -q -p stockade-integration --bin stockade-demo

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

# containerd, runc, busybox (the image), CNI plugins (pod network), iproute2 (teardown),
# protobuf-compiler (the CRI client's code is generated at build time).
packages=(containerd runc busybox-static umoci containernetworking-plugins iproute2 protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo=${CARGO:-cargo}
echo "==> building containerd-shim-stockade-v1 and stockade-demo" >&2
"$cargo" build -q -p containerd-shim-stockade-v1
exec "$cargo" run -q -p stockade-integration --bin stockade-demo

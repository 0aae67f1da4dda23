#!/usr/bin/env bash
# Installs the Debian packages Stockade's tests and demo use, if they are missing.
set -euo pipefail
packages=(containerd runc umoci busybox-static containernetworking-plugins protobuf-compiler gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

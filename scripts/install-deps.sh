#!/usr/bin/env bash
# Installs the Debian packages Stockade's tests and demo use, and cargo-fuzz, if missing.
set -euo pipefail
# g++: libFuzzer, which `make fuzz` links, is C++. libelf-dev, zlib1g-dev, make: libbpf,
# built from source for the cgroup v2 device rules (eBPF). e2fsprogs: the cgroup v2 VM
# suite's ext4 image.
packages=(containerd runc umoci busybox-static containernetworking-plugins protobuf-compiler gcc g++ libc6-dev libelf-dev zlib1g-dev make pkg-config e2fsprogs)
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
# cargo-fuzz for `make fuzz` (compiled from crates.io: a few minutes, once).
CARGO_FUZZ_VERSION=0.13.2
if command -v cargo >/dev/null 2>&1 && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

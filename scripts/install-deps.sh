#!/usr/bin/env bash
# Installs what a make target needs, if missing: `install-deps.sh PURPOSE...`.
#
#   build  compiling the workspace: a C toolchain (Rust's linker; the bench's and the escape
#          probes' static C helpers), protoc (the CRI client's code is generated), and make,
#          pkg-config, libelf and zlib headers (libbpf, built from source for libcgroups'
#          cgroup v2 device rules in eBPF)
#   demo   build + what `make demo` runs: containerd, runc, busybox (the test image), the
#          CNI plugins (pod network) and iproute2 (its teardown)
#   test   demo + what the tests call besides: promtool and prometheus (the metrics and
#          alert-rule checks, the Prometheus round trip), file (checks the probe is static),
#          systemd (systemd-analyze verifies the exporter's unit), e2fsprogs (the cgroup v2 VM
#          suite puts the guest's /tmp on an ext4 image), kmod (the VM kit runs depmod on the
#          guest kernel it unpacks), jq (scripts/test-bins.sh reads cargo's JSON for the
#          test executables)
#   lint   rustfmt and clippy
#   fuzz   build + g++ (libFuzzer is C++) and cargo-fuzz
#
# Debian's prometheus package starts a prometheus service on :9090; the tests run their
# own instance on a port of their own and leave that one alone.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 build|demo|test|lint|fuzz..." >&2
  exit 2
fi

build=(gcc libc6-dev protobuf-compiler make pkg-config libelf-dev zlib1g-dev)
demo=("${build[@]}" containerd runc busybox-static containernetworking-plugins iproute2)
test=("${demo[@]}" prometheus file systemd e2fsprogs kmod jq)
fuzz=("${build[@]}" g++)

packages=()
cargo_fuzz=no
rust_components=no
for purpose in "$@"; do
  case $purpose in
    build) packages+=("${build[@]}") ;;
    demo) packages+=("${demo[@]}") ;;
    test) packages+=("${test[@]}") ;;
    lint) rust_components=yes ;;
    fuzz) packages+=("${fuzz[@]}"); cargo_fuzz=yes ;;
    *) echo "$0: unknown purpose \`$purpose\` (build, demo, test, lint, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in $(printf '%s\n' "${packages[@]}" | sort -u); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "$0: missing Debian packages ${missing[*]}: run as root, or apt-get install them" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: prometheus would bring node-exporter and its collectors along.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $rust_components = yes ]; then
  for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
      echo "installing: rust component $c"
      rustup component add "$c"
    fi
  done
fi

# cargo-fuzz (compiled from crates.io: a few minutes, once).
CARGO_FUZZ_VERSION=0.13.2
if [ $cargo_fuzz = yes ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

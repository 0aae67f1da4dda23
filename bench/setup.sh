#!/usr/bin/env bash
# What `make bench` needs beyond scripts/install-deps.sh: linux-perf, for the flame
# graphs of a Create (the bench records the shims with `perf record`).
set -euo pipefail
if ! dpkg-query -W -f='${Status}' linux-perf 2>/dev/null | grep -q "install ok installed"; then
  echo "installing: linux-perf"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq linux-perf >/dev/null
fi

#!/usr/bin/env bash
# The integration suite (the test targets of stockade-integration) against each
# containerd of the test matrix, one after the other: Debian's containerd 1.6 (from PATH),
# then the shared containerd 2.x build ($STOCKADE_SHARED/containerd-2/bin, default
# ../shared) at its CRI defaults. Where the shared build is absent, that run is skipped,
# loudly. The test executables are the ones `make build` built (scripts/test-bins.sh), run
# from the package's directory as `cargo test` would, one test at a time. Prints each
# run's duration and failed targets; fails if any run failed.
#
# Environment: CARGO (cargo), STOCKADE_SHARED, STOCKADE_CONTAINERD2 (the 2.x bin dir),
# INTEGRATION_TESTS (the targets to run, e.g. "deploy races"; default all).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
SHARED=${STOCKADE_SHARED:-$PWD/../shared}
C2=${STOCKADE_CONTAINERD2:-$SHARED/containerd-2/bin}
read -ra targets <<<"${INTEGRATION_TESTS:-}"
listing=$(scripts/test-bins.sh stockade-integration "${targets[@]}") || exit 2
mapfile -t bins <<<"$listing"
summary=()
failed=0

run() { # LABEL ENV...
  local label=$1 start line name bin broken=()
  shift
  echo "==== integration suite: $label" >&2
  start=$(date +%s)
  for line in "${bins[@]}"; do
    name=${line%% *} bin=${line#* }
    echo "     Running $name ($bin)"
    (cd integration && env "$@" "$bin" --test-threads=1) || broken+=("$name")
  done
  if [ ${#broken[@]} = 0 ]; then
    summary+=("$label: passed in $(( $(date +%s) - start ))s")
  else
    summary+=("$label: FAILED in $(( $(date +%s) - start ))s (${broken[*]})")
    failed=1
  fi
}

run "containerd 1.6 (Debian)" -u STOCKADE_CONTAINERD
if [ -x "$C2/containerd" ]; then
  run "containerd $("$C2/containerd" --version | awk '{print $3}') ($C2)" STOCKADE_CONTAINERD="$C2"
else
  summary+=("containerd 2.x: SKIPPED (no $C2/containerd; set STOCKADE_SHARED)")
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! containerd 2.x integration suite SKIPPED: no %s/containerd\n!!! (the shared tools are looked up in STOCKADE_SHARED, default ../shared)\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' "$C2" >&2
fi
printf '%s\n' "==== integration suites:" "${summary[@]}" >&2
exit $failed

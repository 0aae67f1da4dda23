#!/usr/bin/env bash
# The integration suite (cargo test -p stockade-integration) against each containerd of
# the test matrix, one after the other: Debian's containerd 1.6 (from PATH), then the
# shared containerd 2.x build ($STOCKADE_SHARED/containerd-2/bin, default ../shared) at
# its CRI defaults. Where the shared build is absent, that run is skipped, loudly.
# Prints each run's duration; fails if any run failed.
#
# Environment: CARGO (cargo), STOCKADE_SHARED, STOCKADE_CONTAINERD2 (the 2.x bin dir),
# INTEGRATION_ARGS (extra `cargo test` arguments, e.g. `--test deploy`).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
CARGO=${CARGO:-cargo}
SHARED=${STOCKADE_SHARED:-$PWD/../shared}
C2=${STOCKADE_CONTAINERD2:-$SHARED/containerd-2/bin}
read -ra extra <<<"${INTEGRATION_ARGS:-}"
summary=()
failed=0

run() { # LABEL ENV...
  local label=$1 start rc
  shift
  echo "==== integration suite: $label" >&2
  start=$(date +%s)
  env "$@" "$CARGO" test -p stockade-integration --no-fail-fast "${extra[@]}" -- --test-threads=1
  rc=$?
  summary+=("$label: $([ $rc = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start ))s")
  [ $rc = 0 ] || failed=1
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

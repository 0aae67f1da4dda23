#!/usr/bin/env bash
# The cgroup v2 suite: builds the test binaries here, then runs them inside the shared pure
# cgroup v2 VM ($STOCKADE_SHARED/cgroup2-vm, default ../shared: Debian's kernel 6.1,
# cgroup_no_v1=all), once with a plain init (cgroupfs driver) and once with systemd as
# PID 1 (systemd driver); the cgroup2 tests also against the shared containerd 2.x where it
# is there. Each VM run holds a machine-wide lock (HEAVY_LOCK: it takes both cores) and prints its wall time.
#
#   scripts/cgroup2-vm.sh              both inits
#   C2VM_INITS=systemd scripts/cgroup2-vm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
SHARED=${STOCKADE_SHARED:-$ROOT/../shared}
VM=$SHARED/cgroup2-vm/run.sh
C2=${STOCKADE_CONTAINERD2:-$SHARED/containerd-2/bin}
if [ ! -x "$VM" ]; then
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! cgroup v2 VM suite SKIPPED: no %s\n!!! (the shared tools are looked up in STOCKADE_SHARED, default ../shared)\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' "$VM" >&2
  exit 0
fi
[ -x "$C2/containerd" ] || C2=""
# One VM at a time per machine (each takes both cores); /work/heavy.lock where engineers share one.
if [ -z "${HEAVY_LOCK:-}" ]; then
  if [ -d /work ] && [ -w /work ]; then HEAVY_LOCK=/work/heavy.lock; else HEAVY_LOCK=${TMPDIR:-/tmp}/stockade-heavy.lock; fi
fi
LOCK=$HEAVY_LOCK
# The guest keeps its /tmp, a 3 GiB ext4 image, in memory (/run).
export C2VM_MEM=${C2VM_MEM:-6G}
CARGO=${CARGO:-cargo}

# Test binaries, built on the host (the guest must not compile: TCG is 10-20x slower),
# with the workspace selection `make build` uses, so nothing is rebuilt.
"$CARGO" build --workspace --all-targets
bins() { scripts/test-bins.sh "$@" | cut -d' ' -f2-; }
cgroups_bins=$(bins stockade-cgroups | tr '\n' ' ')
rootfs_bin=$(bins stockade-runtime userns_rootfs)
bin_of() { bins stockade-integration "$1"; }
cgroup2_bin=$(bin_of cgroup2)
ctr_bin=$(bin_of stockade_ctr)
cri_bin=$(bin_of stockade_cri)
storage_bin=$(bin_of ephemeral_storage)

rc=0
for init in ${C2VM_INITS:-simple systemd}; do
  echo "== cgroup v2 suite, init=$init (waiting for $LOCK)" >&2
  exec 9>"$LOCK"
  flock 9
  start=$(date +%s)
  if ! env C2VM_INIT="$init" C2VM_PASS_ENV="STOCKADE_C2_INIT STOCKADE_C2_CONTAINERD2" \
      STOCKADE_C2_INIT="$init" STOCKADE_C2_CONTAINERD2="$C2" \
      "$VM" bash scripts/cgroup2-vm-guest.sh \
      "$cgroups_bins" "$cgroup2_bin" "$ctr_bin" "$cri_bin" "$rootfs_bin" "$storage_bin"; then
    echo "== cgroup v2 suite, init=$init: FAILED" >&2
    rc=1
  fi
  echo "== cgroup v2 suite, init=$init: wall time $(( $(date +%s) - start )) s (boot to poweroff)" >&2
  flock -u 9
  exec 9>&-
done
exit $rc

#!/usr/bin/env bash
# Inside the cgroup v2 VM (see scripts/cgroup2-vm.sh): puts /tmp (the harness's containerd
# roots, temp dirs) on an ext4 loop image, since the guest's tmpfs has no idmapped mounts
# on 6.1, then runs the given test binaries.
#   $1: stockade-cgroups test binaries (space-separated)  $2: cgroup2  $3: stockade_ctr
#   $4: stockade_cri  $5: stockade-runtime's userns_rootfs (idmapped layers on 6.1)
#   $6: ephemeral_storage (project quotas: this kernel has them, the host's may not)
set -euo pipefail
cgroups_bins=$1 cgroup2=$2 ctr=$3 cri=$4 rootfs=$5 storage=${6:-}
[ -f /sys/fs/cgroup/cgroup.controllers ] || { echo "not pure cgroup v2" >&2; exit 1; }
echo "guest: kernel $(uname -r), PID 1 $(cat /proc/1/comm), init=${STOCKADE_C2_INIT:-?}"

modprobe loop 2>/dev/null || true
modprobe quota_v2 2>/dev/null || true
img=/run/stockade-c2-tmp.ext4
truncate -s 3G "$img"
mkfs.ext4 -q -F "$img"
mount -o loop "$img" /tmp
chmod 1777 /tmp

failed=()
run() { # name binary args... (the caller's environment passes on)
  local name=$1 bin=$2; shift 2
  local t0; t0=$(date +%s)
  echo "== $name"
  if "$bin" --test-threads=1 "$@"; then
    echo "== $name: ok in $(( $(date +%s) - t0 )) s"
  else
    echo "== $name: FAILED in $(( $(date +%s) - t0 )) s"
    failed+=("$name")
  fi
}

run "rootfs on ext4 (userns_rootfs)" "$rootfs"
for b in $cgroups_bins; do run "stockade-cgroups $(basename "$b")" "$b"; done
if [ "$(cat /proc/1/comm)" = systemd ]; then
  # The device test goes through the cgroupfs driver: it runs under the plain init.
  cgroup2_tests=(a_systemd_path_lands_in_its_scope_with_the_limits
    a_kubelet_style_pod_lands_in_its_slice_with_the_limits)
  driver=systemd
else
  cgroup2_tests=(devices_outside_the_rules_cannot_be_opened
    a_systemd_path_without_systemd_goes_under_the_profile_parent)
  driver=cgroupfs
fi
run "cgroup2 ($driver, containerd 1.6)" "$cgroup2" --ignored --exact "${cgroup2_tests[@]}"
c2=${STOCKADE_C2_CONTAINERD2:-}
if [ -n "$c2" ] && [ -x "$c2/containerd" ]; then
  STOCKADE_CONTAINERD=$c2 run "cgroup2 ($driver, containerd $("$c2/containerd" --version | awk '{print $3}'))" \
    "$cgroup2" --ignored --exact "${cgroup2_tests[@]}"
else
  echo "!!! cgroup2 tests against containerd 2.x SKIPPED: no shared containerd 2.x"
fi
# What reads or writes cgroups: task metrics, pause/resume (freezer), OOM events, CRI
# limits and updates. These go through the cgroupfs driver under either init, so they run
# once, under systemd as PID 1 (the production setup): every emulated minute counts (TCG).
if [ "$driver" = systemd ]; then
  run "stockade_ctr (metrics, pause, OOM)" "$ctr" --exact \
    stockade_ctr_metrics stockade_ctr_pause_resume stockade_ctr_oom_event
  run "stockade_cri (limits, update, refusal)" "$cri" --exact \
    stockade_cri_pod_lifecycle stockade_cri_update_resources \
    stockade_cri_memory_above_ceiling_is_clamped stockade_cri_refuses_privileged
fi

# With the plain init and containerd 1.6 only (on the host, whose kernel lacks quota
# support, the suite checks both containerds without quotas).
if [ -n "$storage" ] && [ "$driver" = cgroupfs ]; then
  STOCKADE_REQUIRE_PRJQUOTA=1 run "ephemeral storage (project quotas, containerd 1.6)" "$storage" \
    --exact ephemeral_storage_is_bounded_by_a_project_quota
fi
umount /tmp 2>/dev/null || umount -l /tmp
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all cgroup v2 tests passed"

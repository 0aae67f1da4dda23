#!/bin/bash
# Checks that a stockade-bench results directory holds a complete report: results.json
# with every section, report.md with the goals table and runc figures, and the SVGs it
# links. Used by `make bench-quick` (CI). A Stockade failure is allowed (the report says
# "stockade: failed: ..."); a missing report, section or runc figure is not.
set -euo pipefail
dir=${1:?usage: check-report.sh RESULTS_DIR}
fail() { echo "check-report: $*" >&2; exit 1; }

[ -s "$dir/report.md" ] || fail "$dir/report.md missing or empty"
[ -s "$dir/results.json" ] || fail "$dir/results.json missing or empty"
grep -q '^## Goals' "$dir/report.md" || fail "report.md has no goals table"
for id in lifecycle_serial shim_phases lifecycle_parallel ctr_run flame scale memory idrange workload rootfs_library rootfs_cri seccomp record; do
    grep -q "\"id\": \"$id\"" "$dir/results.json" || fail "results.json has no section $id"
done
if grep -q '"skipped": "' "$dir/results.json"; then
    grep '"skipped": "' "$dir/results.json" >&2
    fail "a section was skipped"
fi
grep -q '| start_total (ms) | runc |' "$dir/report.md" || fail "no runc lifecycle samples in report.md"
grep -q '### Own share (minus the floor)' "$dir/report.md" || fail "no own-share table (the floor did not run?)"
grep -q '^## Closing note' "$dir/report.md" || fail "report.md has no closing note"
grep -q "runc, growth of each call's p50" "$dir/report.md" || fail "the scale section has no per-call growth note"
# Every figure the report links exists and is an SVG.
for svg in $(grep -o '([a-z_]*\.svg)' "$dir/report.md" | tr -d '()' | sort -u); do
    head -c 300 "$dir/$svg" | grep -q '<svg' || fail "$svg linked but missing or not SVG"
done
if grep -q 'stockade: failed' "$dir/report.md"; then
    echo "check-report: report complete (note: Stockade failed; see report.md)"
else
    echo "check-report: report complete: $dir/report.md"
fi

#!/usr/bin/env bash
# Bounded fuzzing of the pure decision parts (fuzz/): profile parsing, the seccomp compiler
# and the hardener, each for SECONDS_PER_TARGET (default 60), one after the other.
# Prints one line per target (executions, crash or not); exits non-zero on any crash and
# names the reproducer. Everything it writes is under target/: the build (target/fuzz),
# the corpora (target/fuzz-corpus/<target>, seeded from the repository and kept between
# runs), crash inputs (target/fuzz-artifacts/<target>) and libFuzzer's logs (target/fuzz-logs).
# `fuzz.sh build` only builds (CI builds beside the tests and fuzzes after them).
# FUZZ_BUILD=dev builds without optimisation (a short smoke run, e.g. CI's, spends its time
# compiling; a long run wants the default, release).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ $seconds =~ ^([1-9][0-9]*|build)$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET|build]  (build: only build the targets)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed: cargo install cargo-fuzz --locked (or make deps)" >&2
  exit 1
fi

targets=(profile_parse seccomp_compile harden)
build_dir=target/fuzz
corpus_root=target/fuzz-corpus
artifact_root=target/fuzz-artifacts
log_root=target/fuzz-logs

# cargo-fuzz needs nightly's -Z flags (sanitizers, coverage instrumentation);
# RUSTC_BOOTSTRAP lets the stable toolchain take them. Address sanitizer is the default.
echo "fuzz: building ${targets[*]}"
build_started=$(date +%s)
profile=${FUZZ_BUILD:-release}
case $profile in
  release) build_flags=() ;;
  dev) build_flags=(--dev) ;;
  *) echo "fuzz: FUZZ_BUILD must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
RUSTC_BOOTSTRAP=1 cargo fuzz build "${build_flags[@]}" --target-dir "$build_dir"
echo "fuzz: built in $(($(date +%s) - build_started))s"
[ "$seconds" != build ] || exit 0
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$build_dir/$host/$([ "$profile" = dev ] && echo debug || echo release)

# Seeds: real inputs from the repository, rewritten on every run (the corpora also keep
# what earlier runs found).
seed() { # target name < content
  mkdir -p "$corpus_root/$1"
  cat >"$corpus_root/$1/seed-$2"
}
for f in profiles/*.toml; do
  seed profile_parse "$(basename "$f")" <"$f"
done
seed seccomp_compile default.json <profiles/seccomp/default.json
seed seccomp_compile allow.json <<<'{"defaultAction":"SCMP_ACT_ALLOW"}'
seed seccomp_compile rules.json <<'EOF'
{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_AARCH64"],
 "flags":["SECCOMP_FILTER_FLAG_LOG"],
 "syscalls":[{"names":["read","write","_llseek"],"action":"SCMP_ACT_ALLOW"},
  {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
  {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
  {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
  {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"},{"names":["kexec_load"],"action":"SCMP_ACT_TRAP"},
  {"names":["getppid"],"action":"SCMP_ACT_LOG"}]}
EOF
# The hardener's input: one byte choosing sandbox/app, default/strict, shipped/permissive
# policy and whether the network namespace path is the host's (fuzz/fuzz_targets/harden.rs),
# then the spec. Every case for each fixture the hardener's tests use, and a minimal spec.
minimal='{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{}}'
for case in $(seq 0 15); do
  byte=$(printf '\\x%02x' "$case")
  for f in runtime/tests/fixtures/*.json; do
    { printf %b "$byte"; cat "$f"; } | seed harden "$case-$(basename "$f")"
  done
  { printf %b "$byte"; printf '%s' "$minimal"; } | seed harden "$case-minimal.json"
done

failed=0
for t in "${targets[@]}"; do
  mkdir -p "$artifact_root/$t" "$log_root"
  log=$log_root/$t.log
  rc=0
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0" \
    "$bin_dir/$t" "$corpus_root/$t" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -artifact_prefix="$artifact_root/$t/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    per_second=$(awk '{ if ($4 > 0) printf "%d", $1 / $4; else print "?" }' <<<"$runs")
    echo "fuzz: $t: ${runs:-? runs} ($per_second/s), no crash"
  else
    failed=1
    reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    # A panic's message is on the line after "panicked at".
    reason=$(grep -m 1 -A 1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | paste -sd ' ' || true)
    echo "fuzz: $t: CRASH (exit $rc): ${reason:-see $log}"
    if [ -n "$reproducer" ]; then
      echo "fuzz:   reproducer: $reproducer (rerun: $bin_dir/$t $reproducer; log: $log)"
    else
      echo "fuzz:   no reproducer written, see $log"
    fi
  fi
done
exit "$failed"

# Stockade: the two commands that matter are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
ETC ?= /etc/stockade
PROFILE_DIR := profiles

.PHONY: fuzz leak-test security-report all build release test test-unit test-integration test-cgroup2 conformance lint fmt install uninstall demo bench bench-quick deps deps-build deps-demo deps-test deps-lint deps-fuzz clean

all: build

build: deps-build
	$(CARGO) build --workspace --all-targets

release: deps-build
	$(CARGO) build --workspace --release

# What each target needs, installed if missing (scripts/install-deps.sh says what and why);
# `make deps` installs everything.
deps:
	./scripts/install-deps.sh test lint fuzz

deps-build deps-demo deps-test deps-lint deps-fuzz:
	./scripts/install-deps.sh $(@:deps-%=%)

# Unit and property tests (no root needed), then the tests against a real containerd
# (root; installs the packages the tests use first): once against Debian's containerd
# 1.6, once against the shared containerd 2.x (../shared/containerd-2/bin, or
# STOCKADE_SHARED; skipped, loudly, where absent); then the pure cgroup v2 suite in the
# shared VM (../shared/cgroup2-vm; skipped, loudly, where absent).
test: deps-test build
	$(CARGO) test --workspace --exclude stockade-integration
	CARGO=$(CARGO) ./scripts/test-integration.sh
	CARGO=$(CARGO) ./scripts/cgroup2-vm.sh

test-unit:
	$(CARGO) test --workspace --exclude stockade-integration

test-integration: deps-test build
	CARGO=$(CARGO) ./scripts/test-integration.sh

# CRI validation (critest) for runc and Stockade (both profiles) on containerd 1.6 and
# 2.x (root; ~30 minutes): target/conformance/report.md, copied to conformance/report.md.
conformance: deps-test release
	./scripts/conformance.sh

# Pure cgroup v2, with the cgroupfs and the systemd driver, in ../shared/cgroup2-vm (kernel
# 6.1): test binaries built here, run in the VM under /work/heavy.lock. C2VM_INITS=systemd
# for one init only.
test-cgroup2: deps-test
	./scripts/cgroup2-vm.sh

# Create/delete cycles under Stockade (root): nothing left behind, no fd growth in
# containerd or a long-lived pod's shim. LEAK_CYCLES=60 for a quick run.
LEAK_CYCLES ?= 1000
leak-test: deps-test build
	STOCKADE_LEAK_CYCLES=$(LEAK_CYCLES) $(CARGO) test -p stockade-integration --test leaks -- --nocapture

lint: deps-lint
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

# Bounded fuzzing (cargo-fuzz, address sanitizer) of profile parsing, the seccomp compiler
# and the hardener, FUZZ_SECONDS per target; fails on any crash and names the reproducer.
# Corpora, crash inputs and logs stay under target/ (scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz: deps-fuzz
	./scripts/fuzz.sh $(FUZZ_SECONDS)

install: release
	install -s -D -m 0755 target/release/containerd-shim-stockade-v1 $(PREFIX)/bin/containerd-shim-stockade-v1
	install -s -D -m 0755 target/release/stockade $(PREFIX)/bin/stockade
	install -D -m 0644 $(PROFILE_DIR)/default.toml $(ETC)/default.toml
	install -D -m 0644 $(PROFILE_DIR)/strict.toml $(ETC)/strict.toml
	install -D -m 0644 $(PROFILE_DIR)/record.toml $(ETC)/record.toml
	install -D -m 0644 $(PROFILE_DIR)/seccomp/default.json $(ETC)/seccomp/default.json
	install -D -m 0644 $(PROFILE_DIR)/seccomp/strict.json $(ETC)/seccomp/strict.json
	$(PREFIX)/bin/stockade profile check $(ETC)/default.toml
	$(PREFIX)/bin/stockade profile check $(ETC)/strict.toml
	$(PREFIX)/bin/stockade profile check $(ETC)/record.toml
	@echo "Installed. Register the runtimes with containerd (deploy/README.md), or use deploy/install.sh, which also writes the drop-in and restarts containerd."

uninstall:
	rm -f $(PREFIX)/bin/containerd-shim-stockade-v1 $(PREFIX)/bin/stockade
	rm -rf $(ETC)

# On a fresh machine: installs what it needs, starts a private containerd, runs one
# container under runc and under Stockade, and prints the difference.
# Builds the workspace's binaries (the whole workspace selected, as `make build` does:
# cargo resolves features over the selection, and a narrower one rebuilt 80 crates after
# `make test`).
demo: deps-demo
	$(CARGO) build -q --workspace --bins
	$(or $(CARGO_TARGET_DIR),target)/debug/stockade-demo

# Stockade against runc on this node (root; the packages from `make deps`, plus
# linux-perf from bench/setup.sh). The full run refreshes bench/results/latest/;
# bench-quick is CI's smoke test of the harness (about a minute) and checks that the
# report was produced. Counts: BENCH_FLAGS, e.g. "--scale-levels 0,50 --flame-cycles 5".
BENCH_PROFILE ?= release
BENCH_QUICK_PROFILE ?= dev
BENCH_FLAGS ?=
BENCH_QUICK_OUT ?= target/bench-quick
bench_dir = $(or $(CARGO_TARGET_DIR),target)/$(if $(filter dev,$(1)),debug,$(1))

security-report: deps-test build
	$(CARGO) test -q -p stockade-integration --test security >/dev/null
	@cat target/security-report.md

bench: deps-demo
	./bench/setup.sh
	$(CARGO) build --profile $(BENCH_PROFILE) -p containerd-shim-stockade-v1 -p stockade-bench-null-shim -p stockade-bench
	$(call bench_dir,$(BENCH_PROFILE))/stockade-bench $(BENCH_FLAGS)

bench-quick: deps-demo
	./bench/setup.sh
	$(CARGO) build --profile $(BENCH_QUICK_PROFILE) -p containerd-shim-stockade-v1 -p stockade-bench-null-shim -p stockade-bench
	rm -rf $(BENCH_QUICK_OUT)
	$(call bench_dir,$(BENCH_QUICK_PROFILE))/stockade-bench --quick --out $(BENCH_QUICK_OUT) $(BENCH_FLAGS)
	./bench/check-report.sh $(BENCH_QUICK_OUT)

clean:
	$(CARGO) clean

# Stockade: the two commands that matter are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
ETC ?= /etc/stockade
PROFILE_DIR := profiles

.PHONY: all build release test test-unit test-integration lint fmt install uninstall demo bench deps clean

all: build

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --workspace --release

# Debian packages the tests and the demo need (containerd, runc, umoci, busybox-static, CNI).
deps:
	./scripts/install-deps.sh

# Unit and property tests (no root needed), then the tests against a real containerd
# (root, and the packages from `make deps`).
test: build
	$(CARGO) test --workspace --exclude stockade-integration
	$(CARGO) test -p stockade-integration -- --test-threads=1

test-unit:
	$(CARGO) test --workspace --exclude stockade-integration

test-integration: build
	$(CARGO) test -p stockade-integration -- --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

install: release
	install -D -m 0755 target/release/containerd-shim-stockade-v1 $(PREFIX)/bin/containerd-shim-stockade-v1
	install -D -m 0755 target/release/stockade $(PREFIX)/bin/stockade
	install -D -m 0644 $(PROFILE_DIR)/default.toml $(ETC)/default.toml
	install -D -m 0644 $(PROFILE_DIR)/strict.toml $(ETC)/strict.toml
	install -D -m 0644 $(PROFILE_DIR)/seccomp/default.json $(ETC)/seccomp/default.json
	$(PREFIX)/bin/stockade profile check $(ETC)/default.toml
	$(PREFIX)/bin/stockade profile check $(ETC)/strict.toml
	@echo "Installed. Add deploy/containerd-stockade.toml to /etc/containerd/config.toml and restart containerd."

uninstall:
	rm -f $(PREFIX)/bin/containerd-shim-stockade-v1 $(PREFIX)/bin/stockade
	rm -rf $(ETC)

# On a fresh machine: installs what it needs, starts a private containerd, runs one
# container under runc and under Stockade, and prints the difference.
demo: deps build
	$(CARGO) run -q -p stockade-integration --bin stockade-demo

bench:
	@echo "make bench: the runc-vs-Stockade benchmark is not built yet (issue: Benchmark)." >&2
	@exit 1

clean:
	$(CARGO) clean

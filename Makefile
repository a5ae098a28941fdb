# Two commands on a fresh machine: `make fleet` and `make test`.
# Everything else here is what those two are made of.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

AGENTS ?= 2
export AGENTS

.PHONY: help deps deps-down build target-image vm-image fleet fleet-down test fuzz security chaos chaos-hosts bench fmt lint clean-state

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## install and start Redis and Postgres on loopback, install oscap + SSG content (idempotent)
	@scripts/deps.sh

deps-down: ## stop Redis and Postgres (data kept)
	@scripts/deps-down.sh

build: ## build the coordinator and agent binaries
	cargo build --bins

target-image: ## build the Debian 11 target and SSH sandbox images (skipped when unchanged; FORCE=1 rebuilds)
	@scripts/target-image.sh

vm-image: ## build the Debian 11 qemu VM image, kernel and keys in .fleet/vm-image/ and boot it once (skipped when unchanged; FORCE=1 rebuilds)
	@scripts/vm-image.sh

fleet: deps build $(if $(filter sim,$(TARGET)),,target-image) $(if $(filter vm,$(TARGET)),vm-image) ## start coordinator + $(AGENTS) agents on Docker targets and run the Debian 11 standard profile (TARGET=vm: on qemu VMs; TARGET=sim: the simulation)
	@scripts/fleet.sh

fleet-down: ## stop the coordinator, agents and services started by `make fleet`
	@scripts/fleet-down.sh

test: deps target-image vm-image ## the whole test suite against real Redis, Postgres, the target image and the VM image, then 15 s of fuzzing per parser
	@source .fleet/env && cargo build --bins && scripts/test.sh
	@scripts/fuzz.sh short

fuzz: ## fuzz the parsers of outside text, 120 s per target (FUZZ_SECONDS overrides); crashes land in fuzz/regressions/
	@scripts/fuzz.sh long

security: deps target-image ## hostile inputs (text, credentials, sandbox) and a short fuzz run; ends with `security: hostile_inputs=N contained=M false_positives=F crashes=C`
	@mkdir -p .fleet && scripts/fuzz.sh short | tee .fleet/fuzz-summary.txt
	@source .fleet/env && cargo build --bins && target/debug/fleet-security --fuzz-summary .fleet/fuzz-summary.txt

chaos: deps ## long chaos run: agents SIGKILLed and paused mid-lease; prints one line
	@source .fleet/env && cargo build --release --bins && \
	  target/release/fleet-chaos --tasks $${CHAOS_TASKS:-3000} --agents $${CHAOS_AGENTS:-8}

chaos-hosts: deps target-image ## agents in containers on a private network: kills, pauses, partitions, Redis/Postgres/coordinator restarts, a target killed; prints one line
	@source .fleet/env && cargo build --release --bins && \
	  target/release/fleet-chaos-hosts --tasks $${CHAOS_TASKS:-3000} --agents $${CHAOS_AGENTS:-6}

bench: deps target-image vm-image ## benchmarks with baselines measured in the same run (the target and fixrate benches need the target image, the vm bench the VM image)
	@source .fleet/env && cargo build --release --bins && target/release/fleet-bench all
	@cargo bench -q -p fleet-knowledge --bench worktree 2>/dev/null | grep '^bench '

fmt: ## format all crates
	cargo fmt --all

lint: ## clippy on every crate, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

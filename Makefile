# keysvc: the two commands a new user needs are `make demo` and `make test`.
# Each installs missing Debian packages (tools/install-deps.sh), configures and builds
# into build/, then runs. Everything else here is a step of those two.

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# CI builds with -Werror.
WERROR ?= $(if $(CI),ON,OFF)
CTEST_ARGS ?=
# make bench QUICK=1: a smoke run of the harness (few handshakes, rough numbers).
QUICK ?=
BENCH_ARGS ?=

.PHONY: all deps configure build test demo bench clean

all: build

deps:
	@tools/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DKEYSVC_WERROR=$(WERROR) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest -j $(JOBS) --output-on-failure --timeout 300 $(CTEST_ARGS)

demo: build
	@tools/demo.sh $(BUILD_DIR)

# Handshake benchmark (table on stdout, bench/results/latest.json; docs/PERFORMANCE.md),
# then the micro-benchmarks unless QUICK (QUICK=1 writes $(BUILD_DIR)/bench-quick.json instead).
bench: build
	@$(BUILD_DIR)/bin/keysvc-bench $(if $(QUICK),--quick --out $(BUILD_DIR)/bench-quick.json) $(BENCH_ARGS)
	@$(if $(QUICK),true,$(BUILD_DIR)/bin/keysvc-microbench)

clean:
	rm -rf $(BUILD_DIR)

# keysvc: the two commands a new user needs are `make demo` and `make test`.
# Each installs missing Debian packages (tools/install-deps.sh), configures and builds
# into build/, then runs. Everything else here is a step of those two.

# make test SANITIZE=address,undefined (or thread): the same suite in a sanitizer build
# in its own folder; tools/sanitizers/env.sh sets the runtime options (docs/FUZZING.md).
SANITIZE ?=
BUILD_DIR ?= $(if $(SANITIZE),$(if $(filter thread,$(SANITIZE)),build-tsan,build-asan),build)
# Extra cmake arguments. ccache is used when it is installed (developers' machines; a
# fresh CI machine has none and builds without it).
CCACHE := $(shell command -v ccache 2>/dev/null)
CMAKE_ARGS ?= $(if $(CCACHE),-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# make fuzz [FUZZ_SECONDS=N]: every libFuzzer target (fuzz/) for N seconds, in a clang build.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# CI builds with -Werror, except sanitizer builds: GCC's instrumentation makes
# -Wmaybe-uninitialized fire inside libstdc++ (<regex>, std::function) where the normal
# build is clean, and the normal -Werror build already covers the same sources.
WERROR ?= $(if $(CI),$(if $(SANITIZE),OFF,ON),OFF)
CTEST_ARGS ?=
# Build only these targets (and what they need) instead of everything; with CTEST_ARGS,
# a pass over part of the suite (.ci/run's ThreadSanitizer pass).
BUILD_TARGETS ?=
# make bench QUICK=1: a smoke run of the harness (few handshakes, rough numbers).
QUICK ?=
BENCH_ARGS ?=

.PHONY: all deps configure build test demo bench clean fuzz fuzz-build fuzz-smoke soak deb

all: build

deps:
	@tools/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DKEYSVC_WERROR=$(WERROR) \
	  -DKEYSVC_SANITIZE=$(SANITIZE) $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) $(if $(BUILD_TARGETS),--target $(BUILD_TARGETS))

# Except in sanitizer runs: the Debian packages first (built or reused, for the package
# test, deb_package_test), and after the suite a few seconds of each fuzz target.
test: build
	@$(if $(SANITIZE),true,$(MAKE) --no-print-directory deb)
	@. tools/sanitizers/env.sh && cd $(BUILD_DIR) && ctest -j $(JOBS) --output-on-failure --timeout 300 $(CTEST_ARGS)
	@$(if $(SANITIZE),true,$(MAKE) --no-print-directory fuzz-smoke)

# The fuzz targets only (libraries + fuzz/), built by clang with ASan+UBSan; no -Werror
# (clang's warnings differ from gcc's, which CI's -Werror build covers).
fuzz-build: deps
	@cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
	  -DCMAKE_CXX_COMPILER=clang++ -DKEYSVC_FUZZ=ON -DKEYSVC_BUILD_TESTS=OFF -DKEYSVC_BUILD_BENCH=OFF \
	  -DKEYSVC_BUILD_NGINX=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets

fuzz-smoke: fuzz-build
	@cd $(FUZZ_DIR) && ctest -j $(JOBS) --output-on-failure --timeout 300

fuzz: fuzz-build
	@fuzz/run_all.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

# make soak MINUTES=N: tests/soak/soak.sh for N minutes; prints the figures, exits 1 on a
# resumption failure of a valid ticket or a crash (docs/FUZZING.md).
MINUTES ?= 10
soak: build
	@tests/soak/soak.sh $(BUILD_DIR) $$(( $(MINUTES) * 60 ))

demo: build
	@tools/demo.sh $(BUILD_DIR)

# Debian packages with dpkg-buildpackage into $(BUILD_DIR)/deb, checked with lintian
# (docs/PACKAGING.md); reused when the sources have not changed.
deb: deps
	@tools/build-deb.sh $(BUILD_DIR) $(JOBS)

# Handshake benchmark (table on stdout, bench/results/latest.json; docs/PERFORMANCE.md),
# then the micro-benchmarks unless QUICK (QUICK=1 writes $(BUILD_DIR)/bench-quick.json instead).
bench: build
	@$(BUILD_DIR)/bin/keysvc-bench $(if $(QUICK),--quick --out $(BUILD_DIR)/bench-quick.json) $(BENCH_ARGS)
	@$(if $(QUICK),true,$(BUILD_DIR)/bin/keysvc-microbench)

clean:
	rm -rf $(BUILD_DIR)

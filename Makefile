# keysvc: the two commands a new user needs are `make demo` and `make test`.
# Each installs missing Debian packages (tools/install-deps.sh), configures and builds
# into build/, then runs. Everything else here is a step of those two.

BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# CI builds with -Werror.
WERROR ?= $(if $(CI),ON,OFF)
CTEST_ARGS ?=

.PHONY: all deps configure build test demo clean

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

clean:
	rm -rf $(BUILD_DIR)

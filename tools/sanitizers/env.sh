# Runtime options for sanitizer builds (make test SANITIZE=...). Source it from the source folder
# before running ctest or a binary of build-asan / build-tsan by hand:  . tools/sanitizers/env.sh
# Harmless for ordinary builds (the variables are only read by sanitizer runtimes).
# The suppression files name third-party code only (SoftHSM, OpenSSL, p11-kit), which is
# not instrumented; each entry says why.
# POSIX sh (make runs it with /bin/sh): run from the source folder, or set KEYSVC_SOURCE_DIR.
_keysvc_san_dir="${KEYSVC_SOURCE_DIR:-$PWD}/tools/sanitizers"
# ASan's check that its runtime is the process's first library stays on: a program that
# links an ASan-built library without -fsanitize fails at start instead of running with
# half-intercepted malloc. The nginx tests preload the runtime into the uninstrumented
# nginx (tests/support/nginx_instance.cc), so it comes first there too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0:strict_string_checks=0}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$_keysvc_san_dir/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$_keysvc_san_dir/ubsan.supp}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$_keysvc_san_dir/tsan.supp}"
unset _keysvc_san_dir

#!/usr/bin/env bash
# Runs one libFuzzer target for SECONDS on its committed seeds and prints one line:
#   fuzz NAME: RUNS runs in SECONDS s (EXECS exec/s), corpus N inputs
# New inputs go to WORK/corpus (the committed seeds are only read); a crash leaves its
# input in WORK/ (crash-*, printed) and fails. Usage: run_fuzzer.sh BIN SECONDS SEEDS WORK
set -euo pipefail
bin=$1 seconds=$2 seeds=$3 work=$4
name=$(basename "$bin")
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$work/corpus" "$work/tmp"
# Suppressions for third-party code (SoftHSM keeps its singletons until exit).
KEYSVC_SOURCE_DIR=$src . "$src/tools/sanitizers/env.sh"
export KEYSVC_TEST_TMPDIR="$work/tmp"
log="$work/fuzz.log"
set +e
"$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 -max_len=4096 \
  -artifact_prefix="$work/" "$work/corpus" "$seeds" >"$log" 2>&1
rc=$?
set -e
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
corpus=$(ls "$work/corpus" | wc -l)
if [ "$rc" -ne 0 ]; then
  tail -60 "$log" >&2
  echo "fuzz $name: FAILED (exit $rc); input: $(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | tr '\n' ' ')" >&2
  exit 1
fi
echo "fuzz $name: ${runs:-0} runs in $seconds s (${speed:-0} exec/s), corpus $corpus inputs"

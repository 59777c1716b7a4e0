#!/usr/bin/env bash
# make fuzz: every target in FUZZ_DIR/bin for SECONDS each, one after another; the new
# corpus of each stays in FUZZ_DIR/fuzz-work/NAME/corpus (fuzz/corpus is not changed:
# fuzz/merge_corpus.sh adds what brings new coverage; a crash, once fixed, goes there by
# hand, named regress-*).
# Usage: run_all.sh FUZZ_DIR SECONDS
set -euo pipefail
dir=$1 seconds=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status=0
for seeds in "$here"/corpus/*/; do
  name=$(basename "$seeds")
  "$here/run_fuzzer.sh" "$dir/bin/$name" "$seconds" "$seeds" "$dir/fuzz-work/$name" || status=1
done
exit $status

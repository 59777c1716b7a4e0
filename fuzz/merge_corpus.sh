#!/usr/bin/env bash
# Grows the committed corpus of one target with the inputs of longer runs that add
# coverage: libFuzzer's -merge=1 copies into fuzz/corpus/NAME only the inputs of WORK...
# that reach code the corpus does not reach yet (the committed seeds stay as they are).
# Edges only (-use_counters=0): a fuzzing run keeps every new hit count in its own work
# corpus, the repository keeps the few inputs that reach every edge, so it stays small.
# Prints the corpus size before and after. Usage:
#   merge_corpus.sh FUZZ_DIR NAME WORK_CORPUS...
# e.g. merge_corpus.sh build-fuzz config_fuzzer build-fuzz/fuzz-work/config_fuzzer/corpus
set -euo pipefail
dir=$1 name=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
KEYSVC_SOURCE_DIR=$src . "$src/tools/sanitizers/env.sh"
export KEYSVC_TEST_TMPDIR="$dir/fuzz-work/merge-tmp"
mkdir -p "$KEYSVC_TEST_TMPDIR"
seeds=$here/corpus/$name
before=$(ls "$seeds" | wc -l)
"$dir/bin/$name" -merge=1 -use_counters=0 -timeout=20 -rss_limit_mb=4096 -max_len=4096 "$seeds" "$@" >"$dir/fuzz-work/merge-$name.log" 2>&1 ||
  { tail -20 "$dir/fuzz-work/merge-$name.log" >&2; exit 1; }
echo "merge $name: $before -> $(ls "$seeds" | wc -l) inputs, $(du -sb "$seeds" | cut -f1) bytes"

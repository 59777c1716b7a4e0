#!/usr/bin/env bash
# Regenerates the seeds that come from real handshakes and real audit logs (written by
# the targets themselves, KEYSVC_FUZZ_WRITE_SEEDS) into fuzz/corpus/. The config and URI
# seeds are plain files kept by hand. Usage: make_seeds.sh FUZZ_DIR
set -euo pipefail
dir=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
KEYSVC_SOURCE_DIR=$src . "$src/tools/sanitizers/env.sh"
export KEYSVC_TEST_TMPDIR="$dir/fuzz-work/seed-tmp"
mkdir -p "$KEYSVC_TEST_TMPDIR"
for name in ticket_client_hello_fuzzer ticket_bytes_fuzzer audit_verify_fuzzer; do
  mkdir -p "$here/corpus/$name"
  KEYSVC_FUZZ_WRITE_SEEDS="$here/corpus/$name" "$dir/bin/$name"
  echo "$name: $(ls "$here/corpus/$name" | wc -l) seeds"
done

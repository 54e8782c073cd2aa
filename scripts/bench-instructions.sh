#!/usr/bin/env bash
# Instructions per event of decode + window (LaunchDarkly, the `decode_window` bench's
# loop: benches/hot_loop.rs), counted by valgrind's cachegrind: deterministic, where
# wall time on a shared VM moves by ±20 % between runs. Compare two builds with it.
#
#   bash scripts/bench-instructions.sh          (needs valgrind: apt-get install valgrind)
#   HOT_LOOP=path bash scripts/bench-instructions.sh   (count another build's binary)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${HOT_LOOP:-}" ]; then
  cargo bench --bench hot_loop --no-run --quiet
  HOT_LOOP=$(ls -t target/release/deps/hot_loop-* | grep -v '\.d$' | head -1)
fi
count() { # instructions of a run of $1 rounds
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$HOT_LOOP" "$1" 2>&1 \
    | awk '/I *refs:/ {gsub(",", "", $NF); print $NF}'
}
one=$(count 1)
four=$(count 4)
echo "decode + window, LaunchDarkly: $(( (four - one) / 60000 )) instructions per event ($HOT_LOOP)"

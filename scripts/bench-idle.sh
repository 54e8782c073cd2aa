#!/usr/bin/env bash
# Idle cost benchmark (a script, not a test): flagtally on a local Apache Kafka broker
# (scripts/infra.sh start bench; BENCH_BROKER names another) with its input topic empty.
# After a warm-up (group join, first commit cycle), prints the CPU the process uses per
# second of wall-clock time, in all and per thread, over SECS seconds.
#
#   bash scripts/bench-idle.sh          (SECS=20 THREADS=0: one worker per core)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${SECS:-20}"
source scripts/bench-lib.sh
bench_start idle
bench_topics in:4 summary:1 dlq:1
bench_config launchdarkly "" ""
RUST_LOG=warn $BIN run --config "/tmp/$id.toml" &
ft=$!
trap 'kill $ft 2>/dev/null || true; wait $ft 2>/dev/null || true; bash scripts/infra.sh reset "${BENCH_BROKER:-bench}" >/dev/null 2>&1 || true' EXIT
sleep 8
ticks() { # "thread-name ticks" per thread of $ft (utime + stime, in clock ticks)
  for t in /proc/"$ft"/task/*; do
    echo "$(tr ' ' '_' <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done
}
before=$(ticks)
sleep "$SECS"
after=$(ticks)
python3 - "$SECS" "$(getconf CLK_TCK)" "$before" "$after" "${THREADS:-0}" <<'PY'
import sys
from collections import defaultdict
secs, hz = float(sys.argv[1]), int(sys.argv[2])
def parse(text):
    per = defaultdict(int)
    for line in text.splitlines():
        name, ticks = line.rsplit(" ", 1)
        per[name] += int(ticks)
    return per
before, after = parse(sys.argv[3]), parse(sys.argv[4])
used = {n: (after[n] - before.get(n, 0)) / hz for n in after}
print(f"idle flagtally, threads = {sys.argv[5]}, over {secs:.0f} s:")
print(f"  all threads: {sum(used.values()) / secs:.2%} of a core")
for name, s in sorted(used.items(), key=lambda kv: -kv[1]):
    if s > 0:
        print(f"  {name}: {s / secs:.2%}")
PY

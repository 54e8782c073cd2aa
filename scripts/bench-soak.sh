#!/usr/bin/env bash
# Soak (a script, not a test): flagtally under a steady live load on a local Apache Kafka
# broker (scripts/infra.sh start bench) for MINUTES minutes — RATE LaunchDarkly records/s
# whose event times follow the wall clock, 100 000 distinct contexts, 200 flags,
# summaries and index events written — sampling its resident memory every 30 s. Memory
# must level off: the last samples no higher than the early ones (after warm-up) beyond
# noise.
#
#   bash scripts/bench-soak.sh          (MINUTES=30 RATE=1000 THREADS=0)
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${MINUTES:-30}"
RATE="${RATE:-1000}"
source scripts/bench-lib.sh
bench_start soak
bench_topics in:4 summary:1 index:1 dlq:1
bench_config launchdarkly "[window]
size = \"1m\"
lateness = \"5s\"
[admin]
listen = \"off\"" "topics.index = \"$id-index\""
RUST_LOG=warn $BIN run --config "/tmp/$id.toml" &
ft=$!
count=$((RATE * MINUTES * 60))
$BIN gen --brokers "$B" --topic "$id-in" --count "$count" --rate "$RATE" --dialect launchdarkly \
  --start-ms "$(date +%s%3N)" --step-ms $((1000 / RATE > 0 ? 1000 / RATE : 1)) --flags 200 \
  --contexts 100000 >/dev/null 2>&1 &
gen=$!
trap 'kill $ft $gen 2>/dev/null || true; wait $ft 2>/dev/null || true; bash scripts/infra.sh reset "${BENCH_BROKER:-bench}" >/dev/null 2>&1 || true' EXIT
samples=()
for ((s = 0; s < MINUTES * 2; s++)); do
  sleep 30
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$ft/status")
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$ft/stat")
  samples+=("$rss")
  echo "$(( (s + 1) * 30 )) s: RSS $((rss / 1024)) MiB, CPU $cpu s"
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$ft/status")
python3 - "$hwm" "${samples[@]}" <<'PY'
import sys
hwm, xs = int(sys.argv[1]), [int(x) for x in sys.argv[2:]]
n = max(1, len(xs) // 6)
early, late = xs[n:2 * n], xs[-n:]  # after the first sixth (warm-up), and the last sixth
mib = lambda kb: kb / 1024
print(f"samples: {len(xs)}; early mean {mib(sum(early) / len(early)):.1f} MiB, "
      f"late mean {mib(sum(late) / len(late)):.1f} MiB, min {mib(min(xs)):.1f}, max {mib(max(xs)):.1f}, "
      f"peak (VmHWM) {mib(hwm):.1f} MiB")
PY

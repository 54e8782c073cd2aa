#!/usr/bin/env bash
# Summary latency benchmark (a script, not a test): live traffic whose event times follow
# the wall clock (RATE records/s for SECS seconds, then silence) through flagtally on a
# local Apache Kafka broker (scripts/infra.sh start bench; BENCH_BROKER names another). A reader takes the summary
# topic as it is written and measures, per summary:
#   - with traffic: from its window's end plus the lateness to the reader having it;
#   - idle: windows still open when traffic stops close by the idle timeout: from the
#     last record sent plus the idle timeout to the reader having them.
# Prints p50/p99 of both, and flagtally's own histogram (flagtally_summary_latency_seconds,
# window end + lateness → the broker's acknowledgement).
#
#   bash scripts/bench-latency.sh          (RATE=1000 SECS=60 THREADS=0)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-1000}"
SECS="${SECS:-60}"
source scripts/bench-lib.sh
bench_start lat
bench_topics in:4 summary:1 dlq:1
ADMIN="127.0.0.1:$(free_port)"
bench_config launchdarkly "[window]
size = \"10s\"
lateness = \"2s\"
idle_timeout = \"5s\"
[admin]
listen = \"$ADMIN\"" ""
RUST_LOG=warn $BIN run --config "/tmp/$id.toml" &
ft=$!
trap 'kill $ft 2>/dev/null || true; wait $ft 2>/dev/null || true; bash scripts/infra.sh reset "${BENCH_BROKER:-bench}" >/dev/null 2>&1 || true' EXIT
sleep 5
"$PY" - "$B" "$id" "$RATE" "$SECS" "$BIN" "$ADMIN" <<'PY'
import json, subprocess, sys, threading, time, urllib.request
from confluent_kafka import Consumer
b, id, rate, secs, bin, admin = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
LATENESS, IDLE = 2000, 5000
seen = {}  # summary id -> (received ms, window end ms)
stop = threading.Event()
def read():
    c = Consumer({"bootstrap.servers": b, "group.id": f"{id}-reader", "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 10})
    c.subscribe([f"{id}-summary"])
    while not stop.is_set():
        m = c.poll(0.05)
        if m is None or m.error():
            continue
        now = time.time() * 1000
        h = dict(m.headers() or [])
        sid = h.get("flagtally-id", b"").decode()
        if sid not in seen:
            seen[sid] = (now, int(h["flagtally-window-end"]))
    c.close()
reader = threading.Thread(target=read)
reader.start()
start = int(time.time() * 1000)
# Event time = start + i ms, sent at i / rate s: event time follows the wall clock at 1000/s.
gen = subprocess.run([bin, "gen", "--brokers", b, "--topic", f"{id}-in", "--count", str(rate * secs),
                      "--rate", str(rate), "--dialect", "launchdarkly", "--start-ms", str(start),
                      "--step-ms", str(max(1, 1000 // rate)), "--flags", "50"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
last = time.time() * 1000
time.sleep((IDLE + 5000) / 1000)
stop.set()
reader.join()
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")
last_event = start + (rate * secs - 1) * max(1, 1000 // rate)
traffic = [r - (end + LATENESS) for r, end in seen.values() if end + LATENESS <= last_event]
idle = [r - (last + IDLE) for r, end in seen.values() if end + LATENESS > last_event]
print(f"summaries: {len(seen)} ({len(traffic)} closed by the watermark, {len(idle)} by the idle timeout)")
print(f"with traffic: window end + lateness → read: p50 {pct(traffic, .5):.0f} ms, p99 {pct(traffic, .99):.0f} ms")
print(f"idle: last record + idle timeout → read: p50 {pct(idle, .5):.0f} ms, p99 {pct(idle, .99):.0f} ms")
body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
buckets = [(float(l.split('le="')[1].split('"')[0]), float(l.rsplit(" ", 1)[1]))
           for l in body.splitlines() if l.startswith("flagtally_summary_latency_seconds_bucket")]
total = max((c for _, c in buckets), default=0)
def hp(p):
    return next((le for le, c in buckets if c >= total * p), float("inf"))
print(f"flagtally_summary_latency_seconds ({total:.0f} summaries, bucket bounds): p50 ≤ {hp(.5):.2f} s, p99 ≤ {hp(.99):.2f} s")
PY

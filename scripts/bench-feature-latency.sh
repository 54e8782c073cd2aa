#!/usr/bin/env bash
# Feature-event latency under full output (a script, not a test): live LaunchDarkly
# traffic at RATE events/s for SECS seconds (`flagtally gen --rate`, every evaluation
# tracked by default) through flagtally with summary, feature and index output, on a
# local Apache Kafka broker (scripts/infra.sh start bench; BENCH_BROKER names another).
#
# Both the input topic and the feature topic stamp records with the broker's clock
# (message.timestamp.type=LogAppendTime): an input record's timestamp is its arrival,
# a feature event's is the moment the broker appended it, just before it acknowledged
# it (acks=all, one replica). A reader takes both topics and pairs each feature event
# with its input record through its flagtally-source header (topic/partition/offset#i):
# latency = feature event's append time − its evaluation's arrival. The reader may lag
# without changing the figures (both times are the broker's). A warm-up of 2 000 events
# (group join, producer id) is not measured. Prints p50, p90, p99 and max, and how many
# events were paired; TIMELINE=1 also prints the worst latency per 100 ms of arrivals
# (those over 50 ms).
#
#   bash scripts/bench-feature-latency.sh        (RATE=10000 SECS=30; TRACKED_ONE_IN=1
#                                                 CONTEXTS=1000; THREADS=0: one worker
#                                                 per core)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-10000}"
SECS="${SECS:-30}"
TRACKED_ONE_IN="${TRACKED_ONE_IN:-1}"
CONTEXTS="${CONTEXTS:-1000}"
source scripts/bench-lib.sh
bench_start flat
"$PY" - "$B" "$id" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
b, id = sys.argv[1], sys.argv[2]
append = {"message.timestamp.type": "LogAppendTime"}
a = AdminClient({"bootstrap.servers": b})
new = [NewTopic(f"{id}-in", 4, 1, config=append), NewTopic(f"{id}-feature", 2, 1, config=append),
       NewTopic(f"{id}-summary", 1, 1), NewTopic(f"{id}-dlq", 1, 1)]
for t, f in a.create_topics(new).items():
    f.result(30)
PY
ADMIN="127.0.0.1:$(free_port)"
bench_config launchdarkly "[window]
idle_timeout = \"5s\"
[admin]
listen = \"$ADMIN\"" "topics.feature = \"$id-feature\"
topics.index = \"$id-feature\""
RUST_LOG=warn $BIN run --config "/tmp/$id.toml" &
ft=$!
trap 'kill $ft 2>/dev/null || true; wait $ft 2>/dev/null || true; bash scripts/infra.sh reset "${BENCH_BROKER:-bench}" >/dev/null 2>&1 || true' EXIT
sleep 5
"$PY" - "$B" "$id" "$RATE" "$SECS" "$BIN" "$TRACKED_ONE_IN" "$CONTEXTS" <<'PY'
import os, subprocess, sys, threading, time
from confluent_kafka import Consumer, TopicPartition
b, id, rate, secs, bin, tracked, contexts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
n = rate * secs
arrived = {}   # (partition, offset) -> input append time, ms
features = []  # (partition, offset, feature append time, ms)
stop = threading.Event()

def read(topic, on):
    c = Consumer({"bootstrap.servers": b, "group.id": f"{id}-{topic}", "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 10, "enable.auto.commit": False})
    c.subscribe([f"{id}-{topic}"])
    idle_since = None
    while True:
        ms = c.consume(10000, 0.1)
        for m in ms:
            if not m.error():
                on(m)
        if ms:
            idle_since = None
        elif stop.is_set():
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 3:
                break
    c.close()

def on_input(m):
    arrived[(m.partition(), m.offset())] = m.timestamp()[1]

def on_feature(m):
    h = dict(m.headers() or [])
    if h.get("flagtally-kind") != b"feature":
        return
    src = h["flagtally-source"].decode()  # topic/partition/offset#index
    _, p, rest = src.rsplit("/", 2)
    features.append((int(p), int(rest.split("#")[0]), m.timestamp()[1]))

readers = [threading.Thread(target=read, args=("in", on_input)),
           threading.Thread(target=read, args=("feature", on_feature))]
for r in readers:
    r.start()
def gen(count, rate):
    subprocess.run([bin, "gen", "--brokers", b, "--topic", f"{id}-in", "--count", str(count), "--rate", str(rate),
                    "--dialect", "launchdarkly", "--tracked-one-in", tracked, "--contexts", contexts,
                    "--flags", "50"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
# Warm-up, not measured: flagtally has joined its group, owns every partition and has
# its producer's id once these come back as feature events.
gen(2000, 1000)
while len(features) < 2000 // int(tracked):
    time.sleep(0.1)
time.sleep(1)
sent = time.time()
measured_from = int(sent * 1000)
gen(n, rate)
took = time.time() - sent
time.sleep(5)
stop.set()
for r in readers:
    r.join()
pairs = [(arrived[(p, o)], t - arrived[(p, o)]) for p, o, t in features
         if (p, o) in arrived and arrived[(p, o)] >= measured_from]
lat = sorted(l for _, l in pairs)
if os.environ.get("TIMELINE") == "1" and pairs:  # the worst latency per 100 ms of arrivals
    t0 = min(a for a, _ in pairs)
    worst = {}
    for a, l in pairs:
        worst[(a - t0) // 100] = max(worst.get((a - t0) // 100, 0), l)
    print(" ".join(f"{k / 10:.1f}s:{v}" for k, v in sorted(worst.items()) if v > 50))
def pct(q):
    return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")
print(f"sent {n} events in {took:.1f} s ({n / took:,.0f}/s; 1 in {tracked} tracked, {contexts} contexts); "
      f"{len(lat)} of their feature events paired with their input record")
print(f"evaluation arrival → feature event appended (acknowledged): p50 {pct(.5):.0f} ms, "
      f"p90 {pct(.9):.0f} ms, p99 {pct(.99):.0f} ms, max {lat[-1] if lat else float('nan'):.0f} ms")
PY

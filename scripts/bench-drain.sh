#!/usr/bin/env bash
# End-to-end drain benchmark (a script, not a test): preload N events into a topic on a
# local Apache Kafka broker (scripts/infra.sh start bench; BENCH_BROKER names another), let flagtally drain them (summary-only output), and in the same
# run let a no-op librdkafka consumer drain the same topic. Prints wall-clock events/s
# and events per CPU-second of each process, and the ratio (target: flagtally ≥ 0.5 ×
# the no-op consumer, summary-only; ≥ 0.35 × with feature and index output: FULL=1 DIALECT=auto).
# With FULL=1 a no-op pipe (benches/noop_pipe.rs: consume, produce each record once
# with flagtally's producer settings) drains the same topic too: librdkafka's own price
# per produced record, the floor of flagtally's CPU per output record; and again with the
# four headers every flagtally output carries on each record ("shaped").
#
#   bash scripts/bench-drain.sh [N]      (default 1000000; DIALECT=auto to detect per record;
#                                        THREADS=n pipeline workers, default 0: one per core;
#                                        TRACKED_ONE_IN=k: 1 in k evaluations tracked,
#                                        default 10; CONTEXTS=c distinct contexts, default
#                                        1000: TRACKED_ONE_IN=1 CONTEXTS=N makes every
#                                        evaluation a feature event and nearly every
#                                        context new, an index event)
#   To compare builds on one preload: KEEP_BROKER=1 leaves the broker and the input
#   topic (its name is printed; the run's other topics are deleted); INPUT_TOPIC=name
#   reads it instead of preloading (same N); FLOOR=0 skips the no-op consumer and pipe
#   runs (flagtally's own figures only); FLAGTALLY_BIN=path runs another build;
#   EXTRA_TOML='[section] …' adds whole sections to flagtally's configuration (e.g.
#   [kafka.producer_properties] to try a producer setting).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
PARTS="${PARTS:-4}"
source scripts/bench-lib.sh
TRACKED_ONE_IN="${TRACKED_ONE_IN:-10}"
CONTEXTS="${CONTEXTS:-1000}"
bench_start bench --bench noop_consumer --bench noop_pipe
NOOP=$(ls -t target/release/deps/noop_consumer-* | grep -v '\.d$' | head -1)
PIPE=$(ls -t target/release/deps/noop_pipe-* | grep -v '\.d$' | head -1)
IN="${INPUT_TOPIC:-$id-in}"
if [ -n "${INPUT_TOPIC:-}" ]; then
  bench_topics summary:1 feature:2 dlq:1 pipe:2
  echo "reading the preloaded $IN ($N events assumed)"
else
  bench_topics "in:$PARTS" summary:1 feature:2 dlq:1 pipe:2
  echo "preloading $N LaunchDarkly events into $IN ($PARTS partitions; 1 in $TRACKED_ONE_IN tracked, $CONTEXTS contexts)…"
  $BIN gen --brokers "$B" --topic "$IN" --count "$N" --dialect launchdarkly \
    --tracked-one-in "$TRACKED_ONE_IN" --contexts "$CONTEXTS" >/dev/null 2>&1
fi
feature_line=""
# FULL=1: full-fidelity feature events and index events too, into one topic (as
# LaunchDarkly's event stream carries them).
if [ "${FULL:-0}" = 1 ]; then feature_line="topics.feature = \"$id-feature\"
topics.index = \"$id-feature\""; fi
bench_config "${DIALECT:-launchdarkly}" "[window]
idle_timeout = \"1s\"
${EXTRA_TOML:-}" "$feature_line"

cpu_of() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}

# flagtally: runs until it has read every record (its records_in metric) — the drain
# time and CPU reported — and then until its committed offsets reach the end of every
# partition (the commit follows the idle close of the last windows: also reported).
# The no-op consumer runs once first, unmeasured: on a fresh broker the first group
# creates the offsets topic and warms the broker's fetch path, no part of either's cost.
noop_run() { # prints "seconds from its first record to its last" "CPU seconds" "peak RSS KiB"
  local out
  out=$(/usr/bin/time -f 'cpu %U %S %M' "$NOOP" "$B" "$IN" "$N" 2>&1)
  echo "$(echo "$out" | awk '/^noop:/ {print $(NF-3)}') $(echo "$out" | awk '/^cpu / {print $2 + $3, $4}')"
}
[ "${FLOOR:-1}" = 0 ] || noop_run >/dev/null # warm-up

ADMIN="127.0.0.1:$(free_port)"
broker_cpu0=$(cpu_of "$BROKER_PID")
start=$(date +%s.%N)
FLAGTALLY__ADMIN__LISTEN="$ADMIN" RUST_LOG=warn $BIN run --config "/tmp/$id.toml" &
ft=$!
trap 'kill $ft 2>/dev/null || true' EXIT
read -r first ft_cpu_first broker_cpu_first < <("$PY" - "$ADMIN" "$N" "$ft" "$BROKER_PID" <<'PY'
import os, sys, time, urllib.request
admin, n, pids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def cpu(pid):  # utime + stime, seconds
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
first = None
while True:
    try:  # flagtally exited (a zombie until the script waits for it): its log says why
        exited = open(f"/proc/{pids[0]}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        exited = True
    if exited:
        sys.exit(f"flagtally (pid {pids[0]}) exited before reading {n} records")
    try:
        body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=2).read().decode()
        read = sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
                   if l.startswith("flagtally_records_in_total"))
    except Exception:  # not up yet
        read = 0
    if read > 0 and first is None:
        first = time.time()
        cpus = [cpu(p) for p in pids]
    if read >= n:
        break
    time.sleep(0.02)
print(f"{first:.3f}", *(f"{c:.2f}" for c in cpus))
PY
)
end=$(date +%s.%N)
ft_cpu=$(cpu_of $ft)
# Peak resident memory so far (the whole backlog was waiting to be read: the prefetch
# queue's worst case), KiB.
ft_rss=$(awk '/^VmHWM:/ {print $2}' "/proc/$ft/status")
# flagtally's CPU by thread (threads of one name added up), largest first.
threads=$(for t in /proc/$ft/task/*; do echo "$(tr ' ' '_' <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done |
  awk -v hz="$(getconf CLK_TCK)" '{s[$1] += $2} END {for (n in s) if (s[n] > 0) printf "%s %.2f\n", n, s[n] / hz}' |
  sort -k2 -rn | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
broker_now=$(cpu_of "$BROKER_PID")
broker_cpu=$(echo "$broker_now - $broker_cpu0" | bc -l)
# Cores in use from the first record read to the last: flagtally's, the broker's.
steady_cores=$(echo "($ft_cpu - $ft_cpu_first) / ($end - $first)" | bc -l)
broker_cores=$(echo "($broker_now - $broker_cpu_first) / ($end - $first)" | bc -l)
"$PY" - "$B" "$id" "$N" "$IN" <<'PY'
import sys, time
from confluent_kafka import Consumer, TopicPartition
b, id, n, topic = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = Consumer({"bootstrap.servers": b, "group.id": id, "enable.auto.commit": False})
meta = c.list_topics(topic, timeout=10).topics[topic]
tps = [TopicPartition(topic, p) for p in meta.partitions]
while True:
    try:
        done = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
    except Exception:  # the group coordinator is still loading: ask again
        done = 0
    if done >= n:
        break
    time.sleep(0.1)
PY
committed=$(date +%s.%N)
kill -TERM $ft; wait $ft || true
ft_wall=$(echo "$end - $start" | bc -l)
commit_wall=$(echo "$committed - $start" | bc -l)

steady_wall=$(echo "$end - $first" | bc -l)
# The no-op consumer's CPU varies by ±20 % from run to run on a shared machine: three
# runs, and the median one (by CPU) is the reference.
noop_wall=nan noop_cpu=nan noop_rss=0
if [ "${FLOOR:-1}" != 0 ]; then
  read -r noop_wall noop_cpu noop_rss < <(for _ in 1 2 3; do noop_run; done | sort -k2 -n | sed -n 2p)
fi
# flagtally's output records (summary, feature and index): the topics' ends.
outputs=$("$PY" - "$B" "$id" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
b, id = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": b, "group.id": f"{id}-count"})
n = 0
for t in (f"{id}-summary", f"{id}-feature"):
    for p in c.list_topics(t, timeout=10).topics[t].partitions:
        n += c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
print(n)
PY
)
pipe_wall=nan pipe_cpu=nan shaped_wall=nan shaped_cpu=nan
if [ "${FULL:-0}" = 1 ] && [ "${FLOOR:-1}" != 0 ]; then
  pipe_run() { # [shaped] → "seconds from its first record to the last acknowledged" "CPU seconds"
    local out
    out=$(/usr/bin/time -f 'cpu %U %S' "$PIPE" "$B" "$IN" "$id-pipe" "$N" "$@" 2>&1)
    echo "$(echo "$out" | awk '/^pipe:/ {print $(NF-3)}') $(echo "$out" | awk '/^cpu / {print $2 + $3}')"
  }
  read -r pipe_wall pipe_cpu < <(for _ in 1 2 3; do pipe_run; done | sort -k2 -n | sed -n 2p)
  # The same with flagtally's four output headers on each record.
  read -r shaped_wall shaped_cpu < <(for _ in 1 2 3; do pipe_run shaped; done | sort -k2 -n | sed -n 2p)
fi

PARTS="$PARTS" TRACKED_ONE_IN="$TRACKED_ONE_IN" CONTEXTS="$CONTEXTS" OUTPUTS="$outputs" PIPE_WALL="$pipe_wall" PIPE_CPU="$pipe_cpu" SHAPED_CPU="$shaped_cpu" \
python3 - "$N" "$ft_wall" "$ft_cpu" "$noop_wall" "$noop_cpu" "${FULL:-0}" "$commit_wall" "$steady_wall" "$broker_cpu" "$steady_cores" "$broker_cores" "$ft_cpu_first" "$threads" "$ft_rss" "$noop_rss" <<'PY'
import os, sys
n, fw, fc, nw, nc, full = int(sys.argv[1]), *map(float, sys.argv[2:6]), sys.argv[6] == "1"
cw, sw, bc, fcores, bcores, fc_first = map(float, sys.argv[7:13])
threads = sys.argv[13]
ft_rss, noop_rss = int(sys.argv[14]) / 1024, int(sys.argv[15]) / 1024
# This script asks flagtally's /metrics 50 times a second (to time the drain); answering
# is flagtally's admin thread, which a scrape every 15 s in production keeps near zero and
# the no-op consumer does not have: its CPU is shown, and not counted.
scrapes = float(dict(t.rsplit(" ", 1) for t in threads.split(", ") if t).get("admin-http", 0))
fc -= scrapes
f_rate, n_rate = n / fc, n / nc
target = 0.35 if full else 0.5
outputs = int(os.environ["OUTPUTS"])
print(f"events: {n} ({'summary + feature + index' if full else 'summary-only'} output), {os.environ.get('PARTS', '4')} partitions, threads = {os.environ.get('THREADS', '0')}, 1 in {os.environ['TRACKED_ONE_IN']} tracked, {os.environ['CONTEXTS']} contexts; {outputs:,} output records")
print(f"flagtally: {n/fw:,.0f} events/s wall (all read in {fw:.1f} s from process start; all committed at {cw:.1f} s, after the idle close), {fc:.2f} CPU-s (not counting {scrapes:.2f} answering this script's scrapes), {f_rate:,.0f} events/CPU-s")
print(f"flagtally steady state: {n/sw:,.0f} events/s wall (from the first record read to the last, {sw:.2f} s; cores busy meanwhile: flagtally {fcores:.2f}, broker {bcores:.2f})")
print(f"flagtally CPU-s before its first record (start, group join): {fc_first:.2f}; by thread over the run: {threads}")
print(f"peak RSS: flagtally {ft_rss:.0f} MiB (by the last record read), no-op consumer {noop_rss:.0f} MiB")
print(f"broker meanwhile: {bc:.2f} CPU-s ({bc/fw:.0%} of a core over flagtally's {fw:.1f} s; flagtally {fc/fw:.0%})")
print(f"no-op consumer (median of 3 runs): {n/nw:,.0f} records/s wall (from its first record), {nc:.2f} CPU-s, {n_rate:,.0f} records/CPU-s")
print(f"ratio (events per CPU-s): {f_rate/n_rate:.2f} (target ≥ {target})")
if full:
    pw, pc = float(os.environ["PIPE_WALL"]), float(os.environ["PIPE_CPU"])
    per_pipe = (pc - nc) / n * 1e6  # µs per produced record beyond consuming it
    per_ft = (fc - nc) / outputs * 1e6 if outputs else float("nan")
    floor = nc + outputs * (pc - nc) / n  # consuming, plus producing each output at the pipe's price
    print(f"no-op pipe (median of 3 runs): {n/pw:,.0f} records/s wall, {pc:.2f} CPU-s; {per_pipe:.2f} µs per produced record beyond consuming it")
    print(f"flagtally beyond consuming: {per_ft:.2f} µs per output record ({per_ft/per_pipe:.2f} × the pipe's); this workload's floor ≈ {floor:.2f} CPU-s ({n/floor/n_rate:.2f} × the no-op consumer), flagtally {fc/floor:.2f} × it")
    sc = float(os.environ["SHAPED_CPU"])
    per_shaped = (sc - nc) / n * 1e6
    shaped_floor = nc + outputs * (sc - nc) / n
    print(f"no-op pipe with flagtally's four output headers (median of 3 runs): {sc:.2f} CPU-s; {per_shaped:.2f} µs per produced record beyond consuming it; flagtally {per_ft/per_shaped:.2f} × it per output record; floor ≈ {shaped_floor:.2f} CPU-s ({n/shaped_floor/n_rate:.2f} × the no-op consumer)")
PY
if [ "${KEEP_BROKER:-0}" = 1 ]; then
  bench_drop_topics "$IN" # this run's outputs; the input stays for the next run
  echo "broker kept: INPUT_TOPIC=$IN BENCH_BROKER=${BENCH_BROKER:-bench} (scripts/infra.sh reset ${BENCH_BROKER:-bench} when done: stop keeps its data)"
else
  bash scripts/infra.sh reset "${BENCH_BROKER:-bench}"
fi

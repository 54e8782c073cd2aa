#!/usr/bin/env bash
# Collector load benchmark (a script, not a test): `flagtally collect` on 127.0.0.1 in
# front of a local Apache Kafka broker, loaded by wrk with LaunchDarkly /bulk payloads of
# 50 and 500 events (POST, one SDK key), next to the same load into a no-op axum handler
# (benches/noop_http.rs: reads the body, answers 202). Prints requests/s, events/s and
# events per CPU-second of each server, measured from its /proc CPU times over the run.
#
#   bash scripts/bench-collector.sh          (SECONDS_PER_RUN=15, CONNECTIONS=32)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${SECONDS_PER_RUN:-15}"
CONNECTIONS="${CONNECTIONS:-32}"
command -v wrk >/dev/null || { echo "installing wrk (Debian's package)…"; apt-get install -y -qq wrk >/dev/null; }
source scripts/bench-lib.sh
bench_start collector --bench noop_http
NOOP=$(ls -t target/release/deps/noop_http-* | grep -v '\.d$' | head -1)
bench_topics in:4
PORT=$(free_port)
bench_config launchdarkly "[collector]
listen = \"127.0.0.1:$PORT\"
produce_timeout = \"10s\"
[[collector.keys]]
key = \"sdk-bench\"
environment = \"bench\"" ""

# LaunchDarkly server-SDK payloads: feature events and a summary, as an SDK flushes them.
for n in 50 500; do
  python3 - "$n" >"/tmp/$id-$n.json" <<'PY'
import json, sys, time
n, now = int(sys.argv[1]), int(time.time() * 1000)
events = [{"kind": "feature", "creationDate": now + i, "key": f"flag-{i % 20}", "version": 3,
           "context": {"kind": "user", "key": f"user-{i}", "name": f"User {i}"},
           "variation": i % 2, "value": i % 2 == 0, "default": False} for i in range(n - 1)]
events.append({"kind": "summary", "startDate": now, "endDate": now + n,
               "features": {"flag-0": {"default": False, "contextKinds": ["user"],
                                       "counters": [{"variation": 0, "version": 3, "value": True, "count": n - 1}]}}})
print(json.dumps(events, separators=(",", ":")))
PY
  cat >"/tmp/$id-$n.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "sdk-bench"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-LaunchDarkly-Event-Schema"] = "4"
local f = io.open("/tmp/$id-$n.json", "rb")
wrk.body = f:read("*a")
f:close()
LUA
done

cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

# One load run against the server at PORT (pid PID): requests/s, non-2xx, CPU seconds.
load() { # PID PORT PATH N
  local before after out
  before=$(cpu_of "$1")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "/tmp/$id-$4.lua" "http://127.0.0.1:$2$3")
  after=$(cpu_of "$1")
  local rps bad
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$rps ${bad:-0} $(echo "$after - $before" | bc -l)"
}

report() { # LABEL N RPS BAD CPU
  awk -v l="$1" -v n="$2" -v rps="$3" -v bad="$4" -v cpu="$5" -v d="$DURATION" 'BEGIN {
    ev = rps * n * d; printf "%-22s %4d events/request: %8.0f req/s  %9.0f events/s  %5.1f CPU-s  %9.0f events per CPU-s  (non-2xx %d)\n",
      l, n, rps, rps * n, cpu, ev / cpu, bad }'
}

echo "load: wrk, 1 thread, $CONNECTIONS connections, ${DURATION} s per run, on 127.0.0.1 (2 cores shared with wrk and the broker)"
"$BIN" collect --config "/tmp/$id.toml" 2>"/tmp/$id-collector.log" &
COLLECTOR=$!
"$NOOP" "$(free_port)" >/dev/null &
NOOP_PID=$!
trap 'kill $COLLECTOR $NOOP_PID 2>/dev/null; bash scripts/infra.sh stop "${BENCH_BROKER:-bench}" >/dev/null 2>&1' EXIT
NOOP_PORT=$(ss -ltnp 2>/dev/null | awk -v p="pid=$NOOP_PID," '$0 ~ p {split($4, a, ":"); print a[length(a)]}' | head -1)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
for _ in $(seq 100); do
  [ -n "$NOOP_PORT" ] && break
  sleep 0.1
  NOOP_PORT=$(ss -ltnp 2>/dev/null | awk -v p="pid=$NOOP_PID," '$0 ~ p {split($4, a, ":"); print a[length(a)]}' | head -1)
done
for n in 50 500; do
  # shellcheck disable=SC2046
  report "flagtally collect" "$n" $(load "$COLLECTOR" "$PORT" /bulk "$n")
  # shellcheck disable=SC2046
  report "no-op axum handler" "$n" $(load "$NOOP_PID" "$NOOP_PORT" /bulk "$n")
done

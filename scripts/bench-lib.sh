# What the benchmark scripts share (sourced, not run): the release binary, a local
# Apache Kafka broker (scripts/infra.sh start bench; BENCH_BROKER names another), its
# Python client, and topics named after the run.
#
#   bench_start PREFIX [CARGO_BUILD_ARGS…]   builds, starts the broker; sets BIN, B (the
#                                           broker's address), BROKER_PID, PY, id
#   bench_topics SUFFIX:PARTITIONS…          creates "$id-SUFFIX" for each
#   bench_config DIALECT SECTIONS OUTPUTS    writes /tmp/$id.toml: $id-in read as DIALECT,
#                                           THREADS workers (default 0), dead letters to
#                                           $id-dlq, summaries to $id-summary; SECTIONS
#                                           (whole TOML sections) and OUTPUTS (more
#                                           [output] lines) added
#   bench_drop_topics [KEEP]                 deletes this run's topics ("$id-*"), KEEP
#                                           (a topic name) excepted: a kept broker
#                                           otherwise grows by every run's outputs
#   free_port                                prints a free TCP port on 127.0.0.1

bench_start() {
  local prefix=$1
  shift
  [ -n "${FLAGTALLY_BIN:-}" ] || cargo build --release --quiet --bin flagtally "$@"
  BIN=${FLAGTALLY_BIN:-target/release/flagtally}
  # Kafka's default initial rebalance delay (the test broker's is 0): the workers of one
  # process join the new group within it and start with their shares, as in production.
  eval "$(INFRA_REBALANCE_DELAY_MS=3000 bash scripts/infra.sh start "${BENCH_BROKER:-bench}" | grep '^export')"
  B=$FLAGTALLY_TEST_BROKER
  BROKER_PID=$(cat "${FLAGTALLY_INFRA:-${XDG_CACHE_HOME:-$HOME/.cache}/flagtally}/run/${BENCH_BROKER:-bench}/pid")
  PY=$(bash scripts/infra.sh python)
  id="$prefix-$$-$RANDOM"
}

bench_topics() {
  "$PY" - "$B" "$id" "$@" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
b, id, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
a = AdminClient({"bootstrap.servers": b})
new = [NewTopic(f"{id}-{s.split(':')[0]}", int(s.split(':')[1]), 1) for s in specs]
for t, f in a.create_topics(new).items():
    f.result(30)
PY
}

bench_drop_topics() {
  "$PY" - "$B" "$id" "${1:-}" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
b, id, keep = sys.argv[1], sys.argv[2], sys.argv[3]
a = AdminClient({"bootstrap.servers": b})
mine = [t for t in a.list_topics(timeout=10).topics if t.startswith(id + "-") and t != keep]
for t, f in (a.delete_topics(mine).items() if mine else []):
    f.result(30)
PY
}

bench_config() {
  cat >"/tmp/$id.toml" <<TOML
[kafka]
brokers = "$B"
group_id = "$id"
input_topics = ["${INPUT_TOPIC:-$id-in}"]
[input]
dialect = "$1"
[processing]
threads = ${THREADS:-0}
$2
[output]
dead_letter_topic = "$id-dlq"
topics.summary = "$id-summary"
$3
TOML
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

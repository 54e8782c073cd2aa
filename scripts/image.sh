#!/usr/bin/env bash
# The container image, built and run: builds the Dockerfile with podman from a prebuilt
# binary, with no container registry, and runs the image against a test broker.
#
#   bash scripts/image.sh
#
# Skips (exit 0) when podman is not installed; FLAGTALLY_IMAGE_TEST=required makes that
# a failure. Needs podman, runc and mmdebstrap (apt-get install podman mmdebstrap runc).
#
#   base   a Debian bookworm minbase made by mmdebstrap from Debian's mirror, trimmed as
#          debian:bookworm-slim is (no documentation, manual pages or locales), imported
#          as localhost/flagtally-base:bookworm-<hash of its recipe>: made once, reused
#   build  podman build --format docker (the OCI format has no HEALTHCHECK) with
#          BINARY_FROM=prebuilt and RUNTIME_IMAGE=<base>, from a context holding only
#          the binary, config/flagtally.toml and the Dockerfile. The binary is
#          $FLAGTALLY_BINARY, default target/release/flagtally (built with cargo only
#          when that file is missing; a warning when it is older than the sources, and
#          one that predates the [kafka] TLS and SASL keys fails the test's validate
#          step). The runtime stage's apt-get reaches Debian's mirror. The image this
#          build replaces, and what only it used, are removed.
#   test   a fresh test broker (`infra.sh reset image`, `start image`), topics, generated
#          evaluations (some malformed); the container runs with --network host, its
#          config and the broker's SASL password as mounted files (mode 0640, group
#          10001), and reads over SASL_SSL (SCRAM, the broker's CA mounted). Checked:
#          `flagtally validate` in the image accepts them; it runs as uid 10001; its summaries count every evaluation exactly and every
#          malformed record is a dead letter; it is healthy (the image's HEALTHCHECK);
#          `podman stop -t 40` (SIGTERM) ends it with exit code 0 and the group's offsets
#          committed to the end of the input; the password is not in its log. The broker
#          is stopped and the container removed at exit.
#
# The podman configuration (CONTAINERS_CONF) is written to $FLAGTALLY_INFRA/podman
# (default ~/.cache/flagtally/podman): the runc runtime, and containers' open-file and
# process limits at this shell's hard limits, the latter at most kernel.pid_max (podman's
# defaults exceed them in a VM, and runc then refuses to start any container: "error
# setting rlimits").
#
# Environment: FLAGTALLY_BINARY (the binary), FLAGTALLY_IMAGE (the tag; default
# localhost/flagtally:test), FLAGTALLY_IMAGE_RECORDS (generated records; default 20000),
# FLAGTALLY_INFRA, FLAGTALLY_IMAGE_TEST.
set -euo pipefail
cd "$(dirname "$0")/.."

INFRA="${FLAGTALLY_INFRA:-${XDG_CACHE_HOME:-$HOME/.cache}/flagtally}"
IMAGE="${FLAGTALLY_IMAGE:-localhost/flagtally:test}"
RECORDS="${FLAGTALLY_IMAGE_RECORDS:-20000}"
BINARY="${FLAGTALLY_BINARY:-target/release/flagtally}"
ADMIN_PORT=9464 # the port the image's HEALTHCHECK probes

started=$SECONDS
phase_started=$SECONDS
say() { printf 'image: %s\n' "$*"; }
step() { printf '==> image: %s (%ss)\n' "$*" "$((SECONDS - started))"; }
die() {
  printf 'image: FAIL: %s\n' "$*" >&2
  exit 1
}
phase_end() { # name: records the phase's duration for the summary line
  timings+=("$1 $((SECONDS - phase_started))s")
  phase_started=$SECONDS
}
timings=()

if ! command -v podman >/dev/null; then
  if [ "${FLAGTALLY_IMAGE_TEST:-}" = required ]; then
    die "podman is not installed (FLAGTALLY_IMAGE_TEST=required): apt-get install -y podman mmdebstrap runc"
  fi
  say "skipped: podman is not installed (apt-get install -y podman mmdebstrap runc);" \
    "FLAGTALLY_IMAGE_TEST=required makes this a failure"
  exit 0
fi

# ------------------------------------------------------------------ podman configuration
conf_dir="$INFRA/podman"
mkdir -p "$conf_dir"
ulimits=()
hard_nofile=$(ulimit -Hn)
hard_nproc=$(ulimit -Hu)
# podman runs itself (and so runc) with at most kernel.pid_max processes: a higher
# container limit is refused as well.
pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
if [[ $hard_nproc == unlimited ]] || { [[ $hard_nproc =~ ^[0-9]+$ ]] && [ "$hard_nproc" -gt "$pid_max" ]; }; then
  hard_nproc=$pid_max
fi
[[ $hard_nofile =~ ^[0-9]+$ ]] && ulimits+=("\"nofile=$hard_nofile:$hard_nofile\"")
[[ $hard_nproc =~ ^[0-9]+$ ]] && ulimits+=("\"nproc=$hard_nproc:$hard_nproc\"")
joined=$(IFS=,; echo "${ulimits[*]}")
{
  echo "# Written by scripts/image.sh."
  echo "[containers]"
  echo "default_ulimits = [${joined//,/, }]"
  echo "[engine]"
  if command -v runc >/dev/null; then echo 'runtime = "runc"'; fi
} >"$conf_dir/containers.conf"
export CONTAINERS_CONF="$conf_dir/containers.conf"

# -------------------------------------------------------------------------- base image
step "base image"
# debian:bookworm-slim's recipe (debuerreotype's "slim" variant), with mmdebstrap: the
# minbase variant, merged /usr as in Debian's images, the same dpkg path exclusions
# (kept in the image, so packages installed later stay slim), the same apt sources, and
# its /etc/apt/apt.conf.d/docker-clean: without it apt keeps 80 MB of package caches in
# the layer of the Dockerfile's `apt-get install` (which removes only the lists).
cat >"$conf_dir/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
# shellcheck disable=SC2016 # "$1" in a hook is mmdebstrap's: the root directory
base_recipe=(
  --variant=minbase
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --customize-hook="copy-in $conf_dir/docker-clean /etc/apt/apt.conf.d"
  # (mmdebstrap's own clean-up then misses the caches its merged-usr hook left: apt
  # tells it their names, and docker-clean sets them to "")
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin'
  bookworm
  -
  'deb http://deb.debian.org/debian bookworm main'
  'deb http://deb.debian.org/debian bookworm-updates main'
  'deb http://deb.debian.org/debian-security bookworm-security main'
)
recipe_hash=$(cat <(printf '%s\n' "${base_recipe[@]}") "$conf_dir/docker-clean" | sha256sum | cut -c1-12)
BASE="localhost/flagtally-base:bookworm-$recipe_hash"
if podman image exists "$BASE"; then
  say "reusing $BASE"
else
  command -v mmdebstrap >/dev/null \
    || die "mmdebstrap is not installed (apt-get install -y mmdebstrap): it makes the base image"
  say "making $BASE with mmdebstrap (once; about 20 s)"
  tarball="$conf_dir/base.tar"
  # Into a file first: a bootstrap that fails half-way must not be imported.
  if ! mmdebstrap --quiet "${base_recipe[@]}" >"$tarball.partial" 2>"$conf_dir/mmdebstrap.log"; then
    tail -20 "$conf_dir/mmdebstrap.log" | sed 's/^/  | /'
    die "mmdebstrap failed (its log: $conf_dir/mmdebstrap.log)"
  fi
  mv "$tarball.partial" "$tarball"
  podman import --quiet \
    --message "Debian bookworm minbase (slim), made by flagtally's scripts/image.sh" \
    "$tarball" "$BASE" >/dev/null || die "podman import of the base image failed"
  rm -f "$tarball"
fi
phase_end base

# ------------------------------------------------------------------------------- build
step "build $IMAGE"
if [ ! -x "$BINARY" ]; then
  [ -z "${FLAGTALLY_BINARY:-}" ] || die "FLAGTALLY_BINARY=$BINARY is not an executable file"
  say "$BINARY is missing: cargo build --release --bin flagtally (about 10 min on 2 cores)"
  cargo build --release --locked --bin flagtally
fi
newer=$(find src Cargo.toml Cargo.lock -newer "$BINARY" -type f -print -quit 2>/dev/null || true)
if [ -n "$newer" ]; then
  say "warning: $BINARY is older than the sources ($newer): the image holds that older build"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/flagtally-image.XXXXXX")
ctr="flagtally-image-test-$$"
broker_started=""
cleanup() {
  local rc=$?
  if podman container exists "$ctr" 2>/dev/null; then
    if [ "$rc" != 0 ]; then
      say "the container's last log lines:"
      podman logs --tail 40 "$ctr" 2>&1 | sed 's/^/  | /' || true
    fi
    podman rm -f -t 0 "$ctr" >/dev/null 2>&1 || true
  fi
  if [ -n "$broker_started" ]; then bash scripts/infra.sh stop image || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# A context of its own: the binary, the config the image carries and the Dockerfile
# (the repository would send its target/ directory, gigabytes, to the builder).
ctx="$work/context"
mkdir -p "$ctx/config"
install -m 0755 "$BINARY" "$ctx/flagtally"
cp config/flagtally.toml "$ctx/config/"
cp Dockerfile "$ctx/"
version=$("$BINARY" --version | awk '{print $2}')
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
dangling() { podman images --quiet --no-trunc --filter dangling=true | sort; }
dangling_before=$(dangling)
say "podman build --format docker --build-arg BINARY_FROM=prebuilt --build-arg RUNTIME_IMAGE=$BASE ($BINARY, flagtally $version)"
if ! podman build --format docker --pull=never \
  --build-arg BINARY_FROM=prebuilt \
  --build-arg RUNTIME_IMAGE="$BASE" \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" \
  --tag "$IMAGE" --file "$ctx/Dockerfile" "$ctx" >"$work/build.log" 2>&1; then
  sed 's/^/  | /' "$work/build.log" | tail -40
  die "podman build failed (its last lines above)"
fi
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
# So that repeated runs do not fill the disk: the image this build replaced, base images
# of an older recipe, and what became dangling here (the prebuilt stage's copy of the
# binary; the layers only the replaced image used).
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  podman rmi "$old_id" >/dev/null 2>&1 || true
fi
for old_base in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference=localhost/flagtally-base); do
  [ "$old_base" = "$BASE" ] || podman rmi "$old_base" >/dev/null 2>&1 || true
done
comm -13 <(printf '%s\n' "$dangling_before") <(dangling) | xargs -r podman rmi >/dev/null 2>&1 || true
rm -rf "$ctx"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE: $((size / 1000000)) MB (binary $(($(stat -c %s "$BINARY") / 1000000)) MB)"
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = 10001:10001 ] \
  || die "the image's user is not 10001:10001"
config_mode=$(podman run --rm --entrypoint stat "$IMAGE" -c '%a %u:%g' /etc/flagtally/flagtally.toml)
[ "$config_mode" = "640 0:10001" ] \
  || die "the image's /etc/flagtally/flagtally.toml is $config_mode, not 640 0:10001"
case "$(podman image inspect --format '{{.Config.Healthcheck}}' "$IMAGE")" in
  "" | "<nil>") die "the image has no HEALTHCHECK (built without --format docker?)" ;;
esac
phase_end build

# -------------------------------------------------------------------------------- test
step "test: broker, topics, $RECORDS generated records"
# --network host: the container reaches the test broker on 127.0.0.1, and its admin
# port is the host's.
if (exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT") 2>/dev/null; then
  die "127.0.0.1:$ADMIN_PORT is in use: the container shares the host's network and its HEALTHCHECK probes that port"
fi
py=$(bash scripts/infra.sh python) || die "the test venv (infra.sh python) failed"
# A fresh broker each run (as test.sh's), so that the runs' topics do not pile up.
bash scripts/infra.sh reset image
broker_env=$(bash scripts/infra.sh start image) || die "the test broker did not start (infra.sh start image)"
broker_started=1
eval "$broker_env"
: "${FLAGTALLY_TEST_BROKER:?}" "${FLAGTALLY_TEST_BROKER_SASL_SSL:?infra.sh start printed no SASL_SSL listener}"
: "${FLAGTALLY_TEST_TLS:?}" "${FLAGTALLY_TEST_SASL_USER:?}" "${FLAGTALLY_TEST_SASL_PASSWORD:?}"

run_id="image-$(date +%s)-$$"
topics() {
  cat <<TOML
[output]
dead_letter_topic = "$run_id.dead-letters"

[output.topics]
summary = "$run_id.summaries"

[processing]
checkpoint_topic = "$run_id.checkpoints"
TOML
}
# On the host, over the plaintext listener: create this run's topics.
{
  printf '[kafka]\nbrokers = "%s"\ninput_topics = ["%s.in"]\n\n' "$FLAGTALLY_TEST_BROKER" "$run_id"
  topics
} >"$work/setup.toml"
# The container's: over SASL_SSL, its password and the broker's CA from mounted files.
{
  cat <<TOML
[kafka]
brokers = "$FLAGTALLY_TEST_BROKER_SASL_SSL"
group_id = "$run_id"
input_topics = ["$run_id.in"]
security_protocol = "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "$FLAGTALLY_TEST_SASL_USER"
sasl_password_file = "/run/secrets/kafka-password"
tls_ca_file = "/etc/flagtally/ca.pem"

[window]
idle_timeout = "2s"             # close the last windows soon after the input ends

TOML
  topics
} >"$work/flagtally.toml"
printf '%s\n' "$FLAGTALLY_TEST_SASL_PASSWORD" >"$work/kafka-password"
# Readable by the image's group 10001 only, as a deployment would mount them.
chmod 0640 "$work/flagtally.toml" "$work/kafka-password"
if [ "$(id -u)" = 0 ]; then
  chown 0:10001 "$work/flagtally.toml" "$work/kafka-password"
else # rootless: gid 10001 of the container is a subordinate gid of this user
  podman unshare chown 0:10001 "$work/flagtally.toml" "$work/kafka-password"
fi

"$BINARY" topics create --config "$work/setup.toml" --partitions 3 --retention broker \
  >"$work/topics.log" 2>&1 || { cat "$work/topics.log"; die "flagtally topics create failed"; }
"$BINARY" gen --brokers "$FLAGTALLY_TEST_BROKER" --topic "$run_id.in" --count "$RECORDS" \
  --dialect mixed --malformed-one-in 100 --json >"$work/tally.json" 2>"$work/gen.log" \
  || { cat "$work/gen.log"; die "flagtally gen failed"; }
read -r evaluations malformed < <(python3 -c \
  'import json, sys; t = json.load(open(sys.argv[1])); print(t["evaluations"], t["malformed"])' \
  "$work/tally.json")
[[ ${evaluations:-} =~ ^[0-9]+$ && ${malformed:-} =~ ^[0-9]+$ ]] \
  || die "cannot read the tally flagtally gen printed ($work/tally.json)"
say "generated $RECORDS records on $run_id.in: $evaluations evaluations, $malformed malformed"

step "test: the container"
mounts=(
  --volume "$work/flagtally.toml:/etc/flagtally/flagtally.toml:ro"
  --volume "$work/kafka-password:/run/secrets/kafka-password:ro"
  --volume "$FLAGTALLY_TEST_TLS/ca.pem:/etc/flagtally/ca.pem:ro"
)
# The image's binary, as uid 10001, reads the mounted config and password file.
if ! podman run --rm --pull=never --no-healthcheck "${mounts[@]}" "$IMAGE" \
  validate --config /etc/flagtally/flagtally.toml >"$work/validate.log" 2>&1; then
  sed 's/^/  | /' "$work/validate.log"
  die "flagtally validate in the image refuses the mounted config (a binary older than its keys?)"
fi
say "flagtally validate in the image accepts the mounted config and password file"
podman run --detach --pull=never --name "$ctr" --network host \
  --env FLAGTALLY__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" "${mounts[@]}" \
  "$IMAGE" >/dev/null 2>"$work/run.log" || { cat "$work/run.log"; die "podman run failed"; }
if grep -q 'systemd connection' "$work/run.log"; then
  # podman schedules a container's health checks with systemd timers; without systemd
  # it logs an error and the container runs unchecked: the test runs the check itself.
  say "note: no systemd here, so podman runs no periodic health checks (podman healthcheck run below)"
fi
say "started $ctr (config and password mounted, SASL_SSL to $FLAGTALLY_TEST_BROKER_SASL_SSL)"

# The independent reader: this run's output topics, read over the plaintext listener.
reader() {
  "$py" - "$FLAGTALLY_TEST_BROKER" "$run_id" "$evaluations" "$malformed" "$ctr" "$@" <<'PY'
import json
import subprocess
import sys
import time

from confluent_kafka import Consumer, TopicPartition

broker, run_id, evaluations, malformed, ctr, mode = sys.argv[1:7]
evaluations, malformed = int(evaluations), int(malformed)


def container_running():
    r = subprocess.run(["podman", "inspect", "--format", "{{.State.Running}}", ctr],
                       capture_output=True, text=True)
    return r.stdout.strip() == "true"


def consumer(group=f"{run_id}-reader"):
    return Consumer({"bootstrap.servers": broker, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def partitions(c, topic):
    meta = c.list_topics(topic, timeout=30).topics[topic]
    return [TopicPartition(topic, p) for p in sorted(meta.partitions)]


def read(topic, enough, timeout):
    """Records deduplicated by their flagtally-id header (by position if they have
    none), from the start of every partition: until enough(records) is true, or, when
    enough is None, until every partition's end."""
    c = consumer()
    tps = partitions(c, topic)
    ends = {tp.partition: c.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
    for tp in tps:
        tp.offset = 0
    c.assign(tps)
    seen, at = {}, {p: 0 for p in ends}
    deadline = time.time() + timeout
    checked = time.time()
    while time.time() < deadline:
        if enough(seen) if enough else all(at[p] >= ends[p] for p in ends):
            break
        if enough and time.time() > checked + 2:  # waiting on the container: alive?
            checked = time.time()
            if not container_running():
                break
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        at[m.partition()] = m.offset() + 1
        headers = dict(m.headers() or [])
        seen[headers.get("flagtally-id") or (m.partition(), m.offset())] = m.value()
    c.close()
    return seen


def counted(summaries):
    return sum(c["count"] for v in summaries.values()
               for f in json.loads(v)["features"].values() for c in f["counters"])


if mode == "wait":  # until the summaries account for every evaluation (or 180 s)
    s = read(f"{run_id}.summaries", lambda s: counted(s) >= evaluations, 180)
    print(f"{counted(s)} of {evaluations} evaluations counted in {len(s)} summaries")
    sys.exit(0 if counted(s) >= evaluations else 1)

# mode == "verify": after the container stopped, everything it wrote and committed.
problems = []
s = read(f"{run_id}.summaries", None, 60)
if counted(s) != evaluations:
    problems.append(f"summaries count {counted(s)} evaluations, {evaluations} generated")
dead = read(f"{run_id}.dead-letters", None, 60)
if len(dead) != malformed:
    problems.append(f"{len(dead)} dead letters, {malformed} malformed records generated")
c = consumer(run_id)
tps = partitions(c, f"{run_id}.in")
committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=30)}
ends = {tp.partition: c.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
c.close()
if committed != ends:
    problems.append(f"group {run_id} committed {committed}, the input ends at {ends}")
for p in problems:
    print(f"image: FAIL: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{counted(s)} evaluations counted in {len(s)} summaries, {len(dead)} dead letters, "
      f"offsets committed to the end of {len(tps)} input partitions")
PY
}

running() { [ "$(podman inspect --format '{{.State.Running}}' "$ctr" 2>/dev/null)" = true ]; }

wait_started=$SECONDS
if ! out=$(reader wait); then
  running || die "the container exited ($(podman inspect --format '{{.State.ExitCode}}' "$ctr")) before counting every evaluation: $out"
  die "the summaries do not account for every evaluation within 180 s: $out"
fi
say "counted within $((SECONDS - wait_started)) s of the start: $out"
running || die "the container is not running after the drain"

uid=$(podman exec "$ctr" id -u) || die "podman exec $ctr id -u failed"
[ "$uid" = 10001 ] || die "podman exec runs as uid $uid, not 10001"
pid1=$(podman exec "$ctr" grep '^Uid:' /proc/1/status | awk '{print $2, $3, $4, $5}')
[ "$pid1" = "10001 10001 10001 10001" ] || die "flagtally (PID 1) runs with uids $pid1, not 10001"
say "runs as its non-root user: PID 1 uids $pid1, podman exec id -u $uid"

podman healthcheck run "$ctr" >"$work/health.log" 2>&1 \
  || die "podman healthcheck run: $(cat "$work/health.log")"
health=$(podman inspect --format '{{.State.Health.Status}}' "$ctr")
[ "$health" = healthy ] || die "podman inspect reports health '$health'"
say "healthy (podman healthcheck run exits 0, podman inspect: $health)"

stop_started=$SECONDS
podman stop --time 40 "$ctr" >/dev/null 2>"$work/stop.log" || { cat "$work/stop.log"; die "podman stop failed"; }
code=$(podman inspect --format '{{.State.ExitCode}}' "$ctr")
[ "$code" = 0 ] || die "exit code $code after SIGTERM (0: drained; 3: drain past its deadline)"
say "podman stop -t 40: exit code 0 after $((SECONDS - stop_started)) s"

out=$(reader verify) || die "after the stop: see above"
say "exact: $out"
if podman logs "$ctr" 2>&1 | grep -qF "$FLAGTALLY_TEST_SASL_PASSWORD"; then
  die "the SASL password appears in the container's log"
fi
say "the password is not in the container's log"
phase_end test

step "done"
say "passed: $IMAGE ($((size / 1000000)) MB); ${timings[*]}"

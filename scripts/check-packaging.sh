#!/usr/bin/env bash
# Checks the packaging files without a Docker engine or a booted systemd:
#
#   docker-compose.yml   `docker compose config -q` when a compose CLI is installed (it
#                        needs no daemon); always: YAML parse + structural checks
#                        (services, depends_on targets and conditions, pinned images,
#                        volumes, quoting, $-escaping, the flagtally service's mount,
#                        env, port and grace period, topics created by kafka-init)
#   Dockerfile           parsed with dockerfile-parse: known instructions, >= 2 stages,
#                        pinned base images (ARG defaults), every stage used by the
#                        default build or selectable by a build argument and then
#                        providing what is copied from the stage it replaces (builder or
#                        prebuilt binary), COPY --from names an earlier stage, the
#                        final stage runs as a non-root USER, exec-form ENTRYPOINT/CMD,
#                        EXPOSE/HEALTHCHECK port; the builder copies every file cargo
#                        needs (declared targets, include_str!/include_bytes!) and no
#                        COPY source is missing or excluded by .dockerignore
#   flagtally.service    `systemd-analyze verify` (against a copy whose ExecStart points
#                        at a stub, since the binary is not installed here, with the
#                        credentials drop-in config/flagtally-credentials.conf) and
#                        `systemd-analyze security --offline` when systemd-analyze
#                        works; always: structural checks of the settings the daemon
#                        relies on
#
# Cross-checks use config/flagtally.toml (topics, processing.shutdown_deadline).
# Needs python3 (>= 3.8) and, once, PyPI for dockerfile-parse and PyYAML, installed in a
# venv under $FLAGTALLY_INFRA (default ~/.cache/flagtally)/venv-pack; offline after that.
# Exit 0: all checks passed (skipped ones are listed with the reason); 1: a check
# failed; 2: the checker itself could not run.
#
#   bash scripts/check-packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."

INFRA="${FLAGTALLY_INFRA:-${XDG_CACHE_HOME:-$HOME/.cache}/flagtally}"
VENV="$INFRA/venv-pack"
REQUIREMENTS='dockerfile-parse==2.0.1
PyYAML>=6,<7
tomli>=2; python_version < "3.11"'

say() { printf 'check-packaging: %s\n' "$*" >&2; }

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV (once)"
    mkdir -p "$INFRA"
    python3 -m venv "$VENV" || { say "python3 -m venv failed"; exit 2; }
  fi
  # Reinstall only when the pins above change: offline after the first run.
  if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$REQUIREMENTS" ]; then
    say "installing dockerfile-parse and PyYAML into $VENV"
    printf '%s\n' "$REQUIREMENTS" >"$VENV/requirements.txt"
    if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$VENV/requirements.txt"; then
      say "pip install failed (PyPI unreachable?): cannot check the Dockerfile"
      exit 2
    fi
    printf '%s' "$REQUIREMENTS" >"$VENV/.requirements"
  fi
}

ensure_venv
exec "$VENV/bin/python" - "$@" <<'PY'
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path.cwd()
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = ROOT / "config" / "flagtally.service"
DROPIN = ROOT / "config" / "flagtally-credentials.conf"
CONFIG = ROOT / "config" / "flagtally.toml"
CONFIG_EXAMPLE = ROOT / "config" / "flagtally.example.toml"
# A file that the packaging references but that is still being renamed into place:
# reported as a warning, not a failure, while its predecessor exists.
PENDING = {"config/flagtally.toml": "config/flagtally.example.toml"}

counts = {"ok": 0, "FAIL": 0, "warn": 0, "skip": 0}
skipped = []


def report(kind, section, msg):
    counts[kind] += 1
    print(f"  {kind:<5} [{section}] {msg}")
    if kind == "skip":
        skipped.append(f"[{section}] {msg}")


def ok(section, msg):
    report("ok", section, msg)


def fail(section, msg):
    report("FAIL", section, msg)


def warn(section, msg):
    report("warn", section, msg)


def skip(section, msg):
    report("skip", section, msg)


def check(cond, section, msg, detail=""):
    if cond:
        ok(section, msg)
    else:
        fail(section, msg + (f": {detail}" if detail else ""))
    return cond


def run(cmd, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)


_UNITS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600,
          "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def seconds(text):
    """humantime ("30s", "1m30s"), systemd ("45s", "1min") and Go ("40s") spans."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):  # systemd: a bare number is seconds
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts or re.sub(r"[\d.\sa-z]", "", text):
        raise ValueError(f"cannot parse duration {text!r}")
    total = 0.0
    for num, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        total += float(num) * _UNITS[unit]
    return total


def rel(p):
    return str(Path(p).relative_to(ROOT)) if Path(p).is_absolute() else str(p)


def exists_or_pending(section, path, what):
    """True when `path` (repository-relative) exists; a pending rename only warns."""
    if (ROOT / path).exists():
        ok(section, f"{what}: {path} exists")
        return True
    if path in PENDING and (ROOT / PENDING[path]).exists():
        warn(section, f"{what}: {path} does not exist yet ({PENDING[path]} does); "
                      "docker build and compose fail until it is in place")
        return True
    fail(section, f"{what}: {path} does not exist")
    return False


# --------------------------------------------------------------------------- config
print("== config (cross-check source)")
cfg = {}
cfg_path = CONFIG if CONFIG.exists() else CONFIG_EXAMPLE
if not CONFIG.exists():
    warn("config", f"config/flagtally.toml missing; cross-checking against {rel(cfg_path)}")
try:
    cfg = tomllib.loads(cfg_path.read_text())
    ok("config", f"{rel(cfg_path)} parses as TOML")
except Exception as e:  # noqa: BLE001
    fail("config", f"{rel(cfg_path)}: {e}")

kafka_cfg = cfg.get("kafka", {})
output_cfg = cfg.get("output", {})
processing_cfg = cfg.get("processing", {})
input_topics = list(kafka_cfg.get("input_topics", []))
output_topics = [t for t in output_cfg.get("topics", {}).values() if isinstance(t, str)]
dead_letter = output_cfg.get("dead_letter_topic")
checkpoint_topic = processing_cfg.get("checkpoint_topic")
required_topics = input_topics + output_topics + [t for t in (dead_letter, checkpoint_topic) if t]
try:
    drain_deadline = seconds(processing_cfg.get("shutdown_deadline", "30s"))
except ValueError as e:
    fail("config", str(e))
    drain_deadline = 30.0
print(f"  info  topics the config uses: {', '.join(required_topics) or '(none)'}; "
      f"shutdown_deadline {drain_deadline:g}s")

# ------------------------------------------------------------------- .dockerignore
ignore_rules = []
if DOCKERIGNORE.exists():
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:].strip() if neg else line
        pat = pat.strip("/")
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        ignore_rules.append((neg, re.compile(rx + r"\Z")))


def dockerignored(path):
    """Docker's rule: the last matching pattern wins; a pattern matching a parent
    directory excludes everything under it."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for neg, rx in ignore_rules:
        if any(rx.match(c) for c in candidates):
            excluded = not neg
    return excluded


# ---------------------------------------------------------------------- Dockerfile
print("== Dockerfile")
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
         "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
         "HEALTHCHECK", "SHELL", "COMMENT"}
df_config_path = None
df_admin_port = None
df_has_healthcheck = False
stages = []  # dicts: name, image, instructions
if not DOCKERFILE.exists():
    fail("dockerfile", "Dockerfile missing")
else:
    parsed = DockerfileParser(path=str(DOCKERFILE))
    structure = parsed.structure
    unknown = [(i["startline"] + 1, i["instruction"]) for i in structure
               if i["instruction"] not in KNOWN]
    check(not unknown, "dockerfile", "every instruction is a known Dockerfile instruction",
          ", ".join(f"line {n}: {ins}" for n, ins in unknown))

    # ARGs declared before the first FROM may be used in FROM lines: their defaults
    # are what a plain `docker build` uses.
    global_args = {}

    def expand(text):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                      lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)), text)

    for ins in structure:
        if ins["instruction"] == "FROM":
            words = [w for w in ins["value"].split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            raw = words[0] if words else ""
            stages.append({"name": name, "raw": raw, "image": expand(raw), "ins": []})
        elif ins["instruction"] == "ARG" and not stages and "=" in ins["value"]:
            k, _, v = ins["value"].partition("=")
            global_args[k.strip()] = v.strip().strip('"')
        elif stages and ins["instruction"] != "COMMENT":
            stages[-1]["ins"].append(ins)
    check(len(stages) >= 2, "dockerfile", f"multi-stage ({len(stages)} FROM stages)",
          "need a build stage and a runtime stage")

    stage_names = [s["name"] for s in stages]
    for idx, st in enumerate(stages):
        img, raw = st["image"], st["raw"]
        if img in stage_names[:idx] or img == "scratch":
            continue  # FROM an earlier stage, or the empty image
        shown = img if img == raw else f"{raw} (default {img})"
        check("$" not in img, "dockerfile", f"stage {idx} base image {raw} has a default",
              "an ARG before the first FROM must give it one")
        last = img.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        check(("@sha256:" in img) or (tag and tag != "latest"), "dockerfile",
              f"stage {idx} base image {shown} is pinned to a tag", "no tag or :latest")

    # The stages a default build runs: the final one and what it needs, through FROM
    # and COPY --from. Any other stage must stand in for a stage that a build argument
    # selects (FROM ${ARG} AS alias), providing every path later stages copy from it.
    def from_refs(st):
        for ins in st["ins"]:
            m = re.search(r"--from=(\S+)", ins["value"]) if ins["instruction"] in ("COPY", "ADD") else None
            if m:
                yield m.group(1)

    def stage_index(ref, before):
        if ref.isdigit() and int(ref) < before:
            return int(ref)
        return next((i for i in range(before) if stage_names[i] == ref), None)

    used, todo = set(), [len(stages) - 1] if stages else []
    while todo:
        i = todo.pop()
        if i in used:
            continue
        used.add(i)
        for ref in [stages[i]["image"], *from_refs(stages[i])]:
            j = stage_index(ref, i)
            if j is not None:
                todo.append(j)

    def copied_from(alias):
        paths = set()
        for st in stages:
            for ins in st["ins"]:
                if ins["instruction"] in ("COPY", "ADD") and f"--from={alias}" in ins["value"]:
                    words = [w for w in shlex.split(ins["value"]) if not w.startswith("--")]
                    paths.update(words[:-1])
        return paths

    def provides(st, path):
        for ins in st["ins"]:
            if ins["instruction"] in ("COPY", "ADD"):
                words = [w for w in shlex.split(ins["value"]) if not w.startswith("--")]
                dest = words[-1] if words else ""
                if dest == path or (dest.endswith("/") and dest + os.path.basename(path) == path):
                    return True
            elif ins["instruction"] == "RUN" and re.search(re.escape(path) + r"(?![\w/.-])",
                                                         ins["value"]):
                return True
        return False

    selectable = [(i, st) for i, st in enumerate(stages) if "$" in st["raw"]
                  and st["name"] and st["image"] in stage_names[:i]]
    alternatives = {}  # stage index -> the build argument that selects it
    for i, st in selectable:
        arg = re.search(r"\w+", st["raw"]).group(0)
        wanted = sorted(copied_from(st["name"]))
        default = stage_index(st["image"], i)
        for j in [default] + [j for j in range(i) if j not in used]:
            if all(provides(stages[j], p) for p in wanted):
                alternatives.setdefault(j, arg)
                how = "default" if j == default else f"--build-arg {arg}={stage_names[j]}"
                ok("dockerfile", f"stage {stage_names[j]!r} ({how}) provides "
                                 f"{', '.join(wanted)} for COPY --from={st['name']}")
            elif j == default:
                fail("dockerfile", f"stage {stage_names[j]!r}, the default of {arg}, does not "
                                   f"provide {', '.join(wanted)}")
    for j in range(len(stages)):
        if j not in used:
            check(j in alternatives, "dockerfile",
                  f"stage {stage_names[j] or j} is used (selectable by a build argument)",
                  "no target builds it")

    for idx, st in enumerate(stages):
        for ins in st["ins"]:
            if ins["instruction"] not in ("COPY", "ADD"):
                continue
            m = re.search(r"--from=(\S+)", ins["value"])
            if not m:
                continue
            ref = m.group(1)
            earlier = [n for n in stage_names[:idx] if n]
            good = ref in earlier or (ref.isdigit() and int(ref) < idx)
            check(good, "dockerfile",
                  f"line {ins['startline'] + 1}: COPY --from={ref} names an earlier stage",
                  f"stages before it: {earlier}")

    if stages:
        final = stages[-1]
        fins = final["ins"]

        def last_of(kind):
            found = [i for i in fins if i["instruction"] == kind]
            return found[-1] if found else None

        user = last_of("USER")
        if check(user is not None, "dockerfile", "final stage sets USER"):
            u = user["value"].split(":", 1)[0].strip()
            check(u not in ("root", "0", ""), "dockerfile",
                  f"final stage runs as non-root user {user['value']!r}")

        def exec_form(kind):
            ins = last_of(kind)
            if ins is None:
                fail("dockerfile", f"final stage has no {kind}")
                return None
            try:
                v = json.loads(ins["value"])
                assert isinstance(v, list) and all(isinstance(x, str) for x in v)
            except (ValueError, AssertionError):
                fail("dockerfile", f"{kind} is not exec (JSON) form: signals would go to "
                                   "a shell, not flagtally")
                return None
            ok("dockerfile", f"{kind} is exec form {v}")
            return v

        entry = exec_form("ENTRYPOINT")
        cmd = exec_form("CMD")
        copies_final = []
        for ins in fins:
            if ins["instruction"] in ("COPY", "ADD"):
                words = [w for w in shlex.split(ins["value"]) if not w.startswith("--")]
                copies_final.append((ins, words[:-1], words[-1]))
        bin_dests = [d for _, _, d in copies_final if d.endswith("/flagtally")]
        if entry:
            on_path = entry[0] == "flagtally" and "/usr/local/bin/flagtally" in bin_dests
            check(on_path or entry[0] in bin_dests, "dockerfile",
                  f"ENTRYPOINT {entry[0]!r} is the copied binary", f"copied to {bin_dests}")
        if cmd and "--config" in cmd and cmd.index("--config") + 1 < len(cmd):
            df_config_path = cmd[cmd.index("--config") + 1]
            check(df_config_path in [d for _, _, d in copies_final], "dockerfile",
                  f"CMD's config {df_config_path} is copied into the image")
        elif cmd:
            fail("dockerfile", "CMD does not pass --config")

        expose = last_of("EXPOSE")
        if check(expose is not None, "dockerfile", "final stage EXPOSEs the admin port"):
            df_admin_port = expose["value"].split()[0].split("/")[0]
        env_text = " ".join(i["value"] for i in fins if i["instruction"] == "ENV")
        m = re.search(r"FLAGTALLY__ADMIN__LISTEN=\S*:(\d+)", env_text)
        if m and df_admin_port:
            check(m.group(1) == df_admin_port, "dockerfile",
                  f"FLAGTALLY__ADMIN__LISTEN port {m.group(1)} matches EXPOSE")
        hc = last_of("HEALTHCHECK")
        distroless = "distroless" in final["image"]
        if hc is None:
            (ok if distroless else warn)("dockerfile", "no HEALTHCHECK" + (
                " (distroless: no shell or HTTP client to run one)" if distroless else ""))
        else:
            df_has_healthcheck = True
            check(not distroless, "dockerfile", "HEALTHCHECK has a tool to run it",
                  "distroless images have no shell")
            m = re.search(r"/dev/tcp/[^/\s]+/(\d+)|localhost:(\d+)|127\.0\.0\.1:(\d+)",
                          hc["value"])
            port = next((g for g in (m.groups() if m else ()) if g), None)
            if port and df_admin_port:
                check(port == df_admin_port, "dockerfile",
                      f"HEALTHCHECK probes the EXPOSEd port {port}")

        builder_runs = " ".join(i["value"] for s in stages[:-1] for i in s["ins"]
                                if i["instruction"] == "RUN")
        check(re.search(r"cargo build\b[^&;]*--release", builder_runs) is not None
              and "--locked" in builder_runs, "dockerfile",
              "builder runs cargo build --release --locked")
        check("target/release/flagtally" in builder_runs, "dockerfile",
              "builder takes target/release/flagtally")

    # What the build stages copy from the context, and whether cargo has it all.
    context_sources = []  # (stage index, source path)
    for idx, st in enumerate(stages):
        for ins in st["ins"]:
            if ins["instruction"] not in ("COPY", "ADD") or "--from=" in ins["value"]:
                continue
            words = [w for w in shlex.split(ins["value"]) if not w.startswith("--")]
            for src in words[:-1]:
                if idx in used:
                    context_sources.append((idx, os.path.normpath(src)))
                else:
                    ok("context", f"COPY source {src} (stage {stage_names[idx]}, only with "
                                  f"--build-arg {alternatives.get(idx, '?')}={stage_names[idx]}) "
                                  "comes from that build's own context")
    for idx, src in context_sources:
        if exists_or_pending("context", src, f"COPY source (stage {idx})"):
            if dockerignored(src):
                fail("context", f"COPY source {src} is excluded by .dockerignore")
    for must in ("target", ".git"):
        check(dockerignored(must), "context", f".dockerignore excludes {must}/")

    builder_copied = {src for idx, src in context_sources if idx < len(stages) - 1}

    def covered(path):
        return any(path == c or path.startswith(c.rstrip("/") + "/") or c == "."
                   for c in builder_copied)

    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    needed = {"Cargo.toml", "Cargo.lock"}
    lib = manifest.get("lib", {})
    needed.add(lib.get("path", "src/lib.rs"))
    for kind, default_dir in (("bin", "src/bin"), ("bench", "benches"),
                              ("test", "tests"), ("example", "examples")):
        for t in manifest.get(kind, []):
            p = t.get("path") or (
                "src/main.rs" if kind == "bin" and t.get("name") == manifest["package"]["name"]
                else f"{default_dir}/{t['name']}.rs")
            needed.add(p)
    for rs in sorted((ROOT / "src").rglob("*.rs")):
        for m in re.finditer(r"include_(?:str|bytes)!\(\s*\"([^\"]+)\"", rs.read_text()):
            target = os.path.normpath(os.path.join(os.path.dirname(rel(rs)), m.group(1)))
            needed.add(target)
    missing = sorted(p for p in needed if not covered(p))
    check(not missing, "context",
          f"builder copies all {len(needed)} files cargo reads (targets declared in "
          "Cargo.toml, include_str!/include_bytes!)", f"not copied: {missing}")
    absent = sorted(p for p in needed if not (ROOT / p).exists())
    check(not absent, "context", "every file cargo reads exists", f"missing: {absent}")

# -------------------------------------------------------------------------- compose
print("== docker-compose.yml")
compose_cli = None
for cand in (["docker", "compose"], ["docker-compose"]):
    if shutil.which(cand[0]) and run(cand + ["version"]).returncode == 0:
        compose_cli = cand
        break
if compose_cli:
    for profile_args, label in (([], "default services"), (["--profile", "demo"], "with profile demo")):
        r = run(compose_cli + ["-f", str(COMPOSE)] + profile_args + ["config", "-q"])
        check(r.returncode == 0, "compose", f"`{' '.join(compose_cli)} config -q` ({label})",
              (r.stderr or r.stdout).strip())
else:
    docker = run(["docker", "--version"]).stdout.strip() if shutil.which("docker") else ""
    skip("compose", "`docker compose config`: no compose CLI (" + (
        f"{docker} has no compose plugin" if docker else "no docker CLI")
         + ", no docker-compose); structural checks below instead")

SERVICE_KEYS = set("""annotations attach blkio_config build cap_add cap_drop cgroup
cgroup_parent command configs container_name cpu_count cpu_percent cpu_period cpu_quota
cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset credential_spec depends_on deploy
develop device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint env_file
environment expose extends external_links extra_hosts gpus group_add healthcheck hostname
image init ipc isolation label_file labels links logging mac_address mem_limit
mem_reservation mem_swappiness memswap_limit models network_mode networks oom_kill_disable
oom_score_adj pid pids_limit platform ports post_start pre_stop privileged profiles
provider pull_policy read_only restart runtime scale secrets security_opt shm_size
stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits
use_api_socket user userns_mode uts volumes volumes_from working_dir""".split())
TOP_KEYS = {"version", "name", "services", "networks", "volumes", "secrets", "configs",
            "include", "models"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

doc = None
try:
    doc = yaml.safe_load(COMPOSE.read_text())
    check(isinstance(doc, dict) and isinstance(doc.get("services"), dict), "compose",
          "YAML parses; top level has a services mapping")
except Exception as e:  # noqa: BLE001
    fail("compose", f"YAML: {e}")

if isinstance(doc, dict) and isinstance(doc.get("services"), dict):
    services = doc["services"]
    bad_top = [k for k in doc if k not in TOP_KEYS and not str(k).startswith("x-")]
    check(not bad_top, "compose", "only Compose-spec top-level keys", str(bad_top))
    want = {"kafka", "kafka-init", "postgres", "seaweedfs", "flagtally", "gen"}
    check(want <= set(services), "compose", f"services present: {', '.join(sorted(want))}",
          f"missing {sorted(want - set(services))}")
    volumes_top = set((doc.get("volumes") or {}).keys())

    def env_of(svc):
        e = svc.get("environment") or {}
        if isinstance(e, list):
            e = dict(x.split("=", 1) if "=" in x else (x, None) for x in e)
        return {k: (None if v is None else str(v)) for k, v in e.items()}

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)

    for name, svc in services.items():
        sec = f"compose:{name}"
        if not isinstance(svc, dict):
            fail(sec, "service is not a mapping")
            continue
        bad = [k for k in svc if k not in SERVICE_KEYS and not str(k).startswith("x-")]
        check(not bad, sec, "only Compose-spec service keys", str(bad))
        image = svc.get("image")
        if not image and not svc.get("build"):
            fail(sec, "has neither image nor build")
        if image:
            last = str(image).rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            check("@sha256:" in image or (tag and tag != "latest"), sec,
                  f"image {image} pinned to a tag", "no tag or :latest")
        if "restart" in svc:
            r = svc["restart"]
            check(isinstance(r, str) and re.fullmatch(
                r"no|always|unless-stopped|on-failure(:\d+)?", r) is not None, sec,
                f"restart policy {r!r} is valid", "quote \"no\" (YAML reads bare no as false)")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition", "service_started")
            if not check(dep in services, sec, f"depends_on {dep} exists"):
                continue
            check(cond in CONDITIONS, sec, f"depends_on {dep}: condition {cond} is valid")
            target = services[dep]
            if cond == "service_healthy":
                has_hc = bool(target.get("healthcheck")) or (
                    bool(target.get("build")) and df_has_healthcheck)
                check(has_hc, sec, f"depends_on {dep} healthy: {dep} has a healthcheck")
            if not svc.get("profiles") and target.get("profiles"):
                fail(sec, f"depends on {dep}, which only runs under profiles "
                          f"{target['profiles']}")
        for p in svc.get("ports") or []:
            check(isinstance(p, (str, dict)), sec, f"port {p!r} is a string",
                  "quote it: YAML 1.1 reads unquoted a:b as a base-60 number")
        for v in svc.get("volumes") or []:
            if isinstance(v, str):
                src = v.split(":", 1)[0]
                if src.startswith((".", "/", "~")):
                    if src.startswith("./"):
                        exists_or_pending(sec, os.path.normpath(src), "bind-mount source")
                else:
                    check(src in volumes_top, sec, f"named volume {src} is declared")
        script_values = [svc.get(k) for k in ("command", "entrypoint")] + [
            (svc.get("healthcheck") or {}).get("test")]
        dollars = [s for v in script_values for s in strings(v)
                   if "$" in s.replace("$$", "")]
        check(not dollars, sec, "no unescaped $ in command/entrypoint/healthcheck",
              "compose interpolates $X from the host; write $$X for the container shell")
        hc = svc.get("healthcheck")
        if hc and "test" in hc:
            t = hc["test"]
            check(isinstance(t, str) or (isinstance(t, list) and t and t[0] in
                  ("CMD", "CMD-SHELL", "NONE")), sec, "healthcheck test form is valid")

    # kafka: the version the tests run (scripts/infra.sh KAFKA_VERSION).
    infra = (ROOT / "scripts" / "infra.sh").read_text()
    tested = re.search(r"^KAFKA_VERSION=(\S+)", infra, re.M).group(1)
    for svc in ("kafka", "kafka-init"):
        check(services.get(svc, {}).get("image") == f"apache/kafka:{tested}", f"compose:{svc}",
              f"image apache/kafka:{tested}, the version the tests run")
    # kafka: one node, broker + controller, an advertised listener for kafka:9092.
    kafka = services.get("kafka", {})
    kenv = env_of(kafka)
    check(set((kenv.get("KAFKA_PROCESS_ROLES") or "").split(",")) == {"broker", "controller"},
          "compose:kafka", "KRaft combined broker+controller")
    advertised = kenv.get("KAFKA_ADVERTISED_LISTENERS") or ""
    check("kafka:9092" in advertised and "localhost:29092" in advertised, "compose:kafka",
          "advertises kafka:9092 (containers) and localhost:29092 (host)")
    check(any(str(p).startswith("127.0.0.1:29092:") for p in kafka.get("ports") or []),
          "compose:kafka", "publishes 29092 for the host listener, on 127.0.0.1 only")
    for svc_name, svc in services.items():
        for port in svc.get("ports") or []:
            check(str(port).startswith("127.0.0.1:"), f"compose:{svc_name}",
                  f"publishes {port} on 127.0.0.1 only")
    hc_test = " ".join(strings((kafka.get("healthcheck") or {}).get("test")))
    check("kafka-topics.sh" in hc_test and "--list" in hc_test, "compose:kafka",
          "healthcheck lists topics with kafka-topics.sh")

    # kafka-init creates every topic the config names; checkpoints compacted.
    init = services.get("kafka-init", {})
    script = "\n".join(strings([init.get("entrypoint"), init.get("command")]))
    created = set(re.findall(r"--topic\s+([A-Za-z0-9._-]+)", script))
    for loop in re.findall(r"for\s+\w+\s+in\s+([^;\n]+);", script):
        created.update(loop.split())
    check(created, "compose:kafka-init", f"creates topics: {', '.join(sorted(created))}")
    check("--if-not-exists" in script, "compose:kafka-init", "uses --if-not-exists (re-runnable)")
    missing_topics = [t for t in required_topics if t not in created]
    check(not missing_topics, "compose:kafka-init",
          f"creates every topic {rel(cfg_path)} uses", f"missing {missing_topics}")
    if checkpoint_topic:
        line = next((l for l in script.splitlines() if checkpoint_topic in l), "")
        check("cleanup.policy=compact" in line, "compose:kafka-init",
              f"{checkpoint_topic} is created compacted")
    for t in input_topics:
        line = next((l for l in script.splitlines() if f"--topic {t}" in l), "")
        m = re.search(r"--partitions\s+(\d+)", line)
        check(m is not None and int(m.group(1)) >= 2, "compose:kafka-init",
              f"input topic {t} has several partitions ({m.group(1) if m else '?'})")

    # flagtally: built here, config mounted, env, admin port, drain grace period.
    ft = services.get("flagtally", {})
    sec = "compose:flagtally"
    build = ft.get("build")
    ctx = build if isinstance(build, str) else (build or {}).get("context")
    dfile = "Dockerfile" if isinstance(build, str) else (build or {}).get("dockerfile", "Dockerfile")
    check(ctx is not None and (ROOT / ctx / dfile).exists(), sec,
          f"builds from {ctx}/{dfile}")
    mounts = [v for v in ft.get("volumes") or [] if isinstance(v, str)]
    want_target = df_config_path or "/etc/flagtally/flagtally.toml"
    check(f"./config/flagtally.toml:{want_target}:ro" in mounts, sec,
          f"mounts ./config/flagtally.toml read-only at {want_target}")
    fenv = env_of(ft)
    brokers = fenv.get("FLAGTALLY__KAFKA__BROKERS") or ""
    check(brokers and all(b in advertised for b in brokers.split(",")), sec,
          f"FLAGTALLY__KAFKA__BROKERS={brokers} is an advertised kafka listener")
    listen = fenv.get("FLAGTALLY__ADMIN__LISTEN") or ""
    check(listen.startswith("0.0.0.0:"), sec,
          f"FLAGTALLY__ADMIN__LISTEN={listen} listens on all interfaces")
    admin_port = listen.rsplit(":", 1)[-1]
    check(any(str(p).endswith(f":{admin_port}") for p in ft.get("ports") or []), sec,
          f"publishes the admin port {admin_port}")
    if df_admin_port:
        check(admin_port == df_admin_port, sec, "admin port matches the Dockerfile's EXPOSE")
    check(fenv.get("RUST_LOG") is not None, sec, "sets RUST_LOG")
    try:
        grace = seconds(ft.get("stop_grace_period", "10s"))
        check(grace > drain_deadline, sec,
              f"stop_grace_period {grace:g}s > shutdown_deadline {drain_deadline:g}s")
    except ValueError as e:
        fail(sec, str(e))
    deps = ft.get("depends_on") or {}
    check(isinstance(deps, dict)
          and (deps.get("kafka") or {}).get("condition") == "service_healthy"
          and (deps.get("kafka-init") or {}).get("condition") == "service_completed_successfully",
          sec, "waits for kafka healthy and kafka-init completed")
    check(ft.get("restart") == "unless-stopped", sec, "restart: unless-stopped")

    gen = services.get("gen", {})
    sec = "compose:gen"
    check("demo" in (gen.get("profiles") or []), sec, "only under profile demo")
    gcmd = gen.get("command") or []
    gcmd = shlex.split(gcmd) if isinstance(gcmd, str) else gcmd
    if "--topic" in gcmd:
        check(gcmd[gcmd.index("--topic") + 1] in input_topics, sec,
              "writes to the configured input topic")
    if "--brokers" in gcmd:
        check(gcmd[gcmd.index("--brokers") + 1] in advertised, sec,
              "--brokers is an advertised kafka listener")
    check(gen.get("image") == ft.get("image"), sec, "uses the flagtally image")

# ---------------------------------------------------------------------- systemd unit
print("== config/flagtally.service")


def parse_unit(text):
    sections, cur = {}, None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], {})
            continue
        if cur is None or "=" not in line:
            raise ValueError(f"line not in a section or without '=': {line!r}")
        k, v = line.split("=", 1)
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


sa = shutil.which("systemd-analyze")
unit_ok = UNIT.exists()
check(unit_ok, "unit", "config/flagtally.service exists")
if unit_ok and sa:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe-flagtally-check.service"
        probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
        r = run([sa, "verify", "--man=no", str(probe)])
        if r.returncode != 0 or r.stderr.strip() or r.stdout.strip():
            skip("unit", "systemd-analyze verify does not work here (a trivial unit fails: "
                         f"{(r.stderr or r.stdout).strip()[:200]}); structural checks only")
        else:
            # The binary is not installed here: verify a copy whose ExecStart points at
            # a stub, so every other setting is still checked.
            stub = Path(tmp) / "flagtally"
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
            copy = Path(tmp) / "flagtally.service"
            # With the credentials drop-in, whose [Service] lines a drop-in adds.
            copy.write_text(UNIT.read_text().replace("/usr/local/bin/flagtally", str(stub))
                            + "\n" + DROPIN.read_text())
            r = run([sa, "verify", "--man=no", str(copy)])
            out = (r.stdout + r.stderr).strip()
            mine = [l for l in out.splitlines() if "flagtally" in l]
            other = [l for l in out.splitlines() if "flagtally" not in l]
            check(r.returncode == 0 and not mine, "unit",
                  "systemd-analyze verify: no errors or warnings "
                  "(ExecStart binary stubbed)", "; ".join(mine) or out)
            for l in other:
                warn("unit", f"systemd-analyze (not about this unit): {l}")
            helptext = run([sa, "security", "--help"]).stdout
            if "--offline" in helptext and "--threshold" in helptext:
                # Exposure 0.0 (locked down) .. 10.0 (unprotected); --threshold is in
                # tenths. Fail if the hardening regresses past 2.5 ("OK" ends at ~4.9).
                r = run([sa, "security", "--offline=yes", "--threshold=25", "--no-pager",
                         str(copy)])
                level = next((l.split(":", 1)[1].strip() for l in r.stdout.splitlines()
                              if "Overall exposure level" in l), "?")
                check(r.returncode == 0, "unit",
                      f"systemd-analyze security --offline: exposure {level} (<= 2.5)",
                      (r.stderr or "").strip()[:300])
            else:
                skip("unit", "systemd-analyze security --offline/--threshold unsupported "
                             "(systemd < 250)")
elif unit_ok:
    skip("unit", "systemd-analyze not installed; structural checks only")

if unit_ok:
    try:
        unit = parse_unit(UNIT.read_text())
        ok("unit", "parses as a unit file")
    except ValueError as e:
        fail("unit", str(e))
        unit = {}
    check({"Unit", "Service", "Install"} <= set(unit), "unit",
          "has [Unit], [Service] and [Install]", f"has {sorted(unit)}")
    try:
        creds = parse_unit(DROPIN.read_text()).get("Service", {}).get("LoadCredential", [])
    except (OSError, ValueError) as e:
        creds = []
        fail("unit", f"config/flagtally-credentials.conf: {e}")
    check(bool(creds) and all(":" in c and c.split(":", 1)[1].startswith("/") for c in creds),
          "unit", "the credentials drop-in loads each credential by ID from an absolute path",
          str(creds))
    svc = unit.get("Service", {})

    def one(key):
        v = svc.get(key)
        return v[-1] if v else None

    for key, want in (("Type", "notify"), ("NotifyAccess", "main"), ("DynamicUser", "yes"),
                      ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                      ("PrivateDevices", "yes"), ("KillSignal", "SIGTERM"),
                      ("Restart", "on-failure"), ("StateDirectory", "flagtally"),
                      ("ConfigurationDirectory", "flagtally"),
                      ("MemoryDenyWriteExecute", "yes"),
                      ("SystemCallArchitectures", "native")):
        check(one(key) == want, "unit", f"{key}={want}", f"found {one(key)!r}")
    check(svc.get("CapabilityBoundingSet") == [""], "unit",
          "CapabilityBoundingSet= (empty: no capabilities)", f"found {svc.get('CapabilityBoundingSet')}")
    check("AF_NETLINK" not in (one("RestrictAddressFamilies") or "AF_NETLINK")
          and "AF_INET" in (one("RestrictAddressFamilies") or ""), "unit",
          "RestrictAddressFamilies limits sockets to inet and unix")
    filters = svc.get("SystemCallFilter", [])
    check("@system-service" in filters and any(f.startswith("~") for f in filters), "unit",
          "SystemCallFilter: @system-service minus a deny list", str(filters))
    for key in ("WatchdogSec", "TimeoutStopSec"):
        try:
            val = seconds(one(key) or "")
            check(val > 0, "unit", f"{key}={one(key)}")
        except ValueError:
            fail("unit", f"{key} missing or unparsable ({one(key)!r})")
    try:
        stop = seconds(one("TimeoutStopSec") or "")
        check(stop > drain_deadline, "unit",
              f"TimeoutStopSec {stop:g}s > shutdown_deadline {drain_deadline:g}s")
    except ValueError:
        pass
    reload_cmd = one("ExecReload") or ""
    check("-HUP" in reload_cmd and "$MAINPID" in reload_cmd, "unit",
          "ExecReload sends SIGHUP to $MAINPID")
    exec_start = shlex.split(one("ExecStart") or "")
    check(exec_start[:2] == ["/usr/local/bin/flagtally", "run"], "unit",
          "ExecStart runs /usr/local/bin/flagtally run", str(exec_start))
    if "--config" in exec_start:
        cpath = exec_start[exec_start.index("--config") + 1]
        check(os.path.dirname(cpath) == "/etc/" + (one("ConfigurationDirectory") or ""),
              "unit", f"--config {cpath} lies in ConfigurationDirectory")
        if df_config_path:
            check(cpath == df_config_path, "unit", "same config path as the image")
    else:
        fail("unit", "ExecStart has no --config")
    check("multi-user.target" in unit.get("Install", {}).get("WantedBy", []), "unit",
          "WantedBy=multi-user.target")

# ------------------------------------------------------------------------- summary
print()
print(f"check-packaging: {counts['ok']} passed, {counts['FAIL']} failed, "
      f"{counts['skip']} skipped")
if counts["warn"]:
    print(f"  ({counts['warn']} warnings above)")
for s in skipped:
    print(f"  skipped {s}")
sys.exit(1 if counts["FAIL"] else 0)
PY

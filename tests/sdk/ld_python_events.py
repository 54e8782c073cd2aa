"""Captures the event payloads that LaunchDarkly's real Python server SDK posts.

The SDK runs fully offline: flags come from a file data source (a flags JSON written to a
temporary directory), and every LaunchDarkly URI points at a tiny HTTP server on
127.0.0.1 that records each POST (202) and refuses anything else. A seeded pseudo-random
sequence of evaluations over tracked, untracked, rule/fallthrough-tracked, prerequisite,
off and unknown flags, with user, org and multi-kind contexts, plus a few identify and
track calls, is flushed every --flush-every evaluations. The Rust tests feed the captured
/bulk bodies to flagtally and check it counts every evaluation exactly once (summaries,
not also the feature events). tests/sdk/ld_node_events.mjs does the same with the Node
SDK, on the same flags and the same sequence.

usage: ld_python_events.py --out FILE [--evaluations N] [--seed S] [--flush-every K]
                          [--forward URL]
  (run with the venv python that `bash scripts/infra.sh sdks` prints)
With --forward, the server passes every POST on to URL (flagtally's collector: same path,
headers and body) and answers the SDK with the collector's status; it keeps a body only
once the collector accepted it (202), so FILE holds what reached Kafka.
Writes one line per /bulk POST body (verbatim) to FILE, diagnostic bodies to
FILE.diagnostic, and prints one JSON object of counts; it checks the summary counters
and the feature, identify and custom events against what the sequence implies and exits
non-zero on any mismatch or failure (every wait is bounded).
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.integrations import Files
from ldclient.version import VERSION

TIMEOUT_S = 60


def fail(msg):
    print(f"ld_python_events: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


# ---- flags (identical in ld_node_events.mjs) -------------------------------------------
def flag(key, version, variations, fallthrough, off_variation=None, **extra):
    f = {"key": key, "version": version, "on": True, "variations": variations,
         "fallthrough": fallthrough, "targets": [], "rules": [], "prerequisites": [],
         "trackEvents": False, "trackEventsFallthrough": False, "salt": f"salt-{key}"}
    if off_variation is not None:
        f["offVariation"] = off_variation
    f.update(extra)
    return f


def gold_rule(rule_id, variation, track):
    return {"id": rule_id, "variation": variation, "trackEvents": track,
            "clauses": [{"contextKind": "user", "attribute": "plan", "op": "in",
                         "values": ["gold"], "negate": False}]}


FLAGS = {f["key"]: f for f in [
    # Tracked: every evaluation (also as a prerequisite) gives a feature event.
    flag("tracked-bool", 7, [True, False], {"variation": 0}, 1, trackEvents=True),
    # Untracked boolean with individual targets.
    flag("plain-bool", 3, [True, False], {"variation": 1}, 1,
         targets=[{"values": ["user-1", "user-3"], "variation": 0}]),
    # Multi-variation string: an org-kind rule, a percentage rollout as fallthrough.
    flag("colour", 12, ["red", "green", "blue", "yellow"],
         {"rollout": {"variations": [{"variation": 0, "weight": 40000},
                                     {"variation": 1, "weight": 30000},
                                     {"variation": 2, "weight": 30000}]}}, 0,
         rules=[{"id": "org-rule", "variation": 3, "trackEvents": False,
                 "clauses": [{"contextKind": "org", "attribute": "key", "op": "in",
                              "values": ["org-0", "org-2"], "negate": False}]}]),
    # Tracked only when its rule matches (users on the gold plan).
    flag("rule-tracked", 5, ["a", "b", "c"], {"variation": 0}, 0,
         rules=[gold_rule("gold-tracked", 2, True)]),
    # Tracked only on fallthrough (its untracked rule matches gold users).
    flag("fallthrough-tracked", 9, [True, False], {"variation": 1}, 1,
         rules=[gold_rule("gold-untracked", 0, False)], trackEventsFallthrough=True),
    # Two prerequisites, both always evaluated: tracked-bool always passes (fallthrough 0).
    flag("parent", 4, ["enabled", "disabled"], {"variation": 0}, 1,
         prerequisites=[{"key": "tracked-bool", "variation": 0},
                        {"key": "prereq-base", "variation": 0}]),
    flag("prereq-base", 2, [True, False], {"variation": 0}, 1,
         targets=[{"values": ["user-2", "user-5"], "variation": 1}]),
    flag("versioned", 42, ["v-one", "v-two"], {"variation": 1}, 0),
    dict(flag("off-flag", 6, ["on-value", "off-value"], {"variation": 0}, 1), on=False),
    # Off without an offVariation: the default value, a counter without "variation".
    dict(flag("off-default", 1, ["x", "y"], {"variation": 0}), on=False),
]}
PREREQS = {"parent": ["tracked-bool", "prereq-base"]}
# Evaluated in the sequence, with their defaults; "missing-flag" is not defined.
EVALUATED = [("tracked-bool", False), ("plain-bool", False), ("colour", "none"),
             ("rule-tracked", "none"), ("fallthrough-tracked", False), ("parent", "none"),
             ("prereq-base", False), ("versioned", "none"), ("off-flag", "none"),
             ("off-default", "none"), ("missing-flag", "none")]


# ---- contexts (identical specs in ld_node_events.mjs) ----------------------------------
def user(i):
    b = Context.builder(f"user-{i}").kind("user").name(f"User {i}").set("country", "nz" if i % 2 else "de")
    if i % 3 == 0:
        b.set("plan", "gold")
    if i == 11:
        b.anonymous(True)
    return b.build()


def org(i):
    b = Context.builder(f"org-{i}").kind("org").name(f"Org {i}")
    if i == 1:
        b.set("plan", "gold")  # an org attribute: the user-kind gold rules ignore it
    return b.build()


# (context, has a user on the gold plan)
CONTEXTS = ([(user(i), i % 3 == 0) for i in range(12)]
            + [(org(i), False) for i in range(4)]
            + [(Context.create_multi(user(j), org(j % 4)), j % 3 == 0) for j in range(4)])


class XorShift32:
    """The same 32-bit xorshift as ld_node_events.mjs, so both SDKs see one sequence."""

    def __init__(self, seed):
        self.x = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x


# ---- the capturing server --------------------------------------------------------------
class Capture:
    def __init__(self):
        self.lock = threading.Condition()
        self.posts = []  # (path, headers with lower-case names, body bytes)
        self.bulk = 0
        self.unexpected = []
        self.forward = None  # the collector's base URL, with --forward
        self.forwarded = {}  # its answers, by status

    def wait_bulk(self, n):
        with self.lock:
            if not self.lock.wait_for(lambda: self.bulk >= n, timeout=TIMEOUT_S / 2):
                fail(f"payload {n} not received within {TIMEOUT_S / 2:.0f} s of its flush")


CAPTURE = Capture()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _answer(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _forward(self, raw):
        """Passes the POST on to the collector; its status (0: no answer)."""
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        req = urllib.request.Request(
            CAPTURE.forward + self.path, data=raw, method="POST",
            headers={k: v for k, v in self.headers.items() if k.lower() not in skip})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def do_POST(self):
        raw = self._read_body()
        status = 202
        if CAPTURE.forward:
            status = self._forward(raw)
            with CAPTURE.lock:
                CAPTURE.forwarded[str(status)] = CAPTURE.forwarded.get(str(status), 0) + 1
        body = raw
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with CAPTURE.lock:
            if status == 202:
                CAPTURE.posts.append((self.path, headers, body))
            CAPTURE.bulk += self.path == "/bulk"
            CAPTURE.lock.notify_all()
        self._answer(status or 503)

    def do_GET(self):
        with CAPTURE.lock:
            CAPTURE.unexpected.append(f"GET {self.path}")
        self._answer(404)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--evaluations", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--flush-every", type=int, default=1000)
    ap.add_argument("--forward")
    args = ap.parse_args()
    CAPTURE.forward = args.forward

    # Bounded: whatever hangs, the script stops.
    watchdog = threading.Timer(TIMEOUT_S, fail, [f"not done within {TIMEOUT_S} s"])
    watchdog.daemon = True
    watchdog.start()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    tmp = tempfile.mkdtemp(prefix="ld-python-flags-")
    flags_path = os.path.join(tmp, "flags.json")
    with open(flags_path, "w") as f:
        json.dump({"flags": FLAGS}, f)

    config = Config(
        "sdk-flagtally-test",
        update_processor_class=Files.new_data_source(paths=[flags_path]),
        send_events=True,
        events_uri=base,
        base_uri=base,
        stream_uri=base,
        events_max_pending=100000,
        flush_interval=300,  # flushes are the script's (and close's)
        diagnostic_opt_out=False,
    )
    client = LDClient(config=config, start_wait=10)
    if not client.is_initialized():
        fail("the SDK did not load the flags file")

    rng = XorShift32(args.seed)
    direct = {key: 0 for key, _ in EVALUATED}
    tracked = identifies = customs = 0
    for i in range(args.evaluations):
        key, default = EVALUATED[rng.next() % len(EVALUATED)]
        context, gold = CONTEXTS[rng.next() % len(CONTEXTS)]
        client.variation(key, context, default)
        direct[key] += 1
        # The feature events the flags' tracking settings imply (all flags but the off
        # ones are on; parent's prerequisites always run, tracked-bool among them).
        tracked += {"tracked-bool": 1, "parent": 1, "rule-tracked": int(gold),
                    "fallthrough-tracked": int(not gold)}.get(key, 0)
        if i % 400 == 200:
            client.identify(context)
            identifies += 1
        if i % 300 == 150:
            client.track("checkout", context, data={"i": i}, metric_value=i / 10)
            customs += 1
        if (i + 1) % args.flush_every == 0:
            # flush() only wakes the event thread: waiting for its post keeps the payloads
            # in order and one per --flush-every evaluations (as the Node SDK's awaited flush).
            client.flush()
            CAPTURE.wait_bulk((i + 1) // args.flush_every)
    client.close()  # flushes, and waits for the flush workers' posts
    shutil.rmtree(tmp, ignore_errors=True)

    with CAPTURE.lock:
        posts = list(CAPTURE.posts)
        unexpected = list(CAPTURE.unexpected)
    server.shutdown()
    if unexpected:
        fail(f"the SDK made requests other than POSTs: {unexpected}")

    expected_counts = dict(direct)
    for parent, prereqs in PREREQS.items():
        for p in prereqs:
            expected_counts[p] += direct[parent]
    stats = summarize(posts, args.out)
    stats.update(evaluations=args.evaluations,
                 prerequisite_evaluations=sum(expected_counts.values()) - args.evaluations,
                 tracked_evaluations=tracked, sdk=f"python-server-sdk {VERSION}")
    check(stats, expected_counts, tracked, identifies, customs)
    stats.pop("_counts_by_flag")
    if args.forward:
        stats["forwarded"] = CAPTURE.forwarded
    print(json.dumps(stats))


def summarize(posts, out):
    """Writes the bodies out and counts what they hold."""
    kinds = {"feature": 0, "debug": 0, "index": 0, "custom": 0, "identify": 0}
    counts = {}
    schemas, payload_ids = set(), set()
    bulk = 0
    with open(out, "wb") as bulk_out, open(out + ".diagnostic", "wb") as diag_out:
        for path, headers, body in posts:
            if b"\n" in body or b"\r" in body:
                fail(f"a POST body to {path} contains a newline: cannot write it as one line")
            if "diagnostic" in path:
                diag_out.write(body + b"\n")
                continue
            if path != "/bulk":
                fail(f"unexpected POST path {path}")
            bulk += 1
            bulk_out.write(body + b"\n")
            schemas.add(headers.get("x-launchdarkly-event-schema"))
            payload_ids.add(headers.get("x-launchdarkly-payload-id"))
            for event in json.loads(body):
                kind = event["kind"]
                if kind == "summary":
                    for key, feature in event["features"].items():
                        for counter in feature["counters"]:
                            counts[key] = counts.get(key, 0) + counter["count"]
                else:
                    kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "payloads": bulk,
        "summary_count_total": sum(counts.values()),
        "feature_events": kinds.pop("feature"),
        "debug_events": kinds.pop("debug"),
        "index_events": kinds.pop("index"),
        "custom_events": kinds.pop("custom"),
        "identify_events": kinds.pop("identify"),
        "other_events": kinds,
        "event_schema": ",".join(sorted(str(s) for s in schemas)),
        "payload_ids_distinct": len(payload_ids - {None}),
        "_counts_by_flag": counts,
    }


def check(stats, expected_counts, tracked, identifies, customs):
    problems = []
    expected_counts = {k: v for k, v in expected_counts.items() if v}
    if stats["_counts_by_flag"] != expected_counts:
        problems.append(f"summary counts by flag {stats['_counts_by_flag']} != expected {expected_counts}")
    for name, want in (("feature_events", tracked), ("identify_events", identifies),
                       ("custom_events", customs), ("payload_ids_distinct", stats["payloads"])):
        if stats[name] != want:
            problems.append(f"{name} = {stats[name]}, expected {want}")
    if stats["payloads"] == 0:
        problems.append("no /bulk payload received")
    if problems:
        fail("; ".join(problems))


if __name__ == "__main__":
    main()

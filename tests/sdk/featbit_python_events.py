"""Captures the insight payloads that FeatBit's real Python server SDK posts.

The Python twin of tests/sdk/featbit_node_events.mjs, on the same flags, users and seeded
sequence. The SDK (fb-python-sdk) runs offline (no streaming connection; flags come from
initialize_from_external_json) with its DefaultEventProcessor put back in
(event_processor_imp: offline mode would otherwise drop every event), and its event URL
is a tiny HTTP server on 127.0.0.1 that takes each POST to /api/public/insight/track and
refuses anything else. The sequence's evaluations and a few track_metric calls are sent
by the SDK's own timed flushes and a last one at stop(). The Rust tests feed the captured
bodies to flagtally and check it counts every evaluation exactly once.

usage: featbit_python_events.py --out FILE --sdk-key KEY [--evaluations N] [--seed S]
                                [--forward URL] [--status CODE]
  (run with the test venv's python, fb-python-sdk installed in it)
With --forward, the server passes every POST on to URL (flagtally's collector: same path,
headers and body) and answers the SDK with the collector's status; it keeps a body only
once the collector accepted it (--status, 202 by default), so FILE holds what reached
Kafka. Without --forward it answers --status itself and keeps every body. Writes one line
per kept body (verbatim JSON) to FILE and prints one JSON object of counts:
  {"sdk", "evaluations", "per_flag", "per_flag_variation" ("flag/variationId"),
   "metrics", "posts" (POSTs the SDK made), "stored" (lines in FILE),
   "forwarded" ({collector status: POSTs}, empty without --forward)}
per_flag* and metrics are what this script evaluated and tracked; it checks that the kept
bodies hold exactly those variation and metric entries (the SDK sent every one) and exits
non-zero on any mismatch or failure (every wait is bounded).

What fb-python-sdk 1.2.1 sends (seen in the captured bodies and headers):
- POST {event_url}/api/public/insight/track, at most 50 events per POST, not compressed,
  from up to 5 flush worker threads (POSTs of different flushes may overlap/reorder).
- Headers (urllib3): Authorization: <the env secret, raw, no scheme>,
  User-Agent: fb-python-server-sdk (no version), Content-Type: application/json,
  Content-Length, Accept-Encoding: identity, Host. No X-User-Agent.
- Body: a JSON array with one entry per event, never merged per user, written by
  json.dumps with its default ", " and ": " separators (a real body, trimmed to two entries):
    [{"user": {"keyId": "user-13", "name": "User 13", "customizedProperties": [{"name": "country", "value": "nz"}]},
      "variations": [{"featureFlagKey": "beta-access", "timestamp": 1796480882498,
                      "variation": {"id": "ba-off", "value": "off", "reason": "fall through all rules"}}]},
     {"user": {"keyId": "user-13", "name": "User 13", "customizedProperties": [{"name": "country", "value": "nz"}]},
      "metrics": [{"eventName": "checkout", "numericValue": 15.0, "route": "index/metric",
                   "type": "CustomEvent", "appType": "pythonserverside", "timestamp": 1796480882498}]}]
  Timestamps are Unix milliseconds (checked here). `variation` carries the variation id,
  its value (the stored string, "true"/"false" for boolean flags) and the evaluation
  reason (target match, rule match, fall through all rules, flag off); there is no
  `sendToExperiment` (the Node SDK sends one). numericValue is what was passed (a float
  here: 15.0 where Node sends 15). Customized property values are sent as strings
  whatever their type. An unknown flag sends nothing; a disabled flag sends its
  disabledVariationId; a flag with "insightsEnabled": false sends nothing. No dedupe:
  every evaluation is one entry.
- Answers: ONLY 200 is success. Any other status (202 included) or a network error is
  retried events_max_retries times (default 1, at most 3) after events_retry_interval
  (default 0.1 s), then the batch is dropped silently. So a collector answering 202
  receives every body twice: the check below then fails and says so (answer 200, e.g.
  --status 200 without --forward, to see a clean run).
"""
import argparse
import http.client
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version as dist_version
from urllib.parse import urlsplit

TIMEOUT_S = 60
INSIGHT_PATH = "/api/public/insight/track"


def fail(msg):
    print(f"featbit_python_events: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


try:
    from fbclient.client import FBClient
    from fbclient.config import Config
    from fbclient.event_processor import DefaultEventProcessor
except ImportError as e:
    fail(f"cannot import fbclient (pip install fb-python-sdk==1.2.1 into the test venv and run its python): {e}")


# ---- flags (identical in featbit_node_events.mjs) --------------------------------------
# FeatBit's data-sync shape. Variation values are strings, also for boolean flags.
UPDATED_AT = "2024-05-01T12:00:00.000Z"


def rollout(pairs):
    """[(variationId, from, to), …] → a rollout split."""
    return [{"id": vid, "rollout": [lo, hi], "exptRollout": 1} for vid, lo, hi in pairs]


def flag(key, variation_type, variations, fallthrough, **extra):
    f = {
        "id": f"flag-{key}",
        "envId": "flagtally-test-env",
        "name": key,
        "key": key,
        "variationType": variation_type,
        "variations": [{"id": vid, "value": value} for vid, value in variations],
        "targetUsers": [],
        "rules": [],
        "isEnabled": True,
        "disabledVariationId": variations[-1][0],
        "fallthrough": {"dispatchKey": None, "includedInExpt": True, "variations": fallthrough},
        "exptIncludeAllTargets": True,
        "tags": [],
        "isArchived": False,
        "creatorId": "flagtally",
        "updatorId": "flagtally",
        "createdAt": UPDATED_AT,
        "updatedAt": UPDATED_AT,
    }
    f.update(extra)
    return f


def rule(rule_id, prop, op, value, variation_id):
    return {"id": rule_id, "name": rule_id, "dispatchKey": None, "includedInExpt": False,
            "conditions": [{"property": prop, "op": op, "value": value}],
            "variations": rollout([(variation_id, 0, 1)])}


FLAGS = [
    # Boolean, a 50/50 percentage rollout on the user key.
    flag("dark-mode", "boolean", [("dm-true", "true"), ("dm-false", "false")],
         rollout([("dm-true", 0, 0.5), ("dm-false", 0.5, 1)])),
    # Multi-variation string: users in "nz" get purple by a rule, the others a 30/26/44 split.
    flag("theme", "string", [("th-red", "red"), ("th-green", "green"), ("th-blue", "blue"), ("th-purple", "purple")],
         rollout([("th-red", 0, 0.3), ("th-green", 0.3, 0.56), ("th-blue", 0.56, 1)]),
         rules=[rule("nz-purple", "country", "Equal", "nz", "th-purple")]),
    # Individual user targeting, then a rule on the gold plan, else off.
    flag("beta-access", "string", [("ba-on", "on"), ("ba-gold", "gold"), ("ba-off", "off")],
         rollout([("ba-off", 0, 1)]),
         targetUsers=[{"keyIds": ["user-1", "user-3"], "variationId": "ba-on"},
                      {"keyIds": [], "variationId": "ba-gold"}, {"keyIds": [], "variationId": "ba-off"}],
         rules=[rule("gold-plan", "plan", "IsOneOf", '["gold"]', "ba-gold")]),
    # Disabled: serves its disabledVariationId.
    flag("new-checkout", "boolean", [("nc-true", "true"), ("nc-false", "false")],
         rollout([("nc-true", 0, 1)]), isEnabled=False, disabledVariationId="nc-false"),
]
BOOTSTRAP = {"messageType": "data-sync", "data": {"eventType": "full", "featureFlags": FLAGS, "segments": []}}


# ---- users (identical in featbit_node_events.mjs) --------------------------------------
def user(i):
    # The Python SDK takes attributes flat: key, name, then customized properties.
    u = {"key": f"user-{i}", "name": f"User {i}", "country": "nz" if i % 2 else "de"}
    if i % 3 == 0:
        u["plan"] = "gold"
    return u


USERS = [user(i) for i in range(20)]


class XorShift32:
    """The same 32-bit xorshift as featbit_node_events.mjs (and the LaunchDarkly scripts)."""

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
        self.lock = threading.Lock()
        self.posts = []  # (headers with lower-case names, body bytes, status)
        self.unexpected = []
        self.forwarded = {}
        self.forward_to = None  # (host, port) of --forward
        self.ok_status = 202


CAPTURE = Capture()


def forward(path, headers, body):
    """Passes one POST on to the collector; returns its status (0: no answer)."""
    host, port = CAPTURE.forward_to
    out = {k: v for k, v in headers.items() if k not in ("host", "content-length", "transfer-encoding", "connection")}
    out["Content-Length"] = str(len(body))
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=out)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


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

    def do_POST(self):
        body = self._read_body()
        if self.path != INSIGHT_PATH:
            self._refuse()
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = CAPTURE.ok_status
        if CAPTURE.forward_to:
            status = forward(self.path, headers, body)
        with CAPTURE.lock:
            if CAPTURE.forward_to:
                CAPTURE.forwarded[str(status)] = CAPTURE.forwarded.get(str(status), 0) + 1
            CAPTURE.posts.append((headers, body, status))
        self._answer(status or 503)

    def _refuse(self):
        with CAPTURE.lock:
            CAPTURE.unexpected.append(f"{self.command} {self.path}")
        self._answer(404)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse


def timed_out():
    with CAPTURE.lock:
        n, statuses = len(CAPTURE.posts), dict(CAPTURE.forwarded)
    fail(f"not done within {TIMEOUT_S} s ({n} POSTs so far"
         + (f", collector statuses {json.dumps(statuses)})" if statuses else ")"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sdk-key", required=True)
    ap.add_argument("--evaluations", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--forward")
    ap.add_argument("--status", type=int, default=202)
    args = ap.parse_args()
    if not 200 <= args.status <= 299:
        fail(f"--status must be a 2xx status, not {args.status}")
    if args.forward:
        url = urlsplit(args.forward)
        if url.scheme != "http" or not url.hostname:
            fail(f"--forward needs an http:// URL, not {args.forward}")
        CAPTURE.forward_to = (url.hostname, url.port or 80)
    CAPTURE.ok_status = args.status
    # The SDK's warnings go to stderr; stdout is the one JSON line.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    # Bounded: whatever hangs, the script stops.
    watchdog = threading.Timer(TIMEOUT_S, timed_out)
    watchdog.daemon = True
    watchdog.start()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    started = time.time() * 1000

    config = Config(
        args.sdk_key,
        event_url=base,
        streaming_url=base.replace("http", "ws", 1),  # never used: offline
        offline=True,  # no streaming connection ...
        event_processor_imp=DefaultEventProcessor,  # ... but events on
        events_max_in_queue=1_000_000,
        events_flush_interval=1.0,
    )
    client = FBClient(config, start_wait=0)  # offline: ready once the bootstrap is in
    if not client.initialize_from_external_json(json.dumps(BOOTSTRAP)) or not client.initialize:
        fail("the SDK did not take the bootstrap flags")

    rng = XorShift32(args.seed)
    per_flag = {f["key"]: 0 for f in FLAGS}
    per_flag_variation = {}
    metrics = 0
    for i in range(args.evaluations):
        f = FLAGS[rng.next() % len(FLAGS)]
        u = USERS[rng.next() % len(USERS)]
        value = client.variation(f["key"], u, False if f["variationType"] == "boolean" else "default")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        served = next((v for v in f["variations"] if v["value"] == text), None)
        if served is None:
            fail(f"{f['key']} for {u['key']} gave {value!r}, none of its variations")
        per_flag[f["key"]] += 1
        vk = f"{f['key']}/{served['id']}"
        per_flag_variation[vk] = per_flag_variation.get(vk, 0) + 1
        if i % 300 == 150:
            client.track_metric(u, "checkout", i / 10)
            metrics += 1
    client.stop()  # a last flush, waiting for every flush worker's posts
    ended = time.time() * 1000

    with CAPTURE.lock:
        posts = list(CAPTURE.posts)
        unexpected = list(CAPTURE.unexpected)
        forwarded = dict(CAPTURE.forwarded)
    server.shutdown()
    if unexpected:
        fail(f"the SDK made requests other than POST {INSIGHT_PATH}: {unexpected}")

    stored = [(h, b) for h, b, status in posts if status == args.status]
    with open(args.out, "wb") as out:
        for _, body in stored:
            if b"\n" in body or b"\r" in body:
                fail("a POST body contains a newline: cannot write it as one line")
            out.write(body + b"\n")
    stats = {
        "sdk": f"fb-python-sdk {dist_version('fb-python-sdk')}",
        "evaluations": args.evaluations,
        "per_flag": per_flag,
        "per_flag_variation": dict(sorted(per_flag_variation.items())),
        "metrics": metrics,
        "posts": len(posts),
        "stored": len(stored),
        "forwarded": forwarded,
    }
    check(args, stats, stored, started, ended)
    print(json.dumps(stats), flush=True)


def check(args, stats, stored, started, ended):
    """What the kept bodies hold, against what the script evaluated."""
    problems = []
    per_flag = {k: 0 for k in stats["per_flag"]}
    per_flag_variation = {}
    metrics = 0
    bad_time = []
    seen = {}

    def timestamp(t, where):
        # Unix milliseconds, within the run (a second of slack each side).
        if not isinstance(t, int) or isinstance(t, bool) or not started - 1000 <= t <= ended + 1000:
            bad_time.append(f"{where}: {t}")

    for n, (headers, body) in enumerate(stored):
        seen[body] = seen.get(body, 0) + 1
        if headers.get("authorization") != args.sdk_key:
            problems.append(f"body {n}: Authorization {headers.get('authorization')!r}, not the SDK key")
        if headers.get("content-encoding"):
            problems.append(f"body {n}: Content-Encoding {headers['content-encoding']}")
        try:
            entries = json.loads(body)
        except ValueError as e:
            problems.append(f"body {n} is not JSON: {e}")
            continue
        if not isinstance(entries, list):
            problems.append(f"body {n} is not a JSON array")
            continue
        for entry in entries:
            for v in entry.get("variations") or []:
                key = v.get("featureFlagKey")
                per_flag[key] = per_flag.get(key, 0) + 1
                vk = f"{key}/{(v.get('variation') or {}).get('id')}"
                per_flag_variation[vk] = per_flag_variation.get(vk, 0) + 1
                timestamp(v.get("timestamp"), f"{key} variation")
            for m in entry.get("metrics") or []:
                metrics += 1
                timestamp(m.get("timestamp"), f"{m.get('eventName')} metric")
    repeated = sum(1 for c in seen.values() if c > 1)
    if per_flag != stats["per_flag"]:
        problems.append(f"variation entries per flag in the kept bodies {json.dumps(per_flag)} "
                        f"!= evaluations {json.dumps(stats['per_flag'])}")
    elif dict(sorted(per_flag_variation.items())) != stats["per_flag_variation"]:
        problems.append(f"variation entries per flag/variation {json.dumps(dict(sorted(per_flag_variation.items())))} "
                        f"!= served {json.dumps(stats['per_flag_variation'])}")
    if metrics != stats["metrics"]:
        problems.append(f"metric entries in the kept bodies: {metrics}, tracked: {stats['metrics']}")
    if bad_time:
        problems.append(f"timestamps not Unix milliseconds within the run: {', '.join(bad_time[:3])}")
    if problems:
        context = [f"{stats['posts']} POSTs, {stats['stored']} kept (answered {args.status})"]
        if args.forward:
            context.append(f"collector statuses {json.dumps(stats['forwarded'])}")
        if repeated:
            context.append(f"{repeated} kept bodies arrived more than once, byte-identical: the SDK re-posted them "
                           "(fb-python-sdk takes only 200 as success and retries anything else)")
        fail(f"{'; '.join(problems)} ({'; '.join(context)})")


if __name__ == "__main__":
    main()

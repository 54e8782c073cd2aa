"""Other teams' view: read flagtally's output topics with an independent client
(confluent-kafka) and check the records against the documented LaunchDarkly shapes.

usage: read_outputs.py BROKER SUMMARY_TOPIC FEATURE_TOPIC EVALUATIONS TRACKED
Prints "ok ..." and exits 0 when every record parses and the deduplicated totals match.
"""
import json
import re
import sys
import time
import uuid

from confluent_kafka import Consumer

broker, summary_topic, feature_topic = sys.argv[1:4]
evaluations, tracked = int(sys.argv[4]), int(sys.argv[5])
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def read(topic, done):
    c = Consumer({
        "bootstrap.servers": broker,
        "group.id": f"python-reader-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    by_id, deadline = {}, time.time() + 120
    while time.time() < deadline and not done(by_id):
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        rid = headers["flagtally-id"]
        assert UUID.match(rid), f"id {rid!r} is not a version-8 UUID"
        assert headers["content-type"] == "application/json"
        by_id[rid] = (m.key(), json.loads(m.value()), headers)
    c.close()
    return by_id


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def counted(by_id):
    return sum(c["count"] for _, s, _ in by_id.values()
               for f in s["features"].values() for c in f["counters"])


summaries = read(summary_topic, lambda b: counted(b) >= evaluations)
for key, s, headers in summaries.values():
    assert s["kind"] == "summary", s
    assert is_int(s["startDate"]) and is_int(s["endDate"]) and s["startDate"] <= s["endDate"]
    assert len(s["features"]) == 1, "one flag per summary record"
    (flag, body), = s["features"].items()
    assert key == flag.encode(), "summaries are keyed by flag key"
    assert "default" in body
    assert body["counters"], "a summary has counters"
    for c in body["counters"]:
        assert is_int(c["count"]) and c["count"] > 0
        assert "value" in c
        assert c.get("unknown") is True or "version" in c, c
        assert "variation" in c or "variationName" in c, c
    assert int(headers["flagtally-window-start"]) < int(headers["flagtally-window-end"])
assert counted(summaries) == evaluations, (counted(summaries), evaluations)

features = read(feature_topic, lambda b: len(b) >= tracked)
for key, e, headers in features.values():
    assert e["kind"] == "feature", e
    assert is_int(e["creationDate"]) and isinstance(e["key"], str)
    assert "context" in e or "contextKeys" in e, e
    assert "value" in e
assert len(features) == tracked, (len(features), tracked)
print(f"ok: {len(summaries)} summaries ({evaluations} evaluations), {len(features)} feature events")

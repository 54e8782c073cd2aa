"""The exactly-once check, from an independent client: read flagtally's output topics to
their end as a `read_committed` consumer (confluent-kafka), and count records, distinct
ids and repeats per topic; summary counters are summed. The same read with
`read_uncommitted` counts what aborted transactions left in the log.

usage: read_exactly_once.py BROKER TOPIC [TOPIC ...]
Prints one JSON object: {topic: {"committed": n, "distinct": d, "repeats": r,
"uncommitted": u, "evaluations": e}}.
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition, KafkaError

broker, topics = sys.argv[1], sys.argv[2:]


def read(topic, isolation):
    c = Consumer({
        "bootstrap.servers": broker,
        "group.id": f"python-eos-{uuid.uuid4()}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    meta = c.list_topics(topic, timeout=30).topics[topic]
    parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
    c.assign(parts)
    pending = {p.partition for p in parts}
    ids, records, evaluations = {}, 0, 0
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(m.partition())
                continue
            raise SystemExit(f"reading {topic}: {m.error()}")
        records += 1
        headers = dict(m.headers() or [])
        rid = headers.get("flagtally-id", b"").decode()
        ids[rid] = ids.get(rid, 0) + 1
        if headers.get("flagtally-kind") == b"summary":
            body = json.loads(m.value())
            for flag in body.get("features", {}).values():
                evaluations += sum(c["count"] for c in flag.get("counters", []))
    c.close()
    if pending:
        raise SystemExit(f"{topic}: partitions {sorted(pending)} not read to their end")
    return records, ids, evaluations


out = {}
for topic in topics:
    records, ids, evaluations = read(topic, "read_committed")
    uncommitted, _, _ = read(topic, "read_uncommitted")
    out[topic] = {
        "committed": records,
        "distinct": len(ids),
        "repeats": records - len(ids),
        "uncommitted": uncommitted,
        "evaluations": evaluations,
    }
print(json.dumps(out))

"""Schema Registry clients that are not flagtally: confluent-kafka's AvroSerializer and
AvroDeserializer, against the test registry (Apicurio's Confluent-compatible API).

usage:
  registry_avro.py produce BROKER REGISTRY TOPIC N FLAGS EVENT_AVSC
      N evaluations written with `schemas/event.avsc` itself, then N written with another
      team's smaller schema (other field order, an extra field, fewer enum symbols),
      each registered by the serializer under TOPIC-value; flag-0's native evaluations
      are tracked. Prints {"per_flag": evaluations per flag, "tracked": n} as JSON.
  registry_avro.py read BROKER REGISTRY SUMMARY_TOPIC FEATURE_TOPIC EVALUATIONS TRACKED
      Reads flagtally's Avro outputs (Confluent wire format) with AvroDeserializer until
      the deduplicated summary counters reach EVALUATIONS and the feature events
      TRACKED (120 s at most). Prints "ok ..." and the evaluations per flag as JSON.
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

TEAM_SCHEMA = {
    "type": "record", "name": "Event", "namespace": "flagtally",
    "fields": [
        {"name": "flagKey", "type": ["null", "string"], "default": None},
        {"name": "type", "type": {"type": "enum", "name": "EventType", "symbols": ["evaluation"]}},
        {"name": "appVersion", "type": "string"},
        {"name": "creationDate", "type": ["null", "long"], "default": None},
        {"name": "context", "type": ["null", {"type": "record", "name": "Contexts", "fields": [
            {"name": "keys", "type": {"type": "array", "items": {
                "type": "record", "name": "ContextKey", "fields": [
                    {"name": "kind", "type": "string"}, {"name": "key", "type": "string"}]}}}]}],
         "default": None},
        {"name": "variation", "type": ["null", "long"], "default": None},
        {"name": "version", "type": ["null", "long"], "default": None},
        {"name": "value", "type": ["null", "string"], "default": None},
    ],
}


def registry_client(url):
    # Bounded requests, retried: Apicurio 3.3.3 was seen leaving one request unanswered
    # on a kept-alive connection (the client then waited for good).
    return SchemaRegistryClient({"url": url, "timeout": 10, "max.retries": 3})


def retried(call, *args):
    for attempt in range(4):
        try:
            return call(*args)
        except Exception:  # a timeout, a dropped connection
            if attempt == 3:
                raise
            time.sleep(0.5)


def produce(broker, registry, topic, n, flags, event_avsc):
    client = registry_client(registry)
    producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
    now = int(time.time() * 1000)
    per_flag, tracked = {}, 0
    native = AvroSerializer(client, open(event_avsc).read(), conf={"auto.register.schemas": True})
    team = AvroSerializer(client, json.dumps(TEAM_SCHEMA), conf={"auto.register.schemas": True})
    for serializer, extra in ((native, {}), (team, {"appVersion": "7.1.0"})):
        for i in range(n):
            flag = f"flag-{i % flags}"
            event = {
                "type": "evaluation", "flagKey": flag, "creationDate": now + i,
                "context": {"keys": [{"kind": "user", "key": f"user-{i % 97}"}]},
                "variation": i % 3, "version": 4, "value": json.dumps(i % 3 == 0),
                **extra,
            }
            if serializer is native:
                event.update({"context": {"keys": event["context"]["keys"], "body": None},
                              "features": [], "inExperiment": False,
                              "excludeFromSummaries": False, "debug": False,
                              "trackEvents": flag == "flag-0"})
                tracked += flag == "flag-0"
            value = retried(serializer, event, SerializationContext(topic, MessageField.VALUE))
            producer.produce(topic, key=flag.encode(), value=value)
            per_flag[flag] = per_flag.get(flag, 0) + 1
        producer.poll(0)
    assert producer.flush(30) == 0, "produce not acknowledged"
    print(json.dumps({"per_flag": per_flag, "tracked": tracked}, sort_keys=True))


def read(broker, registry, summary_topic, feature_topic, evaluations, tracked):
    deserialize = AvroDeserializer(registry_client(registry))

    def records(topic, done):
        c = Consumer({"bootstrap.servers": broker, "group.id": f"python-registry-{uuid.uuid4()}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        by_id, deadline = {}, time.time() + 120
        while time.time() < deadline and not done(by_id):
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            headers = {k: v.decode() for k, v in (m.headers() or [])}
            assert m.value()[0] == 0, "Confluent wire format: magic byte 0"
            by_id[headers["flagtally-id"]] = retried(
                deserialize, m.value(), SerializationContext(topic, MessageField.VALUE))
        c.close()
        return by_id

    def counted(by_id):
        return sum(c["count"] for s in by_id.values() for c in s["counters"])

    summaries = records(summary_topic, lambda b: counted(b) >= evaluations)
    per_flag = {}
    for s in summaries.values():
        per_flag[s["flagKey"]] = per_flag.get(s["flagKey"], 0) + sum(c["count"] for c in s["counters"])
    assert counted(summaries) == evaluations, f"counted {counted(summaries)}, expected {evaluations}"
    features = records(feature_topic, lambda b: len(b) >= tracked) if tracked else {}
    assert len(features) == tracked, f"{len(features)} feature events, expected {tracked}"
    for f in features.values():
        assert f["kind"] == "feature" and f["key"] and isinstance(f["creationDate"], int), f
    print(f"ok: {len(summaries)} summary records ({evaluations} evaluations), "
          f"{len(features)} feature events, read with AvroDeserializer")
    print(json.dumps(per_flag, sort_keys=True))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "produce":
        produce(args[0], args[1], args[2], int(args[3]), int(args[4]), args[5])
    else:
        read(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]))

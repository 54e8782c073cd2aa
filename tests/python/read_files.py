"""Reads a file sink's output with Python's own readers (csv, fastavro) and prints what
it found as JSON: the independent check of tests/file_sink.rs.

usage: read_files.py CSV_DIR AVRO_DIR [PARQUET_DIR]
"""
import csv
import glob
import json
import os
import sys

import fastavro
import pyarrow.parquet as pq

csv_dir, avro_dir = sys.argv[1], sys.argv[2]
out = {"csv_summary_total": 0, "csv_feature_rows": 0, "csv_files": 0,
       "avro_records": 0, "avro_positions": 0, "avro_summary_total": 0,
       "avro_feature_ids": 0, "avro_files": 0, "temp_files": 0}

for path in glob.glob(os.path.join(csv_dir, "**", "*"), recursive=True):
    name = os.path.basename(path)
    if name.startswith(".") and name.endswith(".tmp"):
        out["temp_files"] += 1
    if not path.endswith(".csv"):
        continue
    out["csv_files"] += 1
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] == "summary":
                out["csv_summary_total"] += int(row["count"])
            elif row["kind"] == "feature":
                out["csv_feature_rows"] += 1

positions, summaries, features = set(), {}, set()
for path in glob.glob(os.path.join(avro_dir, "**", "*.avro"), recursive=True):
    out["avro_files"] += 1
    with open(path, "rb") as f:
        for rec in fastavro.reader(f):
            out["avro_records"] += 1
            positions.add((rec["topic"], rec["partition"], rec["offset"]))
            event = json.loads(rec["event"])
            if rec["kind"] == "summary":
                summaries[rec["id"]] = sum(
                    c["count"] for flag in event["features"].values() for c in flag["counters"])
            elif rec["kind"] == "feature":
                features.add(rec["id"])
out["avro_positions"] = len(positions)
out["avro_summary_total"] = sum(summaries.values())
out["avro_feature_ids"] = len(features)

if len(sys.argv) > 3:
    total, feature_rows, files, types = 0, 0, 0, {}
    for path in glob.glob(os.path.join(sys.argv[3], "**", "*.parquet"), recursive=True):
        files += 1
        table = pq.read_table(path)
        types = {f.name: str(f.type) for f in table.schema}
        for row in table.to_pylist():
            if row["kind"] == "summary":
                total += row["count"]
            elif row["kind"] == "feature":
                feature_rows += 1
    out.update({"parquet_summary_total": total, "parquet_feature_rows": feature_rows,
                "parquet_files": files, "parquet_types": types})
print(json.dumps(out))

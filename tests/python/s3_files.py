"""An independent S3 client for tests/s3_sink.rs (pyarrow's S3 filesystem).

usage: s3_files.py ENDPOINT BUCKET create
       s3_files.py ENDPOINT BUCKET read PREFIX
Credentials: flagtally / flagtally-secret (scripts/infra.sh s3). `read` prints JSON:
objects, the evaluations in the Parquet and NDJSON summaries, feature rows, and the
Kafka positions seen (distinct and total) in the Parquet files.
"""
import json
import sys
from urllib.parse import urlparse

import pyarrow.fs as pafs
import pyarrow.parquet as pq

endpoint, bucket, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
url = urlparse(endpoint)
fs = pafs.S3FileSystem(access_key="flagtally", secret_key="flagtally-secret",
                       endpoint_override=url.netloc, scheme=url.scheme, region="us-east-1",
                       allow_bucket_creation=True)
if cmd == "create":
    fs.create_dir(bucket)
    sys.exit(0)

prefix = sys.argv[4]
out = {"objects": 0, "parquet_summary_total": 0, "ndjson_summary_total": 0,
       "parquet_feature_rows": 0, "positions": 0, "rows_with_position": 0}
positions = set()
infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/{prefix}", recursive=True, allow_not_found=True))
for info in infos:
    if info.type != pafs.FileType.File:
        continue
    out["objects"] += 1
    if info.path.endswith(".parquet"):
        for row in pq.read_table(info.path, filesystem=fs).to_pylist():
            if row["kind"] == "summary":
                out["parquet_summary_total"] += row["count"]
                positions.add((row["topic"], row["partition"], row["offset"], "s", row["flag_key"], row["variation"], row["version"]))
            elif row["kind"] == "feature":
                out["parquet_feature_rows"] += 1
                positions.add((row["topic"], row["partition"], row["offset"], "f"))
            out["rows_with_position"] += 1
    elif info.path.endswith(".ndjson"):
        with fs.open_input_stream(info.path) as f:
            for line in f.read().decode().splitlines():
                e = json.loads(line)
                if e.get("kind") == "summary":
                    out["ndjson_summary_total"] += sum(
                        c["count"] for flag in e["features"].values() for c in flag["counters"])
out["positions"] = len(positions)
print(json.dumps(out))

#!/usr/bin/env python3
"""W1 (6 partitions, 1,000 records/s of 1 KiB, acks=all) for 10 minutes against the counting S3
endpoint, listing the bucket every minute: does the object count stay bounded while flush objects
are consolidated and deleted? Uses scripts/bench_s3_cost.py's helpers.

    .venv/bin/python scripts/bench_object_count.py [path/to/streamhouse] [seconds, default 600]
"""
import sys, time, threading, subprocess, tempfile, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_s3_cost as b

BIN = sys.argv[1] if len(sys.argv) > 1 else str(b.REPO / "target/release/streamhouse")
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 600
scratch = Path(tempfile.mkdtemp(prefix="objcount-"))
s3 = b.S3(scratch / "s3.log")
bucket = s3.bucket()
agent = b.Agent(BIN, s3, bucket, scratch, None)
counts = []
def sample():
    t0 = time.time()
    while time.time() - t0 < SECONDS + 60:
        counts.append((round(time.time() - t0), s3.object_count(bucket)))
        print(counts[-1], flush=True)
        time.sleep(60)
th = threading.Thread(target=sample, daemon=True); th.start()
s3.reset()
rep = b.bench(BIN, agent, ["e2e", "--partitions", "6", "--rate", "1000"], "w1", SECONDS)
st = b.cost(s3.stats())
print(json.dumps({"produced_mb": rep["produce"]["bytes"]/1e6, "per_s": st["per_s"], "usd_month": st["usd_month"], "ack": rep["produce_ack_ms"]}), flush=True)
th.join(); agent.stop(); s3.stop()
print("counts", counts)

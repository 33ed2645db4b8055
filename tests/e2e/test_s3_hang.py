"""S3 stops answering while producers keep sending: a record answered with an error is never
stored later, nothing is stored twice, and the agent's memory stays bounded.

The agent talks to scripts/s3_cost_server.py (moto behind a layer that can hold every PUT until
released). librdkafka gives up on a record after `message.timeout.ms`; each Produce carries
`request.timeout.ms`, which bounds the agent's flush: a flush not committed by then is
abandoned, so the hung upload, when it finally completes, leaves an unreferenced object only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from harness import REPO_ROOT, free_port
from kafka_util import Sender, assert_failed_never_stored, create_topic
from s3 import CREDENTIALS, REGION

# The agent abandons a flush `request.timeout.ms` after the Produce arrived. A record the
# client gives up on (`message.timeout.ms`) while a retry of it is in flight is "possibly
# persisted" in librdkafka's words, as with Kafka: the hang outlasts that retry's timeout.
# The hang lasts: records sent for SEND_S, then until every one of them timed out on the client,
# then one request timeout more (so no retry is still in flight when S3 answers again). The
# suite runs a short one; the (~100 s, librdkafka's 60 s message timeout and default
# 30 s request timeout) is the same test with these set, by hand:
#   STREAMHOUSE_MESSAGE_TIMEOUT_MS=60000 STREAMHOUSE_REQUEST_TIMEOUT_MS=30000
SEND_S = float(os.environ.get("STREAMHOUSE_HANG_SEND_S", "10"))
MESSAGE_TIMEOUT_MS = int(os.environ.get("STREAMHOUSE_MESSAGE_TIMEOUT_MS", "15000"))
REQUEST_TIMEOUT_MS = int(os.environ.get("STREAMHOUSE_REQUEST_TIMEOUT_MS", "5000"))
BUFFER_BYTES = 32 << 20


class HangableS3:
    def __init__(self, log_path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "scripts/s3_cost_server.py"),
                 "--port", str(self.port), "--put-ms", "0", "--put-ms-per-mb", "0",
                 "--get-ms", "0", "--max-hang-s", "120"],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.post("/__stats/reset")
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def post(self, path: str, method: str = "POST") -> None:
        req = urllib.request.Request(self.endpoint + path, method=method)
        urllib.request.urlopen(req, timeout=10).read()

    def bucket(self) -> str:
        name = f"hang-{uuid.uuid4().hex[:12]}"
        self.post(f"/{name}", method="PUT")
        return name

    def stop(self) -> None:
        self.post("/__control/release")
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_records_failed_during_an_s3_hang_are_never_stored(server_factory, topic, tmp_path,
                                                          s3_server):
    if s3_server:
        pytest.skip("runs its own S3 endpoint in both modes")
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    s3 = HangableS3(tmp_path / "s3.log")
    try:
        server = server_factory(extra_args=[
            "--s3-bucket", s3.bucket(), "--s3-endpoint", s3.endpoint, "--s3-region", REGION,
            "--max-buffered-bytes", str(BUFFER_BYTES)])
        create_topic(server.bootstrap, topic, 3)
        sender = Sender(server.bootstrap, MESSAGE_TIMEOUT_MS, REQUEST_TIMEOUT_MS)
        sender.send(topic, "before", 200, 0.001)
        sender.settle()
        assert len(sender.acked) == 200, "the store answers before the hang"
        rss_before = server.rss_mib()

        s3.post("/__control/hang")
        hang_started = time.monotonic()
        sender.send(topic, "during", int(SEND_S * 200), 0.005)  # 5 ms apart
        sender.settle()  # every record of the hang times out on the client
        time.sleep(REQUEST_TIMEOUT_MS / 1000 + 1)
        s3.post("/__control/release")
        hang_s = time.monotonic() - hang_started
        peak = server.peak_rss_mib()

        sender.send(topic, "after", 200, 0.001)
        sender.settle()
        during_failed = {v for v in sender.failed if v.startswith(b"during")}
        assert during_failed, "the hang made records fail"
        # While S3 still runs: consolidation may have moved the data out of the cache.
        stored = assert_failed_never_stored(server.bootstrap, topic, 3, sender)
    finally:
        s3.stop()
    print(f"\nhang {hang_s:.0f} s, message timeout {MESSAGE_TIMEOUT_MS} ms: "
          f"failed={len(sender.failed)} acked={len(sender.acked)} stored={stored} "
          f"rss before/peak={rss_before:.0f}/{peak:.0f} MiB")
    # The buffer budget (32 MiB) at most, plus the agent's own baseline.
    assert peak < rss_before + BUFFER_BYTES / (1 << 20) + 64, (
        f"RSS grew from {rss_before:.0f} to {peak:.0f} MiB")

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
from kafka_util import consume_all, create_topic, producer
from s3 import CREDENTIALS, REGION

# The agent abandons a flush `request.timeout.ms` after the Produce arrived. A record the
# client gives up on (`message.timeout.ms`) while a retry of it is in flight is "possibly
# persisted" in librdkafka's words, as with Kafka: the hang outlasts that retry's timeout.
REQUEST_TIMEOUT_MS = 5000


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


class Sender:
    """An idempotent producer recording each value's outcome."""

    def __init__(self, bootstrap: str):
        self.p = producer(bootstrap, **{"enable.idempotence": True, "linger.ms": 5,
                                        "message.timeout.ms": 15000,
                                        "request.timeout.ms": REQUEST_TIMEOUT_MS})
        self.acked: set[bytes] = set()
        self.failed: set[bytes] = set()

    def _report(self, err, msg) -> None:
        (self.failed if err else self.acked).add(msg.value())

    def send(self, topic: str, prefix: str, count: int, pace_s: float) -> None:
        for i in range(count):
            self.p.produce(topic, value=b"%s-%06d" % (prefix.encode(), i), on_delivery=self._report)
            self.p.poll(0)
            time.sleep(pace_s)

    def settle(self) -> None:
        assert self.p.flush(60) == 0


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
            "--max-buffered-bytes", str(32 << 20)])
        create_topic(server.bootstrap, topic, 3)
        sender = Sender(server.bootstrap)
        sender.send(topic, "before", 200, 0.001)
        sender.settle()
        assert len(sender.acked) == 200, "the store answers before the hang"
        rss_before = server.rss_mib()

        s3.post("/__control/hang")
        hang_started = time.monotonic()
        sender.send(topic, "during", 2000, 0.005)
        sender.settle()  # every record of the hang times out on the client
        time.sleep(REQUEST_TIMEOUT_MS / 1000 + 1)
        s3.post("/__control/release")
        assert time.monotonic() - hang_started >= 15
        peak = server.peak_rss_mib()

        sender.send(topic, "after", 200, 0.001)
        sender.settle()
    finally:
        s3.stop()

    during_failed = {v for v in sender.failed if v.startswith(b"during")}
    assert during_failed, "the hang made records fail"
    got = consume_all(server.bootstrap, topic, 3, timeout_s=60)
    values = [r.value for recs in got.values() for r in recs]
    stored = set(values)
    assert len(values) == len(stored), "a record was stored twice"
    assert not (stored & sender.failed), (
        f"{len(stored & sender.failed)} records answered with an error were stored")
    assert sender.acked <= stored, "an acknowledged record is missing"
    print(f"hang: failed={len(sender.failed)} acked={len(sender.acked)} stored={len(stored)} "
          f"rss before/peak={rss_before:.0f}/{peak:.0f} MiB")
    # 32 MiB of buffered records at most, plus the agent's own baseline.
    assert peak < rss_before + 200, f"RSS grew from {rss_before:.0f} to {peak:.0f} MiB"

"""An S3-compatible server (moto) for running the e2e suite against S3 instead of local files.

Enabled with `STREAMHOUSE_E2E_OBJECT_STORE=s3` (or `pytest --object-store=s3`): one moto
server on 127.0.0.1 per session, one fresh bucket per test (shared by the agents a test starts,
never seen by another test's orphan janitor), path-style addressing and static credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from harness import free_port

READY_TIMEOUT_S = 30.0
REGION = "us-east-1"
# moto accepts any credentials; the server must still sign its requests with some.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "streamhouse-e2e",
    "AWS_SECRET_ACCESS_KEY": "streamhouse-e2e-secret",
    "AWS_REGION": REGION,
}


def object_store_mode(config) -> str:
    """`local` (default) or `s3`, from `--object-store` or $STREAMHOUSE_E2E_OBJECT_STORE."""
    mode = config.getoption("object_store") or os.environ.get(
        "STREAMHOUSE_E2E_OBJECT_STORE", "local")
    if mode not in ("local", "s3"):
        raise ValueError(f"unknown object store mode {mode!r} (expected local or s3)")
    return mode


class MotoServer:
    """`python -m moto.server` on a free loopback port, logging to `log_path`."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto not ready after {READY_TIMEOUT_S}s; see {self.log_path}")

    def create_bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = f"e2e-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200, f"creating bucket {name}: HTTP {resp.status}"
        return name

    def server_args(self, bucket: str) -> list[str]:
        """`streamhouse serve` flags storing segments in `bucket` of this server."""
        return ["--s3-bucket", bucket, "--s3-endpoint", self.endpoint, "--s3-region", REGION]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

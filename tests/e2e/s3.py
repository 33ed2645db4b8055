"""An S3-compatible server (moto) for running the e2e suite against S3 instead of local files.

Enabled with `STREAMHOUSE_E2E_OBJECT_STORE=s3` (or `pytest --object-store=s3`): one moto
server on 127.0.0.1 per session, one fresh bucket per test (shared by the agents a test starts,
never seen by another test's orphan janitor), path-style addressing and static credentials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from xml.etree import ElementTree
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


REPO_ROOT = Path(__file__).resolve().parents[2]


class MotoServer:
    """moto's S3 on a free port of `host` (loopback unless told), logging to `log_path`, behind
    scripts/s3_cost_server.py without added latency: it counts requests (`stats`) and refuses a
    second write to any key, so a test can show that no object was ever overwritten."""

    def __init__(self, log_path: Path, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MotoServer":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "scripts/s3_cost_server.py"),
                 "--host", self.host, "--port", str(self.port), "--put-ms", "0", "--put-ms-per-mb", "0",
                 "--get-ms", "0", "--refuse-overwrites"],
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

    def stats(self) -> dict:
        """Requests by kind since the server started (`OVERWRITE_REFUSED` among them)."""
        with urllib.request.urlopen(f"{self.endpoint}/__stats", timeout=10) as resp:
            return json.load(resp)

    def overwrites_refused(self) -> int:
        """Second writes to a key that were not create-only: attempted overwrites."""
        return self.stats()["requests"].get("OVERWRITE_REFUSED", 0)

    def second_writes(self) -> int:
        """Every second write to a key, create-only ones (a retry whose first attempt's answer
        was lost, refused with 412 as S3 would) included."""
        requests = self.stats()["requests"]
        return requests.get("OVERWRITE_REFUSED", 0) + requests.get("CREATE_REFUSED", 0)

    def list_keys(self, bucket: str) -> list[str]:
        """Every key in `bucket` (ListObjectsV2, page by page)."""
        keys: list[str] = []
        token = None
        while True:
            query = {"list-type": "2", **({"continuation-token": token} if token else {})}
            url = f"{self.endpoint}/{bucket}?{urllib.parse.urlencode(query)}"
            with urllib.request.urlopen(url, timeout=30) as resp:
                root = ElementTree.fromstring(resp.read())
            ns = {"s3": root.tag.partition("}")[0].lstrip("{")} if "}" in root.tag else {}
            prefix = "s3:" if ns else ""
            keys += [e.text for e in root.iterfind(f"{prefix}Contents/{prefix}Key", ns)]
            token = root.findtext(f"{prefix}NextContinuationToken", None, ns)
            if not token:
                return keys

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

#!/usr/bin/env python3
"""An S3-compatible endpoint for cost benchmarks: moto's S3, behind a layer that counts every
request by kind and adds S3-Standard-like latency before answering.

    .venv/bin/python scripts/s3_cost_server.py --port 9000 [--put-ms 30 --put-ms-per-mb 10 --get-ms 15]

Kinds: PUT (object writes, multipart parts), GET (object and ranged reads), HEAD, LIST
(bucket listings), DELETE (single deletes), DELETE_BATCH (POST ?delete, up to 1,000 keys each).
`GET /__stats` answers the counts and bytes as JSON; `POST /__stats/reset` zeroes them.
`POST /__control/hang` makes every object PUT wait (up to --max-hang-s) until
`POST /__control/release`: an S3 that stops answering, for fault tests. With
`--refuse-overwrites` a second write to a key (a PUT or a completed multipart upload) is
refused with 412 PreconditionFailed and counted as OVERWRITE_REFUSED (CREATE_REFUSED when it was
a create-only write, `If-None-Match: *`, which S3 refuses the same way): the e2e suite runs on it
to show that no object key is ever overwritten. Loopback by default (`--host` binds another
local address, e.g. the host side of a test's veth link): this is a test server, not a proxy.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class Counter:
    """Request counts and bytes per kind, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.started = time.time()
            self.requests: dict[str, int] = {}
            self.bytes: dict[str, int] = {}

    def add(self, kind: str, nbytes: int) -> None:
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            self.bytes[kind] = self.bytes.get(kind, 0) + nbytes

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "seconds": time.time() - self.started,
                "requests": dict(self.requests),
                "bytes": dict(self.bytes),
            }


def kind_of(method: str, path: str, query: dict) -> str | None:
    """The billing kind of an S3 request (None for bucket administration)."""
    key = path.strip("/").partition("/")[2]
    if method == "POST" and "delete" in query:
        return "DELETE_BATCH"
    if method == "PUT":
        return "PUT" if key else None
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return "PUT"
    if method == "GET":
        return "GET" if key else "LIST"
    if method == "HEAD":
        return "HEAD" if key else None
    if method == "DELETE":
        return "DELETE" if key else None
    return None


def written_key(method: str, path: str, query: dict) -> str | None:
    """`bucket/key` a request creates an object at: a whole-object PUT or a multipart
    completion (not a part upload, not a copy's source)."""
    bucket, _, key = path.strip("/").partition("/")
    if not key:
        return None
    if method == "PUT" and "partNumber" not in query:
        return f"{bucket}/{key}"
    if method == "POST" and "uploadId" in query:
        return f"{bucket}/{key}"
    return None


PRECONDITION_FAILED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed'
                       b'</Code><Message>the key was written before (write-once test server)'
                       b'</Message></Error>')


class CostLayer:
    """WSGI middleware: counts, delays, then lets moto answer."""

    def __init__(self, app, counter: Counter, put_ms: float, put_ms_per_mb: float, get_ms: float,
                 max_hang_s: float, refuse_overwrites: bool = False):
        self.app = app
        self.counter = counter
        self.put_ms, self.put_ms_per_mb, self.get_ms = put_ms, put_ms_per_mb, get_ms
        self.max_hang_s = max_hang_s
        self.released = threading.Event()
        self.released.set()
        self.refuse_overwrites = refuse_overwrites
        self.written: set[str] = set()
        self.written_lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__stats"):
            return self.stats(environ, start_response)
        if path.startswith("/__control/"):
            return self.control(path, start_response)
        method = environ["REQUEST_METHOD"]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        kind = kind_of(method, path, query)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if kind is not None:
            self.counter.add(kind, length)
            if kind == "PUT":
                self.released.wait(self.max_hang_s)
                time.sleep((self.put_ms + self.put_ms_per_mb * length / 1e6) / 1000)
            elif kind in ("GET", "HEAD"):
                time.sleep(self.get_ms / 1000)
        key = written_key(method, path, query) if self.refuse_overwrites else None
        if key is not None and not self.first_write(key):
            # A create-only write (`If-None-Match: *`, a retry whose first attempt's answer
            # was lost) is refused as S3 would refuse it: no overwrite was attempted.
            create_only = environ.get("HTTP_IF_NONE_MATCH") == "*"
            self.counter.add("CREATE_REFUSED" if create_only else "OVERWRITE_REFUSED", length)
            start_response("412 Precondition Failed",
                           [("Content-Type", "application/xml"),
                            ("Content-Length", str(len(PRECONDITION_FAILED)))])
            return [PRECONDITION_FAILED]
        return self.app(environ, start_response)

    def first_write(self, key: str) -> bool:
        """Records a write to `key`; False when it was written before."""
        with self.written_lock:
            if key in self.written:
                return False
            self.written.add(key)
            return True

    def control(self, path, start_response):
        if path.endswith("/hang"):
            self.released.clear()
        elif path.endswith("/release"):
            self.released.set()
        start_response("204 No Content", [])
        return [b""]

    def stats(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            self.counter.reset()
        body = json.dumps(self.counter.snapshot()).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--put-ms", type=float, default=30.0)
    parser.add_argument("--put-ms-per-mb", type=float, default=10.0)
    parser.add_argument("--get-ms", type=float, default=15.0)
    parser.add_argument("--max-hang-s", type=float, default=300.0)
    parser.add_argument("--refuse-overwrites", action="store_true",
                        help="answer a second write to any key with 412 and count it")
    args = parser.parse_args()
    app = CostLayer(DomainDispatcherApplication(create_backend_app), Counter(),
                    args.put_ms, args.put_ms_per_mb, args.get_ms, args.max_hang_s,
                    args.refuse_overwrites)
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()

"""Fixtures for the end-to-end suite: real Kafka clients against a real `streamhouse serve`."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from harness import StreamhouseServer, free_port, streamhouse_bin
from kafka_proxy import KafkaProxy, never
from s3 import CREDENTIALS, MotoServer, object_store_mode


def pytest_addoption(parser):
    parser.addoption("--object-store", choices=("local", "s3"), default=None,
                     help="where servers keep segments: local files (default) or a moto S3 "
                          "server (also: STREAMHOUSE_E2E_OBJECT_STORE=s3)")


@pytest.fixture(scope="session")
def s3_server(pytestconfig, tmp_path_factory):
    """The session's moto S3 server in S3 mode, else None."""
    if object_store_mode(pytestconfig) != "s3":
        yield None
        return
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)  # inherited by every server started afterwards
    moto = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield moto
    moto.stop()


@pytest.fixture(scope="session")
def binary():
    path = streamhouse_bin()
    if not path.is_file():
        pytest.fail(f"streamhouse binary missing at {path}: run `cargo build --workspace` "
                    "(scripts/test.sh does) or set STREAMHOUSE_BIN", pytrace=False)
    return path


@pytest.fixture
def server_factory(binary, tmp_path, request, s3_server):
    """Start servers for this test: `server_factory(advertised_addr=..., extra_args=[...])`.

    Each server gets its own data dir and ports under the test's tmp dir; all are
    stopped at teardown, and their log tails are attached to the report on failure.
    """
    servers: list[StreamhouseServer] = []
    request.node.streamhouse_servers = servers
    counter = itertools.count()
    bucket: list[str] = []

    def bucket_args() -> list[str]:
        if not bucket:
            bucket.append(s3_server.create_bucket())
        return s3_server.server_args(bucket[0])

    def start(advertised_addr: str | None = None, extra_args: list[str] | None = None,
              auto_start: bool = True, nofile: int | None = None) -> StreamhouseServer:
        # One bucket per test: the agents of a test's cluster share their objects.
        store_args = bucket_args() if s3_server else []
        server = StreamhouseServer(binary, tmp_path / f"server{next(counter)}",
                                   extra_args=store_args + list(extra_args or []),
                                   advertised_addr=advertised_addr, nofile=nofile)
        servers.append(server)
        return server.start() if auto_start else server

    overwrites_before = s3_server.second_writes() if s3_server else 0
    yield start
    crashed = [s for s in servers if s.crashed()]
    for server in servers:
        server.stop()
    if s3_server:
        # The S3 server refuses a second write to a key; none may have been tried.
        refused = s3_server.second_writes() - overwrites_before
        assert refused == 0, f"{refused} writes to an already written object key"
    if crashed:
        pytest.fail("\n".join(f"server exited unexpectedly with code {s.proc.returncode}\n"
                              f"{s.log_tail()}" for s in crashed), pytrace=False)


@pytest.fixture
def server(server_factory) -> StreamhouseServer:
    """A healthy server with default settings (no topic auto-creation)."""
    return server_factory()


@pytest.fixture
def proxied_server(server_factory):
    """`proxied_server(drop=policy)` -> (server, proxy): a server that advertises a proxy
    in front of it, so every client connection after bootstrap goes through the proxy."""
    proxies: list[KafkaProxy] = []

    def start(drop=never):
        port = free_port()
        server = server_factory(advertised_addr=f"127.0.0.1:{port}", auto_start=False)
        proxy = KafkaProxy(("127.0.0.1", server.kafka_port), drop=drop, port=port)
        proxies.append(proxy)
        proxy.__enter__()
        server.start()
        return server, proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="session")
def measurements(pytestconfig):
    """Figures a test wants shown in the run summary (e.g. for BENCHMARKS.md)."""
    pytestconfig.streamhouse_measurements = {}
    return pytestconfig.streamhouse_measurements


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    figures = getattr(config, "streamhouse_measurements", None)
    if figures:
        terminalreporter.section("streamhouse measurements")
        for name, value in figures.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture
def topic(request) -> str:
    """A topic name unique to this test (servers are per-test, but names show up in logs)."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for i, server in enumerate(getattr(item, "streamhouse_servers", [])):
            code = server.proc.returncode if server.proc else None
            state = "alive" if server.is_alive() else f"exited {code}"
            report.sections.append((f"streamhouse server {i} ({state}) log", server.log_tail()))
    return report


def pytest_report_header(config):
    return (f"streamhouse binary: {streamhouse_bin()}; "
            f"object store: {object_store_mode(config)}")

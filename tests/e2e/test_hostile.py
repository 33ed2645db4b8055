"""The attack suite of issue 12: hostile and overloaded clients on raw loopback sockets.

Each test runs one probe against a real `streamhouse serve` and asserts that the process stays
up, that its peak RSS stays under a stated bound, and that a normal client keeps being served
(its round trips are timed; p99 is printed as `ATTACK <name>: ...` lines, which
docs/reliability.md quotes). Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest

from kafka_wire import SIZE, encode_request, read_frame

API_VERSIONS = 18
PRODUCE = 0
CREATE_TOPICS = 19
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
POLICY_VIOLATION = 44
MIB = 1024 * 1024


# --- wire helpers -------------------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def record(value: bytes, offset_delta: int = 0) -> bytes:
    body = b"\x00" + varint(0) + varint(offset_delta) + varint(-1) + varint(len(value)) + value \
        + varint(0)
    return varint(len(body)) + body


def record_batch(records: bytes, count: int, attributes: int = 0, ts: int = 1_000,
                 producer_id: int = -1) -> bytes:
    """A RecordBatch v2 with a correct CRC around `records`, declaring `count` records; with a
    `producer_id`, an idempotent producer's first batch (epoch 0, sequence 0)."""
    epoch, seq = (-1, -1) if producer_id < 0 else (0, 0)
    after_crc = struct.pack(">hiqqqhii", attributes, count - 1, ts, ts, producer_id, epoch, seq,
                            count) + records
    prefix = struct.pack(">qiib", 0, 4 + 1 + 4 + len(after_crc), -1, 2)
    return prefix + struct.pack(">I", crc32c(after_crc)) + after_crc


def produce_frame(topic: str, batch: bytes, acks: int = 1, correlation_id: int = 1,
                  partitions: int = 1) -> bytes:
    """A Produce v3 request of `batch` to each of the first `partitions` partitions."""
    name = topic.encode()
    body = (struct.pack(">hhi", -1, acks, 30_000) + struct.pack(">i", 1)
            + struct.pack(">h", len(name)) + name + struct.pack(">i", partitions)
            + b"".join(struct.pack(">ii", p, len(batch)) + batch for p in range(partitions)))
    return encode_request(PRODUCE, 3, correlation_id, body)


def produce_result(payload: bytes) -> tuple[int, int]:
    """The error code and base offset of the first partition of a Produce v3 response (one
    topic)."""
    at = 4 + 4  # correlation id, topic count
    (name_len,) = struct.unpack_from(">h", payload, at)
    at += 2 + name_len + 4 + 4  # name, partition count, partition index
    return struct.unpack_from(">hq", payload, at)


def produce_error(payload: bytes) -> int:
    """The partition error code of a Produce v3 response (one topic)."""
    return produce_result(payload)[0]


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def http(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data,
                                 method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ready(socks, events: int, timeout_s: float) -> list[socket.socket]:
    """The sockets of `socks` with any of `events` (poll: not limited to descriptors < 1024)."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, events)
    return [by_fd[fd] for fd, _ in poller.poll(int(timeout_s * 1000))]


def open_many(port: int, count: int, wait_s: float = 3.0) -> list[socket.socket]:
    """`count` non-blocking connection attempts, given up to `wait_s` to complete."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    deadline = time.monotonic() + wait_s
    pending = list(socks)
    while pending and time.monotonic() < deadline:
        done = set(ready(pending, select.POLLOUT | select.POLLERR | select.POLLHUP, 0.1))
        pending = [s for s in pending if s not in done]
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


class NormalClient:
    """A well-behaved client on its own connection, timing ApiVersions round trips."""

    def __init__(self, port: int):
        self.port = port
        self.sock = connect(port)
        self.latencies: list[float] = []
        self.failures = 0
        self._cid = 0

    def roundtrip(self) -> None:
        self._cid += 1
        started = time.monotonic()
        try:
            self.sock.sendall(encode_request(API_VERSIONS, 0, self._cid))
            frame = read_frame(self.sock)
            assert frame is not None, "normal client's connection closed"
            self.latencies.append(time.monotonic() - started)
        except (OSError, AssertionError):
            self.failures += 1
            self.sock.close()
            self.sock = connect(self.port)

    def run_while(self, busy: threading.Event, interval_s: float = 0.05) -> threading.Thread:
        def loop():
            while busy.is_set():
                self.roundtrip()
                time.sleep(interval_s)
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def p99_ms(self) -> float:
        assert self.latencies, "the normal client got no answer at all"
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def fresh_client_served(port: int, within_s: float = 15.0) -> None:
    """A new connection gets an ApiVersions answer within `within_s` (retrying refusals)."""
    deadline = time.monotonic() + within_s
    last = None
    while time.monotonic() < deadline:
        try:
            with connect(port, timeout=2) as sock:
                sock.sendall(encode_request(API_VERSIONS, 0, 1))
                if read_frame(sock) is not None:
                    return
        except OSError as e:
            last = e
        time.sleep(0.2)
    pytest.fail(f"no fresh client served within {within_s}s (last error: {last})")


def report(name: str, server, client: NormalClient, bound_mib: float) -> None:
    peak = server.peak_rss_mib()
    print(f"\nATTACK {name}: peak RSS {peak:.0f} MiB (bound {bound_mib:.0f}), normal client p99 "
          f"{client.p99_ms():.1f} ms over {len(client.latencies)} round trips, "
          f"{client.failures} failed")
    assert server.is_alive(), server.log_tail()
    assert peak < bound_mib, f"peak RSS {peak:.0f} MiB over {bound_mib:.0f}"
    assert client.failures == 0


def log_text(server) -> str:
    return server.log_path.read_text(errors="replace")


# --- the probes ---------------------------------------------------------------------------------

def test_connection_floods_at_ulimit_1024_are_refused_and_the_agent_recovers(server_factory):
    server = server_factory(nofile=1024)
    client = NormalClient(server.kafka_port)
    busy = threading.Event()
    busy.set()
    prober = client.run_while(busy)
    kafka = open_many(server.kafka_port, 2000)
    http_conns = open_many(server.http_port, 1100)
    # With every descriptor taken by idle HTTP connections, one more Kafka connection.
    late = open_many(server.kafka_port, 1, wait_s=1.0)
    time.sleep(1.5)
    assert server.is_alive(), server.log_tail()
    busy.clear()
    prober.join()
    close_all(kafka + http_conns + late)
    fresh_client_served(server.kafka_port)
    assert "refusing Kafka connection: max.connections" in log_text(server), server.log_tail()
    report("fd-flood", server, client, bound_mib=400)


def test_accept_failures_are_retried_not_fatal(server_factory):
    # A connection limit above the descriptor limit: accept itself fails with EMFILE.
    server = server_factory(nofile=256, extra_args=["--max-connections", "5000"])
    client = NormalClient(server.kafka_port)
    flood = open_many(server.kafka_port, 400)
    time.sleep(1.0)
    for _ in range(5):
        client.roundtrip()
    assert server.is_alive(), server.log_tail()
    close_all(flood)
    fresh_client_served(server.kafka_port)
    text = log_text(server)
    assert "accepting a Kafka connection failed" in text and "open files" in text, \
        server.log_tail()
    report("emfile", server, client, bound_mib=400)


def test_idle_and_slowloris_connections_are_closed(server_factory):
    server = server_factory(extra_args=["--connections-max-idle-ms", "1000",
                                        "--frame-read-timeout-ms", "1000"])
    client = NormalClient(server.kafka_port)
    busy = threading.Event()
    busy.set()
    prober = client.run_while(busy, interval_s=0.2)  # active: never idle for a second
    idle = [connect(server.kafka_port) for _ in range(50)]
    half_prefix = [connect(server.kafka_port) for _ in range(50)]
    half_body = [connect(server.kafka_port) for _ in range(50)]
    for s in half_prefix:
        s.sendall(b"\x00\x00")
    for s in half_body:
        s.sendall(SIZE.pack(1000) + b"\x00" * 100)
    deadline = time.monotonic() + 6
    open_socks = idle + half_prefix + half_body
    while open_socks and time.monotonic() < deadline:
        for s in ready(open_socks, select.POLLIN | select.POLLERR | select.POLLHUP, 0.2):
            try:
                data = s.recv(16)
            except OSError:
                data = b""
            assert data == b"", "the server answered a connection that sent nothing whole"
            open_socks.remove(s)
    busy.clear()
    prober.join()
    assert not open_socks, f"{len(open_socks)} idle or slow connections still open after 6 s"
    report("idle-slowloris", server, client, bound_mib=400)


def test_unauthenticated_large_frames_are_refused_from_the_prefix(server_factory):
    server = server_factory(extra_args=["--sasl", "--sasl-mechanisms", "PLAIN",
                                        "--sasl-user", "alice:alice-secret"])
    baseline = server.rss_mib()
    client = NormalClient(server.kafka_port)  # ApiVersions is allowed before login
    busy = threading.Event()
    busy.set()
    prober = client.run_while(busy)
    chunk = b"\x00" * MIB
    sent_total = 0
    for _ in range(20):
        sock = connect(server.kafka_port)
        sock.settimeout(2)
        sent = 0
        try:
            sock.sendall(SIZE.pack(100 * MIB))
            while sent < 90 * MIB:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # reset or timed out: the server closed it
        finally:
            sent_total += sent
            sock.close()
    busy.clear()
    prober.join()
    print(f"\npre-login: 20 x 100 MiB frames, {sent_total / MIB:.0f} MiB written before the close")
    assert sent_total < 20 * 90 * MIB, "some connection accepted a 90 MiB pre-login body"
    report("pre-login-frames", server, client, bound_mib=baseline + 64)


# Two budgets: the overhead above budget + cache must not grow with the budget.
@pytest.mark.parametrize("budget_mib", [32, 128])
def test_pipelined_produce_floods_stay_within_the_agent_budget(server_factory, budget_mib):
    budget, cache = budget_mib * MIB, 32 * MIB
    server = server_factory(extra_args=["--queued-max-request-bytes", str(budget),
                                        "--cache-max-bytes", str(cache)])
    status, _ = http(server, "POST", "/api/v1/topics", {"name": "flood", "partitions": 4})
    assert status == 201
    baseline = server.rss_mib()
    frame = produce_frame("flood", record_batch(record(b"f" * (64 * 1024 - 100)), 1))
    client = NormalClient(server.kafka_port)
    busy = threading.Event()
    busy.set()
    prober = client.run_while(busy)
    # 200 connections x 128 pipelined 64 KiB produces, responses never read; bounded in time.
    conns = [connect(server.kafka_port) for _ in range(200)]
    for s in conns:
        s.setblocking(False)
    left = {s: 128 * len(frame) for s in conns}
    view = memoryview(frame)
    deadline = time.monotonic() + 12
    while left and time.monotonic() < deadline:
        for s in ready(list(left), select.POLLOUT, 0.2):
            at = len(frame) - (left[s] % len(frame)) if left[s] % len(frame) else 0
            try:
                n = s.send(view[at:])
            except BlockingIOError:
                continue
            left[s] -= n
            if left[s] <= 0:
                del left[s]
    written = sum(128 * len(frame) - left.get(s, 0) for s in conns)
    time.sleep(1)
    busy.clear()
    prober.join()
    print(f"\nflood: {written / MIB:.0f} MiB of produce requests written by 200 connections")
    close_all(conns)
    fresh_client_served(server.kafka_port)
    # Every request byte is counted from its length prefix until it is durable and answered:
    # first the frame, then (once appended) the records' one copy in the open segment; the
    # write-through cache keeps at most `cache`. The fixed part is 200 connections' buffers and
    # tasks, the budget's 1/16 reserve for small frames and allocator slack (measured 15-40 MiB
    # at budgets of 32-192 MiB, docs/reliability.md).
    report("produce-flood", server, client,
           bound_mib=baseline + (budget + cache) / MIB + 64)
    # The flood stored over a GiB; do not leave it in the shared temporary directory.
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


def metric(server, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_producer_id_floods_stay_within_the_producer_budget(server_factory):
    """Any client may write with any producer id (no InitProducerId needed), and each partition
    remembers every idempotent producer for duplicate detection: a new id per request on 20
    partitions asks for 30,000 producer states. The agent keeps `max_producers_per_agent`
    (docs/reliability.md has the same flood without the bound: ~0.8 KB per state)."""
    partitions, ids, limit = 20, 1_500, 3_000
    server = server_factory(extra_args=["--max-producers-per-agent", str(limit),
                                        "--cache-max-bytes", str(16 * MIB)])
    status, _ = http(server, "POST", "/api/v1/topics", {"name": "pids", "partitions": partitions})
    assert status == 201
    baseline = server.rss_mib()
    client = NormalClient(server.kafka_port)
    busy = threading.Event()
    busy.set()
    prober = client.run_while(busy)
    sock = connect(server.kafka_port, timeout=30)
    value = record(b"p" * 16)

    def frame(pid: int) -> bytes:
        return produce_frame("pids", record_batch(value, 1, producer_id=pid),
                             correlation_id=pid, partitions=partitions)

    window = 4  # requests in flight, under the connection's limit
    for pid in range(ids + window):
        if pid < ids:
            sock.sendall(frame(pid))
        if pid >= window:
            assert produce_result(read_frame(sock)) == (0, pid - window)
    held = metric(server, "streamhouse_producer_states")
    # A retry of the newest producer's batch is still recognised: its original offset back.
    sock.sendall(frame(ids - 1))
    assert produce_result(read_frame(sock)) == (0, ids - 1)
    busy.clear()
    prober.join()
    print(f"\nproducer-id flood: {ids * partitions} producer states asked, {held:.0f} held "
          f"(max_producers_per_agent {limit})")
    assert held <= limit + 8 * partitions
    report("producer-id-flood", server, client, bound_mib=baseline + 16 + 48)


def test_lying_and_exploding_batches_are_refused_and_never_stored(server_factory):
    server = server_factory()
    status, _ = http(server, "POST", "/api/v1/topics", {"name": "lies", "partitions": 1})
    assert status == 201
    good = record(b"value")
    count_lie = record_batch(good, 1000)  # 1,000 declared, 1 present
    body = good[1:]  # a record under 64 bytes has a one-byte length
    length_lie = record_batch(varint(len(body) + 10) + body, 1)
    garbage_zstd = record_batch(b"\x5a" * 200, 1, attributes=4)
    client = NormalClient(server.kafka_port)
    sock = connect(server.kafka_port)
    for name, batch, expected in [("count", count_lie, CORRUPT_MESSAGE),
                                  ("length", length_lie, CORRUPT_MESSAGE),
                                  ("zstd", garbage_zstd, CORRUPT_MESSAGE)]:
        sock.sendall(produce_frame("lies", batch))
        payload = read_frame(sock)
        assert payload is not None, f"{name}: connection closed instead of an error"
        assert produce_error(payload) == expected, name
        client.roundtrip()
    status, body = http(server, "GET", "/api/v1/topics/lies/partitions/0")
    assert status == 200 and body["high_watermark"] == 0, body
    sock.sendall(produce_frame("lies", record_batch(good, 1)))
    assert produce_error(read_frame(sock)) == 0
    status, body = http(server, "GET",
                        "/api/v1/topics/lies/partitions/0/records?offset=0&max_bytes=1024")
    assert status == 200 and len(body["records"]) == 1, body
    report("bad-batches", server, client, bound_mib=400)


def test_partition_caps_refuse_with_a_clear_error(server_factory):
    server = server_factory(extra_args=["--max-partitions-per-agent", "1000"])
    client = NormalClient(server.kafka_port)
    status, _ = http(server, "POST", "/api/v1/topics", {"name": "p1", "partitions": 600})
    assert status == 201
    status, body = http(server, "POST", "/api/v1/topics", {"name": "p2", "partitions": 600})
    assert status == 400 and "cap of 1000" in json.dumps(body), body
    # The same over the Kafka protocol: CreateTopics v2 answers POLICY_VIOLATION with the reason.
    name = b"p3"
    body = (struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
            + struct.pack(">ihii", 600, 1, 0, 0) + struct.pack(">ib", 30_000, 0))
    with connect(server.kafka_port) as sock:
        sock.sendall(encode_request(CREATE_TOPICS, 2, 7, body))
        payload = read_frame(sock)
    at = 4 + 4 + 4 + 2 + len(name)  # correlation id, throttle time, topic count, name
    (code,) = struct.unpack_from(">h", payload, at)
    assert code == POLICY_VIOLATION and b"cap of 1000" in payload, payload
    client.roundtrip()
    report("partition-cap", server, client, bound_mib=400)


def test_data_directory_is_private(server_factory, s3_server):
    server = server_factory(auto_start=False)
    os.chmod(server.data_dir, 0o700)  # the harness made it with the test's umask
    server.start()
    assert "readable or writable by other users" not in log_text(server)
    status, _ = http(server, "POST", "/api/v1/topics", {"name": "private", "partitions": 1})
    assert status == 201
    with connect(server.kafka_port) as sock:
        sock.sendall(produce_frame("private", record_batch(record(b"secret"), 1)))
        assert produce_error(read_frame(sock)) == 0
    modes = {}
    for root, dirs, files in os.walk(server.data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, server.data_dir)] = stat.S_IMODE(os.stat(path).st_mode)
    objects = [p for p in modes if p.endswith(".obj")]
    # With S3 the objects are in the bucket; the data dir then holds the metadata only.
    assert (objects or s3_server) and "metadata.db" in modes, modes
    wide = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert not wide, f"readable by others: {wide}"
    # Data written with wider modes (another tool, an older version) is reported at start.
    server.stop()
    os.chmod(server.data_dir, 0o755)
    server.start()
    assert "readable or writable by other users" in log_text(server), server.log_tail()

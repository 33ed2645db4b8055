"""Hostile bytes on raw sockets must cost the sender its connection, never the server.

After each case a fresh raw ApiVersions request and a fresh librdkafka Metadata request
must both succeed, and the process must still be running.
"""

import random
import socket
import struct

import pytest

from kafka_util import admin, create_topic
from kafka_wire import API_VERSIONS, METADATA, SIZE, encode_request, parse_api_versions_v0, \
    read_frame, response_correlation_id

REPLY_TIMEOUT_S = 5.0
CORRELATION_ID = 4242
CLOSED = "closed"


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.kafka_port), timeout=REPLY_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def outcome(sock: socket.socket):
    """CLOSED if the server hung up, else the payload of the frame it answered with.

    A server that neither answers nor hangs up within the timeout fails the test:
    a connection parked on bad input is a resource leak an attacker can multiply.
    """
    try:
        payload = read_frame(sock)
    except (ConnectionResetError, BrokenPipeError):
        return CLOSED
    except socket.timeout:
        pytest.fail(f"server neither answered nor closed within {REPLY_TIMEOUT_S}s")
    return CLOSED if payload is None else payload


def send(sock: socket.socket, data: bytes) -> bool:
    """False if the server already hung up on us mid-send."""
    try:
        sock.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False


def api_versions(server) -> dict[int, tuple[int, int]]:
    with connect(server) as sock:
        sock.sendall(encode_request(API_VERSIONS, 0, CORRELATION_ID))
        payload = outcome(sock)
    assert payload != CLOSED, "server closed a valid ApiVersions v0 request"
    correlation_id, error_code, versions = parse_api_versions_v0(payload)
    assert (correlation_id, error_code) == (CORRELATION_ID, 0)
    return versions


def assert_still_serving(server, topic):
    assert server.is_alive(), "server process died"
    versions = api_versions(server)
    assert {0, 1, 2, 3, 18} <= set(versions)
    meta = admin(server.bootstrap).list_topics(timeout=15)
    assert [b.port for b in meta.brokers.values()] == [server.kafka_port]
    assert topic in meta.topics


def header_only(api_key: int, version: int) -> bytes:
    return encode_request(api_key, version, CORRELATION_ID)


RANDOM_BODY = random.Random(20261126).randbytes(4092)

# (case id, bytes to send, may the server answer with a frame instead of closing?)
MUST_CLOSE_OR_ANSWER = [
    ("http-request", b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n", False),
    ("length-2GiB-minus-1", SIZE.pack(0x7FFFFFFF), False),
    ("length-negative-2GiB", struct.pack(">I", 0x80000000), False),
    ("length-minus-1", SIZE.pack(-1), False),
    ("length-zero", SIZE.pack(0), False),
    ("frame-shorter-than-header", SIZE.pack(3) + b"\x00\x12\x00", False),
    ("frame-of-random-bytes", SIZE.pack(len(RANDOM_BODY)) + RANDOM_BODY, True),
    ("unknown-api-key-9999", header_only(9999, 0), True),
    ("metadata-version-999", header_only(METADATA, 999), True),
    ("api-versions-bad-client-id-length",
     SIZE.pack(10) + struct.pack(">hhih", API_VERSIONS, 0, CORRELATION_ID, 500), True),
]


@pytest.mark.parametrize("data,may_answer", [c[1:] for c in MUST_CLOSE_OR_ANSWER],
                         ids=[c[0] for c in MUST_CLOSE_OR_ANSWER])
def test_bad_input_closes_connection_only(server, topic, data, may_answer):
    create_topic(server.bootstrap, topic, 1)
    with connect(server) as sock:
        result = outcome(sock) if send(sock, data) else CLOSED
    if result != CLOSED:
        assert may_answer, f"server answered instead of closing: {result[:64]!r}"
        assert response_correlation_id(result) == CORRELATION_ID
    assert_still_serving(server, topic)


@pytest.mark.parametrize("cut", [2, 4, 9, -1], ids=lambda c: f"cut-at-{c}")
def test_truncated_frame_then_close(server, topic, cut):
    create_topic(server.bootstrap, topic, 1)
    frame = encode_request(API_VERSIONS, 0, CORRELATION_ID)
    with connect(server) as sock:
        send(sock, frame[:cut])
    assert_still_serving(server, topic)


def test_many_bad_connections_in_a_row(server, topic):
    create_topic(server.bootstrap, topic, 1)
    for _, data, _ in MUST_CLOSE_OR_ANSWER * 5:
        with connect(server) as sock:
            send(sock, data)
    assert_still_serving(server, topic)


def test_raw_api_versions_baseline(server):
    """The raw framing used above is right: a well-formed request gets a well-formed answer."""
    versions = api_versions(server)
    for key in (0, 1, 2, 3, 18):
        lo, hi = versions[key]
        assert 0 <= lo <= hi, (key, lo, hi)

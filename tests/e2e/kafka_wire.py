"""Just enough of the Kafka wire protocol to frame requests and route responses by hand.

Every Kafka request is `int32 size` + `int16 api_key, int16 api_version, int32 correlation_id,
nullable string client_id` (+ tagged fields in flexible versions) + body; every response is
`int32 size` + `int32 correlation_id` + ... . Only the fixed-offset prefix is parsed here.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18

SIZE = struct.Struct(">i")
REQUEST_PREFIX = struct.Struct(">hhi")
CORRELATION = struct.Struct(">i")
# Largest frame the harness itself will buffer; real traffic in the tests is far smaller.
MAX_FRAME = 256 * 1024 * 1024


class FrameError(Exception):
    """The peer sent a size prefix the harness refuses to buffer."""


@dataclass(frozen=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int


def encode_request(api_key: int, api_version: int, correlation_id: int, body: bytes = b"",
                   client_id: str = "streamhouse-e2e") -> bytes:
    """A complete request frame with a v1 (non-flexible) request header."""
    cid = client_id.encode()
    payload = (REQUEST_PREFIX.pack(api_key, api_version, correlation_id)
               + struct.pack(">h", len(cid)) + cid + body)
    return SIZE.pack(len(payload)) + payload


def parse_request_header(payload: bytes) -> RequestHeader:
    """Header prefix of a request frame (`payload` excludes the size prefix)."""
    return RequestHeader(*REQUEST_PREFIX.unpack_from(payload, 0))


def response_correlation_id(payload: bytes) -> int:
    return CORRELATION.unpack_from(payload, 0)[0]


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Exactly n bytes, or None if the peer closed first (a partial read is also None)."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame's payload (without its size prefix), or None on a clean close."""
    head = recv_exact(sock, SIZE.size)
    if head is None:
        return None
    (size,) = SIZE.unpack(head)
    if size < 0 or size > MAX_FRAME:
        raise FrameError(f"frame size {size} out of range")
    return recv_exact(sock, size)


def parse_api_versions_v0(payload: bytes) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """ApiVersions v0 response: (correlation_id, error_code, {api_key: (min, max)})."""
    correlation_id, error_code, count = struct.unpack_from(">ihi", payload, 0)
    versions = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", payload, 10 + 6 * i)
        versions[key] = (lo, hi)
    return correlation_id, error_code, versions

"""A frame-aware TCP proxy that can lose responses, to force client retries.

For a request the drop policy selects, the proxy still forwards the request to the server
(so the server processes it) but, when the matching response comes back, closes the client
connection instead of relaying it. The client sees a dead connection with an in-flight
request and must retry something the server already applied.

Clients only keep talking through the proxy if the broker advertises the proxy's address
in Metadata; start the server with `--advertised-addr 127.0.0.1:<proxy port>`.
"""

from __future__ import annotations

import collections
import socket
import threading
from typing import Callable

from kafka_wire import PRODUCE, FrameError, RequestHeader, parse_request_header, read_frame, \
    response_correlation_id, SIZE

DropPolicy = Callable[[RequestHeader], bool]


class DropEveryNth:
    """Select every n-th request of one API, at most `max_drops` times."""

    def __init__(self, n: int, max_drops: int, api_key: int = PRODUCE):
        self.n, self.max_drops, self.api_key = n, max_drops, api_key
        self.seen = 0
        self.selected = 0
        self._lock = threading.Lock()

    def __call__(self, header: RequestHeader) -> bool:
        if header.api_key != self.api_key:
            return False
        with self._lock:
            self.seen += 1
            if self.selected < self.max_drops and self.seen % self.n == 0:
                self.selected += 1
                return True
            return False


def never(_header: RequestHeader) -> bool:
    return False


class KafkaProxy:
    """Listen on 127.0.0.1:<port>, relay each connection to `upstream` frame by frame."""

    def __init__(self, upstream: tuple[str, int], drop: DropPolicy = never, port: int = 0):
        self.upstream = upstream
        self.drop = drop
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.requests: collections.Counter[int] = collections.Counter()
        self.dropped: list[RequestHeader] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: list[_Connection] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept",
                                          daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "KafkaProxy":
        self._acceptor.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)
        self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError as e:
                self._record_error(f"upstream connect failed: {e}")
                client.close()
                continue
            conn = _Connection(self, client, server)
            with self._lock:
                self._conns.append(conn)
            conn.start()

    def _record_request(self, header: RequestHeader) -> bool:
        with self._lock:
            self.requests[header.api_key] += 1
        return self.drop(header)

    def _record_drop(self, header: RequestHeader) -> None:
        with self._lock:
            self.dropped.append(header)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)


class _Connection:
    """One client connection and its upstream twin; two pump threads."""

    def __init__(self, proxy: KafkaProxy, client: socket.socket, server: socket.socket):
        self.proxy, self.client, self.server = proxy, client, server
        for s in (client, server):
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # correlation id -> header of requests whose response must be swallowed
        self.doomed: dict[int, RequestHeader] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        threading.Thread(target=self._pump_requests, daemon=True, name="proxy-c2s").start()
        threading.Thread(target=self._pump_responses, daemon=True, name="proxy-s2c").start()

    def _pump_requests(self) -> None:
        self._pump(self.client, self.server, self._on_request)

    def _pump_responses(self) -> None:
        self._pump(self.server, self.client, self._on_response)

    def _pump(self, src: socket.socket, dst: socket.socket,
              on_frame: Callable[[bytes], bool]) -> None:
        """Relay whole frames until either side closes or `on_frame` says to cut."""
        try:
            while True:
                payload = read_frame(src)
                if payload is None or not on_frame(payload):
                    break
                dst.sendall(SIZE.pack(len(payload)) + payload)
        except (OSError, FrameError) as e:
            if not self._closed:
                self.proxy._record_error(f"{type(e).__name__}: {e}")
        finally:
            self.close()

    def _on_request(self, payload: bytes) -> bool:
        header = parse_request_header(payload)
        if self.proxy._record_request(header):
            # Registered before forwarding, so the response cannot race past it.
            with self._lock:
                self.doomed[header.correlation_id] = header
        return True

    def _on_response(self, payload: bytes) -> bool:
        with self._lock:
            header = self.doomed.pop(response_correlation_id(payload), None)
        if header is None:
            return True
        self.proxy._record_drop(header)
        return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

"""A byte-level TCP proxy for fault tests: added latency, stalls and connection resets.

This kernel has no `sch_netem`, so `tc netem` cannot add delay or loss; the proxy does it in
userspace between an agent and a server it uses (PostgreSQL, the S3 test server). Unlike
`kafka_proxy.py` it knows no protocol: it relays bytes.

- `delay_s`: every chunk is forwarded that long after it arrived, in order, in each
  direction (so a round trip through the proxy takes 2 x `delay_s` longer); throughput is not
  limited.
- `stalled`: while set, nothing is forwarded (connections hang, as on a lost link); what
  arrived meanwhile is forwarded once it is cleared.
- `reset_all()`: every open connection is aborted with a TCP RST on both sides, as a
  middlebox or a peer restart would; new connections are accepted as before.

The proxy runs its own asyncio loop in a daemon thread; the settings may be changed from any
thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

CHUNK = 64 * 1024
# SO_LINGER on, timeout 0: closing the socket sends RST instead of FIN.
RST_ON_CLOSE = struct.pack("ii", 1, 0)


class TcpProxy:
    """Listens on `listen_host`:<free port> and relays each connection to `upstream`."""

    def __init__(self, upstream: tuple[str, int], listen_host: str = "127.0.0.1"):
        self.upstream = upstream
        self.listen_host = listen_host
        self.delay_s = 0.0
        self.stalled = False
        self.connections = 0
        self.resets = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def reset_all(self) -> int:
        """Aborts every open connection (RST both ways); returns how many sides were reset."""
        return asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.listen_host, 0))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        self.connections += 1
        for writer in (client_w, server_w):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_ON_CLOSE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.add(writer)
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w),
                             return_exceptions=True)
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relays one direction through a queue, so reading never waits for the delay."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            await asyncio.gather(sender, return_exceptions=True)

    async def _send(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.write_eof()
                    return
                while self.stalled or time.monotonic() < due:
                    await asyncio.sleep(min(0.01, max(0.0, due - time.monotonic())) or 0.01)
                writer.write(data)
                await writer.drain()
        except OSError:
            writer.transport.abort()

    async def _reset_all(self) -> int:
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        self.resets += len(writers)
        return len(writers)

    async def _close(self) -> None:
        self._server.close()
        await self._reset_all()

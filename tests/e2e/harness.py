"""Process management for the `streamhouse` binary under test.

A `StreamhouseServer` owns one data directory and one pair of ports for its whole
life, so it can be killed (SIGKILL) and restarted on the same state, which is what
the durability tests need.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 80


# Servers still running when the interpreter exits (e.g. the run was interrupted) are
# SIGKILLed so no test server outlives the suite.
_running: set["StreamhouseServer"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_running):
        server.kill()


class ServerError(RuntimeError):
    """The server failed to start, died, or did not become healthy."""


def streamhouse_bin() -> Path:
    """Binary under test: $STREAMHOUSE_BIN, else the workspace's debug build."""
    explicit = os.environ.get("STREAMHOUSE_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO_ROOT / "target"))
    return Path(target) / "debug" / "streamhouse"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamhouseServer:
    """One `streamhouse serve` process on a fixed data dir and fixed ports."""

    def __init__(self, binary: Path, workdir: Path, extra_args: list[str] | None = None,
                 advertised_addr: str | None = None, nofile: int | None = None):
        self.binary = binary
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "streamhouse.log"
        self.kafka_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.kafka_port:
            self.http_port = free_port()
        self.extra_args = list(extra_args or [])
        self.advertised_addr = advertised_addr
        # The process's open-file limit (`ulimit -n`), for tests that exhaust it.
        self.nofile = nofile
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # True from start() until the harness itself stops or kills the process.
        self.expected_running = False

    @property
    def bootstrap(self) -> str:
        """`bootstrap.servers` value for clients talking to the server directly."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/health"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "serve",
               "--data-dir", str(self.data_dir),
               "--kafka-addr", self.bootstrap,
               "--http-addr", f"127.0.0.1:{self.http_port}"]
        if self.advertised_addr:
            cmd += ["--advertised-addr", self.advertised_addr]
        return cmd + self.extra_args

    def start(self) -> "StreamhouseServer":
        """Start the process (appending to the same log) and wait until /health is 200."""
        if self.is_alive():
            raise ServerError("server already running")
        if not self.binary.is_file():
            raise ServerError(f"streamhouse binary not found at {self.binary} "
                              "(build it with `cargo build --workspace` or set STREAMHOUSE_BIN)")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=env,
                                         start_new_session=True,
                                         preexec_fn=self._limit_files if self.nofile else None)
        _running.add(self)
        self.expected_running = True
        try:
            self._wait_ready()
        except ServerError:
            self.kill()  # a half-started server is reported once, here, not again at teardown
            raise
        return self

    def _limit_files(self) -> None:
        """In the child, before exec: `ulimit -n {self.nofile}`."""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MiB."""
        return self._status_kib("VmHWM") / 1024

    def rss_mib(self) -> float:
        """The process's resident memory now (VmRSS), in MiB."""
        return self._status_kib("VmRSS") / 1024

    def _status_kib(self, field: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise ServerError(f"no {field} in /proc/{self.proc.pid}/status")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode} before becoming "
                                  f"healthy\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=1) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as e:
                last_error = repr(e)
            time.sleep(0.1)
        raise ServerError(f"{self.health_url} not healthy after {READY_TIMEOUT_S}s "
                          f"(last: {last_error})\n{self.log_tail()}")

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def crashed(self) -> bool:
        """The process exited although nobody asked it to."""
        return self.expected_running and self.proc.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything that was not already durable."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM and wait; escalate to SIGKILL if the server ignores it. Returns exit code."""
        if self.proc is None:
            return None
        try:
            self._signal_and_wait(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self._signal_and_wait(signal.SIGKILL)
        return self.proc.returncode

    def restart(self, hard: bool = True) -> "StreamhouseServer":
        """Kill (hard) or stop (graceful) and start again on the same data dir and ports."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def _signal_and_wait(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Signal the whole session so helper processes the server may spawn die too.
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        _running.discard(self)
        self.expected_running = False

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

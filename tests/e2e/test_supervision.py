"""Supervised background loops: an agent whose controller loop dies (aborted by the debug
build's fault hook, as a crash would end it) does not linger as a zombie that answers but no
longer reconciles or renews: it shuts down, exits with an error naming the loop, and keeps every
acknowledged record."""

import time

from kafka_util import Record, consume_all, create_topic, produce_all, producer

ABORT_AFTER_MS = 3000
LEASE_TTL_S = 10  # the default; the shutdown after a failure is bounded by it


def test_an_agent_whose_controller_dies_exits_and_loses_nothing(server_factory, topic,
                                                                 monkeypatch):
    monkeypatch.setenv("STREAMHOUSE_TEST_ABORT_TASK", f"controller@{ABORT_AFTER_MS}")
    server = server_factory()
    started = time.monotonic()
    create_topic(server.bootstrap, topic, 2)
    delivered = produce_all(producer(server.bootstrap), topic,
                            [Record(b"k%d" % i, b"v%d" % i) for i in range(200)])
    assert len(delivered) == 200

    code = server.proc.wait(timeout=ABORT_AFTER_MS / 1000 + LEASE_TTL_S + 5)
    exited_after = time.monotonic() - started
    server.expected_running = False
    assert code not in (0, None), f"exit code {code}"
    log = server.log_tail(200)
    assert "background task controller stopped: aborted" in log, log
    print(f"SUPERVISION controller aborted at {ABORT_AFTER_MS} ms, agent exited after "
          f"{exited_after:.1f} s with code {code}")

    monkeypatch.delenv("STREAMHOUSE_TEST_ABORT_TASK")
    server.start()
    got = consume_all(server.bootstrap, topic, 2)
    consumed = {(r.partition, r.offset): r.value for recs in got.values() for r in recs}
    assert consumed == {(d.partition, d.offset): d.value for d in delivered}

"""Fetch long polling: a parked fetch wakes up when a record arrives.

The consumer asks the broker to hold empty fetches for FETCH_WAIT_MS. A server that waits
the full time before answering fails the latency bound; a server that answers empty fetches
at once (no long polling) shows up as a storm of Fetch requests at the proxy while idle; one
that wakes a parked fetch only for the first append after idling fails the steady series.
"""

import statistics
import threading
import time

from confluent_kafka import TopicPartition

from kafka_util import Record, consumer, create_topic, produce_all, producer
from kafka_wire import FETCH

FETCH_WAIT_MS = 5000
IDLE_S = 1.5
MAX_LATENCY_S = 2.0
# Steady tailing: every record, not just the first after an idle period, must wake the fetch.
SERIES = 20
SERIES_GAP_S = 0.05
MAX_MEDIAN_LATENCY_S = 0.25


class Tail(threading.Thread):
    """Polls one partition and timestamps every record it receives."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.consumer = consumer(bootstrap, **{"fetch.wait.max.ms": FETCH_WAIT_MS,
                                               "socket.timeout.ms": FETCH_WAIT_MS + 10000})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.received: list[tuple[bytes, float]] = []
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is None:
                continue
            with self.cond:
                if msg.error():
                    self.errors.append(str(msg.error()))
                else:
                    self.received.append((msg.value(), time.monotonic()))
                self.cond.notify_all()

    def wait_for(self, value: bytes, timeout: float) -> float:
        with self.cond:
            arrived = self.cond.wait_for(lambda: any(v == value for v, _ in self.received),
                                         timeout)
            assert arrived, f"{value!r} not received in {timeout}s: {self.errors}"
            return next(t for v, t in self.received if v == value)

    def close(self):
        self.stop.set()
        self.join(timeout=10)
        self.consumer.close()


def test_parked_fetch_wakes_on_produce(proxied_server, topic, measurements):
    server, proxy = proxied_server()
    create_topic(proxy.address, topic, 1)
    prod = producer(proxy.address, **{"linger.ms": 0, "acks": 1})
    tail = Tail(proxy.address, topic)
    tail.start()
    try:
        produce_all(prod, topic, [Record(None, b"warm-up", partition=0)])
        tail.wait_for(b"warm-up", timeout=30)

        fetches_before = proxy.requests[FETCH]
        time.sleep(IDLE_S)
        idle_fetches = proxy.requests[FETCH] - fetches_before

        sent_at = time.monotonic()
        prod.produce(topic, value=b"wake-up", partition=0)
        prod.poll(0)
        latency = tail.wait_for(b"wake-up", timeout=FETCH_WAIT_MS / 1000 * 3) - sent_at
        series = send_series(prod, topic, tail)
    finally:
        tail.close()

    measurements["long-poll produce->consume latency (ms)"] = round(latency * 1000, 1)
    measurements["fetch requests while idle for %.1fs" % IDLE_S] = idle_fetches
    measurements[f"tailing latency p50/max over {SERIES} records (ms)"] = (
        round(statistics.median(series) * 1000, 1), round(max(series) * 1000, 1))
    assert latency < MAX_LATENCY_S, f"record reached the tailing consumer after {latency:.3f}s"
    assert idle_fetches <= 3, f"{idle_fetches} fetches in {IDLE_S}s idle: fetches are not held"
    assert max(series) < MAX_LATENCY_S, f"tailing latencies (s): {series}"
    assert statistics.median(series) < MAX_MEDIAN_LATENCY_S, \
        f"parked fetches do not wake on every append; tailing latencies (s): {series}"
    assert not tail.errors, tail.errors


def send_series(prod, topic, tail) -> list[float]:
    """Produce SERIES records SERIES_GAP_S apart; the tail's receive latency of each."""
    sent = {}
    for i in range(SERIES):
        value = b"series-%d" % i
        sent[value] = time.monotonic()
        prod.produce(topic, value=value, partition=0)
        prod.poll(SERIES_GAP_S)
    prod.flush(10)
    return [round(tail.wait_for(value, timeout=FETCH_WAIT_MS / 1000 * 3) - at, 4)
            for value, at in sent.items()]

"""Lost produce responses force librdkafka to resend batches the server already stored.

With `enable.idempotence=True` the server must deduplicate the resends by producer id and
sequence number; without idempotence the same faults duplicate records, which shows the
proxy really does cause resends of stored batches.
"""

import collections

import pytest

from kafka_proxy import DropEveryNth, KafkaProxy
from kafka_util import Record, consume_all, create_topic, produce_all, producer
from kafka_wire import PRODUCE

PARTITIONS = 3
ROUNDS = 24
PER_ROUND = 200


@pytest.fixture
def proxied(proxied_server):
    return proxied_server(drop=DropEveryNth(n=3, max_drops=6))


def produce_through_faults(proxy: KafkaProxy, topic: str, **conf):
    create_topic(proxy.address, topic, PARTITIONS)
    prod = producer(proxy.address, **{"linger.ms": 0, "retry.backoff.ms": 20,
                                      "reconnect.backoff.ms": 20,
                                      "reconnect.backoff.max.ms": 200, **conf})
    records = (Record(f"k{i % 37}".encode(), f"v{i:06d}".encode())
               for i in range(ROUNDS * PER_ROUND))
    # A flush per round makes at least one produce request per round for the proxy to hit.
    delivered = produce_all(prod, topic, records, flush_every=PER_ROUND)
    assert len(delivered) == ROUNDS * PER_ROUND
    assert len(proxy.dropped) >= 3, f"proxy dropped only {len(proxy.dropped)} responses " \
                                     f"of {proxy.requests[PRODUCE]} produce requests"
    assert all(h.api_key == PRODUCE for h in proxy.dropped)
    return delivered


def value_counts(got):
    return collections.Counter(r.value for recs in got.values() for r in recs)


def test_idempotent_producer_has_no_duplicates_despite_lost_responses(proxied, topic):
    server, proxy = proxied
    delivered = produce_through_faults(proxy, topic, **{"enable.idempotence": True})

    got = consume_all(server.bootstrap, topic, PARTITIONS)
    counts = value_counts(got)
    dups = {v: n for v, n in counts.items() if n > 1}
    assert not dups, f"{len(dups)} records stored more than once, e.g. {list(dups.items())[:5]}"
    assert set(counts) == {d.value for d in delivered}
    consumed = {(r.partition, r.offset): r.value for recs in got.values() for r in recs}
    assert consumed == {(d.partition, d.offset): d.value for d in delivered}, \
        "delivery-report offsets of retried batches must be the offsets they were stored at"
    assert server.is_alive()


def test_non_idempotent_producer_duplicates_under_the_same_faults(proxied, topic):
    """Control: proves the faults cause resends that a server without dedup would store twice."""
    server, proxy = proxied
    delivered = produce_through_faults(proxy, topic, **{"enable.idempotence": False,
                                                        "retries": 100,
                                                        "max.in.flight": 1})
    got = consume_all(server.bootstrap, topic, PARTITIONS)
    counts = value_counts(got)
    assert set(counts) == {d.value for d in delivered}, "records lost"
    assert sum(counts.values()) > len(delivered), \
        f"no duplicates although {len(proxy.dropped)} stored batches lost their response"

"""TLS + SASL/SCRAM on the Kafka listener with librdkafka (confluent-kafka).

A test CA and a server certificate for 127.0.0.1 are made with the openssl CLI at test time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_util import CLIENT_TIMEOUT_S, Record, consumer, produce_all, producer

USER, PASSWORD = "alice", "alice-secret"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path) -> dict[str, Path]:
    """A CA and a server certificate (SAN 127.0.0.1, localhost) signed by it, as PEM files."""
    d = tmp_path / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=streamhouse-test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem", cwd=d)
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


@pytest.fixture
def secure_server(server_factory, certs, monkeypatch):
    # The user goes through the environment so the password is not in the logged command line.
    monkeypatch.setenv("STREAMHOUSE_SASL_USERS", f"{USER}:{PASSWORD}")
    return server_factory(extra_args=["--tls-cert", str(certs["cert"]),
                                      "--tls-key", str(certs["key"]),
                                      "--sasl-mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512"])


def client_conf(certs, password: str = PASSWORD, protocol: str = "SASL_SSL") -> dict:
    return {"security.protocol": protocol, "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": USER, "sasl.password": password,
            "ssl.ca.location": str(certs["ca"])}


def auth_error(bootstrap: str, conf: dict) -> KafkaError:
    """The error a producer reports when it cannot get in: nothing may be delivered."""
    errors: list[KafkaError] = []
    prod = Producer({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000,
                     "message.timeout.ms": 8000, "error_cb": errors.append, **conf})
    delivered: list = []
    prod.produce("never-created", b"v", on_delivery=lambda err, msg: delivered.append(err))
    prod.flush(10)
    assert delivered and all(err is not None for err in delivered), "a record was delivered"
    assert errors, "no connection error was reported"
    return errors[0]


def test_sasl_ssl_scram_produce_and_consume(secure_server, certs, topic):
    conf = client_conf(certs)
    admin = AdminClient({"bootstrap.servers": secure_server.bootstrap, **conf})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                        request_timeout=CLIENT_TIMEOUT_S)[topic].result(CLIENT_TIMEOUT_S)

    records = [Record(f"k{i}".encode(), f"secure-{i}".encode()) for i in range(100)]
    delivered = produce_all(producer(secure_server.bootstrap, **conf), topic, records)
    assert len(delivered) == 100

    c = consumer(secure_server.bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        while len(got) < 100:
            msgs = c.consume(num_messages=100, timeout=CLIENT_TIMEOUT_S)
            assert msgs, f"timed out after {len(got)} records"
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                got.append(m.value())
    finally:
        c.close()
    assert got == [r.value for r in records]


def test_wrong_password_fails_authentication(secure_server, certs):
    err = auth_error(secure_server.bootstrap, client_conf(certs, password="wrong"))
    assert err.code() == KafkaError._AUTHENTICATION, err


def test_sasl_without_tls_is_refused(secure_server, certs):
    err = auth_error(secure_server.bootstrap, client_conf(certs, protocol="SASL_PLAINTEXT"))
    assert err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                          KafkaError._AUTHENTICATION), err

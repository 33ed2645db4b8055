"""TLS + SASL/SCRAM on the Kafka listener with librdkafka (confluent-kafka) and the CLI, SCRAM
users managed at run time (the `streamhouse user` CLI and librdkafka's AdminClient, KIP-554),
and ACLs.

A test CA and a server certificate for 127.0.0.1 are made with the openssl CLI at test time.
With SASL on, ACLs are enforced: `admin` is the super user; `alice` and `bob` get only what the
ACL test grants them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType,
                                   ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

from harness import streamhouse_bin
from kafka_util import CLIENT_TIMEOUT_S, Record, consumer, produce_all, producer

USER, PASSWORD = "admin", "admin-secret"
PASSWORDS = {USER: PASSWORD, "alice": "alice-pw-7f3", "bob": "bob-pw-91c"}
READERS = "e2e-acl-readers"  # the consumer group of the ACL test


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
    monkeypatch.setenv("STREAMHOUSE_SASL_USERS",
                       ",".join(f"{user}:{pw}" for user, pw in PASSWORDS.items()))
    return server_factory(extra_args=["--tls-cert", str(certs["cert"]),
                                      "--tls-key", str(certs["key"]),
                                      "--sasl-mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512",
                                      "--super-user", f"User:{USER}"])


def client_conf(certs, password: str = PASSWORD, protocol: str = "SASL_SSL", user: str = USER,
                mechanism: str = "SCRAM-SHA-256") -> dict:
    return {"security.protocol": protocol, "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(certs["ca"])}


def as_user(certs, user: str) -> dict:
    return client_conf(certs, password=PASSWORDS[user], user=user)


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


def create_topic(bootstrap: str, conf: dict, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                        request_timeout=CLIENT_TIMEOUT_S)[topic].result(CLIENT_TIMEOUT_S)


def roundtrip(bootstrap: str, conf: dict, topic: str, count: int = 100) -> None:
    """Produces `count` records to partition 0 of `topic` and reads them all back."""
    records = [Record(f"k{i}".encode(), f"secure-{i}".encode()) for i in range(count)]
    delivered = produce_all(producer(bootstrap, **conf), topic, records)
    assert len(delivered) == count
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, 0, delivered[0].offset)])
        got = []
        while len(got) < count:
            msgs = c.consume(num_messages=100, timeout=CLIENT_TIMEOUT_S)
            assert msgs, f"timed out after {len(got)} records"
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                got.append(m.value())
    finally:
        c.close()
    assert got == [r.value for r in records]


def test_sasl_ssl_scram_produce_and_consume(secure_server, certs, topic):
    conf = client_conf(certs)
    create_topic(secure_server.bootstrap, conf, topic)
    roundtrip(secure_server.bootstrap, conf, topic)


def test_wrong_password_fails_authentication(secure_server, certs):
    err = auth_error(secure_server.bootstrap, client_conf(certs, password="wrong"))
    assert err.code() == KafkaError._AUTHENTICATION, err


def test_sasl_without_tls_is_refused(secure_server, certs):
    err = auth_error(secure_server.bootstrap, client_conf(certs, protocol="SASL_PLAINTEXT"))
    assert err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                          KafkaError._AUTHENTICATION), err


def cli(server, certs, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`streamhouse ARGS` against the secure server as the super user over SASL_SSL."""
    env = {**os.environ, "STREAMHOUSE_BOOTSTRAP": server.bootstrap,
           "STREAMHOUSE_TLS_CA": str(certs["ca"]), "STREAMHOUSE_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMHOUSE_SASL_USERNAME": USER, "STREAMHOUSE_SASL_PASSWORD": PASSWORD}
    return subprocess.run([str(streamhouse_bin()), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def grant_everything(server, certs, user: str) -> None:
    """ACLs for `user` on every topic and group, so a test of something else can run as it."""
    for resource in ("--topic", "--group"):
        ok(cli(server, certs, "acl", "add", resource, "*", "--principal", f"User:{user}",
               "--operation", "all"))


def test_user_added_by_cli_logs_in_at_once_and_is_refused_once_removed(
        secure_server, certs, topic):
    added = cli(secure_server, certs, "user", "add", "bob", "--password-stdin",
                "--mechanism", "SCRAM-SHA-512", stdin="bob-secret\n")
    assert added.returncode == 0, added.stderr
    listed = cli(secure_server, certs, "user", "list")
    assert "bob" in listed.stdout and "SCRAM-SHA-512" in listed.stdout, listed

    grant_everything(secure_server, certs, "bob")
    create_topic(secure_server.bootstrap, client_conf(certs), topic)
    bob = client_conf(certs, user="bob", password="bob-secret", mechanism="SCRAM-SHA-512")
    roundtrip(secure_server.bootstrap, bob, topic)
    # bob has no SCRAM-SHA-256 credential.
    err = auth_error(secure_server.bootstrap, {**bob, "sasl.mechanism": "SCRAM-SHA-256"})
    assert err.code() == KafkaError._AUTHENTICATION, err

    removed = cli(secure_server, certs, "user", "remove", "bob")
    assert removed.returncode == 0, removed.stderr
    err = auth_error(secure_server.bootstrap, bob)
    assert err.code() == KafkaError._AUTHENTICATION, err


def test_cli_produces_and_consumes_over_sasl_ssl(secure_server, certs, topic):
    """The CLI's Kafka client logs in as librdkafka does; records cross between them."""
    for args, stdin in [(("topic", "create", topic), ""),
                        (("produce", topic, "-K", ":"), "k1:from-cli\n")]:
        done = cli(secure_server, certs, *args, stdin=stdin)
        assert done.returncode == 0, done.stderr
    produce_all(producer(secure_server.bootstrap, **client_conf(certs)), topic,
                [Record(b"k2", b"from-librdkafka")])
    consumed = cli(secure_server, certs, "consume", topic, "--exit-at-end")
    assert consumed.stdout.splitlines() == ["from-cli", "from-librdkafka"], consumed.stderr


def test_admin_client_manages_scram_users(secure_server, certs, topic):
    """librdkafka computes the salted password itself (KIP-554); the server derives its keys."""
    admin = AdminClient({"bootstrap.servers": secure_server.bootstrap, **client_conf(certs)})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    upsert = UserScramCredentialUpsertion("carol", info, b"carol-secret")
    admin.alter_user_scram_credentials([upsert])["carol"].result(CLIENT_TIMEOUT_S)

    described = admin.describe_user_scram_credentials(["carol"])["carol"].result(CLIENT_TIMEOUT_S)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_256, 8192)]
    everyone = admin.describe_user_scram_credentials().result(CLIENT_TIMEOUT_S)
    assert set(everyone) == set(PASSWORDS) | {"carol"}

    grant_everything(secure_server, certs, "carol")
    carol = client_conf(certs, user="carol", password="carol-secret")
    create_topic(secure_server.bootstrap, carol, topic)
    roundtrip(secure_server.bootstrap, carol, topic, count=10)

    # Too few iterations is refused per user, with Kafka's error.
    weak = UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512,
                                                                    1000), b"pw")
    with pytest.raises(KafkaException) as refused:
        admin.alter_user_scram_credentials([weak])["dave"].result(CLIENT_TIMEOUT_S)
    assert "iterations" in str(refused.value), refused.value

    deletion = UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_256)
    admin.alter_user_scram_credentials([deletion])["carol"].result(CLIENT_TIMEOUT_S)
    with pytest.raises(KafkaException) as missing:
        admin.describe_user_scram_credentials(["carol"])["carol"].result(CLIENT_TIMEOUT_S)
    assert missing.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, missing.value
    err = auth_error(secure_server.bootstrap, carol)
    assert err.code() == KafkaError._AUTHENTICATION, err


def delivery_errors(bootstrap: str, conf: dict, topic: str) -> list[KafkaError]:
    """Produce one record; the delivery report's error (None when delivered)."""
    reports: list = []
    prod = producer(bootstrap, **{"message.timeout.ms": 15000, **conf})
    prod.produce(topic, b"v", on_delivery=lambda err, msg: reports.append(err))
    assert prod.flush(CLIENT_TIMEOUT_S) == 0
    return reports


def fetch_error(bootstrap: str, conf: dict, topic: str) -> KafkaError | None:
    """The first error consuming `topic` from the start in group READERS (None when a record
    arrives). Subscribing, because librdkafka reports a topic's authorization error to the
    application only for subscribed topics."""
    c = consumer(bootstrap, **{"group.id": READERS, **conf})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while time.monotonic() < deadline:
            for m in c.consume(num_messages=10, timeout=1):
                if m.error() is None:
                    return None
                if m.error().code() != KafkaError._PARTITION_EOF:
                    return m.error()
        raise AssertionError("neither a record nor an error within the timeout")
    finally:
        c.close()


def test_acls_enforced_for_librdkafka(secure_server, certs, topic):
    bootstrap = secure_server.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap, **client_conf(certs)})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                        request_timeout=CLIENT_TIMEOUT_S)[topic].result(CLIENT_TIMEOUT_S)

    # Nothing is granted yet: the default is deny.
    denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert [e.code() for e in delivery_errors(bootstrap, as_user(certs, "alice"), topic)] == [denied]

    # The super user grants alice WRITE with the Kafka admin API (as kafka-acls does), and
    # everyone the consumer group, so consuming fails (or not) on the topic alone.
    write = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW)
    group = AclBinding(ResourceType.GROUP, READERS, ResourcePatternType.LITERAL,
                       "User:*", "*", AclOperation.READ, AclPermissionType.ALLOW)
    for future in admin.create_acls([write, group], request_timeout=CLIENT_TIMEOUT_S).values():
        future.result(CLIENT_TIMEOUT_S)
    listed = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.ANY,
                                                  None, None, AclOperation.ANY,
                                                  AclPermissionType.ANY),
                                 request_timeout=CLIENT_TIMEOUT_S).result(CLIENT_TIMEOUT_S)
    assert listed == [write]

    # ... so alice's records are delivered, and bob's are refused on produce and on consume.
    assert delivery_errors(bootstrap, as_user(certs, "alice"), topic) == [None]
    assert [e.code() for e in delivery_errors(bootstrap, as_user(certs, "bob"), topic)] == [denied]
    assert fetch_error(bootstrap, as_user(certs, "bob"), topic).code() == denied
    assert fetch_error(bootstrap, as_user(certs, "alice"), topic).code() == denied, \
        "WRITE does not imply READ"

    # READ granted with the CLI (over TLS + SCRAM) lets alice consume.
    out = ok(cli(secure_server, certs, "acl", "add", "--topic", topic, "--principal", "User:alice",
              "--operation", "read"))
    assert f"added ALLOW READ on TOPIC {topic}" in out, out
    assert fetch_error(bootstrap, as_user(certs, "alice"), topic) is None
    assert "User:alice" in ok(cli(secure_server, certs, "acl", "list", "--topic", topic))

    # Refusals are logged with the principal; no password reaches the log.
    log = secure_server.log_path.read_text(errors="replace")
    assert "ACL created" in log
    for password in PASSWORDS.values():
        assert password not in log
